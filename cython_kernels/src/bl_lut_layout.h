/* bl_lut_layout.h — byte offsets of the TL1 / TL2 packed layouts (internal to lut_*.c).
 *
 * The layouts (bitnet_lab/quant/packing.py docstring; docs/formats.md#32-tl1-type-38,
 * docs/formats.md#33-tl2-type-39), in the terms the kernels use:
 *
 * TL1, tiling (BM, BK, bm), by = 256 / bm: the data is a run of "blocks", one per
 * (mt, kt, bt) in that order (M-tile, K-tile, bm-row sub-tile), each bm*BK/4 bytes; a block is
 * BK/by "compute blocks" yb of 64 bytes; a compute block is (rc, pq, r16) = (bm/16, by/4, 16)
 * bytes: byte (rc, pq, r16) holds row bt*bm + rc*16 + r16 of the sub-tile, its high nibble the
 * index of pair yb*by/2 + 2*pq and its low nibble that of the next pair (pairs counted from
 * the K-tile start kt*BK/2).
 *
 * TL2, tiling (BM, BK, 32), three_k = (K/BK)*BK, two_k = K - three_k:
 *   index part  blocks (mt, kt, bt) of BK/6 compute blocks yb of 32 bytes; byte p holds
 *               row 8*SWAP[p/8] + p%8 of the sub-tile (SWAP = 0, 2, 1, 3), high nibble the
 *               magnitude of triple 2*yb, low nibble triple 2*yb + 1 (from kt*BK/3);
 *   sign part   at M*three_k/6: blocks (mt, kt, bt) of BK/24 units of 32 bytes = 16 uint16 LE
 *               words w[c]; bit 15 - s of w[c] is the sign of triple u*8 + s/2, row
 *               (s%2)*16 + c;
 *   pair tail   at M*three_k/6 + M*three_k/24: blocks (mt, kt2, bt), kt2 < two_k/32, of 8
 *               compute blocks of 32 bytes, bytes as in the index part, nibbles = pair
 *               indices of pairs 2*yb, 2*yb + 1 (from three_k/2 + kt2*16).
 */
#ifndef BL_LUT_LAYOUT_H
#define BL_LUT_LAYOUT_H

#include <stdint.h>

/* Offset of TL1 block (mt, kt, bt). */
static inline int64_t bl_tl1_block_offset(int64_t K, int64_t BM, int64_t BK, int64_t bm,
                                          int64_t mt, int64_t kt, int64_t bt) {
    return ((mt * (K / BK) + kt) * (BM / bm) + bt) * (bm * BK / 4);
}

/* TL2 split of K. */
static inline int64_t bl_tl2_three_k(int64_t K, int64_t BK) { return (K / BK) * BK; }

/* Offset of the TL2 index block (mt, kt, bt); K3 = three_k. */
static inline int64_t bl_tl2_index_offset(int64_t K3, int64_t BM, int64_t BK, int64_t mt,
                                          int64_t kt, int64_t bt) {
    return ((mt * (K3 / BK) + kt) * (BM / 32) + bt) * (BK / 6 * 32);
}

/* Offset of the TL2 sign block (mt, kt, bt). */
static inline int64_t bl_tl2_sign_offset(int64_t M, int64_t K3, int64_t BM, int64_t BK,
                                         int64_t mt, int64_t kt, int64_t bt) {
    return M * K3 / 6 + ((mt * (K3 / BK) + kt) * (BM / 32) + bt) * (BK / 24 * 32);
}

/* Offset of the TL2 tail block (mt, kt2, bt); K2 = two_k. */
static inline int64_t bl_tl2_tail_offset(int64_t M, int64_t K3, int64_t K2, int64_t BM,
                                         int64_t mt, int64_t kt2, int64_t bt) {
    return M * K3 / 6 + M * K3 / 24 + ((mt * (K2 / 32) + kt2) * (BM / 32) + bt) * 256;
}

/* Row (in the 32-row sub-tile) held by byte p of a TL2 compute block. */
static inline int bl_tl2_row_of_byte(int p) {
    static const int swap[4] = {0, 2, 1, 3};
    return 8 * swap[p / 8] + p % 8;
}

/* SIMD kernels walk the rows in groups: up to BL_LUT_GROUP consecutive sub-tiles of one
 * M-tile, K-tiles outer and the group's sub-tiles inner. That is the order of the bytes in
 * the blob (blocks (mt, kt, bt)), so the weights stream through memory; the group's int32 sums
 * (at most BL_LUT_GROUP * 64 rows) live in a stack buffer. Returns the group size at s. */
#define BL_LUT_GROUP 16
static inline int64_t bl_lut_group(int64_t s, int64_t s1, int64_t subs) {
    int64_t g = subs - s % subs;
    if (g > s1 - s) g = s1 - s;
    return g > BL_LUT_GROUP ? BL_LUT_GROUP : g;
}

/* Record an invalid index found at byte offset `off`. */
#define BL_LUT_BAD(st, off)                                                            \
    do {                                                                               \
        (st).n_bad += 1;                                                               \
        if ((st).first_bad_byte < 0 || (int64_t)(off) < (st).first_bad_byte)          \
            (st).first_bad_byte = (int64_t)(off);                                      \
    } while (0)

#endif /* BL_LUT_LAYOUT_H */
