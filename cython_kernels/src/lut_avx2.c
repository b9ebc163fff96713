/* lut_avx2.c — TL1 / TL2 LUT kernels for x86-64 AVX2 (compiled with -mavx2 -mfma only;
 * called only on CPUs that have them). Contract: bl_lut.h; layouts: bl_lut_layout.h.
 *
 * Lookups: a 16-byte LUT plane is a pshufb table. _mm256_shuffle_epi8 looks the 4-bit indices
 * of 32 bytes up in one plane per 128-bit lane; looking the same indices up in the low-byte
 * and the high-byte plane and interleaving the results (unpacklo/hi_epi8) re-forms the int16
 * entries: unpacklo gives bytes 0..7 of each lane, unpackhi bytes 8..15.
 * Accumulation: int16 per row over a bounded run of compute blocks (see each kernel), widened
 * into int32 (cvtepi16_epi32) — exact for every int8 activation row (bl_lut.h).
 * Invalid indices: a running unsigned byte max of all indices; when it exceeds the limit the
 * kernel returns the exact scan of its range (lut_scalar.c).
 * Memory: rows in groups of sub-tiles walked in blob order (bl_lut_group), and a software
 * prefetch of the group's next K-tile; with weights far larger than the L3 both beat a
 * sub-tile-at-a-time walk (docs/benchmarks.md#decode-memory-layout-and-streaming).
 */
#include <immintrin.h>

#include "bl_lut.h"
#include "bl_lut_layout.h"

/* ---- LUT construction ---------------------------------------------------------------- */

/* 16 int16 entries -> one byte-plane table (16 low bytes, then 16 high bytes). */
static inline void store_planes(uint8_t *dst, __m256i e) {
    /* per lane: the low bytes of its 8 entries, then their high bytes */
    const __m256i split = _mm256_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15,
                                           0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
    const __m256i t = _mm256_shuffle_epi8(e, split);
    /* qwords (lo 0-7, hi 0-7, lo 8-15, hi 8-15) -> (lo 0-7, lo 8-15, hi 0-7, hi 8-15) */
    _mm256_storeu_si256((__m256i *)dst, _mm256_permute4x64_epi64(t, _MM_SHUFFLE(3, 1, 2, 0)));
}

static void tl1_tables(const int8_t *q, int64_t K, uint8_t *lut) {
    /* digits (t0, t1) of entry u = 3*t0 + t1 + 4; padding entries 9..15 are 0 */
    const __m256i t0 = _mm256_setr_epi16(-1, -1, -1, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0);
    const __m256i t1 = _mm256_setr_epi16(-1, 0, 1, -1, 0, 1, -1, 0, 1, 0, 0, 0, 0, 0, 0, 0);
    for (int64_t j = 0; j < K / 2; ++j) {
        const __m256i b0 = _mm256_set1_epi16(q[2 * j]), b1 = _mm256_set1_epi16(q[2 * j + 1]);
        /* sign_epi16(b, t) = t*b for t in {-1, 0, 1}; |sum| <= 256 */
        store_planes(lut + BL_LUT_TABLE_BYTES * j,
                     _mm256_add_epi16(_mm256_sign_epi16(b0, t0), _mm256_sign_epi16(b1, t1)));
    }
}

void bl_tl1_build_lut_avx2(const int8_t *q, int64_t K, uint8_t *lut) {
    tl1_tables(q, K, lut);
    bl_lut_fault_table(BL_FAULT_TL1_BUILD_LUT, lut, K);
}

void bl_tl2_build_lut_avx2(const int8_t *q, int64_t K, int64_t BK, uint8_t *lut) {
    /* digits (t0, t1, t2) of magnitude m = 9*t0 + 3*t1 + t2 (leading digit positive) */
    const __m256i t0 = _mm256_setr_epi16(0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0);
    const __m256i t1 = _mm256_setr_epi16(0, 0, 1, 1, 1, -1, -1, -1, 0, 0, 0, 1, 1, 1, 0, 0);
    const __m256i t2 = _mm256_setr_epi16(0, 1, -1, 0, 1, -1, 0, 1, -1, 0, 1, -1, 0, 1, 0, 0);
    const int64_t K3 = bl_tl2_three_k(K, BK);
    for (int64_t j = 0; j < K3 / 3; ++j) {
        const int8_t *b = q + 3 * j;
        const __m256i e = _mm256_add_epi16(
            _mm256_add_epi16(_mm256_sign_epi16(_mm256_set1_epi16(b[0]), t0),
                             _mm256_sign_epi16(_mm256_set1_epi16(b[1]), t1)),
            _mm256_sign_epi16(_mm256_set1_epi16(b[2]), t2)); /* |e| <= 384 */
        store_planes(lut + BL_LUT_TABLE_BYTES * j, e);
    }
    tl1_tables(q + K3, K - K3, lut + BL_LUT_TABLE_BYTES * (K3 / 3));
    bl_lut_fault_table(BL_FAULT_TL2_BUILD_LUT, lut, K);
}

/* ---- lookups --------------------------------------------------------------------------- */

/* A 16-byte plane in both lanes. */
static inline __m256i bcast(const uint8_t *p) {
    return _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)p));
}

/* Lane 0 from plane p0, lane 1 from plane p1. */
static inline __m256i lanes(const uint8_t *p0, const uint8_t *p1) {
    return _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)p0)),
                                   _mm_loadu_si128((const __m128i *)p1), 1);
}

/* Planes of two tables: A for the high nibbles, B for the low nibbles. */
typedef struct {
    __m256i al, ah, bl, bh;
} planes4;

/* 32 index bytes x -> the int16 entries A[hi] (a0: bytes 0-7 / 16-23, a1: bytes 8-15 / 24-31)
 * and B[lo] (b0, b1); folds the indices into the running max *mx. */
static inline void lookup(__m256i x, const planes4 *t, __m256i *mx, __m256i *a0, __m256i *a1,
                          __m256i *b0, __m256i *b1) {
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(x, 4), m4);
    const __m256i lo = _mm256_and_si256(x, m4);
    *mx = _mm256_max_epu8(*mx, _mm256_max_epu8(hi, lo));
    const __m256i al = _mm256_shuffle_epi8(t->al, hi), ah = _mm256_shuffle_epi8(t->ah, hi);
    const __m256i bl = _mm256_shuffle_epi8(t->bl, lo), bh = _mm256_shuffle_epi8(t->bh, lo);
    *a0 = _mm256_unpacklo_epi8(al, ah);
    *a1 = _mm256_unpackhi_epi8(al, ah);
    *b0 = _mm256_unpacklo_epi8(bl, bh);
    *b1 = _mm256_unpackhi_epi8(bl, bh);
}

static inline int any_above(__m256i mx, int limit) {
    return _mm256_movemask_epi8(_mm256_cmpgt_epi8(mx, _mm256_set1_epi8((char)limit))) != 0;
}

/* Widen the 8 int16 of a 128-bit half and add them to an int32 accumulator. */
static inline __m256i widen_add(__m256i acc, __m128i v) {
    return _mm256_add_epi32(acc, _mm256_cvtepi16_epi32(v));
}

/* ---- TL1 GEMV ----------------------------------------------------------------------------
 * Sub-tiles in groups (bl_lut_group: K-tiles outer, the group's sub-tiles inner, i.e. blob
 * order). One (K-tile, sub-tile) block is BK/by compute blocks of 64 index bytes, read as two
 * 32-byte vectors X0 = bytes 0..31 and X1 = bytes 32..63:
 *   bm = 32 (by = 8, 4 pairs): X0 = [rc 0, pq 0 | rc 0, pq 1], X1 = the same for rc 1. Lane pq
 *     takes pair 2pq (high nibble) and 2pq + 1 (low nibble): tables [T0 | T2] and [T1 | T3].
 *     Accumulator v of Xi holds rows 16i + 8v .. +7 in both lanes (partial sums over
 *     different pairs), added together when widened.
 *   bm = 64 (by = 4, 2 pairs): X0 = [rc 0 | rc 1], X1 = [rc 2 | rc 3], tables T0 and T1 in both
 *     lanes. Accumulator v of Xi, lane L holds rows 16(2i + L) + 8v .. +7.
 * Either way an int16 lane adds 2 entries (|e| <= 256) per compute block, so it is widened at
 * the latest after 63 blocks (126 entries, |sum| <= 32256), and at the end of every block. */

#define TL1_FLUSH_BLOCKS 63

/* acc (int32, rows 8j .. 8j+7 at acc + 8j) += the int16 accumulators a, which are reset. */
static inline void tl1_widen(int64_t bm, __m256i a[4], int32_t *acc) {
    for (int i = 0; i < 2; ++i)
        for (int v = 0; v < 2; ++v) {
            const __m256i x = a[2 * i + v];
            const __m128i l0 = _mm256_castsi256_si128(x), l1 = _mm256_extracti128_si256(x, 1);
            if (bm == 32) {
                int32_t *p = acc + 8 * (2 * i + v);
                _mm256_storeu_si256((__m256i *)p, widen_add(widen_add(_mm256_loadu_si256((const __m256i *)p), l0), l1));
            } else {
                int32_t *p0 = acc + 8 * (2 * (2 * i) + v), *p1 = acc + 8 * (2 * (2 * i + 1) + v);
                _mm256_storeu_si256((__m256i *)p0, widen_add(_mm256_loadu_si256((const __m256i *)p0), l0));
                _mm256_storeu_si256((__m256i *)p1, widen_add(_mm256_loadu_si256((const __m256i *)p1), l1));
            }
            a[2 * i + v] = _mm256_setzero_si256();
        }
}

/* acc[0 .. bm) += the sums of one (K-tile, sub-tile) block: index bytes blk, tables L. */
static inline void tl1_block(const uint8_t *blk, const uint8_t *L, int64_t bm, int64_t nyb,
                             __m256i *mx, int32_t *acc) {
    const int64_t by = 256 / bm;
    __m256i a[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(),
                    _mm256_setzero_si256()};
    int64_t pending = 0;
    for (int64_t yb = 0; yb < nyb; ++yb) {
        const uint8_t *T = L + BL_LUT_TABLE_BYTES * (yb * (by / 2));
        planes4 t;
        if (bm == 32) { /* tables T0..T3 at T + 0, 32, 64, 96 */
            t.al = lanes(T, T + 64);
            t.ah = lanes(T + 16, T + 80);
            t.bl = lanes(T + 32, T + 96);
            t.bh = lanes(T + 48, T + 112);
        } else {
            t.al = bcast(T);
            t.ah = bcast(T + 16);
            t.bl = bcast(T + 32);
            t.bh = bcast(T + 48);
        }
        for (int i = 0; i < 2; ++i) {
            __m256i a0, a1, b0, b1;
            const __m256i x = _mm256_loadu_si256((const __m256i *)(blk + 64 * yb + 32 * i));
            lookup(x, &t, mx, &a0, &a1, &b0, &b1);
            a[2 * i] = _mm256_add_epi16(a[2 * i], _mm256_add_epi16(a0, b0));
            a[2 * i + 1] = _mm256_add_epi16(a[2 * i + 1], _mm256_add_epi16(a1, b1));
        }
        if (++pending == TL1_FLUSH_BLOCKS) {
            tl1_widen(bm, a, acc);
            pending = 0;
        }
    }
    if (pending) tl1_widen(bm, a, acc);
}

bl_lut_status bl_tl1_gemv_avx2(const uint8_t *data, const uint8_t *lut, int64_t M, int64_t K,
                               int64_t BM, int64_t BK, int64_t bm, int64_t r0, int64_t r1,
                               int32_t *out) {
    const int64_t subs = BM / bm, nyb = BK / (256 / bm), s1 = r1 / bm;
    __m256i mx = _mm256_setzero_si256();
    int32_t acc[BL_LUT_GROUP * 64];
    for (int64_t s = r0 / bm; s < s1;) {
        const int64_t mt = s / subs, bt0 = s % subs, g = bl_lut_group(s, s1, subs);
        for (int64_t i = 0; i < g * bm; ++i) acc[i] = 0;
        for (int64_t kt = 0; kt < K / BK; ++kt) {
            const uint8_t *L = lut + BL_LUT_TABLE_BYTES * (kt * (BK / 2));
            if (kt + 1 < K / BK) { /* next K-tile's bytes of the group, one tile ahead */
                const uint8_t *nb = data + bl_tl1_block_offset(K, BM, BK, bm, mt, kt + 1, bt0);
                for (int64_t o = 0; o < g * (bm * BK / 4); o += 64) _mm_prefetch((const char *)(nb + o), _MM_HINT_T0);
            }
            for (int64_t b = 0; b < g; ++b)
                tl1_block(data + bl_tl1_block_offset(K, BM, BK, bm, mt, kt, bt0 + b), L, bm, nyb, &mx, acc + b * bm);
        }
        for (int64_t i = 0; i < g * bm; ++i) out[s * bm + i] = acc[i];
        s += g;
    }
    if (any_above(mx, BL_TL1_MAX_INDEX)) return bl_tl1_scan(data, M, K, BM, BK, bm, r0, r1);
    bl_lut_status ok = {0, -1};
    return bl_lut_fault_out(BL_FAULT_TL1_GEMV, ok, out, r0, r1);
}

/* ---- TL2 GEMV ----------------------------------------------------------------------------
 * Sub-tiles (32 rows) in groups, blob order (bl_lut_group). A compute block is 32 index
 * bytes; thanks to the [0, 2, 1, 3] order of its 8-row groups, unpacklo yields rows 0..15 and
 * unpackhi rows 16..31, in order. The high nibbles are triple 2yb (table at +0), the low
 * nibbles triple 2yb + 1 (+32).
 * Signs: the unit's 16 words w[c] cover rows c and 16 + c; bit 15 - s belongs to triple
 * s/2 of the unit, row half s%2. Shifting the words left by one after each use brings bit
 * 15 - s to the MSB at step s, in the order the lookups need (triple 2y rows 0-15, rows
 * 16-31, triple 2y+1 rows 0-15, rows 16-31); srai 15 turns it into a mask m in {0, -1} and
 * (x + m) ^ m negates x where m = -1.
 * int16 accumulators (rows 0-15, rows 16-31) add 2 entries (|e| <= 384) per compute block
 * over one K-tile: BK/3 <= 85 entries, |sum| <= 32640. The pair tail (|e| <= 256, 16 pairs
 * per 32-column block) is widened after every block. */

/* (x + m) ^ m: x, or -x where the mask m is -1. */
static inline __m256i apply_sign(__m256i x, __m256i m) {
    return _mm256_xor_si256(_mm256_add_epi16(x, m), m);
}

/* acc[0 .. 32) += the int16 sums of rows 0-15 (lo) and 16-31 (hi). */
static inline void tl2_widen(__m256i lo, __m256i hi, int32_t *acc) {
    __m256i *p = (__m256i *)acc;
    _mm256_storeu_si256(p, widen_add(_mm256_loadu_si256(p), _mm256_castsi256_si128(lo)));
    _mm256_storeu_si256(p + 1, widen_add(_mm256_loadu_si256(p + 1), _mm256_extracti128_si256(lo, 1)));
    _mm256_storeu_si256(p + 2, widen_add(_mm256_loadu_si256(p + 2), _mm256_castsi256_si128(hi)));
    _mm256_storeu_si256(p + 3, widen_add(_mm256_loadu_si256(p + 3), _mm256_extracti128_si256(hi, 1)));
}

/* acc[0 .. 32) += one (K-tile, sub-tile) block of triples: index bytes xi, sign units sg. */
static inline void tl2_block(const uint8_t *xi, const uint8_t *sg, const uint8_t *L, int64_t units,
                             __m256i *mx, int32_t *acc) {
    __m256i lo_acc = _mm256_setzero_si256(), hi_acc = lo_acc; /* rows 0-15, 16-31 */
    for (int64_t u = 0; u < units; ++u) {
        __m256i w = _mm256_loadu_si256((const __m256i *)(sg + 32 * u));
        for (int y = 0; y < 4; ++y) {
            const int64_t yb = 4 * u + y;
            const uint8_t *T = L + 2 * BL_LUT_TABLE_BYTES * yb;
            const planes4 t = {bcast(T), bcast(T + 16), bcast(T + 32), bcast(T + 48)};
            __m256i a0, a1, b0, b1, m;
            lookup(_mm256_loadu_si256((const __m256i *)(xi + 32 * yb)), &t, mx, &a0, &a1, &b0, &b1);
            m = _mm256_srai_epi16(w, 15); w = _mm256_add_epi16(w, w);
            lo_acc = _mm256_add_epi16(lo_acc, apply_sign(a0, m));
            m = _mm256_srai_epi16(w, 15); w = _mm256_add_epi16(w, w);
            hi_acc = _mm256_add_epi16(hi_acc, apply_sign(a1, m));
            m = _mm256_srai_epi16(w, 15); w = _mm256_add_epi16(w, w);
            lo_acc = _mm256_add_epi16(lo_acc, apply_sign(b0, m));
            m = _mm256_srai_epi16(w, 15); w = _mm256_add_epi16(w, w);
            hi_acc = _mm256_add_epi16(hi_acc, apply_sign(b1, m));
        }
    }
    tl2_widen(lo_acc, hi_acc, acc);
}

/* acc[0 .. 32) += one 32-column block of the pair tail. */
static inline void tl2_tail_block(const uint8_t *xt, const uint8_t *L, __m256i *mx, int32_t *acc) {
    __m256i lo_acc = _mm256_setzero_si256(), hi_acc = lo_acc;
    for (int yb = 0; yb < 8; ++yb) {
        const uint8_t *T = L + 2 * BL_LUT_TABLE_BYTES * yb;
        const planes4 t = {bcast(T), bcast(T + 16), bcast(T + 32), bcast(T + 48)};
        __m256i a0, a1, b0, b1;
        lookup(_mm256_loadu_si256((const __m256i *)(xt + 32 * yb)), &t, mx, &a0, &a1, &b0, &b1);
        lo_acc = _mm256_add_epi16(lo_acc, _mm256_add_epi16(a0, b0));
        hi_acc = _mm256_add_epi16(hi_acc, _mm256_add_epi16(a1, b1));
    }
    tl2_widen(lo_acc, hi_acc, acc);
}

bl_lut_status bl_tl2_gemv_avx2(const uint8_t *data, const uint8_t *lut, int64_t M, int64_t K,
                               int64_t BM, int64_t BK, int64_t r0, int64_t r1, int32_t *out) {
    const int64_t K3 = bl_tl2_three_k(K, BK), K2 = K - K3, subs = BM / 32, s1 = r1 / 32;
    const uint8_t *tail_lut = lut + BL_LUT_TABLE_BYTES * (K3 / 3);
    __m256i mx3 = _mm256_setzero_si256(), mx2 = _mm256_setzero_si256();
    int32_t acc[BL_LUT_GROUP * 32];
    for (int64_t s = r0 / 32; s < s1;) {
        const int64_t mt = s / subs, bt0 = s % subs, g = bl_lut_group(s, s1, subs);
        for (int64_t i = 0; i < g * 32; ++i) acc[i] = 0;
        for (int64_t kt = 0; kt < K3 / BK; ++kt) {
            const uint8_t *L = lut + BL_LUT_TABLE_BYTES * (kt * (BK / 3));
            if (kt + 1 < K3 / BK) { /* next K-tile's bytes of the group, one tile ahead */
                const uint8_t *ni = data + bl_tl2_index_offset(K3, BM, BK, mt, kt + 1, bt0);
                const uint8_t *ns = data + bl_tl2_sign_offset(M, K3, BM, BK, mt, kt + 1, bt0);
                for (int64_t o = 0; o < g * (BK / 6 * 32); o += 64) _mm_prefetch((const char *)(ni + o), _MM_HINT_T0);
                for (int64_t o = 0; o < g * (BK / 24 * 32); o += 64) _mm_prefetch((const char *)(ns + o), _MM_HINT_T0);
            }
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
    if (any_above(mx3, BL_TL2_MAX_MAG) || any_above(mx2, BL_TL1_MAX_INDEX))
        return bl_tl2_scan(data, M, K, BM, BK, r0, r1);
    bl_lut_status ok = {0, -1};
    return bl_lut_fault_out(BL_FAULT_TL2_GEMV, ok, out, r0, r1);
}
