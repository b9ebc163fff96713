/* q8k.c — the Q8_K activation quantiser (bl_q8k.h has the numerics). */
#include "bl_q8k.h"

#include <math.h>
#include <string.h>

/* ggml's nearest_int: fl32(v + 1.5·2^23) puts round-half-even(v) in the low mantissa bits for
 * |v| < 2^22 (the only range a finite iscale produces: |iscale·x| <= ~127). Outside it the same
 * bit recipe is applied as upstream (the numpy twin mirrors it), e.g. ±inf gives -2^22. */
static inline int32_t q8k_nearest_int(float v) {
    const float s = v + 12582912.0f;
    int32_t i;
    memcpy(&i, &s, sizeof i);
    return (i & 0x007fffff) - 0x00400000;
}

void bl_quantize_row_q8_k(const float *x, int64_t n, float *d, int8_t *q) {
    for (int64_t b = 0; b < n / BL_QK_K; ++b) {
        const float *xb = x + b * BL_QK_K;
        int8_t *qb = q + b * BL_QK_K;
        float max = 0.0f, amax = 0.0f;
        for (int j = 0; j < BL_QK_K; ++j) {
            const float ax = fabsf(xb[j]);
            if (ax > amax) { /* strict: the first largest stays (upstream's rule) */
                amax = ax;
                max = xb[j];
            }
        }
        if (amax == 0.0f) {
            d[b] = 0.0f;
            memset(qb, 0, BL_QK_K);
            continue;
        }
        const float iscale = -127.0f / max;
        for (int j = 0; j < BL_QK_K; ++j) {
            const int32_t v = q8k_nearest_int(iscale * xb[j]);
            qb[j] = (int8_t)(v < 127 ? v : 127); /* upstream MIN(127, v), then the int8 store */
        }
        d[b] = 1.0f / iscale;
    }
}

void bl_q8_k_bsums(const int8_t *q, int64_t n, int16_t *bsums) {
    for (int64_t g = 0; g < n / BL_Q8K_BSUM; ++g) {
        int32_t s = 0;
        for (int j = 0; j < BL_Q8K_BSUM; ++j) s += q[g * BL_Q8K_BSUM + j];
        bsums[g] = (int16_t)s;
    }
}
