/* mad_avxvnni.c — MAD kernels for the avxvnni level: AVX2 + AVX-VNNI (I2_S GEMV and GEMM).
 *
 * Compiled with -mavx2 -mfma -mavxvnni; dispatched only on CPUs reporting AVX-VNNI (Alder Lake
 * and later client cores, Sapphire Rapids and later servers, Zen 5). The op is the VEX-encoded
 * 256-bit vpdpbusd (_mm256_dpbusd_avx_epi32): u8 codes × s8 activations, four products added
 * straight into int32 lanes — v1's structure without the int16 stage and its widening.
 *
 * I2_S GEMV: 4 weight rows per step share the activation loads; per 128-weight block a row costs
 *   1 load, 3 shifts, 4 ands, 4 dpbusd.
 * I2_S GEMM: bl_gemm_blocked (8-row panels of 2048 decoded weights), a 2 rows × 4 tokens tile.
 * TQ2_0/TQ1_0 and quantize_act at this level are v1's (bl_mad_defaults in mad_dispatch.c).
 *
 * Testing on CPUs without AVX-VNNI: cython_kernels/tests/run_c_tests.sh also compiles this file
 * with -DBL_AVXVNNI_VIA_AVX512VL, which maps the same 256-bit dpbusd to its EVEX form
 * (_mm256_dpbusd_epi32, AVX-512 VNNI + VL) so the algorithm is checked on AVX-512 machines; the
 * VEX encoding itself is only exercised on a CPU that has AVX-VNNI.
 */
#include "bl_mad_x86.h"

#if defined(BL_AVXVNNI_VIA_AVX512VL)
#define DPBUSD256(acc, c, a) _mm256_dpbusd_epi32((acc), (c), (a))
#else
#define DPBUSD256(acc, c, a) _mm256_dpbusd_avx_epi32((acc), (c), (a))
#endif

/* ---- I2_S GEMV ------------------------------------------------------------------------------ */

ALWAYS_INLINE void i2s_rows(const uint8_t *w_row0, int64_t row_bytes, const int8_t *q, int64_t nb, const int R,
                            int32_t *res) {
    __m256i acc[4];
    for (int i = 0; i < R; ++i) acc[i] = _mm256_setzero_si256();
    for (int64_t b = 0; b < nb; ++b) {
        __m256i v[4];
        for (int i = 0; i < R; ++i) v[i] = _mm256_loadu_si256((const __m256i *)(w_row0 + i * row_bytes + 32 * b));
        for (int p = 0; p < 4; ++p) {
            const __m256i a = _mm256_loadu_si256((const __m256i *)(q + 128 * b + 32 * p));
            for (int i = 0; i < R; ++i) acc[i] = DPBUSD256(acc[i], plane(v[i], 6 - 2 * p), a);
        }
    }
    for (int i = 0; i < R; ++i) res[i] = hsum_epi32(acc[i]);
}

void bl_i2s_gemv_avxvnni(const uint8_t *w, const int8_t *q, int32_t sum_q, int32_t *out, int64_t K, int64_t r0,
                         int64_t r1) {
    const int64_t rb = bl_i2s_row_bytes(K), nb = K / 128;
    int32_t res[4];
    int64_t r = r0;
    for (; r + 4 <= r1; r += 4) {
        i2s_rows(w + r * rb, rb, q, nb, 4, res);
        for (int i = 0; i < 4; ++i) out[r + i] = res[i] - sum_q;
    }
    for (; r < r1; ++r) {
        i2s_rows(w + r * rb, rb, q, nb, 1, res);
        out[r] = res[0] - sum_q;
    }
    bl_gemx_fault(BL_OP_I2S_GEMV, out, r0, r1);
}

/* ---- I2_S GEMM: blocked driver (bl_mad_impl.h) + a 2 rows x 4 tokens dpbusd tile ------------ */

ALWAYS_INLINE void tile(const uint8_t *codes, int64_t ldc, const int8_t *a, int64_t lda, int64_t kc, const int RW,
                        const int NT, int32_t res[4][4]) {
    __m256i acc[2][4];
    for (int i = 0; i < RW; ++i)
        for (int j = 0; j < NT; ++j) acc[i][j] = _mm256_setzero_si256();
    for (int64_t k = 0; k < kc; k += 32) {
        __m256i c[2];
        for (int i = 0; i < RW; ++i) c[i] = _mm256_loadu_si256((const __m256i *)(codes + i * ldc + k));
        for (int j = 0; j < NT; ++j) {
            const __m256i x = _mm256_loadu_si256((const __m256i *)(a + j * lda + k));
            for (int i = 0; i < RW; ++i) acc[i][j] = DPBUSD256(acc[i][j], c[i], x);
        }
    }
    for (int i = 0; i < RW; ++i)
        for (int j = 0; j < NT; ++j) res[i][j] = hsum_epi32(acc[i][j]);
}

static void tile_any(const uint8_t *codes, int64_t ldc, const int8_t *a, int64_t lda, int64_t kc, int rw, int nt,
                     int32_t res[4][4]) {
#define T(RW, NT) \
    case 10 * RW + NT: tile(codes, ldc, a, lda, kc, RW, NT, res); return;
    switch (10 * rw + nt) {
        T(2, 4) T(2, 3) T(2, 2) T(2, 1) T(1, 4) T(1, 3) T(1, 2) T(1, 1)
    }
#undef T
}

void bl_i2s_gemm_avxvnni(const uint8_t *w, const int8_t *Q, const int32_t *sum_q, int32_t *out, int64_t N, int64_t K,
                         int64_t ld_out, int64_t r0, int64_t r1) {
    _Alignas(64) uint8_t codes[BL_GEMM_PANEL * BL_GEMM_KC];
    bl_gemm_blocked(decode_i2s, tile_any, 2, codes, BL_OP_I2S_GEMM, w, Q, sum_q, out, N, K, ld_out, r0, r1);
}
