/* pack_neon.c — I2_S codec, v1-arm: NEON (aarch64), one 128-weight block per iteration.
 *
 * Compiled only for aarch64 targets, with no extra flags (Advanced SIMD is part of the
 * aarch64 baseline). Used by both the "neon" and "neon_dotprod" levels: packing has no dot
 * product in it. Must match pack_scalar.c bit for bit.
 *
 * It reads the CANONICAL 128/32 layout (docs/formats.md#31-i2_s-type-36): a block is 32 bytes, element j in
 * byte j % 32 at shift 6 - 2*(j / 32). A 16-byte vector holds one half of a block (bytes
 * 0..15 or 16..31), so plane p of half h is elements 32p + 16h .. 32p + 16h + 15. (bitnet.cpp's
 * ARM build reads a 64/16 layout here instead — the classic wrong-output bug,
 * docs/kernels.md#10-known-bitnetcpp-bugs-and-limits.) NEON has 8-bit shifts, so no masking of neighbour bits
 * is needed beyond the & 3.
 */
#include <arm_neon.h>

#include "bl_kernels.h"

bl_status bl_unpack_i2_s_neon(const uint8_t *packed, int8_t *out, int64_t n_blocks) {
    const uint8x16_t three = vdupq_n_u8(3);
    const int8x16_t one = vdupq_n_s8(1);
    uint8x16_t bad = vdupq_n_u8(0); /* OR of v & (v >> 1): bit 2k set <=> pair k == 3 */
    for (int64_t blk = 0; blk < n_blocks; ++blk) {
        for (int h = 0; h < 2; ++h) {
            const uint8x16_t v = vld1q_u8(packed + BL_I2S_BLOCK_BYTES * blk + 16 * h);
            int8_t *o = out + BL_I2S_BLOCK * blk + 16 * h;
            const uint8x16_t c0 = vandq_u8(vshrq_n_u8(v, 6), three); /* plane 0 */
            const uint8x16_t c1 = vandq_u8(vshrq_n_u8(v, 4), three); /* plane 1 */
            const uint8x16_t c2 = vandq_u8(vshrq_n_u8(v, 2), three); /* plane 2 */
            const uint8x16_t c3 = vandq_u8(v, three);                /* plane 3 */
            vst1q_s8(o + 0, vsubq_s8(vreinterpretq_s8_u8(c0), one));
            vst1q_s8(o + 32, vsubq_s8(vreinterpretq_s8_u8(c1), one));
            vst1q_s8(o + 64, vsubq_s8(vreinterpretq_s8_u8(c2), one));
            vst1q_s8(o + 96, vsubq_s8(vreinterpretq_s8_u8(c3), one));
            bad = vorrq_u8(bad, vandq_u8(v, vshrq_n_u8(v, 1)));
        }
    }
    bad = vandq_u8(bad, vdupq_n_u8(0x55)); /* the low bit of each 2-bit pair */
    if (vmaxvq_u8(bad) != 0) return bl_i2_s_scan_codes(packed, n_blocks);
    return (bl_status){0, -1};
}

bl_status bl_pack_i2_s_neon(const int8_t *t, uint8_t *packed, int64_t n_blocks) {
    const int8x16_t one = vdupq_n_s8(1);
    const uint8x16_t two = vdupq_n_u8(2);
    uint8x16_t bad = vdupq_n_u8(0); /* OR of saturating (c - 2): non-zero <=> some c > 2 */
    for (int64_t blk = 0; blk < n_blocks; ++blk) {
        for (int h = 0; h < 2; ++h) {
            const int8_t *x = t + BL_I2S_BLOCK * blk + 16 * h;
            const uint8x16_t c0 = vreinterpretq_u8_s8(vaddq_s8(vld1q_s8(x + 0), one));
            const uint8x16_t c1 = vreinterpretq_u8_s8(vaddq_s8(vld1q_s8(x + 32), one));
            const uint8x16_t c2 = vreinterpretq_u8_s8(vaddq_s8(vld1q_s8(x + 64), one));
            const uint8x16_t c3 = vreinterpretq_u8_s8(vaddq_s8(vld1q_s8(x + 96), one));
            bad = vorrq_u8(bad, vorrq_u8(vorrq_u8(vqsubq_u8(c0, two), vqsubq_u8(c1, two)),
                                         vorrq_u8(vqsubq_u8(c2, two), vqsubq_u8(c3, two))));
            const uint8x16_t hi = vorrq_u8(vshlq_n_u8(c0, 6), vshlq_n_u8(c1, 4));
            const uint8x16_t lo = vorrq_u8(vshlq_n_u8(c2, 2), c3);
            vst1q_u8(packed + BL_I2S_BLOCK_BYTES * blk + 16 * h, vorrq_u8(hi, lo));
        }
    }
    if (vmaxvq_u8(bad) != 0) return bl_ternary_scan(t, BL_I2S_BLOCK * n_blocks);
    return (bl_status){0, -1};
}
