/* ceiling_neon_dotprod.c — machine-ceiling kernels, aarch64 NEON + dot product (see ceiling.h).
 *
 * Compiled with -march=armv8.2-a+dotprod, called only on CPUs reporting ASIMDDP. read is
 * NEON's loop (ceiling_neon.c); dot: sdot — 16 s8 x s8 products, four per int32 lane,
 * accumulated in place (docs/kernels.md#22-arm-neon, docs/kernels.md#24-vnni-and-dot-product-instructions);
 * 12 chains with their own `a` use 25 of the 32 vector registers.
 */
#include <arm_neon.h>

#include "ceiling.h"

#define CHAINS 12

static int64_t dot_neon_dotprod(const uint8_t *a, const int8_t *b, int64_t iters) {
    int8x16_t va[CHAINS];
    int32x4_t acc[CHAINS];
    for (int c = 0; c < CHAINS; ++c) {
        va[c] = vld1q_s8((const int8_t *)(a + 16 * c));
        acc[c] = vdupq_n_s32(0);
    }
    int8x16_t vb = vld1q_s8(b);
    for (int64_t it = 0; it < iters; ++it) {
        __asm__ volatile("" : "+w"(vb));
#pragma GCC unroll 16
        for (int c = 0; c < CHAINS; ++c) acc[c] = vdotq_s32(acc[c], va[c], vb);
    }
    int64_t total = 0;
    for (int c = 0; c < CHAINS; ++c) total += vaddlvq_s32(acc[c]);
    return total;
}

const bl_ceiling_kernels bl_ceiling_neon_dotprod = {
    "neon_dotprod",
    "ld1 16 bytes + uadalp (uint16 byte-pair sums)",
    "sdot (16 int8 MACs, int32 accumulator)",
    CHAINS, CHAINS, 16, 4, 32, 0,
    bl_ceiling_read_neon, dot_neon_dotprod, /* the read loop is NEON's (ceiling_neon.c) */
    0, 0, /* no busy loop yet */
};
