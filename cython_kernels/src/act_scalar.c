/* act_scalar.c — activation quantisation, v0: portable C (the reference for the SIMD versions).
 *
 * Per token row (docs/numerics.md#21-bitnetcpp-i2_s-path; policy: bitnet_lab.quant.quantize_activations):
 *   amax  = max_k |x_k|, exact, as an integer max over the |x| bit patterns (bl_mad_impl.h),
 *           which also flags NaN/inf rows;
 *   s_x   = fl32(127 / max(amax, 1e-5f)), the quotient in double rounded once to float;
 *   q_k   = clamp(round(fl32(x_k · s_x)), -128, 127), round = half-even or half-away, done by
 *           truncation plus an exact look at the remainder (no dependence on the FPU mode);
 *   sum_q = Σ q_k (int32), for the code-offset correction of the MAD kernels.
 */
#include "bl_mad_impl.h"

bl_status bl_quantize_act_scalar(const float *x, int8_t *q, float *s_x, int32_t *sum_q, int64_t K, int64_t r0,
                                 int64_t r1, int rounding) {
    bl_status st = {0, -1};
    for (int64_t r = r0; r < r1; ++r) {
        const float *xr = x + r * K;
        int8_t *qr = q + r * K;
        uint32_t amax_bits = 0;
        for (int64_t k = 0; k < K; ++k) {
            const uint32_t a = bl_f32_bits(xr[k]) & BL_F32_ABS_MASK;
            amax_bits = a > amax_bits ? a : amax_bits;
        }
        if (amax_bits >= BL_F32_INF_BITS) {
            bl_act_bad_row(&st, qr, s_x, sum_q, K, r);
            continue;
        }
        const float s = bl_act_scale(amax_bits);
        int32_t sum = 0;
        for (int64_t k = 0; k < K; ++k) {
            qr[k] = bl_quant_one(xr[k], s, rounding);
            sum += qr[k];
        }
        s_x[r] = s;
        sum_q[r] = sum;
    }
    bl_act_fault(sum_q, r0, r1);
    return st;
}
