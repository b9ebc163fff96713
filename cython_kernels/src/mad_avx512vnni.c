/* mad_avx512vnni.c — MAD kernels, v2: AVX-512 VNNI (I2_S GEMV/GEMM, TQ2_0/TQ1_0 GEMV/GEMM).
 *
 * Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512vnni; called only on CPUs with all four.
 *
 * The multiply (docs/kernels.md#24-vnni-and-dot-product-instructions): _mm512_dpbusd_epi32(acc, codes u8,
 * activations s8) — four adjacent u8 × s8 products summed and added straight into int32 lanes (the
 * non-saturating vpdpbusd, not vpdpbusds). No int16 stage, so no overflow interval to respect; the
 * code-offset correction Σ t·q = Σ c·q − sum_q is applied once per row.
 *
 * I2_S GEMV v2 (weight-parallel): one 64-byte load holds TWO 128-weight blocks A, B (lanes 0–1 =
 *   A, lanes 2–3 = B). Shift/mask gives plane p of A and of B in one vector; it multiplies the
 *   activations [q(A, plane p) | q(B, plane p)], which are assembled once per step from two
 *   32-byte loads (inserti64x4) and shared by 4 weight rows. Per 256 weights a row costs 1 load,
 *   3 shifts, 4 ands and 4 dpbusd. An odd last block runs the same code on zero-extended halves.
 * I2_S GEMV v3 (the level's default): v2 without the shifts — each plane is masked in place, so
 *   dpbusd multiplies 4^k·c, and four int32 accumulators per row are rescaled once at the end
 *   (1 load, 4 ands, 4 dpbusd per 256 weights; faster than v2). Weights are prefetched into L2
 *   BL_GEMV_PF_BYTES ahead (see "software prefetch" below): streaming a model's weights from DRAM
 *   fell far short of the read bandwidth without it.
 * I2_S / TQ2_0 GEMV v4: v3 with the activations re-ordered once per call into the order the
 *   64-byte weight load needs ([q(A, plane p) | q(B, plane p)] as one 64-byte vector), so a step
 *   loads each activation vector with one instruction instead of two loads and an insert; rows
 *   in groups of 4 whose 16 lanes are summed by one transposing reduction (which v3 now uses
 *   too). Faster than v3 with the weights in L2, slower when they stream from DRAM (the decode
 *   case), so v3 stays the default (docs/benchmarks.md#kernel-variants).
 * TQ2_0 GEMV v2: one TQ2_0 block's 64 qs bytes per load (half 0 in lanes 0–1, half 1 in 2–3):
 *   the same pattern with LSB-first planes and 66-byte block stride; v3 (default) drops the
 *   shifts as I2_S v3 does.
 * TQ1_0 GEMV v2: 256-bit base-3 decode (byte adds for ×3, two AVX-512VL unsigned mask compares
 *   for the trit), 8 dpbusd per block.
 * TQ1_0 GEMV v3: no trit extraction. With q_n = b·3^n mod 256, 256·trit_n = 3·q_n − q_{n+1}, so
 *   the u8 powers q_0..q_5 of a 64-byte load (byte adds) go to dpbusd as they are, into two sums per
 *   row (a3 += q_n·a_n, a1 += q_{n+1}·a_n; Σ t·a = (3·a3 − a1) / 256, exact lane by lane): 10 adds
 *   and 10 dpbusd per 64 bytes, against v2's ~24 byte adds, 32 compare/mask ops and 8 (256-bit)
 *   dpbusd per 54-byte block.
 *   The activations are re-ordered once per call into the byte order of a block (tq1_acts).
 * TQ1_0 GEMV v4 (the level's default): v3 reading each row as one stream of 64-byte vectors, the
 *   activations placed at the byte position their trit comes from (v3 leaves 12 of 64 lanes idle
 *   per 54-byte block; v4 2 of 54, the block scales). L2 prefetch as I2_S v3.
 * TQ1_0 x16 GEMV v3 (the x16 layout, bl_mad.h): v3's arithmetic on a 64-byte load that is one
 *   4-byte word of 16 rows, so each int32 lane sums one row and needs no reduction; the tensor is
 *   one sequential stream, prefetched into L1 BL_X16_PF_BYTES ahead; activations broadcast a word
 *   at a time from the per-call planes.
 * TQ1_0 GEMM v4: GEMM v3 with a 512-bit base-3 decode (tq1_block_planes), which also turns TQ1_0
 *   rows into TQ2_0 rows for the amx level's TQ1_0 GEMM (mad_dispatch.c).
 * I2_S x4 GEMV v3 (the x4 layout, bl_mad.h): v3's arithmetic on groups of 4 rows read front to
 *   back; groups g and g + n/2 of a thread's range run in one pass (two streams), each row with
 *   two plane accumulators instead of four (see i2s_x4_group_pair).
 * GEMM v2 (activation-parallel, bl_gemm_blocked): a panel of 8 rows × 2048 weights is decoded
 *   once into a code buffer; every 4-token activation slice sweeps it with a 4 rows × 4 tokens
 *   tile of int32 dpbusd accumulators (16 dpbusd per 8 loads).
 * GEMM v3 (the level's default): a panel of 4 rows is decoded over up to 8192 weights (32 KiB of
 *   codes, usually the whole row), and every 6-token slice sweeps the whole panel with a 4 rows ×
 *   6 tokens tile (24 int32 accumulators, 24 dpbusd per 10 loads) whose lanes are summed ONCE per
 *   panel by transposing reductions — v2 reduced its 16 accumulators every 2048 weights, a
 *   sizeable share of the multiply time.
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

/* ---- software prefetch ------------------------------------------------------------------------ */

/* Bytes of weights kept in flight ahead of the rows a GEMV reads in lockstep. The hardware
 * prefetchers do not follow 4 interleaved row streams, and prefetcht0 is limited by the L1 miss
 * buffers; prefetcht1 (into L2) 8 KB ahead brings the GEMV close to the machine's read bandwidth,
 * closer than 4 KB or 16–64 KB (docs/benchmarks.md#decode-memory-layout-and-streaming). */
#ifndef BL_GEMV_PF_BYTES
#define BL_GEMV_PF_BYTES 8192
#endif

/* The prefetch front of R rows (row i at w0 + i·rb) consumed in lockstep from offset 0: each
 * row's front runs BL_GEMV_PF_BYTES / R bytes ahead of the read position; past a row's end it
 * continues in the same row of the next group of R rows (w0 + R·rb + i·rb), so short rows are
 * prefetched whole groups ahead and the next group starts with its lines in flight. */
typedef struct {
    int64_t rem;  /* offset of the front inside a row           */
    int64_t gofs; /* groups of R rows ahead of the current one  */
} pf_front;

ALWAYS_INLINE pf_front pf_start(int64_t rb, int R) {
    pf_front f = {BL_GEMV_PF_BYTES / R, 0};
    while (f.rem >= rb) {
        f.rem -= rb;
        f.gofs += 1;
    }
    return f;
}

/* Prefetch the front's line of each row into L2, then advance the front by `step` bytes. A step
 * longer than a line (TQ2_0: 66 bytes) also fetches the next line: one prefetch per step would
 * skip every ~32nd line, and each skipped line costs a full memory latency. Past the tensor's end
 * the addresses are harmless (a prefetch never faults). */
ALWAYS_INLINE void pf_step(pf_front *f, const uint8_t *w0, int64_t rb, int R, int64_t step) {
    const uint8_t *base = w0 + f->gofs * R * rb + f->rem;
    for (int i = 0; i < R; ++i) _mm_prefetch((const char *)(base + i * rb), _MM_HINT_T1);
    if (step > 64)
        for (int i = 0; i < R; ++i) _mm_prefetch((const char *)(base + i * rb + 64), _MM_HINT_T1);
    f->rem += step;
    while (f->rem >= rb) {
        f->rem -= rb;
        f->gofs += 1;
    }
}

/* The four results of rows a, b, c, d: [Σa, Σb, Σc, Σd] of their 16 int32 lanes, by transposing
 * adds (~10 instructions for the four rows instead of ~8 per row for a full reduction). */
ALWAYS_INLINE __m128i reduce4(__m512i a, __m512i b, __m512i c, __m512i d) {
    const __m512i ab = _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b));
    const __m512i cd = _mm512_add_epi32(_mm512_unpacklo_epi32(c, d), _mm512_unpackhi_epi32(c, d));
    const __m512i x = _mm512_add_epi32(_mm512_unpacklo_epi64(ab, cd), _mm512_unpackhi_epi64(ab, cd));
    const __m256i h = _mm256_add_epi32(_mm512_castsi512_si256(x), _mm512_extracti64x4_epi64(x, 1));
    return _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
}

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
    pf_front f = pf_start(row_bytes, R);
    int64_t b = 0;
    for (; b + 2 <= nb; b += 2) {
        pf_step(&f, w_row0, row_bytes, R, 64);
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
    __m512i d[4];
    for (int i = 0; i < R; ++i)
        d[i] = _mm512_add_epi32(_mm512_add_epi32(_mm512_srai_epi32(acc[i][0], 6), _mm512_srai_epi32(acc[i][1], 4)),
                                _mm512_add_epi32(_mm512_srai_epi32(acc[i][2], 2), acc[i][3]));
    if (R == 4)
        _mm_storeu_si128((__m128i *)res, reduce4(d[0], d[1], d[2], d[3]));
    else
        for (int i = 0; i < R; ++i) res[i] = _mm512_reduce_add_epi32(d[i]);
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

/* ---- I2_S x4 GEMV v3: the x4 layout ------------------------------------------------------- */

/* v3's arithmetic on one group of 4 rows stored in x4 order (bl_mad.h): the 4 rows' 64-byte
 * chunks of a step are adjacent, so the group is read front to back, one stream the hardware
 * prefetchers follow; no software prefetch (an L2 prefetch 1–8 KB ahead made it slower;
 * docs/benchmarks.md#decode-memory-layout-and-streaming). */
ALWAYS_INLINE void i2s_x4_group(const uint8_t *group, const int8_t *q, int64_t nb, int32_t *res) {
    __m512i acc[4][4];
    for (int i = 0; i < 4; ++i)
        for (int p = 0; p < 4; ++p) acc[i][p] = _mm512_setzero_si512();
    const __m512i mask[4] = {_mm512_set1_epi8((char)0xC0), _mm512_set1_epi8(0x30), _mm512_set1_epi8(0x0C),
                             _mm512_set1_epi8(0x03)};
    int64_t b = 0;
    for (; b + 2 <= nb; b += 2) {
        const int8_t *qa = q + 128 * b;
        const uint8_t *chunk = group + 128 * b; /* step b/2: 4 rows × 64 bytes */
        __m512i a[4];
        for (int p = 0; p < 4; ++p) a[p] = join(load256(qa + 32 * p), load256(qa + 128 + 32 * p));
        for (int i = 0; i < 4; ++i) {
            const __m512i v = _mm512_loadu_si512((const void *)(chunk + 64 * i));
            for (int p = 0; p < 4; ++p) acc[i][p] = dpbusd(acc[i][p], _mm512_and_si512(v, mask[p]), a[p]);
        }
    }
    if (b < nb) { /* odd last block: 4 rows × 32 bytes, zero-extended as in v3 */
        const int8_t *qa = q + 128 * b;
        __m512i a[4];
        for (int p = 0; p < 4; ++p) a[p] = _mm512_zextsi256_si512(load256(qa + 32 * p));
        for (int i = 0; i < 4; ++i) {
            const __m512i v = _mm512_zextsi256_si512(load256(group + 128 * b + 32 * i));
            for (int p = 0; p < 4; ++p) acc[i][p] = dpbusd(acc[i][p], _mm512_and_si512(v, mask[p]), a[p]);
        }
    }
    __m512i d[4];
    for (int i = 0; i < 4; ++i) /* exact: lane p of plane p is a multiple of 4^(3-p) */
        d[i] = _mm512_add_epi32(_mm512_add_epi32(_mm512_srai_epi32(acc[i][0], 6), _mm512_srai_epi32(acc[i][1], 4)),
                                _mm512_add_epi32(_mm512_srai_epi32(acc[i][2], 2), acc[i][3]));
    _mm_storeu_si128((__m128i *)res, reduce4(d[0], d[1], d[2], d[3]));
}

/* One row's 64 weight bytes v of a step into its two accumulators (i2s_x4_group_pair). */
ALWAYS_INLINE void pair_row(__m512i *hi, __m512i *lo, __m512i v, const __m512i a[4]) {
    const __m512i m30 = _mm512_set1_epi8(0x30), m03 = _mm512_set1_epi8(0x03);
    const __m512i sh = _mm512_srli_epi16(v, 2); /* bits 7-6 -> 5-4 and 3-2 -> 1-0 of each byte */
    *hi = dpbusd(*hi, _mm512_and_si512(sh, m30), a[0]);
    *lo = dpbusd(*lo, _mm512_and_si512(sh, m03), a[2]);
    *hi = dpbusd(*hi, _mm512_and_si512(v, m30), a[1]);
    *lo = dpbusd(*lo, _mm512_and_si512(v, m03), a[3]);
}

/* Two groups A and B (far apart: two sequential streams, as the F16 lm_head reads rows r and
 * r + half) in one pass. Sixteen plane accumulators per group would not fit in 32 registers, so
 * each row keeps two: planes 0 and 1 both at scale 16 (plane 0 shifted right by 2 bits, then
 * masked 0x30 like plane 1), planes 2 and 3 at scale 1 (plane 2 shifted, masked 0x03 like plane
 * 3): one extra shift per 64 bytes. Exact: hi = 16·Σ(c0·a0 + c1·a1), so hi >> 4 + lo is the
 * same integer sum as i2s_x4_group's. Decode steps ran a little faster than with one group at a
 * time, and steadier (docs/benchmarks.md#decode-memory-layout-and-streaming). */
ALWAYS_INLINE void i2s_x4_group_pair(const uint8_t *ga, const uint8_t *gb, const int8_t *q, int64_t nb,
                                     int32_t *res_a, int32_t *res_b) {
    __m512i hi[8], lo[8]; /* rows 0-3 of A, then rows 0-3 of B */
    for (int i = 0; i < 8; ++i) hi[i] = lo[i] = _mm512_setzero_si512();
    int64_t b = 0;
    for (; b + 2 <= nb; b += 2) {
        const int8_t *qa = q + 128 * b;
        __m512i a[4];
        for (int p = 0; p < 4; ++p) a[p] = join(load256(qa + 32 * p), load256(qa + 128 + 32 * p));
        for (int i = 0; i < 8; ++i)
            pair_row(&hi[i], &lo[i], _mm512_loadu_si512((const void *)((i < 4 ? ga : gb) + 128 * b + 64 * (i & 3))), a);
    }
    if (b < nb) { /* odd last block: 4 rows × 32 bytes per group, zero-extended */
        const int8_t *qa = q + 128 * b;
        __m512i a[4];
        for (int p = 0; p < 4; ++p) a[p] = _mm512_zextsi256_si512(load256(qa + 32 * p));
        for (int i = 0; i < 8; ++i)
            pair_row(&hi[i], &lo[i], _mm512_zextsi256_si512(load256((i < 4 ? ga : gb) + 128 * b + 32 * (i & 3))), a);
    }
    __m512i d[8];
    for (int i = 0; i < 8; ++i) d[i] = _mm512_add_epi32(_mm512_srai_epi32(hi[i], 4), lo[i]); /* exact */
    _mm_storeu_si128((__m128i *)res_a, reduce4(d[0], d[1], d[2], d[3]));
    _mm_storeu_si128((__m128i *)res_b, reduce4(d[4], d[5], d[6], d[7]));
}

void bl_i2s_x4_gemv_v3(const uint8_t *w, const int8_t *q, int32_t sum_q, int32_t *out, int64_t K, int64_t r0,
                       int64_t r1) {
    const int64_t rb = bl_i2s_row_bytes(K), nb = K / 128;
    const int64_t pairs = (r1 - r0) / 8; /* groups g and g + pairs of the range run together */
    int32_t res[4], res_b[4];
    for (int64_t g = 0; g < pairs; ++g) {
        const int64_t row_a = r0 + 4 * g, row_b = r0 + 4 * (g + pairs);
        i2s_x4_group_pair(w + row_a * rb, w + row_b * rb, q, nb, res, res_b);
        for (int i = 0; i < 4; ++i) {
            out[row_a + i] = res[i] - sum_q;
            out[row_b + i] = res_b[i] - sum_q;
        }
    }
    int64_t r = r0 + 8 * pairs;
    for (; r + 4 <= r1; r += 4) { /* a last unpaired group */
        i2s_x4_group(w + r * rb, q, nb, res);
        for (int i = 0; i < 4; ++i) out[r + i] = res[i] - sum_q;
    }
    for (; r < r1; ++r) { /* the M % 4 tail rows (r1 == M): row-major */
        i2s_rows_v3(w + r * rb, rb, q, nb, 1, res);
        out[r] = res[0] - sum_q;
    }
    bl_gemx_fault(BL_OP_I2S_X4_GEMV, out, r0, r1);
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
    pf_front f = pf_start(row_bytes, R);
    for (int64_t b = 0; b < nb; ++b) {
        pf_step(&f, w_row0, row_bytes, R, BL_TQ2_BLOCK_BYTES);
        const int8_t *qb = q + 256 * b;
        __m512i a[4];
        for (int j = 0; j < 4; ++j) a[j] = join(load256(qb + 32 * j), load256(qb + 128 + 32 * j));
        for (int i = 0; i < R; ++i) {
            const __m512i v = _mm512_loadu_si512((const void *)(w_row0 + i * row_bytes + BL_TQ2_BLOCK_BYTES * b));
            for (int j = 0; j < 4; ++j) acc[i][j] = dpbusd(acc[i][j], _mm512_and_si512(v, mask[j]), a[j]);
        }
    }
    __m512i d[4];
    for (int i = 0; i < R; ++i)
        d[i] = _mm512_add_epi32(_mm512_add_epi32(acc[i][0], _mm512_srai_epi32(acc[i][1], 2)),
                                _mm512_add_epi32(_mm512_srai_epi32(acc[i][2], 4), _mm512_srai_epi32(acc[i][3], 6)));
    if (R == 4)
        _mm_storeu_si128((__m128i *)res, reduce4(d[0], d[1], d[2], d[3]));
    else
        for (int i = 0; i < R; ++i) res[i] = _mm512_reduce_add_epi32(d[i]);
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

/* ---- GEMV v4: activations joined once per call ------------------------------------------------ */

/* Largest K the v4 GEMVs re-order on the stack (16 KiB); larger K runs v3 (same results). */
#define BL_V4_MAX_K 16384

/* ap[256·s + 64·p .. +64] = [q[256s + 32p .. +32] | q[256s + 128 + 32p .. +32]] for every 256
 * activations s (an I2_S block pair A = 2s, B = 2s + 1, or one TQ2_0 block with its two halves):
 * the activation vector that multiplies plane p of the 64-byte weight load of step s. An odd last
 * I2_S block (K % 256 == 128) gets zeros in its upper halves. */
static void join_acts(const int8_t *q, int64_t K, int8_t *ap) {
    int64_t s = 0;
    for (; 256 * (s + 1) <= K; ++s)
        for (int p = 0; p < 4; ++p)
            _mm512_storeu_si512((void *)(ap + 256 * s + 64 * p),
                                join(load256(q + 256 * s + 32 * p), load256(q + 256 * s + 128 + 32 * p)));
    if (256 * s < K) /* 128 activations left */
        for (int p = 0; p < 4; ++p)
            _mm512_storeu_si512((void *)(ap + 256 * s + 64 * p), _mm512_zextsi256_si512(load256(q + 256 * s + 32 * p)));
}

/* R (4 or 1) rows from w_row0: d[i] = the 16 lanes of Σ c·q of row i. Steps of 64 weight bytes
 * (`step_bytes` apart in a row: 64 for I2_S, 66 for TQ2_0), `ns` full steps, then for I2_S an odd
 * 32-byte block (`odd`). `shift[p]`: the exact rescaling of plane accumulator p (plane p masked in
 * place is 4^shift·c). */
ALWAYS_INLINE void rows_v4(const uint8_t *w_row0, int64_t row_bytes, const int8_t *ap, int64_t ns, int64_t step_bytes,
                           int odd, const __m512i mask[4], const int shift[4], const int R, __m512i *d) {
    __m512i acc[4][4];
    for (int i = 0; i < R; ++i)
        for (int p = 0; p < 4; ++p) acc[i][p] = _mm512_setzero_si512();
    pf_front f = pf_start(row_bytes, R);
    int64_t s = 0;
    for (; s < ns; ++s) {
        pf_step(&f, w_row0, row_bytes, R, step_bytes);
        __m512i a[4];
        for (int p = 0; p < 4; ++p) a[p] = _mm512_loadu_si512((const void *)(ap + 256 * s + 64 * p));
        for (int i = 0; i < R; ++i) {
            const __m512i v = _mm512_loadu_si512((const void *)(w_row0 + i * row_bytes + step_bytes * s));
            for (int p = 0; p < 4; ++p) acc[i][p] = dpbusd(acc[i][p], _mm512_and_si512(v, mask[p]), a[p]);
        }
    }
    if (odd) {
        __m512i a[4];
        for (int p = 0; p < 4; ++p) a[p] = _mm512_loadu_si512((const void *)(ap + 256 * s + 64 * p));
        for (int i = 0; i < R; ++i) {
            const __m512i v = _mm512_zextsi256_si512(load256(w_row0 + i * row_bytes + step_bytes * s));
            for (int p = 0; p < 4; ++p) acc[i][p] = dpbusd(acc[i][p], _mm512_and_si512(v, mask[p]), a[p]);
        }
    }
    for (int i = 0; i < R; ++i)
        d[i] = _mm512_add_epi32(_mm512_add_epi32(_mm512_srai_epi32(acc[i][0], shift[0]), _mm512_srai_epi32(acc[i][1], shift[1])),
                                _mm512_add_epi32(_mm512_srai_epi32(acc[i][2], shift[2]), _mm512_srai_epi32(acc[i][3], shift[3])));
}

ALWAYS_INLINE void gemv_v4(const uint8_t *w, const int8_t *ap, int32_t sum_q, int32_t *out, int64_t rb, int64_t ns,
                           int64_t step_bytes, int odd, const __m512i mask[4], const int shift[4], int64_t r0,
                           int64_t r1) {
    int64_t r = r0;
    __m512i d[4];
    for (; r + 4 <= r1; r += 4) {
        rows_v4(w + r * rb, rb, ap, ns, step_bytes, odd, mask, shift, 4, d);
        _mm_storeu_si128((__m128i *)(out + r), _mm_sub_epi32(reduce4(d[0], d[1], d[2], d[3]), _mm_set1_epi32(sum_q)));
    }
    for (; r < r1; ++r) {
        rows_v4(w + r * rb, rb, ap, ns, step_bytes, odd, mask, shift, 1, d);
        out[r] = _mm512_reduce_add_epi32(d[0]) - sum_q;
    }
}

void bl_i2s_gemv_v4(const uint8_t *w, const int8_t *q, int32_t sum_q, int32_t *out, int64_t K, int64_t r0,
                    int64_t r1) {
    if (K > BL_V4_MAX_K) {
        bl_i2s_gemv_v3(w, q, sum_q, out, K, r0, r1);
        return;
    }
    _Alignas(64) int8_t ap[BL_V4_MAX_K];
    join_acts(q, K, ap);
    /* I2_S plane p sits at bits 7-2p:6-2p: masked in place it is 4^(3-p)·c */
    const __m512i mask[4] = {_mm512_set1_epi8((char)0xC0), _mm512_set1_epi8(0x30), _mm512_set1_epi8(0x0C),
                             _mm512_set1_epi8(0x03)};
    static const int shift[4] = {6, 4, 2, 0};
    const int64_t nb = K / 128;
    gemv_v4(w, ap, sum_q, out, bl_i2s_row_bytes(K), nb / 2, 64, (int)(nb & 1), mask, shift, r0, r1);
    bl_gemx_fault(BL_OP_I2S_GEMV, out, r0, r1);
}

void bl_tq2_gemv_v4(const uint8_t *w, const int8_t *q, int32_t sum_q, int32_t *out, int64_t K, int64_t r0,
                    int64_t r1) {
    if (K > BL_V4_MAX_K) {
        bl_tq2_gemv_v3(w, q, sum_q, out, K, r0, r1);
        return;
    }
    _Alignas(64) int8_t ap[BL_V4_MAX_K];
    join_acts(q, K, ap);
    /* TQ2_0 plane j sits at bits 2j+1:2j (LSB first): masked in place it is 4^j·c */
    const __m512i mask[4] = {_mm512_set1_epi8(0x03), _mm512_set1_epi8(0x0C), _mm512_set1_epi8(0x30),
                             _mm512_set1_epi8((char)0xC0)};
    static const int shift[4] = {0, 2, 4, 6};
    gemv_v4(w, ap, sum_q, out, bl_tq2_row_bytes(K), K / BL_TQ_BLOCK, BL_TQ2_BLOCK_BYTES, 0, mask, shift, r0, r1);
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

/* ---- TQ1_0 GEMV v3: the trits as a linear form of the byte powers ----------------------------- */

/* Trit n of a byte b is t_n = (3·q_n) >> 8 with q_n = b·3^n mod 256 (bl_tq1_trit), and
 * q_{n+1} = 3·q_n mod 256 = 3·q_n − 256·t_n, so 256·t_n = 3·q_n − q_{n+1} exactly, for every byte.
 * Σ t_n·a is therefore (3·Σ q_n·a − Σ q_{n+1}·a) / 256, and each q_n is a u8 that vpdpbusd
 * multiplies as it is: no compare, no code vector. Per 64-byte load of a block (its 52 code bytes;
 * bytes 52..63 meet zero activations) a row costs 5 ×3 steps (2 byte adds each) and 10 dpbusd
 * into two accumulators, a3 += q_n·a_n and a1 += q_{n+1}·a_n, for 256 weights (v2: ~12 ×3 steps,
 * 8 trit extractions of 4 ops, 8 dpbusd, in 256-bit vectors). A lane of a3/a1 holds the same bytes
 * of the same planes, so 3·a3 − a1 is 256·Σ t·a lane by lane and one exact arithmetic shift per
 * lane restores it. The activations are re-ordered once per call (tq1_acts) into the byte order of
 * the block: the TQ1_0 bytes are read as stored. */

/* Blocks per chunk of re-ordered activations: 64 · 320 bytes = 20 KiB of stack. Per lane and chunk
 * |3·a3| + |a1| ≤ 4 · 20 products · 255·128 · 64 blocks < 2^31 (the shift per chunk keeps it). */
#define TQ1_V3_CHUNK 64
#define TQ1_V3_AP 320 /* re-ordered activation bytes per block: 5 planes × 64 */

/* ap[320·b + 64·n + i] (block b of nb, plane n < 5): the activation that trit n of byte i of
 * block b multiplies (docs/formats.md#35-tq1_0-type-34): byte i < 32 (qs[0..31]): element 32n + i;
 * 32 ≤ i < 48 (qs[32..47]): 160 + 16n + (i − 32); 48 ≤ i < 52 (qh): 240 + 4n + (i − 48) for n < 4,
 * 0 for n = 4 (qh holds 4 trits); i ≥ 52: 0 (the block scale d and the next block's bytes). */
/* The 64 activations of plane n of one block qb in its bytes' order (above); zero past byte 52. */
static inline __m512i tq1_block_plane(const int8_t *qb, int n) {
    int32_t h = 0;
    if (n < 4) memcpy(&h, qb + 240 + 4 * n, 4);
    __m512i v = _mm512_zextsi256_si512(load256(qb + 32 * n));
    v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(qb + 160 + 16 * n)), 2);
    return _mm512_inserti32x4(v, _mm_cvtsi32_si128(h), 3);
}

static void tq1_acts(const int8_t *q, int64_t nb, int8_t *ap) {
    for (int64_t b = 0; b < nb; ++b) {
        const int8_t *qb = q + BL_TQ_BLOCK * b;
        for (int n = 0; n < 5; ++n) _mm512_storeu_si512((void *)(ap + TQ1_V3_AP * b + 64 * n), tq1_block_plane(qb, n));
    }
}

ALWAYS_INLINE __m512i times3_512(__m512i x) { return _mm512_add_epi8(x, _mm512_add_epi8(x, x)); }

/* One block's 64 loaded bytes x of one row into its accumulators (5 planes). */
ALWAYS_INLINE void tq1_block_v3(__m512i *a3, __m512i *a1, __m512i x, const __m512i A[5]) {
    for (int n = 0; n < 5; ++n) {
        *a3 = dpbusd(*a3, x, A[n]);
        x = times3_512(x);
        *a1 = dpbusd(*a1, x, A[n]);
    }
}

/* R (4 or 1) rows from w_row0, blocks [0, nb) of the chunk whose activations are ap; d[i] = the 16
 * lanes of Σ c·q of row i. The last block's load stops at its 52 code bytes (masked: the bytes
 * after the tensor's last block may be unmapped). Weights are prefetched into L2 as in the I2_S GEMV
 * v3 (without, the rows streamed from DRAM markedly slower: docs/benchmarks.md). */
ALWAYS_INLINE void tq1_rows_v3(const uint8_t *w_row0, int64_t rb, const int8_t *ap, int64_t nb, const int R,
                               __m512i *d) {
    __m512i a3[4], a1[4];
    for (int i = 0; i < R; ++i) a3[i] = a1[i] = _mm512_setzero_si512();
    pf_front f = pf_start(rb, R);
    int64_t b = 0;
    for (; b + 1 < nb; ++b) {
        pf_step(&f, w_row0, rb, R, BL_TQ1_BLOCK_BYTES);
        __m512i A[5];
        for (int n = 0; n < 5; ++n) A[n] = _mm512_load_si512((const void *)(ap + TQ1_V3_AP * b + 64 * n));
        for (int i = 0; i < R; ++i) {
            const __m512i x = _mm512_loadu_si512((const void *)(w_row0 + i * rb + BL_TQ1_BLOCK_BYTES * b));
            tq1_block_v3(&a3[i], &a1[i], x, A);
        }
    }
    {
        __m512i A[5];
        for (int n = 0; n < 5; ++n) A[n] = _mm512_load_si512((const void *)(ap + TQ1_V3_AP * b + 64 * n));
        for (int i = 0; i < R; ++i) {
            const __m512i x = _mm512_maskz_loadu_epi8((__mmask64)0x000FFFFFFFFFFFFFull,
                                                      (const void *)(w_row0 + i * rb + BL_TQ1_BLOCK_BYTES * b));
            tq1_block_v3(&a3[i], &a1[i], x, A);
        }
    }
    for (int i = 0; i < R; ++i) /* exact: 3·a3 − a1 is 256·Σ t·a in every lane */
        d[i] = _mm512_srai_epi32(_mm512_sub_epi32(_mm512_add_epi32(a3[i], _mm512_add_epi32(a3[i], a3[i])), a1[i]), 8);
}

void bl_tq1_gemv_v3(const uint8_t *w, const int8_t *q, int32_t sum_q, int32_t *out, int64_t K, int64_t r0,
                    int64_t r1) {
    const int64_t rb = bl_tq1_row_bytes(K), nb = K / BL_TQ_BLOCK;
    _Alignas(64) int8_t ap[TQ1_V3_CHUNK * TQ1_V3_AP];
    for (int64_t b0 = 0; b0 < nb; b0 += TQ1_V3_CHUNK) { /* one chunk for K ≤ 16384 */
        const int64_t nc = nb - b0 < TQ1_V3_CHUNK ? nb - b0 : TQ1_V3_CHUNK;
        tq1_acts(q + BL_TQ_BLOCK * b0, nc, ap);
        const uint8_t *wc = w + BL_TQ1_BLOCK_BYTES * b0;
        __m512i d[4];
        int64_t r = r0;
        for (; r + 4 <= r1; r += 4) {
            tq1_rows_v3(wc + r * rb, rb, ap, nc, 4, d);
            const __m128i s = reduce4(d[0], d[1], d[2], d[3]);
            const __m128i prev = b0 == 0 ? _mm_set1_epi32(-sum_q) : _mm_loadu_si128((const __m128i *)(out + r));
            _mm_storeu_si128((__m128i *)(out + r), _mm_add_epi32(prev, s));
        }
        for (; r < r1; ++r) {
            tq1_rows_v3(wc + r * rb, rb, ap, nc, 1, d);
            out[r] = (b0 == 0 ? -sum_q : out[r]) + _mm512_reduce_add_epi32(d[0]);
        }
    }
    bl_gemx_fault(BL_OP_TQ1_GEMV, out, r0, r1);
}


/* ---- TQ1_0 GEMV v4: v3 over the row as one byte stream ---------------------------------------- */

/* v3 loads 64 bytes per 54-byte block, of which 52 are codes: 12 of 64 lanes do no work. v4 reads
 * each row as a flat stream of 64-byte vectors at offsets 0, 64, 128, … (the bytes as stored), and
 * the per-call re-order places every activation at the byte position its trit comes from:
 * position o of the row's stream is byte o % 54 of block o / 54; the block scales d (bytes 52, 53)
 * and positions past the row meet zero activations. Per 54 bytes of weights: 54/64 of v3's work. */

#define TQ1_V4_CHUNK 64 /* blocks per chunk: 64 · 54 = 3456 bytes = 54 vectors a row; 5 planes = 17 KiB */

/* ap[L·n + 54·b + i] (plane n < 5, block b of nb, L = the planes' stride, a multiple of 64 ≥ 54·nb):
 * what tq1_acts puts at ap[320·b + 64·n + i] for i < 52; zero elsewhere. Blocks are stored in order,
 * each block's 52 activations and 2 zeros (its d) written by one masked store. */
static void tq1_acts_flat(const int8_t *q, int64_t nb, int64_t L, int8_t *ap) {
    for (int n = 0; n < 5; ++n) memset(ap + L * n + 54 * nb, 0, (size_t)(L - 54 * nb));
    for (int64_t b = 0; b < nb; ++b) {
        const int8_t *qb = q + BL_TQ_BLOCK * b;
        for (int n = 0; n < 5; ++n) {
            /* 54 bytes: the codes' activations and the zeros of d */
            _mm512_mask_storeu_epi8((void *)(ap + L * n + 54 * b), (__mmask64)0x003FFFFFFFFFFFFFull,
                                    tq1_block_plane(qb, n));
        }
    }
}

/* R (4 or 1) rows from w_row0 (rows rb apart), the chunk's nv 64-byte vectors (the last one `tail`
 * bytes, 1..64, loaded masked: the bytes after the tensor may be unmapped); d[i] = the 16 lanes of
 * Σ c·q of row i. */
ALWAYS_INLINE void tq1_rows_v4(const uint8_t *w_row0, int64_t rb, const int8_t *ap, int64_t L, int64_t nv,
                               int64_t tail, const int R, __m512i *d) {
    __m512i a3[4], a1[4];
    for (int i = 0; i < R; ++i) a3[i] = a1[i] = _mm512_setzero_si512();
    pf_front f = pf_start(rb, R);
    int64_t j = 0;
    for (; j + 1 < nv; ++j) {
        pf_step(&f, w_row0, rb, R, 64);
        __m512i A[5];
        for (int n = 0; n < 5; ++n) A[n] = _mm512_load_si512((const void *)(ap + L * n + 64 * j));
        for (int i = 0; i < R; ++i)
            tq1_block_v3(&a3[i], &a1[i], _mm512_loadu_si512((const void *)(w_row0 + i * rb + 64 * j)), A);
    }
    {
        const __mmask64 m = tail == 64 ? ~(__mmask64)0 : (((__mmask64)1 << tail) - 1);
        __m512i A[5];
        for (int n = 0; n < 5; ++n) A[n] = _mm512_load_si512((const void *)(ap + L * n + 64 * j));
        for (int i = 0; i < R; ++i)
            tq1_block_v3(&a3[i], &a1[i], _mm512_maskz_loadu_epi8(m, (const void *)(w_row0 + i * rb + 64 * j)), A);
    }
    for (int i = 0; i < R; ++i) /* exact: 3·a3 − a1 is 256·Σ t·a in every lane */
        d[i] = _mm512_srai_epi32(_mm512_sub_epi32(_mm512_add_epi32(a3[i], _mm512_add_epi32(a3[i], a3[i])), a1[i]), 8);
}

void bl_tq1_gemv_v4(const uint8_t *w, const int8_t *q, int32_t sum_q, int32_t *out, int64_t K, int64_t r0,
                    int64_t r1) {
    const int64_t rb = bl_tq1_row_bytes(K), nb = K / BL_TQ_BLOCK;
    _Alignas(64) int8_t ap[5 * BL_TQ1_BLOCK_BYTES * TQ1_V4_CHUNK];
    for (int64_t b0 = 0; b0 < nb; b0 += TQ1_V4_CHUNK) { /* one chunk for K ≤ 16384 */
        const int64_t nc = nb - b0 < TQ1_V4_CHUNK ? nb - b0 : TQ1_V4_CHUNK;
        const int64_t bytes = BL_TQ1_BLOCK_BYTES * nc, nv = (bytes + 63) / 64, L = 64 * nv;
        tq1_acts_flat(q + BL_TQ_BLOCK * b0, nc, L, ap);
        const uint8_t *wc = w + BL_TQ1_BLOCK_BYTES * b0;
        const int64_t tail = bytes - 64 * (nv - 1);
        __m512i d[4];
        int64_t r = r0;
        for (; r + 4 <= r1; r += 4) {
            tq1_rows_v4(wc + r * rb, rb, ap, L, nv, tail, 4, d);
            const __m128i s = reduce4(d[0], d[1], d[2], d[3]);
            const __m128i prev = b0 == 0 ? _mm_set1_epi32(-sum_q) : _mm_loadu_si128((const __m128i *)(out + r));
            _mm_storeu_si128((__m128i *)(out + r), _mm_add_epi32(prev, s));
        }
        for (; r < r1; ++r) {
            tq1_rows_v4(wc + r * rb, rb, ap, L, nv, tail, 1, d);
            out[r] = (b0 == 0 ? -sum_q : out[r]) + _mm512_reduce_add_epi32(d[0]);
        }
    }
    bl_gemx_fault(BL_OP_TQ1_GEMV, out, r0, r1);
}

/* ---- TQ1_0 GEMV v3 on the x16 layout ------------------------------------------------------------ */

/* The x16 stream is read with one software prefetch per 64 bytes, into L1, this far ahead: with ~10
 * vector instructions per 64 bytes the hardware prefetchers alone left the stream well short of the
 * read bandwidth, and prefetcht1 (into L2) or a shorter / longer distance was slower
 * (docs/benchmarks.md#tq1_0-x16-layout-2026-12-07). */
#ifndef BL_X16_PF_BYTES
#define BL_X16_PF_BYTES 2048
#endif

/* ap[cb·n + 52·b + i] (plane n < 5, block b, byte i < 52 of the block's codes): what tq1_acts puts
 * at ap[320·b + 64·n + i] — the activation that trit n of code byte i of block b multiplies. */
static void tq1_acts_x16(const int8_t *q, int64_t nb, int64_t cb, int8_t *ap) {
    for (int64_t b = 0; b < nb; ++b)
        for (int n = 0; n < 5; ++n)
            _mm512_mask_storeu_epi8((void *)(ap + cb * n + 52 * b), (__mmask64)0x000FFFFFFFFFFFFFull,
                                    tq1_block_plane(q + BL_TQ_BLOCK * b, n));
}

/* One word (16 rows × 4 bytes, x) into the accumulators of parity u: 5 planes, split by the
 * plane's parity so no dpbusd waits on the one before it (8 chains in all). */
ALWAYS_INLINE void tq1_x16_word(__m512i a3[2][2], __m512i a1[2][2], int u, __m512i x, const int8_t *ap, int64_t cb,
                                int64_t j) {
    for (int n = 0; n < 5; ++n) {
        int32_t v;
        memcpy(&v, ap + cb * n + 4 * j, 4);
        const __m512i A = _mm512_set1_epi32(v); /* a load-port broadcast */
        a3[u][n & 1] = dpbusd(a3[u][n & 1], x, A);
        x = times3_512(x);
        a1[u][n & 1] = dpbusd(a1[u][n & 1], x, A);
    }
}

/* Word j of a group at p with `step` bytes per word: a plain load (full group, step 64) or a load of
 * the 4m bytes of a last group of m rows (lanes ≥ m zero). */
ALWAYS_INLINE __m512i x16_load(const uint8_t *p, int64_t step, int64_t j, const int full, __mmask64 m) {
    return full ? _mm512_loadu_si512((const void *)(p + 64 * j)) : _mm512_maskz_loadu_epi8(m, (const void *)(p + step * j));
}

/* The 16 lanes Σ c·q of the group at p (full: 16 rows; else m rows, step = 4m, mask = their bytes). */
ALWAYS_INLINE __m512i tq1_x16_group(const uint8_t *p, const int8_t *ap, int64_t cb, const int full, int64_t step,
                                    __mmask64 m) {
    const int64_t words = cb / 4;
    __m512i a3[2][2], a1[2][2];
    for (int u = 0; u < 2; ++u)
        for (int v = 0; v < 2; ++v) a3[u][v] = a1[u][v] = _mm512_setzero_si512();
    int64_t j = 0;
    for (; j + 2 <= words; j += 2) {
        _mm_prefetch((const char *)(p + step * j + BL_X16_PF_BYTES), _MM_HINT_T0);
        _mm_prefetch((const char *)(p + step * j + 64 + BL_X16_PF_BYTES), _MM_HINT_T0);
        tq1_x16_word(a3, a1, 0, x16_load(p, step, j, full, m), ap, cb, j);
        tq1_x16_word(a3, a1, 1, x16_load(p, step, j + 1, full, m), ap, cb, j + 1);
    }
    if (j < words) tq1_x16_word(a3, a1, 0, x16_load(p, step, j, full, m), ap, cb, j);
    const __m512i s3 = _mm512_add_epi32(_mm512_add_epi32(a3[0][0], a3[0][1]), _mm512_add_epi32(a3[1][0], a3[1][1]));
    const __m512i s1 = _mm512_add_epi32(_mm512_add_epi32(a1[0][0], a1[0][1]), _mm512_add_epi32(a1[1][0], a1[1][1]));
    /* exact: 3·a3 − a1 is 256·Σ c·q in every lane (one row's, |value| ≤ 2^30 for K ≤ 16384) */
    return _mm512_srai_epi32(_mm512_sub_epi32(_mm512_add_epi32(s3, _mm512_add_epi32(s3, s3)), s1), 8);
}

void bl_tq1_x16_gemv_v3(const uint8_t *w, const int8_t *q, int32_t sum_q, int32_t *out, int64_t K, int64_t r0,
                        int64_t r1) {
    const int64_t nb = K / BL_TQ_BLOCK, cb = bl_tq1_x16_row_bytes(K);
    _Alignas(64) int8_t ap[5 * (BL_X16_MAX_K / BL_TQ_BLOCK) * 52];
    tq1_acts_x16(q, nb, cb, ap);
    const __m512i s = _mm512_set1_epi32(sum_q);
    int64_t g = r0;
    for (; g + BL_X16_ROWS <= r1; g += BL_X16_ROWS) /* full groups: plain 64-byte loads */
        _mm512_storeu_si512((void *)(out + g),
                            _mm512_sub_epi32(tq1_x16_group(w + g * cb, ap, cb, 1, 64, ~(__mmask64)0), s));
    if (g < r1) { /* the last, short group of the tensor (r1 == M) */
        const int64_t m = r1 - g;
        const __m512i d = tq1_x16_group(w + g * cb, ap, cb, 0, 4 * m, ((__mmask64)1 << (4 * m)) - 1);
        _mm512_mask_storeu_epi32((void *)(out + g), (__mmask16)((1u << m) - 1), _mm512_sub_epi32(d, s));
    }
    bl_gemx_fault(BL_OP_TQ1_X16_GEMV, out, r0, r1);
}

/* Rows [r0, r1) of an x16 tensor back to TQ1_0 rows (bl_tq1_x16_rows, for the x16 GEMMs of this
 * level and amx): a block's 13 words of one row are 13 dwords 4m bytes apart, so one masked
 * gather collects them and one masked store writes the 52 code bytes and the zero scale. */
void bl_tq1_x16_rows_v3(const uint8_t *w, uint8_t *dst, int64_t M, int64_t K, int64_t r0, int64_t r1) {
    const int64_t nb = K / BL_TQ_BLOCK, cb = bl_tq1_x16_row_bytes(K), rb = bl_tq1_row_bytes(K);
    for (int64_t r = r0; r < r1; ++r) {
        const int64_t g = r / BL_X16_ROWS * BL_X16_ROWS, i = r - g, m = M - g < BL_X16_ROWS ? M - g : BL_X16_ROWS;
        /* dword lane k (< 13) of block b: word 13b + k of row i, at 4m·(13b + k) + 4i */
        const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0, 0, 0),
                                               _mm512_set1_epi32((int)m));
        const uint8_t *row = w + g * cb + 4 * i;
        uint8_t *out = dst + (r - r0) * rb;
        for (int64_t b = 0; b < nb; ++b) {
            const __m512i v = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), (__mmask16)0x1FFF, idx,
                                                          (const void *)(row + 52 * m * b), 4);
            _mm512_mask_storeu_epi8((void *)(out + BL_TQ1_BLOCK_BYTES * b), (__mmask64)0x003FFFFFFFFFFFFFull, v);
        }
    }
}

/* ---- TQ1_0 decode in 512-bit vectors (GEMM v4, amx) --------------------------------------------- */

/* The trit (x·3) >> 8 of every byte: 1 from 86, one more from 171 (unsigned mask compares). */
ALWAYS_INLINE __m512i trit512(__m512i x) {
    const __m512i one = _mm512_set1_epi8(1);
    const __m512i c = _mm512_maskz_mov_epi8(_mm512_cmpge_epu8_mask(x, _mm512_set1_epi8(86)), one);
    return _mm512_mask_add_epi8(c, _mm512_cmpge_epu8_mask(x, _mm512_set1_epi8((char)171)), c, one);
}
ALWAYS_INLINE __m128i trit128(__m128i x) {
    const __m128i one = _mm_set1_epi8(1);
    const __m128i c = _mm_maskz_mov_epi8(_mm_cmpge_epu8_mask(x, _mm_set1_epi8(86)), one);
    return _mm_mask_add_epi8(c, _mm_cmpge_epu8_mask(x, _mm_set1_epi8((char)171)), c, one);
}

/* The trits of one 54-byte block, 64 bytes at a time: P[n] = plane n of V = [qs[0..31] | y | 3y]
 * (y = qs[32..47], ×3 mod 256 per byte), i.e. [trit n of qs (elements 32n + m) | trit n of y |
 * trit n + 1 of y]; hh = trit n of qh byte j in byte 4n + j (elements 240 + 4n + j). In element
 * order (tq1_block_codes' c[0..7]): c[n] = P[n]'s lower half (n < 5), c[5] = [t0(y) | t1(y)] = P[0]'s
 * upper half, c[6] = P[2]'s, c[7] = [t4(y) | hh] = [P[4]'s lane 2 | hh]. */
ALWAYS_INLINE void tq1_block_planes(const uint8_t *p, __m512i P[5], __m128i *hh) {
    int32_t qh;
    memcpy(&qh, p + 48, 4);
    const __m128i y = _mm_loadu_si128((const __m128i *)(p + 32));
    __m512i v = _mm512_castsi256_si512(load256(p));
    v = _mm512_inserti32x4(v, y, 2);
    v = _mm512_inserti32x4(v, times3_128(y), 3);
    for (int n = 0; n < 5; ++n) {
        P[n] = trit512(v);
        if (n < 4) v = times3_512(v);
    }
    const __m128i h0 = _mm_set1_epi32(qh), h1 = times3_128(h0), h2 = times3_128(h1), h3 = times3_128(h2);
    *hh = trit128(_mm_blend_epi32(_mm_blend_epi32(h0, h1, 0x2), _mm_blend_epi32(h2, h3, 0x8), 0xC));
}

/* decode_tq1 (bl_mad_x86.h) with tq1_block_planes: the same codes. */
static inline void decode_tq1_512(const uint8_t *w, int64_t K, int64_t row, int64_t k0, int64_t kc, uint8_t *codes) {
    const uint8_t *p = w + row * bl_tq1_row_bytes(K) + (k0 / BL_TQ_BLOCK) * BL_TQ1_BLOCK_BYTES;
    for (int64_t b = 0; b < kc / BL_TQ_BLOCK; ++b, p += BL_TQ1_BLOCK_BYTES, codes += BL_TQ_BLOCK) {
        __m512i P[5];
        __m128i hh;
        tq1_block_planes(p, P, &hh);
        for (int n = 0; n < 5; ++n) _mm256_storeu_si256((__m256i *)(codes + 32 * n), _mm512_castsi512_si256(P[n]));
        _mm256_storeu_si256((__m256i *)(codes + 160), _mm512_extracti64x4_epi64(P[0], 1));
        _mm256_storeu_si256((__m256i *)(codes + 192), _mm512_extracti64x4_epi64(P[2], 1));
        _mm_storeu_si128((__m128i *)(codes + 224), _mm512_extracti32x4_epi32(P[4], 2));
        _mm_storeu_si128((__m128i *)(codes + 240), hh);
    }
}

/* One TQ1_0 block -> the TQ2_0 block of the same codes (docs/formats.md#34-tq2_0-type-35: element
 * 128h + 32j + m at bits 2j+1:2j of qs[32h + m]) and the same fp16 d. Codes are ≤ 2, so a 16-bit
 * shift by ≤ 6 keeps every byte's bits inside it. */
ALWAYS_INLINE void tq1_block_to_tq2(const uint8_t *p, uint8_t *dst) {
    __m512i P[5];
    __m128i hh;
    tq1_block_planes(p, P, &hh);
    const __m512i lo = _mm512_or_si512(_mm512_or_si512(P[0], _mm512_slli_epi16(P[1], 2)),
                                       _mm512_or_si512(_mm512_slli_epi16(P[2], 4), _mm512_slli_epi16(P[3], 6)));
    const __m256i c7 = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm512_extracti32x4_epi32(P[4], 2)), hh, 1);
    const __m256i hi = _mm256_or_si256(
        _mm256_or_si256(_mm512_castsi512_si256(P[4]), _mm256_slli_epi16(_mm512_extracti64x4_epi64(P[0], 1), 2)),
        _mm256_or_si256(_mm256_slli_epi16(_mm512_extracti64x4_epi64(P[2], 1), 4), _mm256_slli_epi16(c7, 6)));
    _mm256_storeu_si256((__m256i *)dst, _mm512_castsi512_si256(lo));
    _mm256_storeu_si256((__m256i *)(dst + 32), hi);
    memcpy(dst + 64, p + 52, 2);
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

/* ---- GEMM v3: whole-row panels, 4 rows x 6 tokens ------------------------------------------------ */

#define G3_RW 4    /* weight rows per panel / tile                                  */
#define G3_NT 6    /* tokens per tile (24 accumulators + 4 codes + 1 activation)   */
#define G3_KC 8192 /* weights per decoded chunk: 4 x 8192 = 32 KiB of codes          */

/* res[j] = [Σ_k codes[i][k]·a[j][k] for i < 4] over kc weights (kc % 64 == 0), for NT tokens;
 * rows i >= RW of the panel are not read (their results are garbage and ignored). */
ALWAYS_INLINE void tile3(const uint8_t *codes, const int8_t *a, int64_t lda, int64_t kc, const int RW, const int NT,
                         __m128i res[G3_NT]) {
    __m512i acc[G3_RW][G3_NT];
    for (int i = 0; i < RW; ++i)
        for (int j = 0; j < NT; ++j) acc[i][j] = _mm512_setzero_si512();
    for (int64_t k = 0; k < kc; k += 64) {
        __m512i c[G3_RW];
        for (int i = 0; i < RW; ++i) c[i] = _mm512_loadu_si512((const void *)(codes + i * G3_KC + k));
        for (int j = 0; j < NT; ++j) {
            const __m512i x = _mm512_loadu_si512((const void *)(a + j * lda + k));
            for (int i = 0; i < RW; ++i) acc[i][j] = dpbusd(acc[i][j], c[i], x);
        }
    }
    const __m512i z = _mm512_setzero_si512();
    for (int j = 0; j < NT; ++j)
        res[j] = reduce4(acc[0][j], RW > 1 ? acc[1][j] : z, RW > 2 ? acc[2][j] : z, RW > 3 ? acc[3][j] : z);
}

static void tile3_any(const uint8_t *codes, const int8_t *a, int64_t lda, int64_t kc, int rw, int nt,
                      __m128i res[G3_NT]) {
#define T(RW, NT) \
    case 10 * RW + NT: tile3(codes, a, lda, kc, RW, NT, res); return;
    switch (10 * rw + nt) {
        T(4, 6) T(4, 5) T(4, 4) T(4, 3) T(4, 2) T(4, 1)
        T(3, 6) T(3, 5) T(3, 4) T(3, 3) T(3, 2) T(3, 1)
        T(2, 6) T(2, 5) T(2, 4) T(2, 3) T(2, 2) T(2, 1)
        T(1, 6) T(1, 5) T(1, 4) T(1, 3) T(1, 2) T(1, 1)
    }
#undef T
}

/* kc: a multiple of the format's block (128 or 256) that is also a multiple of 64. */
static void gemm_v3(bl_decode_fn decode, int op, const uint8_t *w, const int8_t *Q, const int32_t *sum_q, int32_t *out,
                    int64_t N, int64_t K, int64_t ld_out, int64_t r0, int64_t r1) {
    _Alignas(64) uint8_t codes[G3_RW * G3_KC];
    for (int64_t r = r0; r < r1; r += G3_RW) {
        const int rw = r1 - r < G3_RW ? (int)(r1 - r) : G3_RW;
        for (int64_t k0 = 0; k0 < K; k0 += G3_KC) {
            const int64_t kc = K - k0 < G3_KC ? K - k0 : G3_KC;
            for (int i = 0; i < rw; ++i) decode(w, K, r + i, k0, kc, codes + i * G3_KC);
            for (int64_t n = 0; n < N; n += G3_NT) {
                const int nt = N - n < G3_NT ? (int)(N - n) : G3_NT;
                __m128i res[G3_NT];
                tile3_any(codes, Q + n * K + k0, K, kc, rw, nt, res);
                for (int j = 0; j < nt; ++j) {
                    int32_t v[4];
                    _mm_storeu_si128((__m128i *)v, res[j]);
                    int32_t *o = out + (n + j) * ld_out + r;
                    for (int i = 0; i < rw; ++i) o[i] = k0 == 0 ? v[i] - sum_q[n + j] : o[i] + v[i];
                }
            }
        }
    }
    bl_gemx_fault(op, out, r0, r1);
}

void bl_i2s_gemm_v3(const uint8_t *w, const int8_t *Q, const int32_t *sum_q, int32_t *out, int64_t N, int64_t K,
                    int64_t ld_out, int64_t r0, int64_t r1) {
    gemm_v3(decode_i2s, BL_OP_I2S_GEMM, w, Q, sum_q, out, N, K, ld_out, r0, r1);
}

/* Row `row` of a full group of an x4 tensor (bl_mad.h), weights [k0, k0 + kc) as codes:
 * decode_i2s's work with each 128-weight block's 32 bytes read where x4 keeps them. */
static inline void decode_i2s_x4(const uint8_t *w, int64_t K, int64_t row, int64_t k0, int64_t kc, uint8_t *codes) {
    const int64_t nb = K / 128;
    const uint8_t *group = w + row / 4 * 4 * bl_i2s_row_bytes(K);
    for (int64_t b = k0 / 128; b < (k0 + kc) / 128; ++b, codes += 128) {
        const __m256i v = _mm256_loadu_si256((const __m256i *)bl_i2s_x4_block(group, nb, b, row % 4));
        for (int pl = 0; pl < 4; ++pl) _mm256_storeu_si256((__m256i *)(codes + 32 * pl), plane(v, 6 - 2 * pl));
    }
}

/* GEMM v3 straight from the x4 layout: no re-ordered copy (the codes are decoded once per 4-row
 * panel anyway). The M % 4 tail rows (r1 == M) are row-major in x4: plain decode_i2s. */
void bl_i2s_x4_gemm_v3(const uint8_t *w, const int8_t *Q, const int32_t *sum_q, int32_t *out, int64_t N, int64_t K,
                       int64_t ld_out, int64_t r0, int64_t r1) {
    const int64_t full = r1 / 4 * 4;
    gemm_v3(decode_i2s_x4, BL_OP_I2S_X4_GEMM, w, Q, sum_q, out, N, K, ld_out, r0, full);
    if (full < r1) gemm_v3(decode_i2s, BL_OP_I2S_X4_GEMM, w, Q, sum_q, out, N, K, ld_out, full, r1);
}

void bl_tq2_gemm_v3(const uint8_t *w, const int8_t *Q, const int32_t *sum_q, int32_t *out, int64_t N, int64_t K,
                    int64_t ld_out, int64_t r0, int64_t r1) {
    gemm_v3(decode_tq2, BL_OP_TQ2_GEMM, w, Q, sum_q, out, N, K, ld_out, r0, r1);
}

void bl_tq1_gemm_v3(const uint8_t *w, const int8_t *Q, const int32_t *sum_q, int32_t *out, int64_t N, int64_t K,
                    int64_t ld_out, int64_t r0, int64_t r1) {
    gemm_v3(decode_tq1, BL_OP_TQ1_GEMM, w, Q, sum_q, out, N, K, ld_out, r0, r1);
}

/* GEMM v4: v3 decoding with tq1_block_planes (512-bit) instead of tq1_block_codes (256-bit). */
void bl_tq1_gemm_v4(const uint8_t *w, const int8_t *Q, const int32_t *sum_q, int32_t *out, int64_t N, int64_t K,
                    int64_t ld_out, int64_t r0, int64_t r1) {
    gemm_v3(decode_tq1_512, BL_OP_TQ1_GEMM, w, Q, sum_q, out, N, K, ld_out, r0, r1);
}

/* Rows [r0, r1) of a TQ1_0 tensor -> the same codes as TQ2_0 rows (row r at dst + (r − r0)·K/256·66),
 * for the amx level's TQ1_0 GEMM (mad_dispatch.c). */
void bl_tq1_to_tq2_rows(const uint8_t *w, uint8_t *dst, int64_t K, int64_t r0, int64_t r1) {
    const int64_t nb = K / BL_TQ_BLOCK;
    const uint8_t *p = w + r0 * bl_tq1_row_bytes(K);
    for (int64_t i = 0; i < (r1 - r0) * nb; ++i, p += BL_TQ1_BLOCK_BYTES, dst += BL_TQ2_BLOCK_BYTES)
        tq1_block_to_tq2(p, dst);
}

/* ---- per-block products (bl_mad.h): the GEMM tile over one 256-weight block at a time -------- */

static void bgemm_v2(bl_decode_fn decode, int op, const uint8_t *w, const int8_t *Q, const int32_t *sum_qb,
                     int32_t *out, int64_t N, int64_t K, int64_t ld_out, int64_t r0, int64_t r1) {
    _Alignas(64) uint8_t codes[BL_GEMM_PANEL * BL_GEMM_KC];
    bl_gemm_blocks(decode, tile_any, 4, codes, op, w, Q, sum_qb, out, N, K, ld_out, r0, r1);
}

#define BLOCKS(fmt, OPV, OPM, decode)                                                                          \
    void bl_##fmt##_bgemv_v2(const uint8_t *w, const int8_t *q, const int32_t *sum_qb, int32_t *out, int64_t K, \
                             int64_t r0, int64_t r1) {                                                         \
        bgemm_v2(decode, OPV, w, q, sum_qb, out, 1, K, 0, r0, r1);                                             \
    }                                                                                                          \
    void bl_##fmt##_bgemm_v2(const uint8_t *w, const int8_t *Q, const int32_t *sum_qb, int32_t *out, int64_t N, \
                             int64_t K, int64_t ld_out, int64_t r0, int64_t r1) {                              \
        bgemm_v2(decode, OPM, w, Q, sum_qb, out, N, K, ld_out, r0, r1);                                        \
    }
BLOCKS(i2s, BL_OP_I2S_BGEMV, BL_OP_I2S_BGEMM, decode_i2s)
BLOCKS(tq2, BL_OP_TQ2_BGEMV, BL_OP_TQ2_BGEMM, decode_tq2)
BLOCKS(tq1, BL_OP_TQ1_BGEMV, BL_OP_TQ1_BGEMM, decode_tq1)
#undef BLOCKS
