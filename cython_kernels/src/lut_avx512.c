/* lut_avx512.c — TL1 / TL2 LUT GEMVs for x86-64 AVX-512 (the avx512vnni level's flags:
 * AVX-512 F/BW/VL; no VBMI). Contract: bl_lut.h; layouts: bl_lut_layout.h. The LUT build is
 * the AVX2 one (bl_dispatch.c): it is a small share of a GEMV and its output is the same.
 *
 * Lookups: _mm512_shuffle_epi8 looks 64 index nibbles up in four 16-byte tables at once, one
 * per 128-bit lane. A lane's table is put there by a 128-bit broadcast from the LUT (a plain
 * load) and, where the lanes need two tables, a masked broadcast of the second (a load and a
 * blend), so the LUT keeps its byte-plane form (bl_lut.h). Low- and high-byte planes are
 * looked up with the same indices and interleaved (unpacklo/hi_epi8) into int16 entries, as
 * in lut_avx2.c. One 64-byte load of weights feeds each step, in blob order:
 *   TL1: one compute block (64 bytes) per step;
 *   TL2: two consecutive compute blocks (lanes 0-1: block yb, lanes 2-3: block yb + 1).
 * Signs (TL2): a 32-bit mask per looked-up vector, one bit per int16 lane, from vptestmw of
 * the unit's 16 sign words (in both halves of a register) against a constant that selects
 * the right bit for each half; a masked subtract from 0 negates the selected entries.
 * Accumulation: int16 per row over a bounded run of steps (see each kernel), widened into
 * int32 (cvtepi16_epi32) — exact for every int8 activation row (bl_lut.h).
 * Invalid indices: a running unsigned byte max of all indices; when it exceeds the limit the
 * kernel returns the exact scan of its range (lut_scalar.c), as every level does.
 * Tables with two planes per register (TL1 bm = 32, TL2) are built once per (group, K-tile)
 * into registers kept on the stack and reloaded by each sub-tile of the group.
 * Memory: rows in groups of sub-tiles walked in blob order (bl_lut_group), as lut_avx2.c, with
 * software prefetches a fixed distance ahead of every load (LUT512_PF_*). Stack: the group's int32 sums (at most
 * BL_LUT_GROUP * 64 * 4 = 4 KiB, as lut_avx2.c), the K-tile's table registers (TL1: at most
 * 32 * 256 B = 8 KiB; TL2: at most 21 * 256 B = 5.25 KiB) and, for TL1, the group's int16 sums
 * (BL_LUT_GROUP * 192 B = 3 KiB).
 */
#include <immintrin.h>

#include "bl_lut.h"
#include "bl_lut_layout.h"

/* Software prefetch, a fixed distance ahead of each 64-byte load (index bytes) and of each
 * sign unit: the blob is walked in its own order, so the address a distance ahead is the one
 * read next (past a block's end it is the next block in the blob; a prefetch never faults).
 * The sign stream moves at a quarter of the index stream's rate, hence a quarter of the
 * distance. A prefetch per load streamed from DRAM faster than lut_avx2.c's burst of a whole
 * K-tile, and a second one further ahead into L2 faster still
 * (docs/benchmarks.md#tl1--tl2-avx-512-gemvs). The distances are overridable at compile time. */
#ifndef LUT512_PF_INDEX
#define LUT512_PF_INDEX 1024
#endif
#ifndef LUT512_PF_SIGN
#define LUT512_PF_SIGN (LUT512_PF_INDEX / 4)
#endif
#ifndef LUT512_PF_HINT
#define LUT512_PF_HINT _MM_HINT_T0
#endif
/* the second prefetch, into L2 */
#ifndef LUT512_PF_FAR
#define LUT512_PF_FAR 8192
#endif
#ifndef LUT512_PF_SIGN_FAR
#define LUT512_PF_SIGN_FAR (LUT512_PF_FAR / 4)
#endif

/* ---- lookups --------------------------------------------------------------------------- */

/* A 16-byte plane in all four lanes. */
static inline __m512i bcast4(const uint8_t *p) {
    return _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)p));
}

/* Plane p0 in lanes 0-1, p1 in lanes 2-3. */
static inline __m512i halves(const uint8_t *p0, const uint8_t *p1) {
    return _mm512_mask_broadcast_i32x4(bcast4(p0), 0xFF00, _mm_loadu_si128((const __m128i *)p1));
}

/* Plane p0 in lanes 0 and 2, p1 in lanes 1 and 3. */
static inline __m512i alternate(const uint8_t *p0, const uint8_t *p1) {
    return _mm512_mask_broadcast_i32x4(bcast4(p0), 0xF0F0, _mm_loadu_si128((const __m128i *)p1));
}

/* Planes of the tables: A for the high nibbles, B for the low nibbles (l / h: byte planes). */
typedef struct {
    __m512i al, ah, bl, bh;
} planes4;

/* 64 index bytes x -> int16 entries A[hi] (a0: bytes 0-7 of each lane, a1: bytes 8-15) and
 * B[lo] (b0, b1); folds the indices into the running max *mx. */
static inline void lookup(__m512i x, const planes4 *t, __m512i *mx, __m512i *a0, __m512i *a1,
                          __m512i *b0, __m512i *b1) {
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(x, 4), m4);
    const __m512i lo = _mm512_and_si512(x, m4);
    *mx = _mm512_max_epu8(*mx, _mm512_max_epu8(hi, lo));
    const __m512i al = _mm512_shuffle_epi8(t->al, hi), ah = _mm512_shuffle_epi8(t->ah, hi);
    const __m512i bl = _mm512_shuffle_epi8(t->bl, lo), bh = _mm512_shuffle_epi8(t->bh, lo);
    *a0 = _mm512_unpacklo_epi8(al, ah);
    *a1 = _mm512_unpackhi_epi8(al, ah);
    *b0 = _mm512_unpacklo_epi8(bl, bh);
    *b1 = _mm512_unpackhi_epi8(bl, bh);
}

static inline int any_above(__m512i mx, int limit) {
    return _mm512_cmpgt_epu8_mask(mx, _mm512_set1_epi8((char)limit)) != 0;
}

/* acc[0 .. 16) += the 16 int16 of v. */
static inline void widen_add16(int32_t *acc, __m256i v) {
    __m512i *p = (__m512i *)acc;
    _mm512_storeu_si512(p, _mm512_add_epi32(_mm512_loadu_si512(p), _mm512_cvtepi16_epi32(v)));
}

/* ---- TL1 GEMV ----------------------------------------------------------------------------
 * Sub-tiles in groups, blob order (as lut_avx2.c). A compute block is 64 index bytes
 * (rc, pq, r16) = one register, lane L = bytes 16L .. 16L + 15:
 *   bm = 64 (by = 4, 2 pairs): lane L = rows 16L .. 16L + 15 (rc = L); every lane takes pair 0
 *     (high nibble) and pair 1 (low nibble): tables broadcast to all lanes. Accumulator 0, lane L
 *     holds rows 16L .. +7, accumulator 1 rows 16L + 8 .. +15.
 *   bm = 32 (by = 8, 4 pairs): lane L = (rc, pq) = (L/2, L%2); pq takes pairs 2pq (high nibble)
 *     and 2pq + 1 (low): tables [T0 | T2 | T0 | T2] and [T1 | T3 | T1 | T3]. Accumulator v, lane L
 *     holds rows 16(L/2) + 8v .. +7, partial sums over pairs of parity L%2, added in int32.
 * An int16 lane adds 2 entries (|e| <= 256) per compute block, so it is widened after 63 blocks
 * (126 entries, |sum| <= 32256) — counted across K-tiles — and at the end of the group. The widening
 * gathers each row's int16 words into row order (vpermt2w) before cvtepi16_epi32. */

#define TL1_FLUSH_BLOCKS 63

/* Word gathers from (acc0, acc1): index < 32 reads acc0, >= 32 acc1. */
#define W8(b) (b), (b) + 1, (b) + 2, (b) + 3, (b) + 4, (b) + 5, (b) + 6, (b) + 7
/* bm = 64: rows 0..31 and rows 32..63 (row r: lane r/16, accumulator (r%16)/8, word r%8). */
static const uint16_t TL1_GATHER64[2][32] __attribute__((aligned(64))) = {
    {W8(0), W8(32), W8(8), W8(40)},
    {W8(16), W8(48), W8(24), W8(56)},
};
/* bm = 32: rows 0..31 from the pq = 0 lanes (0, 2), then from the pq = 1 lanes (1, 3). */
static const uint16_t TL1_GATHER32[2][32] __attribute__((aligned(64))) = {
    {W8(0), W8(32), W8(16), W8(48)},
    {W8(8), W8(40), W8(24), W8(56)},
};

static inline __m512i gather_rows(__m512i a0, const uint16_t *idx, __m512i a1) {
    return _mm512_permutex2var_epi16(a0, _mm512_load_si512((const void *)idx), a1);
}

/* acc[0 .. bm) += the int16 accumulators a0, a1 (reset). */
static inline void tl1_widen(int64_t bm, __m512i *a0, __m512i *a1, int32_t *acc) {
    if (bm == 64) {
        const __m512i r0 = gather_rows(*a0, TL1_GATHER64[0], *a1), r1 = gather_rows(*a0, TL1_GATHER64[1], *a1);
        widen_add16(acc, _mm512_castsi512_si256(r0));
        widen_add16(acc + 16, _mm512_extracti64x4_epi64(r0, 1));
        widen_add16(acc + 32, _mm512_castsi512_si256(r1));
        widen_add16(acc + 48, _mm512_extracti64x4_epi64(r1, 1));
    } else {
        const __m512i p = gather_rows(*a0, TL1_GATHER32[0], *a1), q = gather_rows(*a0, TL1_GATHER32[1], *a1);
        __m512i *d = (__m512i *)acc;
        /* both halves widened before they are added: 2 * 126 entries would not fit int16 */
        const __m512i lo = _mm512_add_epi32(_mm512_cvtepi16_epi32(_mm512_castsi512_si256(p)),
                                            _mm512_cvtepi16_epi32(_mm512_castsi512_si256(q)));
        const __m512i hi = _mm512_add_epi32(_mm512_cvtepi16_epi32(_mm512_extracti64x4_epi64(p, 1)),
                                            _mm512_cvtepi16_epi32(_mm512_extracti64x4_epi64(q, 1)));
        _mm512_storeu_si512(d, _mm512_add_epi32(_mm512_loadu_si512(d), lo));
        _mm512_storeu_si512(d + 1, _mm512_add_epi32(_mm512_loadu_si512(d + 1), hi));
    }
    *a0 = _mm512_setzero_si512();
    *a1 = _mm512_setzero_si512();
}

/* bm = 32: the K-tile's table registers, built once per (group, K-tile) and shared by the
 * group's sub-tiles (a masked broadcast is a blend uop; a reload of the built register is not).
 * Tables T0..T3 of compute block yb at L + 128 yb + 0, 32, 64, 96. */
#define TL1_MAX_NYB (256 / 8)
static inline void tl1_planes32(const uint8_t *L, int64_t nyb, planes4 *tabs) {
    for (int64_t yb = 0; yb < nyb; ++yb) {
        const uint8_t *T = L + 4 * BL_LUT_TABLE_BYTES * yb;
        tabs[yb].al = alternate(T, T + 64);
        tabs[yb].ah = alternate(T + 16, T + 80);
        tabs[yb].bl = alternate(T + 32, T + 96);
        tabs[yb].bh = alternate(T + 48, T + 112);
    }
}

/* A sub-tile's int16 sums, kept across the K-tiles of its group until they must be widened. */
typedef struct {
    __m512i a0, a1;
    int64_t pending; /* compute blocks added since the last widening */
} tl1_part;

/* p += one (K-tile, sub-tile) block: index bytes blk, tables L (bm = 64) or tabs (bm = 32);
 * widened into acc[0 .. bm) whenever TL1_FLUSH_BLOCKS blocks have been added. */
static inline void tl1_block(const uint8_t *blk, const uint8_t *L, const planes4 *tabs, int64_t bm,
                             int64_t nyb, __m512i *mx, tl1_part *p, int32_t *acc) {
    __m512i a0acc = p->a0, a1acc = p->a1;
    int64_t pending = p->pending;
    for (int64_t yb = 0; yb < nyb; ++yb) {
        planes4 t;
        if (bm == 64) { /* tables T0, T1 at L + 64 yb, in every lane: plain broadcasts */
            const uint8_t *T = L + 2 * BL_LUT_TABLE_BYTES * yb;
            t.al = bcast4(T);
            t.ah = bcast4(T + 16);
            t.bl = bcast4(T + 32);
            t.bh = bcast4(T + 48);
        } else {
            t = tabs[yb];
        }
        __m512i a0, a1, b0, b1;
        _mm_prefetch((const char *)(blk + 64 * yb + LUT512_PF_INDEX), LUT512_PF_HINT);
        _mm_prefetch((const char *)(blk + 64 * yb + LUT512_PF_FAR), _MM_HINT_T1);
        lookup(_mm512_loadu_si512((const void *)(blk + 64 * yb)), &t, mx, &a0, &a1, &b0, &b1);
        a0acc = _mm512_add_epi16(a0acc, _mm512_add_epi16(a0, b0));
        a1acc = _mm512_add_epi16(a1acc, _mm512_add_epi16(a1, b1));
        if (++pending == TL1_FLUSH_BLOCKS) {
            tl1_widen(bm, &a0acc, &a1acc, acc);
            pending = 0;
        }
    }
    p->a0 = a0acc;
    p->a1 = a1acc;
    p->pending = pending;
}

/* The group walk, specialised per bm so the block loop is straight-line. The int16 sums of a
 * sub-tile run on over its K-tiles (widened only every TL1_FLUSH_BLOCKS compute blocks and at
 * the group's end), so short K-tiles (BK = 64: 8 blocks) do not pay a widening each. */
static inline void tl1_groups(const uint8_t *data, const uint8_t *lut, int64_t K, int64_t BM,
                              int64_t BK, int64_t bm, int64_t r0, int64_t r1, __m512i *mx,
                              int32_t *out) {
    const int64_t subs = BM / bm, nyb = BK / (256 / bm), s1 = r1 / bm;
    int32_t acc[BL_LUT_GROUP * 64];
    tl1_part part[BL_LUT_GROUP];
    planes4 tabs[TL1_MAX_NYB]; /* bm = 32 only */
    for (int64_t s = r0 / bm; s < s1;) {
        const int64_t mt = s / subs, bt0 = s % subs, g = bl_lut_group(s, s1, subs);
        for (int64_t i = 0; i < g * bm; ++i) acc[i] = 0;
        for (int64_t b = 0; b < g; ++b) {
            part[b].a0 = part[b].a1 = _mm512_setzero_si512();
            part[b].pending = 0;
        }
        for (int64_t kt = 0; kt < K / BK; ++kt) {
            const uint8_t *L = lut + BL_LUT_TABLE_BYTES * (kt * (BK / 2));
            if (bm == 32) tl1_planes32(L, nyb, tabs);
            for (int64_t b = 0; b < g; ++b)
                tl1_block(data + bl_tl1_block_offset(K, BM, BK, bm, mt, kt, bt0 + b), L, tabs, bm, nyb, mx,
                          &part[b], acc + b * bm);
        }
        for (int64_t b = 0; b < g; ++b)
            if (part[b].pending) tl1_widen(bm, &part[b].a0, &part[b].a1, acc + b * bm);
        for (int64_t i = 0; i < g * bm; ++i) out[s * bm + i] = acc[i];
        s += g;
    }
}

bl_lut_status bl_tl1_gemv_avx512(const uint8_t *data, const uint8_t *lut, int64_t M, int64_t K,
                                 int64_t BM, int64_t BK, int64_t bm, int64_t r0, int64_t r1,
                                 int32_t *out) {
    __m512i mx = _mm512_setzero_si512();
    if (bm == 64)
        tl1_groups(data, lut, K, BM, BK, 64, r0, r1, &mx, out);
    else
        tl1_groups(data, lut, K, BM, BK, 32, r0, r1, &mx, out);
    if (any_above(mx, BL_TL1_MAX_INDEX)) return bl_tl1_scan(data, M, K, BM, BK, bm, r0, r1);
    bl_lut_status ok = {0, -1};
    return bl_lut_fault_out(BL_FAULT_TL1_GEMV, ok, out, r0, r1);
}

/* ---- TL2 GEMV ----------------------------------------------------------------------------
 * Sub-tiles (32 rows) in groups, blob order. One step = compute blocks yb (lanes 0-1) and
 * yb + 1 (lanes 2-3), yb even: 64 index bytes. Within a block, the [0, 2, 1, 3] order of its
 * 8-row groups makes unpacklo yield rows 0..15 and unpackhi rows 16..31 (lut_avx2.c), so
 *   A0 = triple 2yb, rows 0-15 | triple 2yb + 2, rows 0-15      (high nibbles, unpacklo)
 *   A1 = the same triples, rows 16-31                           (high nibbles, unpackhi)
 *   B0, B1 = triples 2yb + 1 and 2yb + 3                         (low nibbles)
 * Signs: a unit's 16 words w[c] cover rows c and 16 + c; bit 15 - s is triple s/2 of the unit,
 * row half s%2. With yb = 4u + 2p, A0 needs s = 8p (words 0-15) and s = 8p + 4 (words 16-31),
 * A1 8p + 1 / 8p + 5, B0 8p + 2 / 8p + 6, B1 8p + 3 / 8p + 7: vptestmw of [w | w] against
 * TL2_SIGN_BITS[4p + i] gives the mask, one bit per int16 lane.
 * int16 accumulators (rows 0-15, rows 16-31; each lane half a partial sum over its own
 * blocks) add 2 entries (|e| <= 384) per step over one K-tile: BK/6 <= 40 entries per half,
 * and the two halves are added in int16 when widened: <= 80 entries, |sum| <= 30720. The pair
 * tail (|e| <= 256, 4 steps per 32-column block) is widened after every block. */

#define R16(v) v, v, v, v, v, v, v, v, v, v, v, v, v, v, v, v
#define SB(s) {R16((uint16_t)(1u << (15 - (s)))), R16((uint16_t)(1u << (11 - (s))))}
static const uint16_t TL2_SIGN_BITS[8][32] __attribute__((aligned(64))) = {
    SB(0), SB(1), SB(2), SB(3), SB(8), SB(9), SB(10), SB(11),
};

/* x with the lanes selected by k negated. */
static inline __m512i negate_where(__m512i x, __mmask32 k) {
    return _mm512_mask_sub_epi16(x, k, _mm512_setzero_si512(), x);
}

/* The four tables of one step: triples (or pairs) 2yb .. 2yb + 3 at T = L + 64 yb. */
static inline void step_planes(const uint8_t *T, planes4 *t) {
    t->al = halves(T, T + 64);
    t->ah = halves(T + 16, T + 80);
    t->bl = halves(T + 32, T + 96);
    t->bh = halves(T + 48, T + 112);
}

/* acc[0 .. 32) += the int16 sums of rows 0-15 (lo) and 16-31 (hi), lane halves added. */
static inline void tl2_widen(__m512i lo, __m512i hi, int32_t *acc) {
    widen_add16(acc, _mm256_add_epi16(_mm512_castsi512_si256(lo), _mm512_extracti64x4_epi64(lo, 1)));
    widen_add16(acc + 16, _mm256_add_epi16(_mm512_castsi512_si256(hi), _mm512_extracti64x4_epi64(hi, 1)));
}

/* The table registers of n steps from L, built once per (group, K-tile) and shared by the
 * group's sub-tiles (as tl1_planes32). */
#define TL2_MAX_STEPS (256 / 12)
static inline void tl2_planes(const uint8_t *L, int64_t n, planes4 *tabs) {
    for (int64_t i = 0; i < n; ++i) step_planes(L + 4 * BL_LUT_TABLE_BYTES * i, &tabs[i]);
}

/* acc[0 .. 32) += one (K-tile, sub-tile) block of triples: index bytes xi, sign units sg,
 * table registers tabs (one per step). */
static inline void tl2_block(const uint8_t *xi, const uint8_t *sg, const planes4 *tabs, int64_t units,
                             __m512i *mx, int32_t *acc) {
    __m512i lo_acc = _mm512_setzero_si512(), hi_acc = lo_acc; /* rows 0-15, 16-31 */
    for (int64_t u = 0; u < units; ++u) {
        _mm_prefetch((const char *)(sg + 32 * u + LUT512_PF_SIGN), LUT512_PF_HINT);
#if LUT512_PF_SIGN_FAR > 0
        _mm_prefetch((const char *)(sg + 32 * u + LUT512_PF_SIGN_FAR), _MM_HINT_T1);
#endif
        const __m512i w = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(sg + 32 * u)));
        for (int p = 0; p < 2; ++p) {
            const int64_t yb = 4 * u + 2 * p;
            __m512i a0, a1, b0, b1;
            _mm_prefetch((const char *)(xi + 32 * yb + LUT512_PF_INDEX), LUT512_PF_HINT);
            _mm_prefetch((const char *)(xi + 32 * yb + LUT512_PF_FAR), _MM_HINT_T1);
            lookup(_mm512_loadu_si512((const void *)(xi + 32 * yb)), &tabs[yb / 2], mx, &a0, &a1, &b0, &b1);
            const uint16_t(*bits)[32] = TL2_SIGN_BITS + 4 * p;
            lo_acc = _mm512_add_epi16(lo_acc, negate_where(a0, _mm512_test_epi16_mask(w, _mm512_load_si512((const void *)bits[0]))));
            hi_acc = _mm512_add_epi16(hi_acc, negate_where(a1, _mm512_test_epi16_mask(w, _mm512_load_si512((const void *)bits[1]))));
            lo_acc = _mm512_add_epi16(lo_acc, negate_where(b0, _mm512_test_epi16_mask(w, _mm512_load_si512((const void *)bits[2]))));
            hi_acc = _mm512_add_epi16(hi_acc, negate_where(b1, _mm512_test_epi16_mask(w, _mm512_load_si512((const void *)bits[3]))));
        }
    }
    tl2_widen(lo_acc, hi_acc, acc);
}

/* acc[0 .. 32) += one 32-column block of the pair tail (8 compute blocks, 4 steps). */
static inline void tl2_tail_block(const uint8_t *xt, const planes4 *tabs, __m512i *mx, int32_t *acc) {
    __m512i lo_acc = _mm512_setzero_si512(), hi_acc = lo_acc;
    for (int yb = 0; yb < 8; yb += 2) {
        __m512i a0, a1, b0, b1;
        lookup(_mm512_loadu_si512((const void *)(xt + 32 * yb)), &tabs[yb / 2], mx, &a0, &a1, &b0, &b1);
        lo_acc = _mm512_add_epi16(lo_acc, _mm512_add_epi16(a0, b0));
        hi_acc = _mm512_add_epi16(hi_acc, _mm512_add_epi16(a1, b1));
    }
    tl2_widen(lo_acc, hi_acc, acc);
}

bl_lut_status bl_tl2_gemv_avx512(const uint8_t *data, const uint8_t *lut, int64_t M, int64_t K,
                                 int64_t BM, int64_t BK, int64_t r0, int64_t r1, int32_t *out) {
    const int64_t K3 = bl_tl2_three_k(K, BK), K2 = K - K3, subs = BM / 32, s1 = r1 / 32;
    const uint8_t *tail_lut = lut + BL_LUT_TABLE_BYTES * (K3 / 3);
    __m512i mx3 = _mm512_setzero_si512(), mx2 = _mm512_setzero_si512();
    int32_t acc[BL_LUT_GROUP * 32];
    planes4 tabs[TL2_MAX_STEPS];
    for (int64_t s = r0 / 32; s < s1;) {
        const int64_t mt = s / subs, bt0 = s % subs, g = bl_lut_group(s, s1, subs);
        for (int64_t i = 0; i < g * 32; ++i) acc[i] = 0;
        for (int64_t kt = 0; kt < K3 / BK; ++kt) {
            const uint8_t *L = lut + BL_LUT_TABLE_BYTES * (kt * (BK / 3));
            tl2_planes(L, BK / 12, tabs);
            for (int64_t b = 0; b < g; ++b)
                tl2_block(data + bl_tl2_index_offset(K3, BM, BK, mt, kt, bt0 + b),
                          data + bl_tl2_sign_offset(M, K3, BM, BK, mt, kt, bt0 + b), tabs, BK / 24, &mx3,
                          acc + 32 * b);
        }
        for (int64_t kt2 = 0; kt2 < K2 / BL_TL2_TAIL_BK; ++kt2) {
            tl2_planes(tail_lut + BL_LUT_TABLE_BYTES * (kt2 * 16), 4, tabs);
            for (int64_t b = 0; b < g; ++b)
                tl2_tail_block(data + bl_tl2_tail_offset(M, K3, K2, BM, mt, kt2, bt0 + b), tabs, &mx2, acc + 32 * b);
        }
        for (int64_t i = 0; i < g * 32; ++i) out[s * 32 + i] = acc[i];
        s += g;
    }
    if (any_above(mx3, BL_TL2_MAX_MAG) || any_above(mx2, BL_TL1_MAX_INDEX))
        return bl_tl2_scan(data, M, K, BM, BK, r0, r1);
    bl_lut_status ok = {0, -1};
    return bl_lut_fault_out(BL_FAULT_TL2_GEMV, ok, out, r0, r1);
}
