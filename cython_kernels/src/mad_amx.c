/* mad_amx.c — MAD kernels, amx: the prefill GEMMs (I2_S, I2_S x4, TQ2_0) on Intel AMX-INT8 tiles.
 *
 * Compiled with the AVX-512 VNNI flags plus -mamx-tile -mamx-int8; called only where bl_dispatch.c
 * found AMX-TILE and AMX-INT8, the OS saving tile state (XCR0 bits 17, 18) and, on Linux, this
 * process granted the tile data state (arch_prctl ARCH_REQ_XCOMP_PERM). The amx level is the
 * avx512vnni level with these three GEMMs: decode of one token has nothing for a tile to reuse.
 *
 * The multiply (the activation-parallel GEMM of docs/kernels.md#26-activation-parallel-vs-weight-parallel,
 * on tiles): TDPBSUD
 *   C[16 × 16 int32] += A[16 × 64 int8] · B[64 × 16 uint8]
 * with A = 16 tokens' activations over 64 weights, read straight from Q (tileloadd with stride K:
 * no copy), B = the codes c = t + 1 of 16 weight rows over the same 64 weights, and C = out[token][row],
 * stored straight into out with stride ld_out. B is "VNNI-packed": its row k4 holds, for each of the
 * 16 weight rows, the 4 codes of weights 4·k4 .. 4·k4 + 3. C starts at −sum_q[token] in every
 * column, so the integer result is Σ c·q − Σ q = Σ t·q exactly (docs/numerics.md#31-the-integer-identity;
 * int32 holds it, bl_mad.h).
 *
 * Packed weights -> B tiles, per 16 rows and one 128-weight block (32 packed bytes a row): dword j
 * (bytes 4j .. 4j+3) of a row's 32 bytes holds weights 32p + 4j .. 32p + 4j + 3 in its plane p
 * (I2_S: bits at shift 6 − 2p, MSB first; TQ2_0's 128-halves: shift 2p, LSB first;
 * docs/formats.md#3-ternary-byte-layouts). Transposing the 16 rows × 8 dwords of PACKED bytes (24 shuffles:
 * two 8 × 8 dword transposes side by side in the halves of 8 zmm registers) gives, for each j, the 16 rows'
 * dword j in one vector; its plane p, shifted and masked, is row 8·(p % 2) + j of the B tile of the block's
 * half p / 2. So decoding 2048 weights costs 16 loads, 24 shuffles and 64 shift/and ops, once per call
 * for all tokens (decoding the codes first and transposing bytes would take four times the shuffles).
 *
 * Blocking: a panel of 32 weight rows (two B column tiles) is decoded BL_AMX_KC weights at a time
 * (a unit) into a stack buffer; every pair of 16-token blocks then runs a 2 × 2 grid of C tiles over
 * it (2 A + 2 B tile loads per 4 TDPBSUD), C re-loaded from out for the chunks after the first. The
 * next unit is decoded between the tile products of this one (software pipelining: the decode's
 * vector work overlaps the tile unit). Tokens go in slices whose activations stay in L2.
 * Tokens past the last full 16-token block (a whole call of 2 to 15 tokens: a small batch, a
 * verification pass) run on short tiles of that many rows (bl_amx_configure_rows), so the weights
 * are still decoded once for them; rows past the last full 16-row panel, and a single token left
 * over, run the avx512vnni GEMM v3 of the same layout: same integers, so any split is exact.
 */
#include "bl_amx.h"
#include "bl_mad_x86.h"

/* Weights per unit of work (a chunk of a 32-row panel): 32 rows × 512 codes = 16 KiB of B tiles,
 * two such buffers on the stack (the unit being multiplied, the next one being decoded). On the
 * 2B-4T shapes 512 beat 1024, 256 (more int32 round trips through out) and 2048 without the
 * pipelining (docs/benchmarks.md#kernel-variants). */
#ifndef BL_AMX_KC
#define BL_AMX_KC 512
#endif
#ifndef BL_AMX_SLICE_BYTES
#define BL_AMX_SLICE_BYTES (1 << 20) /* activations of one token slice: half a 2 MiB L2 */
#endif
#define BL_AMX_ROWS 32 /* weight rows per panel: two B tiles of 16 columns */
#define BL_AMX_TOK 16  /* tokens per A / C tile */
#ifndef BL_AMX_PF_ROWS
#define BL_AMX_PF_ROWS BL_AMX_ROWS /* rows ahead of the decode that are prefetched: the next panel */
#endif
/* Fewest tokens of a short-tile pass (the tokens past the last full 16): below it the v3 GEMM,
 * which needs no decoded B tiles, takes them. */
#ifndef BL_AMX_MIN_TOK
#define BL_AMX_MIN_TOK 2
#endif

/* Tiles (all 16 rows × 64 bytes, bl_amx_configure(8)): tmm0..3 = C (tokens 0-15 / 16-31 × rows
 * 0-15 / 16-31), tmm4, 5 = A, tmm6, 7 = B. */

/* The three packed layouts differ only in where a 128-weight block's 32 bytes are and in which
 * order its four 2-bit planes sit. */
enum { FMT_I2S, FMT_I2S_X4, FMT_TQ2 };

ALWAYS_INLINE const uint8_t *block_bytes(int fmt, const uint8_t *w, int64_t K, int64_t row, int64_t b) {
    if (fmt == FMT_I2S) return w + row * bl_i2s_row_bytes(K) + 32 * b;
    if (fmt == FMT_I2S_X4) return bl_i2s_x4_block(w + row / 4 * 4 * bl_i2s_row_bytes(K), K / 128, b, row % 4);
    /* TQ2_0: block b is half b % 2 of 256-block b / 2 (66 bytes: 64 of codes, then fp16 d) */
    return w + row * bl_tq2_row_bytes(K) + (b / 2) * BL_TQ2_BLOCK_BYTES + 32 * (b % 2);
}

ALWAYS_INLINE int plane_shift(int fmt, int p) { return fmt == FMT_TQ2 ? 2 * p : 6 - 2 * p; }

ALWAYS_INLINE __m512i rows_pair(int fmt, const uint8_t *w, int64_t K, int64_t r, int64_t b) {
    const __m256i lo = _mm256_loadu_si256((const __m256i *)block_bytes(fmt, w, K, r, b));
    const __m256i hi = _mm256_loadu_si256((const __m256i *)block_bytes(fmt, w, K, r + 4, b));
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

/* B tiles of rows [row, row + 16), block b -> dst (k-half 0) and dst + stride (k-half 1), each
 * 16 rows of 64 bytes. */
ALWAYS_INLINE void decode_block16(int fmt, const uint8_t *w, int64_t K, int64_t row, int64_t b, uint8_t *dst,
                                  int64_t stride) {
    /* z[i] = [row i | row i + 4] for i < 4, [row i + 4 | row i + 8] for i >= 4: with that pairing the
     * lane shuffle below leaves the 16 rows in order 0..15 */
    __m512i z[8];
    for (int i = 0; i < 4; ++i) {
        z[i] = rows_pair(fmt, w, K, row + i, b);
        z[4 + i] = rows_pair(fmt, w, K, row + 8 + i, b);
    }
    /* per 128-bit lane, 4 × 4 dword transposes: s[j] (s[4 + j]) = dword j of z[0..3] (z[4..7]) */
    __m512i s[8];
    for (int h = 0; h < 8; h += 4) {
        const __m512i t0 = _mm512_unpacklo_epi32(z[h], z[h + 1]), t1 = _mm512_unpackhi_epi32(z[h], z[h + 1]);
        const __m512i t2 = _mm512_unpacklo_epi32(z[h + 2], z[h + 3]), t3 = _mm512_unpackhi_epi32(z[h + 2], z[h + 3]);
        s[h] = _mm512_unpacklo_epi64(t0, t2);
        s[h + 1] = _mm512_unpackhi_epi64(t0, t2);
        s[h + 2] = _mm512_unpacklo_epi64(t1, t3);
        s[h + 3] = _mm512_unpackhi_epi64(t1, t3);
    }
    const __m512i three = _mm512_set1_epi8(3);
    for (int j = 0; j < 4; ++j) {
        /* lanes of s[j]: rows 0-3 dword j, rows 0-3 dword j+4, rows 4-7 dword j, rows 4-7 dword j+4;
         * of s[4 + j] the same for rows 8-15 */
        const __m512i o[2] = {_mm512_shuffle_i32x4(s[j], s[4 + j], 0x88),  /* dword j of rows 0..15     */
                              _mm512_shuffle_i32x4(s[j], s[4 + j], 0xDD)}; /* dword j + 4 of rows 0..15 */
        for (int u = 0; u < 2; ++u) {
            const int jj = j + 4 * u;
            for (int p = 0; p < 4; ++p) {
                const __m512i c = _mm512_and_si512(_mm512_srli_epi16(o[u], plane_shift(fmt, p)), three);
                _mm512_store_si512((__m512i *)(dst + (p / 2) * stride + 64 * (8 * (p % 2) + jj)), c);
            }
        }
    }
}

/* The start of a C tile (16 tokens × 16 rows): −sum_q of the row's token in every column. */
ALWAYS_INLINE void neg_sums(const int32_t *sum_q, int nt, int32_t init[16][16]) {
    for (int n = 0; n < nt; ++n) _mm512_store_si512((__m512i *)init[n], _mm512_set1_epi32(-sum_q[n]));
}

/* One unit of work: rows [r, r + 16·nb) (nb = 1 or 2 B column tiles) × weights [k0, k0 + kc). */
typedef struct {
    int64_t r, k0, kc;
    int nb;
} amx_unit;

/* A unit's B tiles being decoded into buf ([64-weight step][column tile][16 × 64]), one
 * decode_block16 at a time: piece d = block d / nb of column tile d % nb. */
typedef struct {
    amx_unit u;
    uint8_t *buf;
    int64_t done, total;
    int64_t r_end; /* the end of the rows on tiles: the next panel is prefetched while below it */
} amx_decoder;

ALWAYS_INLINE void decode_start(amx_decoder *d, amx_unit u, uint8_t *buf, int64_t r_end) {
    d->u = u;
    d->buf = buf;
    d->done = 0;
    d->total = u.kc / 128 * u.nb;
    d->r_end = r_end;
}

ALWAYS_INLINE void decode_piece(int fmt, const uint8_t *w, int64_t K, amx_decoder *d) {
    if (d->done >= d->total) return;
    const int64_t b = d->done / d->u.nb;
    const int g = (int)(d->done % d->u.nb);
    const int64_t row = d->u.r + 16 * g;
    /* The same block of the next panel's rows, into L2: a panel's weights are a few short strided
     * runs the hardware prefetchers do not pick up before they end, which left a call of a few
     * tokens (the tiles' work per weight is small then) waiting on memory. */
    if (row + BL_AMX_PF_ROWS + 16 <= d->r_end)
        for (int i = 0; i < 16; ++i)
            _mm_prefetch((const char *)block_bytes(fmt, w, K, row + BL_AMX_PF_ROWS + i, d->u.k0 / 128 + b), _MM_HINT_T1);
    decode_block16(fmt, w, K, row, d->u.k0 / 128 + b, d->buf + (4 * b + g) * 1024, 2048);
    ++d->done;
}

/* Tokens [n0, n1) (n1 − n0 a multiple of 16) of unit u, its B tiles in bt: Σ t·q into out
 * (k0 == 0: from −sum_q; else added to what out holds). Meanwhile `next` is decoded, one piece
 * every `every` steps: tile products run on their own unit, so the vector work of the decode
 * overlaps them (decoding between sweeps instead made the GEMM much slower on 2B-4T shapes). */
ALWAYS_INLINE void sweep(int fmt, const uint8_t *w, const int8_t *Q, const int32_t *sum_q, int32_t *out, int64_t n0,
                         int64_t n1, int64_t K, int64_t ld_out, amx_unit u, const uint8_t *btiles, amx_decoder *next,
                         int64_t every) {
    _Alignas(64) int32_t init[2][16][16];
    const size_t ldo = (size_t)ld_out * 4; /* bytes between tokens in out */
    const int nb = u.nb;
    int64_t countdown = every;
    for (int64_t n = n0; n < n1; n += 2 * BL_AMX_TOK) {
        const int two = n + BL_AMX_TOK < n1; /* a second block of 16 tokens */
        const int nt = n1 - n < BL_AMX_TOK ? (int)(n1 - n) : BL_AMX_TOK; /* < 16: a short-tile call */
        int32_t *c0 = out + n * ld_out + u.r, *c1 = c0 + 16 * ld_out;
        if (u.k0 == 0) {
            neg_sums(sum_q + n, nt, init[0]);
            _tile_loadd(0, init[0], 64);
            if (nb == 2) _tile_loadd(1, init[0], 64);
            if (two) {
                neg_sums(sum_q + n + 16, BL_AMX_TOK, init[1]);
                _tile_loadd(2, init[1], 64);
                if (nb == 2) _tile_loadd(3, init[1], 64);
            }
        } else {
            _tile_loadd(0, c0, ldo);
            if (nb == 2) _tile_loadd(1, c0 + 16, ldo);
            if (two) {
                _tile_loadd(2, c1, ldo);
                if (nb == 2) _tile_loadd(3, c1 + 16, ldo);
            }
        }
        const int8_t *a = Q + n * K + u.k0;
        const uint8_t *bt = btiles;
        /* loads interleaved with the products that need them (issuing all loads first was much
         * slower; docs/benchmarks.md#kernel-variants) */
        for (int64_t s = 0; s < u.kc / 64; ++s, a += 64, bt += 2048) {
            _tile_loadd(4, a, K);
            _tile_loadd(6, bt, 64);
            _tile_dpbsud(0, 4, 6);
            if (nb == 2) {
                _tile_loadd(7, bt + 1024, 64);
                _tile_dpbsud(1, 4, 7);
            }
            if (two) {
                _tile_loadd(5, a + 16 * K, K);
                _tile_dpbsud(2, 5, 6);
                if (nb == 2) _tile_dpbsud(3, 5, 7);
            }
            if (--countdown == 0) {
                decode_piece(fmt, w, K, next);
                countdown = every;
            }
        }
        _tile_stored(0, c0, ldo);
        if (nb == 2) _tile_stored(1, c0 + 16, ldo);
        if (two) {
            _tile_stored(2, c1, ldo);
            if (nb == 2) _tile_stored(3, c1 + 16, ldo);
        }
    }
    while (next->done < next->total) decode_piece(fmt, w, K, next);
}

/* The units of a slice in order: panels of 32 rows outer, weight chunks inner (so a panel's
 * int32 results for the slice, ≤ 64 KiB, stay in L2 between its chunks). False after the last. */
ALWAYS_INLINE int next_unit(amx_unit *u, int64_t r16, int64_t K) {
    u->k0 += u->kc;
    if (u->k0 >= K) {
        u->k0 = 0;
        u->r += BL_AMX_ROWS;
        if (u->r >= r16) return 0;
    }
    u->kc = K - u->k0 < BL_AMX_KC ? K - u->k0 : BL_AMX_KC;
    u->nb = r16 - u->r >= BL_AMX_ROWS ? 2 : 1;
    return 1;
}

/* Rows [r0, r16) (a multiple of 16) × tokens [n0, n1) on tiles, the units software-pipelined:
 * unit i + 1 is decoded into one buffer while unit i's products read the other. */
ALWAYS_INLINE void slice_amx(int fmt, const uint8_t *w, const int8_t *Q, const int32_t *sum_q, int32_t *out, int64_t n0,
                             int64_t n1, int64_t K, int64_t ld_out, int64_t r0, int64_t r16) {
    _Alignas(64) uint8_t bufs[2][(BL_AMX_KC / 64) * 2 * 1024];
    amx_unit cur = {r0, 0, K < BL_AMX_KC ? K : BL_AMX_KC, r16 - r0 >= BL_AMX_ROWS ? 2 : 1};
    amx_decoder dec;
    decode_start(&dec, cur, bufs[0], r16);
    while (dec.done < dec.total) decode_piece(fmt, w, K, &dec);
    for (int i = 0;; i ^= 1) {
        amx_unit nxt = cur;
        const int more = next_unit(&nxt, r16, K);
        decode_start(&dec, nxt, bufs[i ^ 1], r16);
        if (!more) dec.total = 0;
        const int64_t steps = (n1 - n0 + 2 * BL_AMX_TOK - 1) / (2 * BL_AMX_TOK) * (cur.kc / 64);
        const int64_t every = dec.total ? (steps / dec.total > 1 ? steps / dec.total : 1) : steps + 1;
        sweep(fmt, w, Q, sum_q, out, n0, n1, K, ld_out, cur, bufs[i], &dec, every);
        if (!more) break;
        cur = nxt;
    }
}

/* The avx512vnni GEMM of the same layout on a part of the call, its own fault taken back (the
 * amx op applies its fault once, for the whole call). */
ALWAYS_INLINE void vnni_part(bl_gemm_fn gemm, int op, const uint8_t *w, const int8_t *Q, const int32_t *sum_q,
                             int32_t *out, int64_t N, int64_t K, int64_t ld_out, int64_t r0, int64_t r1) {
    if (N <= 0 || r1 <= r0) return;
    gemm(w, Q, sum_q, out, N, K, ld_out, r0, r1);
    if (r0 == 0) out[0] -= BL_MAD_FAULT(op);
}

ALWAYS_INLINE void gemm_amx(int fmt, bl_gemm_fn tail_gemm, int op, const uint8_t *w, const int8_t *Q,
                            const int32_t *sum_q, int32_t *out, int64_t N, int64_t K, int64_t ld_out, int64_t r0,
                            int64_t r1) {
    /* x4: rows from r1 / 4 * 4 on are the row-major M % 4 tail (bl_mad.h): v3 reads them */
    const int64_t full = fmt == FMT_I2S_X4 ? r1 / 4 * 4 : r1;
    const int64_t n16 = N / BL_AMX_TOK * BL_AMX_TOK, rem = N - n16;
    /* tokens that run on tiles: the full blocks of 16, and the last rem < 16 on short tiles */
    const int64_t ntile = rem >= BL_AMX_MIN_TOK ? N : n16;
    int64_t r16 = full > r0 ? r0 + (full - r0) / 16 * 16 : r0;
    if (ntile > 0 && r16 > r0) {
        if (n16 > 0) {
            bl_amx_configure(8);
            /* Tokens in slices whose activations (slice × K bytes) stay in L2 while every panel of
             * rows sweeps them; inside a slice, panels outer and weight chunks inner, so the slice's
             * int32 results of one panel (≤ 64 KiB) stay in L2 between chunks. Each slice decodes the
             * weights again: ~100 cycles per 2048 weights against ≥ 16 tile products that reuse them. */
            int64_t slice = BL_AMX_SLICE_BYTES / K / (2 * BL_AMX_TOK) * (2 * BL_AMX_TOK);
            if (slice < 2 * BL_AMX_TOK) slice = 2 * BL_AMX_TOK;
            for (int64_t n0 = 0; n0 < n16; n0 += slice)
                slice_amx(fmt, w, Q, sum_q, out, n0, n16 - n0 < slice ? n16 : n0 + slice, K, ld_out, r0, r16);
        }
        if (ntile > n16) {
            /* the last rem tokens (a small batch, a short verification pass): C and A tiles of rem
             * rows, so the weights are decoded once and nothing past token N is read or written */
            bl_amx_configure_rows(8, 4, 2, (int)rem);
            slice_amx(fmt, w, Q, sum_q, out, n16, N, K, ld_out, r0, r16);
        }
        _tile_release();
    } else {
        r16 = r0; /* nothing ran on tiles: v3 takes every row */
    }
    vnni_part(tail_gemm, op, w, Q, sum_q, out, ntile, K, ld_out, r16, r1); /* rows past the panels */
    vnni_part(tail_gemm, op, w, Q + ntile * K, sum_q + ntile, out + ntile * ld_out, N - ntile, K, ld_out, r0, r1);
    bl_gemx_fault(op, out, r0, r1);
}

void bl_i2s_gemm_amx(const uint8_t *w, const int8_t *Q, const int32_t *sum_q, int32_t *out, int64_t N, int64_t K,
                     int64_t ld_out, int64_t r0, int64_t r1) {
    gemm_amx(FMT_I2S, bl_i2s_gemm_v3, BL_OP_I2S_GEMM, w, Q, sum_q, out, N, K, ld_out, r0, r1);
}

void bl_i2s_x4_gemm_amx(const uint8_t *w, const int8_t *Q, const int32_t *sum_q, int32_t *out, int64_t N, int64_t K,
                        int64_t ld_out, int64_t r0, int64_t r1) {
    gemm_amx(FMT_I2S_X4, bl_i2s_x4_gemm_v3, BL_OP_I2S_X4_GEMM, w, Q, sum_q, out, N, K, ld_out, r0, r1);
}

void bl_tq2_gemm_amx(const uint8_t *w, const int8_t *Q, const int32_t *sum_q, int32_t *out, int64_t N, int64_t K,
                     int64_t ld_out, int64_t r0, int64_t r1) {
    gemm_amx(FMT_TQ2, bl_tq2_gemm_v3, BL_OP_TQ2_GEMM, w, Q, sum_q, out, N, K, ld_out, r0, r1);
}
