/* pack_avx512vnni.c — I2_S codec, v2: AVX-512 (BW), two 128-weight blocks per iteration.
 *
 * Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512vnni (setup.py) and called only on
 * CPUs with all four (bl_dispatch.c); the codec itself needs only F and BW — the level is
 * named after the VNNI dot product its matmul kernels will use. Must match pack_scalar.c
 * bit for bit.
 *
 * Unpack: one 64-byte load = blocks A (bytes 0..31, 128-bit lanes 0-1) and B (lanes 2-3).
 * Shift/mask gives plane p of A in lanes 0-1 and plane p of B in lanes 2-3. A's first 64
 * outputs are [A.p0 | A.p1] = lanes {0,1} of p0 and {0,1} of p1 — _mm512_shuffle_i64x2
 * with 0x44 — and B's are lanes {2,3}, {2,3} — 0xEE. Planes 2, 3 likewise.
 * Pack: the same shuffles in reverse to gather [A.pk | B.pk], then the AVX2 combine.
 * A lone last block goes through the same code with B read as zeros (masked load) and only
 * A's half stored.
 */
#include <immintrin.h>

#include "bl_kernels.h"

/* _mm512_shuffle_i64x2 selectors: lanes {0,1} of a then {0,1} of b; lanes {2,3} of each. */
#define LO_HALVES 0x44
#define HI_HALVES 0xEE

/* Plane p (shift 6 - 2p) of both blocks, as t = code - 1. */
static inline __m512i plane_t(__m512i v, unsigned shift) {
    const __m512i three = _mm512_set1_epi8(3);
    return _mm512_sub_epi8(_mm512_and_si512(_mm512_srli_epi16(v, shift), three), _mm512_set1_epi8(1));
}

/* Code 3 anywhere in v: bit 2k of v & (v >> 1) is set exactly when pair k is 0b11. */
static inline __mmask64 has_code3(__m512i v) {
    return _mm512_test_epi8_mask(_mm512_and_si512(v, _mm512_srli_epi16(v, 1)), _mm512_set1_epi8(0x55));
}

bl_status bl_unpack_i2_s_avx512vnni(const uint8_t *packed, int8_t *out, int64_t n_blocks) {
    __mmask64 bad = 0;
    int64_t blk = 0;
    for (; blk + 2 <= n_blocks; blk += 2) {
        const __m512i v = _mm512_loadu_si512((const void *)(packed + BL_I2S_BLOCK_BYTES * blk));
        const __m512i p0 = plane_t(v, 6), p1 = plane_t(v, 4), p2 = plane_t(v, 2), p3 = plane_t(v, 0);
        int8_t *o = out + BL_I2S_BLOCK * blk; /* block A at o, block B at o + 128 */
        _mm512_storeu_si512((void *)(o + 0), _mm512_shuffle_i64x2(p0, p1, LO_HALVES));
        _mm512_storeu_si512((void *)(o + 64), _mm512_shuffle_i64x2(p2, p3, LO_HALVES));
        _mm512_storeu_si512((void *)(o + 128), _mm512_shuffle_i64x2(p0, p1, HI_HALVES));
        _mm512_storeu_si512((void *)(o + 192), _mm512_shuffle_i64x2(p2, p3, HI_HALVES));
        bad |= has_code3(v);
    }
    if (blk < n_blocks) { /* one block left: bytes 32..63 read as zero (code 0, valid) */
        const __m512i v = _mm512_maskz_loadu_epi8((__mmask64)0xFFFFFFFFu, packed + BL_I2S_BLOCK_BYTES * blk);
        const __m512i p0 = plane_t(v, 6), p1 = plane_t(v, 4), p2 = plane_t(v, 2), p3 = plane_t(v, 0);
        int8_t *o = out + BL_I2S_BLOCK * blk;
        _mm512_storeu_si512((void *)(o + 0), _mm512_shuffle_i64x2(p0, p1, LO_HALVES));
        _mm512_storeu_si512((void *)(o + 64), _mm512_shuffle_i64x2(p2, p3, LO_HALVES));
        bad |= has_code3(v);
    }
    if (bad) return bl_i2_s_scan_codes(packed, n_blocks);
    return (bl_status){0, -1};
}

/* Packs [A.pk | B.pk] planes (as t) into 64 bytes; marks any t outside {-1, 0, 1} in *bad. */
static inline __m512i pack_planes(__m512i t0, __m512i t1, __m512i t2, __m512i t3, __mmask64 *bad) {
    const __m512i one = _mm512_set1_epi8(1), two = _mm512_set1_epi8(2);
    const __m512i c0 = _mm512_add_epi8(t0, one), c1 = _mm512_add_epi8(t1, one);
    const __m512i c2 = _mm512_add_epi8(t2, one), c3 = _mm512_add_epi8(t3, one);
    *bad |= _mm512_cmpgt_epu8_mask(c0, two) | _mm512_cmpgt_epu8_mask(c1, two) |
            _mm512_cmpgt_epu8_mask(c2, two) | _mm512_cmpgt_epu8_mask(c3, two);
    /* c <= 2 fits in 2 bits, so 16-bit shifts by <= 6 stay inside each byte */
    const __m512i hi = _mm512_or_si512(_mm512_slli_epi16(c0, 6), _mm512_slli_epi16(c1, 4));
    const __m512i lo = _mm512_or_si512(_mm512_slli_epi16(c2, 2), c3);
    return _mm512_or_si512(hi, lo);
}

bl_status bl_pack_i2_s_avx512vnni(const int8_t *t, uint8_t *packed, int64_t n_blocks) {
    __mmask64 bad = 0;
    int64_t blk = 0;
    for (; blk + 2 <= n_blocks; blk += 2) {
        const int8_t *x = t + BL_I2S_BLOCK * blk;
        const __m512i a01 = _mm512_loadu_si512((const void *)(x + 0));   /* [A.p0 | A.p1] */
        const __m512i a23 = _mm512_loadu_si512((const void *)(x + 64));  /* [A.p2 | A.p3] */
        const __m512i b01 = _mm512_loadu_si512((const void *)(x + 128)); /* [B.p0 | B.p1] */
        const __m512i b23 = _mm512_loadu_si512((const void *)(x + 192)); /* [B.p2 | B.p3] */
        const __m512i bytes = pack_planes(_mm512_shuffle_i64x2(a01, b01, LO_HALVES),  /* [A.p0|B.p0] */
                                          _mm512_shuffle_i64x2(a01, b01, HI_HALVES),  /* [A.p1|B.p1] */
                                          _mm512_shuffle_i64x2(a23, b23, LO_HALVES),  /* [A.p2|B.p2] */
                                          _mm512_shuffle_i64x2(a23, b23, HI_HALVES), /* [A.p3|B.p3] */
                                          &bad);
        _mm512_storeu_si512((void *)(packed + BL_I2S_BLOCK_BYTES * blk), bytes);
    }
    if (blk < n_blocks) { /* one block left: B is all zeros (t = 0, valid); store A's 32 bytes */
        const int8_t *x = t + BL_I2S_BLOCK * blk;
        const __m512i a01 = _mm512_loadu_si512((const void *)(x + 0));
        const __m512i a23 = _mm512_loadu_si512((const void *)(x + 64));
        const __m512i z = _mm512_setzero_si512();
        const __m512i bytes = pack_planes(_mm512_shuffle_i64x2(a01, z, LO_HALVES),
                                          _mm512_shuffle_i64x2(a01, z, HI_HALVES),
                                          _mm512_shuffle_i64x2(a23, z, LO_HALVES),
                                          _mm512_shuffle_i64x2(a23, z, HI_HALVES), &bad);
        _mm512_mask_storeu_epi8(packed + BL_I2S_BLOCK_BYTES * blk, (__mmask64)0xFFFFFFFFu, bytes);
    }
    if (bad) return bl_ternary_scan(t, BL_I2S_BLOCK * n_blocks);
    return (bl_status){0, -1};
}
