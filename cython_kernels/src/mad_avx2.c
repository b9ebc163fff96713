/* mad_avx2.c — MAD kernels, v1: AVX2 (I2_S GEMV/GEMM, TQ2_0/TQ1_0 GEMV/GEMM).
 *
 * The multiply (docs/kernels.md#21-x86-avx2): _mm256_maddubs_epi16(codes u8, activations s8) — unsigned
 * codes c = t + 1 in {0,1,2} times signed int8, adjacent pairs summed into int16 lanes (a pair is
 * at most 2·2·128 = 512 in size: maddubs never saturates). Then Σ t·q = Σ c·q − sum_q.
 *
 * The int16 rule (docs/kernels.md#23-the-int16-overflow-bound-and-a-safer-widening-rule): an int16 lane
 * receives 2 products per maddubs, so over 2048 weights (16 I2_S blocks, 8 TQ blocks) it holds at most 128
 * products of |c·q| ≤ 256: within [−32768, 32512]. Every kernel here widens (madd_epi16 with 1 → int32) at
 * least that often — bitnet.cpp's 32-block interval can reach 65,024 and wrap; ours cannot.
 *
 * I2_S GEMV v1   (weight-parallel, docs/kernels.md#26-activation-parallel-vs-weight-parallel):
 *                4 weight rows per step share each activation load; per 128-weight block a row
 *                costs 1 load, 3 shifts, 4 ands, 4 maddubs, 4 adds. int16 accumulators widened
 *                every 16 blocks.
 * I2_S GEMV v1w1 the same, widened after every block (the "or per block" option of
 *                docs/kernels.md#23-the-int16-overflow-bound-and-a-safer-widening-rule; kept to
 *                measure what the int16 interval buys).
 * I2_S x4 v1x    v1 on the x4 layout in place (one sequential stream per group of 4 rows).
 * GEMM v1        (activation-parallel, bl_gemm_blocked): a panel of 8 weight rows × 2048 weights
 *                is decoded once into a code buffer; every 4-token activation slice then sweeps
 *                it with a 2 rows × 4 tokens tile of int16 accumulators (8 maddubs per 6 loads),
 *                widened once per chunk.
 * TQ2_0 GEMV v1  as I2_S with two 32-byte halves per 66-byte block, LSB-first planes.
 * TQ1_0 GEMV v1  base-3 decode without multiplies: b·3 mod 256 is two byte adds, and the trit
 *                (x·3) >> 8 is [x >= 86] + [x >= 171] (two unsigned compares).
 */
#include "bl_mad_x86.h"

/* ---- I2_S GEMV ------------------------------------------------------------------------------ */

/* R rows (R constant after inlining) starting at w_row0, one activation row; widen every
 * `wb` blocks (a constant: 16 or 1). res[i] = Σ c·q of row i. X4 (a constant): w_row0 is a
 * group of 4 rows in the x4 layout (bl_mad.h, bl_i2s_x4_block) instead of R rows row_bytes apart. */
ALWAYS_INLINE void i2s_rows(const uint8_t *w_row0, int64_t row_bytes, const int8_t *q, int64_t nb, const int R,
                            const int wb, const int X4, int32_t *res) {
    __m256i acc32[4], acc16[4];
    for (int i = 0; i < R; ++i) acc32[i] = acc16[i] = _mm256_setzero_si256();
    for (int64_t b0 = 0; b0 < nb; b0 += wb) {
        const int64_t b1 = b0 + wb < nb ? b0 + wb : nb;
        for (int64_t b = b0; b < b1; ++b) {
            __m256i v[4];
            for (int i = 0; i < R; ++i)
                v[i] = _mm256_loadu_si256((const __m256i *)(X4 ? bl_i2s_x4_block(w_row0, nb, b, i)
                                                               : w_row0 + i * row_bytes + 32 * b));
            for (int p = 0; p < 4; ++p) { /* plane p: elements 32p..32p+31 of the block, shift 6 - 2p */
                const __m256i a = _mm256_loadu_si256((const __m256i *)(q + 128 * b + 32 * p));
                for (int i = 0; i < R; ++i)
                    acc16[i] = _mm256_add_epi16(acc16[i], _mm256_maddubs_epi16(plane(v[i], 6 - 2 * p), a));
            }
        }
        for (int i = 0; i < R; ++i) {
            acc32[i] = _mm256_add_epi32(acc32[i], widen(acc16[i]));
            acc16[i] = _mm256_setzero_si256();
        }
    }
    for (int i = 0; i < R; ++i) res[i] = hsum_epi32(acc32[i]);
}

/* X4 (a constant): groups of 4 rows in the x4 layout; its M % 4 tail rows (r1 == M) are
 * row-major, like every row of plain I2_S. */
ALWAYS_INLINE void i2s_gemv_avx2(const uint8_t *w, const int8_t *q, int32_t sum_q, int32_t *out, int64_t K,
                                 int64_t r0, int64_t r1, const int wb, const int X4) {
    const int64_t rb = bl_i2s_row_bytes(K), nb = K / 128;
    int32_t res[4];
    int64_t r = r0;
    for (; r + 4 <= r1; r += 4) {
        i2s_rows(w + r * rb, rb, q, nb, 4, wb, X4, res);
        for (int i = 0; i < 4; ++i) out[r + i] = res[i] - sum_q;
    }
    for (; r < r1; ++r) {
        i2s_rows(w + r * rb, rb, q, nb, 1, wb, 0, res);
        out[r] = res[0] - sum_q;
    }
    bl_gemx_fault(X4 ? BL_OP_I2S_X4_GEMV : BL_OP_I2S_GEMV, out, r0, r1);
}

void bl_i2s_gemv_v1(const uint8_t *w, const int8_t *q, int32_t sum_q, int32_t *out, int64_t K, int64_t r0,
                    int64_t r1) {
    i2s_gemv_avx2(w, q, sum_q, out, K, r0, r1, 16, 0); /* 16 blocks: the int16 bound */
}

void bl_i2s_gemv_v1w1(const uint8_t *w, const int8_t *q, int32_t sum_q, int32_t *out, int64_t K, int64_t r0,
                      int64_t r1) {
    i2s_gemv_avx2(w, q, sum_q, out, K, r0, r1, 1, 0);
}

/* I2_S x4 GEMV v1x: v1's arithmetic reading the x4 layout in place — each group of 4 rows is
 * one sequential stream (a row-major GEMV reads 4 rows in lockstep: 4 streams, which a core's
 * prefetchers follow badly; the copy-based v1 re-orders every group through memcpy first). */
void bl_i2s_x4_gemv_v1x(const uint8_t *w, const int8_t *q, int32_t sum_q, int32_t *out, int64_t K, int64_t r0,
                        int64_t r1) {
    i2s_gemv_avx2(w, q, sum_q, out, K, r0, r1, 16, 1);
}

/* ---- TQ2_0 GEMV ----------------------------------------------------------------------------- */

/* R rows; per 66-byte block, halves h = 0, 1 of 32 bytes, plane j (shift 2j) = elements
 * 128h + 32j .. +31. int16 widened every 8 blocks (2048 weights). */
ALWAYS_INLINE void tq2_rows(const uint8_t *w_row0, int64_t row_bytes, const int8_t *q, int64_t nb, const int R,
                            int32_t *res) {
    __m256i acc32[4], acc16[4];
    for (int i = 0; i < R; ++i) acc32[i] = acc16[i] = _mm256_setzero_si256();
    for (int64_t b0 = 0; b0 < nb; b0 += 8) {
        const int64_t b1 = b0 + 8 < nb ? b0 + 8 : nb;
        for (int64_t b = b0; b < b1; ++b) {
            for (int h = 0; h < 2; ++h) {
                __m256i v[4];
                for (int i = 0; i < R; ++i)
                    v[i] = _mm256_loadu_si256((const __m256i *)(w_row0 + i * row_bytes + BL_TQ2_BLOCK_BYTES * b + 32 * h));
                for (int j = 0; j < 4; ++j) {
                    const __m256i a = _mm256_loadu_si256((const __m256i *)(q + 256 * b + 128 * h + 32 * j));
                    for (int i = 0; i < R; ++i)
                        acc16[i] = _mm256_add_epi16(acc16[i], _mm256_maddubs_epi16(plane(v[i], 2 * j), a));
                }
            }
        }
        for (int i = 0; i < R; ++i) {
            acc32[i] = _mm256_add_epi32(acc32[i], widen(acc16[i]));
            acc16[i] = _mm256_setzero_si256();
        }
    }
    for (int i = 0; i < R; ++i) res[i] = hsum_epi32(acc32[i]);
}

void bl_tq2_gemv_v1(const uint8_t *w, const int8_t *q, int32_t sum_q, int32_t *out, int64_t K, int64_t r0,
                    int64_t r1) {
    const int64_t rb = bl_tq2_row_bytes(K), nb = K / BL_TQ_BLOCK;
    int32_t res[4];
    int64_t r = r0;
    for (; r + 4 <= r1; r += 4) {
        tq2_rows(w + r * rb, rb, q, nb, 4, res);
        for (int i = 0; i < 4; ++i) out[r + i] = res[i] - sum_q;
    }
    for (; r < r1; ++r) {
        tq2_rows(w + r * rb, rb, q, nb, 1, res);
        out[r] = res[0] - sum_q;
    }
    bl_gemx_fault(BL_OP_TQ2_GEMV, out, r0, r1);
}

void bl_tq1_gemv_v1(const uint8_t *w, const int8_t *q, int32_t sum_q, int32_t *out, int64_t K, int64_t r0,
                    int64_t r1) {
    const int64_t rb = bl_tq1_row_bytes(K), nb = K / BL_TQ_BLOCK;
    for (int64_t r = r0; r < r1; ++r) {
        const uint8_t *wr = w + r * rb;
        __m256i acc32 = _mm256_setzero_si256();
        for (int64_t b0 = 0; b0 < nb; b0 += 8) { /* widen every 8 blocks = 2048 weights */
            const int64_t b1 = b0 + 8 < nb ? b0 + 8 : nb;
            __m256i acc16 = _mm256_setzero_si256();
            for (int64_t b = b0; b < b1; ++b) {
                __m256i c[8];
                tq1_block_codes(wr + BL_TQ1_BLOCK_BYTES * b, c);
                for (int i = 0; i < 8; ++i)
                    acc16 = _mm256_add_epi16(
                        acc16, _mm256_maddubs_epi16(c[i], _mm256_loadu_si256((const __m256i *)(q + 256 * b + 32 * i))));
            }
            acc32 = _mm256_add_epi32(acc32, widen(acc16));
        }
        out[r] = hsum_epi32(acc32) - sum_q;
    }
    bl_gemx_fault(BL_OP_TQ1_GEMV, out, r0, r1);
}

/* ---- GEMM: blocked driver (bl_mad_impl.h) + a 2 rows x 4 tokens int16 tile ------------------ */

/* res[i][j] = Σ_k codes[i][k] · a[j][k] over kc (≤ 2048) elements. int16 accumulators: a chunk
 * of 2048 weights is exactly the docs/kernels.md#23-the-int16-overflow-bound-and-a-safer-widening-rule bound
 * (64 maddubs × 2 products of |c·q| ≤ 256 per lane). */
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
            for (int i = 0; i < RW; ++i) acc[i][j] = _mm256_add_epi16(acc[i][j], _mm256_maddubs_epi16(c[i], x));
        }
    }
    for (int i = 0; i < RW; ++i)
        for (int j = 0; j < NT; ++j) res[i][j] = hsum_epi32(widen(acc[i][j]));
}

/* constant-shape instances: the compiler keeps each tile's accumulators in registers */
static void tile_any(const uint8_t *codes, int64_t ldc, const int8_t *a, int64_t lda, int64_t kc, int rw, int nt,
                     int32_t res[4][4]) {
#define T(RW, NT) \
    case 10 * RW + NT: tile(codes, ldc, a, lda, kc, RW, NT, res); return;
    switch (10 * rw + nt) {
        T(2, 4) T(2, 3) T(2, 2) T(2, 1) T(1, 4) T(1, 3) T(1, 2) T(1, 1)
    }
#undef T
}

static void gemm_avx2(bl_decode_fn decode, int op, const uint8_t *w, const int8_t *Q, const int32_t *sum_q,
                      int32_t *out, int64_t N, int64_t K, int64_t ld_out, int64_t r0, int64_t r1) {
    _Alignas(64) uint8_t codes[BL_GEMM_PANEL * BL_GEMM_KC];
    bl_gemm_blocked(decode, tile_any, 2, codes, op, w, Q, sum_q, out, N, K, ld_out, r0, r1);
}

void bl_i2s_gemm_v1(const uint8_t *w, const int8_t *Q, const int32_t *sum_q, int32_t *out, int64_t N, int64_t K,
                    int64_t ld_out, int64_t r0, int64_t r1) {
    gemm_avx2(decode_i2s, BL_OP_I2S_GEMM, w, Q, sum_q, out, N, K, ld_out, r0, r1);
}

void bl_tq2_gemm_v1(const uint8_t *w, const int8_t *Q, const int32_t *sum_q, int32_t *out, int64_t N, int64_t K,
                    int64_t ld_out, int64_t r0, int64_t r1) {
    gemm_avx2(decode_tq2, BL_OP_TQ2_GEMM, w, Q, sum_q, out, N, K, ld_out, r0, r1);
}

void bl_tq1_gemm_v1(const uint8_t *w, const int8_t *Q, const int32_t *sum_q, int32_t *out, int64_t N, int64_t K,
                    int64_t ld_out, int64_t r0, int64_t r1) {
    gemm_avx2(decode_tq1, BL_OP_TQ1_GEMM, w, Q, sum_q, out, N, K, ld_out, r0, r1);
}

/* ---- per-block products (bl_mad.h): GEMM = the tile over one 256-weight block at a time ------- */

static void bgemm_v1(bl_decode_fn decode, int op, const uint8_t *w, const int8_t *Q, const int32_t *sum_qb,
                     int32_t *out, int64_t N, int64_t K, int64_t ld_out, int64_t r0, int64_t r1) {
    _Alignas(64) uint8_t codes[BL_GEMM_PANEL * BL_GEMM_KC];
    bl_gemm_blocks(decode, tile_any, 2, codes, op, w, Q, sum_qb, out, N, K, ld_out, r0, r1);
}

/* Codes of 256-weight block b of one row, in element order: c[i] = elements 32i .. 32i + 31. */
ALWAYS_INLINE void block_codes(int fmt, const uint8_t *row, int64_t b, __m256i c[8]) {
    if (fmt == 0) { /* I2_S: two 128-weight blocks of 32 bytes, planes MSB-first */
        for (int h = 0; h < 2; ++h) {
            const __m256i v = _mm256_loadu_si256((const __m256i *)(row + 64 * b + 32 * h));
            for (int p = 0; p < 4; ++p) c[4 * h + p] = plane(v, 6 - 2 * p);
        }
    } else if (fmt == 1) { /* TQ2_0: two 32-byte halves, planes LSB-first */
        for (int h = 0; h < 2; ++h) {
            const __m256i v = _mm256_loadu_si256((const __m256i *)(row + BL_TQ2_BLOCK_BYTES * b + 32 * h));
            for (int j = 0; j < 4; ++j) c[4 * h + j] = plane(v, 2 * j);
        }
    } else {
        tq1_block_codes(row + BL_TQ1_BLOCK_BYTES * b, c);
    }
}

/* Per-block GEMV v1: 4 rows per step share each block's 8 activation loads; a block's 8 maddubs
 * per row stay in one int16 accumulator (8 · 2 products of |c·q| ≤ 256: ≤ 4096), widened, and
 * the 4 rows' lanes are reduced together (two hadd rounds and one cross-lane add). */
ALWAYS_INLINE void bgemv_avx2(const int fmt, const int op, const uint8_t *w, const int8_t *q, const int32_t *sum_qb,
                              int32_t *out, int64_t K, int64_t r0, int64_t r1) {
    const int64_t nb = K / BL_TQ_BLOCK;
    const int64_t rb = fmt == 0 ? bl_i2s_row_bytes(K) : fmt == 1 ? bl_tq2_row_bytes(K) : bl_tq1_row_bytes(K);
    int64_t r = r0;
    for (; r + 4 <= r1; r += 4) {
        for (int64_t b = 0; b < nb; ++b) {
            __m256i a[8], s32[4];
            for (int i = 0; i < 8; ++i) a[i] = _mm256_loadu_si256((const __m256i *)(q + 256 * b + 32 * i));
            for (int rr = 0; rr < 4; ++rr) {
                __m256i c[8], acc = _mm256_setzero_si256();
                block_codes(fmt, w + (r + rr) * rb, b, c);
                for (int i = 0; i < 8; ++i) acc = _mm256_add_epi16(acc, _mm256_maddubs_epi16(c[i], a[i]));
                s32[rr] = widen(acc);
            }
            const __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(s32[0], s32[1]), _mm256_hadd_epi32(s32[2], s32[3]));
            const __m128i v = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
            int32_t res[4];
            _mm_storeu_si128((__m128i *)res, v);
            for (int rr = 0; rr < 4; ++rr) out[(r - r0 + rr) * nb + b] = res[rr] - sum_qb[b];
        }
    }
    for (; r < r1; ++r)
        for (int64_t b = 0; b < nb; ++b) {
            __m256i c[8], acc = _mm256_setzero_si256();
            block_codes(fmt, w + r * rb, b, c);
            for (int i = 0; i < 8; ++i)
                acc = _mm256_add_epi16(acc, _mm256_maddubs_epi16(c[i], _mm256_loadu_si256((const __m256i *)(q + 256 * b + 32 * i))));
            out[(r - r0) * nb + b] = hsum_epi32(widen(acc)) - sum_qb[b];
        }
    if (r0 == 0 && r1 > 0 && BL_MAD_FAULT(op)) out[0] += 1;
}

#define BLOCKS(fmt, F, OPV, OPM, decode)                                                                       \
    void bl_##fmt##_bgemv_v1(const uint8_t *w, const int8_t *q, const int32_t *sum_qb, int32_t *out, int64_t K, \
                             int64_t r0, int64_t r1) {                                                         \
        bgemv_avx2(F, OPV, w, q, sum_qb, out, K, r0, r1);                                                      \
    }                                                                                                          \
    void bl_##fmt##_bgemm_v1(const uint8_t *w, const int8_t *Q, const int32_t *sum_qb, int32_t *out, int64_t N, \
                             int64_t K, int64_t ld_out, int64_t r0, int64_t r1) {                              \
        bgemm_v1(decode, OPM, w, Q, sum_qb, out, N, K, ld_out, r0, r1);                                        \
    }
BLOCKS(i2s, 0, BL_OP_I2S_BGEMV, BL_OP_I2S_BGEMM, decode_i2s)
BLOCKS(tq2, 1, BL_OP_TQ2_BGEMV, BL_OP_TQ2_BGEMM, decode_tq2)
BLOCKS(tq1, 2, BL_OP_TQ1_BGEMV, BL_OP_TQ1_BGEMM, decode_tq1)
#undef BLOCKS
