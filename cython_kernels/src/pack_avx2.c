/* pack_avx2.c — I2_S codec, v1: AVX2, one 128-weight block (32 bytes) per iteration.
 *
 * Compiled with -mavx2 -mfma only (setup.py); called only when the CPU has both
 * (bl_dispatch.c). Must match pack_scalar.c bit for bit.
 *
 * Unpack (docs/kernels.md#21-x86-avx2 step 1): load the block's 32 bytes, shift right by 6, 4, 2, 0
 * and AND with 3. Each result is one plane = 32 consecutive elements, so it is stored
 * with one plain 32-byte store after subtracting 1 (code -> t). AVX2 has no 8-bit shift;
 * the 16-bit shift drags bits of the neighbouring byte in, and the AND with 3 drops them.
 *
 * Pack: the inverse. Load the four 32-element planes, add 1 (t -> code), and combine
 * c0 << 6 | c1 << 4 | c2 << 2 | c3 with 16-bit shifts: a valid code is at most 2 bits, so
 * shifting it by <= 6 never crosses into the neighbouring byte.
 */
#include <immintrin.h>

#include "bl_kernels.h"

bl_status bl_unpack_i2_s_avx2(const uint8_t *packed, int8_t *out, int64_t n_blocks) {
    const __m256i three = _mm256_set1_epi8(3);
    const __m256i one = _mm256_set1_epi8(1);
    __m256i bad = _mm256_setzero_si256(); /* OR of v & (v >> 1): bit 2k set <=> pair k == 3 */
    for (int64_t blk = 0; blk < n_blocks; ++blk) {
        const __m256i v = _mm256_loadu_si256((const __m256i *)(packed + BL_I2S_BLOCK_BYTES * blk));
        int8_t *o = out + BL_I2S_BLOCK * blk;
        const __m256i c0 = _mm256_and_si256(_mm256_srli_epi16(v, 6), three); /* elements 0..31   */
        const __m256i c1 = _mm256_and_si256(_mm256_srli_epi16(v, 4), three); /* elements 32..63  */
        const __m256i c2 = _mm256_and_si256(_mm256_srli_epi16(v, 2), three); /* elements 64..95  */
        const __m256i c3 = _mm256_and_si256(v, three);                       /* elements 96..127 */
        _mm256_storeu_si256((__m256i *)(o + 0), _mm256_sub_epi8(c0, one));
        _mm256_storeu_si256((__m256i *)(o + 32), _mm256_sub_epi8(c1, one));
        _mm256_storeu_si256((__m256i *)(o + 64), _mm256_sub_epi8(c2, one));
        _mm256_storeu_si256((__m256i *)(o + 96), _mm256_sub_epi8(c3, one));
        bad = _mm256_or_si256(bad, _mm256_and_si256(v, _mm256_srli_epi16(v, 1)));
    }
    /* Keep only the low bit of every 2-bit pair (the 16-bit shift's spill lands in bit 7). */
    bad = _mm256_and_si256(bad, _mm256_set1_epi8(0x55));
    if (!_mm256_testz_si256(bad, bad)) return bl_i2_s_scan_codes(packed, n_blocks);
    return (bl_status){0, -1};
}

bl_status bl_pack_i2_s_avx2(const int8_t *t, uint8_t *packed, int64_t n_blocks) {
    const __m256i one = _mm256_set1_epi8(1);
    const __m256i two = _mm256_set1_epi8(2);
    __m256i bad = _mm256_setzero_si256(); /* OR of saturating (c - 2): non-zero <=> some c > 2 */
    for (int64_t blk = 0; blk < n_blocks; ++blk) {
        const int8_t *x = t + BL_I2S_BLOCK * blk;
        const __m256i c0 = _mm256_add_epi8(_mm256_loadu_si256((const __m256i *)(x + 0)), one);
        const __m256i c1 = _mm256_add_epi8(_mm256_loadu_si256((const __m256i *)(x + 32)), one);
        const __m256i c2 = _mm256_add_epi8(_mm256_loadu_si256((const __m256i *)(x + 64)), one);
        const __m256i c3 = _mm256_add_epi8(_mm256_loadu_si256((const __m256i *)(x + 96)), one);
        bad = _mm256_or_si256(bad, _mm256_or_si256(_mm256_or_si256(_mm256_subs_epu8(c0, two),
                                                                    _mm256_subs_epu8(c1, two)),
                                                   _mm256_or_si256(_mm256_subs_epu8(c2, two),
                                                                   _mm256_subs_epu8(c3, two))));
        const __m256i hi = _mm256_or_si256(_mm256_slli_epi16(c0, 6), _mm256_slli_epi16(c1, 4));
        const __m256i lo = _mm256_or_si256(_mm256_slli_epi16(c2, 2), c3);
        _mm256_storeu_si256((__m256i *)(packed + BL_I2S_BLOCK_BYTES * blk), _mm256_or_si256(hi, lo));
    }
    if (!_mm256_testz_si256(bad, bad)) return bl_ternary_scan(t, BL_I2S_BLOCK * n_blocks);
    return (bl_status){0, -1};
}
