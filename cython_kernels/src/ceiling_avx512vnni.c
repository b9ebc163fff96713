/* ceiling_avx512vnni.c — machine-ceiling kernels, AVX-512 + VNNI (see ceiling.h).
 *
 * Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512vnni, called only on CPUs with all
 * four. read: 64-byte loads, vpsadbw zmm, vpaddq into four accumulators (256 bytes per
 * iteration). busy: the read loop plus vfmadd231ps zmm on 8 register accumulators (ceiling.h).
 * dot: vpdpbusd zmm — 64 u8 x s8 products, four per int32 lane, accumulated in
 * place (docs/kernels.md#24-vnni-and-dot-product-instructions); 12 chains with their own `a` use 25 of the 32
 * zmm registers, enough to cover its latency (4-5 cycles) at two per cycle.
 */
#include <immintrin.h>
#include <stddef.h>

#include "ceiling.h"

#define CHAINS 12
#define A_VECTORS 2

/* The stream of the read and busy loops: 256 bytes an iteration, each 64-byte load byte-summed
 * (vpsadbw) into one of four accumulators, then `fmas` vfmadd231ps zmm per 64 bytes (ceiling.h,
 * busy): f = f·m + c on 8 accumulators, which converge to c / (1 − m) = 1 (no overflow, no
 * subnormals), their sum to *sink. Inlined with fmas = 0 and no sink, only the stream is left:
 * that is the read loop. */
static inline __attribute__((always_inline)) uint64_t stream_avx512(const uint8_t *buf, int64_t nbytes, int fmas,
                                                                   float *sink) {
    const __m512i zero = _mm512_setzero_si512();
    __m512i s0 = zero, s1 = zero, s2 = zero, s3 = zero;
    const __m512 m = _mm512_set1_ps(0.9990234375f), c = _mm512_set1_ps(0.0009765625f);
    __m512 f0 = _mm512_set1_ps(1.0f), f1 = f0, f2 = f0, f3 = f0, f4 = f0, f5 = f0, f6 = f0, f7 = f0;
    for (int64_t i = 0; i < nbytes; i += 256) {
        s0 = _mm512_add_epi64(s0, _mm512_sad_epu8(_mm512_loadu_si512((const void *)(buf + i)), zero));
        s1 = _mm512_add_epi64(s1, _mm512_sad_epu8(_mm512_loadu_si512((const void *)(buf + i + 64)), zero));
        s2 = _mm512_add_epi64(s2, _mm512_sad_epu8(_mm512_loadu_si512((const void *)(buf + i + 128)), zero));
        s3 = _mm512_add_epi64(s3, _mm512_sad_epu8(_mm512_loadu_si512((const void *)(buf + i + 192)), zero));
        for (int f = 0; f < 4 * fmas; f += 8) {
            f0 = _mm512_fmadd_ps(f0, m, c); f1 = _mm512_fmadd_ps(f1, m, c);
            f2 = _mm512_fmadd_ps(f2, m, c); f3 = _mm512_fmadd_ps(f3, m, c);
            f4 = _mm512_fmadd_ps(f4, m, c); f5 = _mm512_fmadd_ps(f5, m, c);
            f6 = _mm512_fmadd_ps(f6, m, c); f7 = _mm512_fmadd_ps(f7, m, c);
        }
    }
    if (sink) { /* NULL from the read loop */
        const __m512 f = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(f0, f1), _mm512_add_ps(f2, f3)),
                                       _mm512_add_ps(_mm512_add_ps(f4, f5), _mm512_add_ps(f6, f7)));
        *sink = _mm512_reduce_add_ps(f);
    }
    __m512i s = _mm512_add_epi64(_mm512_add_epi64(s0, s1), _mm512_add_epi64(s2, s3));
    return (uint64_t)_mm512_reduce_add_epi64(s);
}

uint64_t bl_ceiling_read_avx512(const uint8_t *buf, int64_t nbytes) { return stream_avx512(buf, nbytes, 0, NULL); }

uint64_t bl_ceiling_busy_avx512(const uint8_t *buf, int64_t nbytes, int fmas, float *sink) {
    return stream_avx512(buf, nbytes, fmas, sink);
}

/* Named variables, not arrays (GCC keeps arrays of vectors partly on the stack). One step is
 * written as inline asm: with the intrinsic, GCC 12 copies every accumulator twice per
 * iteration (reg-reg moves that eat front-end slots). AT&T order: "vpdpbusd b, a, c" is
 * c += a (u8) . b (s8). Chains that share `a` start from different values (i) so that no two
 * are the same computation (the compiler may merge identical asm); the start value is
 * subtracted at the end. */
#define STEP(i) __asm__("vpdpbusd %2, %1, %0" : "+v"(c##i) : "v"((i) % 2 ? a1 : a0), "v"(vb))
#define INIT(i) __m512i c##i = _mm512_set1_epi32(i)
#define DONE(i) sum_i32(_mm512_sub_epi32(c##i, _mm512_set1_epi32(i)))

/* Sum of the 16 int32 lanes of v as int64 (each lane sign-extended). */
static int64_t sum_i32(__m512i v) {
    const __m512i lo = _mm512_cvtepi32_epi64(_mm512_castsi512_si256(v));
    const __m512i hi = _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(v, 1));
    return (int64_t)_mm512_reduce_add_epi64(_mm512_add_epi64(lo, hi));
}

static int64_t dot_avx512vnni(const uint8_t *a, const int8_t *b, int64_t iters) {
    const __m512i a0 = _mm512_loadu_si512((const void *)a);
    const __m512i a1 = _mm512_loadu_si512((const void *)(a + 64));
    INIT(0); INIT(1); INIT(2); INIT(3); INIT(4); INIT(5);
    INIT(6); INIT(7); INIT(8); INIT(9); INIT(10); INIT(11);
    __m512i vb = _mm512_loadu_si512((const void *)b);
    for (int64_t it = 0; it < iters; ++it) {
        __asm__ volatile("" : "+v"(vb)); /* b "changes": no product is loop-invariant */
        STEP(0); STEP(1); STEP(2); STEP(3); STEP(4); STEP(5);
        STEP(6); STEP(7); STEP(8); STEP(9); STEP(10); STEP(11);
    }
    return DONE(0) + DONE(1) + DONE(2) + DONE(3) + DONE(4) + DONE(5) +
           DONE(6) + DONE(7) + DONE(8) + DONE(9) + DONE(10) + DONE(11);
}

const bl_ceiling_kernels bl_ceiling_avx512vnni = {
    "avx512vnni",
    "vmovdqu64 zmm + vpsadbw + vpaddq (64 bytes)",
    "vpdpbusd zmm (64 int8 MACs, int32 accumulator)",
    CHAINS, A_VECTORS, 64, 4, 32, 0,
    bl_ceiling_read_avx512, dot_avx512vnni,
    "vfmadd231ps zmm (16 float lanes)", bl_ceiling_busy_avx512,
};
