/* pack_scalar.c — I2_S codec, v0: portable C (the reference every SIMD version must match).
 *
 * Compiled with no SIMD flags (setup.py), so it runs on any CPU the toolchain targets; the
 * compiler may still auto-vectorise it for the baseline ISA of the target (SSE2 on x86-64).
 *
 * Layout (docs/formats.md#31-i2_s-type-36, canonical 128/32): element j of a 128-weight block is in byte
 * j % 32 at shift 6 - 2*(j / 32); code c = t + 1, code 3 invalid. Written plane by plane:
 * plane p (shift 6 - 2p) holds elements 32p .. 32p + 31, one per byte of the block.
 *
 * Also home of the exact "scan" helpers the SIMD kernels call on their (rare) error path.
 */
#include "bl_kernels.h"

/* Shift of plane p (elements 32p .. 32p+31) inside each byte: MSB-first. */
#define PLANE_SHIFT(p) (6 - 2 * (p))

bl_status bl_i2_s_scan_codes(const uint8_t *packed, int64_t n_blocks) {
    bl_status st = {0, -1};
    for (int64_t blk = 0; blk < n_blocks; ++blk) {
        const uint8_t *p = packed + BL_I2S_BLOCK_BYTES * blk;
        /* Visit elements in increasing index order so first_bad is the smallest index. */
        for (int plane = 0; plane < 4; ++plane) {
            for (int b = 0; b < BL_I2S_BLOCK_BYTES; ++b) {
                if (((p[b] >> PLANE_SHIFT(plane)) & 3) == 3) {
                    if (st.n_bad == 0) st.first_bad = BL_I2S_BLOCK * blk + 32 * plane + b;
                    st.n_bad++;
                }
            }
        }
    }
    return st;
}

bl_status bl_ternary_scan(const int8_t *t, int64_t n) {
    bl_status st = {0, -1};
    for (int64_t i = 0; i < n; ++i) {
        if (t[i] < -1 || t[i] > 1) {
            if (st.n_bad == 0) st.first_bad = i;
            st.n_bad++;
        }
    }
    return st;
}

bl_status bl_unpack_i2_s_scalar(const uint8_t *packed, int8_t *out, int64_t n_blocks) {
    bl_status ok = {0, -1};
    unsigned bad = 0; /* OR of (code == 3) over everything: the fast path's only check */
    for (int64_t blk = 0; blk < n_blocks; ++blk) {
        const uint8_t *p = packed + BL_I2S_BLOCK_BYTES * blk;
        int8_t *o = out + BL_I2S_BLOCK * blk;
        for (int plane = 0; plane < 4; ++plane) {
            for (int b = 0; b < BL_I2S_BLOCK_BYTES; ++b) {
                unsigned code = (p[b] >> PLANE_SHIFT(plane)) & 3u;
                o[32 * plane + b] = (int8_t)((int)code - 1); /* t = c - 1 */
                bad |= (code == 3u);
            }
        }
    }
    return bad ? bl_i2_s_scan_codes(packed, n_blocks) : ok;
}

bl_status bl_pack_i2_s_scalar(const int8_t *t, uint8_t *packed, int64_t n_blocks) {
    bl_status ok = {0, -1};
    unsigned bad = 0; /* OR of (c > 2) with c = t + 1 as unsigned: t outside {-1, 0, 1} */
    for (int64_t blk = 0; blk < n_blocks; ++blk) {
        const int8_t *x = t + BL_I2S_BLOCK * blk;
        uint8_t *p = packed + BL_I2S_BLOCK_BYTES * blk;
        for (int b = 0; b < BL_I2S_BLOCK_BYTES; ++b) {
            uint8_t byte = 0;
            for (int plane = 0; plane < 4; ++plane) {
                unsigned code = (uint8_t)(x[32 * plane + b] + 1); /* -1,0,1 -> 0,1,2 */
                bad |= (code > 2u);
                byte |= (uint8_t)((code & 3u) << PLANE_SHIFT(plane));
            }
            p[b] = byte;
        }
    }
    return bad ? bl_ternary_scan(t, BL_I2S_BLOCK * n_blocks) : ok;
}
