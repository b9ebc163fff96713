/* lut_scalar.c — portable TL1 / TL2 LUT kernels (the reference the SIMD files must equal)
 * and the exact invalid-index scans every level uses. Contract: bl_lut.h; layouts:
 * bl_lut_layout.h. Compiled with no ISA flags.
 *
 * The scalar GEMVs accumulate straight into int32 (no int16 stage) and read the LUT through
 * its byte planes, so they check the byte-plane layout as well as the table values.
 */
#include "bl_lut.h"
#include "bl_lut_layout.h"

/* Weight digits behind each table entry (docs/kernels.md#31-lut-construction-per-activation-row,
 * docs/kernels.md#41-lut-construction); padding entries are 0. */
static const int8_t TL1_T0[16] = {-1, -1, -1, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0};
static const int8_t TL1_T1[16] = {-1, 0, 1, -1, 0, 1, -1, 0, 1, 0, 0, 0, 0, 0, 0, 0};
static const int8_t TL2_T0[16] = {0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0};
static const int8_t TL2_T1[16] = {0, 0, 1, 1, 1, -1, -1, -1, 0, 0, 0, 1, 1, 1, 0, 0};
static const int8_t TL2_T2[16] = {0, 1, -1, 0, 1, -1, 0, 1, -1, 0, 1, -1, 0, 1, 0, 0};

/* Store 16 int16 entries as one byte-plane table: low bytes, then high bytes. */
static void put_table(uint8_t *t, const int16_t e[16]) {
    for (int i = 0; i < 16; ++i) {
        uint16_t u = (uint16_t)e[i];
        t[i] = (uint8_t)(u & 0xFF);
        t[16 + i] = (uint8_t)(u >> 8);
    }
}

/* Entry `idx` of table j, re-formed from its two byte planes. */
static inline int32_t entry(const uint8_t *lut, int64_t j, unsigned idx) {
    const uint8_t *t = lut + BL_LUT_TABLE_BYTES * j;
    return (int16_t)(uint16_t)(t[idx] | ((unsigned)t[16 + idx] << 8));
}

static void tl1_tables(const int8_t *q, int64_t K, uint8_t *lut) {
    int16_t e[16];
    for (int64_t j = 0; j < K / 2; ++j) {
        for (int u = 0; u < 16; ++u)  /* |t0*b0 + t1*b1| <= 256: exact in int16 */
            e[u] = (int16_t)(TL1_T0[u] * q[2 * j] + TL1_T1[u] * q[2 * j + 1]);
        put_table(lut + BL_LUT_TABLE_BYTES * j, e);
    }
}

void bl_tl1_build_lut_scalar(const int8_t *q, int64_t K, uint8_t *lut) {
    tl1_tables(q, K, lut);
    bl_lut_fault_table(BL_FAULT_TL1_BUILD_LUT, lut, K);
}

void bl_tl2_build_lut_scalar(const int8_t *q, int64_t K, int64_t BK, uint8_t *lut) {
    const int64_t K3 = bl_tl2_three_k(K, BK);
    int16_t e[16];
    for (int64_t j = 0; j < K3 / 3; ++j) {
        const int8_t *b = q + 3 * j;
        for (int m = 0; m < 16; ++m)  /* |.| <= 384 */
            e[m] = (int16_t)(TL2_T0[m] * b[0] + TL2_T1[m] * b[1] + TL2_T2[m] * b[2]);
        put_table(lut + BL_LUT_TABLE_BYTES * j, e);
    }
    tl1_tables(q + K3, K - K3, lut + BL_LUT_TABLE_BYTES * (K3 / 3));
    bl_lut_fault_table(BL_FAULT_TL2_BUILD_LUT, lut, K);
}

/* ---- TL1 ------------------------------------------------------------------------------- */

bl_lut_status bl_tl1_gemv_scalar(const uint8_t *data, const uint8_t *lut, int64_t M, int64_t K,
                                 int64_t BM, int64_t BK, int64_t bm, int64_t r0, int64_t r1,
                                 int32_t *out) {
    (void)M;
    bl_lut_status st = {0, -1};
    const int64_t by = 256 / bm, subs = BM / bm;
    int32_t acc[64];
    for (int64_t s = r0 / bm; s < r1 / bm; ++s) {
        const int64_t mt = s / subs, bt = s % subs;
        for (int i = 0; i < bm; ++i) acc[i] = 0;
        for (int64_t kt = 0; kt < K / BK; ++kt) {
            const int64_t base = bl_tl1_block_offset(K, BM, BK, bm, mt, kt, bt);
            const uint8_t *blk = data + base;
            for (int64_t yb = 0; yb < BK / by; ++yb) {
                const int64_t pair0 = kt * (BK / 2) + yb * (by / 2); /* first table of the block */
                for (int64_t rc = 0; rc < bm / 16; ++rc)
                    for (int64_t pq = 0; pq < by / 4; ++pq)
                        for (int r16 = 0; r16 < 16; ++r16) {
                            const int64_t off = ((yb * (bm / 16) + rc) * (by / 4) + pq) * 16 + r16;
                            const unsigned b = blk[off], hi = b >> 4, lo = b & 0x0F;
                            if (hi > BL_TL1_MAX_INDEX) BL_LUT_BAD(st, base + off);
                            if (lo > BL_TL1_MAX_INDEX) BL_LUT_BAD(st, base + off);
                            acc[rc * 16 + r16] +=
                                entry(lut, pair0 + 2 * pq, hi) + entry(lut, pair0 + 2 * pq + 1, lo);
                        }
            }
        }
        for (int i = 0; i < bm; ++i) out[s * bm + i] = acc[i];
    }
    return bl_lut_fault_out(BL_FAULT_TL1_GEMV, st, out, r0, r1);
}

bl_lut_status bl_tl1_scan(const uint8_t *data, int64_t M, int64_t K, int64_t BM, int64_t BK,
                          int64_t bm, int64_t r0, int64_t r1) {
    (void)M;
    bl_lut_status st = {0, -1};
    const int64_t subs = BM / bm, nbytes = bm * BK / 4;
    for (int64_t s = r0 / bm; s < r1 / bm; ++s)
        for (int64_t kt = 0; kt < K / BK; ++kt) {
            const int64_t base = bl_tl1_block_offset(K, BM, BK, bm, s / subs, kt, s % subs);
            for (int64_t i = 0; i < nbytes; ++i) {
                const unsigned b = data[base + i];
                if ((b >> 4) > BL_TL1_MAX_INDEX) BL_LUT_BAD(st, base + i);
                if ((b & 0x0F) > BL_TL1_MAX_INDEX) BL_LUT_BAD(st, base + i);
            }
        }
    return st;
}

/* ---- TL2 ------------------------------------------------------------------------------- */

/* Sign (1 = negative) of triple g8 (0..7) of a unit, row r (0..31) of the sub-tile. */
static inline unsigned tl2_sign(const uint8_t *unit, int g8, int r) {
    const int c = r % 16, s = 2 * g8 + r / 16;
    const unsigned w = unit[2 * c] | ((unsigned)unit[2 * c + 1] << 8); /* little-endian word */
    return (w >> (15 - s)) & 1u;
}

bl_lut_status bl_tl2_gemv_scalar(const uint8_t *data, const uint8_t *lut, int64_t M, int64_t K,
                                 int64_t BM, int64_t BK, int64_t r0, int64_t r1, int32_t *out) {
    bl_lut_status st = {0, -1};
    const int64_t K3 = bl_tl2_three_k(K, BK), K2 = K - K3, subs = BM / 32;
    const uint8_t *tail_lut = lut + BL_LUT_TABLE_BYTES * (K3 / 3);
    int32_t acc[32];
    for (int64_t s = r0 / 32; s < r1 / 32; ++s) {
        const int64_t mt = s / subs, bt = s % subs;
        for (int i = 0; i < 32; ++i) acc[i] = 0;
        for (int64_t kt = 0; kt < K3 / BK; ++kt) {
            const int64_t ibase = bl_tl2_index_offset(K3, BM, BK, mt, kt, bt);
            const uint8_t *signs = data + bl_tl2_sign_offset(M, K3, BM, BK, mt, kt, bt);
            for (int64_t yb = 0; yb < BK / 6; ++yb) {
                const int64_t tri0 = kt * (BK / 3) + 2 * yb;  /* triple of the high nibble */
                const uint8_t *unit = signs + 32 * (yb / 4);
                const int g8 = (int)(2 * (yb % 4));              /* its place in the unit */
                for (int p = 0; p < 32; ++p) {
                    const int64_t off = ibase + 32 * yb + p;
                    const unsigned b = data[off], hi = b >> 4, lo = b & 0x0F;
                    const int r = bl_tl2_row_of_byte(p);
                    if (hi > BL_TL2_MAX_MAG) BL_LUT_BAD(st, off);
                    if (lo > BL_TL2_MAX_MAG) BL_LUT_BAD(st, off);
                    const int32_t e0 = entry(lut, tri0, hi), e1 = entry(lut, tri0 + 1, lo);
                    acc[r] += (tl2_sign(unit, g8, r) ? -e0 : e0) + (tl2_sign(unit, g8 + 1, r) ? -e1 : e1);
                }
            }
        }
        for (int64_t kt2 = 0; kt2 < K2 / BL_TL2_TAIL_BK; ++kt2) {
            const int64_t tbase = bl_tl2_tail_offset(M, K3, K2, BM, mt, kt2, bt);
            for (int64_t yb = 0; yb < 8; ++yb) {
                const int64_t pair0 = kt2 * 16 + 2 * yb;
                for (int p = 0; p < 32; ++p) {
                    const int64_t off = tbase + 32 * yb + p;
                    const unsigned b = data[off], hi = b >> 4, lo = b & 0x0F;
                    if (hi > BL_TL1_MAX_INDEX) BL_LUT_BAD(st, off);
                    if (lo > BL_TL1_MAX_INDEX) BL_LUT_BAD(st, off);
                    acc[bl_tl2_row_of_byte(p)] += entry(tail_lut, pair0, hi) + entry(tail_lut, pair0 + 1, lo);
                }
            }
        }
        for (int i = 0; i < 32; ++i) out[s * 32 + i] = acc[i];
    }
    return bl_lut_fault_out(BL_FAULT_TL2_GEMV, st, out, r0, r1);
}

bl_lut_status bl_tl2_scan(const uint8_t *data, int64_t M, int64_t K, int64_t BM, int64_t BK,
                          int64_t r0, int64_t r1) {
    bl_lut_status st = {0, -1};
    const int64_t K3 = bl_tl2_three_k(K, BK), K2 = K - K3, subs = BM / 32;
    for (int64_t s = r0 / 32; s < r1 / 32; ++s) {
        const int64_t mt = s / subs, bt = s % subs;
        for (int64_t kt = 0; kt < K3 / BK; ++kt) {
            const int64_t base = bl_tl2_index_offset(K3, BM, BK, mt, kt, bt);
            for (int64_t i = 0; i < BK / 6 * 32; ++i) {
                const unsigned b = data[base + i];
                if ((b >> 4) > BL_TL2_MAX_MAG) BL_LUT_BAD(st, base + i);
                if ((b & 0x0F) > BL_TL2_MAX_MAG) BL_LUT_BAD(st, base + i);
            }
        }
        for (int64_t kt2 = 0; kt2 < K2 / BL_TL2_TAIL_BK; ++kt2) {
            const int64_t base = bl_tl2_tail_offset(M, K3, K2, BM, mt, kt2, bt);
            for (int64_t i = 0; i < 256; ++i) {
                const unsigned b = data[base + i];
                if ((b >> 4) > BL_TL1_MAX_INDEX) BL_LUT_BAD(st, base + i);
                if ((b & 0x0F) > BL_TL1_MAX_INDEX) BL_LUT_BAD(st, base + i);
            }
        }
    }
    return st;
}

/* ---- TL1 / TL2 back to ternary values (the engine's load-time transcode, bl_lut.h) ---------- */

bl_lut_status bl_tl1_ternary(const uint8_t *data, int64_t M, int64_t K, int64_t BM, int64_t BK, int64_t bm,
                             int64_t r0, int64_t r1, int8_t *t) {
    (void)M;
    bl_lut_status st = {0, -1};
    const int64_t by = 256 / bm, subs = BM / bm;
    for (int64_t s = r0 / bm; s < r1 / bm; ++s) {
        const int64_t mt = s / subs, bt = s % subs;
        int8_t *rows = t + (s * bm - r0) * K; /* row rc·16 + r16 of the sub-tile */
        for (int64_t kt = 0; kt < K / BK; ++kt) {
            const int64_t base = bl_tl1_block_offset(K, BM, BK, bm, mt, kt, bt);
            for (int64_t yb = 0; yb < BK / by; ++yb) {
                const int64_t pair0 = kt * (BK / 2) + yb * (by / 2);
                for (int64_t rc = 0; rc < bm / 16; ++rc)
                    for (int64_t pq = 0; pq < by / 4; ++pq)
                        for (int r16 = 0; r16 < 16; ++r16) {
                            const int64_t off = base + ((yb * (bm / 16) + rc) * (by / 4) + pq) * 16 + r16;
                            const unsigned b = data[off], hi = b >> 4, lo = b & 0x0F;
                            if (hi > BL_TL1_MAX_INDEX) BL_LUT_BAD(st, off);
                            if (lo > BL_TL1_MAX_INDEX) BL_LUT_BAD(st, off);
                            int8_t *w = rows + (rc * 16 + r16) * K + 2 * (pair0 + 2 * pq);
                            w[0] = TL1_T0[hi], w[1] = TL1_T1[hi], w[2] = TL1_T0[lo], w[3] = TL1_T1[lo];
                        }
            }
        }
    }
    return st;
}

bl_lut_status bl_tl2_ternary(const uint8_t *data, int64_t M, int64_t K, int64_t BM, int64_t BK, int64_t r0,
                             int64_t r1, int8_t *t) {
    bl_lut_status st = {0, -1};
    const int64_t K3 = bl_tl2_three_k(K, BK), K2 = K - K3, subs = BM / 32;
    for (int64_t s = r0 / 32; s < r1 / 32; ++s) {
        const int64_t mt = s / subs, bt = s % subs;
        int8_t *rows = t + (s * 32 - r0) * K;
        for (int64_t kt = 0; kt < K3 / BK; ++kt) {
            const int64_t ibase = bl_tl2_index_offset(K3, BM, BK, mt, kt, bt);
            const uint8_t *signs = data + bl_tl2_sign_offset(M, K3, BM, BK, mt, kt, bt);
            for (int64_t yb = 0; yb < BK / 6; ++yb) {
                const int64_t tri0 = kt * (BK / 3) + 2 * yb; /* triple of the high nibble */
                const uint8_t *unit = signs + 32 * (yb / 4);
                const int g8 = (int)(2 * (yb % 4));
                for (int p = 0; p < 32; ++p) {
                    const int64_t off = ibase + 32 * yb + p;
                    const unsigned b = data[off], hi = b >> 4, lo = b & 0x0F;
                    const int r = bl_tl2_row_of_byte(p);
                    if (hi > BL_TL2_MAX_MAG) BL_LUT_BAD(st, off);
                    if (lo > BL_TL2_MAX_MAG) BL_LUT_BAD(st, off);
                    const unsigned m[2] = {hi > BL_TL2_MAX_MAG ? 0 : hi, lo > BL_TL2_MAX_MAG ? 0 : lo};
                    for (int e = 0; e < 2; ++e) {
                        const int neg = (int)tl2_sign(unit, g8 + e, r);
                        int8_t *w = rows + r * K + 3 * (tri0 + e);
                        w[0] = (int8_t)(neg ? -TL2_T0[m[e]] : TL2_T0[m[e]]);
                        w[1] = (int8_t)(neg ? -TL2_T1[m[e]] : TL2_T1[m[e]]);
                        w[2] = (int8_t)(neg ? -TL2_T2[m[e]] : TL2_T2[m[e]]);
                    }
                }
            }
        }
        for (int64_t kt2 = 0; kt2 < K2 / BL_TL2_TAIL_BK; ++kt2) {
            const int64_t tbase = bl_tl2_tail_offset(M, K3, K2, BM, mt, kt2, bt);
            for (int64_t yb = 0; yb < 8; ++yb) {
                const int64_t pair0 = kt2 * 16 + 2 * yb;
                for (int p = 0; p < 32; ++p) {
                    const int64_t off = tbase + 32 * yb + p;
                    const unsigned b = data[off], hi = b >> 4, lo = b & 0x0F;
                    if (hi > BL_TL1_MAX_INDEX) BL_LUT_BAD(st, off);
                    if (lo > BL_TL1_MAX_INDEX) BL_LUT_BAD(st, off);
                    int8_t *w = rows + bl_tl2_row_of_byte(p) * K + K3 + 2 * pair0;
                    w[0] = TL1_T0[hi], w[1] = TL1_T1[hi], w[2] = TL1_T0[lo], w[3] = TL1_T1[lo];
                }
            }
        }
    }
    return st;
}
