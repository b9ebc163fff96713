/* bl_lut.h — TL1 / TL2 lookup-table kernels: LUT construction and GEMV, one implementation
 * per ISA level (lut_scalar.c, lut_avx2.c, lut_avx512.c, lut_neon.c). Self-contained (only <stdint.h>; the
 * one global it reads is the fault mask, below), so a C caller (the engine) can include it alone; bl_kernels.h includes it and puts the
 * functions into the dispatch table (fields tl1_build_lut, tl2_build_lut, tl1_gemv, tl2_gemv).
 * numpy twins and the full statement of the layouts: bitnet_lab/quant/lut.py (tables) and
 * bitnet_lab/quant/packing.py (packed weights). Facts: docs/kernels.md#3-tl1-arm-neon-lut to
 * docs/kernels.md#5-tiling-parameters-and-code-generation, docs/formats.md#32-tl1-type-38 to
 * docs/formats.md#33-tl2-type-39.
 *
 * ---- activations ---------------------------------------------------------------------------
 * Input is an already quantised int8 row q[K] (bitnet_lab's activation policy; its scale s_x
 * is applied by the caller's epilogue acc / s_x * gamma). Any int8 value is allowed, -128
 * included: every result is exact.
 *
 * ---- LUT buffer (byte-plane form) ----------------------------------------------------------
 * One 32-byte table per activation group, in activation order: table j at lut + 32*j,
 * bytes 0..15 = low bytes of entries 0..15, bytes 16..31 = high bytes (int16 two's
 * complement); entry e = (int16_t)(lut[32j+16+e] << 8 | lut[32j+e]).
 *   TL1 (pair j = q[2j], q[2j+1]):  entry 3*t0 + t1 + 4 = t0*q[2j] + t1*q[2j+1]; 9..15 = 0.
 *   TL2 (triple j = q[3j..3j+2]):   entry m = t0*b0 + t1*b1 + t2*b2 for 9*t0 + 3*t1 + t2 = +m;
 *                                   14, 15 = 0. Then the tail's TL1 pair tables.
 * A TL1 row needs BL_TL1_LUT_BYTES(K) = 16*K bytes; a TL2 row BL_TL2_LUT_BYTES(K, BK).
 * Tables are independent: building q[a .. b) (a, b multiples of 2 for TL1) into
 * lut + 16*a gives the same bytes as the slice of the whole-row build, so a caller may build
 * a row's LUT in parallel pieces.
 *
 * ---- GEMV --------------------------------------------------------------------------------
 * out[r] = sum_k t[r, k] * q[k] (exact int32) for the rows r in [r0, r1), read from the packed
 * bytes `data` of the whole (M, K) tensor (the file's blob: TL1 M*K/4 bytes, TL2 index
 * nibbles + sign plane + pair tail as in packing.py) through the row's LUT. `out` is the base
 * of the caller's M-vector; only out[r0 .. r1) is written. r0 and r1 must be multiples of the
 * sub-tile height (bm for TL1, 32 for TL2) with 0 <= r0 <= r1 <= M — row ranges of different
 * calls are independent, so threads may split the rows any way at that granularity and the
 * results are identical. Tiling: BM, BK, bm as runtime arguments; the caller guarantees a
 * legal tiling (bitnet_lab.quant.tiling.validate_tiling; BK <= 256) — the kernels do not
 * re-check. No allocation, no global state; the kernels only read data and lut.
 * Stack: the SIMD GEMVs keep a sub-tile group's int32 sums there (AVX2: < 5 KiB); the AVX-512
 * ones also keep the K-tile's table registers and TL1's running int16 sums (TL1 < 16 KiB, TL2
 * < 10 KiB). The builds use none to speak of.
 *
 * Exactness: SIMD paths sum the looked-up entries in int16 and widen into int32 before any
 * int16 accumulator can exceed 127 entries of |e| <= 256 (TL1 pairs) or 85 of |e| <= 384
 * (TL2 triples): |sum| <= 32640 < 32767 for every int8 row (docs/kernels.md#32-compute-per-block,
 * docs/kernels.md#42-compute-per-32-rows).
 *
 * Invalid indices (a TL1 / TL2-tail pair index > 8, a TL2 magnitude > 13) would read a
 * padding entry 0. Every GEMV checks them (SIMD: a running byte max, then an exact scalar
 * scan of the range when it fired) and returns their count and the smallest byte offset
 * (from `data`) of a byte holding one; out[] of the range is then unspecified.
 */
#ifndef BL_LUT_H
#define BL_LUT_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define BL_LUT_TABLE_BYTES 32 /* one 16-entry int16 table in byte-plane form */
#define BL_TL1_MAX_INDEX 8    /* pair index 3*t0 + t1 + 4 in 0..8 */
#define BL_TL2_MAX_MAG 13     /* triple magnitude |9*t0 + 3*t1 + t2| in 0..13 */
#define BL_TL2_SUBTILE 32     /* TL2 rows per sub-tile (bm) */
#define BL_TL2_TAIL_BK 32     /* TL2 pair tail: columns per K-block */

/* LUT bytes of one activation row. */
#define BL_TL1_LUT_BYTES(K) ((int64_t)(K) / 2 * BL_LUT_TABLE_BYTES)
#define BL_TL2_LUT_BYTES(K, BK)                                               \
    ((((int64_t)(K) / (BK)) * (BK) / 3 + ((int64_t)(K) % (BK)) / 2) * BL_LUT_TABLE_BYTES)

/* Invalid-index report of a GEMV range: count, and smallest byte offset in data (or -1). */
typedef struct {
    int64_t n_bad;
    int64_t first_bad_byte;
} bl_lut_status;

/* TL1 tables of q[0 .. K) (K even) -> lut[0 .. 16*K). */
typedef void (*bl_tl1_build_lut_fn)(const int8_t *q, int64_t K, uint8_t *lut);
/* TL2 tables of q[0 .. K) under the K-tile BK: the three_k/3 triple tables of
 * q[0 .. three_k), three_k = (K / BK) * BK, then the (K - three_k)/2 pair tables of the tail
 * -> lut[0 .. BL_TL2_LUT_BYTES(K, BK)). */
typedef void (*bl_tl2_build_lut_fn)(const int8_t *q, int64_t K, int64_t BK, uint8_t *lut);
/* GEMV of rows [r0, r1) (see above). lut: the row's LUT from the matching build function. */
typedef bl_lut_status (*bl_tl1_gemv_fn)(const uint8_t *data, const uint8_t *lut, int64_t M,
                                        int64_t K, int64_t BM, int64_t BK, int64_t bm,
                                        int64_t r0, int64_t r1, int32_t *out);
typedef bl_lut_status (*bl_tl2_gemv_fn)(const uint8_t *data, const uint8_t *lut, int64_t M,
                                        int64_t K, int64_t BM, int64_t BK, int64_t r0,
                                        int64_t r1, int32_t *out);

/* ---- GEMM (prefill, several tokens) -------------------------------------------------------
 * out[n·ld_out + r] = sum_k t[r, k] · Q[n·K + k] (exact int32) for the N rows of Q (stride K)
 * and the rows r in [r0, r1), with sum_q[n] = sum_k Q[n·K + k]. No LUT: the index nibbles are
 * decoded once per call into the codes t + 1 of the tile GEMM (mad_amx.c), so the weights are
 * read once for all N tokens instead of once per token. Same tiling, row-range and invalid-index
 * contract as the GEMVs; also K % 64 == 0. Only the amx level has them (NULL elsewhere: the
 * engine then runs the GEMV per token). */
typedef bl_lut_status (*bl_tl1_gemm_fn)(const uint8_t *data, const int8_t *Q, const int32_t *sum_q,
                                        int64_t N, int64_t M, int64_t K, int64_t BM, int64_t BK,
                                        int64_t bm, int64_t r0, int64_t r1, int64_t ld_out,
                                        int32_t *out);
typedef bl_lut_status (*bl_tl2_gemm_fn)(const uint8_t *data, const int8_t *Q, const int32_t *sum_q,
                                        int64_t N, int64_t M, int64_t K, int64_t BM, int64_t BK,
                                        int64_t r0, int64_t r1, int64_t ld_out, int32_t *out);

/* ---- fault injection -------------------------------------------------------------------
 * The MAD family's switch (bl_mad.h: bl_mad_set_fault), with its own bits after the MAD ops, so
 * one mask covers every kernel the engine runs. Build: every int16 entry of the call's first
 * table (the table of q[0 .. 2) / q[0 .. 3)) is 1 too large, so every row's sum moves by ±1 (TL2
 * applies the triple's sign). GEMV: out[0] + 1 in the call whose range starts at row 0 (the same
 * value for every thread split); GEMM: the same, token 0's row 0. Each kernel reads the flag once per call. Off by default. */
enum {
    BL_FAULT_TL1_BUILD_LUT = 17, /* = BL_OP_COUNT (bl_mad.h; mad_dispatch.c asserts it) */
    BL_FAULT_TL2_BUILD_LUT = 18,
    BL_FAULT_TL1_GEMV = 19,
    BL_FAULT_TL2_GEMV = 20,
    BL_FAULT_TL1_GEMM = 21,
    BL_FAULT_TL2_GEMM = 22,
    BL_FAULT_COUNT = 23
};
extern volatile int bl_mad_fault_mask; /* mad_dispatch.c */
#define BL_LUT_FAULT(bit) ((bl_mad_fault_mask >> (bit)) & 1)

/* A build's fault: +1 on the 16 int16 entries of its first table (byte-plane form). */
static inline void bl_lut_fault_table(int bit, uint8_t *lut, int64_t K) {
    if (K <= 0 || !BL_LUT_FAULT(bit)) return;
    for (int e = 0; e < 16; ++e) {
        const uint16_t u = (uint16_t)((unsigned)lut[e] | ((unsigned)lut[16 + e] << 8)) + 1u;
        lut[e] = (uint8_t)(u & 0xFF);
        lut[16 + e] = (uint8_t)(u >> 8);
    }
}

/* A GEMV's fault: +1 on out[0] in the call that owns row 0, when the data were valid. */
static inline bl_lut_status bl_lut_fault_out(int bit, bl_lut_status st, int32_t *out, int64_t r0, int64_t r1) {
    if (st.n_bad == 0 && r0 == 0 && r1 > 0 && BL_LUT_FAULT(bit)) out[0] += 1;
    return st;
}

/* ---- per-ISA implementations ---------------------------------------------------------- */
void bl_tl1_build_lut_scalar(const int8_t *q, int64_t K, uint8_t *lut);
void bl_tl2_build_lut_scalar(const int8_t *q, int64_t K, int64_t BK, uint8_t *lut);
bl_lut_status bl_tl1_gemv_scalar(const uint8_t *data, const uint8_t *lut, int64_t M, int64_t K,
                                 int64_t BM, int64_t BK, int64_t bm, int64_t r0, int64_t r1,
                                 int32_t *out);
bl_lut_status bl_tl2_gemv_scalar(const uint8_t *data, const uint8_t *lut, int64_t M, int64_t K,
                                 int64_t BM, int64_t BK, int64_t r0, int64_t r1, int32_t *out);

void bl_tl1_build_lut_avx2(const int8_t *q, int64_t K, uint8_t *lut);
void bl_tl2_build_lut_avx2(const int8_t *q, int64_t K, int64_t BK, uint8_t *lut);
bl_lut_status bl_tl1_gemv_avx2(const uint8_t *data, const uint8_t *lut, int64_t M, int64_t K,
                               int64_t BM, int64_t BK, int64_t bm, int64_t r0, int64_t r1,
                               int32_t *out);
bl_lut_status bl_tl2_gemv_avx2(const uint8_t *data, const uint8_t *lut, int64_t M, int64_t K,
                               int64_t BM, int64_t BK, int64_t r0, int64_t r1, int32_t *out);

/* AVX-512 (lut_avx512.c): GEMVs only; the avx512vnni / amx levels pair them with the AVX2 build. */
bl_lut_status bl_tl1_gemv_avx512(const uint8_t *data, const uint8_t *lut, int64_t M, int64_t K,
                                 int64_t BM, int64_t BK, int64_t bm, int64_t r0, int64_t r1,
                                 int32_t *out);
bl_lut_status bl_tl2_gemv_avx512(const uint8_t *data, const uint8_t *lut, int64_t M, int64_t K,
                                 int64_t BM, int64_t BK, int64_t r0, int64_t r1, int32_t *out);

void bl_tl1_build_lut_neon(const int8_t *q, int64_t K, uint8_t *lut);
void bl_tl2_build_lut_neon(const int8_t *q, int64_t K, int64_t BK, uint8_t *lut);
bl_lut_status bl_tl1_gemv_neon(const uint8_t *data, const uint8_t *lut, int64_t M, int64_t K,
                               int64_t BM, int64_t BK, int64_t bm, int64_t r0, int64_t r1,
                               int32_t *out);
bl_lut_status bl_tl2_gemv_neon(const uint8_t *data, const uint8_t *lut, int64_t M, int64_t K,
                               int64_t BM, int64_t BK, int64_t r0, int64_t r1, int32_t *out);

/* AMX tile GEMMs (mad_amx.c). */
bl_lut_status bl_tl1_gemm_amx(const uint8_t *data, const int8_t *Q, const int32_t *sum_q, int64_t N,
                              int64_t M, int64_t K, int64_t BM, int64_t BK, int64_t bm, int64_t r0,
                              int64_t r1, int64_t ld_out, int32_t *out);
bl_lut_status bl_tl2_gemm_amx(const uint8_t *data, const int8_t *Q, const int32_t *sum_q, int64_t N,
                              int64_t M, int64_t K, int64_t BM, int64_t BK, int64_t r0, int64_t r1,
                              int64_t ld_out, int32_t *out);

/* Exact scans for invalid indices over rows [r0, r1) (lut_scalar.c); the SIMD GEMVs call
 * them only after their cheap test fired. Same result as the scalar GEMVs' status. */
bl_lut_status bl_tl1_scan(const uint8_t *data, int64_t M, int64_t K, int64_t BM, int64_t BK,
                          int64_t bm, int64_t r0, int64_t r1);
bl_lut_status bl_tl2_scan(const uint8_t *data, int64_t M, int64_t K, int64_t BM, int64_t BK,
                          int64_t r0, int64_t r1);
/* Rows [r0, r1) (multiples of the sub-tile: bm for TL1, 32 for TL2) as int8 ternary values, row r at
 * t + (r − r0)·K: the engine's load-time transcode of TL files into the MAD layouts
 * (docs/kernels.md#tl-files-in-the-mad-layouts). Invalid indices are counted as by the scans (an
 * out-of-range nibble decodes as 0 there; the caller reports the status). */
bl_lut_status bl_tl1_ternary(const uint8_t *data, int64_t M, int64_t K, int64_t BM, int64_t BK, int64_t bm,
                             int64_t r0, int64_t r1, int8_t *t);
bl_lut_status bl_tl2_ternary(const uint8_t *data, int64_t M, int64_t K, int64_t BM, int64_t BK, int64_t r0,
                             int64_t r1, int8_t *t);

#ifdef __cplusplus
}
#endif

#endif /* BL_LUT_H */
