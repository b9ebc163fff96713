/* lm_q6k_x86.h — the AVX2 body of the Q6_K × Q8_K lm_head (bl_q6k.h), included by lm_q6k_avx2.c
 * and lm_q6k_avx512.c (compiled there with each level's flags; 256-bit code on both).
 *
 * Per block: the 6-bit codes u (0 .. 63, unsigned) are unpacked 32 at a time (one quarter j of a
 * half h: two sub-blocks); maddubs(u, q8) gives 16 exact int16 pair sums (|.| <= 2·63·127);
 * madd with the two sub-blocks' scales (8 copies each) gives int32; the −32 offset is
 * Σ_s scales[s] · 32 · bsums[s], subtracted once per block. The block's exact integer is then
 * summed into the row in the canonical float order (a scalar chain). */
#ifndef BL_LM_Q6K_X86_H
#define BL_LM_Q6K_X86_H

#include <immintrin.h>

#include "bl_q6k.h"

/* Byte k of shuffle `q`: scale 2q for k < 8, scale 2q + 1 for k >= 8 (quarter q = 4h + j). */
static const uint8_t q6k_scale_shuffle[8][16] = {
    {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1},
    {2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3},
    {4, 4, 4, 4, 4, 4, 4, 4, 5, 5, 5, 5, 5, 5, 5, 5},
    {6, 6, 6, 6, 6, 6, 6, 6, 7, 7, 7, 7, 7, 7, 7, 7},
    {8, 8, 8, 8, 8, 8, 8, 8, 9, 9, 9, 9, 9, 9, 9, 9},
    {10, 10, 10, 10, 10, 10, 10, 10, 11, 11, 11, 11, 11, 11, 11, 11},
    {12, 12, 12, 12, 12, 12, 12, 12, 13, 13, 13, 13, 13, 13, 13, 13},
    {14, 14, 14, 14, 14, 14, 14, 14, 15, 15, 15, 15, 15, 15, 15, 15},
};

static inline __m256i q6k_quarter(__m256i acc, __m256i u, const int8_t *x, __m128i sc8, int q) {
    const __m256i p16 = _mm256_maddubs_epi16(u, _mm256_loadu_si256((const __m256i *)x));
    const __m128i s = _mm_shuffle_epi8(sc8, _mm_loadu_si128((const __m128i *)q6k_scale_shuffle[q]));
    return _mm256_add_epi32(acc, _mm256_madd_epi16(p16, _mm256_cvtepi8_epi16(s)));
}

/* The exact integer isum of one block (bl_q6k.h). */
static inline int32_t q6k_block_isum(const uint8_t *blk, const int8_t *x, const int16_t *bs) {
    const __m256i m4 = _mm256_set1_epi8(0x0f), m3 = _mm256_set1_epi8(0x03);
    const __m128i sc8 = _mm_loadu_si128((const __m128i *)(blk + BL_Q6_K_SCALES));
    __m256i acc = _mm256_setzero_si256();
    for (int h = 0; h < 2; ++h) {
        const __m256i ql0 = _mm256_loadu_si256((const __m256i *)(blk + 64 * h));
        const __m256i ql1 = _mm256_loadu_si256((const __m256i *)(blk + 64 * h + 32));
        const __m256i qh = _mm256_loadu_si256((const __m256i *)(blk + BL_Q6_K_QH + 32 * h));
        /* high bits masked to 0..3 before the 16-bit shift by 4, so nothing crosses a byte */
        const __m256i u0 = _mm256_or_si256(_mm256_and_si256(ql0, m4), _mm256_slli_epi16(_mm256_and_si256(qh, m3), 4));
        const __m256i u1 = _mm256_or_si256(_mm256_and_si256(ql1, m4),
                                           _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), m3), 4));
        const __m256i u2 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                                           _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), m3), 4));
        const __m256i u3 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                                           _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), m3), 4));
        const int8_t *xh = x + 128 * h;
        acc = q6k_quarter(acc, u0, xh, sc8, 4 * h + 0);
        acc = q6k_quarter(acc, u1, xh + 32, sc8, 4 * h + 1);
        acc = q6k_quarter(acc, u2, xh + 64, sc8, 4 * h + 2);
        acc = q6k_quarter(acc, u3, xh + 96, sc8, 4 * h + 3);
    }
    const __m256i corr = _mm256_madd_epi16(_mm256_cvtepi8_epi16(sc8), _mm256_loadu_si256((const __m256i *)bs));
    acc = _mm256_sub_epi32(acc, _mm256_slli_epi32(corr, 5));
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

static inline void q6k_prefetch(const uint8_t *blk) {
    const char *p = (const char *)blk + BL_LM_PREFETCH_BYTES;
    _mm_prefetch(p, _MM_HINT_T1);
    _mm_prefetch(p + 64, _MM_HINT_T1);
    _mm_prefetch(p + 128, _MM_HINT_T1);
    _mm_prefetch(p + 192, _MM_HINT_T1);
}

/* The exact integer of one block: q6k_block_isum here, a wider body at the AVX-512 levels. */
typedef int32_t (*q6k_isum_fn)(const uint8_t *blk, const int8_t *x, const int16_t *bs);

/* Rows [r0, r1) against N hidden rows, blocks summed in the canonical order (bl_q6k.h); `isum` is a
 * constant at every call site, so it is inlined. */
static inline __attribute__((always_inline)) void q6k_lm_rows_with(q6k_isum_fn isum, const uint8_t *W,
                                                                   int64_t row_bytes, int64_t K, int64_t r0,
                                                                   int64_t r1, const int8_t *q8, const float *d8,
                                                                   const int16_t *bsums, int64_t N, float *out,
                                                                   int64_t ldo) {
    const int64_t nb = K / BL_QK_K;
    for (int64_t r = r0; r < r1; ++r) {
        const uint8_t *row = W + r * row_bytes;
        for (int64_t n = 0; n < N; ++n) {
            const int8_t *x = q8 + n * K;
            const int16_t *bs = bsums + n * (K / 16);
            const float *dn = d8 + n * nb;
            float sum = 0.0f;
            for (int64_t b = 0; b < nb; ++b) {
                const uint8_t *blk = row + b * BL_Q6_K_BYTES;
                if (n == 0) q6k_prefetch(blk);
                const int32_t is = isum(blk, x + b * BL_QK_K, bs + b * 16);
                uint16_t dbits;
                memcpy(&dbits, blk + BL_Q6_K_D, 2);
                const float dd = _cvtsh_ss(dbits) * dn[b];
                const float t = (float)is * dd;
                sum = sum + t;
            }
            out[n * ldo + r] = sum;
        }
    }
}

static inline void q6k_lm_rows_x86(const uint8_t *W, int64_t row_bytes, int64_t K, int64_t r0, int64_t r1,
                                   const int8_t *q8, const float *d8, const int16_t *bsums, int64_t N, float *out,
                                   int64_t ldo) {
    q6k_lm_rows_with(q6k_block_isum, W, row_bytes, K, r0, r1, q8, d8, bsums, N, out, ldo);
}

#endif /* BL_LM_Q6K_X86_H */
