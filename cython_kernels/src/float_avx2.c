/* float_avx2.c — v1: the engine's float kernels with AVX2 + F16C.
 *
 * Compiled with -mavx2 -mfma -mf16c (setup.py). Runs at the avx2 level (every AVX2 + FMA CPU
 * has F16C: it predates AVX2 on both Intel and AMD).
 *
 * Canonical orders (engine_float.h): the lm_head's 32 f32 partial sums live in four __m256
 * (lanes 0..7, 8..15, 16..23, 24..31), multiplies and adds separate; the 16 float64 lanes of q·k
 * and the sum of squares in four __m256d (exact products: FMA allowed); tails and folds on an
 * array exactly as in float_scalar.c. The lm_head reads one weight row at a time (see
 * float_avx512.c for why; the Q8_0 rows are prefetched into L2 ahead).
 */
#include <immintrin.h>

#include "engine_float.h"
#include "bl_q6k.h"

#include <math.h>

#define LANES BL_DOT_LANES

typedef struct {
    __m256 v[4]; /* lanes 0..7, 8..15, 16..23, 24..31 */
} acc32;

static inline acc32 acc32_zero(void) {
    acc32 a;
    for (int i = 0; i < 4; ++i) a.v[i] = _mm256_setzero_ps();
    return a;
}

static inline float finish(acc32 acc, int64_t k, int64_t n, const float *a, const void *b, int f16) {
    float lane[LANES];
    for (int i = 0; i < 4; ++i) _mm256_storeu_ps(lane + 8 * i, acc.v[i]);
    for (; k < n; ++k) {
        const float bv = f16 ? bl_f16_to_f32(((const uint16_t *)b)[k]) : ((const float *)b)[k];
        const float p = a[k] * bv;
        lane[k % LANES] = lane[k % LANES] + p;
    }
    return bl_fold32f(lane);
}

static inline __m256 cvt8_f16(const uint16_t *p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); }

static inline __m256 madd(__m256 acc, __m256 a, __m256 b) { return _mm256_add_ps(acc, _mm256_mul_ps(a, b)); }

static inline void pf_l2(const void *p) { _mm_prefetch((const char *)p + BL_LM_PREFETCH_BYTES, _MM_HINT_T1); }

/* Σ a·b in the canonical order (b f32 or fp16). */
static inline float dot_any(const float *a, const void *b, int64_t n, int f16) {
    acc32 acc = acc32_zero();
    int64_t k = 0;
    for (; k + 32 <= n; k += 32) {
        for (int i = 0; i < 4; ++i) {
            const __m256 bv = f16 ? cvt8_f16((const uint16_t *)b + k + 8 * i) : _mm256_loadu_ps((const float *)b + k + 8 * i);
            acc.v[i] = madd(acc.v[i], _mm256_loadu_ps(a + k + 8 * i), bv);
        }
    }
    return finish(acc, k, n, a, b, f16);
}

static float dot_f32(const float *a, const float *b, int64_t n) { return dot_any(a, b, n, 0); }

/* ---- attention: float64 ------------------------------------------------------------------------ */

/* Elements i .. i+7 of a row (f32 or fp16) as two 4-wide float64 vectors (exact). */
static inline void load8_pd(const void *row, int64_t i, int f16, __m256d *lo, __m256d *hi) {
    const __m256 v = f16 ? cvt8_f16((const uint16_t *)row + i) : _mm256_loadu_ps((const float *)row + i);
    *lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
    *hi = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
}

static inline double elem(const void *row, int64_t i, int f16) {
    return f16 ? (double)bl_f16_to_f32(((const uint16_t *)row)[i]) : (double)((const float *)row)[i];
}

static inline size_t row_bytes(int64_t d, int f16) { return (size_t)d * (f16 ? 2 : 4); }

/* ---- attention: float64; a GQA group's heads in pairs share each key / value slice's widening -- */

#define AI static inline __attribute__((always_inline))

/* q·k of H (1 or 2, a constant) heads, q rows d apart, score rows lds apart: each 8-element slice
 * of a key row is widened to float64 once and every head adds it into its own four accumulators
 * (lane k % 16, increasing k; exact products, so FMA = multiply + add), then the fold. Two heads
 * give 8 independent chains instead of 4; every score is the one-head score bit for bit. */
AI void qk_heads(const float *q, const int H, const void *K, int64_t n_cache, const void *last, int64_t d, int f16,
                 float kq_scale, float *scores, int64_t lds) {
    const size_t row = row_bytes(d, f16);
    double q64[H][d];
    for (int h = 0; h < H; ++h)
        for (int64_t k = 0; k < d; ++k) q64[h][k] = (double)q[h * d + k];
    for (int64_t n = 0; n < n_cache + (last != NULL); ++n) {
        const void *kn = n < n_cache ? (const void *)((const char *)K + n * row) : last;
        __m256d acc[2][4];
        for (int h = 0; h < H; ++h)
            for (int j = 0; j < 4; ++j) acc[h][j] = _mm256_setzero_pd();
        int64_t k = 0;
        for (; k + 16 <= d; k += 16)
            for (int j = 0; j < 2; ++j) {
                __m256d lo, hi;
                load8_pd(kn, k + 8 * j, f16, &lo, &hi);
                for (int h = 0; h < H; ++h) {
                    acc[h][2 * j] = _mm256_fmadd_pd(_mm256_loadu_pd(q64[h] + k + 8 * j), lo, acc[h][2 * j]);
                    acc[h][2 * j + 1] = _mm256_fmadd_pd(_mm256_loadu_pd(q64[h] + k + 8 * j + 4), hi, acc[h][2 * j + 1]);
                }
            }
        double lane[2][16];
        for (int h = 0; h < H; ++h)
            for (int j = 0; j < 4; ++j) _mm256_storeu_pd(lane[h] + 4 * j, acc[h][j]);
        for (; k < d; ++k) {
            const double kv = elem(kn, k, f16);
            for (int h = 0; h < H; ++h) lane[h][k & 15] += q64[h][k] * kv;
        }
        for (int h = 0; h < H; ++h) scores[h * lds + n] = (float)bl_fold16d(lane[h]) * kq_scale;
    }
}

/* p·v of H (1 or 2) heads, p rows lds apart, out rows d apart: each value slice widened once,
 * every output a float64 sum in increasing n (16 outputs per head in four accumulators). */
AI void pv_heads(const float *p, int64_t lds, const int H, const void *V, int64_t n_cache, const void *last,
                 int64_t d, int f16, float *out) {
    const size_t row = row_bytes(d, f16);
    const int64_t n_pos = n_cache + (last != NULL);
    int64_t i = 0;
    for (; i + 16 <= d; i += 16) {
        __m256d o[2][4];
        for (int h = 0; h < H; ++h)
            for (int j = 0; j < 4; ++j) o[h][j] = _mm256_setzero_pd();
        for (int64_t n = 0; n < n_pos; ++n) {
            const void *vn = n < n_cache ? (const void *)((const char *)V + n * row) : last;
            __m256d pn[2];
            for (int h = 0; h < H; ++h) pn[h] = _mm256_set1_pd((double)p[h * lds + n]);
            for (int j = 0; j < 2; ++j) {
                __m256d lo, hi;
                load8_pd(vn, i + 8 * j, f16, &lo, &hi);
                for (int h = 0; h < H; ++h) {
                    o[h][2 * j] = _mm256_fmadd_pd(pn[h], lo, o[h][2 * j]);
                    o[h][2 * j + 1] = _mm256_fmadd_pd(pn[h], hi, o[h][2 * j + 1]);
                }
            }
        }
        for (int h = 0; h < H; ++h)
            for (int j = 0; j < 4; ++j) _mm_storeu_ps(out + h * d + i + 4 * j, _mm256_cvtpd_ps(o[h][j]));
    }
    for (; i < d; ++i) {
        double o[2] = {0.0, 0.0};
        for (int64_t n = 0; n < n_pos; ++n) {
            const double v = elem(n < n_cache ? (const void *)((const char *)V + n * row) : last, i, f16);
            for (int h = 0; h < H; ++h) o[h] += (double)p[h * lds + n] * v;
        }
        for (int h = 0; h < H; ++h) out[h * d + i] = (float)o[h];
    }
}

/* A GQA group (engine_float.h): heads in pairs (AVX2's 16 registers hold two heads' chains), an
 * odd last head alone. */
static void qk(const float *q, int64_t R, const void *K, int64_t n_cache, const void *last, int64_t d, int f16,
               float kq_scale, float *scores, int64_t lds) {
    int64_t r = 0;
    for (; r + 2 <= R; r += 2) qk_heads(q + r * d, 2, K, n_cache, last, d, f16, kq_scale, scores + r * lds, lds);
    if (r < R) qk_heads(q + r * d, 1, K, n_cache, last, d, f16, kq_scale, scores + r * lds, lds);
}

static void pv(const float *p, int64_t lds, int64_t R, const void *V, int64_t n_cache, const void *last, int64_t d,
               int f16, float *out) {
    int64_t r = 0;
    for (; r + 2 <= R; r += 2) pv_heads(p + r * lds, lds, 2, V, n_cache, last, d, f16, out + r * d);
    if (r < R) pv_heads(p + r * lds, lds, 1, V, n_cache, last, d, f16, out + r * d);
}

/* Softmax: the scalar order (engine_float.h) in plain C; the exp is not vectorised at this level. */
static void softmax(float *s, int64_t n, int f16) {
    float mx = -INFINITY;
    for (int64_t i = 0; i < n; ++i)
        if (s[i] > mx) mx = s[i];
    double lane[8] = {0};
    for (int64_t i = 0; i < n; ++i) {
        s[i] = bl_expf64(s[i] - mx);
        lane[i & 7] += (double)s[i];
    }
    const float inv = (float)(1.0 / bl_fold8d(lane));
    for (int64_t i = 0; i < n; ++i) {
        const float p = s[i] * inv;
        s[i] = f16 ? bl_round_f16(p) : p;
    }
}

static double sumsq(const float *x, int64_t n) {
    __m256d acc[4] = {_mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd()};
    int64_t k = 0;
    for (; k + 16 <= n; k += 16) {
        for (int j = 0; j < 2; ++j) {
            const __m256 v = _mm256_loadu_ps(x + k + 8 * j);
            const __m256 sq = _mm256_mul_ps(v, v);
            acc[2 * j] = _mm256_add_pd(acc[2 * j], _mm256_cvtps_pd(_mm256_castps256_ps128(sq)));
            acc[2 * j + 1] = _mm256_add_pd(acc[2 * j + 1], _mm256_cvtps_pd(_mm256_extractf128_ps(sq, 1)));
        }
    }
    double lane[16];
    for (int j = 0; j < 4; ++j) _mm256_storeu_pd(lane + 4 * j, acc[j]);
    for (; k < n; ++k) {
        const float sq = x[k] * x[k];
        lane[k & 15] += (double)sq;
    }
    return bl_fold16d(lane);
}

/* One Q8_0 row: element j of every block goes to lane j (exact f32 weights q·d). */
static float q8_row(const uint8_t *row, int64_t K, const float *h) {
    acc32 acc = acc32_zero();
    for (int64_t b = 0; b < K / BL_Q8_0_BLOCK; ++b) {
        const uint8_t *blk = row + b * BL_Q8_0_BYTES;
        pf_l2(blk);
        uint16_t dbits;
        memcpy(&dbits, blk, 2);
        const __m256 d = _mm256_set1_ps(bl_f16_to_f32(dbits));
        const int8_t *q = (const int8_t *)(blk + 2);
        const float *hb = h + b * BL_Q8_0_BLOCK;
        for (int i = 0; i < 4; ++i) {
            const __m256 w = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(q + 8 * i)))), d);
            acc.v[i] = madd(acc.v[i], _mm256_loadu_ps(hb + 8 * i), w);
        }
    }
    return finish(acc, K, K, h, NULL, 0);
}

/* Q8_0 lm_head, one block per 256-bit step: maddubs(|w|, sign(x, w)) gives exact int16 pair sums
 * (|w| <= 128, |x| <= 127: at most 32512), madd with ones the 8 quad sums p_bj (the lanes of the
 * canonical order); block b goes to lanes 8·(b % 2) .. +7. */
static void lm_q8(const uint8_t *W, int64_t row_bytes, int64_t K, int64_t r0, int64_t r1, const int8_t *qx,
                  const float *dx, const int32_t *qsum4, int64_t N, float *out, int64_t ldo, int alone) {
    (void)qsum4;
    (void)alone;
    const int64_t nb = K / BL_Q8_0_BLOCK;
    const __m256i ones = _mm256_set1_epi16(1);
    for (int64_t r = r0; r < r1; ++r) {
        const uint8_t *row = W + r * row_bytes;
        for (int64_t n = 0; n < N; ++n) {
            const int8_t *xn = qx + n * K;
            const float *dxn = dx + n * nb;
            __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
            for (int64_t b = 0; b < nb; ++b) {
                const uint8_t *blk = row + b * BL_Q8_0_BYTES;
                if (n == 0) pf_l2(blk);
                uint16_t dbits;
                memcpy(&dbits, blk, 2);
                /* F16C's conversion is exact, like bl_f16_to_f32, without its branches */
                const __m256 dd = _mm256_set1_ps(_cvtsh_ss(dbits) * dxn[b]); /* exact */
                const __m256i w = _mm256_loadu_si256((const __m256i *)(blk + 2));
                const __m256i x = _mm256_loadu_si256((const __m256i *)(xn + b * BL_Q8_0_BLOCK));
                const __m256i p16 = _mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(x, w));
                const __m256 p = _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, ones));
                acc[b & 1] = _mm256_add_ps(acc[b & 1], _mm256_mul_ps(p, dd));
            }
            float lane[16];
            _mm256_storeu_ps(lane, acc[0]);
            _mm256_storeu_ps(lane + 8, acc[1]);
            for (int w = 8; w >= 1; w >>= 1)
                for (int i = 0; i < w; ++i) lane[i] = lane[i] + lane[i + w];
            out[n * ldo + r] = lane[0];
        }
    }
}

/* Rows a and b (far apart: two sequential streams) of an F16 lm_head against one hidden row,
 * each in dot_any's order; the hidden-state loads are shared. */
static void dot2_f16(const float *h, const uint16_t *a, const uint16_t *b, int64_t K, float *ya, float *yb) {
    acc32 A = acc32_zero(), B = acc32_zero();
    int64_t k = 0;
    for (; k + 32 <= K; k += 32)
        for (int i = 0; i < 4; ++i) {
            const __m256 x = _mm256_loadu_ps(h + k + 8 * i);
            A.v[i] = madd(A.v[i], x, cvt8_f16(a + k + 8 * i));
            B.v[i] = madd(B.v[i], x, cvt8_f16(b + k + 8 * i));
        }
    *ya = finish(A, k, K, h, a, 1);
    *yb = finish(B, k, K, h, b, 1);
}

/* Hidden rows per pass of the multi-row F16 lm_head: 3·4 accumulators, a converted weight slice
 * and a hidden-state load fit the 16 ymm registers. */
#define LM_ROWS_MAX 3

/* One fp16 weight row w against nh ≤ LM_ROWS_MAX hidden rows h (K apart): each 8-weight slice is
 * converted once and used for every hidden row, each row in dot_any's order (lane k % 32, then
 * finish), so every logit equals the single-row dot bit for bit. out[n·ldo]: row n's logit. */
static inline __attribute__((always_inline)) void dotn_f16(const float *h, int nh, const uint16_t *w, int64_t K,
                                                           float *out, int64_t ldo) {
    acc32 acc[LM_ROWS_MAX];
    for (int n = 0; n < nh; ++n) acc[n] = acc32_zero();
    int64_t k = 0;
    for (; k + 32 <= K; k += 32)
        for (int i = 0; i < 4; ++i) {
            const __m256 wv = cvt8_f16(w + k + 8 * i);
            for (int n = 0; n < nh; ++n) acc[n].v[i] = madd(acc[n].v[i], _mm256_loadu_ps(h + n * K + k + 8 * i), wv);
        }
    for (int n = 0; n < nh; ++n) out[n * ldo] = finish(acc[n], k, K, h + n * K, w, 1);
}

static void lm_rows(int type, const uint8_t *W, int64_t row_bytes, int64_t K, int64_t r0, int64_t r1,
                    const float *h, int64_t N, float *out, int64_t ldo) {
    if (type == BL_FT_F16_H16) type = BL_FT_F16; /* (the mul-then-add order gives its bits too) */
    if (type == BL_FT_F16 && N > 1) {
        /* several hidden rows (a batch, a verification pass): each weight row is read and
         * converted once per LM_ROWS_MAX hidden rows instead of once per hidden row */
        for (int64_t r = r0; r < r1; ++r) {
            const uint16_t *row = (const uint16_t *)(W + r * row_bytes);
            int64_t n = 0;
            for (; n + LM_ROWS_MAX <= N; n += LM_ROWS_MAX)
                dotn_f16(h + n * K, LM_ROWS_MAX, row, K, &out[n * ldo + r], ldo);
            if (N - n == 2) dotn_f16(h + n * K, 2, row, K, &out[n * ldo + r], ldo);
            else if (N - n == 1) dotn_f16(h + n * K, 1, row, K, &out[n * ldo + r], ldo);
        }
        return;
    }
#ifndef BL_LM_SINGLE_STREAM
    if (type == BL_FT_F16 && N == 1) { /* decode: rows r and r + half in one pass (as float_avx512.c) */
        const int64_t half = (r1 - r0) / 2;
        for (int64_t r = r0; r < r0 + half; ++r)
            dot2_f16(h, (const uint16_t *)(W + r * row_bytes), (const uint16_t *)(W + (r + half) * row_bytes), K,
                     &out[r], &out[r + half]);
        if ((r1 - r0) % 2) out[r1 - 1] = dot_any(h, W + (r1 - 1) * row_bytes, K, 1);
        return;
    }
#endif
    for (int64_t r = r0; r < r1; ++r) {
        const uint8_t *row = W + r * row_bytes;
        for (int64_t n = 0; n < N; ++n) {
            const float *hn = h + n * K;
            out[n * ldo + r] = type == BL_FT_Q8_0 ? q8_row(row, K, hn) : dot_any(hn, row, K, type == BL_FT_F16);
        }
    }
}

/* SiLU-gated activation in float64 (engine_float.h): the plain loop every level can use. */
static void silu(const float *g, const float *u, float *f, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
        const double g64 = (double)g[i];
        const float s = (float)(g64 / (1.0 + bl_exp64(-g64)));
        f[i] = s * u[i];
    }
}

const bl_float_kernels bl_float_avx2 = {"avx2", dot_f32, qk, pv, softmax, silu, sumsq, lm_rows, lm_q8, bl_lm_q6k_avx2};
