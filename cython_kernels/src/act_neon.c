/* act_neon.c — activation quantisation for the neon and neon_dotprod levels (aarch64 NEON).
 *
 * Same arithmetic as act_scalar.c, bit for bit:
 *   amax   vmaxq_u32 over |x| bit patterns (exact; NaN/inf flagged);
 *   x·s_x  vmulq_f32 (float32; -ffp-contract=off keeps it from fusing);
 *   round  half-even: vcvtnq_s32_f32 (FCVTNS, ties to even); half-away: vcvtaq_s32_f32 (FCVTAS,
 *          ties away) — both fixed by the instruction, not by the FPCR mode;
 *   clamp  saturating narrows int32 -> int16 -> int8 (saturation is the clamp);
 *   sum_q  vaddlvq_s8 per 16 codes (|sum| ≤ 2048 fits its int16 result).
 */
#include <arm_neon.h>

#include "bl_mad_impl.h"

static inline int32x4_t round4(float32x4_t v, int rounding) {
    return rounding == BL_ROUND_HALF_AWAY ? vcvtaq_s32_f32(v) : vcvtnq_s32_f32(v);
}

bl_status bl_quantize_act_neon(const float *x, int8_t *q, float *s_x, int32_t *sum_q, int64_t K, int64_t r0,
                               int64_t r1, int rounding) {
    bl_status st = {0, -1};
    const uint32x4_t abs_mask = vdupq_n_u32(BL_F32_ABS_MASK);
    for (int64_t r = r0; r < r1; ++r) {
        const float *xr = x + r * K;
        int8_t *qr = q + r * K;
        uint32x4_t mx = vdupq_n_u32(0);
        int64_t k = 0;
        for (; k + 4 <= K; k += 4) mx = vmaxq_u32(mx, vandq_u32(vreinterpretq_u32_f32(vld1q_f32(xr + k)), abs_mask));
        uint32_t amax_bits = vmaxvq_u32(mx);
        for (; k < K; ++k) {
            const uint32_t a = bl_f32_bits(xr[k]) & BL_F32_ABS_MASK;
            amax_bits = a > amax_bits ? a : amax_bits;
        }
        if (amax_bits >= BL_F32_INF_BITS) {
            bl_act_bad_row(&st, qr, s_x, sum_q, K, r);
            continue;
        }
        const float s = bl_act_scale(amax_bits);
        const float32x4_t sv = vdupq_n_f32(s);
        int32_t total = 0;
        k = 0;
        for (; k + 16 <= K; k += 16) {
            const int32x4_t i0 = round4(vmulq_f32(vld1q_f32(xr + k), sv), rounding);
            const int32x4_t i1 = round4(vmulq_f32(vld1q_f32(xr + k + 4), sv), rounding);
            const int32x4_t i2 = round4(vmulq_f32(vld1q_f32(xr + k + 8), sv), rounding);
            const int32x4_t i3 = round4(vmulq_f32(vld1q_f32(xr + k + 12), sv), rounding);
            const int16x8_t h0 = vcombine_s16(vqmovn_s32(i0), vqmovn_s32(i1));
            const int16x8_t h1 = vcombine_s16(vqmovn_s32(i2), vqmovn_s32(i3));
            const int8x16_t qv = vcombine_s8(vqmovn_s16(h0), vqmovn_s16(h1));
            vst1q_s8(qr + k, qv);
            total += vaddlvq_s8(qv);
        }
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
