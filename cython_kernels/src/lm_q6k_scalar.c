/* lm_q6k_scalar.c — the Q6_K × Q8_K lm_head in plain C: the canonical order of bl_q6k.h, written
 * as directly as possible (the specification the SIMD files are tested against). */
#include "bl_q6k.h"

static float q6k_dot_row(const uint8_t *row, int64_t K, const int8_t *q8, const float *d8) {
    float sum = 0.0f;
    for (int64_t b = 0; b < K / BL_QK_K; ++b) {
        const uint8_t *blk = row + b * BL_Q6_K_BYTES;
        const int8_t *sc = (const int8_t *)(blk + BL_Q6_K_SCALES);
        const int8_t *x = q8 + b * BL_QK_K;
        int32_t isum = 0;
        for (int s = 0; s < BL_QK_K / 16; ++s) {
            int32_t sub = 0;
            for (int e = 16 * s; e < 16 * s + 16; ++e) sub += (bl_q6k_code(blk, e) - 32) * (int32_t)x[e];
            isum += (int32_t)sc[s] * sub;
        }
        const float dd = bl_q6k_d(blk) * d8[b];
        const float t = (float)isum * dd;
        sum = sum + t;
    }
    return sum;
}

void bl_lm_q6k_scalar(const uint8_t *W, int64_t row_bytes, int64_t K, int64_t r0, int64_t r1, const int8_t *q8,
                      const float *d8, const int16_t *bsums, int64_t N, float *out, int64_t ldo) {
    (void)bsums;
    for (int64_t r = r0; r < r1; ++r)
        for (int64_t n = 0; n < N; ++n)
            out[n * ldo + r] = q6k_dot_row(W + r * row_bytes, K, q8 + n * K, d8 + n * (K / BL_QK_K));
}
