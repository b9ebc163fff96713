/* mad_amx.c — the prefill GEMMs on Intel AMX-INT8 tiles: I2_S, I2_S x4, TQ2_0 (MAD, bl_mad.h) and
 * TL1 / TL2 (LUT formats, bl_lut.h: decoded to the same codes, no lookup table).
 *
 * Compiled with the AVX-512 VNNI flags plus -mamx-tile -mamx-int8; called only where bl_dispatch.c
 * found AMX-TILE and AMX-INT8, the OS saving tile state (XCR0 bits 17, 18) and, on Linux, this
 * process granted the tile data state (arch_prctl ARCH_REQ_XCOMP_PERM). The amx level is the
 * avx512vnni level with these five GEMMs: decode of one token has nothing for a tile to reuse.
 *
 * The multiply (the activation-parallel GEMM of docs/kernels.md#26-activation-parallel-vs-weight-parallel,
 * on tiles): TDPBSUD
 *   C[16 × 16 int32] += A[16 × 64 int8] · B[64 × 16 uint8]
 * with A = 16 tokens' activations over 64 weights, read straight from Q (tileloadd with stride K:
 * no copy), B = the codes c = t + 1 of 16 weight rows over the same 64 weights, and C = out[token][row],
 * stored straight into out with stride ld_out. B is "VNNI-packed": its row k4 holds, for each of the
 * 16 weight rows, the 4 codes of weights 4·k4 .. 4·k4 + 3. C starts at −sum_q[token] in every
 * column, so the integer result is Σ c·q − Σ q = Σ t·q exactly (docs/numerics.md#31-the-integer-identity;
 * int32 holds it, bl_mad.h).
 *
 * Packed weights -> B tiles, per 16 rows and one 128-weight block (32 packed bytes a row): dword j
 * (bytes 4j .. 4j+3) of a row's 32 bytes holds weights 32p + 4j .. 32p + 4j + 3 in its plane p
 * (I2_S: bits at shift 6 − 2p, MSB first; TQ2_0's 128-halves: shift 2p, LSB first;
 * docs/formats.md#3-ternary-byte-layouts). Transposing the 16 rows × 8 dwords of PACKED bytes (24 shuffles:
 * two 8 × 8 dword transposes side by side in the halves of 8 zmm registers) gives, for each j, the 16 rows'
 * dword j in one vector; its plane p, shifted and masked, is row 8·(p % 2) + j of the B tile of the block's
 * half p / 2. So decoding 2048 weights costs 16 loads, 24 shuffles and 64 shift/and ops, once per call
 * for all tokens (decoding the codes first and transposing bytes would take four times the shuffles).
 *
 * Blocking: a panel of 32 weight rows (two B column tiles) is decoded BL_AMX_KC weights at a time
 * (a unit) into a stack buffer; every pair of 16-token blocks then runs a 2 × 2 grid of C tiles over
 * it (2 A + 2 B tile loads per 4 TDPBSUD), C re-loaded from out for the chunks after the first. The
 * next unit is decoded between the tile products of this one (software pipelining: the decode's
 * vector work overlaps the tile unit). Tokens go in slices whose activations stay in L2.
 * Tokens past the last full 16-token block run on short tiles of that many rows
 * (bl_amx_configure_rows), so the weights are still decoded once for them; rows past the last full
 * 16-row panel, and a single token left over, run the avx512vnni GEMM v3 of the same layout: same
 * integers, so any split is exact. A whole call of 2 to 16 tokens (a small batch, a verification
 * pass) of I2_S, I2_S x4 or TQ2_0 swaps the roles instead (small_amx, below): the weights as A
 * tiles, decoded without a transpose.
 */
#include "bl_amx.h"
#include "bl_lut.h"
#include "bl_lut_layout.h"
#include "bl_mad_x86.h"

/* Weights per unit of work (a chunk of a 32-row panel): 32 rows × 512 codes = 16 KiB of B tiles,
 * two such buffers on the stack (the unit being multiplied, the next one being decoded). On the
 * 2B-4T shapes 512 beat 1024, 256 (more int32 round trips through out) and 2048 without the
 * pipelining (docs/benchmarks.md#kernel-variants). */
#ifndef BL_AMX_KC
#define BL_AMX_KC 512
#endif
#ifndef BL_AMX_SLICE_BYTES
#define BL_AMX_SLICE_BYTES (1 << 20) /* activations of one token slice: half a 2 MiB L2 */
#endif
#ifndef BL_AMX_TL_SLICE
#define BL_AMX_TL_SLICE 256 /* fewest tokens per slice of a TL GEMM (tiles_amx) */
#endif
#define BL_AMX_ROWS 32 /* weight rows per panel: two B tiles of 16 columns */
#define BL_AMX_TOK 16  /* tokens per A / C tile */
#ifndef BL_AMX_PF_ROWS
#define BL_AMX_PF_ROWS BL_AMX_ROWS /* rows ahead of the decode that are prefetched: the next panel */
#endif
/* Fewest tokens of a short-tile pass (the tokens past the last full 16): below it the v3 GEMM,
 * which needs no decoded B tiles, takes them. */
#ifndef BL_AMX_MIN_TOK
#define BL_AMX_MIN_TOK 2
#endif

/* Tiles (all 16 rows × 64 bytes, bl_amx_configure(8)): tmm0..3 = C (tokens 0-15 / 16-31 × rows
 * 0-15 / 16-31), tmm4, 5 = A, tmm6, 7 = B. */

/* The three packed layouts differ only in where a 128-weight block's 32 bytes are and in which
 * order its four 2-bit planes sit. TL1 and TL2 (the LUT formats) have decoders of their own, below. */
enum { FMT_I2S, FMT_I2S_X4, FMT_TQ2, FMT_TL1, FMT_TL2 };

/* A TL tensor's shape and tiling (bl_lut_layout.h), the byte strides its decoders step by (so no
 * division by a run-time tiling is left in their inner loops), and whether a decoded code was
 * invalid. A sub-tile's K-tiles lie BM·BK/4 (TL1) or BM·BK/6 (TL2) bytes apart, further than the
 * hardware prefetchers follow, so the decoders prefetch the next sub-tile's block (the rows
 * decoded after these) into L2 themselves, as the I2_S decode prefetches the next panel. */
typedef struct {
    int64_t M, BM, BK, bm;
    int64_t K3, tile_stride; /* TL2: three_k; bytes between K-tiles kt and kt + 1 of a sub-tile */
    int64_t next_sub;        /* bytes from a block to the same block of the next sub-tile */
    int bad;
} tl_geom;

ALWAYS_INLINE const uint8_t *block_bytes(int fmt, const uint8_t *w, int64_t K, int64_t row, int64_t b) {
    if (fmt == FMT_I2S) return w + row * bl_i2s_row_bytes(K) + 32 * b;
    if (fmt == FMT_I2S_X4) return bl_i2s_x4_block(w + row / 4 * 4 * bl_i2s_row_bytes(K), K / 128, b, row % 4);
    /* TQ2_0: block b is half b % 2 of 256-block b / 2 (66 bytes: 64 of codes, then fp16 d) */
    return w + row * bl_tq2_row_bytes(K) + (b / 2) * BL_TQ2_BLOCK_BYTES + 32 * (b % 2);
}

ALWAYS_INLINE int plane_shift(int fmt, int p) { return fmt == FMT_TQ2 ? 2 * p : 6 - 2 * p; }

ALWAYS_INLINE __m512i rows_pair(int fmt, const uint8_t *w, int64_t K, int64_t r, int64_t b) {
    const __m256i lo = _mm256_loadu_si256((const __m256i *)block_bytes(fmt, w, K, r, b));
    const __m256i hi = _mm256_loadu_si256((const __m256i *)block_bytes(fmt, w, K, r + 4, b));
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

/* B tiles of rows [row, row + 16), block b -> dst (k-half 0) and dst + stride (k-half 1), each
 * 16 rows of 64 bytes. */
ALWAYS_INLINE void decode_block16(int fmt, const uint8_t *w, int64_t K, int64_t row, int64_t b, uint8_t *dst,
                                  int64_t stride) {
    /* z[i] = [row i | row i + 4] for i < 4, [row i + 4 | row i + 8] for i >= 4: with that pairing the
     * lane shuffle below leaves the 16 rows in order 0..15 */
    __m512i z[8];
    for (int i = 0; i < 4; ++i) {
        z[i] = rows_pair(fmt, w, K, row + i, b);
        z[4 + i] = rows_pair(fmt, w, K, row + 8 + i, b);
    }
    /* per 128-bit lane, 4 × 4 dword transposes: s[j] (s[4 + j]) = dword j of z[0..3] (z[4..7]) */
    __m512i s[8];
    for (int h = 0; h < 8; h += 4) {
        const __m512i t0 = _mm512_unpacklo_epi32(z[h], z[h + 1]), t1 = _mm512_unpackhi_epi32(z[h], z[h + 1]);
        const __m512i t2 = _mm512_unpacklo_epi32(z[h + 2], z[h + 3]), t3 = _mm512_unpackhi_epi32(z[h + 2], z[h + 3]);
        s[h] = _mm512_unpacklo_epi64(t0, t2);
        s[h + 1] = _mm512_unpackhi_epi64(t0, t2);
        s[h + 2] = _mm512_unpacklo_epi64(t1, t3);
        s[h + 3] = _mm512_unpackhi_epi64(t1, t3);
    }
    const __m512i three = _mm512_set1_epi8(3);
    for (int j = 0; j < 4; ++j) {
        /* lanes of s[j]: rows 0-3 dword j, rows 0-3 dword j+4, rows 4-7 dword j, rows 4-7 dword j+4;
         * of s[4 + j] the same for rows 8-15 */
        const __m512i o[2] = {_mm512_shuffle_i32x4(s[j], s[4 + j], 0x88),  /* dword j of rows 0..15     */
                              _mm512_shuffle_i32x4(s[j], s[4 + j], 0xDD)}; /* dword j + 4 of rows 0..15 */
        for (int u = 0; u < 2; ++u) {
            const int jj = j + 4 * u;
            for (int p = 0; p < 4; ++p) {
                const __m512i c = _mm512_and_si512(_mm512_srli_epi16(o[u], plane_shift(fmt, p)), three);
                _mm512_store_si512((__m512i *)(dst + (p / 2) * stride + 64 * (8 * (p % 2) + jj)), c);
            }
        }
    }
}

/* The start of a C tile (16 tokens × 16 rows): −sum_q of the row's token in every column. */
ALWAYS_INLINE void neg_sums(const int32_t *sum_q, int nt, int32_t init[16][16]) {
    for (int n = 0; n < nt; ++n) _mm512_store_si512((__m512i *)init[n], _mm512_set1_epi32(-sum_q[n]));
}

/* ---- TL1 / TL2 -> B tiles ----------------------------------------------------------------
 * The tile GEMM multiplies codes c = t + 1; a TL index holds two (TL1: pair index 3·c0 + c1) or
 * three (TL2: triple magnitude plus a sign bit) of them. Decoding one 64-weight step of 16 rows
 * gives one 1024-byte B tile, the same bytes the I2_S decode gives for the same weights, so the
 * sums are the same exact integers the LUT GEMVs give. An index outside the format's range
 * decodes to a code with bit 7 set; the call then reports the exact scan (bl_tl1_scan /
 * bl_tl2_scan) and its out is unspecified, as the GEMVs' is. */
#define TL_BAD 0x80

/* 16-entry nibble tables (one vpshufb each), TL_BAD past the format's range. A pair index
 * 3·c0 + c1 (TL1, the TL2 tail): c0 = index ÷ 3, c1 = index mod 3. A TL2 triple magnitude
 * 9·t0 + 3·t1 + t2: its digits + 1 (docs/kernels.md#41-lut-construction). */
_Alignas(16) static const uint8_t tl_pair_first[16] = {0, 0, 0, 1, 1, 1, 2, 2, 2, TL_BAD, TL_BAD, TL_BAD,
                                                      TL_BAD, TL_BAD, TL_BAD, TL_BAD};
_Alignas(16) static const uint8_t tl_pair_second[16] = {0, 1, 2, 0, 1, 2, 0, 1, 2, TL_BAD, TL_BAD, TL_BAD,
                                                       TL_BAD, TL_BAD, TL_BAD, TL_BAD};
_Alignas(16) static const uint8_t tl2_digit[3][16] = {
    {1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, TL_BAD, TL_BAD},
    {1, 1, 2, 2, 2, 0, 0, 0, 1, 1, 1, 2, 2, 2, TL_BAD, TL_BAD},
    {1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, TL_BAD, TL_BAD}};

ALWAYS_INLINE __m512i table512(const uint8_t t[16]) { return _mm512_broadcast_i32x4(_mm_load_si128((const __m128i *)t)); }
ALWAYS_INLINE __m256i table256(const uint8_t t[16]) { return _mm256_broadcastsi128_si256(_mm_load_si128((const __m128i *)t)); }

/* TL1: for a 16-row group, the 16 bytes of each 4-weight group j are consecutive in the blob
 * (byte r16 = row r16; high nibble weights 4j, 4j + 1, low nibble 4j + 2, 4j + 3), which is one B
 * tile row once every byte is spread over a dword: lane L of the register takes rows 4L .. 4L + 3. */
ALWAYS_INLINE void tl1_decode_step16(const uint8_t *w, int64_t K, tl_geom *g, int64_t row, int64_t k,
                                     uint8_t *dst) {
    const int64_t bm = g->bm, subs = g->BM / bm, sub = row / bm;
    const int pq_bits = bm == 32; /* 4-weight groups per compute-block row: 64 / bm = 2 or 1 */
    const int64_t rc = (row % bm) / 16;
    int64_t kt = k / g->BK, jl = (k - kt * g->BK) / 4; /* K-tile, 4-weight group inside it */
    const uint8_t *tile = w + bl_tl1_block_offset(K, g->BM, g->BK, bm, sub / subs, kt, sub % subs);
    const __m512i spread = _mm512_set_epi8(15, 15, 15, 15, 14, 14, 14, 14, 13, 13, 13, 13, 12, 12, 12, 12, /* lane 3 */
                                           11, 11, 11, 11, 10, 10, 10, 10, 9, 9, 9, 9, 8, 8, 8, 8,
                                           7, 7, 7, 7, 6, 6, 6, 6, 5, 5, 5, 5, 4, 4, 4, 4,
                                           3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
    /* bytes 0, 1 of a dword take the high nibble (word shifted by 4), bytes 2, 3 the low one */
    const __m512i shift = _mm512_set1_epi32(4), nib = _mm512_set1_epi8(0x0F);
    const __m512i first = table512(tl_pair_first), second = table512(tl_pair_second);
    const __mmask64 odd = 0xAAAAAAAAAAAAAAAAull; /* bytes 1, 3: the second weight of a pair */
    const int64_t groups = g->BK / 4, pq_mask = pq_bits ? 1 : 0;
    __m512i any = _mm512_setzero_si512();
    for (int k4 = 0; k4 < 16; ++k4) {
        const uint8_t *src = tile + (jl >> pq_bits) * 64 + ((rc << pq_bits) + (jl & pq_mask)) * 16;
        _mm_prefetch((const char *)(src + g->next_sub), _MM_HINT_T1);
        const __m512i x = _mm512_shuffle_epi8(_mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)src)), spread);
        const __m512i u = _mm512_and_si512(_mm512_srlv_epi16(x, shift), nib);
        const __m512i c = _mm512_mask_blend_epi8(odd, _mm512_shuffle_epi8(first, u), _mm512_shuffle_epi8(second, u));
        any = _mm512_or_si512(any, c);
        _mm512_store_si512((__m512i *)(dst + 64 * k4), c);
        if (++jl == groups) { /* the next K-tile of the same sub-tile */
            jl = 0;
            tile += g->tile_stride;
        }
    }
    g->bad |= _mm512_movepi8_mask(any) != 0;
}

/* TL2: compute blocks of 32 index bytes (6 weights of the sub-tile's 32 rows, rows in its swapped
 * order: byte p holds row 8·SWAP[p / 8] + p % 8, SWAP = 0, 2, 1, 3) -> the codes of their weights,
 * 32 bytes (rows 0..31 in order) per weight. Triples: each magnitude's digits looked up and
 * reflected (c -> 2 - c) where the sign bit is set; the pair tail: 4 weights, as TL1. */

/* Blocks yb and yb + 1 (yb even, so both lie in one K-tile and one sign unit) at once, block yb
 * in the low and yb + 1 in the high 256 bits: c[i] = weight i of each (i < 3: the high nibble's
 * triple). The sign of triple s of a unit, row r, is bit 15 − (2·s + r / 16) of word r % 16: a
 * variable shift moves it to the word's top. */
ALWAYS_INLINE void tl2_triples(const uint8_t *idx, const uint8_t *unit, int g8, __m512i c[6]) {
    const __m512i v = _mm512_permutexvar_epi64(_mm512_setr_epi64(0, 2, 1, 3, 4, 6, 5, 7),
                                                _mm512_loadu_si512((const void *)idx));
    const __m512i nib = _mm512_set1_epi8(0x0F), two = _mm512_set1_epi8(2);
    const __m512i m[2] = {_mm512_and_si512(_mm512_srli_epi16(v, 4), nib), _mm512_and_si512(v, nib)};
    const __m512i d[3] = {table512(tl2_digit[0]), table512(tl2_digit[1]), table512(tl2_digit[2])};
    /* the unit's 16 words in both halves; rows 16-31 read the bit one below rows 0-15's */
    const __m512i words = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)unit));
    const __m512i half = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(1), 1);
    for (int h = 0; h < 2; ++h) { /* triple g8 + h of block yb, g8 + 2 + h of block yb + 1 */
        const __m512i sh = _mm512_add_epi16(half, _mm512_set1_epi16((short)(2 * (g8 + h))));
        const __mmask32 n0 = _mm512_movepi16_mask(_mm512_sllv_epi16(words, sh));
        const __mmask32 n1 = _mm512_movepi16_mask(_mm512_sllv_epi16(words, _mm512_add_epi16(sh, _mm512_set1_epi16(4))));
        const __mmask64 neg = _mm512_kunpackd((__mmask64)n1, (__mmask64)n0);
        for (int i = 0; i < 3; ++i) {
            const __m512i x = _mm512_shuffle_epi8(d[i], m[h]);
            c[3 * h + i] = _mm512_mask_sub_epi8(x, neg, two, x);
        }
    }
}

ALWAYS_INLINE void tl2_pairs(const uint8_t *idx, __m256i c[4]) {
    const __m256i v = _mm256_permute4x64_epi64(_mm256_loadu_si256((const __m256i *)idx), 0xD8); /* rows in order */
    const __m256i nib = _mm256_set1_epi8(0x0F), first = table256(tl_pair_first), second = table256(tl_pair_second);
    const __m256i m[2] = {_mm256_and_si256(_mm256_srli_epi16(v, 4), nib), _mm256_and_si256(v, nib)};
    for (int h = 0; h < 2; ++h) {
        c[2 * h] = _mm256_shuffle_epi8(first, m[h]);
        c[2 * h + 1] = _mm256_shuffle_epi8(second, m[h]);
    }
}

/* Weights [k, k + 64) of the 32-row sub-tile at `row` -> the B tiles of rows 0-15 (dst) and
 * 16-31 (dst + 1024). The step may start inside a pair of blocks or cross from the triples into
 * the pair tail: the codes go to a weight-major buffer first (row r of weight i at ct[i][r]),
 * then four weights at a time are interleaved into each row's dword. */
ALWAYS_INLINE void tl2_decode_step32(const uint8_t *w, int64_t K, tl_geom *g, int64_t row, int64_t k, uint8_t *dst) {
    /* whole pairs of blocks (and tail blocks) are decoded: up to 11 weights either side of the
     * step land in the margins (their indices are the tensor's too, in this call's rows, so a bad
     * one among them is still one to report) */
    _Alignas(64) uint8_t ct_margins[12 + 64 + 12][32];
    uint8_t(*ct)[32] = ct_margins + 12;
    const int64_t BK = g->BK, K3 = g->K3, sub = row / 32, subs = g->BM / 32;
    const int64_t mt = sub / subs, bt = sub % subs, ke = k + 64, ybs = BK / 6;
    /* the sub-tile's first index, sign and tail blocks; K-tiles are g->tile_stride (index),
     * tile_stride / 4 (signs) and subs·256 (tail) bytes apart */
    const uint8_t *idx0 = w + bl_tl2_index_offset(K3, g->BM, BK, mt, 0, bt);
    const uint8_t *sgn0 = w + bl_tl2_sign_offset(g->M, K3, g->BM, BK, mt, 0, bt);
    const uint8_t *tail0 = w + bl_tl2_tail_offset(g->M, K3, K - K3, g->BM, mt, 0, bt);
    int64_t kt = 0, yb = 0;
    if (k < K3) {
        kt = k / BK;
        yb = (k - kt * BK) / 6 / 2 * 2; /* the pair of blocks holding weight k */
    }
    __m256i any = _mm256_setzero_si256();
    for (int64_t kk = k; kk < ke;) {
        if (kk < K3) {
            const int64_t kb = kt * BK + 6 * yb;
            const uint8_t *idx = idx0 + kt * g->tile_stride + 32 * yb, *sgn = sgn0 + kt * (g->tile_stride / 4) + 32 * (yb / 4);
            _mm_prefetch((const char *)(idx + g->next_sub), _MM_HINT_T1);
            if (yb % 8 == 0) _mm_prefetch((const char *)(sgn + g->next_sub / 4), _MM_HINT_T1);
            __m512i c[6];
            tl2_triples(idx, sgn, (int)(2 * (yb % 4)), c);
            for (int i = 0; i < 6; ++i) {
                const __m256i lo = _mm512_castsi512_si256(c[i]), hi = _mm512_extracti64x4_epi64(c[i], 1);
                any = _mm256_or_si256(any, _mm256_or_si256(lo, hi));
                _mm256_store_si256((__m256i *)ct[kb + i - k], lo);
                _mm256_store_si256((__m256i *)ct[kb + 6 + i - k], hi);
            }
            yb += 2;
            if (yb == ybs) {
                yb = 0;
                ++kt;
            }
            kk = kb + 12;
        } else {
            const int64_t kt2 = (kk - K3) / BL_TL2_TAIL_BK, yb2 = ((kk - K3) % BL_TL2_TAIL_BK) / 4;
            const int64_t kb = K3 + kt2 * BL_TL2_TAIL_BK + 4 * yb2;
            const uint8_t *idx = tail0 + kt2 * subs * 256 + 32 * yb2;
            _mm_prefetch((const char *)(idx + 256), _MM_HINT_T1);
            __m256i c[4];
            tl2_pairs(idx, c);
            for (int i = 0; i < 4; ++i) {
                any = _mm256_or_si256(any, c[i]);
                _mm256_store_si256((__m256i *)ct[kb + i - k], c[i]);
            }
            kk = kb + 4;
        }
    }
    g->bad |= _mm256_movemask_epi8(any) != 0;
    /* byte 4r + i of a B tile row = row r (+ 16 for the second tile) of weight 4·k4 + i: one
     * two-table byte permute (VBMI) of weights 4·k4, +1 (table a) and 4·k4 + 2, +3 (table b) */
    _Alignas(64) static const uint8_t pick[64] = {
        0, 32, 64, 96, 1, 33, 65, 97, 2, 34, 66, 98, 3, 35, 67, 99, 4, 36, 68, 100, 5, 37, 69, 101,
        6, 38, 70, 102, 7, 39, 71, 103, 8, 40, 72, 104, 9, 41, 73, 105, 10, 42, 74, 106, 11, 43, 75, 107,
        12, 44, 76, 108, 13, 45, 77, 109, 14, 46, 78, 110, 15, 47, 79, 111};
    const __m512i lo = _mm512_load_si512((const __m512i *)pick), hi = _mm512_add_epi8(lo, _mm512_set1_epi8(16));
    for (int k4 = 0; k4 < 16; ++k4) {
        /* 32-byte loads, one per 32-byte store above: a 64-byte load over two stores would not
         * be forwarded from the store buffer and waits for both to reach the cache */
        const __m512i a = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_load_si256((const __m256i *)ct[4 * k4])),
                                             _mm256_load_si256((const __m256i *)ct[4 * k4 + 1]), 1);
        const __m512i b = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_load_si256((const __m256i *)ct[4 * k4 + 2])),
                                             _mm256_load_si256((const __m256i *)ct[4 * k4 + 3]), 1);
        _mm512_store_si512((__m512i *)(dst + 64 * k4), _mm512_permutex2var_epi8(a, lo, b));
        _mm512_store_si512((__m512i *)(dst + 1024 + 64 * k4), _mm512_permutex2var_epi8(a, hi, b));
    }
}

/* One unit of work: rows [r, r + 16·nb) (nb = 1 or 2 B column tiles) × weights [k0, k0 + kc). */
typedef struct {
    int64_t r, k0, kc;
    int nb;
} amx_unit;

/* A unit's B tiles being decoded into buf ([64-weight step][column tile][16 × 64]), one
 * decode_block16 at a time: piece d = block d / nb of column tile d % nb. */
typedef struct {
    amx_unit u;
    uint8_t *buf;
    int64_t done, total;
    int64_t r_end; /* the end of the rows on tiles: the next panel is prefetched while below it */
} amx_decoder;

ALWAYS_INLINE void decode_start(int fmt, amx_decoder *d, amx_unit u, uint8_t *buf, int64_t r_end) {
    d->u = u;
    d->buf = buf;
    d->done = 0;
    d->total = fmt == FMT_TL1 ? u.kc / 64 * u.nb : fmt == FMT_TL2 ? u.kc / 64 : u.kc / 128 * u.nb;
    d->r_end = r_end;
}

ALWAYS_INLINE void decode_piece(int fmt, const uint8_t *w, int64_t K, tl_geom *tg, amx_decoder *d) {
    if (d->done >= d->total) return;
    if (fmt == FMT_TL1) { /* piece d: 64-weight step d / nb of column tile d % nb */
        const int64_t st = d->done / d->u.nb, g = d->done % d->u.nb;
        tl1_decode_step16(w, K, tg, d->u.r + 16 * g, d->u.k0 + 64 * st, d->buf + st * 2048 + g * 1024);
        ++d->done;
        return;
    }
    if (fmt == FMT_TL2) { /* piece d: 64-weight step d of both column tiles (a TL2 sub-tile) */
        tl2_decode_step32(w, K, tg, d->u.r, d->u.k0 + 64 * d->done, d->buf + d->done * 2048);
        ++d->done;
        return;
    }
    const int64_t b = d->done / d->u.nb;
    const int g = (int)(d->done % d->u.nb);
    const int64_t row = d->u.r + 16 * g;
    /* The same block of the next panel's rows, into L2: a panel's weights are a few short strided
     * runs the hardware prefetchers do not pick up before they end, which left a call of a few
     * tokens (the tiles' work per weight is small then) waiting on memory. */
    if (row + BL_AMX_PF_ROWS + 16 <= d->r_end)
        for (int i = 0; i < 16; ++i)
            _mm_prefetch((const char *)block_bytes(fmt, w, K, row + BL_AMX_PF_ROWS + i, d->u.k0 / 128 + b), _MM_HINT_T1);
    decode_block16(fmt, w, K, row, d->u.k0 / 128 + b, d->buf + (4 * b + g) * 1024, 2048);
    ++d->done;
}

/* Tokens [n0, n1) (n1 − n0 a multiple of 16) of unit u, its B tiles in bt: Σ t·q into out
 * (k0 == 0: from −sum_q; else added to what out holds). Meanwhile `next` is decoded, one piece
 * every `every` steps: tile products run on their own unit, so the vector work of the decode
 * overlaps them (decoding between sweeps instead made the GEMM much slower on 2B-4T shapes). */
ALWAYS_INLINE void sweep(int fmt, const uint8_t *w, tl_geom *tg, const int8_t *Q, const int32_t *sum_q, int32_t *out, int64_t n0,
                         int64_t n1, int64_t K, int64_t ld_out, amx_unit u, const uint8_t *btiles, amx_decoder *next,
                         int64_t every) {
    _Alignas(64) int32_t init[2][16][16];
    const size_t ldo = (size_t)ld_out * 4; /* bytes between tokens in out */
    const int nb = u.nb;
    int64_t countdown = every;
    for (int64_t n = n0; n < n1; n += 2 * BL_AMX_TOK) {
        const int two = n + BL_AMX_TOK < n1; /* a second block of 16 tokens */
        const int nt = n1 - n < BL_AMX_TOK ? (int)(n1 - n) : BL_AMX_TOK; /* < 16: a short-tile call */
        int32_t *c0 = out + n * ld_out + u.r, *c1 = c0 + 16 * ld_out;
        if (u.k0 == 0) {
            neg_sums(sum_q + n, nt, init[0]);
            _tile_loadd(0, init[0], 64);
            if (nb == 2) _tile_loadd(1, init[0], 64);
            if (two) {
                neg_sums(sum_q + n + 16, BL_AMX_TOK, init[1]);
                _tile_loadd(2, init[1], 64);
                if (nb == 2) _tile_loadd(3, init[1], 64);
            }
        } else {
            _tile_loadd(0, c0, ldo);
            if (nb == 2) _tile_loadd(1, c0 + 16, ldo);
            if (two) {
                _tile_loadd(2, c1, ldo);
                if (nb == 2) _tile_loadd(3, c1 + 16, ldo);
            }
        }
        const int8_t *a = Q + n * K + u.k0;
        const uint8_t *bt = btiles;
        /* loads interleaved with the products that need them (issuing all loads first was much
         * slower; docs/benchmarks.md#kernel-variants) */
        for (int64_t s = 0; s < u.kc / 64; ++s, a += 64, bt += 2048) {
            _tile_loadd(4, a, K);
            _tile_loadd(6, bt, 64);
            _tile_dpbsud(0, 4, 6);
            if (nb == 2) {
                _tile_loadd(7, bt + 1024, 64);
                _tile_dpbsud(1, 4, 7);
            }
            if (two) {
                _tile_loadd(5, a + 16 * K, K);
                _tile_dpbsud(2, 5, 6);
                if (nb == 2) _tile_dpbsud(3, 5, 7);
            }
            if (--countdown == 0) {
                decode_piece(fmt, w, K, tg, next);
                countdown = every;
            }
        }
        _tile_stored(0, c0, ldo);
        if (nb == 2) _tile_stored(1, c0 + 16, ldo);
        if (two) {
            _tile_stored(2, c1, ldo);
            if (nb == 2) _tile_stored(3, c1 + 16, ldo);
        }
    }
    while (next->done < next->total) decode_piece(fmt, w, K, tg, next);
}

/* The units of a slice in order: panels of 32 rows outer, weight chunks inner (so a panel's
 * int32 results for the slice, ≤ 64 KiB, stay in L2 between its chunks). False after the last. */
ALWAYS_INLINE int next_unit(amx_unit *u, int64_t r16, int64_t K) {
    u->k0 += u->kc;
    if (u->k0 >= K) {
        u->k0 = 0;
        u->r += BL_AMX_ROWS;
        if (u->r >= r16) return 0;
    }
    u->kc = K - u->k0 < BL_AMX_KC ? K - u->k0 : BL_AMX_KC;
    u->nb = r16 - u->r >= BL_AMX_ROWS ? 2 : 1;
    return 1;
}

/* Rows [r0, r16) (a multiple of 16) × tokens [n0, n1) on tiles, the units software-pipelined:
 * unit i + 1 is decoded into one buffer while unit i's products read the other. */
ALWAYS_INLINE void slice_amx(int fmt, const uint8_t *w, tl_geom *tg, const int8_t *Q, const int32_t *sum_q, int32_t *out, int64_t n0,
                             int64_t n1, int64_t K, int64_t ld_out, int64_t r0, int64_t r16) {
    _Alignas(64) uint8_t bufs[2][(BL_AMX_KC / 64) * 2 * 1024];
    amx_unit cur = {r0, 0, K < BL_AMX_KC ? K : BL_AMX_KC, r16 - r0 >= BL_AMX_ROWS ? 2 : 1};
    amx_decoder dec;
    decode_start(fmt, &dec, cur, bufs[0], r16);
    while (dec.done < dec.total) decode_piece(fmt, w, K, tg, &dec);
    for (int i = 0;; i ^= 1) {
        amx_unit nxt = cur;
        const int more = next_unit(&nxt, r16, K);
        decode_start(fmt, &dec, nxt, bufs[i ^ 1], r16);
        if (!more) dec.total = 0;
        const int64_t steps = (n1 - n0 + 2 * BL_AMX_TOK - 1) / (2 * BL_AMX_TOK) * (cur.kc / 64);
        const int64_t every = dec.total ? (steps / dec.total > 1 ? steps / dec.total : 1) : steps + 1;
        sweep(fmt, w, tg, Q, sum_q, out, n0, n1, K, ld_out, cur, bufs[i], &dec, every);
        if (!more) break;
        cur = nxt;
    }
}

/* The avx512vnni GEMM of the same layout on a part of the call, its own fault taken back (the
 * amx op applies its fault once, for the whole call). */
ALWAYS_INLINE void vnni_part(bl_gemm_fn gemm, int op, const uint8_t *w, const int8_t *Q, const int32_t *sum_q,
                             int32_t *out, int64_t N, int64_t K, int64_t ld_out, int64_t r0, int64_t r1) {
    if (N <= 0 || r1 <= r0) return;
    gemm(w, Q, sum_q, out, N, K, ld_out, r0, r1);
    if (r0 == 0) out[0] -= BL_MAD_FAULT(op);
}

/* Tokens [0, ntile) × rows [r0, r16) (a multiple of 16) on tiles: the full blocks of 16 tokens
 * in slices, then the last ntile − n16 < 16 on short tiles of that many rows (the TL GEMMs' small
 * calls, the rest of a larger one), so the weights are decoded once for them and nothing past token
 * ntile is read or written. */
ALWAYS_INLINE void tiles_amx(int fmt, const uint8_t *w, tl_geom *tg, const int8_t *Q, const int32_t *sum_q,
                             int32_t *out, int64_t ntile, int64_t K, int64_t ld_out, int64_t r0, int64_t r16) {
    const int64_t n16 = ntile / BL_AMX_TOK * BL_AMX_TOK;
    if (n16 > 0) {
        bl_amx_configure(8);
        /* Tokens in slices whose activations (slice × K bytes) stay in L2 while every panel of
         * rows sweeps them; inside a slice, panels outer and weight chunks inner, so the slice's
         * int32 results of one panel (≤ 64 KiB) stay in L2 between chunks. Each slice decodes the
         * weights again: ~100 cycles per 2048 weights against ≥ 16 tile products that reuse them. */
        int64_t slice = BL_AMX_SLICE_BYTES / K / (2 * BL_AMX_TOK) * (2 * BL_AMX_TOK);
        if (slice < 2 * BL_AMX_TOK) slice = 2 * BL_AMX_TOK;
        if (fmt == FMT_TL1 || fmt == FMT_TL2) {
            /* the TL decodes cost more per weight than the I2_S one: at least BL_AMX_TL_SLICE tokens
             * per decode, and slices of equal size (not a full one and a short rest) */
            if (slice < BL_AMX_TL_SLICE) slice = BL_AMX_TL_SLICE;
            const int64_t parts = (n16 + slice - 1) / slice, per = (n16 + parts - 1) / parts;
            slice = (per + 2 * BL_AMX_TOK - 1) / (2 * BL_AMX_TOK) * (2 * BL_AMX_TOK);
        }
        for (int64_t n0 = 0; n0 < n16; n0 += slice)
            slice_amx(fmt, w, tg, Q, sum_q, out, n0, n16 - n0 < slice ? n16 : n0 + slice, K, ld_out, r0, r16);
    }
    if (ntile > n16) {
        bl_amx_configure_rows(8, 4, 2, (int)(ntile - n16));
        slice_amx(fmt, w, tg, Q, sum_q, out, n16, ntile, K, ld_out, r0, r16);
    }
    _tile_release();
}

/* ---- Small calls (2 to 16 tokens): the weights as A tiles ---------------------------------
 * A batch of a few sequences or a verification pass has too few tokens for the 16-token A tiles
 * above to amortise the B tiles' decode (a transpose of 16 rows' packed dwords, then four planes
 * split out of each), so such a call cost about what 16 tokens cost. Here the roles swap:
 *   C[16 rows × N int32] += A[16 rows × 64 codes, uint8] · B[16 × N·4 int8]     (TDPBUSD)
 * A row m is 64 consecutive codes of weight row r + m: two planes of the row's 32-byte block,
 * already in weight order, so one 32-byte load, two shifts and two masks give a 128-weight block's
 * two A rows (no shuffle at all). B holds the call's N activation rows in the VNNI order (row k4:
 * for each token n the 4 activations of weights 4·k4 .. 4·k4 + 3), packed once per call; the C
 * tiles of a panel of up to 64 rows stay in their registers over the whole K, starting at −sum_q
 * of their column's token, so the integer result is Σ c·q − Σ q = Σ t·q exactly, as above. */
#define BL_AMX_SN_GROUPS 4 /* C tiles (16 weight rows each) of a small-call panel */
#ifndef BL_AMX_SN_DEPTH
/* blocks of A tiles in flight: decoded D − 1 blocks ahead of their products. 2 beat 3 and 4 (the
 * ring's 8 KiB a block, the call's B tiles and the weight lines in flight share L1:
 * docs/benchmarks.md#small-amx-calls-a-two-block-ring-2026-12-08) */
#define BL_AMX_SN_DEPTH 2
#endif
#ifndef BL_AMX_SN_MAX
#define BL_AMX_SN_MAX 16 /* most tokens of a small call (a B tile row holds 16 tokens' dwords) */
#endif

/* Tiles of a small call of n tokens: tmm0..3 = C (16 × n·4 bytes), tmm4, 5 = A (16 × 64),
 * tmm6, 7 = B (16 × n·4); A and B each alternate between two registers, so a tile load need not
 * wait for the product that reads the other one. */
static inline void sn_configure(int n) {
    bl_amx_config c;
    memset(&c, 0, sizeof c);
    c.palette = 1;
    for (int i = 0; i < 8; ++i) {
        c.rows[i] = 16;
        c.colsb[i] = (uint16_t)(i == 4 || i == 5 ? 64 : 4 * n);
    }
    _tile_loadconfig(&c);
}

/* Q (n × K int8, rows K apart) -> bq: for each 64-weight step s, the 16 × n·4-byte B tile, whose
 * row k4 holds dword (16·s + k4) of every token's row: a dword transpose. */
static void sn_pack_b(const int8_t *Q, int64_t n, int64_t K, int32_t *bq) {
    const int64_t K4 = K / 4;
    for (int64_t t = 0; t < n; ++t) {
        const int32_t *src = (const int32_t *)(Q + t * K);
        for (int64_t k4 = 0; k4 < K4; ++k4) {
            int32_t v;
            memcpy(&v, src + k4, 4);
            bq[k4 * n + t] = v;
        }
    }
}

/* Block b of the rows of 4-row groups [q0, q1) of the panel at r (16·g rows, r % 16 == 0) ->
 * dst[h][g][16][64] (h = the block's first / second 64 weights): A row m of half h = planes 2h,
 * 2h + 1 of the row's 32 bytes, shifted into each byte's low bits (64-bit shifts: the bits that cross into a byte from its neighbour are masked
 * off). The rows' addresses are stepped, four rows (an x4 group) at a time, not recomputed: the
 * decode is a few vector operations a row, and block_bytes' arithmetic would double it. Also
 * prefetches the same block of the next panel's rows (pf_rows of them) into L2, once per line. */
ALWAYS_INLINE void sn_decode_groups(int fmt, const uint8_t *w, int64_t K, int64_t r, int g, int64_t b, uint8_t *dst,
                                    int64_t pf_rows, int q0, int q1) {
    const __m512i three = _mm512_set1_epi8(3);
    const int lo0 = plane_shift(fmt, 0), lo1 = plane_shift(fmt, 1), lo2 = plane_shift(fmt, 2), lo3 = plane_shift(fmt, 3);
    const __m512i sh0 = _mm512_setr_epi64(lo0, lo0, lo0, lo0, lo1, lo1, lo1, lo1);
    const __m512i sh1 = _mm512_setr_epi64(lo2, lo2, lo2, lo2, lo3, lo3, lo3, lo3);
    const uint8_t *src;
    int64_t in_group, per_group; /* bytes from row i to row i + 1 of a group of 4, and to the next group */
    if (fmt == FMT_I2S_X4) {
        const int64_t nb = K / 128;
        const int odd_last = (nb & 1) && b == nb - 1; /* bl_i2s_x4_block */
        src = w + r * (K / 4) + (odd_last ? 128 * b : 256 * (b >> 1) + 32 * (b & 1));
        in_group = odd_last ? 32 : 64;
        per_group = K;
    } else if (fmt == FMT_I2S) {
        src = w + r * (K / 4) + 32 * b;
        in_group = K / 4;
        per_group = K;
    } else {
        src = w + r * bl_tq2_row_bytes(K) + (b / 2) * BL_TQ2_BLOCK_BYTES + 32 * (b % 2);
        in_group = bl_tq2_row_bytes(K);
        per_group = 4 * in_group;
    }
    const int64_t pf_ahead = 4 * g * per_group; /* the next panel: 16·g rows on */
    const int pf_block = fmt == FMT_TQ2 || !(b & 1); /* I2_S: a row's blocks b, b + 1 share a line */
    src += q0 * per_group;
    dst += q0 * 4 * 64;
    for (int q = q0; q < q1; ++q, src += per_group, dst += 4 * 64) {
        for (int i = 0; i < 4; ++i) {
            if (pf_block && 4 * q + i < pf_rows) _mm_prefetch((const char *)(src + pf_ahead + i * in_group), _MM_HINT_T1);
            const __m512i x = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(src + i * in_group)));
            _mm512_store_si512((__m512i *)(dst + 64 * i), _mm512_and_si512(_mm512_srlv_epi64(x, sh0), three));
            _mm512_store_si512((__m512i *)(dst + 64 * i + BL_AMX_SN_GROUPS * 1024),
                               _mm512_and_si512(_mm512_srlv_epi64(x, sh1), three));
        }
    }
}

/* A panel of rows [r, r + 16·g) (g ≤ 4 C tiles) × the call's n tokens, over the whole K: the A
 * tiles of block b + BL_AMX_SN_DEPTH − 1 are decoded into a ring of DEPTH buffers while block b's
 * products run. */
ALWAYS_INLINE void sn_panel(int fmt, const uint8_t *w, int64_t K, int64_t r, int g, int64_t pf_rows,
                            const int32_t *bq, int n, const int32_t init[16][16], int32_t *out, int64_t ld_out) {
    _Alignas(64) uint8_t abuf[BL_AMX_SN_DEPTH][2][BL_AMX_SN_GROUPS][16][64];
    _Alignas(64) int32_t cbuf[16][16];
    const int64_t nb = K / 128;
    const size_t bstride = (size_t)n * 4; /* bytes per B tile row */
    switch (g) { /* tile numbers are immediates */
    case 4: _tile_loadd(3, init, 64); /* fall through */
    case 3: _tile_loadd(2, init, 64); /* fall through */
    case 2: _tile_loadd(1, init, 64); /* fall through */
    default: _tile_loadd(0, init, 64);
    }
    for (int64_t b = 0; b < BL_AMX_SN_DEPTH - 1 && b < nb; ++b)
        sn_decode_groups(fmt, w, K, r, g, b, &abuf[b][0][0][0][0], pf_rows, 0, 4 * g);
    /* each block's 2·g products, and after each of them two 4-row groups of block b + DEPTH − 1
     * decoded (4·g groups in all): the vector work runs while the tile unit multiplies */
#define SN_PRODUCT(h, t, areg, breg)                                                               \
    do {                                                                                           \
        _tile_loadd(areg, cur[h][t], 64);                                                          \
        _tile_dpbusd(t, areg, breg);                                                               \
        if (dec) sn_decode_groups(fmt, w, K, r, g, d, dec, pf_rows, 2 * (g * (h) + (t)), 2 * (g * (h) + (t)) + 2); \
    } while (0)
    for (int64_t b = 0; b < nb; ++b) {
        uint8_t(*cur)[BL_AMX_SN_GROUPS][16][64] = abuf[b % BL_AMX_SN_DEPTH];
        const int32_t *b0 = bq + (2 * b) * 16 * n, *b1 = b0 + 16 * n;
        const int64_t d = b + BL_AMX_SN_DEPTH - 1;
        uint8_t *dec = d < nb ? &abuf[d % BL_AMX_SN_DEPTH][0][0][0][0] : NULL;
        _tile_loadd(6, b0, bstride);
        _tile_loadd(7, b1, bstride);
        SN_PRODUCT(0, 0, 4, 6);
        if (g > 1) SN_PRODUCT(0, 1, 5, 6);
        if (g > 2) SN_PRODUCT(0, 2, 4, 6);
        if (g > 3) SN_PRODUCT(0, 3, 5, 6);
        SN_PRODUCT(1, 0, 4, 7);
        if (g > 1) SN_PRODUCT(1, 1, 5, 7);
        if (g > 2) SN_PRODUCT(1, 2, 4, 7);
        if (g > 3) SN_PRODUCT(1, 3, 5, 7);
    }
#undef SN_PRODUCT
    for (int t = 0; t < g; ++t) {
        switch (t) {
        case 0: _tile_stored(0, cbuf, 64); break;
        case 1: _tile_stored(1, cbuf, 64); break;
        case 2: _tile_stored(2, cbuf, 64); break;
        default: _tile_stored(3, cbuf, 64);
        }
        for (int tok = 0; tok < n; ++tok)
            for (int m = 0; m < 16; ++m) out[tok * ld_out + r + 16 * t + m] = cbuf[m][tok];
    }
}

/* Rows [r0, r16) (a multiple of 16) × all n (2..16) tokens of a small call on tiles; 0 (nothing
 * done) if the B buffer could not be allocated. */
ALWAYS_INLINE int small_amx(int fmt, const uint8_t *w, const int8_t *Q, const int32_t *sum_q, int32_t *out,
                             int64_t n, int64_t K, int64_t ld_out, int64_t r0, int64_t r16) {
    _Alignas(64) int32_t init[16][16];
    int32_t *bq = aligned_alloc(64, (size_t)(n * K)); /* n·K bytes (K % 128 == 0): up to 16 × 65536 */
    if (!bq) return 0;
    sn_pack_b(Q, n, K, bq);
    for (int m = 0; m < 16; ++m)
        for (int t = 0; t < 16; ++t) init[m][t] = t < n ? -sum_q[t] : 0;
    sn_configure((int)n);
    for (int64_t r = r0; r < r16; r += 16 * BL_AMX_SN_GROUPS) {
        const int g = r16 - r >= 16 * BL_AMX_SN_GROUPS ? BL_AMX_SN_GROUPS : (int)((r16 - r) / 16);
        const int64_t next = r + 16 * g, pf = r16 - next < 16 * BL_AMX_SN_GROUPS ? r16 - next : 16 * BL_AMX_SN_GROUPS;
        sn_panel(fmt, w, K, r, g, pf, bq, (int)n, (const int32_t(*)[16])init, out, ld_out);
    }
    _tile_release();
    free(bq);
    return 1;
}

ALWAYS_INLINE void gemm_amx(int fmt, bl_gemm_fn tail_gemm, int op, const uint8_t *w, const int8_t *Q,
                            const int32_t *sum_q, int32_t *out, int64_t N, int64_t K, int64_t ld_out, int64_t r0,
                            int64_t r1) {
    /* x4: rows from r1 / 4 * 4 on are the row-major M % 4 tail (bl_mad.h): v3 reads them */
    const int64_t full = fmt == FMT_I2S_X4 ? r1 / 4 * 4 : r1;
    const int64_t n16 = N / BL_AMX_TOK * BL_AMX_TOK, rem = N - n16;
    /* tokens that run on tiles: the full blocks of 16, and the last rem < 16 on short tiles */
    const int64_t ntile = rem >= BL_AMX_MIN_TOK ? N : n16;
    int64_t r16 = full > r0 ? r0 + (full - r0) / 16 * 16 : r0;
    /* Small calls: 2 to 16 tokens in one; 17 to 32 in two of half the tokens each (the weights
     * decoded into A tiles twice), which cost less than one pass of the 16-token tiles, whose B-tile
     * decode is the dearer one (docs/benchmarks.md#issue-20s-2b-4t-targets-end-of-session-2026-12-08) */
    const int64_t n1 = N <= BL_AMX_SN_MAX ? N : N / 2;
    if (N >= BL_AMX_MIN_TOK && N <= 2 * BL_AMX_SN_MAX && r16 > r0 &&
        small_amx(fmt, w, Q, sum_q, out, n1, K, ld_out, r0, r16) &&
        (n1 == N || small_amx(fmt, w, Q + n1 * K, sum_q + n1, out + n1 * ld_out, N - n1, K, ld_out, r0, r16))) {
        vnni_part(tail_gemm, op, w, Q, sum_q, out, N, K, ld_out, r16, r1); /* rows past the panels */
        bl_gemx_fault(op, out, r0, r1);
        return;
    }
    if (ntile > 0 && r16 > r0)
        tiles_amx(fmt, w, NULL, Q, sum_q, out, ntile, K, ld_out, r0, r16);
    else
        r16 = r0; /* nothing ran on tiles: v3 takes every row */
    vnni_part(tail_gemm, op, w, Q, sum_q, out, ntile, K, ld_out, r16, r1); /* rows past the panels */
    vnni_part(tail_gemm, op, w, Q + ntile * K, sum_q + ntile, out + ntile * ld_out, N - ntile, K, ld_out, r0, r1);
    bl_gemx_fault(op, out, r0, r1);
}

void bl_i2s_gemm_amx(const uint8_t *w, const int8_t *Q, const int32_t *sum_q, int32_t *out, int64_t N, int64_t K,
                     int64_t ld_out, int64_t r0, int64_t r1) {
    gemm_amx(FMT_I2S, bl_i2s_gemm_v3, BL_OP_I2S_GEMM, w, Q, sum_q, out, N, K, ld_out, r0, r1);
}

void bl_i2s_x4_gemm_amx(const uint8_t *w, const int8_t *Q, const int32_t *sum_q, int32_t *out, int64_t N, int64_t K,
                        int64_t ld_out, int64_t r0, int64_t r1) {
    gemm_amx(FMT_I2S_X4, bl_i2s_x4_gemm_v3, BL_OP_I2S_X4_GEMM, w, Q, sum_q, out, N, K, ld_out, r0, r1);
}

void bl_tq2_gemm_amx(const uint8_t *w, const int8_t *Q, const int32_t *sum_q, int32_t *out, int64_t N, int64_t K,
                     int64_t ld_out, int64_t r0, int64_t r1) {
    gemm_amx(FMT_TQ2, bl_tq2_gemm_v3, BL_OP_TQ2_GEMM, w, Q, sum_q, out, N, K, ld_out, r0, r1);
}

/* TL1 / TL2 (bl_lut.h): every token on tiles (a single one too: its short tile still decodes the
 * weights once), rows in whole sub-tiles (multiples of 16 and 32). */
bl_lut_status bl_tl1_gemm_amx(const uint8_t *data, const int8_t *Q, const int32_t *sum_q, int64_t N, int64_t M,
                              int64_t K, int64_t BM, int64_t BK, int64_t bm, int64_t r0, int64_t r1, int64_t ld_out,
                              int32_t *out) {
    tl_geom g = {M, BM, BK, bm, 0, BM * BK / 4, bm * BK / 4, 0}; /* block (mt, kt + 1, bt) is BM·BK/4 bytes on */
    if (N > 0 && r1 > r0) tiles_amx(FMT_TL1, data, &g, Q, sum_q, out, N, K, ld_out, r0, r1);
    const bl_lut_status st = g.bad ? bl_tl1_scan(data, M, K, BM, BK, bm, r0, r1) : (bl_lut_status){0, -1};
    return N > 0 ? bl_lut_fault_out(BL_FAULT_TL1_GEMM, st, out, r0, r1) : st;
}

bl_lut_status bl_tl2_gemm_amx(const uint8_t *data, const int8_t *Q, const int32_t *sum_q, int64_t N, int64_t M,
                              int64_t K, int64_t BM, int64_t BK, int64_t r0, int64_t r1, int64_t ld_out, int32_t *out) {
    /* index block (mt, kt + 1, bt) is BM·BK/6 bytes on (its sign block BM·BK/24) */
    tl_geom g = {M, BM, BK, BL_TL2_SUBTILE, bl_tl2_three_k(K, BK), BM * BK / 6, BK / 6 * BL_TL2_SUBTILE, 0};
    if (N > 0 && r1 > r0) tiles_amx(FMT_TL2, data, &g, Q, sum_q, out, N, K, ld_out, r0, r1);
    const bl_lut_status st = g.bad ? bl_tl2_scan(data, M, K, BM, BK, r0, r1) : (bl_lut_status){0, -1};
    return N > 0 ? bl_lut_fault_out(BL_FAULT_TL2_GEMM, st, out, r0, r1) : st;
}
