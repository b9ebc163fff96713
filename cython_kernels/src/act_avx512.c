/* act_avx512.c — activation quantisation, v2: AVX-512 (F/BW/VL), 16 floats per vector.
 *
 * Part of the avx512vnni level (compiled with its flags). Same arithmetic as act_scalar.c,
 * bit for bit:
 *   amax   _mm512_max_epu32 over |x| bit patterns (exact; NaN/inf flagged), masked tail load;
 *   x·s_x  _mm512_mul_ps (float32, no FMA);
 *   round  half-even: _mm512_cvt_roundps_epi32 with embedded _MM_FROUND_TO_NEAREST_INT (not the
 *          MXCSR mode); half-away: truncate with roundscale, then ±1 where the exact remainder's
 *          magnitude is >= 0.5 (a masked add);
 *   clamp  int32 min/max, then a truncating narrow (_mm512_cvtepi32_epi8) of in-range values;
 *   sum_q  int32 adds of the clamped values (masked-off tail lanes are 0).
 */
#include <immintrin.h>

#include "bl_mad_impl.h"

static inline __m512i quant16(__m512 x, __m512 s, int rounding) {
    const __m512 v = _mm512_mul_ps(x, s);
    __m512i i;
    if (rounding == BL_ROUND_HALF_AWAY) {
        const __m512 t = _mm512_roundscale_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
        const __m512 f = _mm512_abs_ps(_mm512_sub_ps(v, t)); /* exact remainder */
        const __mmask16 up = _mm512_cmp_ps_mask(f, _mm512_set1_ps(0.5f), _CMP_GE_OQ);
        const __m512 one = _mm512_castsi512_ps(_mm512_or_si512(
            _mm512_castps_si512(_mm512_set1_ps(1.0f)),
            _mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32((int)0x80000000u)))); /* copysign(1, v) */
        i = _mm512_cvttps_epi32(_mm512_mask_add_ps(t, up, t, one));
    } else {
        i = _mm512_cvt_roundps_epi32(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    }
    return _mm512_max_epi32(_mm512_min_epi32(i, _mm512_set1_epi32(127)), _mm512_set1_epi32(-128));
}

bl_status bl_quantize_act_avx512(const float *x, int8_t *q, float *s_x, int32_t *sum_q, int64_t K, int64_t r0,
                                 int64_t r1, int rounding) {
    bl_status st = {0, -1};
    const __m512i abs_mask = _mm512_set1_epi32((int)BL_F32_ABS_MASK);
    for (int64_t r = r0; r < r1; ++r) {
        const float *xr = x + r * K;
        int8_t *qr = q + r * K;
        __m512i mx = _mm512_setzero_si512();
        for (int64_t k = 0; k < K; k += 16) {
            const __mmask16 m = K - k >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (K - k)) - 1);
            mx = _mm512_max_epu32(mx, _mm512_and_si512(_mm512_maskz_loadu_epi32(m, xr + k), abs_mask));
        }
        const uint32_t amax_bits = (uint32_t)_mm512_reduce_max_epu32(mx);
        if (amax_bits >= BL_F32_INF_BITS) {
            bl_act_bad_row(&st, qr, s_x, sum_q, K, r);
            continue;
        }
        const float s = bl_act_scale(amax_bits);
        const __m512 sv = _mm512_set1_ps(s);
        __m512i sum = _mm512_setzero_si512();
        for (int64_t k = 0; k < K; k += 16) {
            const __mmask16 m = K - k >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (K - k)) - 1);
            const __m512i i = quant16(_mm512_maskz_loadu_ps(m, xr + k), sv, rounding); /* 0 in masked lanes */
            sum = _mm512_add_epi32(sum, i);
            _mm_mask_storeu_epi8(qr + k, m, _mm512_cvtepi32_epi8(i));
        }
        s_x[r] = s;
        sum_q[r] = _mm512_reduce_add_epi32(sum);
    }
    bl_act_fault(sum_q, r0, r1);
    return st;
}
