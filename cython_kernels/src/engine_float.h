/* engine_float.h — the float side of the native engine: fp16 conversions, the float dot products
 * of attention, RMSNorm and the lm_head, one implementation per ISA level.
 *
 * Numerics. The JAX reference (bitnet_lab/reference/layers.py, the judge) accumulates its float
 * dots in float64. The engine does the same wherever the result feeds an activation
 * quantisation, and uses float32 only for the lm_head, whose logits feed nothing:
 *
 *   attention q·k and p·v, RMSNorm: operands widened to float64, where every product is exact
 *     (24 + 24 bits < 53), summed in float64, rounded once to f32. Why not f32 here: measured on
 *     the tiny packed model (tests/test_engine.py), f32 dots in attention move its output by
 *     ~1e-7 relative, which once in a few dozen steps moves an o-projection input across an int8
 *     rounding boundary; that one flipped activation changed the logits by 3e-3 relative, 30x the
 *     model tier's 1e-4. Activation quantisation amplifies every upstream difference.
 *   lm_head: float32, the cheap path for the 657 MB F16 matrix of the 2B-4T (its error, ~1e-6
 *     relative, reaches nothing but the logits).
 *
 * Every ISA level and thread count gives the SAME bits, because every reduction follows ONE
 * canonical order, written plainly in float_scalar.c:
 *
 *   f32 dot (lm_head):  32 float32 partial sums; element k goes to lane k % 32; each lane is
 *            summed in increasing k as  lane = lane + fl32(a[k]·b[k])  (a multiply, then an add:
 *            two roundings, never a fused multiply-add); then the fold  for w = 16, 8, 4, 2, 1:
 *            lane[i] = lane[i] + lane[i + w] for i < w; the result is lane[0].   (bl_fold32f)
 *            32 lanes, not 16: a lane is a chain of dependent adds (3-4 cycles each), and the
 *            lm_head reads one weight row at a time (the order the memory system streams best),
 *            so a 2560-long row must be at least two independent chains (two AVX-512 vectors)
 *            to be summed as fast as DRAM delivers it.
 *   f64 dot (q·k, sum of squares): 16 float64 partial sums, element k into lane k % 16 in
 *            increasing k, the products exact (so a fused multiply-add gives the same bits),
 *            then the fold for w = 8, 4, 2, 1 (bl_fold16d); rounded once to f32 by the caller.
 *            For the sum of squares the square itself is formed in f32 first (as ggml).
 *   f64 axpy (p·v): o[i] += p·v[i] in float64 (exact products), summed in increasing cache
 *            position for each output i; rounded once to f32 at the end.
 *   Q8_0 lm_head (llama.cpp semantics, as the reference's layers.lm_head_q8_0): the hidden
 *            state quantised per block of 32 (bl_quantize_q8_0 in engine.c), then per block b
 *            the 8 quads j (4 consecutive elements) give exact integers p_bj = Σ q_w·q_x; 16
 *            float32 lanes, lane 8·(b % 2) + j summed in increasing b as
 *            lane = lane + fl32(p_bj · dd_b) with dd_b = fl32(d_w,b · d_x,b) (exact: 11 x 11
 *            bits); then the fold w = 8, 4, 2, 1. (An AVX-512 dpbusd over two blocks yields
 *            exactly these 16 quads in its 16 lanes.)
 *   Q6_K lm_head (llama.cpp's ggml_vec_dot_q6_K_q8_K semantics): the hidden state quantised to
 *            Q8_K per block of 256 (bl_q8k.h), per block b an exact integer isum_b, then
 *            sum = sum + fl32(fl32(isum_b) · fl32(d6_b · d8_b)) over b in increasing order (bl_q6k.h).
 *   softmax: e_n = bl_expf64(s_n − max s) (identical in every file: a fixed sequence of float64
 *            multiplies and adds), Σ e in float64 over 8 lanes (n % 8, increasing n; fold 4, 2,
 *            1), p_n = e_n · fl32(1 / Σ).
 *
 * AVX-512 keeps the lanes in two __m512 / __m512d, AVX2 in four __m256 / __m256d; tails go into
 * their lanes in increasing k and the fold is the scalar tree (or the same tree in registers).
 * tests/test_engine.py compares every level bit for bit.
 *
 * fp16: conversions f32 -> fp16 round to nearest even (numpy's astype(float16), F16C's
 * _MM_FROUND_TO_NEAREST_INT); fp16 -> f32 is exact.
 */
#ifndef BL_ENGINE_FLOAT_H
#define BL_ENGINE_FLOAT_H

#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Element types of a float matrix read by the lm_head (and the embedding gather). */
typedef enum {
    BL_FT_F32 = 0,  /* float32 rows                                     */
    BL_FT_F16 = 1,  /* IEEE binary16 rows (uint16 bits)                 */
    BL_FT_Q8_0 = 2, /* 34-byte blocks of 32: fp16 d, 32 int8 q; x = q·d */
    BL_FT_Q6_K = 3, /* 210-byte blocks of 256 (bl_q6k.h); as lm_head: the Q8_K dot  */
    /* lm_rows only: F16 rows against hidden rows whose values are all fp16 numbers (the engine
     * rounds an F16 lm_head's input to fp16, docs/numerics.md#9-embedding-and-lm_head). A product of
     * two fp16 numbers is exact in f32 (11 + 11 significant bits), so a fused multiply-add rounds
     * once where mul-then-add rounds the exact product (no-op) and the sum: the same bits, half the
     * instructions. Kernels may treat it as BL_FT_F16. */
    BL_FT_F16_H16 = 4,
} bl_ftype;

#define BL_Q8_0_BLOCK 32
#define BL_Q8_0_BYTES 34

/* Lanes of the canonical f32 dot order (above). */
#define BL_DOT_LANES 32

/* Bytes ahead of the current read position that the Q8_0 lm_head prefetches into L2 (one weight
 * row at a time, so the front runs straight through the matrix): ~latency × bandwidth with
 * margin. The F16 / F32 rows stream best without a software prefetch (float_avx512.c). */
#define BL_LM_PREFETCH_BYTES 8192

/* ---- fp16 <-> f32 (portable, bit exact) ------------------------------------------------ */

static inline float bl_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu, x;
    if (e == 0) {
        if (m == 0) {
            x = sign; /* ±0 */
        } else {      /* subnormal: normalise the mantissa */
            uint32_t ee = 127 - 15 + 1;
            while (!(m & 0x400u)) {
                m <<= 1;
                ee--;
            }
            x = sign | (ee << 23) | ((m & 0x3ffu) << 13);
        }
    } else if (e == 31) {
        x = sign | 0x7f800000u | (m << 13); /* inf / NaN (payload kept) */
    } else {
        x = sign | ((e + 112) << 23) | (m << 13);
    }
    float f;
    memcpy(&f, &x, 4);
    return f;
}

/* Round to nearest, ties to even (also for subnormal results and overflow to inf). */
static inline uint16_t bl_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) /* inf, NaN (quiet, top payload bits kept) */
        return (uint16_t)(sign | 0x7c00u | (ax > 0x7f800000u ? (0x200u | ((ax >> 13) & 0x3ffu)) : 0));
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* >= 65520 rounds to inf */
    if (ax < 0x38800000u) {                                     /* below 2^-14: fp16 subnormal */
        if (ax <= 0x33000000u) return (uint16_t)sign;            /* <= 2^-25 (tie -> even 0) */
        uint32_t e = ax >> 23;                                   /* 102 .. 112 */
        uint32_t mant = (ax & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126 - e;                                /* 14 .. 24 */
        uint32_t n = mant >> shift, rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (n & 1u))) n++;
        return (uint16_t)(sign | n); /* n == 0x400 encodes the smallest normal: correct */
    }
    uint32_t h = (((ax >> 23) - 112) << 10) | ((ax & 0x7fffffu) >> 13);
    uint32_t rem = ax & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++; /* carry may reach the exponent */
    return (uint16_t)(sign | h);
}

static inline float bl_round_f16(float f) { return bl_f16_to_f32(bl_f32_to_f16(f)); }

/* The canonical folds (see the header comment). */
static inline float bl_fold32f(float lane[BL_DOT_LANES]) {
    for (int w = BL_DOT_LANES / 2; w >= 1; w >>= 1)
        for (int i = 0; i < w; ++i) lane[i] = lane[i] + lane[i + w];
    return lane[0];
}

static inline double bl_fold8d(double lane[8]) {
    for (int w = 4; w >= 1; w >>= 1)
        for (int i = 0; i < w; ++i) lane[i] = lane[i] + lane[i + w];
    return lane[0];
}

static inline double bl_fold16d(double lane[16]) {
    for (int w = 8; w >= 1; w >>= 1)
        for (int i = 0; i < w; ++i) lane[i] = lane[i] + lane[i + w];
    return lane[0];
}

/* fl32(e^x) for a float x, computed in float64 and rounded once (≈ the correctly rounded expf,
 * like the reference's float64 exp): Cody–Waite reduction x = n·ln2 + r, |r| <= ln2/2, Taylor
 * polynomial of degree 11 (relative error < 1e-14), scaling by 2^n through the exponent bits.
 * Plain double multiplies and adds in a fixed order (no FMA: every file is compiled with
 * -ffp-contract=off), so it returns the same bits everywhere; much faster than libm's exp for the
 * softmax, whose very negative arguments hit libm's underflow slow path. NaN propagates;
 * x < -110 gives +0 (e^-110 is far below half the smallest f32 subnormal). */
#define BL_EXP_SHIFTER 6755399441055744.0 /* 1.5·2^52: adding it rounds to an integer */
#define BL_EXP_LOG2E 1.4426950408889634074
#define BL_EXP_LN2_HI 6.93147180369123816490e-01 /* 32 trailing zero bits: n·LN2_HI is exact */
#define BL_EXP_LN2_LO 1.90821492927058770002e-10

/* The shared core of bl_expf64 and bl_exp64: x = n·ln2 + r (Cody-Waite, two-part ln2), and
 * e^r by its degree-11 Taylor polynomial in Horner form; returns that polynomial, n in *n_out.
 * Both callers then scale by 2^n, so they run the same operations in the same order. */
static inline double bl_exp_reduced(double x, double *n_out) {
    const double t = x * BL_EXP_LOG2E + BL_EXP_SHIFTER;
    const double n = t - BL_EXP_SHIFTER;
    double r = x - n * BL_EXP_LN2_HI;
    r = r - n * BL_EXP_LN2_LO;
    double p = 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    *n_out = n;
    return p;
}

static inline float bl_expf64(float xf) {
    const double x = (double)xf;
    if (!(x >= -110.0)) return x != x ? xf : 0.0f;
    if (x > 89.0) return (float)(x * 1e300); /* overflows to +inf in the f32 rounding */
    double n;
    const double p = bl_exp_reduced(x, &n);
    const uint64_t bits = (uint64_t)((int64_t)n + 1023) << 52; /* 2^n, n in [-159, 129] */
    double scale;
    memcpy(&scale, &bits, 8);
    return (float)(p * scale);
}

/* e^x in float64 (relative error < 1e-14; no f32 rounding): the same reduction and polynomial as
 * bl_expf64 over the whole double range (+inf above 709.78, +0 below -745.2, NaN propagates).
 * Used by SiLU, whose reference is fl32(g / (1 + e^-g)) evaluated in float64. */
static inline double bl_exp64(double x) {
    if (!(x >= -745.2)) return x != x ? x : 0.0;
    if (x > 709.78) return x * 1e300 * 1e300; /* +inf */
    double n;
    const double p = bl_exp_reduced(x, &n);
    /* 2^n for n in [-1075, 1024] in two steps, each factor a normal double */
    const int64_t ni = (int64_t)n, n1 = ni / 2, n2 = ni - n1;
    const uint64_t b1 = (uint64_t)(n1 + 1023) << 52, b2 = (uint64_t)(n2 + 1023) << 52;
    double s1, s2;
    memcpy(&s1, &b1, 8);
    memcpy(&s2, &b2, 8);
    return p * s1 * s2;
}

/* ---- per-ISA float kernels ------------------------------------------------------------- */

/* Σ_k a[k]·b[k] in the canonical f32 order (the lm_head's; exposed for tests). */
typedef float (*bl_dot_f32_fn)(const float *a, const float *b, int64_t n);
/* Attention of R query heads that share one kv head (GQA; R <= n_rep): each q row (d f32, the
 * R rows d apart) against n_cache cached rows (d elements apart; f32, or fp16 bits when f16)
 * plus, when not NULL, one more row `last` in the same dtype (decode: the new token, held
 * privately by the thread while another one writes the cache). Score rows are lds apart.
 *   qk: scores[r·lds + n] = fl32(fl32(f64 dot(q_r, K[n])) · kq_scale) for n <= n_cache
 *       (- 1 without last);
 *   pv: out[r·d + i] = fl32(Σ_n p[r·lds + n]·V[n][i]), the sum in float64 in increasing n.
 * Each head's result is exactly its one-head result (the same per-lane order): a group only
 * shares the loads and the f16/f32 -> f64 conversions of every key and value row among its
 * heads — up to 4 at a time with AVX-512, 2 with AVX2, none in scalar code (2B-4T has 4 query
 * heads per kv head). */
typedef void (*bl_qk_fn)(const float *q, int64_t R, const void *K, int64_t n_cache, const void *last, int64_t d,
                         int f16, float kq_scale, float *scores, int64_t lds);
typedef void (*bl_pv_fn)(const float *p, int64_t lds, int64_t R, const void *V, int64_t n_cache, const void *last,
                         int64_t d, int f16, float *out);
/* SiLU-gated FFN activation, element-wise: f[i] = fl32(fl32(g / (1 + e^-g)) · u[i]), the SiLU in
 * float64 with bl_exp64 (every level: the same double operations). */
typedef void (*bl_silu_fn)(const float *g, const float *u, float *f, int64_t n);
/* Softmax of scores[0..n) in place (the order above); p rounded to fp16 when f16. */
typedef void (*bl_softmax_fn)(float *scores, int64_t n, int f16);
/* Σ_k fl32(x[k]·x[k]) in the canonical float64 order (RMSNorm). */
typedef double (*bl_sumsq_fn)(const float *x, int64_t n);
/* lm_head rows [r0, r1) of W (type `type`, row_bytes bytes per row, K columns) against N
 * hidden rows h (N, K) f32: out[n * ldo + r] = Σ_k h[n,k]·W[r,k] in the canonical f32 order
 * (a Q8_0 element is the exact f32 value q·d). One weight row at a time, so the matrix is read
 * as one sequential stream (for N > 1 each row is used for all N hidden rows while in L1). */
typedef void (*bl_lm_rows_fn)(int type, const uint8_t *W, int64_t row_bytes, int64_t K, int64_t r0,
                              int64_t r1, const float *h, int64_t N, float *out, int64_t ldo);

/* Q8_0 lm_head rows [r0, r1) of W (34-byte blocks, row_bytes per row, K columns) against N hidden
 * rows quantised to Q8_0: qx (N, K) int8, dx (N, K/32) f32 (fp16 block scales), qsum4 (N, K/4)
 * int32 = 128·Σ of each quad of qx (the correction of dpbusd's unsigned operand: the kernels may
 * multiply w + 128 instead of w). out[n * ldo + r] = the canonical Q8_0 sum (above). `alone`: the
 * caller is the only thread streaming (a hint for software prefetch; never changes a result). */
typedef void (*bl_lm_q8_fn)(const uint8_t *W, int64_t row_bytes, int64_t K, int64_t r0, int64_t r1,
                            const int8_t *qx, const float *dx, const int32_t *qsum4, int64_t N, float *out,
                            int64_t ldo, int alone);

/* Q6_K lm_head rows [r0, r1) of W (210-byte blocks, row_bytes per row, K columns, K % 256 == 0)
 * against N hidden rows quantised to Q8_K (bl_q8k.h): q8 (N, K) int8, d8 (N, K/256) f32, bsums
 * (N, K/16) int16 (Σ of each 16 consecutive q8: the SIMD kernels fold the −32 code offset out of
 * the integer loop with them). out[n * ldo + r] = the canonical Q6_K × Q8_K sum (bl_q6k.h). */
typedef void (*bl_lm_q6k_fn)(const uint8_t *W, int64_t row_bytes, int64_t K, int64_t r0, int64_t r1,
                             const int8_t *q8, const float *d8, const int16_t *bsums, int64_t N, float *out,
                             int64_t ldo);

typedef struct {
    const char *name;
    bl_dot_f32_fn dot_f32;
    bl_qk_fn qk;
    bl_pv_fn pv;
    bl_softmax_fn softmax;
    bl_silu_fn silu;
    bl_sumsq_fn sumsq;
    bl_lm_rows_fn lm_rows;
    bl_lm_q8_fn lm_q8;
    bl_lm_q6k_fn lm_q6k;
} bl_float_kernels;

/* Defined in float_scalar.c / float_avx2.c / float_avx512.c (only the ones built). */
extern const bl_float_kernels bl_float_scalar;
extern const bl_float_kernels bl_float_avx2;
extern const bl_float_kernels bl_float_avx512;

/* The float kernels the engine uses at ISA level `isa` (bl_isa enum), or NULL when that level
 * is not available (engine.c). */
const bl_float_kernels *bl_float_table(int isa);

#ifdef __cplusplus
}
#endif

#endif /* BL_ENGINE_FLOAT_H */
