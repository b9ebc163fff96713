/* float_scalar.c — v0: the engine's float kernels in portable C (any CPU).
 *
 * This file *defines* the canonical orders of engine_float.h in the plainest form: partial sums
 * in an array (32 float32 lanes for the lm_head's dot, 16 float64 lanes for q·k and the sum of
 * squares), element k into lane k % lanes in increasing k, then the fold tree; p·v as one
 * float64 running sum per output. The SIMD files must return exactly what these functions
 * return (tests/test_engine.py runs every available level). Compiled with -ffp-contract=off:
 * every f32 `a * b` below is rounded to f32 before it is added, as the canonical order says.
 */
#include "engine_float.h"
#include "bl_q6k.h"

#include <math.h>

#define LANES BL_DOT_LANES

/* ---- lm_head: canonical f32 order ----------------------------------------------------------- */

static float dot_f32(const float *a, const float *b, int64_t n) {
    float lane[LANES] = {0};
    for (int64_t k = 0; k < n; ++k) {
        const float p = a[k] * b[k];
        lane[k % LANES] = lane[k % LANES] + p;
    }
    return bl_fold32f(lane);
}

static float dot_f16(const float *a, const uint16_t *b, int64_t n) {
    float lane[LANES] = {0};
    for (int64_t k = 0; k < n; ++k) {
        const float p = a[k] * bl_f16_to_f32(b[k]);
        lane[k % LANES] = lane[k % LANES] + p;
    }
    return bl_fold32f(lane);
}

/* One Q8_0 row: element k is the exact f32 value q[k]·d of its block (8 x 11 significant bits);
 * a block holds 32 elements, so element j of every block goes to lane j. */
static float dot_q8_0(const float *a, const uint8_t *row, int64_t K) {
    float lane[LANES] = {0};
    for (int64_t b = 0; b < K / BL_Q8_0_BLOCK; ++b) {
        const uint8_t *blk = row + b * BL_Q8_0_BYTES;
        uint16_t dbits;
        memcpy(&dbits, blk, 2);
        const float d = bl_f16_to_f32(dbits);
        const int8_t *q = (const int8_t *)(blk + 2);
        const float *ab = a + b * BL_Q8_0_BLOCK;
        for (int j = 0; j < BL_Q8_0_BLOCK; ++j) {
            const float w = (float)q[j] * d;
            const float p = ab[j] * w;
            lane[j] = lane[j] + p;
        }
    }
    return bl_fold32f(lane);
}

static void lm_rows(int type, const uint8_t *W, int64_t row_bytes, int64_t K, int64_t r0, int64_t r1,
                    const float *h, int64_t N, float *out, int64_t ldo) {
    for (int64_t r = r0; r < r1; ++r) {
        const uint8_t *row = W + r * row_bytes;
        for (int64_t n = 0; n < N; ++n) {
            const float *hn = h + n * K;
            float s;
            if (type == BL_FT_F16 || type == BL_FT_F16_H16)
                s = dot_f16(hn, (const uint16_t *)row, K);
            else if (type == BL_FT_F32)
                s = dot_f32(hn, (const float *)row, K);
            else
                s = dot_q8_0(hn, row, K);
            out[n * ldo + r] = s;
        }
    }
}

/* Q8_0 lm_head with a quantised hidden state: the canonical order of engine_float.h. */
static void lm_q8(const uint8_t *W, int64_t row_bytes, int64_t K, int64_t r0, int64_t r1, const int8_t *qx,
                  const float *dx, const int32_t *qsum4, int64_t N, float *out, int64_t ldo, int alone) {
    (void)qsum4;
    (void)alone;
    for (int64_t r = r0; r < r1; ++r) {
        const uint8_t *row = W + r * row_bytes;
        for (int64_t n = 0; n < N; ++n) {
            const int8_t *xn = qx + n * K;
            float lane[16] = {0};
            for (int64_t b = 0; b < K / BL_Q8_0_BLOCK; ++b) {
                const uint8_t *blk = row + b * BL_Q8_0_BYTES;
                uint16_t dbits;
                memcpy(&dbits, blk, 2);
                const float dd = bl_f16_to_f32(dbits) * dx[n * (K / BL_Q8_0_BLOCK) + b];
                const int8_t *q = (const int8_t *)(blk + 2);
                for (int j = 0; j < 8; ++j) {
                    int32_t p = 0;
                    for (int e = 4 * j; e < 4 * j + 4; ++e) p += (int32_t)q[e] * (int32_t)xn[b * BL_Q8_0_BLOCK + e];
                    const float t = (float)p * dd;
                    lane[8 * (b & 1) + j] = lane[8 * (b & 1) + j] + t;
                }
            }
            for (int w = 8; w >= 1; w >>= 1)
                for (int i = 0; i < w; ++i) lane[i] = lane[i] + lane[i + w];
            out[n * ldo + r] = lane[0];
        }
    }
}

/* ---- attention and RMSNorm: float64 ------------------------------------------------------------ */

static inline double elem(const void *row, int64_t i, int f16) {
    return f16 ? (double)bl_f16_to_f32(((const uint16_t *)row)[i]) : (double)((const float *)row)[i];
}

static inline size_t row_bytes(int64_t d, int f16) { return (size_t)d * (f16 ? 2 : 4); }

static void qk1(const float *q, const void *K, int64_t n_cache, const void *last, int64_t d, int f16, float kq_scale,
                float *scores) {
    const size_t row = row_bytes(d, f16);
    for (int64_t n = 0; n < n_cache + (last != NULL); ++n) {
        const void *kn = n < n_cache ? (const void *)((const char *)K + n * row) : last;
        double lane[16] = {0};
        for (int64_t k = 0; k < d; ++k) lane[k & 15] += (double)q[k] * elem(kn, k, f16);
        scores[n] = (float)bl_fold16d(lane) * kq_scale;
    }
}

static void pv1(const float *p, const void *V, int64_t n_cache, const void *last, int64_t d, int f16, float *out) {
    const size_t row = row_bytes(d, f16);
    for (int64_t i = 0; i < d; ++i) {
        double o = 0.0;
        for (int64_t n = 0; n < n_cache + (last != NULL); ++n) {
            const void *vn = n < n_cache ? (const void *)((const char *)V + n * row) : last;
            o += (double)p[n] * elem(vn, i, f16);
        }
        out[i] = (float)o;
    }
}

/* A GQA group (engine_float.h): one head after the other (this level shares nothing). */
static void qk(const float *q, int64_t R, const void *K, int64_t n_cache, const void *last, int64_t d, int f16,
               float kq_scale, float *scores, int64_t lds) {
    for (int64_t r = 0; r < R; ++r) qk1(q + r * d, K, n_cache, last, d, f16, kq_scale, scores + r * lds);
}

static void pv(const float *p, int64_t lds, int64_t R, const void *V, int64_t n_cache, const void *last, int64_t d,
               int f16, float *out) {
    for (int64_t r = 0; r < R; ++r) pv1(p + r * lds, V, n_cache, last, d, f16, out + r * d);
}

static void softmax(float *s, int64_t n, int f16) {
    float mx = -INFINITY;
    for (int64_t i = 0; i < n; ++i)
        if (s[i] > mx) mx = s[i];
    double lane[8] = {0};
    for (int64_t i = 0; i < n; ++i) {
        s[i] = bl_expf64(s[i] - mx); /* the subtraction in f32 */
        lane[i & 7] += (double)s[i];
    }
    const float inv = (float)(1.0 / bl_fold8d(lane));
    for (int64_t i = 0; i < n; ++i) {
        const float p = s[i] * inv;
        s[i] = f16 ? bl_round_f16(p) : p;
    }
}

static double sumsq(const float *x, int64_t n) {
    double lane[16] = {0};
    for (int64_t k = 0; k < n; ++k) {
        const float sq = x[k] * x[k]; /* the square in f32, as ggml */
        lane[k & 15] += (double)sq;
    }
    return bl_fold16d(lane);
}

/* SiLU-gated activation in float64 (engine_float.h): the plain loop every level can use. */
static void silu(const float *g, const float *u, float *f, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
        const double g64 = (double)g[i];
        const float s = (float)(g64 / (1.0 + bl_exp64(-g64)));
        f[i] = s * u[i];
    }
}

const bl_float_kernels bl_float_scalar = {"scalar", dot_f32, qk, pv, softmax, silu, sumsq, lm_rows, lm_q8, bl_lm_q6k_scalar};
