/* ceiling_avxvnni.c — machine-ceiling kernels, AVX2 + AVX-VNNI (see ceiling.h).
 *
 * Compiled with -mavx2 -mfma -mavxvnni, called only on CPUs with AVX-VNNI (Intel Alder Lake
 * and later, AMD Zen 5). read is AVX2's loop (ceiling_avx2.c); dot is the VEX-encoded vpdpbusd
 * on ymm: 32 u8 x s8 products, four per int32 lane, accumulated in place
 * (docs/kernels.md#24-vnni-and-dot-product-instructions). 12 chains (latency ~5 cycles at two per cycle)
 * share two `a` vectors: 15 of the 16 ymm registers.
 */
#include <immintrin.h>

#include "ceiling.h"

#define CHAINS 12
#define A_VECTORS 2

/* One step as inline asm: with the intrinsic, GCC 12 stores most accumulators to the stack
 * every iteration. "%{vex%}" is the {vex} pseudo-prefix (the AVX-VNNI encoding, not
 * AVX512-VNNI's EVEX; GCC and Clang both read %{ %} as literal braces). AT&T order
 * "vpdpbusd b, a, c" is c += a (u8) . b (s8). Chains sharing `a` start from different values
 * (i), so no two are the same computation; the start is subtracted at the end. */
#define STEP(i) __asm__("%{vex%} vpdpbusd %2, %1, %0" : "+x"(c##i) : "x"((i) % 2 ? a1 : a0), "x"(vb))
#define INIT(i) __m256i c##i = _mm256_set1_epi32(i)
#define DONE(i) sum_i32(_mm256_sub_epi32(c##i, _mm256_set1_epi32(i)))

/* Sum of the 8 int32 lanes of v as int64. */
static int64_t sum_i32(__m256i v) {
    int32_t lanes[8];
    _mm256_storeu_si256((__m256i *)lanes, v);
    int64_t s = 0;
    for (int i = 0; i < 8; ++i) s += lanes[i];
    return s;
}

static int64_t dot_avxvnni(const uint8_t *a, const int8_t *b, int64_t iters) {
    const __m256i a0 = _mm256_loadu_si256((const __m256i *)a);
    const __m256i a1 = _mm256_loadu_si256((const __m256i *)(a + 32));
    INIT(0); INIT(1); INIT(2); INIT(3); INIT(4); INIT(5);
    INIT(6); INIT(7); INIT(8); INIT(9); INIT(10); INIT(11);
    __m256i vb = _mm256_loadu_si256((const __m256i *)b);
    for (int64_t it = 0; it < iters; ++it) {
        __asm__ volatile("" : "+x"(vb));
        STEP(0); STEP(1); STEP(2); STEP(3); STEP(4); STEP(5);
        STEP(6); STEP(7); STEP(8); STEP(9); STEP(10); STEP(11);
    }
    return DONE(0) + DONE(1) + DONE(2) + DONE(3) + DONE(4) + DONE(5) +
           DONE(6) + DONE(7) + DONE(8) + DONE(9) + DONE(10) + DONE(11);
}

const bl_ceiling_kernels bl_ceiling_avxvnni = {
    "avxvnni",
    "vmovdqu ymm + vpsadbw + vpaddq (32 bytes)",
    "{vex} vpdpbusd ymm (32 int8 MACs, int32 accumulator)",
    CHAINS, A_VECTORS, 32, 4, 32, 0,
    bl_ceiling_read_avx2, dot_avxvnni, /* the read and busy loops are AVX2's (ceiling_avx2.c) */
    "vfmadd231ps ymm (8 float lanes)", bl_ceiling_busy_avx2,
};
