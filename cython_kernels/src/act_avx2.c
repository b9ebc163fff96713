/* act_avx2.c — activation quantisation, v1: AVX2, 8 floats per vector, 32 per step.
 *
 * Same arithmetic as act_scalar.c (v0), bit for bit:
 *   amax   integer max (_mm256_max_epu32) over the |x| bit patterns: exact, flags NaN/inf;
 *   s_x    bl_act_scale (scalar, once per row);
 *   x·s_x  _mm256_mul_ps (float32, no FMA);
 *   round  half-even: _mm256_round_ps(_MM_FROUND_TO_NEAREST_INT) — explicit, not MXCSR;
 *          half-away: truncate (_MM_FROUND_TO_ZERO), then add copysign(1, v) where the exact
 *          remainder |v − trunc(v)| >= 0.5 (never the floor(v + 0.5) pitfall,
 *          docs/numerics.md#25-rounding-modes-at-a-glance);
 *   clamp  in int32 to [-128, 127], then packs (exact, values already in range) and a lane
 *          fix-up permute (packs works inside 128-bit lanes);
 *   sum_q  maddubs(1, q) + madd(…, 1) on the packed bytes.
 * The K % 32 tail goes through the scalar element function.
 */
#include <immintrin.h>

#include "bl_mad_impl.h"

static inline uint32_t hmax_epu32(__m256i v) {
    __m128i m = _mm_max_epu32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    m = _mm_max_epu32(m, _mm_shuffle_epi32(m, 0x4E));
    m = _mm_max_epu32(m, _mm_shuffle_epi32(m, 0xB1));
    return (uint32_t)_mm_cvtsi128_si32(m);
}

static inline int32_t hsum_epi32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
    return _mm_cvtsi128_si32(s);
}

/* 8 floats -> 8 int32 in [-128, 127]. */
static inline __m256i quant8(__m256 x, __m256 s, int rounding) {
    const __m256 v = _mm256_mul_ps(x, s);
    __m256 r;
    if (rounding == BL_ROUND_HALF_AWAY) {
        const __m256 sign = _mm256_set1_ps(-0.0f);
        const __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
        const __m256 f = _mm256_andnot_ps(sign, _mm256_sub_ps(v, t)); /* |v - trunc(v)|, exact */
        const __m256 up = _mm256_cmp_ps(f, _mm256_set1_ps(0.5f), _CMP_GE_OQ);
        const __m256 one = _mm256_or_ps(_mm256_set1_ps(1.0f), _mm256_and_ps(v, sign)); /* copysign(1, v) */
        r = _mm256_add_ps(t, _mm256_and_ps(up, one));
    } else {
        r = _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    }
    const __m256i i = _mm256_cvttps_epi32(r); /* r is an integer: exact */
    return _mm256_max_epi32(_mm256_min_epi32(i, _mm256_set1_epi32(127)), _mm256_set1_epi32(-128));
}

bl_status bl_quantize_act_avx2(const float *x, int8_t *q, float *s_x, int32_t *sum_q, int64_t K, int64_t r0,
                               int64_t r1, int rounding) {
    bl_status st = {0, -1};
    const __m256i abs_mask = _mm256_set1_epi32((int)BL_F32_ABS_MASK);
    const __m256i lane_fix = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int64_t r = r0; r < r1; ++r) {
        const float *xr = x + r * K;
        int8_t *qr = q + r * K;
        __m256i mx = _mm256_setzero_si256();
        int64_t k = 0;
        for (; k + 8 <= K; k += 8)
            mx = _mm256_max_epu32(mx, _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(xr + k)), abs_mask));
        uint32_t amax_bits = hmax_epu32(mx);
        for (; k < K; ++k) {
            const uint32_t a = bl_f32_bits(xr[k]) & BL_F32_ABS_MASK;
            amax_bits = a > amax_bits ? a : amax_bits;
        }
        if (amax_bits >= BL_F32_INF_BITS) {
            bl_act_bad_row(&st, qr, s_x, sum_q, K, r);
            continue;
        }
        const float s = bl_act_scale(amax_bits);
        const __m256 sv = _mm256_set1_ps(s);
        __m256i sum = _mm256_setzero_si256();
        k = 0;
        for (; k + 32 <= K; k += 32) {
            const __m256i i0 = quant8(_mm256_loadu_ps(xr + k), sv, rounding);
            const __m256i i1 = quant8(_mm256_loadu_ps(xr + k + 8), sv, rounding);
            const __m256i i2 = quant8(_mm256_loadu_ps(xr + k + 16), sv, rounding);
            const __m256i i3 = quant8(_mm256_loadu_ps(xr + k + 24), sv, rounding);
            /* packs interleaves 4-element groups per 128-bit lane: [i0a i1a i2a i3a | i0b i1b i2b i3b] */
            const __m256i b = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
            const __m256i qv = _mm256_permutevar8x32_epi32(b, lane_fix);
            _mm256_storeu_si256((__m256i *)(qr + k), qv);
            sum = _mm256_add_epi32(sum, _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), qv),
                                                          _mm256_set1_epi16(1)));
        }
        int32_t total = hsum_epi32(sum);
        for (; k < K; ++k) {
            qr[k] = bl_quant_one(xr[k], s, rounding);
            total += qr[k];
        }
        s_x[r] = s;
        sum_q[r] = total;
    }
    bl_act_fault(sum_q, r0, r1);
    return st;
}
