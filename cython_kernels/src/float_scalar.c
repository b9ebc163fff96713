/* float_scalar.c — v0: the engine's float kernels in portable C (any CPU).
 *
 * This file *defines* the canonical order of engine_float.h in the plainest form: 16 partial
 * sums in an array, element k into lane k % 16, then bl_fold16. The SIMD files must return
 * exactly what these functions return (tests/test_engine.py runs every available level).
 * Compiled with -ffp-contract=off; the products of f32 / fp16 operands are exact in float64,
 * so only the order of the additions matters, and that order is the canonical one.
 */
#include "engine_float.h"

static double dot_f32(const double *a, const float *b, int64_t n) {
    double lane[16] = {0};
    for (int64_t k = 0; k < n; ++k) lane[k & 15] += a[k] * (double)b[k];
    return bl_fold16(lane);
}

static double dot_f16(const double *a, const uint16_t *b, int64_t n) {
    double lane[16] = {0};
    for (int64_t k = 0; k < n; ++k) lane[k & 15] += a[k] * (double)bl_f16_to_f32(b[k]);
    return bl_fold16(lane);
}

static void axpy_f32(double *o, double p, const float *v, int64_t n) {
    for (int64_t i = 0; i < n; ++i) o[i] += p * (double)v[i];
}

static void axpy_f16(double *o, double p, const uint16_t *v, int64_t n) {
    for (int64_t i = 0; i < n; ++i) o[i] += p * (double)bl_f16_to_f32(v[i]);
}

/* One Q8_0 row: element k = q[k]·d of its block; q·d is exact in f32 and in f64. */
static double dot_q8_0(const double *a, const uint8_t *row, int64_t K) {
    double lane[16] = {0};
    for (int64_t b = 0; b < K / BL_Q8_0_BLOCK; ++b) {
        const uint8_t *blk = row + b * BL_Q8_0_BYTES;
        uint16_t dbits;
        memcpy(&dbits, blk, 2);
        double d = (double)bl_f16_to_f32(dbits);
        const int8_t *q = (const int8_t *)(blk + 2);
        const double *ab = a + b * BL_Q8_0_BLOCK;
        for (int j = 0; j < BL_Q8_0_BLOCK; ++j) lane[j & 15] += ab[j] * ((double)q[j] * d);
    }
    return bl_fold16(lane);
}

static void lm_rows(int type, const uint8_t *W, int64_t row_bytes, int64_t K, int64_t r0, int64_t r1,
                    const double *h, int64_t N, float *out, int64_t ldo) {
    for (int64_t r = r0; r < r1; ++r) {
        const uint8_t *row = W + r * row_bytes;
        for (int64_t n = 0; n < N; ++n) {
            const double *hn = h + n * K;
            double s;
            if (type == BL_FT_F16)
                s = dot_f16(hn, (const uint16_t *)row, K);
            else if (type == BL_FT_F32)
                s = dot_f32(hn, (const float *)row, K);
            else
                s = dot_q8_0(hn, row, K);
            out[n * ldo + r] = (float)s;
        }
    }
}

const bl_float_kernels bl_float_scalar = {"scalar", dot_f32, dot_f16, axpy_f32, axpy_f16, lm_rows};
