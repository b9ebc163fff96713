/* lm_q6k_avx512.c — the Q6_K × Q8_K lm_head at the AVX-512 levels: the AVX2 body (lm_q6k_x86.h)
 * compiled with AVX-512 flags. A 512-bit body would halve the instruction count per block; it is
 * not written yet because no machine at hand could test it bit for bit. */
#include "lm_q6k_x86.h"

void bl_lm_q6k_avx512(const uint8_t *W, int64_t row_bytes, int64_t K, int64_t r0, int64_t r1, const int8_t *q8,
                      const float *d8, const int16_t *bsums, int64_t N, float *out, int64_t ldo) {
    q6k_lm_rows_x86(W, row_bytes, K, r0, r1, q8, d8, bsums, N, out, ldo);
}
