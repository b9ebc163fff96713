/* bl_mad_x86.h — AVX2-level helpers shared by the x86 MAD files (mad_avx2.c, mad_avxvnni.c,
 * mad_avx512vnni.c): horizontal sums, 2-bit plane extraction, the TQ1_0 base-3 decode and the
 * chunk decoders of the GEMMs. Static inline only; include it from files compiled with at least
 * -mavx2 (every x86 MAD level implies AVX2).
 */
#ifndef BL_MAD_X86_H
#define BL_MAD_X86_H

#include <immintrin.h>

#include "bl_mad_impl.h"

#define ALWAYS_INLINE static inline __attribute__((always_inline))

ALWAYS_INLINE int32_t hsum_epi32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
    return _mm_cvtsi128_si32(s);
}

/* int16 lanes -> int32 lanes (pairwise), exact */
ALWAYS_INLINE __m256i widen(__m256i acc16) { return _mm256_madd_epi16(acc16, _mm256_set1_epi16(1)); }

/* 2-bit plane at `shift` of 32 packed bytes, as unsigned codes 0..3 (the 16-bit shift drags the
 * neighbour byte's bits in; the AND with 3 drops them). */
ALWAYS_INLINE __m256i plane(__m256i v, int shift) {
    return _mm256_and_si256(_mm256_srli_epi16(v, shift), _mm256_set1_epi8(3));
}

/* ---- TQ1_0 decode ---------------------------------------------------------------------------- */

/* x·3 mod 256 per byte (wrapping byte adds). */
ALWAYS_INLINE __m256i times3(__m256i x) { return _mm256_add_epi8(x, _mm256_add_epi8(x, x)); }
ALWAYS_INLINE __m128i times3_128(__m128i x) { return _mm_add_epi8(x, _mm_add_epi8(x, x)); }

/* The trit (x·3) >> 8 of every byte x: 0 below 86, 1 from 86, 2 from 171. */
ALWAYS_INLINE __m256i trit(__m256i x) {
    const __m256i ge86 = _mm256_cmpeq_epi8(_mm256_max_epu8(x, _mm256_set1_epi8(86)), x);         /* -1 / 0 */
    const __m256i ge171 = _mm256_cmpeq_epi8(_mm256_max_epu8(x, _mm256_set1_epi8((char)171)), x); /* -1 / 0 */
    return _mm256_sub_epi8(_mm256_sub_epi8(_mm256_setzero_si256(), ge86), ge171);
}

/* Codes of one 54-byte TQ1_0 block in element order: c[i] = elements 32i .. 32i + 31. */
ALWAYS_INLINE void tq1_block_codes(const uint8_t *p, __m256i c[8]) {
    /* qs[0..31]: trit n of byte m is element 32n + m */
    __m256i x = _mm256_loadu_si256((const __m256i *)p);
    for (int n = 0; n < 5; ++n) {
        c[n] = trit(x);
        x = times3(x);
    }
    /* qs[32..47]: trit n of byte m is element 160 + 16n + m; two trits fill one 32-wide vector */
    const __m128i y0 = _mm_loadu_si128((const __m128i *)(p + 32));
    const __m128i y1 = times3_128(y0), y2 = times3_128(y1), y3 = times3_128(y2), y4 = times3_128(y3);
    /* qh[0..3]: trit n of byte j is element 240 + 4n + j: dword n of a broadcast, times 3^n */
    int32_t qh;
    memcpy(&qh, p + 48, 4);
    const __m128i h0 = _mm_set1_epi32(qh);
    const __m128i h1 = times3_128(h0), h2 = times3_128(h1), h3 = times3_128(h2);
    const __m128i hh = _mm_blend_epi32(_mm_blend_epi32(h0, h1, 0x2), _mm_blend_epi32(h2, h3, 0x8), 0xC);
    c[5] = trit(_mm256_set_m128i(y1, y0)); /* elements 160..191 */
    c[6] = trit(_mm256_set_m128i(y3, y2)); /* 192..223 */
    c[7] = trit(_mm256_set_m128i(hh, y4)); /* 224..239 from qs, 240..255 from qh */
}

/* ---- chunk decoders for the GEMMs (codes of elements [k0, k0 + kc) of one row) ---------------- */

static inline void decode_i2s(const uint8_t *w, int64_t K, int64_t row, int64_t k0, int64_t kc, uint8_t *codes) {
    const uint8_t *p = w + row * bl_i2s_row_bytes(K) + k0 / 4;
    for (int64_t b = 0; b < kc / 128; ++b, p += 32, codes += 128) {
        const __m256i v = _mm256_loadu_si256((const __m256i *)p);
        for (int pl = 0; pl < 4; ++pl) _mm256_storeu_si256((__m256i *)(codes + 32 * pl), plane(v, 6 - 2 * pl));
    }
}

static inline void decode_tq2(const uint8_t *w, int64_t K, int64_t row, int64_t k0, int64_t kc, uint8_t *codes) {
    const uint8_t *p = w + row * bl_tq2_row_bytes(K) + (k0 / BL_TQ_BLOCK) * BL_TQ2_BLOCK_BYTES;
    for (int64_t b = 0; b < kc / BL_TQ_BLOCK; ++b, p += BL_TQ2_BLOCK_BYTES, codes += BL_TQ_BLOCK)
        for (int h = 0; h < 2; ++h) {
            const __m256i v = _mm256_loadu_si256((const __m256i *)(p + 32 * h));
            for (int j = 0; j < 4; ++j) _mm256_storeu_si256((__m256i *)(codes + 128 * h + 32 * j), plane(v, 2 * j));
        }
}

static inline void decode_tq1(const uint8_t *w, int64_t K, int64_t row, int64_t k0, int64_t kc, uint8_t *codes) {
    const uint8_t *p = w + row * bl_tq1_row_bytes(K) + (k0 / BL_TQ_BLOCK) * BL_TQ1_BLOCK_BYTES;
    for (int64_t b = 0; b < kc / BL_TQ_BLOCK; ++b, p += BL_TQ1_BLOCK_BYTES, codes += BL_TQ_BLOCK) {
        __m256i c[8];
        tq1_block_codes(p, c);
        for (int i = 0; i < 8; ++i) _mm256_storeu_si256((__m256i *)(codes + 32 * i), c[i]);
    }
}

#endif /* BL_MAD_X86_H */
