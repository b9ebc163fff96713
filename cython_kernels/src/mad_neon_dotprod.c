/* mad_neon_dotprod.c — I2_S GEMV/GEMM for the neon_dotprod level (NEON + SDOT).
 *
 * Compiled with -march=armv8.2-a+dotprod (setup.py); dispatched only when the CPU reports
 * ASIMDDP. Canonical 128/32 layout as in mad_neon.c. vdotq_s32 (SDOT) is signed × signed:
 * feeding the codes 0..2 as s8 is exact (docs/kernels.md#24-vnni-and-dot-product-instructions), and the four
 * products of each group go straight into int32 lanes — no int16 stage. Two rows per step share the
 * activation loads. GEMM: this GEMV once per token row (no activation-parallel reuse on NEON yet).
 */
#include <arm_neon.h>

#include "bl_mad_impl.h"

#define ALWAYS_INLINE static inline __attribute__((always_inline))

ALWAYS_INLINE int8x16_t plane16(uint8x16_t v, const int shift) {
    return vreinterpretq_s8_u8(vandq_u8(vshlq_u8(v, vdupq_n_s8((int8_t)-shift)), vdupq_n_u8(3)));
}

ALWAYS_INLINE void rows(const uint8_t *w_row0, int64_t row_bytes, const int8_t *q, int64_t nb, const int R,
                        int32_t *res) {
    int32x4_t acc[2];
    for (int i = 0; i < R; ++i) acc[i] = vdupq_n_s32(0);
    for (int64_t b = 0; b < nb; ++b) {
        for (int h = 0; h < 2; ++h) {
            uint8x16_t v[2];
            for (int i = 0; i < R; ++i) v[i] = vld1q_u8(w_row0 + i * row_bytes + 32 * b + 16 * h);
            for (int p = 0; p < 4; ++p) {
                const int8x16_t a = vld1q_s8(q + 128 * b + 32 * p + 16 * h);
                for (int i = 0; i < R; ++i) acc[i] = vdotq_s32(acc[i], plane16(v[i], 6 - 2 * p), a);
            }
        }
    }
    for (int i = 0; i < R; ++i) res[i] = vaddvq_s32(acc[i]);
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

void bl_i2s_gemv_neon_dotprod(const uint8_t *w, const int8_t *q, int32_t sum_q, int32_t *out, int64_t K, int64_t r0,
                              int64_t r1) {
    gemv_core(w, q, sum_q, out, K, r0, r1);
    bl_gemx_fault(BL_OP_I2S_GEMV, out, r0, r1);
}

void bl_i2s_gemm_neon_dotprod(const uint8_t *w, const int8_t *Q, const int32_t *sum_q, int32_t *out, int64_t N,
                              int64_t K, int64_t ld_out, int64_t r0, int64_t r1) {
    for (int64_t n = 0; n < N; ++n) gemv_core(w, Q + n * K, sum_q[n], out + n * ld_out, K, r0, r1);
    bl_gemx_fault(BL_OP_I2S_GEMM, out, r0, r1);
}
