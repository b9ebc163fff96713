/* bl_mad.h — the MAD (multiply-add) kernel family: activation quantisation and the ternary
 * integer products over I2_S, TQ2_0 and TQ1_0 weights (docs/kernels.md#1-two-kernel-families to
 * docs/kernels.md#2-i2_s-mad-kernels, docs/numerics.md#2-activation-quantisation to
 * docs/numerics.md#3-bitlinear-integer-product-and-epilogue).
 *
 * Callable from C without Python (the engine does): every function works on caller-owned
 * buffers, allocates nothing, takes a half-open range of weight rows [r0, r1) (or activation
 * rows) so the caller can split work across threads, and is pure integer arithmetic (quantize_act
 * aside) — results are bit-identical for every ISA, row split and thread count.
 *
 * Which implementation to call: bl_isa_table(isa)->mad (bl_kernels.h) is the default set of one
 * ISA level; bl_mad_version_*() (mad_dispatch.c) lists every numbered version of every op, for
 * notebooks and benchmarks.
 *
 * ---- Operands ------------------------------------------------------------------------------
 *  w        packed weights of the WHOLE (M, K) tensor (base pointer; the kernel indexes row r):
 *             I2_S : K/4 bytes per row, row r at w + r*K/4, K % 128 == 0 (docs/formats.md#31-i2_s-type-36)
 *             TQ2_0: K/256 blocks of 66 bytes per row,     K % 256 == 0 (docs/formats.md#34-tq2_0-type-35)
 *             TQ1_0: K/256 blocks of 54 bytes per row,     K % 256 == 0 (docs/formats.md#35-tq1_0-type-34)
 *             I2_S x4 (below): the same bytes, rows interleaved in groups of 4, K <= 65536
 *           Codes must be valid (I2_S/TQ2_0: no code 3; check at load). TQ block scales d are
 *           ignored: the result is the integer Σ t·q, exact when every non-zero d is equal.
 *  q        one int8 activation row (K,)             (GEMV)
 *  Q        N int8 activation rows, row n at Q + n*K (GEMM)
 *  sum_q    Σ_k q[k] (GEMV: a value; GEMM: N values), from quantize_act: the code-offset
 *           correction Σ t·q = Σ c·q − Σ q with codes c = t + 1 (docs/numerics.md#31-the-integer-identity)
 *  out      GEMV: int32 base of (M,), the kernel writes out[r] for r in [r0, r1)
 *           GEMM: int32 base of (N, ld_out), writes out[n*ld_out + r], n < N, r in [r0, r1)
 *  Stack    GEMMs use ≈ 19 KiB of stack (a decoded 8-row panel + a token block of partial sums;
 *           AVX-512 GEMM v3: 32 KiB of codes; amx: 34 KiB, two 16 KiB buffers of B tiles and two
 *           1 KiB C tiles of −sum_q; TQ1_0 amx: 64 KiB of TQ2_0 rows on top), GEMVs and quantize_act
 *           < 4 KiB (AVX-512 GEMV v4: 16 KiB of re-ordered activations; TQ1_0 GEMV v3: 20 KiB,
 *           v4: 17 KiB). Nothing is allocated on the heap.
 *  Result   out = Σ_k t[r,k]·q[k] exactly (int32; |value| ≤ 128·K). Internal int32 accumulators
 *           hold up to 256·K: K ≤ 2^22 (the Python wrappers check it; real models have K ≤ 65536).
 *
 * ---- The I2_S x4 layout (the engine's repack of I2_S for decode) ------------------------------
 * A GEMV over row-major I2_S reads 4 rows in lockstep: 4 interleaved streams 2.5 KB apart, which
 * one core's hardware prefetchers follow badly, even with an 8 KB software prefetch. x4 stores the
 * same bytes in the order the kernel reads them, so a GEMV is one sequential stream, faster with
 * no software prefetch (docs/benchmarks.md#decode-memory-layout-and-streaming):
 *   rb = K/4 bytes per row; group g = rows 4g..4g+3 occupies the same span [4g·rb, 4g·rb + 4·rb)
 *   as in I2_S; inside it, for s < K/256: row 4g+i's bytes [64s, 64s+64) at 256s + 64i; when
 *   K % 256 == 128, row i's last 32 bytes at 256·(K/256) + 32i. The M % 4 rows after the last
 *   full group stay row-major. Kernels over x4 take row ranges with r0 % 4 == 0 and r1 % 4 == 0
 *   or r1 == M (the engine's 32-row tiles and the Python wrappers guarantee it).
 * Native x4 kernels: GEMV v3 and GEMM v3 (AVX-512 VNNI), GEMV v1x (AVX2; several times the
 * row-major AVX2 GEMV's speed from DRAM on the 2B-4T projections). Other kernels run their
 * level's I2_S kernel on one group at a time, re-ordered into a stack buffer
 * (bl_i2s_x4_*_via): same results, one extra copy.
 *
 * ---- The TQ1_0 x16 layout (the engine's repack of TQ1_0 for decode) ---------------------------
 * TQ1_0 packs 5 trits a byte, and its GEMV does ~10 vector instructions per 64 bytes: close to
 * what a core's share of the memory delivers, so the stream must never stall. A row-major GEMV
 * reads 4 rows in lockstep (4 streams), which overlapped badly with that much arithmetic
 * (docs/kernels.md#the-tq1_0-x16-layout). x16 keeps the 1.69-bit codes and drops the per-block fp16 scales
 * (the engine requires them uniform and keeps the one value as gamma):
 *   cb = 52·K/256 code bytes per row: each block's qs[0..47] and qh[0..3], blocks in order;
 *   group g = rows 16g..16g+m−1 (m = 16, or the M − 16g rows of a last short group) occupies
 *   [16g·cb, 16g·cb + m·cb); inside it, row 16g+i's 4-byte word j (its bytes 4j..4j+3) at
 *   4m·j + 4i. A 64-byte load of a full group is one word of 16 rows: 16 int32 lanes, one row
 *   each, so a row's sum never leaves its lane, and the whole tensor is one sequential stream.
 * Kernels over x16 take row ranges with r0 % 16 == 0 and r1 % 16 == 0 or r1 == M; K ≤ BL_X16_MAX_K
 * (a group of 16 TQ1_0 rows fits the _via kernels' stack buffer). Native: GEMV v3 (AVX-512 VNNI);
 * everything else re-orders a group or two on the stack and runs the level's TQ1_0 kernel
 * (bl_tq1_x16_*_via).
 *
 * ---- Fault injection ------------------------------------------------------------------------
 * bl_mad_set_fault(1 << BL_OP_<op>) makes that op deliberately wrong, for the tests of `verify`:
 * a GEMV/GEMM adds 1 to out[0] (row 0, token 0) and quantize_act adds 1 to sum_q[0] — only in the
 * call whose range starts at 0, so the wrong value is the same for every thread split. Each
 * kernel reads the flag once per call (BL_MAD_FAULT below), never in its loops. Off by default.
 * The TL1/TL2 LUT kernels take bits BL_OP_COUNT.. of the same mask (bl_lut.h, BL_FAULT_*).
 */
#ifndef BL_MAD_H
#define BL_MAD_H

#include <stdint.h>

#include "bl_kernels.h" /* bl_status, bl_isa */

#ifdef __cplusplus
extern "C" {
#endif

/* TQ block sizes (docs/formats.md#34-tq2_0-type-35, docs/formats.md#35-tq1_0-type-34). */
#define BL_TQ_BLOCK 256
#define BL_TQ2_BLOCK_BYTES 66
#define BL_TQ1_BLOCK_BYTES 54

/* Rounding of x·s_x to an integer (docs/numerics.md#21-bitnetcpp-i2_s-path,
 * docs/numerics.md#25-rounding-modes-at-a-glance). */
enum {
    BL_ROUND_HALF_EVEN = 0, /* bitnet.cpp fork nearest_int, torch.round, numpy rint   */
    BL_ROUND_HALF_AWAY = 1  /* C roundf: later bitnet.cpp forks                          */
};

/* quantize_act: rows [r0, r1) of x (row r at x + r*K) -> q (row r at q + r*K), s_x[r], sum_q[r].
 * Per row: amax = max(max_k |x_k|, 1e-5f) (float), s_x = fl32(127 / amax) computed in double
 * then rounded once, q_k = clamp(round(fl32(x_k * s_x)), -128, 127), sum_q = Σ q_k — bit-identical
 * to bitnet_lab.quant.quantize_activations. A row with a NaN or inf gets q = 0, s_x = 0,
 * sum_q = 0 and is counted in the status (n_bad = such rows, first_bad = the first, as an absolute
 * row index). All pointers are the bases of the whole (N, K) / (N,) arrays. */
typedef bl_status (*bl_quantize_act_fn)(const float *x, int8_t *q, float *s_x, int32_t *sum_q, int64_t K,
                                        int64_t r0, int64_t r1, int rounding);

/* GEMV over weight rows [r0, r1): one activation row. */
typedef void (*bl_gemv_fn)(const uint8_t *w, const int8_t *q, int32_t sum_q, int32_t *out, int64_t K,
                           int64_t r0, int64_t r1);

/* GEMM over weight rows [r0, r1) and all N activation rows. */
typedef void (*bl_gemm_fn)(const uint8_t *w, const int8_t *Q, const int32_t *sum_q, int32_t *out,
                           int64_t N, int64_t K, int64_t ld_out, int64_t r0, int64_t r1);

/* ---- per-block products (TQ files with non-uniform block scales; Q8_K activations) ----------
 * The same exact integer products cut at every 256-weight block: out holds, per weight row r in
 * [r0, r1) and block b < nb = K/256, the int32 Σ_{k in block b} t[r,k]·q[k] (|value| ≤ 128·256),
 * for an epilogue that weighs each block by its own scale (docs/numerics.md#35-block-scaled-tq-epilogue,
 * docs/numerics.md#36-llamacpp-tq-dot-with-q8_k-activations). Formats: I2_S (row-major, K % 256 == 0:
 * a 256-block is two 128-blocks), TQ2_0, TQ1_0. No x4 version: the engine keeps projections that
 * need blocks out of the x4 layout.
 *  sum_qb   Σ_{k in block b} q[k] per block (bl_block_sums_i8): GEMV nb values, GEMM N·nb (token n
 *           at sum_qb + n·nb) — the code-offset correction of each block.
 *  out      RELATIVE to r0 (so a caller can use a small scratch per row tile):
 *           GEMV: out[(r - r0)·nb + b];  GEMM: out[n·ld_out + (r - r0)·nb + b], ld_out ≥ (r1 - r0)·nb.
 * Fault: +1 on out[0] (row 0, token 0, block 0) in the call whose range starts at row 0. */
typedef void (*bl_bgemv_fn)(const uint8_t *w, const int8_t *q, const int32_t *sum_qb, int32_t *out, int64_t K,
                            int64_t r0, int64_t r1);
typedef void (*bl_bgemm_fn)(const uint8_t *w, const int8_t *Q, const int32_t *sum_qb, int32_t *out, int64_t N,
                            int64_t K, int64_t ld_out, int64_t r0, int64_t r1);

/* The default MAD kernels of one ISA level (what bl_isa_table(isa)->mad points to). */
typedef struct bl_mad_kernels {
    bl_quantize_act_fn quantize_act;
    bl_gemv_fn i2s_gemv;
    bl_gemm_fn i2s_gemm;
    bl_gemv_fn tq2_gemv;
    bl_gemv_fn tq1_gemv;
    bl_gemm_fn tq2_gemm;
    bl_gemm_fn tq1_gemm;
    bl_gemv_fn i2s_x4_gemv; /* the I2_S x4 layout (above): native, or the level's I2_S via a copy */
    bl_gemm_fn i2s_x4_gemm;
    bl_bgemv_fn i2s_bgemv; /* per-block products (above) */
    bl_bgemm_fn i2s_bgemm;
    bl_bgemv_fn tq2_bgemv;
    bl_bgemm_fn tq2_bgemm;
    bl_bgemv_fn tq1_bgemv;
    bl_bgemm_fn tq1_bgemm;
    bl_gemv_fn tq1_x16_gemv; /* the TQ1_0 x16 layout (above): native, or the level's TQ1_0 via a copy */
    bl_gemm_fn tq1_x16_gemm;
} bl_mad_kernels;

/* ---- ops, versions, dispatch (mad_dispatch.c) ------------------------------------------- */
typedef enum {
    BL_OP_QUANTIZE_ACT = 0,
    BL_OP_I2S_GEMV = 1,
    BL_OP_I2S_GEMM = 2,
    BL_OP_TQ2_GEMV = 3,
    BL_OP_TQ1_GEMV = 4,
    BL_OP_TQ2_GEMM = 5,
    BL_OP_TQ1_GEMM = 6,
    BL_OP_I2S_X4_GEMV = 7,
    BL_OP_I2S_X4_GEMM = 8,
    BL_OP_I2S_BGEMV = 9,
    BL_OP_I2S_BGEMM = 10,
    BL_OP_TQ2_BGEMV = 11,
    BL_OP_TQ2_BGEMM = 12,
    BL_OP_TQ1_BGEMV = 13,
    BL_OP_TQ1_BGEMM = 14,
    BL_OP_TQ1_X16_GEMV = 15,
    BL_OP_TQ1_X16_GEMM = 16,
    BL_OP_COUNT = 17
} bl_mad_op;

/* One numbered implementation of one op. Exactly one member of fn is set, by op. */
typedef struct {
    const char *name;        /* "v0", "v1", "v2", "avxvnni", "neon", "neon_dotprod", ...      */
    int op;                  /* bl_mad_op                                                       */
    int isa;                 /* bl_isa level whose CPU features it needs                        */
    const char *description; /* one line                                                        */
    union {
        bl_quantize_act_fn act;
        bl_gemv_fn gemv;
        bl_gemm_fn gemm;
        bl_bgemv_fn bgemv;
        bl_bgemm_fn bgemm;
    } fn;
} bl_mad_version;

const char *bl_mad_op_name(int op);  /* "quantize_act", "i2s_gemv", ...; NULL out of range   */
int bl_mad_version_count(void);      /* every version compiled into this build               */
const bl_mad_version *bl_mad_version_at(int i);
/* The default kernels of an ISA level, or NULL when the level is not built. (Whether the CPU
 * can run it is bl_isa_supported's business.) Used by bl_dispatch_init to fill the table. */
const bl_mad_kernels *bl_mad_defaults(int isa);

/* Fault injection: a bit mask of (1 << bl_mad_op); 0 = off (the default). */
void bl_mad_set_fault(int mask);
int bl_mad_get_fault(void);
extern volatile int bl_mad_fault_mask;
#define BL_MAD_FAULT(op) ((bl_mad_fault_mask >> (op)) & 1)

/* ---- implementations (each defined in its own per-ISA file) ------------------------------- */
/* act_<isa>.c */
bl_status bl_quantize_act_scalar(const float *, int8_t *, float *, int32_t *, int64_t, int64_t, int64_t, int);
bl_status bl_quantize_act_avx2(const float *, int8_t *, float *, int32_t *, int64_t, int64_t, int64_t, int);
bl_status bl_quantize_act_avx512(const float *, int8_t *, float *, int32_t *, int64_t, int64_t, int64_t, int);
bl_status bl_quantize_act_neon(const float *, int8_t *, float *, int32_t *, int64_t, int64_t, int64_t, int);

#define BL_DECLARE_MAD(sfx)                                                                          \
    void bl_i2s_gemv_##sfx(const uint8_t *, const int8_t *, int32_t, int32_t *, int64_t, int64_t, int64_t); \
    void bl_i2s_gemm_##sfx(const uint8_t *, const int8_t *, const int32_t *, int32_t *, int64_t, int64_t,   \
                           int64_t, int64_t, int64_t);
#define BL_DECLARE_TQ(sfx)                                                                           \
    void bl_tq2_gemv_##sfx(const uint8_t *, const int8_t *, int32_t, int32_t *, int64_t, int64_t, int64_t); \
    void bl_tq1_gemv_##sfx(const uint8_t *, const int8_t *, int32_t, int32_t *, int64_t, int64_t, int64_t); \
    void bl_tq2_gemm_##sfx(const uint8_t *, const int8_t *, const int32_t *, int32_t *, int64_t, int64_t,   \
                           int64_t, int64_t, int64_t);                                                      \
    void bl_tq1_gemm_##sfx(const uint8_t *, const int8_t *, const int32_t *, int32_t *, int64_t, int64_t,   \
                           int64_t, int64_t, int64_t);

#define BL_DECLARE_BLOCKS(sfx)                                                                            \
    void bl_i2s_bgemv_##sfx(const uint8_t *, const int8_t *, const int32_t *, int32_t *, int64_t, int64_t, int64_t); \
    void bl_tq2_bgemv_##sfx(const uint8_t *, const int8_t *, const int32_t *, int32_t *, int64_t, int64_t, int64_t); \
    void bl_tq1_bgemv_##sfx(const uint8_t *, const int8_t *, const int32_t *, int32_t *, int64_t, int64_t, int64_t); \
    void bl_i2s_bgemm_##sfx(const uint8_t *, const int8_t *, const int32_t *, int32_t *, int64_t, int64_t, int64_t,  \
                            int64_t, int64_t);                                                                      \
    void bl_tq2_bgemm_##sfx(const uint8_t *, const int8_t *, const int32_t *, int32_t *, int64_t, int64_t, int64_t,  \
                            int64_t, int64_t);                                                                      \
    void bl_tq1_bgemm_##sfx(const uint8_t *, const int8_t *, const int32_t *, int32_t *, int64_t, int64_t, int64_t,  \
                            int64_t, int64_t);

BL_DECLARE_BLOCKS(v0)        /* mad_scalar.c      */
BL_DECLARE_BLOCKS(v1)        /* mad_avx2.c        */
BL_DECLARE_BLOCKS(v2)        /* mad_avx512vnni.c  */
BL_DECLARE_MAD(v0)           /* mad_scalar.c      */
BL_DECLARE_TQ(v0)            /* mad_scalar.c      */
BL_DECLARE_MAD(v1)           /* mad_avx2.c        */
/* mad_avx2.c: the v1 GEMV widening to int32 after every block (measured against v1) */
void bl_i2s_gemv_v1w1(const uint8_t *, const int8_t *, int32_t, int32_t *, int64_t, int64_t, int64_t);
BL_DECLARE_TQ(v1)            /* mad_avx2.c        */
BL_DECLARE_MAD(avxvnni)      /* mad_avxvnni.c     */
BL_DECLARE_MAD(v2)           /* mad_avx512vnni.c  */
BL_DECLARE_TQ(v2)            /* mad_avx512vnni.c  */
/* mad_avx512vnni.c: v3 = v2 without shifts (planes masked in place, rescaled at the end) */
void bl_i2s_gemv_v3(const uint8_t *, const int8_t *, int32_t, int32_t *, int64_t, int64_t, int64_t);
void bl_tq2_gemv_v3(const uint8_t *, const int8_t *, int32_t, int32_t *, int64_t, int64_t, int64_t);
/* mad_avx512vnni.c: v4 = v3 with the activations joined once per call (one load per plane) */
void bl_i2s_gemv_v4(const uint8_t *, const int8_t *, int32_t, int32_t *, int64_t, int64_t, int64_t);
void bl_tq2_gemv_v4(const uint8_t *, const int8_t *, int32_t, int32_t *, int64_t, int64_t, int64_t);
/* mad_avx512vnni.c: GEMM v3 = whole-row 4-row panels, 4 x 6 tiles reduced once per panel */
void bl_i2s_gemm_v3(const uint8_t *, const int8_t *, const int32_t *, int32_t *, int64_t, int64_t, int64_t, int64_t,
                    int64_t);
void bl_tq2_gemm_v3(const uint8_t *, const int8_t *, const int32_t *, int32_t *, int64_t, int64_t, int64_t, int64_t,
                    int64_t);
void bl_tq1_gemm_v3(const uint8_t *, const int8_t *, const int32_t *, int32_t *, int64_t, int64_t, int64_t, int64_t,
                    int64_t);
/* mad_avx512vnni.c: TQ1_0 GEMV v3 = 256·t_n = 3·q_n − q_{n+1} (q_n = b·3^n mod 256) fed to dpbusd as
 * it is, activations re-ordered once per call into the block's byte order; v4 = v3 reading each row
 * as one stream of 64-byte vectors (the level's default) */
void bl_tq1_gemv_v3(const uint8_t *, const int8_t *, int32_t, int32_t *, int64_t, int64_t, int64_t);
void bl_tq1_gemv_v4(const uint8_t *, const int8_t *, int32_t, int32_t *, int64_t, int64_t, int64_t);
/* mad_avx512vnni.c: TQ1_0 GEMM v4 = v3 with a 512-bit base-3 decode; rows [r0, r1) of TQ1_0 as TQ2_0
 * rows of the same codes (dst: (r1 − r0)·K/256·66 bytes) for the amx TQ1_0 GEMM (mad_dispatch.c) */
void bl_tq1_gemm_v4(const uint8_t *, const int8_t *, const int32_t *, int32_t *, int64_t, int64_t, int64_t, int64_t,
                    int64_t);
void bl_tq1_to_tq2_rows(const uint8_t *w, uint8_t *dst, int64_t K, int64_t r0, int64_t r1);
/* mad_amx.c: AMX-INT8 tile GEMMs (tails and N < 16 through the v3 GEMM of the same layout) */
void bl_i2s_gemm_amx(const uint8_t *, const int8_t *, const int32_t *, int32_t *, int64_t, int64_t, int64_t, int64_t,
                     int64_t);
void bl_tq2_gemm_amx(const uint8_t *, const int8_t *, const int32_t *, int32_t *, int64_t, int64_t, int64_t, int64_t,
                     int64_t);
void bl_i2s_x4_gemm_amx(const uint8_t *, const int8_t *, const int32_t *, int32_t *, int64_t, int64_t, int64_t, int64_t,
                        int64_t);
BL_DECLARE_MAD(neon)         /* mad_neon.c        */
BL_DECLARE_MAD(neon_dotprod) /* mad_neon_dotprod.c */

/* mad_avx2.c: v1 on the x4 layout in place */
void bl_i2s_x4_gemv_v1x(const uint8_t *, const int8_t *, int32_t, int32_t *, int64_t, int64_t, int64_t);
/* mad_avx512vnni.c: v3 on the x4 layout (one sequential stream, no software prefetch) */
void bl_i2s_x4_gemv_v3(const uint8_t *, const int8_t *, int32_t, int32_t *, int64_t, int64_t, int64_t);
void bl_i2s_x4_gemm_v3(const uint8_t *, const int8_t *, const int32_t *, int32_t *, int64_t, int64_t, int64_t, int64_t,
                       int64_t);

/* mad_x4.c (portable): the x4 layout. */
#define BL_X4_MAX_K 65536 /* a group of 4 rows (≤ 64 KiB) is re-ordered on the stack by the _via kernels */
/* src: M·K/4 bytes of row-major I2_S -> dst: the same bytes in x4 order (dst != src). */
void bl_i2s_x4_interleave(const uint8_t *src, uint8_t *dst, int64_t M, int64_t K);
/* The 2-bit codes of an (M, K) TQ2_0 tensor (66-byte blocks) as I2_S bytes (M·K/4): the same
 * codes, field order reversed in every byte, block scales dropped (the engine requires them
 * uniform and keeps the one value as gamma). K % 256 == 0. */
void bl_tq2_to_i2s(const uint8_t *src, uint8_t *dst, int64_t M, int64_t K);
/* Rows [r0, r1) of an x4 tensor w, row-major into dst (row r at dst + (r - r0)·K/4); r0 % 4 == 0. */
void bl_i2s_x4_rows(const uint8_t *w, uint8_t *dst, int64_t K, int64_t r0, int64_t r1);
/* x4 GEMV / GEMM through a level's row-major I2_S kernel, one group of 4 rows at a time. The
 * inner kernel's own fault (its range always starts at 0) is taken back; the x4 op's applies. */
void bl_i2s_x4_gemv_via(bl_gemv_fn gemv, const uint8_t *w, const int8_t *q, int32_t sum_q, int32_t *out, int64_t K,
                        int64_t r0, int64_t r1);
void bl_i2s_x4_gemm_via(bl_gemm_fn gemm, const uint8_t *w, const int8_t *Q, const int32_t *sum_q, int32_t *out,
                        int64_t N, int64_t K, int64_t ld_out, int64_t r0, int64_t r1);

/* mad_avx512vnni.c: TQ1_0 GEMV v3 on the x16 layout (one sequential stream, a row per lane), and
 * bl_tq1_x16_rows with one gather per block and row (for this level's x16 GEMMs) */
void bl_tq1_x16_gemv_v3(const uint8_t *, const int8_t *, int32_t, int32_t *, int64_t, int64_t, int64_t);
void bl_tq1_x16_rows_v3(const uint8_t *w, uint8_t *dst, int64_t M, int64_t K, int64_t r0, int64_t r1);

/* mad_x16.c (portable): the TQ1_0 x16 layout. */
#define BL_X16_MAX_K 16384 /* 16 TQ1_0 rows (≤ 54 KiB) are re-ordered on the stack by the _via kernels */
#define BL_X16_ROWS 16
/* Code bytes per row of the x16 layout: 52 per 256 weights. */
static inline int64_t bl_tq1_x16_row_bytes(int64_t K) { return (K / 256) * 52; }
/* src: an (M, K) TQ1_0 tensor (54-byte blocks) -> dst: its code bytes in x16 order (M·cb bytes). */
void bl_tq1_x16_interleave(const uint8_t *src, uint8_t *dst, int64_t M, int64_t K);
/* t: (M, K) int8 ternary values (row-major, each in {−1, 0, 1}) -> dst: their TQ1_0 codes in x16 order
 * (M·cb bytes): how the engine brings TL2 files into x16. */
void bl_tq1_x16_pack(const int8_t *t, uint8_t *dst, int64_t M, int64_t K);
/* Rows [r0, r1) of an x16 tensor w (M rows) as TQ1_0 rows into dst (row r at dst + (r − r0)·54·K/256;
 * the block scales written as 0, which no TQ1_0 product reads); r0 % 16 == 0. */
void bl_tq1_x16_rows(const uint8_t *w, uint8_t *dst, int64_t M, int64_t K, int64_t r0, int64_t r1);
/* x16 GEMV / GEMM through a level's TQ1_0 kernel on rows re-ordered on the stack (GEMV: a group at
 * a time; GEMM: 32 rows, whole panels for the tile GEMMs). The inner kernel's own fault (its range
 * always starts at 0) is taken back; the x16 op's applies. */
void bl_tq1_x16_gemv_via(bl_gemv_fn gemv, const uint8_t *w, const int8_t *q, int32_t sum_q, int32_t *out, int64_t K,
                         int64_t r0, int64_t r1);
typedef void (*bl_x16_rows_fn)(const uint8_t *w, uint8_t *dst, int64_t M, int64_t K, int64_t r0, int64_t r1);
void bl_tq1_x16_gemm_via(bl_x16_rows_fn rows, bl_gemm_fn gemm, const uint8_t *w, const int8_t *Q, const int32_t *sum_q,
                         int32_t *out, int64_t N, int64_t K, int64_t ld_out, int64_t r0, int64_t r1);

/* Shared scalar helper: Σ q[k] over K int8 (exact int32). */
int32_t bl_sum_i8(const int8_t *q, int64_t K);
/* sums[b] = Σ q[256b .. 256b + 255] for b < K/256 (K % 256 == 0): the sum_qb of the block kernels. */
void bl_block_sums_i8(const int8_t *q, int64_t K, int32_t *sums);

#ifdef __cplusplus
}
#endif

#endif /* BL_MAD_H */
