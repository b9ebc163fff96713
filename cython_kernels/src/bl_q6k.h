/* bl_q6k.h — Q6_K weight rows (a quantised lm_head / embedding) and their dot with a Q8_K hidden
 * state: llama.cpp's ggml_vec_dot_q6_K_q8_K semantics in ONE float order on every ISA level.
 *
 * Q6_K block (256 elements, 210 bytes; docs/formats.md#22-block-sizes-of-the-non-ternary-types):
 * ql[128], qh[64], int8 scales[16], fp16 d. Element e (h = e / 128, j = (e % 128) / 32,
 * l = e % 32) has the 6-bit code u = low | high << 4 with low = nibble (j / 2) of
 * ql[64h + 32(j % 2) + l] and high = bits 2j+1:2j of qh[32h + l]; its value is
 * fl32(fl32(d · scales[e / 16]) · (u − 32)) (bitnet_lab/quant/blockquant.py _dequant_q6_k).
 *
 * Dot with Q8_K (d8, q8, bl_q8k.h) — docs/numerics.md#9-embedding-and-lm_head, numpy twin
 * bitnet_lab/quant/q6_k.py q6_k_dot_q8_k:
 *   per block b:  isum_b = Σ_{s<16} scales[s] · Σ_{e in sub-block s} (u_e − 32) · q8_e    exact int32
 *                 (|isum_b| <= 16 · 128 · 16 · 32 · 127 < 2^27)
 *   sum = 0;  for b = 0, 1, ...:  sum = sum + fl32(fl32(isum_b) · fl32(d6_b · d8_b))
 * (a multiply, then an add: two roundings, never fused; blocks in increasing order). ggml sums
 * the same exact integers but in an order that differs per ISA (8 lanes in the generic code, one
 * FMA vector in the AVX2 code); this order is the one the TQ × Q8_K projections use too
 * (reference layers.q8_k_block_dot), so a 2560-wide row is 10 dependent adds — far below the
 * integer work per block, so the chain never limits the kernel.
 */
#ifndef BL_Q6K_H
#define BL_Q6K_H

#include <stdint.h>
#include <string.h>

#include "bl_q8k.h"
#include "engine_float.h"

#ifdef __cplusplus
extern "C" {
#endif

#define BL_Q6_K_BYTES 210
#define BL_Q6_K_QH 128     /* offset of qh     */
#define BL_Q6_K_SCALES 192 /* offset of scales */
#define BL_Q6_K_D 208      /* offset of d      */

/* The 6-bit code (0 .. 63) of element e of a block. */
static inline int bl_q6k_code(const uint8_t *blk, int e) {
    const int h = e >> 7, j = (e & 127) >> 5, l = e & 31;
    const int low = (blk[64 * h + 32 * (j & 1) + l] >> (4 * (j >> 1))) & 0x0f;
    const int high = (blk[BL_Q6_K_QH + 32 * h + l] >> (2 * j)) & 0x03;
    return low | (high << 4);
}

static inline float bl_q6k_d(const uint8_t *blk) {
    uint16_t bits;
    memcpy(&bits, blk + BL_Q6_K_D, 2);
    return bl_f16_to_f32(bits);
}

/* One row of K elements (K % 256 == 0) to f32 (the embedding lookup). */
static inline void bl_q6k_dequant_row(const uint8_t *row, int64_t K, float *out) {
    for (int64_t b = 0; b < K / BL_QK_K; ++b) {
        const uint8_t *blk = row + b * BL_Q6_K_BYTES;
        const int8_t *sc = (const int8_t *)(blk + BL_Q6_K_SCALES);
        const float d = bl_q6k_d(blk);
        for (int e = 0; e < BL_QK_K; ++e) {
            const float ds = d * (float)sc[e >> 4];
            out[b * BL_QK_K + e] = ds * (float)(bl_q6k_code(blk, e) - 32);
        }
    }
}

/* The lm_head kernels (type bl_lm_q6k_fn, engine_float.h), one per level built. */
void bl_lm_q6k_scalar(const uint8_t *W, int64_t row_bytes, int64_t K, int64_t r0, int64_t r1, const int8_t *q8,
                      const float *d8, const int16_t *bsums, int64_t N, float *out, int64_t ldo);
void bl_lm_q6k_avx2(const uint8_t *W, int64_t row_bytes, int64_t K, int64_t r0, int64_t r1, const int8_t *q8,
                    const float *d8, const int16_t *bsums, int64_t N, float *out, int64_t ldo);
void bl_lm_q6k_avx512(const uint8_t *W, int64_t row_bytes, int64_t K, int64_t r0, int64_t r1, const int8_t *q8,
                      const float *d8, const int16_t *bsums, int64_t N, float *out, int64_t ldo);

#ifdef __cplusplus
}
#endif

#endif /* BL_Q6K_H */
