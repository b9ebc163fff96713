/* float_avx512.c — v2: the engine's float kernels with AVX-512F (+ F16C).
 *
 * Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512vnni -mf16c -mfma (setup.py). Runs only
 * at the avx512vnni level, whose CPUs all have F16C.
 *
 * Canonical orders (engine_float.h): the lm_head's 32 f32 partial sums live in two __m512 (lanes
 * 0..15, 16..31); each step of 32 consecutive k adds fl32(a·b) to both, multiply and add separate
 * (no FMA); the 16 float64 lanes of q·k and the sum of squares in two __m512d (exact products:
 * FMA allowed); tails go into their lanes in order and the folds follow the scalar trees (in
 * registers where there is no tail). Attention keeps the query / the outputs in registers across
 * the cache positions.
 *
 * lm_head (the decode hot loop: 657 MB of F16 rows per token for the 2B-4T): ONE weight row at
 * a time, so the matrix is read as a single sequential stream the hardware prefetchers follow.
 * This streams at the machine's read bandwidth, while 4 or 8 rows in lockstep (sharing the
 * hidden-state loads) fell well short of it, with or without software prefetch
 * (docs/benchmarks.md#decode-memory-layout-and-streaming). (The Q8_0 rows, with more instructions
 * per line, do need a prefetch: see lm_q8.) The hidden state (10 KB) stays in L1; the two
 * accumulators are two independent add chains (one would cap the row at ~8 bytes per cycle of add
 * latency).
 */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "engine_float.h"
#include "bl_q6k.h"

#define LANES BL_DOT_LANES

/* The canonical fold of bl_fold32f in registers: lanes i + i+16 (the two halves), then i + i+8,
 * i + i+4, i + i+2, i + i+1 — the same additions in the same order. */
static inline float fold32(__m512 lo, __m512 hi) {
    const __m512 v16 = _mm512_add_ps(lo, hi);
    const __m256 v8 = _mm256_add_ps(_mm512_castps512_ps256(v16),
                                    _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v16), 1)));
    const __m128 v4 = _mm_add_ps(_mm256_castps256_ps128(v8), _mm256_extractf128_ps(v8, 1));
    const __m128 v2 = _mm_add_ps(v4, _mm_movehl_ps(v4, v4));
    return _mm_cvtss_f32(_mm_add_ss(v2, _mm_shuffle_ps(v2, v2, 1)));
}

/* Fold two 16-lane halves (lanes 0..15, 16..31) plus the tail elements k .. n-1 (into lane
 * k % 32, in order) exactly as float_scalar.c. */
static inline float finish(__m512 lo, __m512 hi, int64_t k, int64_t n, const float *a, const void *b, int f16) {
    if (k == n) return fold32(lo, hi);
    float lane[LANES];
    _mm512_storeu_ps(lane, lo);
    _mm512_storeu_ps(lane + 16, hi);
    for (; k < n; ++k) {
        const float bv = f16 ? bl_f16_to_f32(((const uint16_t *)b)[k]) : ((const float *)b)[k];
        const float p = a[k] * bv;
        lane[k % LANES] = lane[k % LANES] + p;
    }
    return bl_fold32f(lane);
}

static inline __m512 cvt16_f16(const uint16_t *p) { return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p)); }

static inline __m512 madd(__m512 acc, __m512 a, __m512 b) { return _mm512_add_ps(acc, _mm512_mul_ps(a, b)); }

static float dot_f16(const float *a, const uint16_t *b, int64_t n) {
    __m512 lo = _mm512_setzero_ps(), hi = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k + 32 <= n; k += 32) {
        lo = madd(lo, _mm512_loadu_ps(a + k), cvt16_f16(b + k));
        hi = madd(hi, _mm512_loadu_ps(a + k + 16), cvt16_f16(b + k + 16));
    }
    return finish(lo, hi, k, n, a, b, 1);
}

static float dot_f32(const float *a, const float *b, int64_t n) {
    __m512 lo = _mm512_setzero_ps(), hi = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k + 32 <= n; k += 32) {
        lo = madd(lo, _mm512_loadu_ps(a + k), _mm512_loadu_ps(b + k));
        hi = madd(hi, _mm512_loadu_ps(a + k + 16), _mm512_loadu_ps(b + k + 16));
    }
    return finish(lo, hi, k, n, a, b, 0);
}

/* ---- attention: float64 ------------------------------------------------------------------------ */

/* Elements i .. i+15 of a row (f32 or fp16) as two 8-wide float64 vectors (exact): two 256-bit
 * loads (128-bit for fp16) and two widening converts, no cross-lane extract. */
static inline void load16_pd(const void *row, int64_t i, int f16, __m512d *lo, __m512d *hi) {
    if (f16) {
        const uint16_t *p = (const uint16_t *)row + i;
        *lo = _mm512_cvtps_pd(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)));
        *hi = _mm512_cvtps_pd(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 8))));
    } else {
        const float *p = (const float *)row + i;
        *lo = _mm512_cvtps_pd(_mm256_loadu_ps(p));
        *hi = _mm512_cvtps_pd(_mm256_loadu_ps(p + 8));
    }
}

static inline double elem(const void *row, int64_t i, int f16) {
    return f16 ? (double)bl_f16_to_f32(((const uint16_t *)row)[i]) : (double)((const float *)row)[i];
}

static inline size_t row_bytes(int64_t d, int f16) { return (size_t)d * (f16 ? 2 : 4); }

/* The fold of bl_fold16d in registers (lanes 0..7 in lo, 8..15 in hi): i + i+8, i + i+4, ... */
static inline double fold16d(__m512d lo, __m512d hi) {
    const __m512d v8 = _mm512_add_pd(lo, hi);
    const __m256d v4 = _mm256_add_pd(_mm512_castpd512_pd256(v8), _mm512_extractf64x4_pd(v8, 1));
    const __m128d v2 = _mm_add_pd(_mm256_castpd256_pd128(v4), _mm256_extractf128_pd(v4, 1));
    return _mm_cvtsd_f64(_mm_add_sd(v2, _mm_unpackhi_pd(v2, v2)));
}

/* fold16d of four (lo, hi) pairs at once, the same additions in the same order: per pair
 * v8 = lo + hi, then for all four together v4[i] = v8[i] + v8[i + 4] (two pairs a vector),
 * v2[i] = v4[i] + v4[i + 2] (four pairs a vector), v2[0] + v2[1]; out[r] = (float) of pair r's
 * sum. About half the shuffles and adds of four fold16d (the folds were a third of the µops of
 * the 4-head q·k loop). */
static inline void fold16d_x4(const __m512d lo[4], const __m512d hi[4], float out[4]) {
    const __m512d a0 = _mm512_add_pd(lo[0], hi[0]), a1 = _mm512_add_pd(lo[1], hi[1]);
    const __m512d a2 = _mm512_add_pd(lo[2], hi[2]), a3 = _mm512_add_pd(lo[3], hi[3]);
    /* [a0 lanes 0-3 | a1 lanes 0-3] + [a0 lanes 4-7 | a1 lanes 4-7] */
    const __m512d x01 = _mm512_add_pd(_mm512_shuffle_f64x2(a0, a1, 0x44), _mm512_shuffle_f64x2(a0, a1, 0xEE));
    const __m512d x23 = _mm512_add_pd(_mm512_shuffle_f64x2(a2, a3, 0x44), _mm512_shuffle_f64x2(a2, a3, 0xEE));
    /* [v4 lanes 0-1 of pairs 0..3] + [v4 lanes 2-3 of pairs 0..3] */
    const __m512d y = _mm512_add_pd(_mm512_shuffle_f64x2(x01, x23, 0x88), _mm512_shuffle_f64x2(x01, x23, 0xDD));
    const __m512d z = _mm512_add_pd(y, _mm512_permute_pd(y, 0x55)); /* lane 2r: v2[0] + v2[1] of pair r */
    float f[8];
    _mm256_storeu_ps(f, _mm512_cvtpd_ps(z));
    for (int r = 0; r < 4; ++r) out[r] = f[2 * r];
}

static inline const void *kv_row(const void *base, int64_t n, int64_t n_cache, const void *last, size_t row) {
    return n < n_cache ? (const void *)((const char *)base + n * row) : last;
}

/* q·k for d = 16·STEPS (STEPS <= 8), the query in float64 registers for all positions, two keys
 * at a time (each dot is a chain of STEPS dependent adds per lane: two keys hide the latency).
 * STEPS and F16 are compile-time constants at every call, so the loops unroll and nothing
 * spills. */
#define AI static inline __attribute__((always_inline))
AI void qk_regs(const float *q, const void *K, int64_t n_cache, const void *last, const int STEPS, const int F16,
                float kq_scale, float *scores) {
    const size_t row = row_bytes(16 * STEPS, F16);
    const int64_t n_pos = n_cache + (last != NULL);
    __m512d qv[16];
    for (int j = 0; j < STEPS; ++j) load16_pd(q, 16 * j, 0, &qv[2 * j], &qv[2 * j + 1]);
    int64_t n = 0;
    for (; n + 2 <= n_pos; n += 2) {
        const void *ka = kv_row(K, n, n_cache, last, row), *kb = kv_row(K, n + 1, n_cache, last, row);
        __m512d alo = _mm512_setzero_pd(), ahi = _mm512_setzero_pd();
        __m512d blo = _mm512_setzero_pd(), bhi = _mm512_setzero_pd();
        for (int j = 0; j < STEPS; ++j) {
            __m512d k0, k1, k2, k3;
            load16_pd(ka, 16 * j, F16, &k0, &k1);
            load16_pd(kb, 16 * j, F16, &k2, &k3);
            alo = _mm512_fmadd_pd(qv[2 * j], k0, alo); /* exact products: FMA = multiply + add */
            ahi = _mm512_fmadd_pd(qv[2 * j + 1], k1, ahi);
            blo = _mm512_fmadd_pd(qv[2 * j], k2, blo);
            bhi = _mm512_fmadd_pd(qv[2 * j + 1], k3, bhi);
        }
        scores[n] = (float)fold16d(alo, ahi) * kq_scale;
        scores[n + 1] = (float)fold16d(blo, bhi) * kq_scale;
    }
    for (; n < n_pos; ++n) {
        const void *kn = kv_row(K, n, n_cache, last, row);
        __m512d lo = _mm512_setzero_pd(), hi = _mm512_setzero_pd();
        for (int j = 0; j < STEPS; ++j) {
            __m512d k0, k1;
            load16_pd(kn, 16 * j, F16, &k0, &k1);
            lo = _mm512_fmadd_pd(qv[2 * j], k0, lo);
            hi = _mm512_fmadd_pd(qv[2 * j + 1], k1, hi);
        }
        scores[n] = (float)fold16d(lo, hi) * kq_scale;
    }
}

/* General head sizes: the same order, the query reloaded for every key. */
static void qk_any(const float *q, const void *K, int64_t n_cache, const void *last, int64_t d, int f16,
                   float kq_scale, float *scores) {
    const size_t row = row_bytes(d, f16);
    for (int64_t n = 0; n < n_cache + (last != NULL); ++n) {
        const void *kn = kv_row(K, n, n_cache, last, row);
        __m512d lo = _mm512_setzero_pd(), hi = _mm512_setzero_pd();
        int64_t k = 0;
        for (; k + 16 <= d; k += 16) {
            __m512d q0, q1, k0, k1;
            load16_pd(q, k, 0, &q0, &q1);
            load16_pd(kn, k, f16, &k0, &k1);
            lo = _mm512_fmadd_pd(q0, k0, lo);
            hi = _mm512_fmadd_pd(q1, k1, hi);
        }
        double lane[16];
        _mm512_storeu_pd(lane, lo);
        _mm512_storeu_pd(lane + 8, hi);
        for (; k < d; ++k) lane[k & 15] += (double)q[k] * elem(kn, k, f16);
        scores[n] = (float)bl_fold16d(lane) * kq_scale;
    }
}

static void qk1(const float *q, const void *K, int64_t n_cache, const void *last, int64_t d, int f16, float kq_scale,
                float *scores) {
#define QK(S)                                                                                             \
    case S:                                                                                               \
        if (f16)                                                                                          \
            qk_regs(q, K, n_cache, last, S, 1, kq_scale, scores);                                         \
        else                                                                                              \
            qk_regs(q, K, n_cache, last, S, 0, kq_scale, scores);                                         \
        return;
    if (d % 16 == 0) switch (d / 16) { QK(8) QK(4) QK(6) QK(2) }
#undef QK
    qk_any(q, K, n_cache, last, d, f16, kq_scale, scores);
}

/* p·v for 16·G outputs (G <= 8) in 2G float64 registers, each a sequential sum over positions;
 * G and F16 compile-time constants (see qk_regs). */
AI void pv_regs(const float *p, const void *V, int64_t n_cache, const void *last, int64_t d, int64_t i0, const int G,
                const int F16, float *out) {
    const size_t row = row_bytes(d, F16);
    const int64_t n_pos = n_cache + (last != NULL);
    __m512d o[16];
    for (int j = 0; j < 2 * G; ++j) o[j] = _mm512_setzero_pd();
    for (int64_t n = 0; n < n_pos; ++n) {
        const void *vn = kv_row(V, n, n_cache, last, row);
        const __m512d pn = _mm512_set1_pd((double)p[n]);
        for (int j = 0; j < G; ++j) {
            __m512d v0, v1;
            load16_pd(vn, i0 + 16 * j, F16, &v0, &v1);
            o[2 * j] = _mm512_fmadd_pd(pn, v0, o[2 * j]);
            o[2 * j + 1] = _mm512_fmadd_pd(pn, v1, o[2 * j + 1]);
        }
    }
    for (int j = 0; j < 2 * G; ++j) _mm256_storeu_ps(out + i0 + 8 * j, _mm512_cvtpd_ps(o[j]));
}

static void pv1(const float *p, const void *V, int64_t n_cache, const void *last, int64_t d, int f16, float *out) {
    const size_t row = row_bytes(d, f16);
    const int64_t n_pos = n_cache + (last != NULL);
#define PV(G)                                                                              \
    if (f16)                                                                               \
        pv_regs(p, V, n_cache, last, d, i0, G, 1, out);                                    \
    else                                                                                   \
        pv_regs(p, V, n_cache, last, d, i0, G, 0, out);
    int64_t i0 = 0;
    while (d - i0 >= 16) { /* one pass over the positions for up to 128 outputs */
        const int64_t g = (d - i0) / 16 < 8 ? (d - i0) / 16 : 8;
        switch (g) {
            case 8: PV(8) break;
            case 7: PV(7) break;
            case 6: PV(6) break;
            case 5: PV(5) break;
            case 4: PV(4) break;
            case 3: PV(3) break;
            case 2: PV(2) break;
            default: PV(1) break;
        }
        i0 += 16 * g;
    }
#undef PV
    for (int64_t i = i0; i < d; ++i) { /* d % 16 outputs left */
        double o = 0.0;
        for (int64_t n = 0; n < n_pos; ++n) o += (double)p[n] * elem(kv_row(V, n, n_cache, last, row), i, f16);
        out[i] = (float)o;
    }
}

/* ---- attention of a GQA group: one conversion of each key / value row for up to 4 heads ---------- */

/* q·k of RC (2..4) heads against every key, d = 16·STEPS: each key row is loaded and widened to
 * float64 once (2·STEPS registers), then every head runs its own two lane chains over it —
 * exactly qk_regs' chains (lane k % 16, increasing k), so each score is bit-identical to the
 * one-head kernel. The queries come from a float64 copy on the stack (FMA memory operands);
 * 2·RC independent chains hide the FMA latency (qk_regs pairs keys for that instead). */
AI void qk_group_regs(const float *q, const void *K, int64_t n_cache, const void *last, const int STEPS,
                      const int RC, const int F16, float kq_scale, float *scores, int64_t lds) {
    const int64_t d = 16 * STEPS;
    const size_t row = row_bytes(d, F16);
    const int64_t n_pos = n_cache + (last != NULL);
    double q64[4][128] __attribute__((aligned(64)));
    for (int r = 0; r < RC; ++r)
        for (int64_t k = 0; k < d; ++k) q64[r][k] = (double)q[r * d + k];
    for (int64_t n = 0; n < n_pos; ++n) {
        const void *kn = kv_row(K, n, n_cache, last, row);
        __m512d kv[16];
        for (int j = 0; j < STEPS; ++j) load16_pd(kn, 16 * j, F16, &kv[2 * j], &kv[2 * j + 1]);
        __m512d lo[4], hi[4];
        for (int r = 0; r < RC; ++r) lo[r] = hi[r] = _mm512_setzero_pd();
        for (int j = 0; j < STEPS; ++j)
            for (int r = 0; r < RC; ++r) {
                lo[r] = _mm512_fmadd_pd(_mm512_load_pd(q64[r] + 16 * j), kv[2 * j], lo[r]); /* exact products */
                hi[r] = _mm512_fmadd_pd(_mm512_load_pd(q64[r] + 16 * j + 8), kv[2 * j + 1], hi[r]);
            }
        if (RC == 4) {
            float f[4];
            fold16d_x4(lo, hi, f);
            for (int r = 0; r < 4; ++r) scores[r * lds + n] = f[r] * kq_scale;
        } else {
            for (int r = 0; r < RC; ++r) scores[r * lds + n] = (float)fold16d(lo[r], hi[r]) * kq_scale;
        }
    }
}

/* qk_group_regs with STEPS, RC and F16 as compile-time constants: d = 32, 64, 96, 128 (the
 * head sizes qk1 keeps in registers too); 0 when d is another size. */
static int qk_group(const float *q, int rc, const void *K, int64_t n_cache, const void *last, int64_t d, int f16,
                    float kq_scale, float *scores, int64_t lds) {
#define QKG(S, RC)                                                                                  \
    if (d == 16 * S && rc == RC) {                                                                  \
        if (f16)                                                                                    \
            qk_group_regs(q, K, n_cache, last, S, RC, 1, kq_scale, scores, lds);                    \
        else                                                                                        \
            qk_group_regs(q, K, n_cache, last, S, RC, 0, kq_scale, scores, lds);                    \
        return 1;                                                                                   \
    }
#define QKS(S) QKG(S, 4) QKG(S, 3) QKG(S, 2)
    QKS(8) QKS(4) QKS(6) QKS(2)
#undef QKS
#undef QKG
    return 0;
}

static void qk(const float *q, int64_t R, const void *K, int64_t n_cache, const void *last, int64_t d, int f16,
               float kq_scale, float *scores, int64_t lds) {
    int64_t r = 0;
    while (R - r >= 2) { /* groups of up to 4 heads */
        const int rc = R - r >= 4 ? 4 : (int)(R - r);
        if (!qk_group(q + r * d, rc, K, n_cache, last, d, f16, kq_scale, scores + r * lds, lds)) break;
        r += rc;
    }
    for (; r < R; ++r) qk1(q + r * d, K, n_cache, last, d, f16, kq_scale, scores + r * lds); /* keys in pairs */
}

/* p·v of RC (2..4) heads for outputs i0 .. i0 + 16·W (W = 1 or 2): each value row's slice is
 * widened to float64 once, then every head adds p_r[n]·v into its own 2W accumulators —
 * pv_regs' sums (increasing n for each output), so bit-identical to the one-head kernel. The
 * weights of PV_CHUNK positions are widened first, 8 at a time, into p64 on the stack, so the
 * per-position broadcast is a load instead of a conversion and a shuffle for every head. */
#define PV_CHUNK 256
AI void pv_group_regs(const float *p, int64_t lds, const void *V, int64_t n_cache, const void *last, int64_t d,
                      int64_t i0, const int W, const int RC, const int F16, float *out) {
    const size_t row = row_bytes(d, F16);
    const int64_t n_pos = n_cache + (last != NULL);
    double p64[4][PV_CHUNK] __attribute__((aligned(64)));
    __m512d o[4][4];
    for (int r = 0; r < RC; ++r)
        for (int j = 0; j < 2 * W; ++j) o[r][j] = _mm512_setzero_pd();
    for (int64_t n0 = 0; n0 < n_pos; n0 += PV_CHUNK) {
        const int64_t nc = n_pos - n0 < PV_CHUNK ? n_pos - n0 : PV_CHUNK;
        for (int r = 0; r < RC; ++r) {
            const float *pr = p + r * lds + n0;
            int64_t k = 0;
            for (; k + 8 <= nc; k += 8) _mm512_storeu_pd(p64[r] + k, _mm512_cvtps_pd(_mm256_loadu_ps(pr + k)));
            for (; k < nc; ++k) p64[r][k] = (double)pr[k];
        }
        for (int64_t k = 0; k < nc; ++k) {
            const void *vn = kv_row(V, n0 + k, n_cache, last, row);
            __m512d v[4];
            for (int j = 0; j < W; ++j) load16_pd(vn, i0 + 16 * j, F16, &v[2 * j], &v[2 * j + 1]);
            for (int r = 0; r < RC; ++r) {
                const __m512d pn = _mm512_set1_pd(p64[r][k]);
                for (int j = 0; j < 2 * W; ++j) o[r][j] = _mm512_fmadd_pd(pn, v[j], o[r][j]);
            }
        }
    }
    for (int r = 0; r < RC; ++r)
        for (int j = 0; j < 2 * W; ++j) _mm256_storeu_ps(out + r * d + i0 + 8 * j, _mm512_cvtpd_ps(o[r][j]));
}

/* pv_group_regs with W, RC and F16 as compile-time constants. */
static void pv_group_slice(const float *p, int64_t lds, int rc, const void *V, int64_t n_cache, const void *last,
                           int64_t d, int f16, int64_t i0, int w, float *out) {
#define PVG(W, RC)                                                                                  \
    if (w == W && rc == RC) {                                                                       \
        if (f16)                                                                                    \
            pv_group_regs(p, lds, V, n_cache, last, d, i0, W, RC, 1, out);                          \
        else                                                                                        \
            pv_group_regs(p, lds, V, n_cache, last, d, i0, W, RC, 0, out);                          \
        return;                                                                                     \
    }
    PVG(2, 4) PVG(2, 3) PVG(2, 2) PVG(1, 4) PVG(1, 3) PVG(1, 2)
#undef PVG
}

static void pv(const float *p, int64_t lds, int64_t R, const void *V, int64_t n_cache, const void *last, int64_t d,
               int f16, float *out) {
    const size_t row = row_bytes(d, f16);
    const int64_t n_pos = n_cache + (last != NULL);
    int64_t r = 0;
    while (R - r >= 2) { /* groups of up to 4 heads, 32 then 16 outputs at a time */
        const int rc = R - r >= 4 ? 4 : (int)(R - r);
        const float *pr = p + r * lds;
        float *outr = out + r * d;
        int64_t i0 = 0;
        for (; d - i0 >= 32; i0 += 32) pv_group_slice(pr, lds, rc, V, n_cache, last, d, f16, i0, 2, outr);
        if (d - i0 >= 16) {
            pv_group_slice(pr, lds, rc, V, n_cache, last, d, f16, i0, 1, outr);
            i0 += 16;
        }
        for (int h = 0; h < rc; ++h) /* the d % 16 outputs left, per head (pv1's tail) */
            for (int64_t i = i0; i < d; ++i) {
                double o = 0.0;
                for (int64_t n = 0; n < n_pos; ++n)
                    o += (double)pr[h * lds + n] * elem(kv_row(V, n, n_cache, last, row), i, f16);
                outr[h * d + i] = (float)o;
            }
        r += rc;
    }
    for (; r < R; ++r) pv1(p + r * lds, V, n_cache, last, d, f16, out + r * d); /* one pass, 128 outputs wide */
}

/* bl_expf64 on 8 floats: the same float64 operations in the same order (multiply and add kept
 * separate), the same special cases, so every lane equals the scalar result bit for bit. 2^n is
 * built from t's bits: t = 1.5·2^52 + n holds n in its low mantissa bits, and
 * (bits(t) + 1023) << 52 keeps exactly (n + 1023) in the exponent field. */
static inline __m256 exp8(__m256 xf) {
    const __m512d x = _mm512_cvtps_pd(xf);
    const __m512d shifter = _mm512_set1_pd(BL_EXP_SHIFTER);
    const __m512d t = _mm512_add_pd(_mm512_mul_pd(x, _mm512_set1_pd(BL_EXP_LOG2E)), shifter);
    const __m512d n = _mm512_sub_pd(t, shifter);
    __m512d r = _mm512_sub_pd(x, _mm512_mul_pd(n, _mm512_set1_pd(BL_EXP_LN2_HI)));
    r = _mm512_sub_pd(r, _mm512_mul_pd(n, _mm512_set1_pd(BL_EXP_LN2_LO)));
    static const double c[11] = {1.0 / 3628800.0, 1.0 / 362880.0, 1.0 / 40320.0, 1.0 / 5040.0, 1.0 / 720.0,
                                 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0};
    __m512d p = _mm512_set1_pd(1.0 / 39916800.0);
    for (int i = 0; i < 11; ++i) p = _mm512_add_pd(_mm512_mul_pd(p, r), _mm512_set1_pd(c[i]));
    const __m512i sbits = _mm512_slli_epi64(_mm512_add_epi64(_mm512_castpd_si512(t), _mm512_set1_epi64(1023)), 52);
    __m256 y = _mm512_cvtpd_ps(_mm512_mul_pd(p, _mm512_castsi512_pd(sbits)));
    /* special lanes: x < -110 -> +0; NaN -> x itself; x > 89 -> +inf */
    const __mmask8 ok = _mm512_cmp_pd_mask(x, _mm512_set1_pd(-110.0), _CMP_GE_OQ);
    const __mmask8 nan = _mm512_cmp_pd_mask(x, x, _CMP_UNORD_Q);
    const __mmask8 big = _mm512_cmp_pd_mask(x, _mm512_set1_pd(89.0), _CMP_GT_OQ);
    y = _mm256_maskz_mov_ps(ok, y);
    y = _mm256_mask_mov_ps(y, nan, xf);
    y = _mm256_mask_mov_ps(y, big, _mm256_set1_ps(INFINITY));
    return y;
}

/* Softmax (engine_float.h): max, exp8 over 8 scores at a time, the sum in 8 float64 lanes
 * (score n into lane n % 8 — exactly the vector's lanes), the fold, then p = e · fl32(1/Σ). */
static void softmax(float *s, int64_t n, int f16) {
    float mx = -INFINITY;
    for (int64_t i = 0; i < n; ++i)
        if (s[i] > mx) mx = s[i];
    const __m256 mv = _mm256_set1_ps(mx);
    __m512d sum = _mm512_setzero_pd();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(s + i), mv));
        _mm256_storeu_ps(s + i, e);
        sum = _mm512_add_pd(sum, _mm512_cvtps_pd(e));
    }
    double lane[8];
    _mm512_storeu_pd(lane, sum);
    for (; i < n; ++i) {
        s[i] = bl_expf64(s[i] - mx);
        lane[i & 7] += (double)s[i];
    }
    const float inv = (float)(1.0 / bl_fold8d(lane));
    const __m256 iv = _mm256_set1_ps(inv);
    i = 0;
    if (!f16)
        for (; i + 8 <= n; i += 8) _mm256_storeu_ps(s + i, _mm256_mul_ps(_mm256_loadu_ps(s + i), iv));
    for (; i < n; ++i) {
        const float p = s[i] * inv;
        s[i] = f16 ? bl_round_f16(p) : p;
    }
}

static double sumsq(const float *x, int64_t n) {
    __m512d lo = _mm512_setzero_pd(), hi = _mm512_setzero_pd(); /* lanes 0..7, 8..15 */
    int64_t k = 0;
    for (; k + 16 <= n; k += 16) {
        const __m512 v = _mm512_loadu_ps(x + k);
        const __m512 sq = _mm512_mul_ps(v, v);
        lo = _mm512_add_pd(lo, _mm512_cvtps_pd(_mm512_castps512_ps256(sq)));
        hi = _mm512_add_pd(hi, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(sq), 1))));
    }
    double lane[16];
    _mm512_storeu_pd(lane, lo);
    _mm512_storeu_pd(lane + 8, hi);
    for (; k < n; ++k) {
        const float sq = x[k] * x[k];
        lane[k & 15] += (double)sq;
    }
    return bl_fold16d(lane);
}

/* ---- lm_head -------------------------------------------------------------------------------- */

/* 16 int8 of a Q8_0 block times its scale: the exact f32 weights. */
static inline __m512 q8_w(const int8_t *q, __m512 d) {
    return _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)q))), d);
}

static inline void pf_l2(const void *p) { _mm_prefetch((const char *)p + BL_LM_PREFETCH_BYTES, _MM_HINT_T1); }

/* F16 / F32 lm_head rows: the dots above, one row at a time. No software prefetch: a single
 * sequential stream is what the hardware prefetchers follow best (a prefetch 4–32 KB ahead made
 * it slower, with 4 KiB or 2 MiB pages alike; docs/benchmarks.md#decode-memory-layout-and-streaming). */
static float lm_f16_row(const float *h, const uint16_t *w, int64_t K) { return dot_f16(h, w, K); }

static float lm_f32_row(const float *h, const float *w, int64_t K) { return dot_f32(h, w, K); }

/* One Q8_0 row: element j of every block goes to lane j (lo: j < 16, hi: j >= 16). */
static float lm_q8_0_row(const float *h, const uint8_t *row, int64_t K) {
    __m512 lo = _mm512_setzero_ps(), hi = _mm512_setzero_ps();
    for (int64_t b = 0; b < K / BL_Q8_0_BLOCK; ++b) {
        const uint8_t *blk = row + b * BL_Q8_0_BYTES;
        pf_l2(blk);
        uint16_t dbits;
        memcpy(&dbits, blk, 2);
        const __m512 d = _mm512_set1_ps(bl_f16_to_f32(dbits));
        const int8_t *q = (const int8_t *)(blk + 2);
        lo = madd(lo, _mm512_loadu_ps(h + b * BL_Q8_0_BLOCK), q8_w(q, d));
        hi = madd(hi, _mm512_loadu_ps(h + b * BL_Q8_0_BLOCK + 16), q8_w(q + 16, d));
    }
    float lane[LANES];
    _mm512_storeu_ps(lane, lo);
    _mm512_storeu_ps(lane + 16, hi);
    return bl_fold32f(lane);
}

/* Q8_0 lm_head: two blocks per step. The 32 + 32 int8 weights of blocks A = 2s, B = 2s + 1 sit
 * at A + 2 and A + 36; one 512-bit vector [A | B] xor 0x80 is w + 128 as unsigned bytes, so one
 * vpdpbusd against the quantised hidden state gives Σ (w + 128)·x per quad, and subtracting
 * 128·Σx per quad (qsum4) leaves the exact quad sums p — lanes 0..7 block A, 8..15 block B:
 * the canonical lanes. The two fp16 scales come from one 64-byte load of the pair (words 0 and
 * 17), spread over the lanes by vpermw. dx per lane is built once per call. */
static inline __m512i dpbusd_q8(__m512i acc, __m512i u, __m512i s) {
#if defined(__GNUC__) && !defined(__clang__)
    __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(u), "vm"(s));
    return acc;
#else
    return _mm512_dpbusd_epi32(acc, u, s);
#endif
}

#define Q8_MAX_K 16384 /* hidden widths the AVX-512 kernel handles; larger: the scalar order */

/* The 16 canonical lanes of one Q8_0 row folded to its logit (i + i+8, i + i+4, ...). */
static inline float fold16(__m512 acc) {
    const __m256 v8 = _mm256_add_ps(_mm512_castps512_ps256(acc),
                                    _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc), 1)));
    const __m128 v4 = _mm_add_ps(_mm256_castps256_ps128(v8), _mm256_extractf128_ps(v8, 1));
    const __m128 v2 = _mm_add_ps(v4, _mm_movehl_ps(v4, v4));
    return _mm_cvtss_f32(_mm_add_ss(v2, _mm_shuffle_ps(v2, v2, 1)));
}

/* One block pair (step s) of a Q8_0 row at `a`, added to acc in the canonical order. */
static inline __m512 q8_step(__m512 acc, const uint8_t *a, __m512i xs, __m512i cs, __m512 dxs) {
    const __m512i x80 = _mm512_set1_epi8((char)0x80);
    const __m512i didx = _mm512_setr_epi32(0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00110011, 0x00110011,
                                           0x00110011, 0x00110011, 0, 0, 0, 0, 0, 0, 0, 0); /* words 0 x8, 17 x8 */
    const __m512i pair = _mm512_loadu_si512((const void *)a); /* dA at word 0, dB at word 17 */
    const __m512 dw = _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_permutexvar_epi16(didx, pair)));
    const __m512i w = _mm512_xor_si512(
        _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(a + 2))),
                           _mm256_loadu_si256((const __m256i *)(a + 2 + BL_Q8_0_BYTES)), 1),
        x80);
    __m512i p = dpbusd_q8(_mm512_setzero_si512(), w, xs);
    p = _mm512_sub_epi32(p, cs);
    const __m512 dd = _mm512_mul_ps(dw, dxs); /* exact */
    return _mm512_add_ps(acc, _mm512_mul_ps(_mm512_cvtepi32_ps(p), dd));
}

/* R (1 or 2) Q8_0 rows against one quantised hidden row (xn, its quad sums cn, its per-lane
 * scales dxl): the activation loads are shared. `pf`: prefetch each row's lines (68 bytes per
 * step: two lines, or every ~16th line would be missed). */
static inline void q8_rows(const uint8_t *ra, const uint8_t *rb, const int R, int64_t nb, const int8_t *xn,
                           const int32_t *cn, const float *dxl, int pf, float *ya, float *yb) {
    __m512 acc_a = _mm512_setzero_ps(), acc_b = _mm512_setzero_ps();
    for (int64_t s = 0; s < nb / 2; ++s) {
        const uint8_t *a = ra + 2 * s * BL_Q8_0_BYTES;
        if (pf) {
            pf_l2(a);
            pf_l2(a + 64);
            if (R == 2) {
                pf_l2(rb + 2 * s * BL_Q8_0_BYTES);
                pf_l2(rb + 2 * s * BL_Q8_0_BYTES + 64);
            }
        }
        const __m512i xs = _mm512_loadu_si512((const void *)(xn + 64 * s));
        const __m512i cs = _mm512_loadu_si512((const void *)(cn + 16 * s));
        const __m512 dxs = _mm512_load_ps(dxl + 16 * s);
        acc_a = q8_step(acc_a, a, xs, cs, dxs);
        if (R == 2) acc_b = q8_step(acc_b, rb + 2 * s * BL_Q8_0_BYTES, xs, cs, dxs);
    }
    *ya = fold16(acc_a);
    if (R == 2) *yb = fold16(acc_b);
}

static void lm_q8(const uint8_t *W, int64_t row_bytes, int64_t K, int64_t r0, int64_t r1, const int8_t *qx,
                  const float *dx, const int32_t *qsum4, int64_t N, float *out, int64_t ldo, int alone) {
    const int64_t nb = K / BL_Q8_0_BLOCK;
    if (K > Q8_MAX_K || (nb & 1)) { /* odd block count or huge K: the plain loop (same order) */
        for (int64_t r = r0; r < r1; ++r) {
            const uint8_t *row = W + r * row_bytes;
            for (int64_t n = 0; n < N; ++n) {
                float lane[16] = {0};
                for (int64_t b = 0; b < nb; ++b) {
                    const uint8_t *blk = row + b * BL_Q8_0_BYTES;
                    uint16_t dbits;
                    memcpy(&dbits, blk, 2);
                    const float dd = bl_f16_to_f32(dbits) * dx[n * nb + b];
                    const int8_t *q = (const int8_t *)(blk + 2);
                    for (int j = 0; j < 8; ++j) {
                        int32_t p = 0;
                        for (int e = 4 * j; e < 4 * j + 4; ++e) p += (int32_t)q[e] * (int32_t)qx[n * K + b * 32 + e];
                        const float t = (float)p * dd;
                        lane[8 * (b & 1) + j] = lane[8 * (b & 1) + j] + t;
                    }
                }
                for (int w = 8; w >= 1; w >>= 1)
                    for (int i = 0; i < w; ++i) lane[i] = lane[i] + lane[i + w];
                out[n * ldo + r] = lane[0];
            }
        }
        return;
    }
    /* dx spread per lane: dxl[n][16 s + l] = dx[n][2s + (l >= 8)] */
    _Alignas(64) float dxl[Q8_MAX_K / 4];
    for (int64_t n = 0; n < N; ++n) {
        for (int64_t s = 0; s < nb / 2; ++s)
            for (int l = 0; l < 16; ++l) dxl[16 * s + l] = dx[n * nb + 2 * s + (l >= 8)];
        const int8_t *xn = qx + n * K;
        const int32_t *cn = qsum4 + n * (K / 4);
#ifndef BL_LM_SINGLE_STREAM
        if (N == 1) { /* decode: rows r and r + half in one pass (two streams, as the F16 lm_head);
                       * a core streaming alone also prefetches both (the lm_head is faster at 1
                       * thread; at 2 threads no better, so only then) */
            const int64_t half = (r1 - r0) / 2;
            for (int64_t r = r0; r < r0 + half; ++r)
                q8_rows(W + r * row_bytes, W + (r + half) * row_bytes, 2, nb, xn, cn, dxl, alone, &out[r],
                        &out[r + half]);
            if ((r1 - r0) % 2) q8_rows(W + (r1 - 1) * row_bytes, NULL, 1, nb, xn, cn, dxl, 1, &out[r1 - 1], NULL);
            continue;
        }
#endif
        for (int64_t r = r0; r < r1; ++r)
            q8_rows(W + r * row_bytes, NULL, 1, nb, xn, cn, dxl, n == 0, &out[n * ldo + r], NULL);
    }
}

/* Rows a and b (far apart: two sequential streams) against one hidden row, each in dot_f16's
 * order; the hidden-state loads are shared. */
static void dot2_f16(const float *h, const uint16_t *a, const uint16_t *b, int64_t K, float *ya, float *yb) {
    __m512 alo = _mm512_setzero_ps(), ahi = _mm512_setzero_ps(), blo = _mm512_setzero_ps(), bhi = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k + 32 <= K; k += 32) {
        const __m512 x0 = _mm512_loadu_ps(h + k), x1 = _mm512_loadu_ps(h + k + 16);
        alo = madd(alo, x0, cvt16_f16(a + k));
        ahi = madd(ahi, x1, cvt16_f16(a + k + 16));
        blo = madd(blo, x0, cvt16_f16(b + k));
        bhi = madd(bhi, x1, cvt16_f16(b + k + 16));
    }
    *ya = finish(alo, ahi, k, K, h, a, 1);
    *yb = finish(blo, bhi, k, K, h, b, 1);
}

/* The multi-row F16 lm_head (a batch, a verification pass: N > 1 hidden rows). Register tiles of
 * ONE weight row × up to LM_NMAX hidden rows: each 32-weight slice of the row is converted once
 * and feeds 2·nh products (the conversion runs on the same two ports as the multiply-adds, so
 * converting a slice once instead of once per 4 hidden rows is a sixth fewer of their uops),
 * 2·nh accumulators in registers. Blocked so the operands stay in L1: LM_RB weight rows × LM_KC
 * weights at a time, the hidden rows' LM_KC-float slices (8 KiB for 8 rows) reused by every row of
 * the block, each (weight row, hidden row) pair's 32 lane sums parked in `acc` between chunks.
 * Each pair's lanes still add its products in k order, then finish: every logit equals dot_f16's
 * bit for bit (engine_float.h, the canonical order). Each weight line prefetches the same line of
 * the next block's rows into L2 (LM_RB short runs per chunk are a pattern the hardware
 * prefetchers follow late). Chunk and block sizes: docs/benchmarks.md#the-batched-f16-lm_head-2026-12-08. */
#ifndef LM_RB
#define LM_RB 8    /* weight rows per block */
#endif
#ifndef LM_KC
#define LM_KC 256  /* weights per chunk (a multiple of 32) */
#endif
#define LM_NMAX 8  /* hidden rows per pass over a block: 16 accumulators + 2 weight vectors */

/* Chunk [0, kc) (kc % 32 == 0) of one fp16 weight row w against nh ≤ LM_NMAX hidden rows h (K
 * apart), continuing the lane sums acc[n] (lanes 0..15, 16..31). pf: bytes from w to the line to
 * prefetch into L2 (0: none). */
static inline __attribute__((always_inline)) void dot_row_chunk(const float *h, const int nh, int64_t K,
                                                                const uint16_t *w, int64_t kc,
                                                                float acc[][LANES], const int fused, int64_t pf) {
    __m512 lo[LM_NMAX], hi[LM_NMAX];
    for (int n = 0; n < nh; ++n) {
        lo[n] = _mm512_load_ps(acc[n]);
        hi[n] = _mm512_load_ps(acc[n] + 16);
    }
    for (int64_t k = 0; k < kc; k += 32) {
        if (pf) _mm_prefetch((const char *)(w + k) + pf, _MM_HINT_T1);
        const __m512 wl = cvt16_f16(w + k), wh = cvt16_f16(w + k + 16);
        for (int n = 0; n < nh; ++n) {
            const __m512 x0 = _mm512_loadu_ps(h + n * K + k), x1 = _mm512_loadu_ps(h + n * K + k + 16);
            lo[n] = fused ? _mm512_fmadd_ps(x0, wl, lo[n]) : madd(lo[n], x0, wl);
            hi[n] = fused ? _mm512_fmadd_ps(x1, wh, hi[n]) : madd(hi[n], x1, wh);
        }
    }
    for (int n = 0; n < nh; ++n) {
        _mm512_store_ps(acc[n], lo[n]);
        _mm512_store_ps(acc[n] + 16, hi[n]);
    }
}

/* dot_row_chunk with nh and fused constants, so the accumulators are registers. fused
 * (BL_FT_F16_H16): exact products, so fmadd gives the same bits as mul-then-add. */
static void dot_row_any(const float *h, int nh, int64_t K, const uint16_t *w, int64_t kc, float acc[][LANES],
                        int fused, int64_t pf) {
#define LM_CASE(NH)                                                                                 \
    case NH:                                                                                        \
        if (fused) dot_row_chunk(h, NH, K, w, kc, acc, 1, pf);                                      \
        else dot_row_chunk(h, NH, K, w, kc, acc, 0, pf);                                            \
        break;
    switch (nh) {
        LM_CASE(1) LM_CASE(2) LM_CASE(3) LM_CASE(4) LM_CASE(5) LM_CASE(6) LM_CASE(7)
    default:
        LM_CASE(8)
    }
#undef LM_CASE
}

static void lm_f16_multi(const uint8_t *W, int64_t row_bytes, int64_t K, int64_t r0, int64_t r1, const float *h,
                         int64_t N, float *out, int64_t ldo, int fused) {
    _Alignas(64) float acc[LM_RB][LM_NMAX][LANES];
    const int64_t K32 = K / 32 * 32;
    for (int64_t rb = r0; rb < r1; rb += LM_RB) {
        const int64_t nr = r1 - rb < LM_RB ? r1 - rb : LM_RB;
        /* the next block's rows, while there is a whole next block in [r0, r1) */
        const int64_t pf = rb + 2 * LM_RB <= r1 ? LM_RB * row_bytes : 0;
        for (int64_t n0 = 0; n0 < N; n0 += LM_NMAX) {
            const int nn = N - n0 < LM_NMAX ? (int)(N - n0) : LM_NMAX;
            memset(acc, 0, sizeof acc);
            for (int64_t k0 = 0; k0 < K32; k0 += LM_KC) {
                const int64_t kc = K32 - k0 < LM_KC ? K32 - k0 : LM_KC;
                for (int64_t i = 0; i < nr; ++i)
                    dot_row_any(h + n0 * K + k0, nn, K, (const uint16_t *)(W + (rb + i) * row_bytes) + k0, kc, acc[i],
                                fused, n0 == 0 ? pf : 0);
            }
            for (int64_t i = 0; i < nr; ++i) {
                const uint16_t *w = (const uint16_t *)(W + (rb + i) * row_bytes);
                for (int n = 0; n < nn; ++n)
                    out[(n0 + n) * ldo + rb + i] = finish(_mm512_load_ps(acc[i][n]), _mm512_load_ps(acc[i][n] + 16),
                                                          K32, K, h + (n0 + n) * K, w, 1);
            }
        }
    }
}

static void lm_rows(int type, const uint8_t *W, int64_t row_bytes, int64_t K, int64_t r0, int64_t r1,
                    const float *h, int64_t N, float *out, int64_t ldo) {
    const int fused = type == BL_FT_F16_H16;
    if (fused) type = BL_FT_F16;
    if (type == BL_FT_F16 && N > 1) { /* several hidden rows: blocked, each row converted once */
        lm_f16_multi(W, row_bytes, K, r0, r1, h, N, out, ldo, fused);
        return;
    }
#ifndef BL_LM_SINGLE_STREAM
    if (type == BL_FT_F16 && N == 1) { /* decode: rows r and r + half in one pass */
        const int64_t half = (r1 - r0) / 2;
        for (int64_t r = r0; r < r0 + half; ++r)
            dot2_f16(h, (const uint16_t *)(W + r * row_bytes), (const uint16_t *)(W + (r + half) * row_bytes), K,
                     &out[r], &out[r + half]);
        if ((r1 - r0) % 2) out[r1 - 1] = lm_f16_row(h, (const uint16_t *)(W + (r1 - 1) * row_bytes), K);
        return;
    }
#endif
    for (int64_t r = r0; r < r1; ++r) {
        const uint8_t *row = W + r * row_bytes;
        for (int64_t n = 0; n < N; ++n) {
            const float *hn = h + n * K;
            out[n * ldo + r] = type == BL_FT_F16   ? lm_f16_row(hn, (const uint16_t *)row, K)
                               : type == BL_FT_F32 ? lm_f32_row(hn, (const float *)row, K)
                                                   : lm_q8_0_row(hn, row, K);
        }
    }
}

/* bl_exp64 on 8 doubles: the same operations in the same order; 2^n in two exponent-built factors
 * (n1 = n / 2 truncated, n2 = n - n1, as the scalar code) from the integer held in t's low bits. */
static inline __m512d exp8_pd(__m512d x) {
    const __m512d shifter = _mm512_set1_pd(BL_EXP_SHIFTER);
    const __m512d t = _mm512_add_pd(_mm512_mul_pd(x, _mm512_set1_pd(BL_EXP_LOG2E)), shifter);
    const __m512d n = _mm512_sub_pd(t, shifter);
    __m512d r = _mm512_sub_pd(x, _mm512_mul_pd(n, _mm512_set1_pd(BL_EXP_LN2_HI)));
    r = _mm512_sub_pd(r, _mm512_mul_pd(n, _mm512_set1_pd(BL_EXP_LN2_LO)));
    static const double c[11] = {1.0 / 3628800.0, 1.0 / 362880.0, 1.0 / 40320.0, 1.0 / 5040.0, 1.0 / 720.0,
                                 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0};
    __m512d p = _mm512_set1_pd(1.0 / 39916800.0);
    for (int i = 0; i < 11; ++i) p = _mm512_add_pd(_mm512_mul_pd(p, r), _mm512_set1_pd(c[i]));
    /* n as int64: t = 1.5·2^52 + n has 2^51 + n in its 52 mantissa bits */
    const __m512i lowbits = _mm512_sub_epi64(
        _mm512_and_si512(_mm512_castpd_si512(t), _mm512_set1_epi64(0x000FFFFFFFFFFFFFLL)),
        _mm512_set1_epi64(0x0008000000000000LL));
    /* n1 = n / 2 truncated toward zero: (n + (n < 0)) >> 1 */
    const __m512i n1 = _mm512_srai_epi64(_mm512_add_epi64(lowbits, _mm512_srli_epi64(lowbits, 63)), 1);
    const __m512i n2 = _mm512_sub_epi64(lowbits, n1);
    const __m512i bias = _mm512_set1_epi64(1023);
    const __m512d s1 = _mm512_castsi512_pd(_mm512_slli_epi64(_mm512_add_epi64(n1, bias), 52));
    const __m512d s2 = _mm512_castsi512_pd(_mm512_slli_epi64(_mm512_add_epi64(n2, bias), 52));
    __m512d y = _mm512_mul_pd(_mm512_mul_pd(p, s1), s2);
    const __mmask8 ok = _mm512_cmp_pd_mask(x, _mm512_set1_pd(-745.2), _CMP_GE_OQ);
    const __mmask8 nan = _mm512_cmp_pd_mask(x, x, _CMP_UNORD_Q);
    const __mmask8 big = _mm512_cmp_pd_mask(x, _mm512_set1_pd(709.78), _CMP_GT_OQ);
    y = _mm512_maskz_mov_pd(ok, y);
    y = _mm512_mask_mov_pd(y, nan, x);
    y = _mm512_mask_mov_pd(y, big, _mm512_set1_pd(INFINITY));
    return y;
}

static void silu(const float *g, const float *u, float *f, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m512d g64 = _mm512_cvtps_pd(_mm256_loadu_ps(g + i));
        const __m512d e = exp8_pd(_mm512_sub_pd(_mm512_setzero_pd(), g64));
        const __m256 s = _mm512_cvtpd_ps(_mm512_div_pd(g64, _mm512_add_pd(_mm512_set1_pd(1.0), e)));
        _mm256_storeu_ps(f + i, _mm256_mul_ps(s, _mm256_loadu_ps(u + i)));
    }
    for (; i < n; ++i) {
        const double g64 = (double)g[i];
        const float s = (float)(g64 / (1.0 + bl_exp64(-g64)));
        f[i] = s * u[i];
    }
}

const bl_float_kernels bl_float_avx512 = {"avx512", dot_f32, qk, pv, softmax, silu, sumsq, lm_rows, lm_q8, bl_lm_q6k_avx512};
