/* mad_neon.c — I2_S GEMV/GEMM for the neon level (aarch64 Advanced SIMD, no dot product).
 *
 * Reads the CANONICAL 128/32 layout (docs/formats.md#31-i2_s-type-36), not bitnet.cpp's ARM 64/16 one
 * (the wrong-output bug of docs/kernels.md#10-known-bitnetcpp-bugs-and-limits, row 1): a 16-byte vector
 * is half h of a 32-byte block, and its plane p (shift 6 − 2p) is elements 32p + 16h .. +15, so it lines
 * up with one plain 16-byte activation load.
 *
 * Multiply: vmull_s8 / vmlal_high_s8 — codes 0..2 as s8 times s8 activations, each product into
 * its own int16 lane (|c·q| ≤ 256). Two int16 accumulators (low and high 8 bytes), so per
 * 128-weight block a lane receives 2 halves × 4 planes = 8 products; widened (vpadalq_s16 into
 * int32) every 16 blocks: at most 128 products, within [−32768, 32512]
 * (docs/kernels.md#23-the-int16-overflow-bound-and-a-safer-widening-rule — the 32-block interval of
 * bitnet.cpp's non-dotprod path overflows on ARMv8.0, #411). Two weight rows per step share the
 * activation loads.
 * GEMM: this GEMV once per token row (no activation-parallel reuse on NEON yet).
 */
#include <arm_neon.h>

#include "bl_mad_impl.h"

#define ALWAYS_INLINE static inline __attribute__((always_inline))

ALWAYS_INLINE uint8x16_t plane16(uint8x16_t v, const int shift) {
    /* vshlq with a negative count is a right shift; the count is a constant after inlining */
    return vandq_u8(vshlq_u8(v, vdupq_n_s8((int8_t)-shift)), vdupq_n_u8(3));
}

ALWAYS_INLINE void rows(const uint8_t *w_row0, int64_t row_bytes, const int8_t *q, int64_t nb, const int R,
                        int32_t *res) {
    int32x4_t acc32[2];
    int16x8_t lo[2], hi[2];
    for (int i = 0; i < R; ++i) acc32[i] = vdupq_n_s32(0);
    for (int64_t b0 = 0; b0 < nb; b0 += 16) { /* widen every 16 blocks */
        const int64_t b1 = b0 + 16 < nb ? b0 + 16 : nb;
        for (int i = 0; i < R; ++i) lo[i] = hi[i] = vdupq_n_s16(0);
        for (int64_t b = b0; b < b1; ++b) {
            for (int h = 0; h < 2; ++h) {
                uint8x16_t v[2];
                for (int i = 0; i < R; ++i) v[i] = vld1q_u8(w_row0 + i * row_bytes + 32 * b + 16 * h);
                for (int p = 0; p < 4; ++p) {
                    const int8x16_t a = vld1q_s8(q + 128 * b + 32 * p + 16 * h);
                    for (int i = 0; i < R; ++i) {
                        const int8x16_t c = vreinterpretq_s8_u8(plane16(v[i], 6 - 2 * p));
                        lo[i] = vmlal_s8(lo[i], vget_low_s8(c), vget_low_s8(a));
                        hi[i] = vmlal_high_s8(hi[i], c, a);
                    }
                }
            }
        }
        for (int i = 0; i < R; ++i) acc32[i] = vpadalq_s16(vpadalq_s16(acc32[i], lo[i]), hi[i]);
    }
    for (int i = 0; i < R; ++i) res[i] = vaddvq_s32(acc32[i]);
}

static void gemv_core(const uint8_t *w, const int8_t *q, int32_t sum_q, int32_t *out, int64_t K, int64_t r0,
                      int64_t r1) {
    const int64_t rb = bl_i2s_row_bytes(K), nb = K / 128;
    int32_t res[2];
    int64_t r = r0;
    for (; r + 2 <= r1; r += 2) {
        rows(w + r * rb, rb, q, nb, 2, res);
        out[r] = res[0] - sum_q;
        out[r + 1] = res[1] - sum_q;
    }
    for (; r < r1; ++r) {
        rows(w + r * rb, rb, q, nb, 1, res);
        out[r] = res[0] - sum_q;
    }
}

void bl_i2s_gemv_neon(const uint8_t *w, const int8_t *q, int32_t sum_q, int32_t *out, int64_t K, int64_t r0,
                      int64_t r1) {
    gemv_core(w, q, sum_q, out, K, r0, r1);
    bl_gemx_fault(BL_OP_I2S_GEMV, out, r0, r1);
}

void bl_i2s_gemm_neon(const uint8_t *w, const int8_t *Q, const int32_t *sum_q, int32_t *out, int64_t N, int64_t K,
                      int64_t ld_out, int64_t r0, int64_t r1) {
    for (int64_t n = 0; n < N; ++n) gemv_core(w, Q + n * K, sum_q[n], out + n * ld_out, K, r0, r1);
    bl_gemx_fault(BL_OP_I2S_GEMM, out, r0, r1);
}
