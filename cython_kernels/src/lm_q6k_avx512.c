/* lm_q6k_avx512.c — the Q6_K × Q8_K lm_head at the AVX-512 levels (bl_q6k.h): the row loop of
 * lm_q6k_x86.h with a 512-bit block body.
 *
 * Per half h of a block: ql[64h .. 64h + 63] is one 64-byte load whose low nibbles are the codes of
 * elements 128h + 0..63 and whose high nibbles those of 128h + 64..127; qh[32h .. 32h + 31] is
 * loaded into both 256-bit halves, each half shifted to its own 2-bit field (0 / 2 for the low
 * nibbles' elements, 4 / 6 for the high nibbles'), so the 6-bit codes u of 64 consecutive elements
 * come out in one vector, in element order. maddubs(u, q8) gives 32 exact int16 pair sums
 * (|.| <= 2·63·127), madd with each int16 lane's sub-block scale (vpermw from the 16 scales) gives
 * int32 — the same exact integer as the AVX2 body in half the instructions; the −32 offset is
 * Σ_s scales[s] · 32 · bsums[s], as there. */
#include "lm_q6k_x86.h"

/* vpermw indices: int16 lane j of the vector of elements 64v .. 64v + 63 of a block takes scale
 * (64v + 2j) / 16 = 4v + j / 8 (v = 0 .. 3: the four 64-element runs of a block). */
static inline __m512i q6k_scale_index(int v) {
    return _mm512_set_epi16(4 * v + 3, 4 * v + 3, 4 * v + 3, 4 * v + 3, 4 * v + 3, 4 * v + 3, 4 * v + 3, 4 * v + 3,
                            4 * v + 2, 4 * v + 2, 4 * v + 2, 4 * v + 2, 4 * v + 2, 4 * v + 2, 4 * v + 2, 4 * v + 2,
                            4 * v + 1, 4 * v + 1, 4 * v + 1, 4 * v + 1, 4 * v + 1, 4 * v + 1, 4 * v + 1, 4 * v + 1,
                            4 * v + 0, 4 * v + 0, 4 * v + 0, 4 * v + 0, 4 * v + 0, 4 * v + 0, 4 * v + 0, 4 * v + 0);
}

/* The 16 int32 lanes of one block's products, the −32 offset included (their sum is the block's
 * isum, q6k_block_isum512). */
static inline __m512i q6k_block_lanes512(const uint8_t *blk, const int8_t *x, const int16_t *bs) {
    const __m512i m4 = _mm512_set1_epi8(0x0f), m3 = _mm512_set1_epi8(0x03);
    const __m128i sc8 = _mm_loadu_si128((const __m128i *)(blk + BL_Q6_K_SCALES));
    const __m512i sc16 = _mm512_castsi256_si512(_mm256_cvtepi8_epi16(sc8));
    const __m256i corr = _mm256_madd_epi16(_mm256_cvtepi8_epi16(sc8), _mm256_loadu_si256((const __m256i *)bs));
    __m512i acc = _mm512_zextsi256_si512(_mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(corr, 5)));
    for (int h = 0; h < 2; ++h) {
        const __m512i ql = _mm512_loadu_si512((const void *)(blk + 64 * h));
        const __m512i qh = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(blk + BL_Q6_K_QH + 32 * h)));
        const __m512i qh01 = _mm512_mask_blend_epi64(0xF0, qh, _mm512_srli_epi16(qh, 2));
        const __m512i qh23 = _mm512_srli_epi16(qh01, 4);
        const __m512i u01 = _mm512_or_si512(_mm512_and_si512(ql, m4), _mm512_slli_epi16(_mm512_and_si512(qh01, m3), 4));
        const __m512i u23 = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), m4),
                                            _mm512_slli_epi16(_mm512_and_si512(qh23, m3), 4));
        const __m512i p01 = _mm512_maddubs_epi16(u01, _mm512_loadu_si512((const void *)(x + 128 * h)));
        const __m512i p23 = _mm512_maddubs_epi16(u23, _mm512_loadu_si512((const void *)(x + 128 * h + 64)));
        acc = _mm512_add_epi32(acc, _mm512_madd_epi16(p01, _mm512_permutexvar_epi16(q6k_scale_index(2 * h), sc16)));
        acc = _mm512_add_epi32(acc, _mm512_madd_epi16(p23, _mm512_permutexvar_epi16(q6k_scale_index(2 * h + 1), sc16)));
    }
    return acc;
}

/* The exact integer isum of one block (bl_q6k.h): the sum of its 16 lanes. */
static inline int32_t q6k_block_isum512(const uint8_t *blk, const int8_t *x, const int16_t *bs) {
    return _mm512_reduce_add_epi32(q6k_block_lanes512(blk, x, bs));
}

/* Lanes of four rows' accumulators summed per 128-bit chunk: chunk c holds [Σ_c a, Σ_c b, Σ_c c, Σ_c d]. */
static inline __m512i q6k_sum4(__m512i a, __m512i b, __m512i c, __m512i d) {
    const __m512i ab = _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b));
    const __m512i cd = _mm512_add_epi32(_mm512_unpacklo_epi32(c, d), _mm512_unpackhi_epi32(c, d));
    return _mm512_add_epi32(_mm512_unpacklo_epi64(ab, cd), _mm512_unpackhi_epi64(ab, cd));
}

/* 16 rows of the decode (one hidden row), each row read front to back as before: its blocks' sums
 * reduced four blocks at a time (q6k_sum4, then the four 128-bit chunks added), kept with the
 * blocks' fp16 scales in a small table, then the float sums of the 16 rows formed together, a row
 * per lane — per lane the same operations in the same order as q6k_lm_rows_with (dd = d·d8[b],
 * t = (float)isum·dd, sum += t; no FMA), so the same bits. */
#define Q6K_ROWS 16
#define Q6K_MAX_NB 64 /* K ≤ 16384 */
static void q6k_rows16(const uint8_t *W, int64_t row_bytes, int64_t K, int64_t r, const int8_t *x, const float *d8,
                       const int16_t *bs, float *out) {
    const int64_t nb = K / BL_QK_K;
    _Alignas(64) int32_t is[Q6K_MAX_NB][Q6K_ROWS];
    _Alignas(64) uint16_t dbits[Q6K_MAX_NB][Q6K_ROWS];
    for (int i = 0; i < Q6K_ROWS; ++i) {
        const uint8_t *row = W + (r + i) * row_bytes;
        int64_t b = 0;
        for (; b + 4 <= nb; b += 4) {
            const uint8_t *blk = row + b * BL_Q6_K_BYTES;
            for (int k = 0; k < 4; ++k) q6k_prefetch(blk + k * BL_Q6_K_BYTES);
            const __m512i s4 = q6k_sum4(q6k_block_lanes512(blk, x + b * BL_QK_K, bs + b * 16),
                                        q6k_block_lanes512(blk + BL_Q6_K_BYTES, x + (b + 1) * BL_QK_K, bs + (b + 1) * 16),
                                        q6k_block_lanes512(blk + 2 * BL_Q6_K_BYTES, x + (b + 2) * BL_QK_K, bs + (b + 2) * 16),
                                        q6k_block_lanes512(blk + 3 * BL_Q6_K_BYTES, x + (b + 3) * BL_QK_K, bs + (b + 3) * 16));
            const __m256i h = _mm256_add_epi32(_mm512_castsi512_si256(s4), _mm512_extracti64x4_epi64(s4, 1));
            const __m128i v = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
            is[b][i] = _mm_extract_epi32(v, 0), is[b + 1][i] = _mm_extract_epi32(v, 1);
            is[b + 2][i] = _mm_extract_epi32(v, 2), is[b + 3][i] = _mm_extract_epi32(v, 3);
        }
        for (; b < nb; ++b) {
            const uint8_t *blk = row + b * BL_Q6_K_BYTES;
            q6k_prefetch(blk);
            is[b][i] = q6k_block_isum512(blk, x + b * BL_QK_K, bs + b * 16);
        }
        for (b = 0; b < nb; ++b) memcpy(&dbits[b][i], row + b * BL_Q6_K_BYTES + BL_Q6_K_D, 2);
    }
    __m512 sum = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
        const __m512 dd = _mm512_mul_ps(_mm512_cvtph_ps(_mm256_load_si256((const __m256i *)dbits[b])), _mm512_set1_ps(d8[b]));
        sum = _mm512_add_ps(sum, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_load_si512((const void *)is[b])), dd));
    }
    _mm512_storeu_ps(out + r, sum);
}

void bl_lm_q6k_avx512(const uint8_t *W, int64_t row_bytes, int64_t K, int64_t r0, int64_t r1, const int8_t *q8,
                      const float *d8, const int16_t *bsums, int64_t N, float *out, int64_t ldo) {
    if (N == 1 && K / BL_QK_K <= Q6K_MAX_NB) { /* decode: 16 rows at a time, the rest one by one */
        int64_t r = r0;
        for (; r + Q6K_ROWS <= r1; r += Q6K_ROWS) q6k_rows16(W, row_bytes, K, r, q8, d8, bsums, out);
        r0 = r;
    }
    q6k_lm_rows_with(q6k_block_isum512, W, row_bytes, K, r0, r1, q8, d8, bsums, N, out, ldo);
}
