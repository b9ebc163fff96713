/* engine_float.h — the float side of the native engine: fp16 conversions and the float64-
 * accumulated dot products of attention and the lm_head, one implementation per ISA level.
 *
 * Numerics (mirrors bitnet_lab/reference/layers.py, the judge):
 *   Every float dot product takes its f32 / fp16 operands to float64, where each product is
 *   exact (24 + 24 bits < 53), accumulates there, and is rounded once to f32 by the caller.
 *   Summation order is fixed by one CANONICAL ORDER shared by every ISA, so every level
 *   returns the same double bit for bit (and therefore the same f32):
 *
 *     16 partial sums, element k goes to lane k % 16, each lane summed in increasing k;
 *     then the lanes are folded by a fixed tree: for w = 8, 4, 2, 1: lane[i] += lane[i + w]
 *     for i < w; the result is lane[0].                              (bl_fold16 below)
 *
 *   AVX-512 keeps the 16 lanes in two 8-double registers, AVX2 in four 4-double registers,
 *   scalar in an array; the fold is the same. Products are exact, so a fused multiply-add
 *   gives the same bits as a multiply then an add: SIMD files may use FMA.
 *   The axpy kernels (attention p·v) vectorise over the output index, so each output is a
 *   sequential sum over the cache positions in every ISA.
 *
 * fp16: conversions f32 -> fp16 round to nearest even (numpy's astype(float16), F16C's
 * _MM_FROUND_TO_NEAREST_INT); fp16 -> f32 is exact. The scalar versions below are the ones
 * the engine uses for small vectors (q, p, K/V stores, the hidden state); SIMD files convert
 * weights with F16C / AVX-512F, which is exact as well.
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
} bl_ftype;

#define BL_Q8_0_BLOCK 32
#define BL_Q8_0_BYTES 34

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

/* The canonical fold of 16 partial sums (see the header comment). */
static inline double bl_fold16(double lane[16]) {
    for (int w = 8; w >= 1; w >>= 1)
        for (int i = 0; i < w; ++i) lane[i] += lane[i + w];
    return lane[0];
}

/* ---- per-ISA float kernels ------------------------------------------------------------- */

/* Σ_k a[k]·b[k] in the canonical order; a in float64 (already widened), b f32 or fp16. */
typedef double (*bl_dot_f32_fn)(const double *a, const float *b, int64_t n);
typedef double (*bl_dot_f16_fn)(const double *a, const uint16_t *b, int64_t n);
/* o[i] += p · v[i] for i < n (float64 accumulators; one sequential sum per i). */
typedef void (*bl_axpy_f32_fn)(double *o, double p, const float *v, int64_t n);
typedef void (*bl_axpy_f16_fn)(double *o, double p, const uint16_t *v, int64_t n);
/* lm_head rows [r0, r1) of W (type `type`, row_bytes bytes per row, K columns) against N
 * hidden rows h (N, K) float64: out[n * ldo + r] = fl32(Σ_k h[n,k]·W[r,k]) (canonical order). */
typedef void (*bl_lm_rows_fn)(int type, const uint8_t *W, int64_t row_bytes, int64_t K, int64_t r0,
                              int64_t r1, const double *h, int64_t N, float *out, int64_t ldo);

typedef struct {
    const char *name;
    bl_dot_f32_fn dot_f32;
    bl_dot_f16_fn dot_f16;
    bl_axpy_f32_fn axpy_f32;
    bl_axpy_f16_fn axpy_f16;
    bl_lm_rows_fn lm_rows;
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
