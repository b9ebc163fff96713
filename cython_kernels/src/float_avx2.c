/* float_avx2.c — v1: the engine's float kernels with AVX2 + FMA + F16C.
 *
 * Compiled with -mavx2 -mfma -mf16c (setup.py). Runs at the avx2 level (every AVX2 + FMA CPU
 * has F16C: it predates AVX2 on both Intel and AMD).
 *
 * Canonical order (engine_float.h): the 16 partial sums live in four __m256d (lanes 0..3,
 * 4..7, 8..11, 12..15); tail and fold on a 16-double array exactly as in float_scalar.c.
 * The lm_head walks 2 weight rows at a time (8 accumulators).
 */
#include <immintrin.h>

#include "engine_float.h"

typedef struct {
    __m256d v[4]; /* lanes 0..3, 4..7, 8..11, 12..15 */
} acc16;

static inline void acc16_zero(acc16 *a) {
    for (int i = 0; i < 4; ++i) a->v[i] = _mm256_setzero_pd();
}

/* 8 f32 / fp16 values -> two 4-wide float64 vectors. */
static inline void cvt8_f32(const float *p, __m256d *lo, __m256d *hi) {
    __m256 w = _mm256_loadu_ps(p);
    *lo = _mm256_cvtps_pd(_mm256_castps256_ps128(w));
    *hi = _mm256_cvtps_pd(_mm256_extractf128_ps(w, 1));
}

static inline void cvt8_f16(const uint16_t *p, __m256d *lo, __m256d *hi) {
    __m256 w = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
    *lo = _mm256_cvtps_pd(_mm256_castps256_ps128(w));
    *hi = _mm256_cvtps_pd(_mm256_extractf128_ps(w, 1));
}

/* Add a[k..k+15]·w (w given as four 4-wide vectors) into the 16 lanes. */
static inline void acc16_fma(acc16 *acc, const double *a, const __m256d w[4]) {
    for (int i = 0; i < 4; ++i) acc->v[i] = _mm256_fmadd_pd(_mm256_loadu_pd(a + 4 * i), w[i], acc->v[i]);
}

static inline double finish(const acc16 *acc, int64_t k, int64_t n, const double *a, const void *b, int f16) {
    double lane[16];
    for (int i = 0; i < 4; ++i) _mm256_storeu_pd(lane + 4 * i, acc->v[i]);
    for (; k < n; ++k) {
        double bv = f16 ? (double)bl_f16_to_f32(((const uint16_t *)b)[k]) : (double)((const float *)b)[k];
        lane[k & 15] += a[k] * bv;
    }
    return bl_fold16(lane);
}

static double dot_f32(const double *a, const float *b, int64_t n) {
    acc16 acc;
    acc16_zero(&acc);
    __m256d w[4];
    int64_t k = 0;
    for (; k + 16 <= n; k += 16) {
        cvt8_f32(b + k, &w[0], &w[1]);
        cvt8_f32(b + k + 8, &w[2], &w[3]);
        acc16_fma(&acc, a + k, w);
    }
    return finish(&acc, k, n, a, b, 0);
}

static double dot_f16(const double *a, const uint16_t *b, int64_t n) {
    acc16 acc;
    acc16_zero(&acc);
    __m256d w[4];
    int64_t k = 0;
    for (; k + 16 <= n; k += 16) {
        cvt8_f16(b + k, &w[0], &w[1]);
        cvt8_f16(b + k + 8, &w[2], &w[3]);
        acc16_fma(&acc, a + k, w);
    }
    return finish(&acc, k, n, a, b, 1);
}

static void axpy_f32(double *o, double p, const float *v, int64_t n) {
    __m256d pv = _mm256_set1_pd(p);
    int64_t i = 0;
    for (; i + 4 <= n; i += 4)
        _mm256_storeu_pd(o + i, _mm256_fmadd_pd(pv, _mm256_cvtps_pd(_mm_loadu_ps(v + i)), _mm256_loadu_pd(o + i)));
    for (; i < n; ++i) o[i] += p * (double)v[i];
}

static void axpy_f16(double *o, double p, const uint16_t *v, int64_t n) {
    __m256d pv = _mm256_set1_pd(p);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256d lo, hi;
        cvt8_f16(v + i, &lo, &hi);
        _mm256_storeu_pd(o + i, _mm256_fmadd_pd(pv, lo, _mm256_loadu_pd(o + i)));
        _mm256_storeu_pd(o + i + 4, _mm256_fmadd_pd(pv, hi, _mm256_loadu_pd(o + i + 4)));
    }
    for (; i < n; ++i) o[i] += p * (double)bl_f16_to_f32(v[i]);
}

/* 4 int8 of a Q8_0 block times its scale d, as float64 (exact). */
static inline __m256d q8_times_d(const int8_t *q, __m256d d) {
    int32_t four;
    memcpy(&four, q, 4);
    __m128i q32 = _mm_cvtepi8_epi32(_mm_cvtsi32_si128(four));
    return _mm256_mul_pd(_mm256_cvtepi32_pd(q32), d);
}

static double dot_q8_0(const double *a, const uint8_t *row, int64_t K) {
    acc16 acc;
    acc16_zero(&acc);
    for (int64_t b = 0; b < K / BL_Q8_0_BLOCK; ++b) {
        const uint8_t *blk = row + b * BL_Q8_0_BYTES;
        uint16_t dbits;
        memcpy(&dbits, blk, 2);
        __m256d d = _mm256_set1_pd((double)bl_f16_to_f32(dbits));
        const int8_t *q = (const int8_t *)(blk + 2);
        const double *ab = a + b * BL_Q8_0_BLOCK;
        for (int half = 0; half < 2; ++half) { /* elements 0..15, then 16..31: lanes 0..15 */
            __m256d w[4];
            for (int i = 0; i < 4; ++i) w[i] = q8_times_d(q + 16 * half + 4 * i, d);
            acc16_fma(&acc, ab + 16 * half, w);
        }
    }
    return finish(&acc, K, K, a, NULL, 0);
}

/* 2 F16 rows against one hidden row: the decode hot loop. */
static void f16_rows2(const uint8_t *W, int64_t row_bytes, int64_t K, const double *h, double out[2]) {
    const uint16_t *w0 = (const uint16_t *)W, *w1 = (const uint16_t *)(W + row_bytes);
    acc16 a0, a1;
    acc16_zero(&a0);
    acc16_zero(&a1);
    int64_t k = 0;
    for (; k + 16 <= K; k += 16) {
        __m256d h4[4], w[4];
        for (int i = 0; i < 4; ++i) h4[i] = _mm256_loadu_pd(h + k + 4 * i);
        cvt8_f16(w0 + k, &w[0], &w[1]);
        cvt8_f16(w0 + k + 8, &w[2], &w[3]);
        for (int i = 0; i < 4; ++i) a0.v[i] = _mm256_fmadd_pd(h4[i], w[i], a0.v[i]);
        cvt8_f16(w1 + k, &w[0], &w[1]);
        cvt8_f16(w1 + k + 8, &w[2], &w[3]);
        for (int i = 0; i < 4; ++i) a1.v[i] = _mm256_fmadd_pd(h4[i], w[i], a1.v[i]);
    }
    out[0] = finish(&a0, k, K, h, w0, 1);
    out[1] = finish(&a1, k, K, h, w1, 1);
}

static void lm_rows(int type, const uint8_t *W, int64_t row_bytes, int64_t K, int64_t r0, int64_t r1,
                    const double *h, int64_t N, float *out, int64_t ldo) {
    int64_t r = r0;
    if (type == BL_FT_F16) {
        for (; r + 2 <= r1; r += 2) {
            for (int64_t n = 0; n < N; ++n) {
                double s[2];
                f16_rows2(W + r * row_bytes, row_bytes, K, h + n * K, s);
                out[n * ldo + r] = (float)s[0];
                out[n * ldo + r + 1] = (float)s[1];
            }
        }
    }
    for (; r < r1; ++r) {
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

const bl_float_kernels bl_float_avx2 = {"avx2", dot_f32, dot_f16, axpy_f32, axpy_f16, lm_rows};
