/* mad_avx512vnni.c — MAD kernels, v2: AVX-512 VNNI (I2_S GEMV/GEMM, TQ2_0/TQ1_0 GEMV/GEMM).
 *
 * Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512vnni; called only on CPUs with all four.
 *
 * The multiply (kernels.md §2.4): _mm512_dpbusd_epi32(acc, codes u8, activations s8) — four
 * adjacent u8 × s8 products summed and added straight into int32 lanes (the non-saturating
 * vpdpbusd, not vpdpbusds). No int16 stage, so no overflow interval to respect; the code-offset
 * correction Σ t·q = Σ c·q − sum_q is applied once per row.
 *
 * I2_S GEMV v2 (weight-parallel): one 64-byte load holds TWO 128-weight blocks A, B (lanes 0–1 =
 *   A, lanes 2–3 = B). Shift/mask gives plane p of A and of B in one vector; it multiplies the
 *   activations [q(A, plane p) | q(B, plane p)], which are assembled once per step from two
 *   32-byte loads (inserti64x4) and shared by 4 weight rows. Per 256 weights a row costs 1 load,
 *   3 shifts, 4 ands and 4 dpbusd. An odd last block runs the same code on zero-extended halves.
 * I2_S GEMV v3 (the level's default): v2 without the shifts — each plane is masked in place, so
 *   dpbusd multiplies 4^k·c, and four int32 accumulators per row are rescaled once at the end
 *   (1 load, 4 ands, 4 dpbusd per 256 weights; 10–25% faster than v2 on a Zen 4 core).
 * TQ2_0 GEMV v2: one TQ2_0 block's 64 qs bytes per load (half 0 in lanes 0–1, half 1 in 2–3):
 *   the same pattern with LSB-first planes and 66-byte block stride; v3 (default) drops the
 *   shifts as I2_S v3 does.
 * TQ1_0 GEMV v2: 256-bit base-3 decode (byte adds for ×3, two AVX-512VL unsigned mask compares
 *   for the trit), 8 dpbusd per block.
 * GEMM v2 (activation-parallel, bl_gemm_blocked): a panel of 8 rows × 2048 weights is decoded
 *   once into a code buffer; every 4-token activation slice sweeps it with a 4 rows × 4 tokens
 *   tile of int32 dpbusd accumulators (16 dpbusd per 8 loads).
 */
#include "bl_mad_x86.h"

/* acc += Σ4 u8(c)·s8(a) per int32 lane (vpdpbusd). GCC 12 does not tie the accumulator of the
 * _mm512_dpbusd_epi32 builtin to its output and surrounds every call in a loop with register
 * copies (2 extra moves per dpbusd in the GEMV and GEMM loops); the "+v" constraint below ties it.
 * Other compilers get the intrinsic. Same instruction, same result. */
#if defined(__GNUC__) && !defined(__clang__)
ALWAYS_INLINE __m512i dpbusd(__m512i acc, __m512i c, __m512i a) {
    __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(c), "vm"(a));
    return acc;
}
#else
#define dpbusd(acc, c, a) _mm512_dpbusd_epi32((acc), (c), (a))
#endif

ALWAYS_INLINE __m512i plane512(__m512i v, int shift) {
    return _mm512_and_si512(_mm512_srli_epi16(v, shift), _mm512_set1_epi8(3));
}

/* [lo | hi] from two 32-byte halves. */
ALWAYS_INLINE __m512i join(__m256i lo, __m256i hi) { return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1); }

ALWAYS_INLINE __m256i load256(const void *p) { return _mm256_loadu_si256((const __m256i *)p); }

/* ---- I2_S GEMV ------------------------------------------------------------------------------ */

ALWAYS_INLINE void i2s_rows(const uint8_t *w_row0, int64_t row_bytes, const int8_t *q, int64_t nb, const int R,
                            int32_t *res) {
    __m512i acc[4];
    for (int i = 0; i < R; ++i) acc[i] = _mm512_setzero_si512();
    int64_t b = 0;
    for (; b + 2 <= nb; b += 2) {
        const int8_t *qa = q + 128 * b; /* block A's activations; B's are at qa + 128 */
        __m512i a[4];
        for (int p = 0; p < 4; ++p) a[p] = join(load256(qa + 32 * p), load256(qa + 128 + 32 * p));
        for (int i = 0; i < R; ++i) {
            const __m512i v = _mm512_loadu_si512((const void *)(w_row0 + i * row_bytes + 32 * b));
            for (int p = 0; p < 4; ++p) acc[i] = dpbusd(acc[i], plane512(v, 6 - 2 * p), a[p]);
        }
    }
    if (b < nb) { /* one block left: upper halves zero (code 0 × activation 0 adds nothing) */
        const int8_t *qa = q + 128 * b;
        __m512i a[4];
        for (int p = 0; p < 4; ++p) a[p] = _mm512_zextsi256_si512(load256(qa + 32 * p));
        for (int i = 0; i < R; ++i) {
            const __m512i v = _mm512_zextsi256_si512(load256(w_row0 + i * row_bytes + 32 * b));
            for (int p = 0; p < 4; ++p) acc[i] = dpbusd(acc[i], plane512(v, 6 - 2 * p), a[p]);
        }
    }
    for (int i = 0; i < R; ++i) res[i] = _mm512_reduce_add_epi32(acc[i]);
}

void bl_i2s_gemv_v2(const uint8_t *w, const int8_t *q, int32_t sum_q, int32_t *out, int64_t K, int64_t r0,
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

/* ---- I2_S GEMV v3: no shifts -------------------------------------------------------------- */

/* v2 spends 3 shifts + 4 ands per 64 bytes to bring each plane down to 0..2. v3 only masks:
 * v & 0xC0 is 64·c (plane 0), v & 0x30 is 16·c, v & 0x0C is 4·c, v & 0x03 is c — still a valid
 * u8 operand (≤ 128 for c ≤ 2; 192 for an invalid code 3) — so dpbusd accumulates 4^(3−p)·Σ c·q
 * per plane in its own int32 accumulator, and every lane of accumulator p is an exact multiple of
 * 4^(3−p). One exact arithmetic shift per plane at the end restores Σ c·q. Range: a lane of the
 * plane-0 accumulator is at most 64·2·128·K/64 = 256·K in size, < 2^31 for K < 2^23.
 * 4 rows × 4 planes = 16 accumulators, still in registers (32 zmm). Per 256 weights a row costs
 * 1 load, 4 ands, 4 dpbusd (v2: 1 + 7 + 4). */
ALWAYS_INLINE void i2s_rows_v3(const uint8_t *w_row0, int64_t row_bytes, const int8_t *q, int64_t nb, const int R,
                               int32_t *res) {
    __m512i acc[4][4];
    for (int i = 0; i < R; ++i)
        for (int p = 0; p < 4; ++p) acc[i][p] = _mm512_setzero_si512();
    const __m512i mask[4] = {_mm512_set1_epi8((char)0xC0), _mm512_set1_epi8(0x30), _mm512_set1_epi8(0x0C),
                             _mm512_set1_epi8(0x03)};
    int64_t b = 0;
    for (; b + 2 <= nb; b += 2) {
        const int8_t *qa = q + 128 * b;
        __m512i a[4];
        for (int p = 0; p < 4; ++p) a[p] = join(load256(qa + 32 * p), load256(qa + 128 + 32 * p));
        for (int i = 0; i < R; ++i) {
            const __m512i v = _mm512_loadu_si512((const void *)(w_row0 + i * row_bytes + 32 * b));
            for (int p = 0; p < 4; ++p) acc[i][p] = dpbusd(acc[i][p], _mm512_and_si512(v, mask[p]), a[p]);
        }
    }
    if (b < nb) { /* odd last block: zero-extended halves, as in v2 */
        const int8_t *qa = q + 128 * b;
        __m512i a[4];
        for (int p = 0; p < 4; ++p) a[p] = _mm512_zextsi256_si512(load256(qa + 32 * p));
        for (int i = 0; i < R; ++i) {
            const __m512i v = _mm512_zextsi256_si512(load256(w_row0 + i * row_bytes + 32 * b));
            for (int p = 0; p < 4; ++p) acc[i][p] = dpbusd(acc[i][p], _mm512_and_si512(v, mask[p]), a[p]);
        }
    }
    for (int i = 0; i < R; ++i) {
        const __m512i d = _mm512_add_epi32(_mm512_add_epi32(_mm512_srai_epi32(acc[i][0], 6), _mm512_srai_epi32(acc[i][1], 4)),
                                           _mm512_add_epi32(_mm512_srai_epi32(acc[i][2], 2), acc[i][3]));
        res[i] = _mm512_reduce_add_epi32(d);
    }
}

void bl_i2s_gemv_v3(const uint8_t *w, const int8_t *q, int32_t sum_q, int32_t *out, int64_t K, int64_t r0,
                    int64_t r1) {
    const int64_t rb = bl_i2s_row_bytes(K), nb = K / 128;
    int32_t res[4];
    int64_t r = r0;
    for (; r + 4 <= r1; r += 4) {
        i2s_rows_v3(w + r * rb, rb, q, nb, 4, res);
        for (int i = 0; i < 4; ++i) out[r + i] = res[i] - sum_q;
    }
    for (; r < r1; ++r) {
        i2s_rows_v3(w + r * rb, rb, q, nb, 1, res);
        out[r] = res[0] - sum_q;
    }
    bl_gemx_fault(BL_OP_I2S_GEMV, out, r0, r1);
}

/* ---- TQ2_0 GEMV ----------------------------------------------------------------------------- */

ALWAYS_INLINE void tq2_rows(const uint8_t *w_row0, int64_t row_bytes, const int8_t *q, int64_t nb, const int R,
                            int32_t *res) {
    __m512i acc[4];
    for (int i = 0; i < R; ++i) acc[i] = _mm512_setzero_si512();
    for (int64_t b = 0; b < nb; ++b) {
        const int8_t *qb = q + 256 * b; /* half 0 at qb, half 1 at qb + 128 */
        __m512i a[4];
        for (int j = 0; j < 4; ++j) a[j] = join(load256(qb + 32 * j), load256(qb + 128 + 32 * j));
        for (int i = 0; i < R; ++i) {
            const __m512i v = _mm512_loadu_si512((const void *)(w_row0 + i * row_bytes + BL_TQ2_BLOCK_BYTES * b));
            for (int j = 0; j < 4; ++j) acc[i] = dpbusd(acc[i], plane512(v, 2 * j), a[j]);
        }
    }
    for (int i = 0; i < R; ++i) res[i] = _mm512_reduce_add_epi32(acc[i]);
}

void bl_tq2_gemv_v2(const uint8_t *w, const int8_t *q, int32_t sum_q, int32_t *out, int64_t K, int64_t r0,
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

/* TQ2_0 GEMV v3: v2 without shifts, as I2_S v3 — plane j (bits 2j+1:2j, LSB-first) masked in
 * place is 4^j·c; accumulator j is rescaled by an exact arithmetic shift of 2j at the end. */
ALWAYS_INLINE void tq2_rows_v3(const uint8_t *w_row0, int64_t row_bytes, const int8_t *q, int64_t nb, const int R,
                               int32_t *res) {
    __m512i acc[4][4];
    for (int i = 0; i < R; ++i)
        for (int j = 0; j < 4; ++j) acc[i][j] = _mm512_setzero_si512();
    const __m512i mask[4] = {_mm512_set1_epi8(0x03), _mm512_set1_epi8(0x0C), _mm512_set1_epi8(0x30),
                             _mm512_set1_epi8((char)0xC0)};
    for (int64_t b = 0; b < nb; ++b) {
        const int8_t *qb = q + 256 * b;
        __m512i a[4];
        for (int j = 0; j < 4; ++j) a[j] = join(load256(qb + 32 * j), load256(qb + 128 + 32 * j));
        for (int i = 0; i < R; ++i) {
            const __m512i v = _mm512_loadu_si512((const void *)(w_row0 + i * row_bytes + BL_TQ2_BLOCK_BYTES * b));
            for (int j = 0; j < 4; ++j) acc[i][j] = dpbusd(acc[i][j], _mm512_and_si512(v, mask[j]), a[j]);
        }
    }
    for (int i = 0; i < R; ++i) {
        const __m512i d = _mm512_add_epi32(_mm512_add_epi32(acc[i][0], _mm512_srai_epi32(acc[i][1], 2)),
                                           _mm512_add_epi32(_mm512_srai_epi32(acc[i][2], 4), _mm512_srai_epi32(acc[i][3], 6)));
        res[i] = _mm512_reduce_add_epi32(d);
    }
}

void bl_tq2_gemv_v3(const uint8_t *w, const int8_t *q, int32_t sum_q, int32_t *out, int64_t K, int64_t r0,
                    int64_t r1) {
    const int64_t rb = bl_tq2_row_bytes(K), nb = K / BL_TQ_BLOCK;
    int32_t res[4];
    int64_t r = r0;
    for (; r + 4 <= r1; r += 4) {
        tq2_rows_v3(w + r * rb, rb, q, nb, 4, res);
        for (int i = 0; i < 4; ++i) out[r + i] = res[i] - sum_q;
    }
    for (; r < r1; ++r) {
        tq2_rows_v3(w + r * rb, rb, q, nb, 1, res);
        out[r] = res[0] - sum_q;
    }
    bl_gemx_fault(BL_OP_TQ2_GEMV, out, r0, r1);
}

/* ---- TQ1_0 GEMV ----------------------------------------------------------------------------- */

/* The trit (x·3) >> 8 with AVX-512VL/BW unsigned compares: 1 from 86, one more from 171. */
ALWAYS_INLINE __m256i trit_vl(__m256i x) {
    const __m256i one = _mm256_set1_epi8(1);
    const __m256i c = _mm256_maskz_mov_epi8(_mm256_cmpge_epu8_mask(x, _mm256_set1_epi8(86)), one);
    return _mm256_mask_add_epi8(c, _mm256_cmpge_epu8_mask(x, _mm256_set1_epi8((char)171)), c, one);
}

void bl_tq1_gemv_v2(const uint8_t *w, const int8_t *q, int32_t sum_q, int32_t *out, int64_t K, int64_t r0,
                    int64_t r1) {
    const int64_t rb = bl_tq1_row_bytes(K), nb = K / BL_TQ_BLOCK;
    for (int64_t r = r0; r < r1; ++r) {
        const uint8_t *wr = w + r * rb;
        __m256i acc0 = _mm256_setzero_si256(), acc1 = _mm256_setzero_si256();
        for (int64_t b = 0; b < nb; ++b) {
            const uint8_t *p = wr + BL_TQ1_BLOCK_BYTES * b;
            const int8_t *qb = q + 256 * b;
            /* qs[0..31]: trit n = elements 32n .. 32n+31 */
            __m256i x = load256(p);
            for (int n = 0; n < 5; ++n) {
                acc0 = _mm256_dpbusd_epi32(acc0, trit_vl(x), load256(qb + 32 * n));
                x = times3(x);
            }
            /* qs[32..47] (elements 160 + 16n + m) and qh (240 + 4n + j), as in tq1_block_codes */
            const __m128i y0 = _mm_loadu_si128((const __m128i *)(p + 32));
            const __m128i y1 = times3_128(y0), y2 = times3_128(y1), y3 = times3_128(y2), y4 = times3_128(y3);
            int32_t qh;
            memcpy(&qh, p + 48, 4);
            const __m128i h0 = _mm_set1_epi32(qh);
            const __m128i h1 = times3_128(h0), h2 = times3_128(h1), h3 = times3_128(h2);
            const __m128i hh = _mm_blend_epi32(_mm_blend_epi32(h0, h1, 0x2), _mm_blend_epi32(h2, h3, 0x8), 0xC);
            acc1 = _mm256_dpbusd_epi32(acc1, trit_vl(_mm256_set_m128i(y1, y0)), load256(qb + 160));
            acc1 = _mm256_dpbusd_epi32(acc1, trit_vl(_mm256_set_m128i(y3, y2)), load256(qb + 192));
            acc1 = _mm256_dpbusd_epi32(acc1, trit_vl(_mm256_set_m128i(hh, y4)), load256(qb + 224));
        }
        out[r] = hsum_epi32(_mm256_add_epi32(acc0, acc1)) - sum_q;
    }
    bl_gemx_fault(BL_OP_TQ1_GEMV, out, r0, r1);
}

/* ---- GEMM: blocked driver (bl_mad_impl.h) + a 4 rows x 4 tokens dpbusd tile ----------------- */

/* res[i][j] = Σ_k codes[i][k]·a[j][k] over kc elements (kc % 128 == 0): 16 int32 accumulators,
 * 8 loads per 16 dpbusd. */
ALWAYS_INLINE void tile(const uint8_t *codes, int64_t ldc, const int8_t *a, int64_t lda, int64_t kc, const int RW,
                        const int NT, int32_t res[4][4]) {
    __m512i acc[4][4];
    for (int i = 0; i < RW; ++i)
        for (int j = 0; j < NT; ++j) acc[i][j] = _mm512_setzero_si512();
    for (int64_t k = 0; k < kc; k += 64) {
        __m512i c[4];
        for (int i = 0; i < RW; ++i) c[i] = _mm512_loadu_si512((const void *)(codes + i * ldc + k));
        for (int j = 0; j < NT; ++j) {
            const __m512i x = _mm512_loadu_si512((const void *)(a + j * lda + k));
            for (int i = 0; i < RW; ++i) acc[i][j] = dpbusd(acc[i][j], c[i], x);
        }
    }
    for (int i = 0; i < RW; ++i)
        for (int j = 0; j < NT; ++j) res[i][j] = _mm512_reduce_add_epi32(acc[i][j]);
}

static void tile_any(const uint8_t *codes, int64_t ldc, const int8_t *a, int64_t lda, int64_t kc, int rw, int nt,
                     int32_t res[4][4]) {
#define T(RW, NT) \
    case 10 * RW + NT: tile(codes, ldc, a, lda, kc, RW, NT, res); return;
    switch (10 * rw + nt) {
        T(4, 4) T(4, 3) T(4, 2) T(4, 1) T(3, 4) T(3, 3) T(3, 2) T(3, 1)
        T(2, 4) T(2, 3) T(2, 2) T(2, 1) T(1, 4) T(1, 3) T(1, 2) T(1, 1)
    }
#undef T
}

static void gemm_v2(bl_decode_fn decode, int op, const uint8_t *w, const int8_t *Q, const int32_t *sum_q,
                    int32_t *out, int64_t N, int64_t K, int64_t ld_out, int64_t r0, int64_t r1) {
    _Alignas(64) uint8_t codes[BL_GEMM_PANEL * BL_GEMM_KC];
    bl_gemm_blocked(decode, tile_any, 4, codes, op, w, Q, sum_q, out, N, K, ld_out, r0, r1);
}

void bl_i2s_gemm_v2(const uint8_t *w, const int8_t *Q, const int32_t *sum_q, int32_t *out, int64_t N, int64_t K,
                    int64_t ld_out, int64_t r0, int64_t r1) {
    gemm_v2(decode_i2s, BL_OP_I2S_GEMM, w, Q, sum_q, out, N, K, ld_out, r0, r1);
}

void bl_tq2_gemm_v2(const uint8_t *w, const int8_t *Q, const int32_t *sum_q, int32_t *out, int64_t N, int64_t K,
                    int64_t ld_out, int64_t r0, int64_t r1) {
    gemm_v2(decode_tq2, BL_OP_TQ2_GEMM, w, Q, sum_q, out, N, K, ld_out, r0, r1);
}

void bl_tq1_gemm_v2(const uint8_t *w, const int8_t *Q, const int32_t *sum_q, int32_t *out, int64_t N, int64_t K,
                    int64_t ld_out, int64_t r0, int64_t r1) {
    gemm_v2(decode_tq1, BL_OP_TQ1_GEMM, w, Q, sum_q, out, N, K, ld_out, r0, r1);
}
