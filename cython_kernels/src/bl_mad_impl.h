/* bl_mad_impl.h — private helpers shared by the MAD implementation files (act_*.c, mad_*.c).
 *
 * Only portable C here (no intrinsics): every per-ISA file includes it, whatever its flags.
 * Numerics notes are in bl_mad.h and docs/numerics.md#2-activation-quantisation to
 * docs/numerics.md#3-bitlinear-integer-product-and-epilogue.
 */
#ifndef BL_MAD_IMPL_H
#define BL_MAD_IMPL_H

#include <string.h>

#include "bl_mad.h"

/* ---- activation quantisation ------------------------------------------------------------- */

/* Absolute values of IEEE floats order like their bit patterns read as unsigned integers, and
 * NaN (> 0x7F800000) sorts above +inf (== 0x7F800000): an integer max over |x| bit patterns is
 * the exact absmax in any order, and bits >= BL_F32_INF_BITS flags a non-finite row. */
#define BL_F32_ABS_MASK 0x7FFFFFFFu
#define BL_F32_INF_BITS 0x7F800000u

static inline uint32_t bl_f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float bl_bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* s_x = fl32(127 / max(amax, 1e-5f)): the division in double, rounded once to float, which is
 * the correctly rounded float quotient (docs/numerics.md#21-bitnetcpp-i2_s-path); the floor is the float
 * 1e-5f, as in bitnet_lab.quant.ternary.activation_scale. */
static inline float bl_act_scale(uint32_t amax_bits) {
    float amax = bl_bits_f32(amax_bits);
    if (amax < 1e-5f) amax = 1e-5f;
    return (float)(127.0 / (double)amax);
}

/* Round a float with |v| < 2^31 to the nearest integer, independent of the FPU rounding mode:
 * truncate, then look at the exact remainder v - trunc(v). */
static inline int32_t bl_round_half_even(float v) {
    int32_t i = (int32_t)v;     /* C conversion truncates toward zero */
    const float f = v - (float)i; /* exact: the fractional part of a float is a float */
    if (f > 0.5f || (f == 0.5f && (i & 1))) ++i;
    else if (f < -0.5f || (f == -0.5f && (i & 1))) --i;
    return i;
}

static inline int32_t bl_round_half_away(float v) {
    int32_t i = (int32_t)v;
    const float f = v - (float)i;
    if (f >= 0.5f) ++i;
    else if (f <= -0.5f) --i;
    return i;
}

/* One element: clamp(round(fl32(x * s)), -128, 127). */
static inline int8_t bl_quant_one(float x, float s, int rounding) {
    const float v = x * s; /* float32 product, as quantize_row_i8_s (no FMA: -ffp-contract=off) */
    int32_t i = rounding == BL_ROUND_HALF_AWAY ? bl_round_half_away(v) : bl_round_half_even(v);
    if (i < -128) i = -128;
    if (i > 127) i = 127;
    return (int8_t)i;
}

/* A non-finite row: zero outputs and count it in *st (absolute row index r). */
static inline void bl_act_bad_row(bl_status *st, int8_t *qr, float *s_x, int32_t *sum_q, int64_t K, int64_t r) {
    memset(qr, 0, (size_t)K);
    s_x[r] = 0.0f;
    sum_q[r] = 0;
    if (st->n_bad == 0) st->first_bad = r;
    st->n_bad++;
}

static inline void bl_act_fault(int32_t *sum_q, int64_t r0, int64_t r1) {
    if (r0 == 0 && r1 > 0 && BL_MAD_FAULT(BL_OP_QUANTIZE_ACT)) sum_q[0] += 1;
}

/* ---- weight decoding (scalar; used by v0 and by SIMD tails) ------------------------------- */

/* I2_S element j (0..127) of a 32-byte block: byte j % 32 at shift 6 - 2*(j / 32). */
#define BL_I2S_SHIFT(plane) (6 - 2 * (plane))

/* TQ1_0 trit n (0 = most significant) of byte b: q8 = b·3^n mod 256, code = (q8·3) >> 8. */
static inline uint8_t bl_tq1_trit(uint8_t b, int n) {
    static const uint8_t pow3[5] = {1, 3, 9, 27, 81};
    const uint8_t q8 = (uint8_t)(b * pow3[n]);
    return (uint8_t)(((uint16_t)q8 * 3) >> 8);
}

/* Bytes of one row of each format. */
static inline int64_t bl_i2s_row_bytes(int64_t K) { return K / 4; }
/* Row i (0..3) of an x4 group (bl_mad.h), its 32 bytes of 128-weight block b (nb blocks per row):
 * step b/2 at 256·(b/2), the row's 64 bytes at + 64·i, the block's half at + 32·(b%2); an odd
 * last block (nb odd) at 128·b + 32·i. */
static inline const uint8_t *bl_i2s_x4_block(const uint8_t *group, int64_t nb, int64_t b, int64_t i) {
    return (nb & 1) && b == nb - 1 ? group + 128 * b + 32 * i : group + 256 * (b >> 1) + 64 * i + 32 * (b & 1);
}
static inline int64_t bl_tq2_row_bytes(int64_t K) { return (K / BL_TQ_BLOCK) * BL_TQ2_BLOCK_BYTES; }
static inline int64_t bl_tq1_row_bytes(int64_t K) { return (K / BL_TQ_BLOCK) * BL_TQ1_BLOCK_BYTES; }

/* Codes c = t + 1 of elements [k0, k0 + kc) of weight row `row` -> codes[0 .. kc).
 * I2_S needs k0, kc multiples of 128; TQ multiples of 256. */
static inline void bl_decode_i2s_scalar(const uint8_t *w, int64_t K, int64_t row, int64_t k0, int64_t kc, uint8_t *codes) {
    const uint8_t *p = w + row * bl_i2s_row_bytes(K) + k0 / 4;
    for (int64_t b = 0; b < kc / 128; ++b, p += 32, codes += 128)
        for (int plane = 0; plane < 4; ++plane)
            for (int j = 0; j < 32; ++j) codes[32 * plane + j] = (uint8_t)((p[j] >> BL_I2S_SHIFT(plane)) & 3);
}

static inline void bl_decode_tq2_scalar(const uint8_t *w, int64_t K, int64_t row, int64_t k0, int64_t kc, uint8_t *codes) {
    const uint8_t *p = w + row * bl_tq2_row_bytes(K) + (k0 / BL_TQ_BLOCK) * BL_TQ2_BLOCK_BYTES;
    for (int64_t b = 0; b < kc / BL_TQ_BLOCK; ++b, p += BL_TQ2_BLOCK_BYTES, codes += BL_TQ_BLOCK)
        for (int h = 0; h < 2; ++h) /* element h*128 + 32*j + m in qs[h*32 + m], bits 2j+1:2j */
            for (int j = 0; j < 4; ++j)
                for (int m = 0; m < 32; ++m) codes[128 * h + 32 * j + m] = (uint8_t)((p[32 * h + m] >> (2 * j)) & 3);
}

static inline void bl_decode_tq1_scalar(const uint8_t *w, int64_t K, int64_t row, int64_t k0, int64_t kc, uint8_t *codes) {
    const uint8_t *p = w + row * bl_tq1_row_bytes(K) + (k0 / BL_TQ_BLOCK) * BL_TQ1_BLOCK_BYTES;
    for (int64_t b = 0; b < kc / BL_TQ_BLOCK; ++b, p += BL_TQ1_BLOCK_BYTES, codes += BL_TQ_BLOCK) {
        for (int n = 0; n < 5; ++n) /* qs[m], m < 32: elements m + 32n */
            for (int m = 0; m < 32; ++m) codes[32 * n + m] = bl_tq1_trit(p[m], n);
        for (int n = 0; n < 5; ++n) /* qs[32 + m], m < 16: elements 160 + m + 16n */
            for (int m = 0; m < 16; ++m) codes[160 + 16 * n + m] = bl_tq1_trit(p[32 + m], n);
        for (int n = 0; n < 4; ++n) /* qh[j], j < 4: elements 240 + j + 4n */
            for (int j = 0; j < 4; ++j) codes[240 + 4 * n + j] = bl_tq1_trit(p[48 + j], n);
    }
}

/* Signature shared by the decoders above and their SIMD versions. */
typedef void (*bl_decode_fn)(const uint8_t *w, int64_t K, int64_t row, int64_t k0, int64_t kc, uint8_t *codes);

/* ---- results ------------------------------------------------------------------------------ */

/* GEMV/GEMM fault: +1 on out[0] in the call that owns row 0 (bl_mad.h). */
static inline void bl_gemx_fault(int op, int32_t *out, int64_t r0, int64_t r1) {
    if (r0 == 0 && r1 > 0 && BL_MAD_FAULT(op)) out[0] += 1;
}

/* Weights per chunk of a GEMM: codes of a chunk are decoded once and reused for every token.
 * 2048 = 16 I2_S blocks = 8 TQ blocks: also the longest run an int16 maddubs accumulator may
 * cover (docs/kernels.md#23-the-int16-overflow-bound-and-a-safer-widening-rule: 16 blocks · 4 planes · 2
 * products · 2 · 128 = 32768). */
#define BL_GEMM_KC 2048

/* ---- the blocked GEMM driver (SIMD versions) ----------------------------------------------- */

/* A register tile: res[i][j] = Σ_k codes[i·ldc + k] · a[j·lda + k] over kc weights, for rw ≤ 4
 * weight rows and nt ≤ 4 token rows (kc a multiple of 128, ≤ the chunk). */
typedef void (*bl_tile_fn)(const uint8_t *codes, int64_t ldc, const int8_t *a, int64_t lda, int64_t kc, int rw,
                           int nt, int32_t res[4][4]);

/* Rows per decoded panel: a panel of BL_GEMM_PANEL rows × BL_GEMM_KC codes (16 KiB) and one
 * 4-token slice of activations (8 KiB) stay in L1 while the tiles sweep the panel. */
#define BL_GEMM_PANEL 8
/* Tokens per block: partial sums of a panel for this many tokens live in a 2 KiB stack array
 * (out is written once per block, contiguously, instead of read-modified-written per chunk at
 * a stride of ld_out). The panel's codes are decoded again for every token block. */
#define BL_GEMM_NB 64

/* out[n, r] = Σ_k t[r, k]·Q[n, k] for rows [r0, r1), all N tokens (activation-parallel order,
 * docs/kernels.md#26-activation-parallel-vs-weight-parallel): per panel of rows, per block of tokens and per
 * chunk of BL_GEMM_KC weights, decode the codes once, then for every 4-token slice run the tiles over the
 * panel (rw_max rows at a time). `codes` is caller scratch of BL_GEMM_PANEL * BL_GEMM_KC bytes. */
static inline void bl_gemm_blocked(bl_decode_fn decode, bl_tile_fn tile, int rw_max, uint8_t *codes, int op,
                                   const uint8_t *w, const int8_t *Q, const int32_t *sum_q, int32_t *out, int64_t N,
                                   int64_t K, int64_t ld_out, int64_t r0, int64_t r1) {
    int32_t res[4][4] = {{0}}; /* every tile shape the driver asks for writes its rw x nt corner */
    int32_t acc[BL_GEMM_NB][BL_GEMM_PANEL];
    for (int64_t r = r0; r < r1; r += BL_GEMM_PANEL) {
        const int64_t rp = r1 - r < BL_GEMM_PANEL ? r1 - r : BL_GEMM_PANEL;
        for (int64_t n0 = 0; n0 < N; n0 += BL_GEMM_NB) {
            const int64_t nb = N - n0 < BL_GEMM_NB ? N - n0 : BL_GEMM_NB;
            for (int64_t n = 0; n < nb; ++n)
                for (int64_t i = 0; i < rp; ++i) acc[n][i] = -sum_q[n0 + n]; /* the code-offset correction */
            for (int64_t k0 = 0; k0 < K; k0 += BL_GEMM_KC) {
                const int64_t kc = K - k0 < BL_GEMM_KC ? K - k0 : BL_GEMM_KC;
                for (int64_t i = 0; i < rp; ++i) decode(w, K, r + i, k0, kc, codes + i * BL_GEMM_KC);
                for (int64_t n = 0; n < nb; n += 4) {
                    const int nt = nb - n >= 4 ? 4 : (int)(nb - n);
                    for (int64_t i = 0; i < rp; i += rw_max) {
                        const int rw = rp - i >= rw_max ? rw_max : (int)(rp - i);
                        tile(codes + i * BL_GEMM_KC, BL_GEMM_KC, Q + (n0 + n) * K + k0, K, kc, rw, nt, res);
                        for (int j = 0; j < nt; ++j)
                            for (int ii = 0; ii < rw; ++ii) acc[n + j][i + ii] += res[ii][j];
                    }
                }
            }
            for (int64_t n = 0; n < nb; ++n)
                for (int64_t i = 0; i < rp; ++i) out[(n0 + n) * ld_out + r + i] = acc[n][i];
        }
    }
    bl_gemx_fault(op, out, r0, r1);
}

/* ---- the per-block GEMM driver (block kernels, bl_mad.h "per-block products") --------------- */

/* bl_gemm_blocked's loop order with the tiles run one 256-weight block at a time: per panel of
 * BL_GEMM_PANEL rows and chunk of BL_GEMM_KC weights the codes are decoded once; every 4-token
 * slice then sweeps each block of the chunk, and a tile's sums are that block's partial sums
 * (exact in the tiles' int16 lanes: a block is 1/8 of the chunk they are sized for), written
 * out minus the block's Σ q. The GEMVs are this with N = 1. */
static inline void bl_gemm_blocks(bl_decode_fn decode, bl_tile_fn tile, int rw_max, uint8_t *codes, int op,
                                  const uint8_t *w, const int8_t *Q, const int32_t *sum_qb, int32_t *out, int64_t N,
                                  int64_t K, int64_t ld_out, int64_t r0, int64_t r1) {
    const int64_t nb = K / BL_TQ_BLOCK;
    int32_t res[4][4] = {{0}};
    for (int64_t r = r0; r < r1; r += BL_GEMM_PANEL) {
        const int64_t rp = r1 - r < BL_GEMM_PANEL ? r1 - r : BL_GEMM_PANEL;
        for (int64_t k0 = 0; k0 < K; k0 += BL_GEMM_KC) {
            const int64_t kc = K - k0 < BL_GEMM_KC ? K - k0 : BL_GEMM_KC;
            for (int64_t i = 0; i < rp; ++i) decode(w, K, r + i, k0, kc, codes + i * BL_GEMM_KC);
            for (int64_t n = 0; n < N; n += 4) {
                const int nt = N - n >= 4 ? 4 : (int)(N - n);
                for (int64_t kb = 0; kb < kc; kb += BL_TQ_BLOCK) {
                    const int64_t b = (k0 + kb) / BL_TQ_BLOCK;
                    for (int64_t i = 0; i < rp; i += rw_max) {
                        const int rw = rp - i >= rw_max ? rw_max : (int)(rp - i);
                        tile(codes + i * BL_GEMM_KC + kb, BL_GEMM_KC, Q + n * K + k0 + kb, K, BL_TQ_BLOCK, rw, nt, res);
                        for (int j = 0; j < nt; ++j)
                            for (int ii = 0; ii < rw; ++ii)
                                out[(n + j) * ld_out + (r - r0 + i + ii) * nb + b] = res[ii][j] - sum_qb[(n + j) * nb + b];
                    }
                }
            }
        }
    }
    if (r0 == 0 && r1 > 0 && BL_MAD_FAULT(op)) out[0] += 1;
}

#endif /* BL_MAD_IMPL_H */
