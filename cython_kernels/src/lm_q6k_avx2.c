/* lm_q6k_avx2.c — the Q6_K × Q8_K lm_head at the avx2 level (body: lm_q6k_x86.h). */
#include "lm_q6k_x86.h"

void bl_lm_q6k_avx2(const uint8_t *W, int64_t row_bytes, int64_t K, int64_t r0, int64_t r1, const int8_t *q8,
                    const float *d8, const int16_t *bsums, int64_t N, float *out, int64_t ldo) {
    q6k_lm_rows_x86(W, row_bytes, K, r0, r1, q8, d8, bsums, N, out, ldo);
}
