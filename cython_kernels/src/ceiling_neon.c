/* ceiling_neon.c — machine-ceiling kernels, aarch64 Advanced SIMD (see ceiling.h).
 *
 * No extra flags (NEON is part of aarch64). read: 16-byte loads, uadalp (pairwise add and
 * accumulate bytes into uint16 lanes) into four accumulators, folded into uint64 every
 * 64 iterations (64 x 2 x 255 < 2^16, so the uint16 lanes never wrap). dot: smlal — 8 s8 x s8
 * products accumulated into int16 lanes, the inner step of the non-dotprod I2_S kernels
 * (docs/kernels.md#22-arm-neon); it accumulates in place, so 8 chains share nothing but `b`.
 */
#include <arm_neon.h>

#include "ceiling.h"

#define CHAINS 8

uint64_t bl_ceiling_read_neon(const uint8_t *buf, int64_t nbytes) {
    uint64x2_t total = vdupq_n_u64(0);
    int64_t i = 0;
    while (i < nbytes) {
        uint16x8_t s0 = vdupq_n_u16(0), s1 = s0, s2 = s0, s3 = s0;
        const int64_t end = (nbytes - i > 64 * 64) ? i + 64 * 64 : nbytes;
        for (; i < end; i += 64) {
            s0 = vpadalq_u8(s0, vld1q_u8(buf + i));
            s1 = vpadalq_u8(s1, vld1q_u8(buf + i + 16));
            s2 = vpadalq_u8(s2, vld1q_u8(buf + i + 32));
            s3 = vpadalq_u8(s3, vld1q_u8(buf + i + 48));
        }
        uint32x4_t w = vpaddlq_u16(s0);
        w = vpadalq_u16(w, s1);
        w = vpadalq_u16(w, s2);
        w = vpadalq_u16(w, s3);
        total = vpadalq_u32(total, w);
    }
    return vgetq_lane_u64(total, 0) + vgetq_lane_u64(total, 1);
}

static int64_t dot_neon(const uint8_t *a, const int8_t *b, int64_t iters) {
    int8x8_t va[CHAINS];
    int16x8_t acc[CHAINS];
    for (int c = 0; c < CHAINS; ++c) {
        va[c] = vld1_s8((const int8_t *)(a + 8 * c));
        acc[c] = vdupq_n_s16(0);
    }
    int8x8_t vb = vld1_s8(b);
    for (int64_t it = 0; it < iters; ++it) {
        __asm__ volatile("" : "+w"(vb));
#pragma GCC unroll 8
        for (int c = 0; c < CHAINS; ++c) acc[c] = vmlal_s8(acc[c], va[c], vb);
    }
    int64_t total = 0;
    for (int c = 0; c < CHAINS; ++c) total += vaddlvq_s16(acc[c]);
    return total;
}

const bl_ceiling_kernels bl_ceiling_neon = {
    "neon",
    "ld1 16 bytes + uadalp (uint16 byte-pair sums)",
    "smlal (8 int8 MACs, int16 accumulator)",
    CHAINS, CHAINS, 8, 1, 16, 0,
    bl_ceiling_read_neon, dot_neon,
    0, 0, /* no busy loop yet */
};
