/* lut_neon.c — TL1 / TL2 LUT kernels for aarch64 Advanced SIMD (baseline, no flags).
 * Contract: bl_lut.h; layouts: bl_lut_layout.h. Tested on x86 hosts by cross-compiling and
 * running under qemu-aarch64 (cython_kernels/tests/run_lut_c_tests.sh).
 *
 * Lookups: a 16-byte LUT plane is a vqtbl1q_u8 table. The 4-bit indices of 16 bytes are looked
 * up in the low-byte and the high-byte plane; vzip1q/vzip2q of the two results re-form the
 * int16 entries of bytes 0..7 and 8..15 (little-endian). int16 accumulation over a bounded
 * run of compute blocks, widened into int32 (bl_lut.h). Invalid indices: a running byte max,
 * then the exact scan of lut_scalar.c when it fired.
 */
#include <arm_neon.h>

#include "bl_lut.h"
#include "bl_lut_layout.h"

/* ---- LUT construction ---------------------------------------------------------------- */

/* Entries e0 (0..7) and e1 (8..15) -> one byte-plane table. */
static inline void store_planes(uint8_t *dst, int16x8_t e0, int16x8_t e1) {
    const uint8x16_t b0 = vreinterpretq_u8_s16(e0), b1 = vreinterpretq_u8_s16(e1);
    vst1q_u8(dst, vuzp1q_u8(b0, b1));      /* even bytes: the low bytes */
    vst1q_u8(dst + 16, vuzp2q_u8(b0, b1)); /* odd bytes: the high bytes */
}

static void tl1_tables(const int8_t *q, int64_t K, uint8_t *lut) {
    /* digits (t0, t1) of entry u = 3*t0 + t1 + 4; padding entries are 0 */
    static const int16_t T0[16] = {-1, -1, -1, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0};
    static const int16_t T1[16] = {-1, 0, 1, -1, 0, 1, -1, 0, 1, 0, 0, 0, 0, 0, 0, 0};
    const int16x8_t t0a = vld1q_s16(T0), t0b = vld1q_s16(T0 + 8);
    const int16x8_t t1a = vld1q_s16(T1), t1b = vld1q_s16(T1 + 8);
    for (int64_t j = 0; j < K / 2; ++j) {
        const int16_t b0 = q[2 * j], b1 = q[2 * j + 1];
        /* t0*b0 + t1*b1, |.| <= 256 */
        store_planes(lut + BL_LUT_TABLE_BYTES * j, vmlaq_n_s16(vmulq_n_s16(t0a, b0), t1a, b1),
                     vmlaq_n_s16(vmulq_n_s16(t0b, b0), t1b, b1));
    }
}

void bl_tl1_build_lut_neon(const int8_t *q, int64_t K, uint8_t *lut) {
    tl1_tables(q, K, lut);
    bl_lut_fault_table(BL_FAULT_TL1_BUILD_LUT, lut, K);
}

void bl_tl2_build_lut_neon(const int8_t *q, int64_t K, int64_t BK, uint8_t *lut) {
    /* digits of magnitude m = 9*t0 + 3*t1 + t2 (leading digit positive); 14, 15 are 0 */
    static const int16_t T0[16] = {0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0};
    static const int16_t T1[16] = {0, 0, 1, 1, 1, -1, -1, -1, 0, 0, 0, 1, 1, 1, 0, 0};
    static const int16_t T2[16] = {0, 1, -1, 0, 1, -1, 0, 1, -1, 0, 1, -1, 0, 1, 0, 0};
    const int16x8_t t0a = vld1q_s16(T0), t0b = vld1q_s16(T0 + 8);
    const int16x8_t t1a = vld1q_s16(T1), t1b = vld1q_s16(T1 + 8);
    const int16x8_t t2a = vld1q_s16(T2), t2b = vld1q_s16(T2 + 8);
    const int64_t K3 = bl_tl2_three_k(K, BK);
    for (int64_t j = 0; j < K3 / 3; ++j) {
        const int16_t b0 = q[3 * j], b1 = q[3 * j + 1], b2 = q[3 * j + 2];
        /* |.| <= 384 */
        store_planes(lut + BL_LUT_TABLE_BYTES * j,
                     vmlaq_n_s16(vmlaq_n_s16(vmulq_n_s16(t0a, b0), t1a, b1), t2a, b2),
                     vmlaq_n_s16(vmlaq_n_s16(vmulq_n_s16(t0b, b0), t1b, b1), t2b, b2));
    }
    tl1_tables(q + K3, K - K3, lut + BL_LUT_TABLE_BYTES * (K3 / 3));
    bl_lut_fault_table(BL_FAULT_TL2_BUILD_LUT, lut, K);
}

/* ---- lookups --------------------------------------------------------------------------- */

/* One table's two planes. */
typedef struct {
    uint8x16_t lo, hi;
} table;

static inline table load_table(const uint8_t *t) {
    table r = {vld1q_u8(t), vld1q_u8(t + 16)};
    return r;
}

/* Entries of table t at the 16 indices idx: e0 for bytes 0..7, e1 for bytes 8..15. */
static inline void lookup(table t, uint8x16_t idx, int16x8_t *e0, int16x8_t *e1) {
    const uint8x16_t l = vqtbl1q_u8(t.lo, idx), h = vqtbl1q_u8(t.hi, idx);
    *e0 = vreinterpretq_s16_u8(vzip1q_u8(l, h));
    *e1 = vreinterpretq_s16_u8(vzip2q_u8(l, h));
}

static inline int32x4_t widen_lo(int32x4_t acc, int16x8_t v) { return vaddw_s16(acc, vget_low_s16(v)); }
static inline int32x4_t widen_hi(int32x4_t acc, int16x8_t v) { return vaddw_high_s16(acc, v); }

/* ---- TL1 GEMV ----------------------------------------------------------------------------
 * Sub-tiles in groups, blob order (bl_lut_group). A compute block is four 16-byte chunks c;
 * chunk c holds rows rc*16 .. +15 for the pairs (2pq, 2pq + 1) (high, low nibble) with
 * (rc, pq) = (c/2, c%2) for bm = 32 and (c, 0) for bm = 64. The int16 accumulator of 8 rows
 * adds by/2 entries (|e| <= 256) per block: widened at the latest after 127/(by/2) blocks,
 * and at the end of every (K-tile, sub-tile) block. */

/* acc[0 .. 8n) += the int16 accumulators a[0 .. n), which are reset. */
static inline void widen_into(int16x8_t *a, int n, int32_t *acc) {
    for (int i = 0; i < n; ++i) {
        vst1q_s32(acc + 8 * i, widen_lo(vld1q_s32(acc + 8 * i), a[i]));
        vst1q_s32(acc + 8 * i + 4, widen_hi(vld1q_s32(acc + 8 * i + 4), a[i]));
        a[i] = vdupq_n_s16(0);
    }
}

/* acc[0 .. bm) += the sums of one (K-tile, sub-tile) block: index bytes blk, tables L. */
static inline void tl1_block(const uint8_t *blk, const uint8_t *L, int64_t bm, int64_t nyb,
                             uint8x16_t *mx, int32_t *acc) {
    const int64_t npairs = 128 / bm, flush = 127 / npairs; /* by/2 pairs per compute block */
    const uint8x16_t m4 = vdupq_n_u8(0x0F);
    int16x8_t a[8]; /* rows 8i .. 8i+7 */
    for (int i = 0; i < 8; ++i) a[i] = vdupq_n_s16(0);
    int64_t pending = 0;
    for (int64_t yb = 0; yb < nyb; ++yb) {
        const uint8_t *T = L + BL_LUT_TABLE_BYTES * (yb * npairs);
        table t[4];
        for (int p = 0; p < npairs; ++p) t[p] = load_table(T + BL_LUT_TABLE_BYTES * p);
        for (int c = 0; c < 4; ++c) {
            const int rc = bm == 32 ? c / 2 : c, pq = bm == 32 ? c % 2 : 0;
            const uint8x16_t x = vld1q_u8(blk + 64 * yb + 16 * c);
            const uint8x16_t hi = vshrq_n_u8(x, 4), lo = vandq_u8(x, m4);
            *mx = vmaxq_u8(*mx, vmaxq_u8(hi, lo));
            int16x8_t a0, a1, b0, b1;
            lookup(t[2 * pq], hi, &a0, &a1);
            lookup(t[2 * pq + 1], lo, &b0, &b1);
            a[2 * rc] = vaddq_s16(a[2 * rc], vaddq_s16(a0, b0));
            a[2 * rc + 1] = vaddq_s16(a[2 * rc + 1], vaddq_s16(a1, b1));
        }
        if (++pending == flush) {
            widen_into(a, (int)(bm / 8), acc);
            pending = 0;
        }
    }
    if (pending) widen_into(a, (int)(bm / 8), acc);
}

bl_lut_status bl_tl1_gemv_neon(const uint8_t *data, const uint8_t *lut, int64_t M, int64_t K,
                               int64_t BM, int64_t BK, int64_t bm, int64_t r0, int64_t r1,
                               int32_t *out) {
    const int64_t subs = BM / bm, nyb = BK / (256 / bm), s1 = r1 / bm;
    uint8x16_t mx = vdupq_n_u8(0);
    int32_t acc[BL_LUT_GROUP * 64];
    for (int64_t s = r0 / bm; s < s1;) {
        const int64_t mt = s / subs, bt0 = s % subs, g = bl_lut_group(s, s1, subs);
        for (int64_t i = 0; i < g * bm; ++i) acc[i] = 0;
        for (int64_t kt = 0; kt < K / BK; ++kt) {
            const uint8_t *L = lut + BL_LUT_TABLE_BYTES * (kt * (BK / 2));
            for (int64_t b = 0; b < g; ++b)
                tl1_block(data + bl_tl1_block_offset(K, BM, BK, bm, mt, kt, bt0 + b), L, bm, nyb, &mx, acc + b * bm);
        }
        for (int64_t i = 0; i < g * bm; ++i) out[s * bm + i] = acc[i];
        s += g;
    }
    if (vmaxvq_u8(mx) > BL_TL1_MAX_INDEX) return bl_tl1_scan(data, M, K, BM, BK, bm, r0, r1);
    bl_lut_status ok = {0, -1};
    return bl_lut_fault_out(BL_FAULT_TL1_GEMV, ok, out, r0, r1);
}

/* ---- TL2 GEMV ----------------------------------------------------------------------------
 * Sub-tiles in groups, blob order. A compute block is 32 bytes: half h0 = bytes 0..15 (rows
 * 0-7, then rows 16-23) and half h1 = bytes 16..31 (rows 8-15, then rows 24-31) — the
 * [0, 2, 1, 3] group order. vzip1 gives the first 8 rows of a half, vzip2 the second. Sign
 * words: w[0..7] cover rows 0-7 and 16-23 (half h0), w[8..15] rows 8-15 and 24-31 (half h1);
 * shifting left by one after each use brings bit 15 - s to the MSB at step s = 4y + (0:
 * triple 2y first rows, 1: its second rows, 2: triple 2y+1 first rows, 3: its second rows);
 * vshrq 15 makes the mask m in {0, -1}, (x + m) ^ m negates. int16 accumulators of 8 rows add
 * 2 entries (|e| <= 384) per block over one K-tile (<= 85 entries); the pair tail is widened
 * after every 32-column block. */

static inline int16x8_t apply_sign(int16x8_t x, int16x8_t m) { return veorq_s16(vaddq_s16(x, m), m); }

/* Next sign mask of a running word vector (and advance it). */
static inline int16x8_t next_mask(int16x8_t *w) {
    const int16x8_t m = vshrq_n_s16(*w, 15);
    *w = vshlq_n_s16(*w, 1);
    return m;
}

/* acc[0 .. 32) += one (K-tile, sub-tile) block of triples: index bytes xi, sign units sg. */
static inline void tl2_block(const uint8_t *xi, const uint8_t *sg, const uint8_t *L, int64_t units,
                             uint8x16_t *mx, int32_t *acc) {
    const uint8x16_t m4 = vdupq_n_u8(0x0F);
    int16x8_t a[4]; /* rows 8i .. 8i+7 */
    for (int i = 0; i < 4; ++i) a[i] = vdupq_n_s16(0);
    for (int64_t u = 0; u < units; ++u) {
        int16x8_t w[2] = {vreinterpretq_s16_u8(vld1q_u8(sg + 32 * u)),
                          vreinterpretq_s16_u8(vld1q_u8(sg + 32 * u + 16))};
        for (int y = 0; y < 4; ++y) {
            const int64_t yb = 4 * u + y;
            const table ta = load_table(L + 2 * BL_LUT_TABLE_BYTES * yb);
            const table tb = load_table(L + 2 * BL_LUT_TABLE_BYTES * yb + BL_LUT_TABLE_BYTES);
            int16x8_t e[2][4]; /* per half: A first rows, A second rows, B first, B second */
            for (int h = 0; h < 2; ++h) {
                const uint8x16_t x = vld1q_u8(xi + 32 * yb + 16 * h);
                const uint8x16_t hi = vshrq_n_u8(x, 4), lo = vandq_u8(x, m4);
                *mx = vmaxq_u8(*mx, vmaxq_u8(hi, lo));
                lookup(ta, hi, &e[h][0], &e[h][1]);
                lookup(tb, lo, &e[h][2], &e[h][3]);
            }
            for (int k = 0; k < 4; ++k) /* step s = 4y + k; k odd: the second rows */
                for (int h = 0; h < 2; ++h) {
                    const int16x8_t m = next_mask(&w[h]);
                    const int row8 = (k & 1) ? 2 + h : h; /* 8-row group of the result */
                    a[row8] = vaddq_s16(a[row8], apply_sign(e[h][k], m));
                }
        }
    }
    widen_into(a, 4, acc);
}

/* acc[0 .. 32) += one 32-column block of the pair tail. */
static inline void tl2_tail_block(const uint8_t *xt, const uint8_t *L, uint8x16_t *mx, int32_t *acc) {
    const uint8x16_t m4 = vdupq_n_u8(0x0F);
    int16x8_t a[4];
    for (int i = 0; i < 4; ++i) a[i] = vdupq_n_s16(0);
    for (int yb = 0; yb < 8; ++yb) {
        const table ta = load_table(L + 2 * BL_LUT_TABLE_BYTES * yb);
        const table tb = load_table(L + 2 * BL_LUT_TABLE_BYTES * yb + BL_LUT_TABLE_BYTES);
        for (int h = 0; h < 2; ++h) {
            const uint8x16_t x = vld1q_u8(xt + 32 * yb + 16 * h);
            const uint8x16_t hi = vshrq_n_u8(x, 4), lo = vandq_u8(x, m4);
            *mx = vmaxq_u8(*mx, vmaxq_u8(hi, lo));
            int16x8_t a0, a1, b0, b1;
            lookup(ta, hi, &a0, &a1);
            lookup(tb, lo, &b0, &b1);
            a[h] = vaddq_s16(a[h], vaddq_s16(a0, b0));
            a[2 + h] = vaddq_s16(a[2 + h], vaddq_s16(a1, b1));
        }
    }
    widen_into(a, 4, acc);
}

bl_lut_status bl_tl2_gemv_neon(const uint8_t *data, const uint8_t *lut, int64_t M, int64_t K,
                               int64_t BM, int64_t BK, int64_t r0, int64_t r1, int32_t *out) {
    const int64_t K3 = bl_tl2_three_k(K, BK), K2 = K - K3, subs = BM / 32, s1 = r1 / 32;
    const uint8_t *tail_lut = lut + BL_LUT_TABLE_BYTES * (K3 / 3);
    uint8x16_t mx3 = vdupq_n_u8(0), mx2 = vdupq_n_u8(0);
    int32_t acc[BL_LUT_GROUP * 32];
    for (int64_t s = r0 / 32; s < s1;) {
        const int64_t mt = s / subs, bt0 = s % subs, g = bl_lut_group(s, s1, subs);
        for (int64_t i = 0; i < g * 32; ++i) acc[i] = 0;
        for (int64_t kt = 0; kt < K3 / BK; ++kt) {
            const uint8_t *L = lut + BL_LUT_TABLE_BYTES * (kt * (BK / 3));
            for (int64_t b = 0; b < g; ++b)
                tl2_block(data + bl_tl2_index_offset(K3, BM, BK, mt, kt, bt0 + b),
                          data + bl_tl2_sign_offset(M, K3, BM, BK, mt, kt, bt0 + b), L, BK / 24, &mx3,
                          acc + 32 * b);
        }
        for (int64_t kt2 = 0; kt2 < K2 / BL_TL2_TAIL_BK; ++kt2)
            for (int64_t b = 0; b < g; ++b)
                tl2_tail_block(data + bl_tl2_tail_offset(M, K3, K2, BM, mt, kt2, bt0 + b),
                               tail_lut + BL_LUT_TABLE_BYTES * (kt2 * 16), &mx2, acc + 32 * b);
        for (int64_t i = 0; i < g * 32; ++i) out[s * 32 + i] = acc[i];
        s += g;
    }
    if (vmaxvq_u8(mx3) > BL_TL2_MAX_MAG || vmaxvq_u8(mx2) > BL_TL1_MAX_INDEX)
        return bl_tl2_scan(data, M, K, BM, BK, r0, r1);
    bl_lut_status ok = {0, -1};
    return bl_lut_fault_out(BL_FAULT_TL2_GEMV, ok, out, r0, r1);
}
