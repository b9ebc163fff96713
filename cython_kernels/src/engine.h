/* engine.h — the native forward pass of bitnet_lab: structs and entry points.
 *
 * The whole model step (embedding -> layers -> lm_head) is ONE C call, bl_forward(), run
 * without the GIL inside one OpenMP parallel region. The weights are never copied: every
 * bl_tweight points into the memory-mapped file (or, for layouts the kernels cannot read, into
 * an I2_S repack made once at load by bitnet_lab/engine.py). The ternary products go through
 * the dispatch table of bl_kernels.h (MAD kernels: bl_mad.h, LUT kernels: bl_lut.h); the float
 * side (norms, RoPE, attention, activations, lm_head) is engine.c + engine_float.h.
 *
 * Numerics: the JAX reference (bitnet_lab/reference/layers.py) is the judge. The integer side
 * (activation quantisation, Σ t·q) and every element-wise float op (norm scaling, RoPE, the
 * BitLinear epilogue, activations, residuals) mirror it bit for bit; the float REDUCTIONS follow
 * canonical orders (engine_float.h): float64 like the reference for attention and the norms,
 * float32 for the lm_head (its logits feed nothing, and the model tier's tolerance allows it).
 * Every float reduction is done by one thread in its order, so the logits are bit-identical for
 * any `n_threads` and every ISA level.
 *
 * Shapes below: L layers, H hidden, nh / nkv heads, d head_dim, I ffn, V vocab, T tokens.
 */
#ifndef BL_ENGINE_H
#define BL_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "engine_float.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- weights ------------------------------------------------------------------------------ */

/* Ternary layouts the engine multiplies (docs/formats.md#3-ternary-byte-layouts). */
typedef enum {
    BL_W_I2S = 0,   /* MAD kernels, K_pad/4 bytes per row                                  */
    BL_W_TQ2_0 = 1, /* MAD kernels, 66-byte blocks of 256; uniform block scale = gamma     */
    BL_W_TQ1_0 = 2, /* MAD kernels, 54-byte blocks of 256; uniform block scale = gamma     */
    BL_W_TL1 = 3,   /* LUT kernels, tiling (BM, BK, bm)                                    */
    BL_W_TL2 = 4,   /* LUT kernels, tiling (BM, BK, 32)                                    */
    BL_W_I2S_X4 = 5, /* MAD kernels, I2_S rows interleaved in groups of 4 (bl_mad.h)       */
    BL_W_TQ1_X16 = 6, /* MAD kernels, TQ1_0 codes, 16 rows interleaved by words (bl_mad.h) */
    BL_W_COUNT = 7
} bl_wlayout;

/* How a projection turns its integer products into floats (docs/numerics.md#3-bitlinear-integer-product-and-epilogue). */
enum {
    BL_EPI_TENSOR = 0, /* bitnet: y = fl(fl(acc) / s_x) · γ (one scale per tensor)                    */
    BL_EPI_BLOCKS = 1, /* bitnet, a model with non-uniform TQ block scales: y = fl32(Σ_b acc_b·d_b in
                          float64) / s_x, d_b = block_d or γ (docs/numerics.md#35-block-scaled-tq-epilogue)*/
    BL_EPI_Q8K = 2     /* llama.cpp: Q8_K activations, sumf += (float)sumi_b · fl32(d8_b · d_b) in f32
                          (docs/numerics.md#36-llamacpp-tq-dot-with-q8_k-activations)             */
};

/* One ternary projection W = gamma · t, shape (M, K) in torch order. */
typedef struct {
    int32_t layout;        /* bl_wlayout                                                     */
    int32_t has_out_scale; /* old `bitnet` arch: multiply the output by out_scale            */
    int64_t M, K;          /* output rows, input columns                                     */
    int64_t K_pad;         /* columns per packed row: K, or K rounded up to 128 for an I2_S
                              repack of a K % 128 != 0 weight (zero weights in the padding)  */
    const uint8_t *data;   /* packed bytes of the whole tensor (no scale tail)               */
    float gamma;           /* per-tensor scale (TQ: the uniform fp16 block scale, widened)   */
    float out_scale;       /* the `.scale` tensor's value; 1.0f when absent                  */
    int64_t BM, BK, bm;    /* TL1 / TL2 tiling; 0 otherwise
                              (docs/kernels.md#5-tiling-parameters-and-code-generation)      */
    int32_t epilogue;      /* BL_EPI_*; BLOCKS and Q8K need K % 256 == 0                      */
    const float *block_d;  /* (M, K/256) fp16 block scales widened to f32 (a TQ tensor whose
                              scales differ), or NULL: γ in every block. BLOCKS with block_d
                              and every Q8K projection run the per-block kernels (bl_mad.h),
                              which read I2_S (row-major), TQ2_0 and TQ1_0 only            */
} bl_tweight;

/* A float matrix read row by row (embedding, lm_head). */
typedef struct {
    int32_t type;        /* bl_ftype (engine_float.h): F32, F16, Q8_0                        */
    int64_t rows, cols;  /* (V, H)                                                           */
    int64_t row_bytes;   /* bytes per row: 4·cols, 2·cols or 34·cols/32                      */
    const uint8_t *data; /* rows, contiguous                                                 */
} bl_fmat;

/* Projection slots of a layer, in the order of reference/weights.py PROJECTIONS. */
enum { BL_P_Q = 0, BL_P_K, BL_P_V, BL_P_O, BL_P_GATE, BL_P_UP, BL_P_DOWN, BL_P_COUNT };

typedef struct {
    const float *attn_norm;     /* (H)                                                     */
    const float *ffn_norm;      /* (H)                                                     */
    const float *attn_sub_norm; /* (nh·d), NULL without sub-norms                          */
    const float *ffn_sub_norm;  /* (I),    NULL without sub-norms                          */
    bl_tweight w[BL_P_COUNT];   /* q (nh·d, H), k, v (nkv·d, H), o (H, nh·d), gate, up (I, H),
                                   down (H, I)                                            */
} bl_layer;

typedef struct {
    int64_t n_layers, hidden, n_heads, n_kv_heads, head_dim, ffn, vocab;
    int64_t rot_dim;        /* rotated dims per head (<= head_dim, even)                      */
    int32_t rope_neox;      /* 1: dim i pairs with i + rot/2; 0: 2i with 2i+1 (docs/numerics.md#5-rope)   */
    int32_t act_relu2;      /* 1: relu(g)²·u; 0: silu(g)·u
                               (docs/numerics.md#7-ffn-activation-relu-squared-vs-silu)       */
    int32_t sub_norms;      /* attn_sub_norm / ffn_sub_norm present (docs/numerics.md#8-sub-norm-placement) */
    int32_t rounding;       /* BL_ROUND_HALF_EVEN / BL_ROUND_HALF_AWAY (bl_mad.h)             */
    int32_t kv_f16;         /* K/V cache in fp16; q and softmax rounded to fp16
                               (docs/numerics.md#6-attention)                                 */
    int32_t lm_f16;         /* round the final hidden state to fp16 before the lm_head        */
    int32_t lm_q8;          /* Q8_0 lm_head with llama.cpp's dot: the hidden state quantised to
                               Q8_0 (engine_float.h; reference layers.lm_head_q8_0)          */
    int32_t act_q8k;        /* llama.cpp numerics profile: every BitLinear input quantised to
                               Q8_K (bl_q8k.h) and every projection's epilogue BL_EPI_Q8K;
                               the .scale capture is then 0 (the scales are per block)       */
    float eps;              /* RMSNorm epsilon, as f32                                        */
    float kq_scale;         /* 1.0f / sqrtf(head_dim)                                         */
    bl_fmat embed;          /* token_embd (V, H)                                              */
    bl_fmat lm_head;        /* output (V, H); the same matrix as embed when tied              */
    const float *output_norm; /* (H)                                                          */
    const bl_layer *layers;   /* [n_layers]                                                   */
} bl_model;

/* KV cache of one sequence, and the RoPE tables for its positions. */
typedef struct {
    void *k;               /* (L, nkv, n_ctx, d) f32, or fp16 bits when kv_f16; K after RoPE */
    void *v;               /* same shape                                                     */
    int64_t n_ctx;         /* positions the cache holds                                      */
    const float *rope_cos; /* (n_ctx, rot/2): cos θ[p, i] (bitnet_lab/engine.py rope tables) */
    const float *rope_sin; /* (n_ctx, rot/2)                                                 */
} bl_kv;

/* ---- captures ------------------------------------------------------------------------------ */

/* Per-layer intermediates, named as the reference's captures (reference/model.py docstring).
 * The capture argument of bl_forward is NULL or an array of BL_CAP_LAYER_COUNT·L +
 * BL_CAP_GLOBAL_COUNT pointers, layer i's entry c at [i·BL_CAP_LAYER_COUNT + c], the global
 * ones after them; each non-NULL pointer is a (T, width) row-major array of the capture's dtype
 * (bl_capture_info). */
enum {
    BL_CAP_ATTN_NORM = 0, BL_CAP_ATTN_IN_Q, BL_CAP_ATTN_IN_SCALE, BL_CAP_ATTN_IN_SUM,
    BL_CAP_ATTN_Q_ACC, BL_CAP_ATTN_Q_OUT, BL_CAP_ATTN_K_ACC, BL_CAP_ATTN_K_OUT,
    BL_CAP_ATTN_V_ACC, BL_CAP_ATTN_V_OUT, BL_CAP_Q_ROPE, BL_CAP_K_ROPE, BL_CAP_ATTN_OUT,
    BL_CAP_ATTN_SUB_NORM, BL_CAP_O_IN_Q, BL_CAP_O_IN_SCALE, BL_CAP_O_IN_SUM, BL_CAP_O_ACC,
    BL_CAP_O_OUT, BL_CAP_ATTN_RESID, BL_CAP_FFN_NORM, BL_CAP_FFN_IN_Q, BL_CAP_FFN_IN_SCALE,
    BL_CAP_FFN_IN_SUM, BL_CAP_GATE_ACC, BL_CAP_GATE_OUT, BL_CAP_UP_ACC, BL_CAP_UP_OUT,
    BL_CAP_FFN_ACT, BL_CAP_FFN_SUB_NORM, BL_CAP_DOWN_IN_Q, BL_CAP_DOWN_IN_SCALE,
    BL_CAP_DOWN_IN_SUM, BL_CAP_DOWN_ACC, BL_CAP_DOWN_OUT, BL_CAP_FFN_RESID,
    BL_CAP_LAYER_COUNT
};
enum { BL_CAP_EMBD = 0, BL_CAP_OUTPUT_NORM, BL_CAP_GLOBAL_COUNT };

/* Capture dtypes. */
enum { BL_CAP_F32 = 0, BL_CAP_I8 = 1, BL_CAP_I32 = 2 };

/* Name, dtype and row width of capture `c` (layer == 1: per-layer id, 0: global id); the
 * name is NULL for an out-of-range id. Widths come from the model's dimensions. */
const char *bl_capture_info(const bl_model *m, int layer, int c, int *dtype, int64_t *width);

/* ---- entry points -------------------------------------------------------------------------- */

/* What went wrong in a call (code != 0), with a message naming the tensor and the numbers. */
typedef struct {
    int code;
    char msg[512];
} bl_error;

enum {
    BL_OK = 0,
    BL_E_KERNEL = 1, /* a kernel is missing at this ISA level                            */
    BL_E_DATA = 2,   /* invalid packed data found by a kernel (e.g. a bad TL index)       */
    BL_E_ARG = 3,    /* an argument the Python layer should have rejected                 */
    BL_E_NOMEM = 4
};

/* Rows of one internal chunk: longer inputs are processed CHUNK rows at a time (bounded
 * scratch); every row's arithmetic is independent of the chunking. */
#define BL_CHUNK 128

/* Rows of one call (a batch of decode steps, a short prompt) up to which the ternary products run
 * as GEMVs over cache-sized blocks of weight rows instead of the GEMM, at the levels where that is
 * faster (engine.c gemv_batch_max). Either way the integer sums are exact: the same results. */
#define BL_GEMV_BATCH_MAX 16

/* ---- workspace ---------------------------------------------------------------------------- */

/* Scratch memory of bl_forward, kept between calls so that a decode step allocates nothing:
 * the shared buffers, one private block per thread, and the inter-thread barrier. Grown (never
 * shrunk) when a call needs more rows, cache positions or threads. Not thread-safe: one call at
 * a time per workspace (bitnet_lab/engine.py holds a lock). */
typedef struct bl_ws bl_ws;
bl_ws *bl_ws_new(void);
void bl_ws_free(bl_ws *ws);
/* How long a thread waiting at a barrier spins (checking a shared counter) before it sleeps in
 * the kernel (futex on Linux; sched_yield elsewhere). 0: sleep at once.
 * Default BL_SPIN_NS_DEFAULT = 20 µs: on a shared machine, longer spins made decode steps slower
 * (a spinning thread takes the core its partner, or another process, needs;
 * docs/benchmarks.md#threads-and-barriers); on a quiet machine
 * a short spin catches the typical few-µs imbalance at a barrier without a futex wake-up. */
void bl_ws_set_spin_ns(bl_ws *ws, int64_t spin_ns);
#define BL_SPIN_NS_DEFAULT 20000

/* ---- per-op profile ------------------------------------------------------------------------- */

/* Classes of work timed by bl_forward when given a profile array `prof` (NULL: no timing):
 * prof[t * BL_PROF_STRIDE + c] += wall-clock ns thread t spent in class c (CLOCK_MONOTONIC),
 * prof[t * BL_PROF_STRIDE + BL_PROF_CPU + c] += its CPU ns there (CLOCK_THREAD_CPUTIME_ID: the
 * time it actually ran, blind to other processes taking the core — the figure to trust on a
 * shared machine). Both clocks are read at each phase boundary; the caller zeroes the array.
 * A thread's classes add up to the time it spent inside the parallel region. */
enum {
    BL_PROF_EMBED = 0, /* embedding row gather (+ f16 -> f32)                                 */
    BL_PROF_NORM,      /* RMSNorms: attn/ffn norm, sub-norms, output norm                     */
    BL_PROF_QUANT,     /* activation quantisation (int8, s_x, Σq)                             */
    BL_PROF_QKV,       /* q/k/v ternary products + epilogue                                   */
    BL_PROF_ATTN,      /* RoPE, K/V cache writes, attention                                   */
    BL_PROF_O,         /* attn_output ternary product + epilogue                              */
    BL_PROF_GATE_UP,   /* ffn gate/up ternary products + epilogue                             */
    BL_PROF_ACT,       /* gated activation relu(g)²·u / silu(g)·u                             */
    BL_PROF_DOWN,      /* ffn_down ternary product + epilogue                                 */
    BL_PROF_RESID,     /* residual adds                                                       */
    BL_PROF_LM_HEAD,   /* lm_head (hidden -> logits)                                          */
    BL_PROF_SYNC,      /* waiting at barriers (load imbalance + wake-up)                      */
    BL_PROF_OTHER,     /* captures, setup                                                     */
    BL_PROF_COUNT
};
#define BL_PROF_CPU 16    /* offset of the CPU-time columns in a row (>= BL_PROF_COUNT)     */
#define BL_PROF_STRIDE 32 /* doubles per thread row: wall columns, then CPU columns        */
/* Name of a profile class ("embed", "norm", ...); NULL out of range. */
const char *bl_prof_name(int c);

/* ---- entry points -------------------------------------------------------------------------- */

/* Run T tokens at positions pos0 .. pos0+T-1 through the model, appending their K/V to `kv`.
 * logits: (T - logits_row0, V) f32, the logits of rows logits_row0 .. T-1 (logits_row0 = T-1
 * for "last row only"; the lm_head is skipped for the others). caps: NULL or see above.
 * isa: bl_isa level; n_threads >= 1. ws: a workspace (NULL: allocate one for this call).
 * prof: NULL or (n_threads, BL_PROF_STRIDE) doubles, see above.
 * Returns BL_OK or an error code (err filled). */
int bl_forward(const bl_model *m, const bl_kv *kv, const int32_t *tokens, int64_t T, int64_t pos0,
               float *logits, int64_t logits_row0, void *const *caps, int isa, int n_threads,
               bl_ws *ws, double *prof, bl_error *err);

/* Several sequences in one pass: sequence i appends its seq_len[i] tokens (1 for a decode step,
 * more for a prefill chunk) at positions seq_pos0[i] .. to its own cache kvs[i] (distinct caches).
 * tokens: the sequences' tokens one after the other (T = Σ seq_len rows). Every row goes through
 * the projections together (the N > 1 GEMM path: prefill rows equal decode rows bit for bit),
 * RoPE at the row's own position, attention against its own sequence's cache only. logits:
 * (Σ want, V) f32, the rows with want[t] != 0 in row order (want NULL: every row; the lm_head is
 * skipped for the others). No captures. Returns BL_OK or an error code (err names the sequence). */
int bl_forward_batch(const bl_model *m, const bl_kv *kvs, int64_t n_seq, const int64_t *seq_len,
                     const int64_t *seq_pos0, const int32_t *tokens, float *logits, const uint8_t *want,
                     int isa, int n_threads, bl_ws *ws, double *prof, bl_error *err);

/* One BitLinear on N float rows: quantise each row of x (N, K) (rounding), exact ternary
 * product, epilogue (acc / s_x) · gamma (· out_scale). y (N, M) f32; acc (N, M) int32 or NULL.
 * The same code path as bl_forward's projections. */
int bl_bitlinear(const bl_tweight *w, const float *x, int64_t N, float *y, int32_t *acc, int rounding,
                 int isa, int n_threads, bl_error *err);

/* Ask the kernel to map [p, p + n) with transparent huge pages (madvise MADV_HUGEPAGE; Linux only,
 * a hint: 0 or -1, never fatal). Streaming weights through 4 KiB pages is slower than through
 * 2 MiB ones (a TLB miss and a prefetcher stop every 4 KiB;
 * docs/benchmarks.md#decode-memory-layout-and-streaming).
 * A file mapping gets 2 MiB pages when the page cache holds 2 MiB folios; pages read in through
 * an advised mapping are cached that way. */
int bl_advise_hugepages(const void *p, size_t n);

/* Load-time validation of 2-bit codes (I2_S, TQ2_0 qs): bytes holding the invalid code 3 among
 * the first `width` bytes of every `stride`-byte group of data; *first_bad = index of the first
 * such byte or -1. One pass at memory speed. */
int64_t bl_scan_code3(const uint8_t *data, int64_t n_bytes, int64_t stride, int64_t width, int64_t *first_bad);

/* Test hooks for the float side (the same functions bl_forward uses). */
void bl_rms_norm_rows(const float *x, const float *w, float *y, int64_t N, int64_t n, float eps, int isa);
/* Canonical f32 dot of a and b (n floats) at ISA level isa (NaN when the level is missing). */
float bl_dot_f32_at(const float *a, const float *b, int64_t n, int isa);
/* The attention softmax of s[0..n) in place / the SiLU-gated activation, at ISA level isa (-1 when
 * the level is missing). */
int bl_silu_at(const float *g, const float *u, float *f, int64_t n, int isa);
int bl_softmax_at(float *s, int64_t n, int f16, int isa);
/* Test hooks: the attention dots of R query heads of one kv group (engine_float.h) over n rows
 * of K / V (d values each, f32 or fp16 bits); use_last: the last row passed as the decode's
 * private `last` row instead of from the cache. scores / p: (R, n). -1 if `isa` is unavailable. */
int bl_qk_at(const float *q, int64_t R, const void *K, int64_t n, int use_last, int64_t d, int f16, float kq_scale,
             float *scores, int isa);
int bl_pv_at(const float *p, int64_t R, const void *V, int64_t n, int use_last, int64_t d, int f16, float *out,
             int isa);
void bl_f32_to_f16_array(const float *x, uint16_t *y, int64_t n);

#ifdef __cplusplus
}
#endif

#endif /* BL_ENGINE_H */
