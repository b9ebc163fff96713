/* engine.c — bitnet_lab's native forward pass, readable top to bottom.
 *
 *   1. threads        one OpenMP parallel region per call; stages separated by barriers
 *   2. captures       names / dtypes / widths of the per-layer intermediates
 *   3. float ops      RMSNorm, RoPE, gated activations (scalar: cheap, one row per thread)
 *   4. BitLinear      activation quantisation, the ternary products (dispatch table), epilogue
 *   5. attention      causal GQA over the KV cache, float64-accumulated dots
 *   6. lm_head        float64-accumulated dots over the F16 / F32 / Q8_0 matrix
 *   7. forward        the layer loop (numerics.md §10)
 *   8. bitlinear      one projection alone (the BitLinear tier of verify)
 *
 * Numerics mirror bitnet_lab/reference/layers.py (the judge) rule by rule; each choice is
 * commented where it is made. Compiled with -ffp-contract=off (setup.py): no product is ever
 * fused into an add unless an intrinsic says so, and those (engine_float.h) are exact.
 *
 * Thread independence: every float reduction (a norm, a dot product, a softmax) is computed
 * by ONE thread in a fixed order; threads only split independent rows / heads / outputs, and
 * the integer products are exact. So the results do not depend on the number of threads.
 */
#include "engine.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bl_kernels.h"
#include "bl_lut.h"
#include "bl_mad.h"

#ifdef _OPENMP
#include <omp.h>
#endif

/* ======================================================================================== */
/* 1. threads                                                                                */
/* ======================================================================================== */

#ifdef _OPENMP
#define BL_BARRIER() _Pragma("omp barrier")
static inline int bl_tid(void) { return omp_get_thread_num(); }
static inline int bl_nth(void) { return omp_get_num_threads(); }
#else
#define BL_BARRIER() ((void)0)
static inline int bl_tid(void) { return 0; }
static inline int bl_nth(void) { return 1; }
#endif

/* [lo, hi): this thread's share of n items (contiguous, in thread order). */
static inline void bl_split(int64_t n, int tid, int nt, int64_t *lo, int64_t *hi) {
    *lo = n * tid / nt;
    *hi = n * (tid + 1) / nt;
}

/* First error wins; any thread may report (under a critical section). */
static void bl_fail(bl_error *err, int code, const char *msg) {
#ifdef _OPENMP
#pragma omp critical(bl_engine_error)
#endif
    {
        if (err->code == BL_OK) {
            err->code = code;
            snprintf(err->msg, sizeof err->msg, "%s", msg);
        }
    }
}

/* ======================================================================================== */
/* 2. captures                                                                               */
/* ======================================================================================== */

static const char *const layer_cap_names[BL_CAP_LAYER_COUNT] = {
    "attn_norm", "attn_in.q", "attn_in.scale", "attn_in.sum",
    "attn_q.acc", "attn_q.out", "attn_k.acc", "attn_k.out",
    "attn_v.acc", "attn_v.out", "q_rope", "k_rope", "attn_out",
    "attn_sub_norm", "attn_output_in.q", "attn_output_in.scale", "attn_output_in.sum", "attn_output.acc",
    "attn_output.out", "attn_resid", "ffn_norm", "ffn_in.q", "ffn_in.scale",
    "ffn_in.sum", "ffn_gate.acc", "ffn_gate.out", "ffn_up.acc", "ffn_up.out",
    "ffn_act", "ffn_sub_norm", "ffn_down_in.q", "ffn_down_in.scale",
    "ffn_down_in.sum", "ffn_down.acc", "ffn_down.out", "ffn_resid",
};
static const char *const global_cap_names[BL_CAP_GLOBAL_COUNT] = {"embd", "output_norm"};

const char *bl_capture_info(const bl_model *m, int layer, int c, int *dtype, int64_t *width) {
    const int64_t H = m->hidden, qd = m->n_heads * m->head_dim, kvd = m->n_kv_heads * m->head_dim;
    const int64_t I = m->ffn;
    if (!layer) {
        if (c < 0 || c >= BL_CAP_GLOBAL_COUNT) return NULL;
        *dtype = BL_CAP_F32;
        *width = H;
        return global_cap_names[c];
    }
    if (c < 0 || c >= BL_CAP_LAYER_COUNT) return NULL;
    *dtype = BL_CAP_F32;
    switch (c) {
        case BL_CAP_ATTN_IN_Q: case BL_CAP_FFN_IN_Q: *dtype = BL_CAP_I8; *width = H; break;
        case BL_CAP_O_IN_Q: *dtype = BL_CAP_I8; *width = qd; break;
        case BL_CAP_DOWN_IN_Q: *dtype = BL_CAP_I8; *width = I; break;
        case BL_CAP_ATTN_IN_SCALE: case BL_CAP_O_IN_SCALE: case BL_CAP_FFN_IN_SCALE:
        case BL_CAP_DOWN_IN_SCALE: *width = 1; break;
        case BL_CAP_ATTN_IN_SUM: case BL_CAP_O_IN_SUM: case BL_CAP_FFN_IN_SUM: case BL_CAP_DOWN_IN_SUM:
            *dtype = BL_CAP_I32; *width = 1; break;
        case BL_CAP_ATTN_Q_ACC: *dtype = BL_CAP_I32; *width = qd; break;
        case BL_CAP_ATTN_K_ACC: case BL_CAP_ATTN_V_ACC: *dtype = BL_CAP_I32; *width = kvd; break;
        case BL_CAP_O_ACC: case BL_CAP_DOWN_ACC: *dtype = BL_CAP_I32; *width = H; break;
        case BL_CAP_GATE_ACC: case BL_CAP_UP_ACC: *dtype = BL_CAP_I32; *width = I; break;
        case BL_CAP_ATTN_Q_OUT: case BL_CAP_Q_ROPE: case BL_CAP_ATTN_OUT: case BL_CAP_ATTN_SUB_NORM:
            *width = qd; break;
        case BL_CAP_ATTN_K_OUT: case BL_CAP_ATTN_V_OUT: case BL_CAP_K_ROPE: *width = kvd; break;
        case BL_CAP_FFN_ACT: case BL_CAP_FFN_SUB_NORM: case BL_CAP_GATE_OUT: case BL_CAP_UP_OUT:
            *width = I; break;
        default: *width = H; break; /* attn_norm, o.out, attn_resid, ffn_norm, down.out, ffn_resid */
    }
    return layer_cap_names[c];
}

/* Copy rows [lo, hi) of a (N, width) block into capture `dst` at row offset row0. */
static void cap_rows(void *dst, const void *src, int64_t elem, int64_t width, int64_t row0, int64_t lo,
                     int64_t hi) {
    if (!dst || hi <= lo) return;
    memcpy((char *)dst + (row0 + lo) * width * elem, (const char *)src + lo * width * elem,
           (size_t)((hi - lo) * width * elem));
}

/* ======================================================================================== */
/* 3. float ops                                                                              */
/* ======================================================================================== */

/* ggml RMSNorm of one row (numerics §4.1; reference layers.rms_norm): squares formed in f32,
 * summed in float64 (sequentially), mean = fl32(sum / n) (one float64 division),
 * scale = 1.0f / sqrtf(mean + eps), then (x · scale) · w as two f32 multiplies. */
static void rms_norm_row(const float *x, const float *w, float *y, int64_t n, float eps) {
    double ss = 0.0;
    for (int64_t i = 0; i < n; ++i) {
        float sq = x[i] * x[i];
        ss += (double)sq;
    }
    float mean = (float)(ss / (double)n);
    float scale = 1.0f / sqrtf(mean + eps);
    for (int64_t i = 0; i < n; ++i) {
        float xs = x[i] * scale;
        y[i] = xs * w[i];
    }
}

void bl_rms_norm_rows(const float *x, const float *w, float *y, int64_t N, int64_t n, float eps) {
    for (int64_t r = 0; r < N; ++r) rms_norm_row(x + r * n, w, y + r * n, n, eps);
}

void bl_f32_to_f16_array(const float *x, uint16_t *y, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] = bl_f32_to_f16(x[i]);
}

/* RoPE of the first `rot` dims of each of n_heads heads of one row (numerics §5.3; reference
 * layers.apply_rope): x0' = fl(x0·c) − fl(x1·s), x1' = fl(x0·s) + fl(x1·c) in f32. NEOX pairs
 * dim i with i + rot/2; NORM pairs 2i with 2i+1. cs / sn: this position's table rows. */
static void rope_row(float *x, int64_t n_heads, int64_t d, int64_t rot, int neox, const float *cs,
                     const float *sn) {
    const int64_t half = rot / 2;
    for (int64_t h = 0; h < n_heads; ++h) {
        float *xh = x + h * d;
        for (int64_t i = 0; i < half; ++i) {
            float *p0 = neox ? &xh[i] : &xh[2 * i];
            float *p1 = neox ? &xh[i + half] : &xh[2 * i + 1];
            float x0 = *p0, x1 = *p1, c = cs[i], s = sn[i];
            float a = x0 * c, b = x1 * s, e = x0 * s, f = x1 * c;
            *p0 = a - b;
            *p1 = e + f;
        }
    }
}

/* Gated FFN activation, element-wise (numerics §7; reference layers.gated_activation).
 * relu2: r = g > 0 ? g : 0 (ggml_relu), (r·r)·u in f32.
 * silu:  fl32(g / (1 + exp(−g))) evaluated in float64 (≈ correctly rounded), then ·u in f32. */
static void gated_act(const float *g, const float *u, float *f, int64_t n, int relu2) {
    if (relu2) {
        for (int64_t i = 0; i < n; ++i) {
            float r = g[i] > 0.0f ? g[i] : 0.0f;
            float r2 = r * r;
            f[i] = r2 * u[i];
        }
    } else {
        for (int64_t i = 0; i < n; ++i) {
            double g64 = (double)g[i];
            float s = (float)(g64 / (1.0 + exp(-g64)));
            f[i] = s * u[i];
        }
    }
}

/* One embedding row to f32 (F16 -> f32 and Q8_0's q·d are exact). */
static void embed_row(const bl_fmat *e, int64_t id, float *out) {
    const uint8_t *row = e->data + id * e->row_bytes;
    if (e->type == BL_FT_F32) {
        memcpy(out, row, (size_t)(4 * e->cols));
    } else if (e->type == BL_FT_F16) {
        const uint16_t *r = (const uint16_t *)row;
        for (int64_t i = 0; i < e->cols; ++i) out[i] = bl_f16_to_f32(r[i]);
    } else {
        for (int64_t b = 0; b < e->cols / BL_Q8_0_BLOCK; ++b) {
            const uint8_t *blk = row + b * BL_Q8_0_BYTES;
            uint16_t dbits;
            memcpy(&dbits, blk, 2);
            float d = bl_f16_to_f32(dbits);
            const int8_t *q = (const int8_t *)(blk + 2);
            for (int j = 0; j < BL_Q8_0_BLOCK; ++j) out[b * BL_Q8_0_BLOCK + j] = (float)q[j] * d;
        }
    }
}

/* ======================================================================================== */
/* 4. BitLinear                                                                              */
/* ======================================================================================== */

/* The quantised input of one or more projections (numerics §2.6: q/k/v share one, gate/up
 * share one). Row n of q starts at q + n·stride; columns K .. stride-1 are zero. */
typedef struct {
    int8_t *q;      /* (N, stride)                                                 */
    float *s;       /* (N) activation scales s_x                                   */
    int32_t *sum;   /* (N) Σ q                                                     */
    int64_t K, stride, N;
} bl_act;

/* Quantise rows [lo, hi) of x (N, K) into a (numerics §2.1, bl_mad.h quantize_act). */
static void quantize_rows(const bl_mad_kernels *mad, const float *x, bl_act *a, int64_t lo, int64_t hi,
                          int rounding) {
    if (hi <= lo) return;
    if (a->stride == a->K) {
        mad->quantize_act(x, a->q, a->s, a->sum, a->K, lo, hi, rounding);
    } else {
        for (int64_t n = lo; n < hi; ++n) {
            mad->quantize_act(x + n * a->K, a->q + n * a->stride, a->s + n, a->sum + n, a->K, 0, 1, rounding);
            memset(a->q + n * a->stride + a->K, 0, (size_t)(a->stride - a->K));
        }
    }
    /* A non-finite row gets q = 0, s_x = 0 from the kernel: its outputs become 0/0 = NaN and the
     * NaN propagates to the logits, as in the reference. Nothing to report here. */
}

/* One projection of a group sharing an input: where its output goes. */
typedef struct {
    const bl_tweight *w;
    float *y;         /* output base (shared): y[n·ldy + m]                          */
    int64_t ldy;
    int32_t *acc;     /* (N, M) int32 (shared; each thread touches its own rows)     */
    void *cap_acc, *cap_out; /* capture bases (T, M) or NULL                      */
    const char *name; /* for error messages, e.g. "blk.3.attn_q.weight"             */
} bl_job;

/* Rows per work tile: TL kernels need multiples of their sub-tile; MAD kernels take any range
 * (32 keeps a tile's weights in L1/L2 and the 4-row kernels aligned). */
static int64_t tile_rows(const bl_tweight *w) {
    if (w->layout == BL_W_TL1) return w->bm;
    if (w->layout == BL_W_TL2) return BL_TL2_SUBTILE;
    return 32;
}

static int64_t lut_row_bytes(const bl_tweight *w) {
    if (w->layout == BL_W_TL1) return BL_TL1_LUT_BYTES(w->K);
    if (w->layout == BL_W_TL2) return BL_TL2_LUT_BYTES(w->K, w->BK);
    return 0;
}

static int is_tl(const bl_tweight *w) { return w->layout == BL_W_TL1 || w->layout == BL_W_TL2; }

/* Exact Σ t·q of rows [r0, r1) of a MAD-layout job for all N input rows, into j->acc (N, M). */
static void mad_rows(const bl_mad_kernels *mad, const bl_job *j, const bl_act *a, int64_t r0, int64_t r1) {
    const bl_tweight *w = j->w;
    const int64_t M = w->M, N = a->N;
    bl_gemv_fn gemv = w->layout == BL_W_I2S ? mad->i2s_gemv : w->layout == BL_W_TQ2_0 ? mad->tq2_gemv : mad->tq1_gemv;
    bl_gemm_fn gemm = w->layout == BL_W_I2S ? mad->i2s_gemm : w->layout == BL_W_TQ2_0 ? mad->tq2_gemm : mad->tq1_gemm;
    if (N > 1 && a->stride == w->K_pad) {
        /* prefill: activation-parallel GEMM, each weight row decoded once for N tokens (kernels §2.6) */
        gemm(w->data, a->q, a->sum, j->acc, N, w->K_pad, M, r0, r1);
    } else {
        for (int64_t n = 0; n < N; ++n) gemv(w->data, a->q + n * a->stride, a->sum[n], j->acc + n * M, w->K_pad, r0, r1);
    }
}

/* Exact Σ t·q of rows [r0, r1) of a TL job for input row n through its LUT, into j->acc row n. */
static void tl_rows(const bl_isa_kernels *tab, const bl_job *j, const uint8_t *lut, int64_t n, int64_t r0, int64_t r1,
                    bl_error *err) {
    const bl_tweight *w = j->w;
    int32_t *out = j->acc + n * w->M;
    bl_lut_status st = w->layout == BL_W_TL1
                           ? tab->tl1_gemv(w->data, lut, w->M, w->K, w->BM, w->BK, w->bm, r0, r1, out)
                           : tab->tl2_gemv(w->data, lut, w->M, w->K, w->BM, w->BK, r0, r1, out);
    if (st.n_bad) {
        char msg[256];
        snprintf(msg, sizeof msg, "%s: %s data holds %lld invalid LUT index(es) in rows %lld..%lld; first at byte %lld",
                 j->name, w->layout == BL_W_TL1 ? "TL1" : "TL2", (long long)st.n_bad, (long long)r0, (long long)r1 - 1,
                 (long long)st.first_bad_byte);
        bl_fail(err, BL_E_DATA, msg);
    }
}

/* BitLinear epilogue of rows [r0, r1) (numerics §3.2; reference layers.epilogue):
 * y = fl(fl(acc) / s_x) · γ, left to right, then · out_scale (old `bitnet` arch). */
static void epilogue_rows(const bl_job *j, const bl_act *a, int64_t r0, int64_t r1) {
    const bl_tweight *w = j->w;
    for (int64_t n = 0; n < a->N; ++n) {
        const int32_t *acc = j->acc + n * w->M;
        float *y = j->y + n * j->ldy;
        const float s = a->s[n];
        for (int64_t r = r0; r < r1; ++r) {
            float v = (float)acc[r] / s;
            v = v * w->gamma;
            if (w->has_out_scale) v = v * w->out_scale;
            y[r] = v;
        }
    }
}

/* All threads, each with its own copy `a` of the quantised input (every thread computed it, so
 * no barrier was needed before): the concatenated output rows of the jobs are cut into tiles,
 * each thread takes a contiguous run of tiles, computes the exact products and the epilogue.
 * TL jobs build their tables privately (one input row at a time, into `lut`, one slot of
 * lut_max bytes per job; jobs of the same kind share a table). Ends with a barrier (the outputs
 * are read by every thread next). */
static void run_group(const bl_isa_kernels *tab, const bl_job *jobs, int njobs, const bl_act *a, uint8_t *lut,
                      int64_t lut_max, int64_t row0, bl_error *err) {
    const int tid = bl_tid(), nt = bl_nth();
    int64_t n_tiles = 0, r0[3], r1[3];
    for (int j = 0; j < njobs; ++j) n_tiles += (jobs[j].w->M + tile_rows(jobs[j].w) - 1) / tile_rows(jobs[j].w);
    int64_t lo, hi, first = 0;
    bl_split(n_tiles, tid, nt, &lo, &hi);
    for (int j = 0; j < njobs; ++j) { /* this thread's rows of each job: [r0, r1), maybe empty */
        const int64_t g = tile_rows(jobs[j].w), M = jobs[j].w->M, tiles = (M + g - 1) / g;
        const int64_t t0 = lo > first ? lo - first : 0, t1 = hi - first < tiles ? hi - first : tiles;
        r0[j] = t0 < t1 ? t0 * g : 0;
        r1[j] = t0 < t1 ? (t1 * g < M ? t1 * g : M) : 0;
        first += tiles;
    }
    for (int j = 0; j < njobs; ++j)
        if (r0[j] < r1[j] && !is_tl(jobs[j].w)) mad_rows(tab->mad, &jobs[j], a, r0[j], r1[j]);
    for (int64_t n = 0; n < a->N; ++n) {
        int built[3] = {0, 0, 0};
        for (int j = 0; j < njobs; ++j) {
            const bl_tweight *w = jobs[j].w;
            if (r0[j] >= r1[j] || !is_tl(w)) continue;
            int slot = j;
            for (int k = 0; k < j; ++k) /* a table of the same kind built for this row already */
                if (built[k] && jobs[k].w->layout == w->layout && jobs[k].w->K == w->K &&
                    (w->layout == BL_W_TL1 || jobs[k].w->BK == w->BK)) {
                    slot = k;
                    break;
                }
            uint8_t *tbl = lut + slot * lut_max;
            if (slot == j) {
                if (w->layout == BL_W_TL1)
                    tab->tl1_build_lut(a->q + n * a->stride, w->K, tbl);
                else
                    tab->tl2_build_lut(a->q + n * a->stride, w->K, w->BK, tbl);
                built[j] = 1;
            }
            tl_rows(tab, &jobs[j], tbl, n, r0[j], r1[j], err);
        }
    }
    for (int j = 0; j < njobs; ++j) {
        if (r0[j] >= r1[j]) continue;
        const int64_t M = jobs[j].w->M;
        epilogue_rows(&jobs[j], a, r0[j], r1[j]);
        for (int64_t n = 0; n < a->N; ++n) {
            if (jobs[j].cap_acc)
                memcpy((int32_t *)jobs[j].cap_acc + (row0 + n) * M + r0[j], jobs[j].acc + n * M + r0[j],
                       (size_t)(r1[j] - r0[j]) * 4);
            if (jobs[j].cap_out)
                memcpy((float *)jobs[j].cap_out + (row0 + n) * M + r0[j], jobs[j].y + n * jobs[j].ldy + r0[j],
                       (size_t)(r1[j] - r0[j]) * 4);
        }
    }
    BL_BARRIER();
}

/* ======================================================================================== */
/* 5. attention                                                                              */
/* ======================================================================================== */

/* Causal GQA attention of one query row and one head (numerics §6; reference
 * layers.attention). q: the head's d values (f32, after RoPE). Keys/values of positions
 * 0 .. p of its kv head: from the cache (kc, vc), except position p itself when k_cur is not
 * NULL (decode: this thread's own copy of the new token's K/V, in the cache dtype — the cache
 * row is written by another thread at the same time). Arithmetic:
 *   q64 = q (rounded to fp16 first with an fp16 cache: F16 mat-mul operand)
 *   s_n = fl32(fl32(Σ q64·k_n) · kq_scale)       dots in float64, canonical order
 *   e_n = fl32(exp(double(s_n − max s)))           the subtraction in f32
 *   p_n = e_n · fl32(1 / Σ e (float64, sequential))  (rounded to fp16 with an fp16 cache)
 *   o   = fl32(Σ_n p_n · v_n)                      float64, sequential over n per output
 * scores: p+1 floats; q64, o64: d doubles each (this thread's scratch). */
static void attend_one(const bl_model *m, const bl_float_kernels *fk, const float *q, const void *kc,
                       const void *vc, int64_t p, const void *k_cur, const void *v_cur, float *out, float *scores,
                       double *q64, double *o64) {
    const int64_t d = m->head_dim;
    const size_t row = (size_t)d * (m->kv_f16 ? 2 : 4);
    for (int64_t i = 0; i < d; ++i) q64[i] = (double)(m->kv_f16 ? bl_round_f16(q[i]) : q[i]);
    float mx = -INFINITY;
    for (int64_t n = 0; n <= p; ++n) {
        const void *kn = (k_cur && n == p) ? k_cur : (const char *)kc + n * row;
        double dot = m->kv_f16 ? fk->dot_f16(q64, (const uint16_t *)kn, d) : fk->dot_f32(q64, (const float *)kn, d);
        float s = (float)dot * m->kq_scale;
        scores[n] = s;
        if (s > mx) mx = s;
    }
    double total = 0.0;
    for (int64_t n = 0; n <= p; ++n) {
        float e = (float)exp((double)(scores[n] - mx));
        scores[n] = e;
        total += (double)e;
    }
    const float inv = (float)(1.0 / total);
    for (int64_t i = 0; i < d; ++i) o64[i] = 0.0;
    for (int64_t n = 0; n <= p; ++n) {
        const void *vn = (v_cur && n == p) ? v_cur : (const char *)vc + n * row;
        float pn = scores[n] * inv;
        if (m->kv_f16)
            fk->axpy_f16(o64, (double)bl_round_f16(pn), (const uint16_t *)vn, d);
        else
            fk->axpy_f32(o64, (double)pn, (const float *)vn, d);
    }
    for (int64_t i = 0; i < d; ++i) out[i] = (float)o64[i];
}

/* ======================================================================================== */
/* 6. lm_head                                                                                */
/* ======================================================================================== */

/* Rows of the vocabulary are split across threads in multiples of 8 (the SIMD kernels walk
 * 8 or 2 rows at a time; the split never changes a result: each logit is one dot). */
static void lm_head_rows(const bl_model *m, const bl_float_kernels *fk, const double *h64, int64_t N,
                         float *out) {
    const int tid = bl_tid(), nt = bl_nth();
    const int64_t V = m->vocab, groups = (V + 7) / 8;
    int64_t lo, hi;
    bl_split(groups, tid, nt, &lo, &hi);
    const int64_t r0 = lo * 8, r1 = hi * 8 < V ? hi * 8 : V;
    if (r0 < r1)
        fk->lm_rows(m->lm_head.type, m->lm_head.data, m->lm_head.row_bytes, m->hidden, r0, r1, h64, N, out, V);
}

/* ======================================================================================== */
/* 7. forward                                                                                */
/* ======================================================================================== */

/* Threads share only what the split work writes: the projection outputs (two buffers used
 * alternately, so a thread still reading one group's outputs never races with the next
 * group's writers), the accumulators and the attention output. Everything a row needs in
 * order — residual stream, norms, activation quantisation, FFN activation, lm_head input —
 * every thread computes for itself (identical code and inputs, so identical bits): that costs
 * O(N·(H+I)) per thread and saves a barrier before each group. Decode then needs 5 barriers
 * per layer (one after each of q/k/v, attention, o, gate/up, down). */
typedef struct {
    float *yA;       /* (N, max(qd + 2kvd, 2I)) outputs of q/k/v and gate/up          */
    float *yB;       /* (N, H) outputs of o and down                                  */
    int32_t *acc;    /* (N, max(qd + 2kvd, 2I, H)) integer accumulators              */
    float *xb;       /* (N, qd) attention output                                      */
    void *base;
} bl_shared;

typedef struct {
    float *h;        /* (N, H) residual stream                                         */
    float *xn;       /* (N, max(H, qd, I)) norm outputs = BitLinear inputs; scratch    */
    float *xf;       /* (N, I) FFN activation                                          */
    int8_t *q;       /* (N, stride_max) quantised activations                          */
    float *s;        /* (N)                                                            */
    int32_t *sum;    /* (N)                                                            */
    uint8_t *lut;    /* (3, lut_max) TL tables of one input row                        */
    double *h64;     /* (N, H) lm_head input in float64                                */
    float *scores;   /* (n_ctx) attention weights                                      */
    double *q64;     /* (d) + o64 (d)                                                  */
    float *kr;       /* (kvd) decode: the new token's K after RoPE                     */
    uint16_t *k16;   /* (kvd) + v16 (kvd): the same in fp16 (fp16 cache)               */
    float *qr;       /* (d) one query head after RoPE                                  */
    void *base;
} bl_private;

static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

/* Carve `n` regions of the given byte sizes (each 64-byte aligned) out of one allocation. */
static void *carve(const size_t *sizes, void **ptrs, int n) {
    size_t off[16], total = 0;
    for (int i = 0; i < n; ++i) {
        off[i] = total;
        total += (sizes[i] + 63) / 64 * 64;
    }
    char *base = (char *)aligned_alloc(64, total ? total : 64);
    if (base)
        for (int i = 0; i < n; ++i) ptrs[i] = base + off[i];
    return base;
}

/* Largest K_pad and TL table size over the model's projections. */
static void model_maxima(const bl_model *m, int64_t *stride, int64_t *lut) {
    *stride = 0;
    *lut = 0;
    for (int64_t l = 0; l < m->n_layers; ++l)
        for (int p = 0; p < BL_P_COUNT; ++p) {
            *stride = max64(*stride, m->layers[l].w[p].K_pad);
            *lut = max64(*lut, lut_row_bytes(&m->layers[l].w[p]));
        }
}

static int shared_alloc(bl_shared *S, const bl_model *m, int64_t N) {
    const int64_t H = m->hidden, qd = m->n_heads * m->head_dim, kvd = m->n_kv_heads * m->head_dim, I = m->ffn;
    const int64_t wa = max64(qd + 2 * kvd, 2 * I);
    size_t sizes[4] = {(size_t)(4 * N * wa), (size_t)(4 * N * H), (size_t)(4 * N * max64(wa, H)), (size_t)(4 * N * qd)};
    void *p[4];
    S->base = carve(sizes, p, 4);
    if (!S->base) return -1;
    S->yA = p[0];
    S->yB = p[1];
    S->acc = p[2];
    S->xb = p[3];
    return 0;
}

static int private_alloc(bl_private *P, const bl_model *m, int64_t N, int64_t n_ctx) {
    const int64_t H = m->hidden, d = m->head_dim, qd = m->n_heads * d, kvd = m->n_kv_heads * d, I = m->ffn;
    int64_t stride, lut;
    model_maxima(m, &stride, &lut);
    size_t sizes[11] = {
        (size_t)(4 * N * H), (size_t)(4 * N * max64(H, max64(qd, I))), (size_t)(4 * N * I), (size_t)(N * stride),
        (size_t)(4 * N), (size_t)(4 * N), (size_t)(3 * lut), (size_t)(8 * N * H), (size_t)(4 * n_ctx),
        (size_t)(8 * 2 * d), (size_t)(4 * kvd + 2 * 2 * kvd + 4 * d)};
    void *p[11];
    P->base = carve(sizes, p, 11);
    if (!P->base) return -1;
    P->h = p[0];
    P->xn = p[1];
    P->xf = p[2];
    P->q = p[3];
    P->s = p[4];
    P->sum = p[5];
    P->lut = p[6];
    P->h64 = p[7];
    P->scores = p[8];
    P->q64 = p[9];
    P->kr = p[10];
    P->k16 = (uint16_t *)(P->kr + kvd);
    P->qr = (float *)(P->k16 + 2 * kvd);
    return 0;
}

/* Row stride of the quantised input of a group: the largest K_pad among its projections. */
static int64_t group_stride(const bl_tweight *w, int n) {
    int64_t s = 0;
    for (int i = 0; i < n; ++i) s = max64(s, w[i].K_pad);
    return s;
}

/* Set up the jobs of a group of projections sharing one input; outputs side by side in y
 * (ldy = Σ M), accumulators side by side in acc. */
static void make_jobs(bl_job *jobs, const bl_layer *L, const int *slots, int n, int64_t N, float *y, int32_t *acc,
                      void *const *lcaps, const int *cap_acc_ids, char names[][64], int64_t layer) {
    static const char *const pname[BL_P_COUNT] = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate",
                                                  "ffn_up", "ffn_down"};
    int64_t ldy = 0, col = 0;
    for (int i = 0; i < n; ++i) ldy += L->w[slots[i]].M;
    for (int i = 0; i < n; ++i) {
        const bl_tweight *w = &L->w[slots[i]];
        bl_job *j = &jobs[i];
        j->w = w;
        j->y = y + col;
        j->ldy = ldy;
        j->acc = acc + N * col;
        j->cap_acc = lcaps ? lcaps[cap_acc_ids[i]] : NULL;
        j->cap_out = lcaps ? lcaps[cap_acc_ids[i] + 1] : NULL;
        snprintf(names[i], 64, "blk.%lld.%s.weight", (long long)layer, pname[slots[i]]);
        j->name = names[i];
        col += w->M;
    }
}

/* Everything one layer needs. */
typedef struct {
    const bl_model *m;
    const bl_kv *kv;
    const bl_isa_kernels *tab;
    const bl_float_kernels *fk;
    bl_shared *S;
    int64_t N, pos, row0, lut_max;
    bl_error *err;
} bl_ctx;

/* Thread 0 copies N rows of width `width` (elem bytes each, row stride ld elements) of a
 * private buffer into capture `id` (NULL: not captured). */
static void cap_private(void *const *lcaps, int id, const void *src, int64_t elem, int64_t width, int64_t ld,
                        const bl_ctx *c) {
    if (!lcaps || !lcaps[id] || bl_tid() != 0) return;
    for (int64_t n = 0; n < c->N; ++n)
        memcpy((char *)lcaps[id] + (c->row0 + n) * width * elem, (const char *)src + n * ld * elem, (size_t)(width * elem));
}

/* RMSNorm of all N rows of x (N, n) into y, then their activation quantisation into P's
 * buffers (this thread's copy), stride = the group's K_pad. */
static void norm_quant(const bl_ctx *c, bl_private *P, const float *x, const float *w, int64_t n, int64_t stride,
                       bl_act *a, void *const *lcaps, int cap_norm, int cap_q) {
    const float *in = x;
    if (w) {
        for (int64_t r = 0; r < c->N; ++r) rms_norm_row(x + r * n, w, P->xn + r * n, n, c->m->eps);
        cap_private(lcaps, cap_norm, P->xn, 4, n, n, c);
        in = P->xn;
    }
    a->q = P->q;
    a->s = P->s;
    a->sum = P->sum;
    a->K = n;
    a->stride = stride;
    a->N = c->N;
    quantize_rows(c->tab->mad, in, a, 0, c->N, c->m->rounding);
    cap_private(lcaps, cap_q, a->q, 1, n, stride, c);
    cap_private(lcaps, cap_q + 1, a->s, 4, 1, 1, c);
    cap_private(lcaps, cap_q + 2, a->sum, 4, 1, 1, c);
}

/* RoPE, K/V cache and attention of layer l for the chunk's N rows (all threads; ends with a
 * barrier). q/k/v are the (N, qd + 2kvd) rows of S->yA; the output goes to S->xb (N, qd). */
static void attention_block(const bl_ctx *c, bl_private *P, int64_t l, void *const *lcaps) {
    const bl_model *m = c->m;
    const bl_kv *kv = c->kv;
    const int tid = bl_tid(), nt = bl_nth();
    const int64_t d = m->head_dim, nh = m->n_heads, nkv = m->n_kv_heads, qd = nh * d, kvd = nkv * d;
    const int64_t ldy = qd + 2 * kvd, half = m->rot_dim / 2, n_rep = nh / nkv;
    const size_t esz = m->kv_f16 ? 2 : 4;
    const int64_t N = c->N, pos = c->pos;
    float *y = c->S->yA;
    if (N == 1) {
        /* Decode: each thread ropes the new key for itself (kvd values) and reads position p
         * from that copy; thread 0 writes it to the cache meanwhile (other threads only read
         * positions < p of the cache in this call). No barrier before the attention. */
        const float *cs = kv->rope_cos + pos * half, *sn = kv->rope_sin + pos * half;
        const float *v = y + qd + kvd;
        memcpy(P->kr, y + qd, 4 * kvd);
        rope_row(P->kr, nkv, d, m->rot_dim, m->rope_neox, cs, sn);
        uint16_t *v16 = P->k16 + kvd;
        if (m->kv_f16) { /* K after RoPE and V rounded to fp16 when stored (numerics §6) */
            bl_f32_to_f16_array(P->kr, P->k16, kvd);
            bl_f32_to_f16_array(v, v16, kvd);
        }
        if (tid == 0) {
            for (int64_t g = 0; g < nkv; ++g) {
                const int64_t at = ((l * nkv + g) * kv->n_ctx + pos) * d;
                if (m->kv_f16) {
                    memcpy((uint16_t *)kv->k + at, P->k16 + g * d, 2 * d);
                    memcpy((uint16_t *)kv->v + at, v16 + g * d, 2 * d);
                } else {
                    memcpy((float *)kv->k + at, P->kr + g * d, 4 * d);
                    memcpy((float *)kv->v + at, v + g * d, 4 * d);
                }
            }
            if (lcaps && lcaps[BL_CAP_K_ROPE]) memcpy((float *)lcaps[BL_CAP_K_ROPE] + c->row0 * kvd, P->kr, 4 * kvd);
            if (lcaps && lcaps[BL_CAP_Q_ROPE])
                for (int64_t j = 0; j < nh; ++j) {
                    float *dst = (float *)lcaps[BL_CAP_Q_ROPE] + c->row0 * qd + j * d;
                    memcpy(dst, y + j * d, 4 * d);
                    rope_row(dst, 1, d, m->rot_dim, m->rope_neox, cs, sn);
                }
        }
        int64_t j0, j1;
        bl_split(nh, tid, nt, &j0, &j1);
        for (int64_t j = j0; j < j1; ++j) {
            const int64_t g = j / n_rep, base = (l * nkv + g) * kv->n_ctx * d;
            memcpy(P->qr, y + j * d, 4 * d);
            rope_row(P->qr, 1, d, m->rot_dim, m->rope_neox, cs, sn);
            const void *kc = m->kv_f16 ? (const void *)(P->k16 + g * d) : (const void *)(P->kr + g * d);
            const void *vc = m->kv_f16 ? (const void *)(v16 + g * d) : (const void *)(v + g * d);
            attend_one(m, c->fk, P->qr, (const char *)kv->k + base * esz, (const char *)kv->v + base * esz, pos, kc,
                       vc, c->S->xb + j * d, P->scores, P->q64, P->q64 + d);
        }
        BL_BARRIER();
        return;
    }
    /* Prefill: rows split for RoPE (in place) and the cache writes, a barrier, then the
     * (row, head) pairs split; every key/value is read from the cache. */
    int64_t lo, hi;
    bl_split(N, tid, nt, &lo, &hi);
    for (int64_t n = lo; n < hi; ++n) {
        float *qn = y + n * ldy, *kn = qn + qd, *vn = kn + kvd;
        const int64_t p = pos + n;
        rope_row(qn, nh, d, m->rot_dim, m->rope_neox, kv->rope_cos + p * half, kv->rope_sin + p * half);
        rope_row(kn, nkv, d, m->rot_dim, m->rope_neox, kv->rope_cos + p * half, kv->rope_sin + p * half);
        if (lcaps && lcaps[BL_CAP_Q_ROPE]) memcpy((float *)lcaps[BL_CAP_Q_ROPE] + (c->row0 + n) * qd, qn, 4 * qd);
        if (lcaps && lcaps[BL_CAP_K_ROPE]) memcpy((float *)lcaps[BL_CAP_K_ROPE] + (c->row0 + n) * kvd, kn, 4 * kvd);
        for (int64_t g = 0; g < nkv; ++g) {
            const int64_t at = ((l * nkv + g) * kv->n_ctx + p) * d;
            if (m->kv_f16) {
                bl_f32_to_f16_array(kn + g * d, (uint16_t *)kv->k + at, d);
                bl_f32_to_f16_array(vn + g * d, (uint16_t *)kv->v + at, d);
            } else {
                memcpy((float *)kv->k + at, kn + g * d, 4 * d);
                memcpy((float *)kv->v + at, vn + g * d, 4 * d);
            }
        }
    }
    BL_BARRIER();
    int64_t a0, a1;
    bl_split(N * nh, tid, nt, &a0, &a1);
    for (int64_t idx = a0; idx < a1; ++idx) {
        const int64_t n = idx / nh, j = idx % nh, g = j / n_rep, base = (l * nkv + g) * kv->n_ctx * d;
        attend_one(m, c->fk, y + n * ldy + j * d, (const char *)kv->k + base * esz, (const char *)kv->v + base * esz,
                   pos + n, NULL, NULL, c->S->xb + n * qd + j * d, P->scores, P->q64, P->q64 + d);
    }
    BL_BARRIER();
}

/* One layer on the chunk's N rows (numerics §10.1), all threads. */
static void layer_forward(const bl_ctx *c, bl_private *P, int64_t l, void *const *lcaps) {
    const bl_model *m = c->m;
    const bl_layer *L = &m->layers[l];
    const int64_t H = m->hidden, qd = m->n_heads * m->head_dim, I = m->ffn, N = c->N;
    bl_shared *S = c->S;
    bl_job jobs[3];
    char names[3][64];
    bl_act a;

    /* ---- attention block ------------------------------------------------------------ */
    norm_quant(c, P, P->h, L->attn_norm, H, group_stride(&L->w[BL_P_Q], 3), &a, lcaps, BL_CAP_ATTN_NORM,
               BL_CAP_ATTN_IN_Q); /* one quantisation shared by q, k, v (numerics §2.6) */
    {
        static const int slots[3] = {BL_P_Q, BL_P_K, BL_P_V};
        static const int caps[3] = {BL_CAP_ATTN_Q_ACC, BL_CAP_ATTN_K_ACC, BL_CAP_ATTN_V_ACC};
        make_jobs(jobs, L, slots, 3, N, S->yA, S->acc, lcaps, caps, names, l);
        run_group(c->tab, jobs, 3, &a, P->lut, c->lut_max, c->row0, c->err);
    }
    attention_block(c, P, l, lcaps);
    cap_private(lcaps, BL_CAP_ATTN_OUT, S->xb, 4, qd, qd, c);
    const float *o_in = S->xb;
    if (m->sub_norms) { /* attn_sub_norm before o_proj (numerics §8) */
        for (int64_t n = 0; n < N; ++n) rms_norm_row(S->xb + n * qd, L->attn_sub_norm, P->xn + n * qd, qd, m->eps);
        cap_private(lcaps, BL_CAP_ATTN_SUB_NORM, P->xn, 4, qd, qd, c);
        o_in = P->xn;
    }
    norm_quant(c, P, o_in, NULL, qd, L->w[BL_P_O].K_pad, &a, lcaps, -1, BL_CAP_O_IN_Q);
    {
        static const int slots[1] = {BL_P_O};
        static const int caps[1] = {BL_CAP_O_ACC};
        make_jobs(jobs, L, slots, 1, N, S->yB, S->acc, lcaps, caps, names, l);
        run_group(c->tab, jobs, 1, &a, P->lut, c->lut_max, c->row0, c->err);
    }
    for (int64_t e = 0; e < N * H; ++e) P->h[e] = P->h[e] + S->yB[e]; /* residual (f32 add) */
    cap_private(lcaps, BL_CAP_ATTN_RESID, P->h, 4, H, H, c);

    /* ---- FFN block -------------------------------------------------------------------- */
    norm_quant(c, P, P->h, L->ffn_norm, H, group_stride(&L->w[BL_P_GATE], 2), &a, lcaps, BL_CAP_FFN_NORM,
               BL_CAP_FFN_IN_Q); /* shared by gate and up */
    {
        static const int slots[2] = {BL_P_GATE, BL_P_UP};
        static const int caps[2] = {BL_CAP_GATE_ACC, BL_CAP_UP_ACC};
        make_jobs(jobs, L, slots, 2, N, S->yA, S->acc, lcaps, caps, names, l);
        run_group(c->tab, jobs, 2, &a, P->lut, c->lut_max, c->row0, c->err);
    }
    for (int64_t n = 0; n < N; ++n) gated_act(S->yA + n * 2 * I, S->yA + n * 2 * I + I, P->xf + n * I, I, m->act_relu2);
    cap_private(lcaps, BL_CAP_FFN_ACT, P->xf, 4, I, I, c);
    const float *d_in = P->xf;
    if (m->sub_norms) { /* ffn_sub_norm before down_proj */
        for (int64_t n = 0; n < N; ++n) rms_norm_row(P->xf + n * I, L->ffn_sub_norm, P->xn + n * I, I, m->eps);
        cap_private(lcaps, BL_CAP_FFN_SUB_NORM, P->xn, 4, I, I, c);
        d_in = P->xn;
    }
    norm_quant(c, P, d_in, NULL, I, L->w[BL_P_DOWN].K_pad, &a, lcaps, -1, BL_CAP_DOWN_IN_Q);
    {
        static const int slots[1] = {BL_P_DOWN};
        static const int caps[1] = {BL_CAP_DOWN_ACC};
        make_jobs(jobs, L, slots, 1, N, S->yB, S->acc, lcaps, caps, names, l);
        run_group(c->tab, jobs, 1, &a, P->lut, c->lut_max, c->row0, c->err);
    }
    for (int64_t e = 0; e < N * H; ++e) P->h[e] = P->h[e] + S->yB[e];
    cap_private(lcaps, BL_CAP_FFN_RESID, P->h, 4, H, H, c);
}

/* The kernels a call needs at level `isa`, or an error naming what is missing. */
static int check_kernels(const bl_model *m, const bl_isa_kernels *tab, const bl_float_kernels *fk, int isa,
                         bl_error *err) {
    const char *missing = NULL;
    if (!tab || !tab->mad || !fk) {
        missing = "the level itself";
    } else {
        const bl_mad_kernels *mad = tab->mad;
        if (!mad->quantize_act) missing = "quantize_act";
        for (int64_t l = 0; l < m->n_layers && !missing; ++l)
            for (int p = 0; p < BL_P_COUNT && !missing; ++p) {
                switch (m->layers[l].w[p].layout) {
                    case BL_W_I2S: if (!mad->i2s_gemv || !mad->i2s_gemm) missing = "I2_S GEMV/GEMM"; break;
                    case BL_W_TQ2_0: if (!mad->tq2_gemv || !mad->tq2_gemm) missing = "TQ2_0 GEMV/GEMM"; break;
                    case BL_W_TQ1_0: if (!mad->tq1_gemv || !mad->tq1_gemm) missing = "TQ1_0 GEMV/GEMM"; break;
                    case BL_W_TL1: if (!tab->tl1_gemv || !tab->tl1_build_lut) missing = "TL1 LUT kernels"; break;
                    case BL_W_TL2: if (!tab->tl2_gemv || !tab->tl2_build_lut) missing = "TL2 LUT kernels"; break;
                    default: missing = "a kernel for an unknown layout"; break;
                }
            }
    }
    if (missing) {
        snprintf(err->msg, sizeof err->msg, "ISA level %s (%d) has no %s in this build",
                 bl_isa_name(isa) ? bl_isa_name(isa) : "?", isa, missing);
        err->code = BL_E_KERNEL;
        return -1;
    }
    return 0;
}

static int oom(bl_error *err, const char *what) {
    snprintf(err->msg, sizeof err->msg, "%s: out of memory for the scratch buffers", what);
    err->code = BL_E_NOMEM;
    return err->code;
}

int bl_forward(const bl_model *m, const bl_kv *kv, const int32_t *tokens, int64_t T, int64_t pos0,
               float *logits, int64_t logits_row0, void *const *caps, int isa, int n_threads,
               bl_error *err) {
    err->code = BL_OK;
    err->msg[0] = 0;
    const bl_isa_kernels *tab = bl_isa_table(isa);
    const bl_float_kernels *fk = bl_float_table(isa);
    if (check_kernels(m, tab, fk, isa, err)) return err->code;
    if (T <= 0 || pos0 < 0 || pos0 + T > kv->n_ctx || logits_row0 < 0 || logits_row0 > T || n_threads < 1) {
        snprintf(err->msg, sizeof err->msg, "bl_forward: bad arguments T=%lld pos0=%lld n_ctx=%lld "
                 "logits_row0=%lld threads=%d", (long long)T, (long long)pos0, (long long)kv->n_ctx,
                 (long long)logits_row0, n_threads);
        err->code = BL_E_ARG;
        return err->code;
    }
    const int64_t CH = T < BL_CHUNK ? T : BL_CHUNK, H = m->hidden, V = m->vocab;
    bl_shared S;
    if (shared_alloc(&S, m, CH)) return oom(err, "bl_forward");
    int64_t stride_max, lut_max;
    model_maxima(m, &stride_max, &lut_max);
    void *const *gcaps = caps ? caps + m->n_layers * BL_CAP_LAYER_COUNT : NULL;
    int failed_alloc = 0;

#ifdef _OPENMP
#pragma omp parallel num_threads(n_threads)
#endif
    {
        const int tid = bl_tid();
        bl_private P;
        int mine = private_alloc(&P, m, CH, kv->n_ctx);
        /* every thread must take part in the barriers below, so a failed allocation is
         * agreed on first: no thread runs the model unless all have their scratch */
#ifdef _OPENMP
#pragma omp atomic
#endif
        failed_alloc += mine != 0;
        BL_BARRIER();
        if (!failed_alloc) {
            for (int64_t t0 = 0; t0 < T; t0 += CH) {
                const int64_t N = T - t0 < CH ? T - t0 : CH;
                bl_ctx c = {m, kv, tab, fk, &S, N, pos0 + t0, t0, lut_max, err};
                for (int64_t n = 0; n < N; ++n) embed_row(&m->embed, tokens[t0 + n], P.h + n * H); /* f16 -> f32 exact */
                if (gcaps && gcaps[BL_CAP_EMBD] && tid == 0) cap_rows(gcaps[BL_CAP_EMBD], P.h, 4, H, t0, 0, N);
                for (int64_t l = 0; l < m->n_layers; ++l)
                    layer_forward(&c, &P, l, caps ? caps + l * BL_CAP_LAYER_COUNT : NULL);
                /* output norm, then the lm_head on the wanted rows */
                for (int64_t n = 0; n < N; ++n) rms_norm_row(P.h + n * H, m->output_norm, P.xn + n * H, H, m->eps);
                if (gcaps && gcaps[BL_CAP_OUTPUT_NORM] && tid == 0) cap_rows(gcaps[BL_CAP_OUTPUT_NORM], P.xn, 4, H, t0, 0, N);
                const int64_t n_first = logits_row0 > t0 ? logits_row0 - t0 : 0, n_lm = N - n_first;
                if (n_lm > 0) {
                    /* lm_head input in float64; with an F16 lm_head the hidden state is rounded to
                     * fp16 first (ggml's F16 mat-mul converts its f32 operand, numerics §9) */
                    for (int64_t e = 0; e < n_lm * H; ++e) {
                        float v = P.xn[n_first * H + e];
                        P.h64[e] = (double)(m->lm_f16 ? bl_round_f16(v) : v);
                    }
                    lm_head_rows(m, fk, P.h64, n_lm, logits + (t0 + n_first - logits_row0) * V);
                }
            }
        }
        free(P.base);
    }
    free(S.base);
    if (failed_alloc) return oom(err, "bl_forward");
    return err->code;
}

/* ======================================================================================== */
/* 8. bitlinear                                                                              */
/* ======================================================================================== */

int bl_bitlinear(const bl_tweight *w, const float *x, int64_t N, float *y, int32_t *acc, int rounding,
                 int isa, int n_threads, bl_error *err) {
    err->code = BL_OK;
    err->msg[0] = 0;
    const bl_isa_kernels *tab = bl_isa_table(isa);
    /* a one-projection "model" for check_kernels */
    bl_layer L;
    memset(&L, 0, sizeof L);
    for (int p = 0; p < BL_P_COUNT; ++p) L.w[p] = *w;
    bl_model m;
    memset(&m, 0, sizeof m);
    m.n_layers = 1;
    m.layers = &L;
    if (check_kernels(&m, tab, bl_float_table(isa), isa, err)) return err->code;
    const int64_t lut_bytes = lut_row_bytes(w);
    int32_t *accb = (int32_t *)malloc((size_t)(N * w->M) * 4 + 64);
    if (!accb) return oom(err, "bl_bitlinear");
    int failed_alloc = 0;
#ifdef _OPENMP
#pragma omp parallel num_threads(n_threads)
#endif
    {
        /* each thread quantises every row for itself (as in bl_forward), then takes its tiles */
        int8_t *q = (int8_t *)calloc((size_t)(N * w->K_pad + 64), 1);
        float *s = (float *)malloc((size_t)N * 4 + 64);
        int32_t *sum = (int32_t *)malloc((size_t)N * 4 + 64);
        uint8_t *lut = (uint8_t *)malloc((size_t)lut_bytes + 64);
        int mine = !q || !s || !sum || !lut;
#ifdef _OPENMP
#pragma omp atomic
#endif
        failed_alloc += mine;
        BL_BARRIER();
        if (!failed_alloc) {
            bl_act a = {q, s, sum, w->K, w->K_pad, N};
            bl_job j = {w, y, w->M, accb, NULL, NULL, "bitlinear"};
            quantize_rows(tab->mad, x, &a, 0, N, rounding);
            run_group(tab, &j, 1, &a, lut, lut_bytes, 0, err);
        }
        free(q);
        free(s);
        free(sum);
        free(lut);
    }
    if (failed_alloc) {
        free(accb);
        return oom(err, "bl_bitlinear");
    }
    if (acc) memcpy(acc, accb, (size_t)(N * w->M) * 4);
    free(accb);
    return err->code;
}

/* ---- the float kernels per ISA level ------------------------------------------------------ */

const bl_float_kernels *bl_float_table(int isa) {
    if (!bl_isa_table(isa)) return NULL; /* not built or not supported */
    switch (isa) {
        case BL_ISA_SCALAR: return &bl_float_scalar;
#if defined(BL_BUILD_AVX2)
        case BL_ISA_AVX2:
        case BL_ISA_AVXVNNI: return &bl_float_avx2;
#endif
#if defined(BL_BUILD_AVX512VNNI)
        case BL_ISA_AVX512VNNI: return &bl_float_avx512;
#endif
        default: return &bl_float_scalar; /* NEON levels: the portable kernels (same results) */
    }
}
