/* bl_q8k.h — Q8_K, llama.cpp's activation format for the K-quant dot products (Q6_K × Q8_K,
 * TQ2_0 × Q8_K, ...): per block of 256 floats one float32 scale d and 256 int8 q, x ≈ d·q.
 *
 * Numerics: upstream ggml-org/llama.cpp:ggml/src/ggml-quants.c quantize_row_q8_K_ref, operation
 * for operation in float32 (docs/numerics.md#9-embedding-and-lm_head; numpy twin
 * bitnet_lab/quant/q8_k.py): max = the first element of largest |x|; an all-zero block gives
 * d = 0, q = 0; otherwise iscale = fl32(-127 / max), q = min(127, nearest_int(fl32(iscale·x)))
 * with ggml's nearest_int (the 1.5·2^23 shifter: round half to even), d = fl32(1 / iscale).
 * Plain scalar C: a row is a few thousand elements per token, and one order everywhere keeps it
 * bit-identical on every ISA level. The caller guarantees finite input (the Python boundary
 * checks it; ggml too would make garbage of a NaN).
 */
#ifndef BL_Q8K_H
#define BL_Q8K_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define BL_QK_K 256     /* elements per Q8_K (and Q6_K) block */
#define BL_Q8K_BSUM 16  /* elements per bsums entry            */

/* Quantise x[0..n) (n % 256 == 0) to Q8_K: d[n / 256] float32 scales, q[n] int8. */
void bl_quantize_row_q8_k(const float *x, int64_t n, float *d, int8_t *q);

/* bsums[n / 16]: the sum of each 16 consecutive q (ggml block_q8_K.bsums; |sum| <= 2032). */
void bl_q8_k_bsums(const int8_t *q, int64_t n, int16_t *bsums);

#ifdef __cplusplus
}
#endif

#endif /* BL_Q8K_H */
