/* mad_scalar.c — MAD kernels, v0: portable C, the reference every SIMD version must match.
 *
 * v0 does the obvious thing for every format: decode a chunk of weight codes c = t + 1 (the
 * scalar decoders of bl_mad_impl.h, one loop per docs/formats.md table), then an int32 dot product
 * with the activations, and the code-offset correction Σ t·q = Σ c·q − Σ q
 * (docs/numerics.md#31-the-integer-identity).
 *   GEMV: per weight row, chunks of BL_GEMM_KC weights, one dot each.
 *   GEMM: per weight row and chunk, decode once, then one dot per token row (the decoded chunk
 *         is reused N times: the activation-parallel order of
 *         docs/kernels.md#26-activation-parallel-vs-weight-parallel).
 * int32 accumulation is exact: |Σ c·q| ≤ 2·128·K < 2^31 for K < 2^22.
 * No SIMD flags (setup.py); the compiler may still auto-vectorise for the target's baseline.
 */
#include "bl_mad_impl.h"

int32_t bl_sum_i8(const int8_t *q, int64_t K) {
    int32_t s = 0;
    for (int64_t k = 0; k < K; ++k) s += q[k];
    return s;
}

void bl_block_sums_i8(const int8_t *q, int64_t K, int32_t *sums) {
    for (int64_t b = 0; b < K / BL_TQ_BLOCK; ++b) sums[b] = bl_sum_i8(q + b * BL_TQ_BLOCK, BL_TQ_BLOCK);
}

/* Σ c·q over n elements (codes unsigned 0..2, activations signed). */
static inline int32_t dot_codes(const uint8_t *c, const int8_t *q, int64_t n) {
    int32_t acc = 0;
    for (int64_t k = 0; k < n; ++k) acc += (int32_t)c[k] * (int32_t)q[k];
    return acc;
}

static void gemv_v0(bl_decode_fn decode, int op, const uint8_t *w, const int8_t *q, int32_t sum_q, int32_t *out,
                    int64_t K, int64_t r0, int64_t r1) {
    uint8_t codes[BL_GEMM_KC];
    for (int64_t r = r0; r < r1; ++r) {
        int32_t acc = 0;
        for (int64_t k0 = 0; k0 < K; k0 += BL_GEMM_KC) {
            const int64_t kc = K - k0 < BL_GEMM_KC ? K - k0 : BL_GEMM_KC;
            decode(w, K, r, k0, kc, codes);
            acc += dot_codes(codes, q + k0, kc);
        }
        out[r] = acc - sum_q;
    }
    bl_gemx_fault(op, out, r0, r1);
}

static void gemm_v0(bl_decode_fn decode, int op, const uint8_t *w, const int8_t *Q, const int32_t *sum_q,
                    int32_t *out, int64_t N, int64_t K, int64_t ld_out, int64_t r0, int64_t r1) {
    uint8_t codes[BL_GEMM_KC];
    for (int64_t r = r0; r < r1; ++r) {
        for (int64_t n = 0; n < N; ++n) out[n * ld_out + r] = -sum_q[n];
        for (int64_t k0 = 0; k0 < K; k0 += BL_GEMM_KC) {
            const int64_t kc = K - k0 < BL_GEMM_KC ? K - k0 : BL_GEMM_KC;
            decode(w, K, r, k0, kc, codes); /* once per chunk, reused for every token row */
            for (int64_t n = 0; n < N; ++n) out[n * ld_out + r] += dot_codes(codes, Q + n * K + k0, kc);
        }
    }
    bl_gemx_fault(op, out, r0, r1);
}

void bl_i2s_gemv_v0(const uint8_t *w, const int8_t *q, int32_t sum_q, int32_t *out, int64_t K, int64_t r0,
                    int64_t r1) {
    gemv_v0(bl_decode_i2s_scalar, BL_OP_I2S_GEMV, w, q, sum_q, out, K, r0, r1);
}

void bl_i2s_gemm_v0(const uint8_t *w, const int8_t *Q, const int32_t *sum_q, int32_t *out, int64_t N, int64_t K,
                    int64_t ld_out, int64_t r0, int64_t r1) {
    gemm_v0(bl_decode_i2s_scalar, BL_OP_I2S_GEMM, w, Q, sum_q, out, N, K, ld_out, r0, r1);
}

void bl_tq2_gemv_v0(const uint8_t *w, const int8_t *q, int32_t sum_q, int32_t *out, int64_t K, int64_t r0,
                    int64_t r1) {
    gemv_v0(bl_decode_tq2_scalar, BL_OP_TQ2_GEMV, w, q, sum_q, out, K, r0, r1);
}

void bl_tq1_gemv_v0(const uint8_t *w, const int8_t *q, int32_t sum_q, int32_t *out, int64_t K, int64_t r0,
                    int64_t r1) {
    gemv_v0(bl_decode_tq1_scalar, BL_OP_TQ1_GEMV, w, q, sum_q, out, K, r0, r1);
}

void bl_tq2_gemm_v0(const uint8_t *w, const int8_t *Q, const int32_t *sum_q, int32_t *out, int64_t N, int64_t K,
                    int64_t ld_out, int64_t r0, int64_t r1) {
    gemm_v0(bl_decode_tq2_scalar, BL_OP_TQ2_GEMM, w, Q, sum_q, out, N, K, ld_out, r0, r1);
}

void bl_tq1_gemm_v0(const uint8_t *w, const int8_t *Q, const int32_t *sum_q, int32_t *out, int64_t N, int64_t K,
                    int64_t ld_out, int64_t r0, int64_t r1) {
    gemm_v0(bl_decode_tq1_scalar, BL_OP_TQ1_GEMM, w, Q, sum_q, out, N, K, ld_out, r0, r1);
}

/* ---- per-block products (bl_mad.h): decode a chunk, one dot per 256-weight block ------------ */

static void bgemm_v0(bl_decode_fn decode, int op, const uint8_t *w, const int8_t *Q, const int32_t *sum_qb,
                     int32_t *out, int64_t N, int64_t K, int64_t ld_out, int64_t r0, int64_t r1) {
    uint8_t codes[BL_GEMM_KC];
    const int64_t nb = K / BL_TQ_BLOCK;
    for (int64_t r = r0; r < r1; ++r)
        for (int64_t k0 = 0; k0 < K; k0 += BL_GEMM_KC) {
            const int64_t kc = K - k0 < BL_GEMM_KC ? K - k0 : BL_GEMM_KC;
            decode(w, K, r, k0, kc, codes);
            for (int64_t n = 0; n < N; ++n)
                for (int64_t kb = 0; kb < kc; kb += BL_TQ_BLOCK) {
                    const int64_t b = (k0 + kb) / BL_TQ_BLOCK;
                    out[n * ld_out + (r - r0) * nb + b] =
                        dot_codes(codes + kb, Q + n * K + k0 + kb, BL_TQ_BLOCK) - sum_qb[n * nb + b];
                }
        }
    if (r0 == 0 && r1 > 0 && BL_MAD_FAULT(op)) out[0] += 1;
}

#define BLOCKS_V0(fmt, OPV, OPM, decode)                                                                        \
    void bl_##fmt##_bgemv_v0(const uint8_t *w, const int8_t *q, const int32_t *sum_qb, int32_t *out, int64_t K, \
                             int64_t r0, int64_t r1) {                                                         \
        bgemm_v0(decode, OPV, w, q, sum_qb, out, 1, K, 0, r0, r1);                                             \
    }                                                                                                          \
    void bl_##fmt##_bgemm_v0(const uint8_t *w, const int8_t *Q, const int32_t *sum_qb, int32_t *out, int64_t N, \
                             int64_t K, int64_t ld_out, int64_t r0, int64_t r1) {                              \
        bgemm_v0(decode, OPM, w, Q, sum_qb, out, N, K, ld_out, r0, r1);                                        \
    }
BLOCKS_V0(i2s, BL_OP_I2S_BGEMV, BL_OP_I2S_BGEMM, bl_decode_i2s_scalar)
BLOCKS_V0(tq2, BL_OP_TQ2_BGEMV, BL_OP_TQ2_BGEMM, bl_decode_tq2_scalar)
BLOCKS_V0(tq1, BL_OP_TQ1_BGEMV, BL_OP_TQ1_BGEMM, bl_decode_tq1_scalar)
