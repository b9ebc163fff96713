/* mad_x4.c — the I2_S x4 layout (bl_mad.h, "The I2_S x4 layout"): the repack, its inverse for
 * a row range, and the x4 GEMV / GEMM of levels without a native x4 kernel (portable C: they
 * re-order one group of 4 rows on the stack and call the level's row-major I2_S kernel).
 */
#include <string.h>

#include "bl_mad_impl.h"

#define STEP 64 /* bytes of one row per step: two 128-weight blocks, one 512-bit load */

/* Row i of a full group, in x4 order, as the row-major bytes it holds: `rb` bytes into `row`. */
static void group_row_out(const uint8_t *group, int64_t rb, int i, uint8_t *row) {
    const int64_t steps = rb / STEP;
    for (int64_t s = 0; s < steps; ++s) memcpy(row + STEP * s, group + 4 * STEP * s + STEP * i, STEP);
    if (rb % STEP) memcpy(row + STEP * steps, group + 4 * STEP * steps + (STEP / 2) * i, STEP / 2);
}

void bl_i2s_x4_interleave(const uint8_t *src, uint8_t *dst, int64_t M, int64_t K) {
    const int64_t rb = K / 4, steps = rb / STEP, full = M / 4 * 4;
    for (int64_t g = 0; g < full; g += 4) {
        const uint8_t *rows = src + g * rb;
        uint8_t *group = dst + g * rb;
        for (int i = 0; i < 4; ++i) {
            for (int64_t s = 0; s < steps; ++s) memcpy(group + 4 * STEP * s + STEP * i, rows + i * rb + STEP * s, STEP);
            if (rb % STEP) memcpy(group + 4 * STEP * steps + (STEP / 2) * i, rows + i * rb + STEP * steps, STEP / 2);
        }
    }
    if (M > full) memcpy(dst + full * rb, src + full * rb, (size_t)((M - full) * rb)); /* tail rows: row-major */
}

void bl_tq2_to_i2s(const uint8_t *src, uint8_t *dst, int64_t M, int64_t K) {
    /* TQ2_0 qs byte 32h + m holds elements 128h + m + 32j at bits 2j+1:2j; I2_S block 2b + h,
     * byte m holds the same four elements MSB-first (docs/formats.md#31-i2_s-type-36,
     * docs/formats.md#34-tq2_0-type-35): reverse the fields. */
    const int64_t blocks = M * (K / 256);
    for (int64_t b = 0; b < blocks; ++b) {
        const uint8_t *qs = src + b * 66;
        uint8_t *out = dst + b * 64;
        for (int i = 0; i < 64; ++i) {
            const uint8_t v = qs[i];
            out[i] = (uint8_t)(((v & 0x03) << 6) | ((v & 0x0C) << 2) | ((v & 0x30) >> 2) | ((v & 0xC0) >> 6));
        }
    }
}

void bl_i2s_x4_rows(const uint8_t *w, uint8_t *dst, int64_t K, int64_t r0, int64_t r1) {
    const int64_t rb = K / 4;
    int64_t r = r0;
    for (; r + 4 <= r1; r += 4)
        for (int i = 0; i < 4; ++i) group_row_out(w + r * rb, rb, i, dst + (r - r0 + i) * rb);
    if (r < r1) memcpy(dst + (r - r0) * rb, w + r * rb, (size_t)((r1 - r) * rb)); /* tail rows (r1 == M) */
}

void bl_i2s_x4_gemv_via(bl_gemv_fn gemv, const uint8_t *w, const int8_t *q, int32_t sum_q, int32_t *out, int64_t K,
                        int64_t r0, int64_t r1) {
    uint8_t rows[4 * (BL_X4_MAX_K / 4)]; /* one group, row-major: ≤ 64 KiB */
    for (int64_t r = r0; r < r1; r += 4) {
        const int64_t n = r1 - r < 4 ? r1 - r : 4;
        bl_i2s_x4_rows(w, rows, K, r, r + n);
        gemv(rows, q, sum_q, out + r, K, 0, n);
        out[r] -= BL_MAD_FAULT(BL_OP_I2S_GEMV); /* the inner call's range started at 0 */
    }
    bl_gemx_fault(BL_OP_I2S_X4_GEMV, out, r0, r1);
}

void bl_i2s_x4_gemm_via(bl_gemm_fn gemm, const uint8_t *w, const int8_t *Q, const int32_t *sum_q, int32_t *out,
                        int64_t N, int64_t K, int64_t ld_out, int64_t r0, int64_t r1) {
    uint8_t rows[4 * (BL_X4_MAX_K / 4)];
    for (int64_t r = r0; r < r1; r += 4) {
        const int64_t n = r1 - r < 4 ? r1 - r : 4;
        bl_i2s_x4_rows(w, rows, K, r, r + n);
        gemm(rows, Q, sum_q, out + r, N, K, ld_out, 0, n);
        out[r] -= BL_MAD_FAULT(BL_OP_I2S_GEMM);
    }
    bl_gemx_fault(BL_OP_I2S_X4_GEMM, out, r0, r1);
}
