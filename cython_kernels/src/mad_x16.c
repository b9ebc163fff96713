/* mad_x16.c — the TQ1_0 x16 layout (bl_mad.h, "The TQ1_0 x16 layout"): the repack from TQ1_0,
 * its inverse for a row range, and the x16 GEMV / GEMM of levels without a native x16 kernel
 * (portable C: they re-order rows onto the stack and call the level's TQ1_0 kernel).
 */
#include <string.h>

#include "bl_mad_impl.h"

#define CODES 52 /* code bytes of a 54-byte TQ1_0 block: qs[0..47], qh[0..3]; the fp16 d follows */

void bl_tq1_x16_interleave(const uint8_t *src, uint8_t *dst, int64_t M, int64_t K) {
    const int64_t cb = bl_tq1_x16_row_bytes(K), words = cb / 4, rb = bl_tq1_row_bytes(K);
    for (int64_t g = 0; g < M; g += BL_X16_ROWS) {
        const int64_t m = M - g < BL_X16_ROWS ? M - g : BL_X16_ROWS;
        uint8_t *group = dst + g * cb;
        for (int64_t i = 0; i < m; ++i) {
            const uint8_t *row = src + (g + i) * rb;
            for (int64_t j = 0; j < words; ++j) { /* word j: bytes 4j..4j+3 of the row's codes */
                const int64_t b = (4 * j) / CODES, o = (4 * j) % CODES; /* 52 % 4 == 0: one block */
                memcpy(group + 4 * m * j + 4 * i, row + BL_TQ1_BLOCK_BYTES * b + o, 4);
            }
        }
    }
}

void bl_tq1_x16_rows(const uint8_t *w, uint8_t *dst, int64_t M, int64_t K, int64_t r0, int64_t r1) {
    const int64_t cb = bl_tq1_x16_row_bytes(K), words = cb / 4, rb = bl_tq1_row_bytes(K), nb = K / BL_TQ_BLOCK;
    for (int64_t r = r0; r < r1; ++r) {
        const int64_t g = r / BL_X16_ROWS * BL_X16_ROWS, i = r - g;
        const int64_t m = M - g < BL_X16_ROWS ? M - g : BL_X16_ROWS;
        const uint8_t *group = w + g * cb;
        uint8_t *row = dst + (r - r0) * rb;
        for (int64_t j = 0; j < words; ++j) {
            const int64_t b = (4 * j) / CODES, o = (4 * j) % CODES;
            memcpy(row + BL_TQ1_BLOCK_BYTES * b + o, group + 4 * m * j + 4 * i, 4);
        }
        for (int64_t b = 0; b < nb; ++b) row[BL_TQ1_BLOCK_BYTES * b + CODES] = row[BL_TQ1_BLOCK_BYTES * b + CODES + 1] = 0;
    }
}

/* The 52 code bytes of one TQ1_0 block of ternary values e[0..255] (docs/formats.md#35-tq1_0-type-34):
 * 5 trits a byte, the first most significant, stored as ⌈v·256/243⌉; qh holds 4 trits and a 0. */
static void tq1_block_codes(const int8_t *e, uint8_t *p) {
    for (int m = 0; m < 32; ++m) {
        int v = 0;
        for (int k = 0; k < 5; ++k) v = 3 * v + (e[m + 32 * k] + 1);
        p[m] = (uint8_t)((v * 256 + 242) / 243);
    }
    for (int m = 0; m < 16; ++m) {
        int v = 0;
        for (int k = 0; k < 5; ++k) v = 3 * v + (e[160 + m + 16 * k] + 1);
        p[32 + m] = (uint8_t)((v * 256 + 242) / 243);
    }
    for (int j = 0; j < 4; ++j) {
        int v = 0;
        for (int k = 0; k < 4; ++k) v = 3 * v + (e[240 + j + 4 * k] + 1);
        p[48 + j] = (uint8_t)((v * 3 * 256 + 242) / 243);
    }
}

void bl_tq1_x16_pack(const int8_t *t, uint8_t *dst, int64_t M, int64_t K) {
    const int64_t nb = K / BL_TQ_BLOCK, cb = bl_tq1_x16_row_bytes(K);
    uint8_t codes[CODES];
    for (int64_t g = 0; g < M; g += BL_X16_ROWS) {
        const int64_t m = M - g < BL_X16_ROWS ? M - g : BL_X16_ROWS;
        uint8_t *group = dst + g * cb;
        for (int64_t i = 0; i < m; ++i)
            for (int64_t b = 0; b < nb; ++b) {
                tq1_block_codes(t + (g + i) * K + BL_TQ_BLOCK * b, codes);
                for (int w = 0; w < CODES / 4; ++w) memcpy(group + 4 * m * (CODES / 4 * b + w) + 4 * i, codes + 4 * w, 4);
            }
    }
}

/* Rows per call of the _via kernels: the GEMV one group; the GEMM two (the amx TQ1_0 GEMM runs
 * whole 32-row panels on its tiles and sends shorter ones to its AVX-512 tail), one when 32 rows
 * of K do not fit the buffer. */
/* The kernels are not told M: a range that ends off a group boundary ends at M (bl_mad.h), and
 * one that ends on a boundary holds only full groups, for which any M past r1 gives m = 16. */
static int64_t range_rows(int64_t r1) { return r1 % BL_X16_ROWS ? r1 : r1 + BL_X16_ROWS; }

#define VIA_BUF (BL_X16_ROWS * (BL_X16_MAX_K / BL_TQ_BLOCK) * BL_TQ1_BLOCK_BYTES)

void bl_tq1_x16_gemv_via(bl_gemv_fn gemv, const uint8_t *w, const int8_t *q, int32_t sum_q, int32_t *out, int64_t K,
                         int64_t r0, int64_t r1) {
    _Alignas(64) uint8_t rows[VIA_BUF];
    const int64_t M = range_rows(r1);
    for (int64_t r = r0; r < r1; r += BL_X16_ROWS) {
        const int64_t n = r1 - r < BL_X16_ROWS ? r1 - r : BL_X16_ROWS;
        bl_tq1_x16_rows(w, rows, M, K, r, r + n);
        gemv(rows, q, sum_q, out + r, K, 0, n);
        out[r] -= BL_MAD_FAULT(BL_OP_TQ1_GEMV); /* the inner call's range started at 0 */
    }
    bl_gemx_fault(BL_OP_TQ1_X16_GEMV, out, r0, r1);
}

void bl_tq1_x16_gemm_via(bl_x16_rows_fn rows_fn, bl_gemm_fn gemm, const uint8_t *w, const int8_t *Q,
                         const int32_t *sum_q, int32_t *out, int64_t N, int64_t K, int64_t ld_out, int64_t r0,
                         int64_t r1) {
    _Alignas(64) uint8_t rows[2 * VIA_BUF];
    const int64_t M = range_rows(r1);
    for (int64_t r = r0; r < r1; r += 2 * BL_X16_ROWS) {
        const int64_t n = r1 - r < 2 * BL_X16_ROWS ? r1 - r : 2 * BL_X16_ROWS;
        rows_fn(w, rows, M, K, r, r + n);
        gemm(rows, Q, sum_q, out + r, N, K, ld_out, 0, n);
        out[r] -= BL_MAD_FAULT(BL_OP_TQ1_GEMM);
    }
    bl_gemx_fault(BL_OP_TQ1_X16_GEMM, out, r0, r1);
}
