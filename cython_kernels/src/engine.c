/* engine.c — bitnet_lab's native forward pass, readable top to bottom.
 *
 *   1. threads        one OpenMP parallel region per call; a spin-then-sleep barrier; timers
 *   2. captures       names / dtypes / widths of the per-layer intermediates
 *   3. float ops      RMSNorm, RoPE, gated activations (element-wise: one row per thread)
 *   4. BitLinear      activation quantisation, the ternary products (dispatch table), epilogue
 *   5. attention      causal GQA over the KV cache, float64 dots (canonical order)
 *   6. lm_head        canonical f32 dots over the F16 / F32 matrix; Q8_0 with llama.cpp's dot
 *   7. workspace      scratch kept between calls (a decode step allocates nothing)
 *   8. forward        the layer loop (docs/numerics.md#10-layer-graphs)
 *   9. bitlinear      one projection alone (the BitLinear tier of verify)
 *
 * Numerics follow bitnet_lab/reference/layers.py (the judge) rule by rule for the integer side
 * and every element-wise float op; the float reductions use the canonical orders of
 * engine_float.h (float64 where the result feeds an activation quantisation, float32 for the
 * lm_head). Compiled with -ffp-contract=off (setup.py): no product is ever fused into an add
 * unless an intrinsic says so, and those are exact (engine_float.h).
 *
 * Thread independence: every float reduction (a norm, a dot product, a softmax) is computed
 * by ONE thread in a fixed order; threads only split independent rows / heads / outputs, and
 * the integer products are exact. So the results do not depend on the number of threads.
 */
#if defined(__linux__) && !defined(_GNU_SOURCE)
#define _GNU_SOURCE /* syscall() for the futex */
#endif
#include "engine.h"
#include "bl_q6k.h"

#include <math.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if defined(__linux__)
#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "bl_kernels.h"
#include "bl_lut.h"
#include "bl_mad.h"
#include "bl_q8k.h"

#ifdef _OPENMP
#include <omp.h>
#endif

/* ======================================================================================== */
/* 1. threads                                                                                */
/* ======================================================================================== */

#ifdef _OPENMP
static inline int bl_tid(void) { return omp_get_thread_num(); }
static inline int bl_nth(void) { return omp_get_num_threads(); }
#else
static inline int bl_tid(void) { return 0; }
static inline int bl_nth(void) { return 1; }
#endif

static inline double bl_now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

static inline void bl_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* The barrier between the stages of a call. OpenMP's own barrier either spins without bound
 * (OMP_WAIT_POLICY=ACTIVE: terrible when the machine is shared and a waiting thread burns the
 * core its partner needs) or sleeps at once (PASSIVE, which bitnet_lab.kernels sets: every
 * barrier then costs a futex wake-up, and a decode step has 5 per layer). This one spins for at
 * most spin_ns, then sleeps (futex on Linux, sched_yield elsewhere), so a quiet machine gets
 * barriers without a wake-up and a loaded one loses at most spin_ns of CPU per wait
 * (docs/benchmarks.md#threads-and-barriers).
 * Generation counting: a thread reads `gen`, arrives; the last arrival resets the count and
 * bumps `gen` (release), which lets the others through (acquire). */
/* Threads that share out a phase's rows dynamically (work_claim below): one run per thread, on
 * its own cache line. */
#define BL_STEAL_MAX 64
typedef struct {
    _Alignas(64) _Atomic uint64_t run;
} bl_run_slot;

typedef struct {
    _Alignas(64) atomic_int arrived;
    _Alignas(64) atomic_int gen;
    atomic_int sleepers;
    int64_t spin_ns;
    bl_run_slot runs[BL_STEAL_MAX];
} bl_barrier;

static void bl_barrier_init(bl_barrier *b, int64_t spin_ns) {
    atomic_init(&b->arrived, 0);
    atomic_init(&b->gen, 0);
    atomic_init(&b->sleepers, 0);
    for (int i = 0; i < BL_STEAL_MAX; ++i) atomic_init(&b->runs[i].run, 0); /* phase 0, empty */
    b->spin_ns = spin_ns;
}

#if defined(__linux__)
static void bl_futex_wait(atomic_int *addr, int val) {
    syscall(SYS_futex, (int *)addr, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}
static void bl_futex_wake_all(atomic_int *addr) { syscall(SYS_futex, (int *)addr, FUTEX_WAKE_PRIVATE, 0x7fffffff, NULL, NULL, 0); }
#endif

static void bl_barrier_wait(bl_barrier *b, int nt) {
    if (nt <= 1) return;
    const int g = atomic_load_explicit(&b->gen, memory_order_acquire);
    if (atomic_fetch_add_explicit(&b->arrived, 1, memory_order_acq_rel) == nt - 1) {
        atomic_store_explicit(&b->arrived, 0, memory_order_relaxed);
        atomic_fetch_add(&b->gen, 1); /* seq_cst: ordered before the sleepers check (Dekker) */
#if defined(__linux__)
        if (atomic_load(&b->sleepers)) bl_futex_wake_all(&b->gen);
#endif
        return;
    }
    const double t0 = b->spin_ns > 0 ? bl_now_ns() : 0.0;
    for (unsigned it = 1; atomic_load_explicit(&b->gen, memory_order_acquire) == g; ++it) {
        bl_cpu_relax();
        if ((it & 63) == 0 && (b->spin_ns <= 0 || bl_now_ns() - t0 > (double)b->spin_ns)) break;
    }
    if (atomic_load_explicit(&b->gen, memory_order_acquire) != g) return;
#if defined(__linux__)
    atomic_fetch_add(&b->sleepers, 1); /* seq_cst, then re-check gen inside the futex call */
    while (atomic_load(&b->gen) == g) bl_futex_wait(&b->gen, g);
    atomic_fetch_sub(&b->sleepers, 1);
#else
    while (atomic_load_explicit(&b->gen, memory_order_acquire) == g) sched_yield();
#endif
}

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

static const char *const prof_names[BL_PROF_COUNT] = {
    "embed", "norm", "quant", "qkv", "attention", "attn_output", "gate_up", "activation", "down",
    "residual", "lm_head", "sync", "other",
};

const char *bl_prof_name(int c) { return (c >= 0 && c < BL_PROF_COUNT) ? prof_names[c] : NULL; }

/* One thread's view of a call: who it is, its barrier, its profile row. */
typedef struct {
    int tid, nt;
    bl_barrier *bar;
    double *prof;   /* this thread's row of BL_PROF_STRIDE doubles, or NULL     */
    double t_last;  /* wall time of the last phase boundary (profiling only)    */
    double c_last;  /* thread CPU time of the last phase boundary               */
    uint32_t phase; /* dynamic phases begun in this call (work_begin)          */
} bl_thread;

static inline double bl_cpu_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

static void prof_start(bl_thread *th, double *row) {
    th->prof = row;
    if (row) {
        th->t_last = bl_now_ns();
        th->c_last = bl_cpu_ns();
    }
}

/* Attribute the time since the last boundary to class `cls`. */
static inline void prof_mark(bl_thread *th, int cls) {
    if (!th->prof) return;
    const double t = bl_now_ns(), c = bl_cpu_ns();
    th->prof[cls] += t - th->t_last;
    th->prof[BL_PROF_CPU + cls] += c - th->c_last;
    th->t_last = t;
    th->c_last = c;
}

/* End of a stage: book its time to `cls`, wait for every thread, book the wait to SYNC. */
static inline void bl_sync(bl_thread *th, int cls) {
    prof_mark(th, cls);
    bl_barrier_wait(th->bar, th->nt);
    prof_mark(th, BL_PROF_SYNC);
}

/* ---- dynamic shares: work stealing over a phase's units ----------------------------------------
 * A decode step streams every weight once, and two cores of a shared machine rarely stream at the
 * same rate: with fixed shares the faster one waits at the barrier
 * (docs/benchmarks.md#dynamic-decode-shares-2026-12-07). In a dynamic phase each thread owns its
 * bl_split share of the units as a run
 * [front, back), takes work from its front — half of what is left, at least `grain` units, so a
 * streaming kernel gets few long calls — and when its own run is empty takes `grain` units from
 * the back of another thread's run. A run is one 64-bit word (phase, front, back) changed only by
 * compare-and-swap, so no unit is taken twice; the phase tag (every thread begins the same phases
 * in the same order) keeps a thread from taking units of a run not yet set for this phase. Which
 * thread computes a row never changes a result: rows are independent, each computed whole. */
#define BL_RUN_UNIT_MAX ((int64_t)1 << 24)

static inline uint64_t run_pack(uint32_t phase, int64_t front, int64_t back) {
    return ((uint64_t)(phase & 0xFFFF) << 48) | ((uint64_t)front << 24) | (uint64_t)back;
}

/* Can this call share n units dynamically? (else: the fixed bl_split shares) */
static inline int work_dynamic(const bl_thread *th, int64_t n) {
    return th->nt > 1 && th->nt <= BL_STEAL_MAX && n < BL_RUN_UNIT_MAX;
}

/* Begin a dynamic phase over n units: publish this thread's run. */
static void work_begin(bl_thread *th, int64_t n) {
    int64_t lo, hi;
    bl_split(n, th->tid, th->nt, &lo, &hi);
    ++th->phase;
    atomic_store_explicit(&th->bar->runs[th->tid].run, run_pack(th->phase, lo, hi), memory_order_release);
}

/* Take units from run `v` (the front of one's own, the back of another's): [*a, *b). 0 if empty
 * or not yet set for this phase. */
static int work_take(bl_thread *th, int v, int64_t grain, int64_t *a, int64_t *b) {
    _Atomic uint64_t *run = &th->bar->runs[v].run;
    uint64_t old = atomic_load_explicit(run, memory_order_acquire);
    for (;;) {
        const uint32_t ph = (uint32_t)(old >> 48);
        const int64_t front = (int64_t)((old >> 24) & 0xFFFFFF), back = (int64_t)(old & 0xFFFFFF);
        if (ph != (th->phase & 0xFFFF) || front >= back) return 0;
        const int64_t rest = back - front;
        int64_t take = v == th->tid ? rest / 2 : grain;
        take = take < grain ? grain : take;
        take = take > rest ? rest : take;
        const uint64_t next = v == th->tid ? run_pack(th->phase, front + take, back) : run_pack(th->phase, front, back - take);
        if (atomic_compare_exchange_weak_explicit(run, &old, next, memory_order_acq_rel, memory_order_acquire)) {
            *a = v == th->tid ? front : back - take;
            *b = *a + take;
            return 1;
        }
    }
}

/* The next units of a dynamic phase for this thread: its own first, then the others'. */
static int work_claim(bl_thread *th, int64_t grain, int64_t *a, int64_t *b) {
    if (work_take(th, th->tid, grain, a, b)) return 1;
    for (int k = 1; k < th->nt; ++k)
        if (work_take(th, (th->tid + k) % th->nt, grain, a, b)) return 1;
    return 0;
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

/* ggml RMSNorm of one row (docs/numerics.md#41-ggml; reference layers.rms_norm): squares formed in f32,
 * summed in float64 (canonical 16-lane order, engine_float.h), mean = fl32(sum / n) (one float64
 * division), scale = 1.0f / sqrtf(mean + eps), then (x · scale) · w as two f32 multiplies. */
static void rms_norm_row(const bl_float_kernels *fk, const float *x, const float *w, float *y, int64_t n, float eps) {
    const double ss = fk->sumsq(x, n);
    const float mean = (float)(ss / (double)n);
    const float scale = 1.0f / sqrtf(mean + eps);
    for (int64_t i = 0; i < n; ++i) {
        const float xs = x[i] * scale;
        y[i] = xs * w[i];
    }
}

void bl_rms_norm_rows(const float *x, const float *w, float *y, int64_t N, int64_t n, float eps, int isa) {
    const bl_float_kernels *fk = bl_float_table(isa);
    if (!fk) fk = &bl_float_scalar;
    for (int64_t r = 0; r < N; ++r) rms_norm_row(fk, x + r * n, w, y + r * n, n, eps);
}

float bl_dot_f32_at(const float *a, const float *b, int64_t n, int isa) {
    const bl_float_kernels *fk = bl_float_table(isa);
    return fk ? fk->dot_f32(a, b, n) : NAN;
}

/* Bytes of 2-bit codes holding the invalid code 3 (both bits of a pair set): the first `width`
 * bytes of every `stride`-byte group of data[0 .. n_bytes). A first pass ORs 8-byte words (one
 * pass at memory speed, nothing allocated); only when it finds something does a second pass
 * count the bad bytes exactly and locate the first. */
int bl_advise_hugepages(const void *p, size_t n) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    const uintptr_t page = 4096, a = (uintptr_t)p & ~(page - 1), b = ((uintptr_t)p + n + page - 1) & ~(page - 1);
    return madvise((void *)a, b - a, MADV_HUGEPAGE);
#else
    (void)p;
    (void)n;
    return -1;
#endif
}

int64_t bl_scan_code3(const uint8_t *data, int64_t n_bytes, int64_t stride, int64_t width, int64_t *first_bad) {
    const uint64_t m55 = 0x5555555555555555ull;
    uint64_t any = 0;
    for (int64_t g = 0; g + stride <= n_bytes; g += stride) {
        const uint8_t *p = data + g;
        int64_t i = 0;
        for (; i + 8 <= width; i += 8) {
            uint64_t w;
            memcpy(&w, p + i, 8);
            any |= w & (w >> 1) & m55;
        }
        for (; i < width; ++i) any |= (uint64_t)(p[i] & (p[i] >> 1) & 0x55);
    }
    *first_bad = -1;
    if (!any) return 0;
    int64_t n_bad = 0;
    for (int64_t g = 0; g + stride <= n_bytes; g += stride)
        for (int64_t i = 0; i < width; ++i)
            if (data[g + i] & (data[g + i] >> 1) & 0x55) {
                if (*first_bad < 0) *first_bad = g + i;
                ++n_bad;
            }
    return n_bad;
}

int bl_silu_at(const float *g, const float *u, float *f, int64_t n, int isa) {
    const bl_float_kernels *fk = bl_float_table(isa);
    if (!fk) return -1;
    fk->silu(g, u, f, n);
    return 0;
}

int bl_softmax_at(float *s, int64_t n, int f16, int isa) {
    const bl_float_kernels *fk = bl_float_table(isa);
    if (!fk) return -1;
    fk->softmax(s, n, f16);
    return 0;
}

int bl_qk_at(const float *q, int64_t R, const void *K, int64_t n, int use_last, int64_t d, int f16, float kq_scale,
             float *scores, int isa) {
    const bl_float_kernels *fk = bl_float_table(isa);
    if (!fk) return -1;
    const void *last = use_last ? (const char *)K + (n - 1) * d * (f16 ? 2 : 4) : NULL;
    fk->qk(q, R, K, use_last ? n - 1 : n, last, d, f16, kq_scale, scores, n);
    return 0;
}

int bl_pv_at(const float *p, int64_t R, const void *V, int64_t n, int use_last, int64_t d, int f16, float *out,
             int isa) {
    const bl_float_kernels *fk = bl_float_table(isa);
    if (!fk) return -1;
    const void *last = use_last ? (const char *)V + (n - 1) * d * (f16 ? 2 : 4) : NULL;
    fk->pv(p, n, R, V, use_last ? n - 1 : n, last, d, f16, out);
    return 0;
}

void bl_f32_to_f16_array(const float *x, uint16_t *y, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] = bl_f32_to_f16(x[i]);
}

/* RoPE of the first `rot` dims of each of n_heads heads of one row
 * (docs/numerics.md#53-ggml-angle-computation; reference layers.apply_rope): x0' = fl(x0·c) − fl(x1·s), x1' =
 * fl(x0·s) + fl(x1·c) in f32. NEOX pairs dim i with i + rot/2; NORM pairs 2i with 2i+1. cs / sn: this
 * position's table rows. */
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

/* Gated FFN activation, element-wise (docs/numerics.md#7-ffn-activation-relu-squared-vs-silu; reference
 * layers.gated_activation). relu2: r = g > 0 ? g : 0 (ggml_relu), (r·r)·u in f32.
 * silu:  fl32(g / (1 + exp(−g))) evaluated in float64 (≈ correctly rounded), then ·u in f32; the
 *        float64 exp is bl_exp64 (engine_float.h), vectorised per ISA with the same operations. */
static void gated_act(const bl_float_kernels *fk, const float *g, const float *u, float *f, int64_t n, int relu2) {
    if (relu2) {
        /* branchless (the sign of g is random: a branch mispredicts half the time) so the
         * compiler vectorises it: r = g where g > 0, else +0 (also for -0 and NaN, as ggml) */
        for (int64_t i = 0; i < n; ++i) {
            uint32_t bits;
            memcpy(&bits, &g[i], 4);
            bits &= g[i] > 0.0f ? 0xffffffffu : 0u;
            float r;
            memcpy(&r, &bits, 4);
            const float r2 = r * r;
            f[i] = r2 * u[i];
        }
    } else {
        fk->silu(g, u, f, n);
    }
}

/* One embedding row to f32 (F16 -> f32 and Q8_0's q·d are exact; a Q6_K row is dequantised as
 * ggml's dequantize_row_q6_K, fl32(fl32(d·scale)·(u − 32)), only the looked-up rows ever). */
static void embed_row(const bl_fmat *e, int64_t id, float *out) {
    const uint8_t *row = e->data + id * e->row_bytes;
    if (e->type == BL_FT_F32) {
        memcpy(out, row, (size_t)(4 * e->cols));
    } else if (e->type == BL_FT_F16) {
        const uint16_t *r = (const uint16_t *)row;
        for (int64_t i = 0; i < e->cols; ++i) out[i] = bl_f16_to_f32(r[i]);
    } else if (e->type == BL_FT_Q6_K) {
        bl_q6k_dequant_row(row, e->cols, out);
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

/* The quantised input of one or more projections (docs/numerics.md#26-where-the-quantisation-happens: q/k/v
 * share one, gate/up share one). Row n of q starts at q + n·stride; columns K .. stride-1 are zero. */
typedef struct {
    int8_t *q;      /* (N, stride)                                                 */
    float *s;       /* (N) activation scales s_x (0 with Q8_K activations)          */
    int32_t *sum;   /* (N) Σ q                                                     */
    int64_t K, stride, N;
    int64_t gemv_max; /* up to this many rows: row-blocked GEMVs instead of the GEMM (gemv_batch_max) */
    int q8k;        /* Q8_K activations (llama.cpp profile): d8 holds the scales    */
    int32_t *bsum;  /* (N, stride/256) Σ q of each 256-block, or NULL: no block work */
    float *d8;      /* (N, stride/256) Q8_K block scales (q8k)                      */
    int32_t *blk;   /* this thread's per-block partial sums: (N, BL_BLOCK_ROWS, stride/256) */
} bl_act;

/* Quantise rows [lo, hi) of x (N, K) into a (docs/numerics.md#21-bitnetcpp-i2_s-path, bl_mad.h
 * quantize_act). */
static void quantize_rows(const bl_mad_kernels *mad, const float *x, bl_act *a, int64_t lo, int64_t hi,
                          int rounding) {
    if (hi <= lo) return;
    const int64_t nbs = a->stride / BL_TQ_BLOCK;
    if (a->q8k) {
        /* llama.cpp profile: Q8_K per 256-block (K % 256 == 0, so stride == K). A row with a NaN or
         * inf gets q = 0 and NaN block scales: its outputs are NaN, as in the bitnet profile. */
        for (int64_t n = lo; n < hi; ++n) {
            const float *xr = x + n * a->K;
            int finite = 1;
            for (int64_t k = 0; k < a->K; ++k) finite &= isfinite(xr[k]) != 0;
            if (finite) {
                bl_quantize_row_q8_k(xr, a->K, a->d8 + n * nbs, a->q + n * a->stride);
            } else {
                memset(a->q + n * a->stride, 0, (size_t)a->K);
                for (int64_t b = 0; b < a->K / BL_TQ_BLOCK; ++b) a->d8[n * nbs + b] = NAN;
            }
            a->s[n] = 0.0f;
            a->sum[n] = bl_sum_i8(a->q + n * a->stride, a->K);
        }
    } else if (a->stride == a->K) {
        mad->quantize_act(x, a->q, a->s, a->sum, a->K, lo, hi, rounding);
    } else {
        for (int64_t n = lo; n < hi; ++n) {
            mad->quantize_act(x + n * a->K, a->q + n * a->stride, a->s + n, a->sum + n, a->K, 0, 1, rounding);
            memset(a->q + n * a->stride + a->K, 0, (size_t)(a->stride - a->K));
        }
    }
    /* A non-finite row gets q = 0, s_x = 0 from the kernel: its outputs become 0/0 = NaN and the
     * NaN propagates to the logits, as in the reference. Nothing to report here. */
    if (a->bsum)
        for (int64_t n = lo; n < hi; ++n) bl_block_sums_i8(a->q + n * a->stride, a->K, a->bsum + n * nbs);
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
 * (32 keeps the 4- and 8-row kernels and the x4 / x16 groups aligned, and the tiles' outputs on
 * separate cache lines). */
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

/* Bytes of weights per block of the small-batch GEMVs (mad_rows): a block is read from memory once,
 * then from the core's L2 for the other rows of the batch. */
#define BL_GEMV_BLOCK_BYTES 65536

/* Rows of a call up to which the projections run as row-blocked GEMVs rather than the GEMM, at ISA
 * level isa: on AVX2 the GEMV of a small batch from cache beats the GEMM (which decodes the codes
 * into a buffer first; docs/benchmarks.md#batched-generation); elsewhere the GEMM from 2 rows. */
static int64_t gemv_batch_max(int isa) { return isa == BL_ISA_AVX2 ? BL_GEMV_BATCH_MAX : 1; }

static inline int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

/* Exact Σ t·q of rows [r0, r1) of a MAD-layout job for all N input rows, into j->acc (N, M). */
static void mad_rows(const bl_mad_kernels *mad, const bl_job *j, const bl_act *a, int64_t r0, int64_t r1) {
    const bl_tweight *w = j->w;
    const int64_t M = w->M, N = a->N;
    bl_gemv_fn gemv = w->layout == BL_W_I2S       ? mad->i2s_gemv
                      : w->layout == BL_W_I2S_X4  ? mad->i2s_x4_gemv
                      : w->layout == BL_W_TQ2_0   ? mad->tq2_gemv
                      : w->layout == BL_W_TQ1_X16 ? mad->tq1_x16_gemv
                                                  : mad->tq1_gemv;
    bl_gemm_fn gemm = w->layout == BL_W_I2S       ? mad->i2s_gemm
                      : w->layout == BL_W_I2S_X4  ? mad->i2s_x4_gemm
                      : w->layout == BL_W_TQ2_0   ? mad->tq2_gemm
                      : w->layout == BL_W_TQ1_X16 ? mad->tq1_x16_gemm
                                                  : mad->tq1_gemm;
    if (N > a->gemv_max && a->stride == w->K_pad) {
        /* prefill: activation-parallel GEMM, each weight row decoded once for N tokens
         * (docs/kernels.md#26-activation-parallel-vs-weight-parallel) */
        gemm(w->data, a->q, a->sum, j->acc, N, w->K_pad, M, r0, r1);
    } else if (N == 1) {
        gemv(w->data, a->q, a->sum[0], j->acc, w->K_pad, r0, r1);
    } else {
        /* a small batch: the GEMV of every row over a block of weight rows small enough to stay
         * in the core's cache, so the block comes from memory once for all N rows (the integer
         * sums are exact: the same results as the GEMM) */
        const int64_t rows = 32 * max64(1, BL_GEMV_BLOCK_BYTES / (32 * max64(1, w->K_pad / 4)));
        for (int64_t b0 = r0; b0 < r1; b0 += rows) {
            const int64_t b1 = b0 + rows < r1 ? b0 + rows : r1;
            for (int64_t n = 0; n < N; ++n)
                gemv(w->data, a->q + n * a->stride, a->sum[n], j->acc + n * M, w->K_pad, b0, b1);
        }
    }
}

/* Rows per call of the per-block kernels: their partial sums (N × this × K/256 int32) go to the
 * thread's scratch a->blk, then straight into the block epilogue. */
#define BL_BLOCK_ROWS 32

/* Does job w go through the per-block kernels (block_rows) rather than mad_rows / tl_rows? */
static int uses_blocks(const bl_tweight *w) {
    return w->epilogue == BL_EPI_Q8K || (w->epilogue == BL_EPI_BLOCKS && w->block_d);
}

/* Rows [r0, r1) of a per-block job: the per-block exact products, then its epilogue
 * (docs/numerics.md#35-block-scaled-tq-epilogue, docs/numerics.md#36-llamacpp-tq-dot-with-q8_k-activations);
 * j->acc gets each row's whole sum Σ_b acc_b (the acc capture), y the outputs. */
static void block_rows(const bl_mad_kernels *mad, const bl_job *j, const bl_act *a, int64_t r0, int64_t r1) {
    const bl_tweight *w = j->w;
    const int64_t M = w->M, N = a->N, K = w->K, nb = K / BL_TQ_BLOCK, nbs = a->stride / BL_TQ_BLOCK;
    const bl_bgemv_fn gemv = w->layout == BL_W_I2S ? mad->i2s_bgemv : w->layout == BL_W_TQ2_0 ? mad->tq2_bgemv : mad->tq1_bgemv;
    const bl_bgemm_fn gemm = w->layout == BL_W_I2S ? mad->i2s_bgemm : w->layout == BL_W_TQ2_0 ? mad->tq2_bgemm : mad->tq1_bgemm;
    const double gamma64 = (double)w->gamma;
    for (int64_t rs = r0; rs < r1; rs += BL_BLOCK_ROWS) {
        const int64_t re = rs + BL_BLOCK_ROWS < r1 ? rs + BL_BLOCK_ROWS : r1, nr = re - rs, ld = nr * nb;
        if (N > 1 && a->stride == w->K_pad)
            gemm(w->data, a->q, a->bsum, a->blk, N, K, ld, rs, re);
        else
            for (int64_t n = 0; n < N; ++n) gemv(w->data, a->q + n * a->stride, a->bsum + n * nbs, a->blk + n * ld, K, rs, re);
        for (int64_t n = 0; n < N; ++n) {
            float *restrict y = j->y + n * j->ldy;
            for (int64_t r = rs; r < re; ++r) {
                const int32_t *pb = a->blk + n * ld + (r - rs) * nb;
                const float *d = w->block_d ? w->block_d + r * nb : NULL;
                int32_t tot = 0;
                float v;
                if (w->epilogue == BL_EPI_Q8K) {
                    /* ggml_vec_dot_tq2_0_q8_K_generic: per block d = y.d · x.d in f32, then
                     * sumf += (float)sumi · d, blocks in order, f32 (no FMA: -ffp-contract=off) */
                    const float *d8 = a->d8 + n * nbs;
                    float sumf = 0.0f;
                    for (int64_t b = 0; b < nb; ++b) {
                        const float db = d8[b] * (d ? d[b] : w->gamma);
                        sumf += (float)pb[b] * db;
                        tot += pb[b];
                    }
                    v = sumf;
                } else {
                    /* exact products in float64, summed in block order, one rounding to f32 */
                    double s64 = 0.0;
                    for (int64_t b = 0; b < nb; ++b) {
                        s64 += (double)pb[b] * (d ? (double)d[b] : gamma64);
                        tot += pb[b];
                    }
                    v = (float)s64 / a->s[n];
                }
                y[r] = w->has_out_scale ? v * w->out_scale : v;
                j->acc[n * M + r] = tot;
            }
        }
    }
}

/* A TL kernel's invalid-index report as the job's error. */
static void tl_report(const bl_job *j, bl_lut_status st, int64_t r0, int64_t r1, bl_error *err) {
    if (!st.n_bad) return;
    char msg[256];
    snprintf(msg, sizeof msg, "%s: %s data holds %lld invalid LUT index(es) in rows %lld..%lld; first at byte %lld",
             j->name, j->w->layout == BL_W_TL1 ? "TL1" : "TL2", (long long)st.n_bad, (long long)r0, (long long)r1 - 1,
             (long long)st.first_bad_byte);
    bl_fail(err, BL_E_DATA, msg);
}

/* Exact Σ t·q of rows [r0, r1) of a TL job for input row n through its LUT, into j->acc row n. */
static void tl_rows(const bl_isa_kernels *tab, const bl_job *j, const uint8_t *lut, int64_t n, int64_t r0, int64_t r1,
                    bl_error *err) {
    const bl_tweight *w = j->w;
    int32_t *out = j->acc + n * w->M;
    bl_lut_status st = w->layout == BL_W_TL1
                           ? tab->tl1_gemv(w->data, lut, w->M, w->K, w->BM, w->BK, w->bm, r0, r1, out)
                           : tab->tl2_gemv(w->data, lut, w->M, w->K, w->BM, w->BK, r0, r1, out);
    tl_report(j, st, r0, r1, err);
}

/* Rows [r0, r1) of a TL job for all N input rows at once by the level's TL GEMM (prefill, a batch,
 * a verification pass: the weights are read once, not once per row), when the level has one and
 * the input fits it (N > gemv_max, rows of stride K, K % 64 == 0). 0: not run (tl_rows then). */
static int tl_gemm_rows(const bl_isa_kernels *tab, const bl_job *j, const bl_act *a, int64_t r0, int64_t r1,
                        bl_error *err) {
    const bl_tweight *w = j->w;
    if (a->N <= a->gemv_max || a->stride != w->K || w->K % 64) return 0;
    bl_lut_status st;
    if (w->layout == BL_W_TL1 && tab->tl1_gemm)
        st = tab->tl1_gemm(w->data, a->q, a->sum, a->N, w->M, w->K, w->BM, w->BK, w->bm, r0, r1, w->M, j->acc);
    else if (w->layout == BL_W_TL2 && tab->tl2_gemm)
        st = tab->tl2_gemm(w->data, a->q, a->sum, a->N, w->M, w->K, w->BM, w->BK, r0, r1, w->M, j->acc);
    else
        return 0;
    tl_report(j, st, r0, r1, err);
    return 1;
}

/* BitLinear epilogue of rows [r0, r1) (docs/numerics.md#32-bitnetcpp-i2_s-epilogue-and-its-order; reference
 * layers.epilogue): y = fl(fl(acc) / s_x) · γ, left to right, then · out_scale (old `bitnet` arch). */
static void epilogue_rows(const bl_job *j, const bl_act *a, int64_t r0, int64_t r1) {
    const bl_tweight *w = j->w;
    /* the scales in locals and restrict rows: y cannot alias them, so the loops vectorise (the
     * division stays a division, lane by lane: the same IEEE results as one at a time) */
    const float gamma = w->gamma, out_scale = w->out_scale;
    if (w->epilogue == BL_EPI_BLOCKS) {
        /* a per-tensor projection of a block-scaled model (the reference's epilogue_blocks with
         * d_b = γ): Σ_b acc_b·γ in float64 is acc·γ exactly (≤ 22 + 11 significant bits), rounded
         * once to f32, then divided by s_x */
        const double g64 = (double)gamma;
        for (int64_t n = 0; n < a->N; ++n) {
            const int32_t *restrict acc = j->acc + n * w->M;
            float *restrict y = j->y + n * j->ldy;
            const float s = a->s[n];
            for (int64_t r = r0; r < r1; ++r) {
                const float v = (float)((double)acc[r] * g64) / s;
                y[r] = w->has_out_scale ? v * out_scale : v;
            }
        }
        return;
    }
    for (int64_t n = 0; n < a->N; ++n) {
        const int32_t *restrict acc = j->acc + n * w->M;
        float *restrict y = j->y + n * j->ldy;
        const float s = a->s[n];
        if (w->has_out_scale)
            for (int64_t r = r0; r < r1; ++r) y[r] = ((float)acc[r] / s) * gamma * out_scale;
        else
            for (int64_t r = r0; r < r1; ++r) y[r] = ((float)acc[r] / s) * gamma;
    }
}

/* Captures of rows [r0, r1) of job j (the acc and out copies of every input row). */
static void capture_rows(const bl_job *j, const bl_act *a, int64_t row0, int64_t r0, int64_t r1) {
    const int64_t M = j->w->M;
    for (int64_t n = 0; n < a->N; ++n) {
        if (j->cap_acc)
            memcpy((int32_t *)j->cap_acc + (row0 + n) * M + r0, j->acc + n * M + r0, (size_t)(r1 - r0) * 4);
        if (j->cap_out)
            memcpy((float *)j->cap_out + (row0 + n) * M + r0, j->y + n * j->ldy + r0, (size_t)(r1 - r0) * 4);
    }
}

/* Tiles [t0, t1) of a group's concatenated jobs as each job's rows [r0[j], r1[j]) (empty: 0, 0). */
static void tiles_to_rows(const bl_job *jobs, int njobs, int64_t t0, int64_t t1, int64_t *r0, int64_t *r1) {
    int64_t first = 0;
    for (int j = 0; j < njobs; ++j) {
        const int64_t g = tile_rows(jobs[j].w), M = jobs[j].w->M, tiles = (M + g - 1) / g;
        const int64_t u0 = t0 > first ? t0 - first : 0, u1 = t1 - first < tiles ? t1 - first : tiles;
        r0[j] = u0 < u1 ? u0 * g : 0;
        r1[j] = u0 < u1 ? (u1 * g < M ? u1 * g : M) : 0;
        first += tiles;
    }
}

/* Tiles of a dynamic decode group taken at a time from another thread (and the least taken from
 * one's own run): 4 tiles (128 rows of a MAD job), long enough that a GEMV call's set-up stays
 * small. */
#define BL_GROUP_GRAIN 4

/* The table of TL job j for input row n, built into this thread's slot on first use (a job of
 * the same kind and shape whose table is built already lends its own). */
static const uint8_t *tl_table(const bl_isa_kernels *tab, const bl_job *jobs, int j, const bl_act *a, int64_t n,
                               uint8_t *lut, int64_t lut_max, int *built) {
    const bl_tweight *w = jobs[j].w;
    for (int k = 0; k < j; ++k)
        if (built[k] && jobs[k].w->layout == w->layout && jobs[k].w->K == w->K &&
            (w->layout == BL_W_TL1 || jobs[k].w->BK == w->BK))
            return lut + k * lut_max;
    uint8_t *tbl = lut + j * lut_max;
    if (!built[j]) {
        if (w->layout == BL_W_TL1)
            tab->tl1_build_lut(a->q + n * a->stride, w->K, tbl);
        else
            tab->tl2_build_lut(a->q + n * a->stride, w->K, w->BK, tbl);
        built[j] = 1;
    }
    return tbl;
}

/* run_group for one input row (decode) of MAD jobs: the tiles shared out dynamically (work_claim). */
static void run_group_dynamic(bl_thread *th, const bl_isa_kernels *tab, const bl_job *jobs, int njobs,
                              const bl_act *a, int64_t row0, int64_t n_tiles, int cls) {
    work_begin(th, n_tiles);
    int64_t t0, t1, r0[3], r1[3];
    while (work_claim(th, BL_GROUP_GRAIN, &t0, &t1)) {
        tiles_to_rows(jobs, njobs, t0, t1, r0, r1);
        for (int j = 0; j < njobs; ++j) {
            if (r0[j] >= r1[j]) continue;
            mad_rows(tab->mad, &jobs[j], a, r0[j], r1[j]);
            epilogue_rows(&jobs[j], a, r0[j], r1[j]);
            capture_rows(&jobs[j], a, row0, r0[j], r1[j]);
        }
    }
    bl_sync(th, cls);
}

/* All threads, each with its own copy `a` of the quantised input (every thread computed it, so
 * no barrier was needed before): the concatenated output rows of the jobs are cut into tiles,
 * each thread takes a contiguous run of tiles (decode of MAD jobs: shared out dynamically), computes the exact products and the epilogue.
 * TL jobs build their tables privately (one input row at a time, into `lut`, one slot of
 * lut_max bytes per job; jobs of the same kind share a table). Ends with a barrier (the outputs
 * are read by every thread next); the work is booked to profile class `cls`. */
static void run_group(bl_thread *th, const bl_isa_kernels *tab, const bl_job *jobs, int njobs, const bl_act *a,
                      uint8_t *lut, int64_t lut_max, int64_t row0, bl_error *err, int cls) {
    const int tid = th->tid, nt = th->nt;
    int64_t n_tiles = 0, r0[3], r1[3];
    int all_mad = 1;
    for (int j = 0; j < njobs; ++j) {
        n_tiles += (jobs[j].w->M + tile_rows(jobs[j].w) - 1) / tile_rows(jobs[j].w);
        all_mad &= !is_tl(jobs[j].w) && !uses_blocks(jobs[j].w);
    }
    /* decode of MAD jobs: dynamic shares. Prefill, TL and per-block jobs keep the fixed ones: their
     * calls carry per-call work (tile packing, tables, block sums), and TL decode measured slower
     * with dynamic shares (docs/benchmarks.md#dynamic-decode-shares-2026-12-07) */
    if (a->N == 1 && all_mad && work_dynamic(th, n_tiles)) {
        run_group_dynamic(th, tab, jobs, njobs, a, row0, n_tiles, cls);
        return;
    }
    int64_t lo, hi;
    bl_split(n_tiles, tid, nt, &lo, &hi);
    tiles_to_rows(jobs, njobs, lo, hi, r0, r1); /* this thread's rows of each job, maybe empty */
    int by_gemm[3] = {0, 0, 0}; /* TL jobs done by the TL GEMM */
    for (int j = 0; j < njobs; ++j) {
        if (r0[j] >= r1[j]) continue;
        if (is_tl(jobs[j].w))
            by_gemm[j] = tl_gemm_rows(tab, &jobs[j], a, r0[j], r1[j], err);
        else if (uses_blocks(jobs[j].w))
            block_rows(tab->mad, &jobs[j], a, r0[j], r1[j]); /* products and epilogue */
        else
            mad_rows(tab->mad, &jobs[j], a, r0[j], r1[j]);
    }
    for (int64_t n = 0; n < a->N; ++n) {
        int built[3] = {0, 0, 0};
        for (int j = 0; j < njobs; ++j) {
            const bl_tweight *w = jobs[j].w;
            if (r0[j] >= r1[j] || !is_tl(w) || by_gemm[j]) continue;
            tl_rows(tab, &jobs[j], tl_table(tab, jobs, j, a, n, lut, lut_max, built), n, r0[j], r1[j], err);
        }
    }
    for (int j = 0; j < njobs; ++j) {
        if (r0[j] >= r1[j]) continue;
        if (!uses_blocks(jobs[j].w)) epilogue_rows(&jobs[j], a, r0[j], r1[j]);
        capture_rows(&jobs[j], a, row0, r0[j], r1[j]);
    }
    bl_sync(th, cls);
}

/* ======================================================================================== */
/* 5. attention                                                                              */
/* ======================================================================================== */

/* Causal GQA attention of one query row for R heads that share a kv head (docs/numerics.md#6-attention;
 * reference layers.attention). q: R rows of d values (f32, after RoPE), d apart. Keys/values of
 * positions 0 .. p of the kv head: from the cache (kc, vc), except position p itself when k_cur
 * is not NULL (decode: this thread's own copy of the new token's K/V, in the cache dtype — the
 * cache row is written by another thread at the same time). Arithmetic per head
 * (engine_float.h; sharing the group changes no result):
 *   qh  = q (rounded to fp16 first with an fp16 cache: F16 mat-mul operand)
 *   s_n = fl32(fl32(f64 dot(qh, k_n)) · kq_scale)   exact products, canonical float64 order
 *   e_n = fl32(exp(double(s_n − max s)))           the subtraction in f32; bl_expf64
 *   p_n = e_n · fl32(1 / Σ e (float64, 8 lanes))   (rounded to fp16 with an fp16 cache)
 *   o   = fl32(Σ_n p_n · v_n)                      float64, sequential over n per output
 * out: R rows of d floats; scores: R rows of p+1 floats, lds apart; qh: R·d floats (scratch). */
static void attend_group(const bl_model *m, const bl_float_kernels *fk, const float *q, int64_t R, const void *kc,
                         const void *vc, int64_t p, const void *k_cur, const void *v_cur, float *out, float *scores,
                         int64_t lds, float *qh) {
    const int64_t d = m->head_dim;
    const int f16 = m->kv_f16;
    for (int64_t i = 0; i < R * d; ++i) qh[i] = f16 ? bl_round_f16(q[i]) : q[i];
    /* positions before p from the cache; p itself from the thread's copy (decode) or the cache */
    const int64_t n_cache = k_cur ? p : p + 1;
    fk->qk(qh, R, kc, n_cache, k_cur, d, f16, m->kq_scale, scores, lds);
    for (int64_t r = 0; r < R; ++r) fk->softmax(scores + r * lds, p + 1, f16);
    fk->pv(scores, lds, R, vc, n_cache, v_cur, d, f16, out);
}

/* ======================================================================================== */
/* 6. lm_head                                                                                */
/* ======================================================================================== */

/* roundf: nearest, ties away from zero, exactly (truncate, then look at the exact remainder). */
static inline int32_t round_half_away(float v) {
    int32_t i = (int32_t)v;
    const float f = v - (float)i;
    if (f >= 0.5f) ++i;
    else if (f <= -0.5f) --i;
    return i;
}

/* One hidden row x (K, K % 32 == 0) as llama.cpp's Q8_0 vec_dot operand (quantize_row_q8_0;
 * reference layers.quantize_q8_0): per block, d = amax / 127 (f32), q = roundf(x · (d ? 1/d : 0)),
 * the scale kept as its fp16 value. Also 128·Σ of every 4 consecutive q (the dpbusd correction,
 * engine_float.h). A block with a NaN/inf gets q = 0 and a NaN scale: its logits become NaN. */
static void quantize_q8_0(const float *x, int64_t K, int8_t *q, float *dx, int32_t *qs4) {
    for (int64_t b = 0; b < K / BL_Q8_0_BLOCK; ++b) {
        const float *xb = x + b * BL_Q8_0_BLOCK;
        float amax = 0.0f;
        int finite = 1;
        for (int j = 0; j < BL_Q8_0_BLOCK; ++j) {
            const float a = fabsf(xb[j]);
            finite &= a <= 3.402823466e38f; /* false for NaN and inf */
            if (a > amax) amax = a;
        }
        const float d = amax / 127.0f, inv = d != 0.0f ? 1.0f / d : 0.0f;
        for (int j = 0; j < BL_Q8_0_BLOCK; ++j) q[b * BL_Q8_0_BLOCK + j] = finite ? (int8_t)round_half_away(xb[j] * inv) : 0;
        dx[b] = finite ? bl_round_f16(d) : NAN;
    }
    for (int64_t j = 0; j < K / 4; ++j)
        qs4[j] = 128 * ((int32_t)q[4 * j] + q[4 * j + 1] + q[4 * j + 2] + q[4 * j + 3]);
}

/* One hidden row x (K, K % 256 == 0) as llama.cpp's Q8_K vec_dot operand (bl_q8k.h) for the Q6_K
 * lm_head: q (K) int8, d (K/256) f32, bsums (K/16) int16. A block with a NaN/inf gets q = 0 and a
 * NaN scale (as quantize_q8_0 above): its logits become NaN instead of garbage. */
static void quantize_q8_k_lm(const float *x, int64_t K, int8_t *q, float *d, int16_t *bsums) {
    bl_quantize_row_q8_k(x, K, d, q);
    for (int64_t b = 0; b < K / BL_QK_K; ++b) {
        int finite = 1;
        for (int j = 0; j < BL_QK_K; ++j) finite &= fabsf(x[b * BL_QK_K + j]) <= 3.402823466e38f;
        if (!finite) {
            memset(q + b * BL_QK_K, 0, BL_QK_K);
            d[b] = NAN;
        }
    }
    bl_q8_k_bsums(q, K, bsums);
}

/* Vocabulary rows [r0, r1) of the lm_head (each logit is one dot in the canonical order, so which
 * thread computes it never changes a result). h: the f32 hidden rows; qx, dx, qs4:
 * the same rows quantised to Q8_0 (Q8_0 lm_head) or to Q8_K (Q6_K lm_head: dx the per-256 scales,
 * qs4 holding the int16 bsums). */
static void lm_head_range(const bl_thread *th, const bl_model *m, const bl_float_kernels *fk, const float *h,
                          const int8_t *qx, const float *dx, const int32_t *qs4, int64_t N, float *out, int64_t r0,
                          int64_t r1) {
    if (r0 >= r1) return;
    if (m->lm_head.type == BL_FT_Q6_K)
        fk->lm_q6k(m->lm_head.data, m->lm_head.row_bytes, m->hidden, r0, r1, qx, dx, (const int16_t *)qs4, N, out,
                   m->vocab);
    else if (m->lm_q8)
        fk->lm_q8(m->lm_head.data, m->lm_head.row_bytes, m->hidden, r0, r1, qx, dx, qs4, N, out, m->vocab, th->nt == 1);
    else {
        /* F16 rows against the fp16-rounded hidden state: exact products (BL_FT_F16_H16) */
        const int type = m->lm_head.type == BL_FT_F16 && m->lm_f16 ? BL_FT_F16_H16 : m->lm_head.type;
        fk->lm_rows(type, m->lm_head.data, m->lm_head.row_bytes, m->hidden, r0, r1, h, N, out, m->vocab);
    }
}

/* Vocabulary rows per unit of the lm_head's dynamic shares, and units taken at a time from
 * another thread: 64 · 8 rows = 2.6 MB of a 2560-wide F16 lm_head. */
#define BL_LM_UNIT 64
#define BL_LM_GRAIN 8

static void lm_head_rows(bl_thread *th, const bl_model *m, const bl_float_kernels *fk, const float *h,
                         const int8_t *qx, const float *dx, const int32_t *qs4, int64_t N, float *out) {
    const int64_t units = (m->vocab + BL_LM_UNIT - 1) / BL_LM_UNIT;
    if (!work_dynamic(th, units)) {
        int64_t r0, r1;
        bl_split(m->vocab, th->tid, th->nt, &r0, &r1);
        lm_head_range(th, m, fk, h, qx, dx, qs4, N, out, r0, r1);
        return;
    }
    work_begin(th, units);
    int64_t u0, u1;
    while (work_claim(th, BL_LM_GRAIN, &u0, &u1))
        lm_head_range(th, m, fk, h, qx, dx, qs4, N, out, u0 * BL_LM_UNIT,
                      u1 * BL_LM_UNIT < m->vocab ? u1 * BL_LM_UNIT : m->vocab);
}

/* ======================================================================================== */
/* 7. workspace                                                                              */
/* ======================================================================================== */

/* Threads share what the split work writes: the projection outputs (two buffers used
 * alternately, so a thread still reading one group's outputs never races with the next
 * group's writers), the accumulators and the attention output. Everything a row needs in
 * order — residual stream, norms, activation quantisation, FFN activation, lm_head input — a
 * decode step (one row) has every thread compute for itself (identical code and inputs, so
 * identical bits): that costs O(H+I) per thread and saves a barrier before each group, so decode
 * needs 5 barriers per layer (one after each of q/k/v, attention, o, gate/up, down). With
 * several rows (a batch, a verification pass, prefill) that work grows with the rows, so each
 * thread does it for its own rows only (row_split) and quantises them into the shared buffers
 * below, read by all after one more barrier per group (4 a layer), and the residual stream is
 * gathered once before the lm_head (docs/benchmarks.md#split-row-wise-stages-2026-12-08). */
typedef struct {
    float *yA;       /* (N, max(qd + 2kvd, 2I)) outputs of q/k/v and gate/up          */
    float *yB;       /* (N, H) outputs of o and down                                  */
    int32_t *acc;    /* (N, max(qd + 2kvd, 2I, H)) integer accumulators              */
    float *xb;       /* (N, qd) attention output                                      */
    /* split rows (row_split): each thread quantises its own rows into these, read by all */
    int8_t *q;       /* (N, stride_max) quantised activations                          */
    float *s;        /* (N)                                                            */
    int32_t *sum;    /* (N)                                                            */
    int32_t *bsum;   /* (N, stride_max/256) per-block Σ q (per-block projections only)  */
    float *d8;       /* (N, stride_max/256) Q8_K block scales (llama.cpp profile only)  */
    float *h;        /* (N, H) the residual stream gathered before the output norm      */
} bl_shared;

typedef struct {
    float *h;        /* (N, H) residual stream                                         */
    float *xn;       /* (N, max(H, qd, I)) norm outputs = BitLinear inputs; scratch    */
    float *xf;       /* (N, I) FFN activation                                          */
    int8_t *q;       /* (N, stride_max) quantised activations                          */
    float *s;        /* (N)                                                            */
    int32_t *sum;    /* (N)                                                            */
    uint8_t *lut;    /* (3, lut_max) TL tables of one input row                        */
    float *hl;       /* (N, H) lm_head input (fp16-rounded for an F16 lm_head)         */
    float *scores;   /* (n_rep, n_ctx) attention weights of a GQA group's heads          */
    float *qh;       /* (n_rep, d) the group's query heads as the dot's operand           */
    float *kr;       /* (kvd) decode: the new token's K after RoPE                     */
    uint16_t *k16;   /* (kvd) + v16 (kvd): the same in fp16 (fp16 cache)               */
    float *qr;       /* (n_rep, d) decode: the group's query heads after RoPE             */
    int8_t *qx;      /* (N, H) Q8_0 / Q6_K lm_head: the hidden state quantised per block  */
    float *dx;       /* (N, H/32) its block scales (fp16 values)                         */
    int32_t *qs4;    /* (N, H/4) 128·Σ of each quad of qx                                */
    int32_t *bsum;   /* (N, stride_max/256) per-block Σ q (per-block projections only)   */
    float *d8;       /* (N, stride_max/256) Q8_K block scales (llama.cpp profile only)    */
    int32_t *blk;    /* (N, BL_BLOCK_ROWS, stride_max/256) per-block partial sums         */
} bl_private;

struct bl_ws {
    bl_barrier bar;       /* first: 64-byte aligned with the struct                        */
    void *shared;         /* bl_shared regions                                             */
    size_t shared_cap;
    void *priv;           /* n_priv blocks of priv_stride bytes (page-aligned, no false sharing) */
    size_t priv_cap, priv_stride;
    int64_t spin_ns;
};

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static size_t up64(size_t n) { return (n + 63) / 64 * 64; }
static size_t up_page(size_t n) { return (n + 4095) / 4096 * 4096; }

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

/* Sizes of the regions (64-byte multiples) of the shared and private blocks for N rows. */
#define BL_N_SHARED 10
static int64_t block_width(const bl_model *m);
static void shared_sizes(const bl_model *m, int64_t N, size_t sz[BL_N_SHARED]) {
    const int64_t H = m->hidden, qd = m->n_heads * m->head_dim, kvd = m->n_kv_heads * m->head_dim, I = m->ffn;
    const int64_t wa = max64(qd + 2 * kvd, 2 * I);
    int64_t stride, lut;
    model_maxima(m, &stride, &lut);
    const int64_t nbs = block_width(m) ? stride / BL_TQ_BLOCK : 0, q8k = m->act_q8k ? 1 : 0;
    sz[0] = up64((size_t)(4 * N * wa));
    sz[1] = up64((size_t)(4 * N * H));
    sz[2] = up64((size_t)(4 * N * max64(wa, H)));
    sz[3] = up64((size_t)(4 * N * qd));
    sz[4] = up64((size_t)(N * stride));
    sz[5] = up64((size_t)(4 * N));
    sz[6] = up64((size_t)(4 * N));
    sz[7] = up64((size_t)(4 * N * nbs));
    sz[8] = up64((size_t)(q8k * 4 * N * nbs));
    sz[9] = up64((size_t)(4 * N * H));
}

/* Blocks per row of the widest per-block projection's input (0: the model has none). */
static int64_t block_width(const bl_model *m) {
    int64_t nb = 0;
    for (int64_t l = 0; l < m->n_layers; ++l)
        for (int p = 0; p < BL_P_COUNT; ++p)
            if (uses_blocks(&m->layers[l].w[p])) nb = max64(nb, m->layers[l].w[p].K_pad / BL_TQ_BLOCK);
    return nb;
}

#define BL_N_PRIV 18
static void private_sizes(const bl_model *m, int64_t N, int64_t n_ctx, size_t sz[BL_N_PRIV]) {
    const int64_t H = m->hidden, d = m->head_dim, qd = m->n_heads * d, kvd = m->n_kv_heads * d, I = m->ffn;
    const int64_t n_rep = m->n_heads / m->n_kv_heads; /* query heads per kv head */
    int64_t stride, lut;
    model_maxima(m, &stride, &lut);
    const int64_t q8 = m->lm_q8 || m->lm_head.type == BL_FT_Q6_K ? 1 : 0; /* Q8_K fits the Q8_0 buffers */
    /* per-block projections: their inputs' width in blocks (stride_max / 256 when any exists) */
    const int64_t nbs = block_width(m) ? stride / BL_TQ_BLOCK : 0, q8k = m->act_q8k ? 1 : 0;
    const size_t raw[BL_N_PRIV] = {
        (size_t)(4 * N * H), (size_t)(4 * N * max64(H, max64(qd, I))), (size_t)(4 * N * I), (size_t)(N * stride),
        (size_t)(4 * N), (size_t)(4 * N), (size_t)(3 * lut), (size_t)(4 * N * H), (size_t)(4 * n_rep * n_ctx),
        (size_t)(4 * n_rep * d), (size_t)(4 * kvd), (size_t)(2 * 2 * kvd + 4 * n_rep * d),
        (size_t)(q8 * N * H), (size_t)(q8 * 4 * N * (H / 32)), (size_t)(q8 * 4 * N * (H / 4)),
        (size_t)(4 * N * nbs), (size_t)(q8k * 4 * N * nbs), (size_t)(4 * N * BL_BLOCK_ROWS * nbs)};
    for (int i = 0; i < BL_N_PRIV; ++i) sz[i] = up64(raw[i]);
}

bl_ws *bl_ws_new(void) {
    bl_ws *ws = (bl_ws *)aligned_alloc(64, up64(sizeof(bl_ws)));
    if (!ws) return NULL;
    memset(ws, 0, sizeof *ws);
    ws->spin_ns = BL_SPIN_NS_DEFAULT;
    bl_barrier_init(&ws->bar, ws->spin_ns);
    return ws;
}

void bl_ws_free(bl_ws *ws) {
    if (!ws) return;
    free(ws->shared);
    free(ws->priv);
    free(ws);
}

void bl_ws_set_spin_ns(bl_ws *ws, int64_t spin_ns) {
    ws->spin_ns = spin_ns < 0 ? 0 : spin_ns;
}

/* Make room for N rows, n_ctx cache positions and nt threads (grow only). 0 or -1. */
static int ws_reserve(bl_ws *ws, const bl_model *m, int64_t N, int64_t n_ctx, int nt) {
    size_t ss[BL_N_SHARED], ps[BL_N_PRIV], shared = 0, priv = 0;
    shared_sizes(m, N, ss);
    private_sizes(m, N, n_ctx, ps);
    for (int i = 0; i < BL_N_SHARED; ++i) shared += ss[i];
    for (int i = 0; i < BL_N_PRIV; ++i) priv += ps[i];
    shared = up_page(shared);
    priv = up_page(priv);
    if (shared > ws->shared_cap) {
        free(ws->shared);
        ws->shared = aligned_alloc(4096, shared);
        ws->shared_cap = ws->shared ? shared : 0;
        if (!ws->shared) return -1;
    }
    if (priv * (size_t)nt > ws->priv_cap || priv > ws->priv_stride) {
        free(ws->priv);
        ws->priv = aligned_alloc(4096, priv * (size_t)nt);
        ws->priv_cap = ws->priv ? priv * (size_t)nt : 0;
        ws->priv_stride = priv;
        if (!ws->priv) return -1;
    }
    return 0;
}

static void shared_carve(const bl_ws *ws, const bl_model *m, int64_t N, bl_shared *S) {
    size_t sz[BL_N_SHARED];
    shared_sizes(m, N, sz);
    char *p = (char *)ws->shared;
    void **dst[BL_N_SHARED] = {(void **)&S->yA, (void **)&S->yB,  (void **)&S->acc,  (void **)&S->xb,
                               (void **)&S->q,  (void **)&S->s,   (void **)&S->sum,  (void **)&S->bsum,
                               (void **)&S->d8, (void **)&S->h};
    for (int i = 0; i < BL_N_SHARED; ++i) {
        *dst[i] = p;
        p += sz[i];
    }
}

static void private_carve(const bl_ws *ws, const bl_model *m, int64_t N, int64_t n_ctx, int tid, bl_private *P) {
    size_t sz[BL_N_PRIV];
    private_sizes(m, N, n_ctx, sz);
    char *p = (char *)ws->priv + (size_t)tid * ws->priv_stride;
    void **dst[BL_N_PRIV] = {(void **)&P->h, (void **)&P->xn, (void **)&P->xf, (void **)&P->q, (void **)&P->s,
                             (void **)&P->sum, (void **)&P->lut, (void **)&P->hl, (void **)&P->scores,
                             (void **)&P->qh, (void **)&P->kr, (void **)&P->k16, (void **)&P->qx,
                             (void **)&P->dx, (void **)&P->qs4, (void **)&P->bsum, (void **)&P->d8,
                             (void **)&P->blk};
    for (int i = 0; i < BL_N_PRIV; ++i) {
        *dst[i] = p;
        p += sz[i];
    }
    const int64_t kvd = m->n_kv_heads * m->head_dim;
    P->qr = (float *)(P->k16 + 2 * kvd);
}

/* ======================================================================================== */
/* 8. forward                                                                                */
/* ======================================================================================== */

/* Row stride of the quantised input of a group: the largest K_pad among its projections. */
static int64_t group_stride(const bl_tweight *w, int n) {
    int64_t s = 0;
    for (int i = 0; i < n; ++i) s = max64(s, w[i].K_pad);
    return s;
}

/* Set up the jobs of a group of projections sharing one input; outputs side by side in y
 * (ldy = Σ M), accumulators side by side in acc. Names are built only when a TL job could
 * need one for an error message. */
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
        if (is_tl(w)) {
            snprintf(names[i], 64, "blk.%lld.%s.weight", (long long)layer, pname[slots[i]]);
            j->name = names[i];
        } else {
            j->name = pname[slots[i]];
        }
        col += w->M;
    }
}

/* Everything one layer needs (one per thread: th is the thread's own). */
typedef struct {
    const bl_model *m;
    const bl_kv *kv;
    const bl_isa_kernels *tab;
    const bl_float_kernels *fk;
    bl_shared *S;
    int64_t N, pos, row0, lut_max, gemv_max;
    bl_error *err;
    bl_thread *th;
    /* batched calls (bl_forward_batch): the cache and position of every row of the call, indexed
     * by row0 + n; NULL for one sequence (kv, and pos + n) */
    const bl_kv *const *rkv;
    const int64_t *rpos;
} bl_ctx;

/* The cache and the position of the chunk's row n. */
static inline const bl_kv *row_kv(const bl_ctx *c, int64_t n) { return c->rkv ? c->rkv[c->row0 + n] : c->kv; }
static inline int64_t row_pos(const bl_ctx *c, int64_t n) { return c->rpos ? c->rpos[c->row0 + n] : c->pos + n; }

/* Split rows: with several rows and threads, the row-wise stages (norms, activation quantisation,
 * FFN activation, residual) run each row on one thread — bl_split of the rows — instead of every
 * row on every thread, and the quantised inputs go to shared buffers read by all after a barrier.
 * One row alone keeps the private copies (a barrier costs more than its row-wise work). Each row's
 * arithmetic is the same whichever thread runs it, so the results do not change. */
static inline int row_split(const bl_ctx *c) { return c->N > 1 && c->th->nt > 1; }

/* The rows [lo, hi) of the chunk whose row-wise stages this thread computes. */
static inline void own_rows(const bl_ctx *c, int64_t *lo, int64_t *hi) {
    if (row_split(c)) {
        bl_split(c->N, c->th->tid, c->th->nt, lo, hi);
    } else {
        *lo = 0;
        *hi = c->N;
    }
}

/* Copy the rows of width `width` (elem bytes each, row stride ld elements) of a buffer that this
 * thread computed into capture `id` (NULL: not captured): its own rows when the rows are split,
 * else all of them, by thread 0. */
static void cap_private(void *const *lcaps, int id, const void *src, int64_t elem, int64_t width, int64_t ld,
                        const bl_ctx *c) {
    if (!lcaps || !lcaps[id] || (!row_split(c) && c->th->tid != 0)) return;
    int64_t lo, hi;
    own_rows(c, &lo, &hi);
    for (int64_t n = lo; n < hi; ++n)
        memcpy((char *)lcaps[id] + (c->row0 + n) * width * elem, (const char *)src + n * ld * elem, (size_t)(width * elem));
}

/* RMSNorm of this thread's rows of x (N, n) into P->xn (w NULL: no norm, x is the input), then
 * their activation quantisation, stride = the group's K_pad: into P's buffers (every row, this
 * thread's copy) or, rows split, into the shared ones, followed by a barrier. */
static void norm_quant(const bl_ctx *c, bl_private *P, const float *x, const float *w, int64_t n, int64_t stride,
                       bl_act *a, void *const *lcaps, int cap_norm, int cap_q) {
    int64_t lo, hi;
    own_rows(c, &lo, &hi);
    const float *in = x;
    if (w) {
        for (int64_t r = lo; r < hi; ++r) rms_norm_row(c->fk, x + r * n, w, P->xn + r * n, n, c->m->eps);
        prof_mark(c->th, BL_PROF_NORM);
        cap_private(lcaps, cap_norm, P->xn, 4, n, n, c);
        in = P->xn;
    }
    const int split = row_split(c);
    a->q = split ? c->S->q : P->q;
    a->s = split ? c->S->s : P->s;
    a->sum = split ? c->S->sum : P->sum;
    a->K = n;
    a->stride = stride;
    a->N = c->N;
    a->gemv_max = c->gemv_max;
    const int blocks = block_width(c->m) > 0;
    a->q8k = c->m->act_q8k;
    a->bsum = blocks ? (split ? c->S->bsum : P->bsum) : NULL;
    a->d8 = split ? c->S->d8 : P->d8;
    a->blk = P->blk; /* the projections' scratch: always this thread's */
    quantize_rows(c->tab->mad, in, a, lo, hi, c->m->rounding);
    cap_private(lcaps, cap_q, a->q, 1, n, stride, c);
    cap_private(lcaps, cap_q + 1, a->s, 4, 1, 1, c);
    cap_private(lcaps, cap_q + 2, a->sum, 4, 1, 1, c);
    if (split)
        bl_sync(c->th, BL_PROF_QUANT); /* every row quantised before any thread's products read them */
    else
        prof_mark(c->th, BL_PROF_QUANT);
}

/* RoPE, K/V cache and attention of layer l for the chunk's N rows (all threads; ends with a
 * barrier). q/k/v are the (N, qd + 2kvd) rows of S->yA; the output goes to S->xb (N, qd). */
static void attention_block(const bl_ctx *c, bl_private *P, int64_t l, void *const *lcaps) {
    const bl_model *m = c->m;
    const int tid = c->th->tid, nt = c->th->nt;
    const int64_t d = m->head_dim, nh = m->n_heads, nkv = m->n_kv_heads, qd = nh * d, kvd = nkv * d;
    const int64_t ldy = qd + 2 * kvd, half = m->rot_dim / 2, n_rep = nh / nkv;
    const size_t esz = m->kv_f16 ? 2 : 4;
    const int64_t N = c->N;
    float *y = c->S->yA;
    if (N == 1) {
        const bl_kv *kv = row_kv(c, 0);
        const int64_t pos = row_pos(c, 0);
        /* Decode: each thread ropes the new key for itself (kvd values) and reads position p
         * from that copy; thread 0 writes it to the cache meanwhile (other threads only read
         * positions < p of the cache in this call). No barrier before the attention. */
        const float *cs = kv->rope_cos + pos * half, *sn = kv->rope_sin + pos * half;
        const float *v = y + qd + kvd;
        memcpy(P->kr, y + qd, 4 * kvd);
        rope_row(P->kr, nkv, d, m->rot_dim, m->rope_neox, cs, sn);
        uint16_t *v16 = P->k16 + kvd;
        if (m->kv_f16) { /* K after RoPE and V rounded to fp16 when stored (docs/numerics.md#6-attention) */
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
        for (int64_t j = j0; j < j1;) { /* the thread's heads of one kv group at a time */
            const int64_t g = j / n_rep, R = min64(j1, (g + 1) * n_rep) - j, base = (l * nkv + g) * kv->n_ctx * d;
            memcpy(P->qr, y + j * d, 4 * R * d);
            rope_row(P->qr, R, d, m->rot_dim, m->rope_neox, cs, sn);
            const void *kc = m->kv_f16 ? (const void *)(P->k16 + g * d) : (const void *)(P->kr + g * d);
            const void *vc = m->kv_f16 ? (const void *)(v16 + g * d) : (const void *)(v + g * d);
            attend_group(m, c->fk, P->qr, R, (const char *)kv->k + base * esz, (const char *)kv->v + base * esz, pos,
                         kc, vc, c->S->xb + j * d, P->scores, kv->n_ctx, P->qh);
            j += R;
        }
        bl_sync(c->th, BL_PROF_ATTN);
        return;
    }
    /* Prefill (or a batch: each row with its own cache and position): rows split for RoPE (in
     * place) and the cache writes, a barrier, then the (row, head) pairs split; every key/value
     * is read from the cache. */
    int64_t lo, hi;
    bl_split(N, tid, nt, &lo, &hi);
    for (int64_t n = lo; n < hi; ++n) {
        float *qn = y + n * ldy, *kn = qn + qd, *vn = kn + kvd;
        const bl_kv *kv = row_kv(c, n);
        const int64_t p = row_pos(c, n);
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
    bl_sync(c->th, BL_PROF_ATTN);
    /* (head, row) pairs, head-major: threads split the heads, each taking every row of its heads,
     * so the triangular work (row n reads pos + n + 1 keys) is shared evenly. For each row, the
     * heads of one kv group that fall in the thread's range run together (attend_group). */
    int64_t a0, a1;
    bl_split(N * nh, tid, nt, &a0, &a1);
    if (a0 < a1)
        for (int64_t g = (a0 / N) / n_rep; g <= ((a1 - 1) / N) / n_rep; ++g) {
            for (int64_t n = 0; n < N; ++n) {
                const bl_kv *kv = row_kv(c, n);
                const int64_t base = (l * nkv + g) * kv->n_ctx * d;
                /* heads j of group g with a0 <= j·N + n < a1 (ceilings: a0 − n, a1 − n > −N) */
                const int64_t jl = max64(g * n_rep, (a0 - n + N - 1) / N);
                const int64_t jh = min64((g + 1) * n_rep, (a1 - n + N - 1) / N);
                if (jl >= jh) continue;
                attend_group(m, c->fk, y + n * ldy + jl * d, jh - jl, (const char *)kv->k + base * esz,
                             (const char *)kv->v + base * esz, row_pos(c, n), NULL, NULL, c->S->xb + n * qd + jl * d,
                             P->scores, kv->n_ctx, P->qh);
            }
        }
    bl_sync(c->th, BL_PROF_ATTN);
}

/* Residual h += y (f32 add) for this thread's rows (own_rows) of width n. */
static void residual(const bl_ctx *c, float *h, const float *y, int64_t n) {
    int64_t lo, hi;
    own_rows(c, &lo, &hi);
    for (int64_t e = lo * n; e < hi * n; ++e) h[e] = h[e] + y[e];
    prof_mark(c->th, BL_PROF_RESID);
}

/* One layer on the chunk's N rows (docs/numerics.md#101-bitnet-b158-2b-4t), all threads. */
static void layer_forward(const bl_ctx *c, bl_private *P, int64_t l, void *const *lcaps) {
    const bl_model *m = c->m;
    const bl_layer *L = &m->layers[l];
    const int64_t H = m->hidden, qd = m->n_heads * m->head_dim, I = m->ffn, N = c->N;
    bl_shared *S = c->S;
    bl_job jobs[3];
    char names[3][64];
    bl_act a;
    int64_t lo, hi; /* this thread's rows of the row-wise stages */
    own_rows(c, &lo, &hi);

    /* ---- attention block ------------------------------------------------------------ */
    /* one quantisation shared by q, k, v (docs/numerics.md#26-where-the-quantisation-happens) */
    norm_quant(c, P, P->h, L->attn_norm, H, group_stride(&L->w[BL_P_Q], 3), &a, lcaps, BL_CAP_ATTN_NORM,
               BL_CAP_ATTN_IN_Q);
    {
        static const int slots[3] = {BL_P_Q, BL_P_K, BL_P_V};
        static const int caps[3] = {BL_CAP_ATTN_Q_ACC, BL_CAP_ATTN_K_ACC, BL_CAP_ATTN_V_ACC};
        make_jobs(jobs, L, slots, 3, N, S->yA, S->acc, lcaps, caps, names, l);
        run_group(c->th, c->tab, jobs, 3, &a, P->lut, c->lut_max, c->row0, c->err, BL_PROF_QKV);
    }
    attention_block(c, P, l, lcaps);
    cap_private(lcaps, BL_CAP_ATTN_OUT, S->xb, 4, qd, qd, c);
    const float *o_in = S->xb;
    if (m->sub_norms) { /* attn_sub_norm before o_proj (docs/numerics.md#8-sub-norm-placement) */
        for (int64_t n = lo; n < hi; ++n) rms_norm_row(c->fk, S->xb + n * qd, L->attn_sub_norm, P->xn + n * qd, qd, m->eps);
        prof_mark(c->th, BL_PROF_NORM);
        cap_private(lcaps, BL_CAP_ATTN_SUB_NORM, P->xn, 4, qd, qd, c);
        o_in = P->xn;
    }
    norm_quant(c, P, o_in, NULL, qd, L->w[BL_P_O].K_pad, &a, lcaps, -1, BL_CAP_O_IN_Q);
    {
        static const int slots[1] = {BL_P_O};
        static const int caps[1] = {BL_CAP_O_ACC};
        make_jobs(jobs, L, slots, 1, N, S->yB, S->acc, lcaps, caps, names, l);
        run_group(c->th, c->tab, jobs, 1, &a, P->lut, c->lut_max, c->row0, c->err, BL_PROF_O);
    }
    residual(c, P->h, S->yB, H);
    cap_private(lcaps, BL_CAP_ATTN_RESID, P->h, 4, H, H, c);

    /* ---- FFN block -------------------------------------------------------------------- */
    norm_quant(c, P, P->h, L->ffn_norm, H, group_stride(&L->w[BL_P_GATE], 2), &a, lcaps, BL_CAP_FFN_NORM,
               BL_CAP_FFN_IN_Q); /* shared by gate and up */
    {
        static const int slots[2] = {BL_P_GATE, BL_P_UP};
        static const int caps[2] = {BL_CAP_GATE_ACC, BL_CAP_UP_ACC};
        make_jobs(jobs, L, slots, 2, N, S->yA, S->acc, lcaps, caps, names, l);
        run_group(c->th, c->tab, jobs, 2, &a, P->lut, c->lut_max, c->row0, c->err, BL_PROF_GATE_UP);
    }
    for (int64_t n = lo; n < hi; ++n)
        gated_act(c->fk, S->yA + n * 2 * I, S->yA + n * 2 * I + I, P->xf + n * I, I, m->act_relu2);
    prof_mark(c->th, BL_PROF_ACT);
    cap_private(lcaps, BL_CAP_FFN_ACT, P->xf, 4, I, I, c);
    const float *d_in = P->xf;
    if (m->sub_norms) { /* ffn_sub_norm before down_proj */
        for (int64_t n = lo; n < hi; ++n) rms_norm_row(c->fk, P->xf + n * I, L->ffn_sub_norm, P->xn + n * I, I, m->eps);
        prof_mark(c->th, BL_PROF_NORM);
        cap_private(lcaps, BL_CAP_FFN_SUB_NORM, P->xn, 4, I, I, c);
        d_in = P->xn;
    }
    norm_quant(c, P, d_in, NULL, I, L->w[BL_P_DOWN].K_pad, &a, lcaps, -1, BL_CAP_DOWN_IN_Q);
    {
        static const int slots[1] = {BL_P_DOWN};
        static const int caps[1] = {BL_CAP_DOWN_ACC};
        make_jobs(jobs, L, slots, 1, N, S->yB, S->acc, lcaps, caps, names, l);
        run_group(c->th, c->tab, jobs, 1, &a, P->lut, c->lut_max, c->row0, c->err, BL_PROF_DOWN);
    }
    residual(c, P->h, S->yB, H);
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
                    case BL_W_I2S_X4: if (!mad->i2s_x4_gemv || !mad->i2s_x4_gemm) missing = "I2_S x4 GEMV/GEMM"; break;
                    case BL_W_TQ2_0: if (!mad->tq2_gemv || !mad->tq2_gemm) missing = "TQ2_0 GEMV/GEMM"; break;
                    case BL_W_TQ1_0: if (!mad->tq1_gemv || !mad->tq1_gemm) missing = "TQ1_0 GEMV/GEMM"; break;
                    case BL_W_TQ1_X16: if (!mad->tq1_x16_gemv || !mad->tq1_x16_gemm) missing = "TQ1_0 x16 GEMV/GEMM"; break;
                    case BL_W_TL1: if (!tab->tl1_gemv || !tab->tl1_build_lut) missing = "TL1 LUT kernels"; break;
                    case BL_W_TL2: if (!tab->tl2_gemv || !tab->tl2_build_lut) missing = "TL2 LUT kernels"; break;
                    default: missing = "a kernel for an unknown layout"; break;
                }
                const bl_tweight *w = &m->layers[l].w[p];
                if (!missing && (m->act_q8k != 0) != (w->epilogue == BL_EPI_Q8K)) {
                    snprintf(err->msg, sizeof err->msg,
                             "layer %lld projection %d: epilogue %d does not match the model's activations (%s)",
                             (long long)l, p, (int)w->epilogue, m->act_q8k ? "Q8_K" : "per-token int8");
                    err->code = BL_E_ARG;
                    return -1;
                }
                if (!missing && w->block_d && w->epilogue == BL_EPI_TENSOR) {
                    snprintf(err->msg, sizeof err->msg,
                             "layer %lld projection %d: block scales under the per-tensor epilogue", (long long)l, p);
                    err->code = BL_E_ARG;
                    return -1;
                }
                if (!missing && uses_blocks(w)) {
                    const int lay = w->layout;
                    if (lay != BL_W_I2S && lay != BL_W_TQ2_0 && lay != BL_W_TQ1_0) {
                        snprintf(err->msg, sizeof err->msg,
                                 "layer %lld projection %d: per-block products need an I2_S, TQ2_0 or TQ1_0 layout, "
                                 "got layout %d", (long long)l, p, lay);
                        err->code = BL_E_ARG;
                        return -1;
                    }
                    if (w->K % BL_TQ_BLOCK || w->K_pad != w->K) {
                        snprintf(err->msg, sizeof err->msg,
                                 "layer %lld projection %d: per-block products need K %% 256 == 0, got K = %lld",
                                 (long long)l, p, (long long)w->K);
                        err->code = BL_E_ARG;
                        return -1;
                    }
                    if ((lay == BL_W_I2S && (!mad->i2s_bgemv || !mad->i2s_bgemm)) ||
                        (lay == BL_W_TQ2_0 && (!mad->tq2_bgemv || !mad->tq2_bgemm)) ||
                        (lay == BL_W_TQ1_0 && (!mad->tq1_bgemv || !mad->tq1_bgemm)))
                        missing = "per-block GEMV/GEMM";
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

/* The forward pass over T rows: one sequence (kv, rows at pos0 ..; rkv = rpos = NULL) or a batch
 * (row t in cache rkv[t] at position rpos[t]). Logits for the rows with want[t] != 0 (want NULL:
 * the rows t >= logits_row0), written in row order. Arguments checked by the callers. */
static int forward_rows(const bl_model *m, const bl_kv *kv, int64_t pos0, const bl_kv *const *rkv,
                        const int64_t *rpos, int64_t n_ctx_max, const int32_t *tokens, int64_t T, float *logits,
                        int64_t logits_row0, const uint8_t *want, void *const *caps, int isa, int n_threads, bl_ws *ws,
                        double *prof, bl_error *err, const char *what) {
    const bl_isa_kernels *tab = bl_isa_table(isa);
    const bl_float_kernels *fk = bl_float_table(isa);
    const int64_t gemv_max = gemv_batch_max(isa);
    const int64_t CH = T < BL_CHUNK ? T : BL_CHUNK, H = m->hidden, V = m->vocab;
    bl_ws *own = NULL;
    if (!ws && !(ws = own = bl_ws_new())) return oom(err, what);
    if (ws_reserve(ws, m, CH, n_ctx_max, n_threads)) {
        bl_ws_free(own);
        return oom(err, what);
    }
    bl_barrier_init(&ws->bar, ws->spin_ns);
    bl_shared S;
    shared_carve(ws, m, CH, &S);
    int64_t stride_max, lut_max;
    model_maxima(m, &stride_max, &lut_max);
    void *const *gcaps = caps ? caps + m->n_layers * BL_CAP_LAYER_COUNT : NULL;

#ifdef _OPENMP
#pragma omp parallel num_threads(n_threads)
#endif
    {
        bl_thread th = {bl_tid(), bl_nth(), &ws->bar, NULL, 0.0, 0.0};
        prof_start(&th, prof ? prof + (size_t)th.tid * BL_PROF_STRIDE : NULL);
        bl_private P;
        private_carve(ws, m, CH, n_ctx_max, th.tid, &P);
        prof_mark(&th, BL_PROF_OTHER);
        int64_t out_row = 0; /* logits rows written by the chunks before (every thread counts) */
        for (int64_t t0 = 0; t0 < T; t0 += CH) {
            const int64_t N = T - t0 < CH ? T - t0 : CH;
            bl_ctx c = {m, kv, tab, fk, &S, N, pos0 + t0, t0, lut_max, gemv_max, err, &th, rkv, rpos};
            for (int64_t n = 0; n < N; ++n) embed_row(&m->embed, tokens[t0 + n], P.h + n * H); /* f16 -> f32 exact */
            if (gcaps && gcaps[BL_CAP_EMBD] && th.tid == 0) cap_rows(gcaps[BL_CAP_EMBD], P.h, 4, H, t0, 0, N);
            prof_mark(&th, BL_PROF_EMBED);
            for (int64_t l = 0; l < m->n_layers; ++l)
                layer_forward(&c, &P, l, caps ? caps + l * BL_CAP_LAYER_COUNT : NULL);
            if (row_split(&c)) { /* each thread holds its own rows of h: gather them for the lm_head */
                int64_t lo, hi;
                own_rows(&c, &lo, &hi);
                memcpy(S.h + lo * H, P.h + lo * H, (size_t)((hi - lo) * H) * sizeof(float));
                bl_sync(&th, BL_PROF_RESID);
                memcpy(P.h, S.h, (size_t)(N * H) * sizeof(float));
            }
            /* output norm, then the lm_head on the wanted rows, gathered in row order */
            const int cap_norm = gcaps && gcaps[BL_CAP_OUTPUT_NORM] && th.tid == 0;
            int64_t n_lm = 0;
            for (int64_t n = 0; n < N; ++n) {
                const int wanted = want ? want[t0 + n] != 0 : t0 + n >= logits_row0;
                if (!wanted && !cap_norm) continue;
                rms_norm_row(fk, P.h + n * H, m->output_norm, P.xn + n * H, H, m->eps);
                if (!wanted) continue;
                /* with an F16 lm_head the hidden state is rounded to fp16 first (ggml's F16 mat-mul
                 * converts its f32 operand, docs/numerics.md#9-embedding-and-lm_head) */
                if (m->lm_head.type == BL_FT_Q6_K) {
                    quantize_q8_k_lm(P.xn + n * H, H, P.qx + n_lm * H, P.dx + n_lm * (H / BL_QK_K),
                                     (int16_t *)P.qs4 + n_lm * (H / 16)); /* (N, H/16), as the kernel reads */
                } else if (m->lm_q8) {
                    quantize_q8_0(P.xn + n * H, H, P.qx + n_lm * H, P.dx + n_lm * (H / 32), P.qs4 + n_lm * (H / 4));
                } else {
                    for (int64_t e = 0; e < H; ++e) {
                        const float v = P.xn[n * H + e];
                        P.hl[n_lm * H + e] = m->lm_f16 ? bl_round_f16(v) : v;
                    }
                }
                ++n_lm;
            }
            if (cap_norm) cap_rows(gcaps[BL_CAP_OUTPUT_NORM], P.xn, 4, H, t0, 0, N);
            prof_mark(&th, BL_PROF_NORM);
            if (n_lm > 0) {
                lm_head_rows(&th, m, fk, P.hl, P.qx, P.dx, P.qs4, n_lm, logits + out_row * V);
                prof_mark(&th, BL_PROF_LM_HEAD);
            }
            out_row += n_lm;
            /* No barrier before the next chunk: every shared buffer it writes first (q/k/v outputs,
             * accumulators) was last read before the down projection's closing barrier. */
        }
    }
    bl_ws_free(own);
    return err->code;
}

int bl_forward(const bl_model *m, const bl_kv *kv, const int32_t *tokens, int64_t T, int64_t pos0,
               float *logits, int64_t logits_row0, void *const *caps, int isa, int n_threads,
               bl_ws *ws, double *prof, bl_error *err) {
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
    return forward_rows(m, kv, pos0, NULL, NULL, kv->n_ctx, tokens, T, logits, logits_row0, NULL, caps, isa,
                        n_threads, ws, prof, err, "bl_forward");
}

int bl_forward_batch(const bl_model *m, const bl_kv *kvs, int64_t n_seq, const int64_t *seq_len,
                     const int64_t *seq_pos0, const int32_t *tokens, float *logits, const uint8_t *want,
                     int isa, int n_threads, bl_ws *ws, double *prof, bl_error *err) {
    err->code = BL_OK;
    err->msg[0] = 0;
    const bl_isa_kernels *tab = bl_isa_table(isa);
    const bl_float_kernels *fk = bl_float_table(isa);
    if (check_kernels(m, tab, fk, isa, err)) return err->code;
    if (n_seq < 1 || n_threads < 1) {
        snprintf(err->msg, sizeof err->msg, "bl_forward_batch: bad arguments n_seq=%lld threads=%d",
                 (long long)n_seq, n_threads);
        err->code = BL_E_ARG;
        return err->code;
    }
    int64_t T = 0, n_ctx_max = 0;
    for (int64_t i = 0; i < n_seq; ++i) {
        const char *bad = seq_len[i] < 1                                    ? "has no tokens"
                          : seq_pos0[i] < 0                                 ? "has a negative position"
                          : seq_pos0[i] + seq_len[i] > kvs[i].n_ctx         ? "does not fit in its cache"
                                                                            : NULL;
        for (int64_t j = 0; j < i && !bad; ++j)
            if (kvs[j].k == kvs[i].k || kvs[j].v == kvs[i].v) bad = "shares its cache with an earlier sequence";
        if (bad) {
            snprintf(err->msg, sizeof err->msg, "bl_forward_batch: sequence %lld %s (%lld tokens at position %lld, "
                     "n_ctx %lld)", (long long)i, bad, (long long)seq_len[i], (long long)seq_pos0[i],
                     (long long)kvs[i].n_ctx);
            err->code = BL_E_ARG;
            return err->code;
        }
        T += seq_len[i];
        n_ctx_max = max64(n_ctx_max, kvs[i].n_ctx);
    }
    /* every row's cache and position (the sequences' rows are consecutive, in order) */
    const bl_kv **rkv = (const bl_kv **)malloc((size_t)T * sizeof *rkv);
    int64_t *rpos = (int64_t *)malloc((size_t)T * sizeof *rpos);
    if (!rkv || !rpos) {
        free(rkv);
        free(rpos);
        return oom(err, "bl_forward_batch");
    }
    for (int64_t i = 0, t = 0; i < n_seq; ++i)
        for (int64_t n = 0; n < seq_len[i]; ++n, ++t) {
            rkv[t] = &kvs[i];
            rpos[t] = seq_pos0[i] + n;
        }
    const int rc = forward_rows(m, NULL, 0, rkv, rpos, n_ctx_max, tokens, T, logits, 0, want, NULL, isa,
                                n_threads, ws, prof, err, "bl_forward_batch");
    free(rkv);
    free(rpos);
    return rc;
}

/* ======================================================================================== */
/* 9. bitlinear                                                                              */
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
    m.act_q8k = w->epilogue == BL_EPI_Q8K;
    if (check_kernels(&m, tab, bl_float_table(isa), isa, err)) return err->code;
    const int64_t lut_bytes = lut_row_bytes(w);
    int32_t *accb = (int32_t *)malloc((size_t)(N * w->M) * 4 + 64);
    bl_barrier *bar = (bl_barrier *)aligned_alloc(64, up64(sizeof(bl_barrier)));
    if (!accb || !bar) {
        free(accb);
        free(bar);
        return oom(err, "bl_bitlinear");
    }
    bl_barrier_init(bar, BL_SPIN_NS_DEFAULT);
    int failed_alloc = 0;
#ifdef _OPENMP
#pragma omp parallel num_threads(n_threads)
#endif
    {
        bl_thread th = {bl_tid(), bl_nth(), bar, NULL, 0.0, 0.0};
        /* each thread quantises every row for itself (as bl_forward does for one row), then takes its tiles */
        int8_t *q = (int8_t *)calloc((size_t)(N * w->K_pad + 64), 1);
        float *s = (float *)malloc((size_t)N * 4 + 64);
        int32_t *sum = (int32_t *)malloc((size_t)N * 4 + 64);
        uint8_t *lut = (uint8_t *)malloc((size_t)lut_bytes + 64);
        const int64_t nbs = uses_blocks(w) ? w->K_pad / BL_TQ_BLOCK : 0; /* per-block scratch */
        int32_t *bsum = (int32_t *)malloc((size_t)(N * nbs) * 4 + 64);
        float *d8 = (float *)malloc((size_t)(N * nbs) * 4 + 64);
        int32_t *blk = (int32_t *)malloc((size_t)(N * BL_BLOCK_ROWS * nbs) * 4 + 64);
        int mine = !q || !s || !sum || !lut || !bsum || !d8 || !blk;
#ifdef _OPENMP
#pragma omp atomic
#endif
        failed_alloc += mine;
        bl_barrier_wait(bar, th.nt);
        if (!failed_alloc) {
            bl_act a = {q, s, sum, w->K, w->K_pad, N, gemv_batch_max(isa), w->epilogue == BL_EPI_Q8K,
                        nbs ? bsum : NULL, d8, blk};
            bl_job j = {w, y, w->M, accb, NULL, NULL, "bitlinear"};
            quantize_rows(tab->mad, x, &a, 0, N, rounding);
            run_group(&th, tab, &j, 1, &a, lut, lut_bytes, 0, err, BL_PROF_OTHER);
        }
        free(q);
        free(s);
        free(sum);
        free(lut);
        free(bsum);
        free(d8);
        free(blk);
    }
    free(bar);
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
        case BL_ISA_AVX512VNNI:
        case BL_ISA_AMX: return &bl_float_avx512;
#endif
        default: return &bl_float_scalar; /* NEON levels: the portable kernels (same results) */
    }
}
