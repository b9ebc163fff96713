/* ceiling_avx2.c — machine-ceiling kernels, AVX2 (see ceiling.h for the contract).
 *
 * Compiled with -mavx2 -mfma, called only on CPUs that have both.
 * read: 32-byte loads, vpsadbw against zero (the byte sums of each 8-byte group land in
 *       four uint64 lanes), vpaddq into four accumulators: 128 bytes per iteration.
 * busy: the read loop plus vfmadd231ps ymm on 8 register accumulators (ceiling.h).
 * dot:  the inner step of the AVX2 I2_S kernel (docs/kernels.md#21-x86-avx2): vpmaddubsw (32 u8 x s8
 *       products, adjacent pairs summed into int16) then vpaddw into an int16 accumulator.
 *       6 chains, each with its own `a`: with 1 `b` and a temporary, 14 of the 16 ymm
 *       registers. The int16 add has a one-cycle latency, so 6 chains keep two multiply
 *       ports busy.
 */
#include <immintrin.h>
#include <stddef.h>

#include "ceiling.h"

#define CHAINS 6

/* The stream of the read and busy loops: 128 bytes an iteration, each 32-byte load byte-summed
 * (vpsadbw) into one of four accumulators, then `fmas` vfmadd231ps ymm per 64 bytes (ceiling.h,
 * busy): f = f·m + c on 8 accumulators, which converge to c / (1 − m) = 1 (no overflow, no
 * subnormals), their sum to *sink. Inlined with fmas = 0 and no sink, only the stream is left:
 * that is the read loop. */
static inline __attribute__((always_inline)) uint64_t stream_avx2(const uint8_t *buf, int64_t nbytes, int fmas,
                                                                 float *sink) {
    const __m256i zero = _mm256_setzero_si256();
    __m256i s0 = zero, s1 = zero, s2 = zero, s3 = zero;
    const __m256 m = _mm256_set1_ps(0.9990234375f), c = _mm256_set1_ps(0.0009765625f);
    __m256 f0 = _mm256_set1_ps(1.0f), f1 = f0, f2 = f0, f3 = f0, f4 = f0, f5 = f0, f6 = f0, f7 = f0;
    for (int64_t i = 0; i < nbytes; i += 128) {
        s0 = _mm256_add_epi64(s0, _mm256_sad_epu8(_mm256_loadu_si256((const __m256i *)(buf + i)), zero));
        s1 = _mm256_add_epi64(s1, _mm256_sad_epu8(_mm256_loadu_si256((const __m256i *)(buf + i + 32)), zero));
        s2 = _mm256_add_epi64(s2, _mm256_sad_epu8(_mm256_loadu_si256((const __m256i *)(buf + i + 64)), zero));
        s3 = _mm256_add_epi64(s3, _mm256_sad_epu8(_mm256_loadu_si256((const __m256i *)(buf + i + 96)), zero));
        for (int f = 0; f < 2 * fmas; f += 8) { /* 128 bytes: twice the per-64-byte count */
            f0 = _mm256_fmadd_ps(f0, m, c); f1 = _mm256_fmadd_ps(f1, m, c);
            f2 = _mm256_fmadd_ps(f2, m, c); f3 = _mm256_fmadd_ps(f3, m, c);
            f4 = _mm256_fmadd_ps(f4, m, c); f5 = _mm256_fmadd_ps(f5, m, c);
            f6 = _mm256_fmadd_ps(f6, m, c); f7 = _mm256_fmadd_ps(f7, m, c);
        }
    }
    if (sink) { /* NULL from the read loop */
        const __m256 f = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(f0, f1), _mm256_add_ps(f2, f3)),
                                       _mm256_add_ps(_mm256_add_ps(f4, f5), _mm256_add_ps(f6, f7)));
        float fl[8];
        _mm256_storeu_ps(fl, f);
        *sink = fl[0] + fl[1] + fl[2] + fl[3] + fl[4] + fl[5] + fl[6] + fl[7];
    }
    __m256i s = _mm256_add_epi64(_mm256_add_epi64(s0, s1), _mm256_add_epi64(s2, s3));
    uint64_t lanes[4];
    _mm256_storeu_si256((__m256i *)lanes, s);
    return lanes[0] + lanes[1] + lanes[2] + lanes[3];
}

uint64_t bl_ceiling_read_avx2(const uint8_t *buf, int64_t nbytes) { return stream_avx2(buf, nbytes, 0, NULL); }

uint64_t bl_ceiling_busy_avx2(const uint8_t *buf, int64_t nbytes, int fmas, float *sink) {
    return stream_avx2(buf, nbytes, fmas, sink);
}

/* Sum of the 16 int16 lanes of v, sign-extended. */
static int64_t sum_i16(__m256i v) {
    const __m256i w = _mm256_madd_epi16(v, _mm256_set1_epi16(1)); /* 8 int32 pair sums, exact */
    int32_t lanes[8];
    _mm256_storeu_si256((__m256i *)lanes, w);
    int64_t s = 0;
    for (int i = 0; i < 8; ++i) s += lanes[i];
    return s;
}

/* One step as inline asm, on named variables: with intrinsics on arrays, GCC 12 keeps some
 * `a` on the stack and copies accumulators every iteration. AT&T order:
 * "vpmaddubsw b, a, t" is t = maddubs(a (u8), b (s8)); then c += t (int16, wrapping). */
#define STEP(i) __asm__("vpmaddubsw %[b], %[a], %[t]\n\tvpaddw %[t], %[c], %[c]" \
                        : [c] "+x"(c##i), [t] "=&x"(t) : [a] "x"(a##i), [b] "x"(vb))
#define LOAD(i) const __m256i a##i = _mm256_loadu_si256((const __m256i *)(a + 32 * (i))); \
                __m256i c##i = _mm256_setzero_si256()

static int64_t dot_avx2(const uint8_t *a, const int8_t *b, int64_t iters) {
    LOAD(0); LOAD(1); LOAD(2); LOAD(3); LOAD(4); LOAD(5);
    __m256i t, vb = _mm256_loadu_si256((const __m256i *)b);
    for (int64_t it = 0; it < iters; ++it) {
        __asm__ volatile("" : "+x"(vb)); /* b "changes": no product is loop-invariant */
        STEP(0); STEP(1); STEP(2); STEP(3); STEP(4); STEP(5);
    }
    return sum_i16(c0) + sum_i16(c1) + sum_i16(c2) + sum_i16(c3) + sum_i16(c4) + sum_i16(c5);
}

const bl_ceiling_kernels bl_ceiling_avx2 = {
    "avx2",
    "vmovdqu ymm + vpsadbw + vpaddq (32 bytes)",
    "vpmaddubsw ymm + vpaddw (32 int8 MACs, int16 accumulator)",
    CHAINS, CHAINS, 32, 2, 16, 0,
    bl_ceiling_read_avx2, dot_avx2,
    "vfmadd231ps ymm (8 float lanes)", bl_ceiling_busy_avx2,
};
