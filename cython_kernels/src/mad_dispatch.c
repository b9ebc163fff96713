/* mad_dispatch.c — the MAD family's registry: every numbered version of every op, the default
 * version of each op per ISA level, and the fault-injection switch.
 *
 * Compiled without ISA flags, with the same BL_BUILD_<LEVEL> macros as bl_dispatch.c (setup.py
 * defines them for the extension's own sources), so a version is listed exactly when its
 * per-ISA object file is linked in. Whether the CPU can run it is bl_isa_supported(v->isa).
 *
 * Version names: v0 scalar, v1 AVX2 (maddubs, int16 ≤ 16 blocks), v1w1 AVX2 widening every
 * block, v2 AVX-512 VNNI, v3 AVX-512 VNNI without shifts (I2_S and TQ2_0 GEMV), avxvnni (256-bit VEX
 * dpbusd), v4 AVX-512 VNNI with the activations joined once per call (GEMV), v3 AVX-512 VNNI
 * whole-row panels with 4 x 6 tiles (GEMM), amx (AMX-INT8 tile GEMMs), neon, neon_dotprod. TQ1_0's
 * v3/v4 GEMV are the base-3 linear form (mad_avx512vnni.c), its v4 GEMM v3 with a 512-bit decode. The descriptions repeat the file headers in one line;
 * kernel_versions() in Python shows them. Defaults per level: bl_mad_defaults below.
 */
#include <stddef.h>

#include "bl_mad.h"
#include "bl_lut.h" /* the LUT kernels' fault bits follow the MAD ops in the same mask */

_Static_assert((int)BL_FAULT_TL1_BUILD_LUT == (int)BL_OP_COUNT, "LUT fault bits must follow the MAD ops");
_Static_assert(BL_FAULT_COUNT <= 31, "one int mask");

volatile int bl_mad_fault_mask = 0;

void bl_mad_set_fault(int mask) { bl_mad_fault_mask = mask; }
int bl_mad_get_fault(void) { return bl_mad_fault_mask; }

static const char *const op_names[BL_OP_COUNT] = {
    "quantize_act", "i2s_gemv", "i2s_gemm", "tq2_gemv", "tq1_gemv", "tq2_gemm", "tq1_gemm", "i2s_x4_gemv", "i2s_x4_gemm",
    "i2s_bgemv", "i2s_bgemm", "tq2_bgemv", "tq2_bgemm", "tq1_bgemv", "tq1_bgemm", "tq1_x16_gemv", "tq1_x16_gemm",
};

/* The x4 layout's kernels at levels without a native one: the level's I2_S kernel on one group
 * of 4 rows at a time, re-ordered on the stack (mad_x4.c). */
#define X4_VIA(sfx, gemv_fn, gemm_fn)                                                                            \
    static void x4_gemv_##sfx(const uint8_t *w, const int8_t *q, int32_t s, int32_t *o, int64_t K, int64_t r0,   \
                              int64_t r1) {                                                                      \
        bl_i2s_x4_gemv_via(gemv_fn, w, q, s, o, K, r0, r1);                                                      \
    }                                                                                                            \
    static void x4_gemm_##sfx(const uint8_t *w, const int8_t *Q, const int32_t *s, int32_t *o, int64_t N,       \
                              int64_t K, int64_t ld, int64_t r0, int64_t r1) {                                   \
        bl_i2s_x4_gemm_via(gemm_fn, w, Q, s, o, N, K, ld, r0, r1);                                               \
    }
X4_VIA(v0, bl_i2s_gemv_v0, bl_i2s_gemm_v0)
#if defined(BL_BUILD_AVX2)
X4_VIA(v1, bl_i2s_gemv_v1, bl_i2s_gemm_v1)
#endif
#if defined(BL_BUILD_AVXVNNI)
X4_VIA(avxvnni, bl_i2s_gemv_avxvnni, bl_i2s_gemm_avxvnni)
#endif
#if defined(BL_BUILD_AVX512VNNI)
X4_VIA(v3, bl_i2s_gemv_v3, bl_i2s_gemm_v3)
#endif
#if defined(BL_BUILD_NEON)
X4_VIA(neon, bl_i2s_gemv_neon, bl_i2s_gemm_neon)
#endif
#if defined(BL_BUILD_NEON_DOTPROD)
X4_VIA(neon_dotprod, bl_i2s_gemv_neon_dotprod, bl_i2s_gemm_neon_dotprod)
#endif

/* The TQ1_0 x16 layout's kernels through a level's TQ1_0 kernels on rows re-ordered on the stack
 * (mad_x16.c; the GEMMs with the level's copy-back): every level's GEMM, and the GEMV where the
 * level has no native x16 one. */
#define X16_VIA(sfx, rows_fn, gemv_fn, gemm_fn)                                                                 \
    static void x16_gemv_##sfx(const uint8_t *w, const int8_t *q, int32_t s, int32_t *o, int64_t K, int64_t r0, \
                               int64_t r1) {                                                                     \
        bl_tq1_x16_gemv_via(gemv_fn, w, q, s, o, K, r0, r1);                                                    \
    }                                                                                                           \
    static void x16_gemm_##sfx(const uint8_t *w, const int8_t *Q, const int32_t *s, int32_t *o, int64_t N,      \
                               int64_t K, int64_t ld, int64_t r0, int64_t r1) {                                  \
        bl_tq1_x16_gemm_via(rows_fn, gemm_fn, w, Q, s, o, N, K, ld, r0, r1);                                    \
    }
X16_VIA(v0, bl_tq1_x16_rows, bl_tq1_gemv_v0, bl_tq1_gemm_v0)
#if defined(BL_BUILD_AVX2)
X16_VIA(v1, bl_tq1_x16_rows, bl_tq1_gemv_v1, bl_tq1_gemm_v1)
#endif
#if defined(BL_BUILD_AVX512VNNI)
X16_VIA(v3, bl_tq1_x16_rows_v3, bl_tq1_gemv_v4, bl_tq1_gemm_v3)
#endif

#if defined(BL_BUILD_AMX) && defined(BL_BUILD_AVX512VNNI)
/* Bytes of TQ2_0 rows the amx TQ1_0 GEMM converts at a time (stack): 32 rows up to K = 7936, 16 up
 * to K = 15872. */
#define TQ1_AMX_BUF 65536

/* amx for TQ1_0: the AMX tile GEMM reads 2-bit codes, so panels of 32 (or 16) rows are turned into
 * TQ2_0 rows on the stack (bl_tq1_to_tq2_rows: the same codes; the weights stay 1.69-bit in memory)
 * and multiplied by bl_tq2_gemm_amx, whose own fault is taken back. N < 16 (nothing for a tile) and
 * rows too long for 16 of them to fit the buffer run the avx512vnni level's GEMM (v3). */
static void tq1_gemm_amx(const uint8_t *w, const int8_t *Q, const int32_t *sum_q, int32_t *out, int64_t N, int64_t K,
                         int64_t ld_out, int64_t r0, int64_t r1) {
    const int64_t rb2 = (K / BL_TQ_BLOCK) * BL_TQ2_BLOCK_BYTES;
    int64_t rows = rb2 > 0 ? TQ1_AMX_BUF / rb2 : 0;
    rows = rows >= 32 ? 32 : rows / 16 * 16;
    if (N < 16 || rows == 0) {
        bl_tq1_gemm_v3(w, Q, sum_q, out, N, K, ld_out, r0, r1);
        return;
    }
    _Alignas(64) uint8_t buf[TQ1_AMX_BUF];
    for (int64_t r = r0; r < r1; r += rows) {
        const int64_t n = r1 - r < rows ? r1 - r : rows;
        bl_tq1_to_tq2_rows(w, buf, K, r, r + n);
        bl_tq2_gemm_amx(buf, Q, sum_q, out + r, N, K, ld_out, 0, n);
        out[r] -= BL_MAD_FAULT(BL_OP_TQ2_GEMM);
    }
    if (r0 == 0 && r1 > r0 && BL_MAD_FAULT(BL_OP_TQ1_GEMM)) out[0] += 1;
}

static void x16_gemm_amx(const uint8_t *w, const int8_t *Q, const int32_t *s, int32_t *o, int64_t N, int64_t K,
                         int64_t ld, int64_t r0, int64_t r1) {
    bl_tq1_x16_gemm_via(bl_tq1_x16_rows_v3, tq1_gemm_amx, w, Q, s, o, N, K, ld, r0, r1);
}
#endif

const char *bl_mad_op_name(int op) { return (op >= 0 && op < BL_OP_COUNT) ? op_names[op] : NULL; }

#define ACT(n, isa, d, f) {n, BL_OP_QUANTIZE_ACT, isa, d, {.act = f}}
#define GEMV(op, n, isa, d, f) {n, op, isa, d, {.gemv = f}}
#define GEMM(op, n, isa, d, f) {n, op, isa, d, {.gemm = f}}
#define BGEMV(op, n, isa, d, f) {n, op, isa, d, {.bgemv = f}}
#define BGEMM(op, n, isa, d, f) {n, op, isa, d, {.bgemm = f}}
/* the six per-block ops of one version (bl_mad.h "per-block products") */
#define BLOCK_VERSIONS(n, isa, d, sfx)                                                                  \
    BGEMV(BL_OP_I2S_BGEMV, n, isa, d, bl_i2s_bgemv_##sfx), BGEMM(BL_OP_I2S_BGEMM, n, isa, d, bl_i2s_bgemm_##sfx), \
    BGEMV(BL_OP_TQ2_BGEMV, n, isa, d, bl_tq2_bgemv_##sfx), BGEMM(BL_OP_TQ2_BGEMM, n, isa, d, bl_tq2_bgemm_##sfx), \
    BGEMV(BL_OP_TQ1_BGEMV, n, isa, d, bl_tq1_bgemv_##sfx), BGEMM(BL_OP_TQ1_BGEMM, n, isa, d, bl_tq1_bgemm_##sfx)

static const bl_mad_version versions[] = {
    /* ---- portable C ---- */
    ACT("v0", BL_ISA_SCALAR, "scalar: integer absmax, truncate + exact remainder rounding", bl_quantize_act_scalar),
    GEMV(BL_OP_I2S_GEMV, "v0", BL_ISA_SCALAR, "scalar: decode codes, int32 dot, minus sum_q", bl_i2s_gemv_v0),
    GEMM(BL_OP_I2S_GEMM, "v0", BL_ISA_SCALAR, "scalar: decode a 2048-weight chunk once, dot per token", bl_i2s_gemm_v0),
    GEMV(BL_OP_TQ2_GEMV, "v0", BL_ISA_SCALAR, "scalar: decode TQ2_0 codes, int32 dot", bl_tq2_gemv_v0),
    GEMV(BL_OP_TQ1_GEMV, "v0", BL_ISA_SCALAR, "scalar: decode TQ1_0 trits, int32 dot", bl_tq1_gemv_v0),
    GEMM(BL_OP_TQ2_GEMM, "v0", BL_ISA_SCALAR, "scalar: decode chunk once, dot per token", bl_tq2_gemm_v0),
    GEMM(BL_OP_TQ1_GEMM, "v0", BL_ISA_SCALAR, "scalar: decode chunk once, dot per token", bl_tq1_gemm_v0),
    GEMV(BL_OP_I2S_X4_GEMV, "v0", BL_ISA_SCALAR, "scalar I2_S v0 on each group re-ordered to row-major", x4_gemv_v0),
    GEMM(BL_OP_I2S_X4_GEMM, "v0", BL_ISA_SCALAR, "scalar I2_S v0 on each group re-ordered to row-major", x4_gemm_v0),
    BLOCK_VERSIONS("v0", BL_ISA_SCALAR, "scalar: decode a chunk, one int32 dot per 256-weight block", v0),
    GEMV(BL_OP_TQ1_X16_GEMV, "v0", BL_ISA_SCALAR, "scalar TQ1_0 v0 on each group re-ordered to TQ1_0 rows", x16_gemv_v0),
    GEMM(BL_OP_TQ1_X16_GEMM, "v0", BL_ISA_SCALAR, "scalar TQ1_0 v0 on 32 rows at a time re-ordered to TQ1_0 rows", x16_gemm_v0),
#if defined(BL_BUILD_AVX2)
    ACT("v1", BL_ISA_AVX2, "AVX2: 8 floats/step, integer max, round_ps + cvtt", bl_quantize_act_avx2),
    GEMV(BL_OP_I2S_GEMV, "v1", BL_ISA_AVX2, "AVX2 maddubs, 4 rows/step, int16 acc widened every 16 blocks", bl_i2s_gemv_v1),
    GEMV(BL_OP_I2S_GEMV, "v1w1", BL_ISA_AVX2, "AVX2 maddubs, 4 rows/step, widened to int32 every block", bl_i2s_gemv_v1w1),
    GEMM(BL_OP_I2S_GEMM, "v1", BL_ISA_AVX2, "AVX2 maddubs, 2 rows x 4 tokens tile, int16 acc per 2048-weight chunk", bl_i2s_gemm_v1),
    GEMV(BL_OP_TQ2_GEMV, "v1", BL_ISA_AVX2, "AVX2 maddubs over both 128-halves, int16 acc per 8 blocks", bl_tq2_gemv_v1),
    GEMV(BL_OP_TQ1_GEMV, "v1", BL_ISA_AVX2, "AVX2 base-3 decode by byte adds + compares, maddubs", bl_tq1_gemv_v1),
    GEMM(BL_OP_TQ2_GEMM, "v1", BL_ISA_AVX2, "AVX2 decode chunk once, 2x4 maddubs tile", bl_tq2_gemm_v1),
    GEMM(BL_OP_TQ1_GEMM, "v1", BL_ISA_AVX2, "AVX2 decode chunk once, 2x4 maddubs tile", bl_tq1_gemm_v1),
    GEMV(BL_OP_I2S_X4_GEMV, "v1", BL_ISA_AVX2, "AVX2 I2_S v1 on each group re-ordered to row-major", x4_gemv_v1),
    GEMV(BL_OP_I2S_X4_GEMV, "v1x", BL_ISA_AVX2, "AVX2 I2_S v1 on the x4 layout in place: one sequential stream", bl_i2s_x4_gemv_v1x),
    GEMM(BL_OP_I2S_X4_GEMM, "v1", BL_ISA_AVX2, "AVX2 I2_S v1 on each group re-ordered to row-major", x4_gemm_v1),
    BLOCK_VERSIONS("v1", BL_ISA_AVX2, "AVX2: GEMM v1's decoded panels, the 2x4 maddubs tile once per 256-weight block", v1),
    GEMV(BL_OP_TQ1_X16_GEMV, "v1", BL_ISA_AVX2, "AVX2 TQ1_0 v1 on each group re-ordered to TQ1_0 rows", x16_gemv_v1),
    GEMM(BL_OP_TQ1_X16_GEMM, "v1", BL_ISA_AVX2, "AVX2 TQ1_0 v1 on 32 rows at a time re-ordered to TQ1_0 rows", x16_gemm_v1),
#endif
#if defined(BL_BUILD_AVXVNNI)
    GEMV(BL_OP_I2S_GEMV, "avxvnni", BL_ISA_AVXVNNI, "AVX-VNNI 256-bit dpbusd straight into int32, 4 rows/step", bl_i2s_gemv_avxvnni),
    GEMM(BL_OP_I2S_GEMM, "avxvnni", BL_ISA_AVXVNNI, "AVX-VNNI decode chunk once, 2x4 dpbusd tile", bl_i2s_gemm_avxvnni),
    GEMV(BL_OP_I2S_X4_GEMV, "avxvnni", BL_ISA_AVXVNNI, "AVX-VNNI I2_S on each group re-ordered to row-major", x4_gemv_avxvnni),
    GEMM(BL_OP_I2S_X4_GEMM, "avxvnni", BL_ISA_AVXVNNI, "AVX-VNNI I2_S on each group re-ordered to row-major", x4_gemm_avxvnni),
#endif
#if defined(BL_BUILD_AVX512VNNI)
    ACT("v2", BL_ISA_AVX512VNNI, "AVX-512: 16 floats/step, embedded-rounding convert, masked tail", bl_quantize_act_avx512),
    GEMV(BL_OP_I2S_GEMV, "v2", BL_ISA_AVX512VNNI, "AVX-512 VNNI dpbusd, 2 blocks = 64 B/step, 4 rows share activations", bl_i2s_gemv_v2),
    GEMV(BL_OP_I2S_GEMV, "v3", BL_ISA_AVX512VNNI, "v2 without shifts: planes masked in place (4^k·c), rescaled once; L2 prefetch, 4-row reduction", bl_i2s_gemv_v3),
    GEMV(BL_OP_I2S_GEMV, "v4", BL_ISA_AVX512VNNI, "v3 with activations joined once per call (1 load/plane); faster in L2, slower from DRAM", bl_i2s_gemv_v4),
    GEMM(BL_OP_I2S_GEMM, "v2", BL_ISA_AVX512VNNI, "AVX-512 VNNI decode chunk once, 2 rows x 4 tokens dpbusd tile", bl_i2s_gemm_v2),
    GEMM(BL_OP_I2S_GEMM, "v3", BL_ISA_AVX512VNNI, "AVX-512 VNNI 4-row panels over the whole row, 4 rows x 6 tokens tile reduced once", bl_i2s_gemm_v3),
    GEMV(BL_OP_TQ2_GEMV, "v2", BL_ISA_AVX512VNNI, "AVX-512 VNNI: one 64-byte TQ2_0 block/step, 4 rows", bl_tq2_gemv_v2),
    GEMV(BL_OP_TQ2_GEMV, "v3", BL_ISA_AVX512VNNI, "v2 without shifts: planes masked in place (4^j·c), rescaled once; L2 prefetch, 4-row reduction", bl_tq2_gemv_v3),
    GEMV(BL_OP_TQ2_GEMV, "v4", BL_ISA_AVX512VNNI, "v3 with activations joined once per call (1 load/plane); faster in L2, slower from DRAM", bl_tq2_gemv_v4),
    GEMV(BL_OP_TQ1_GEMV, "v2", BL_ISA_AVX512VNNI, "AVX-512 VNNI: base-3 decode with mask compares, dpbusd", bl_tq1_gemv_v2),
    GEMV(BL_OP_TQ1_GEMV, "v3", BL_ISA_AVX512VNNI, "AVX-512 VNNI: 256·trit = 3·q_n − q_{n+1} (q_n = b·3^n mod 256) into two dpbusd sums; acts re-ordered per call; L2 prefetch", bl_tq1_gemv_v3),
    GEMV(BL_OP_TQ1_GEMV, "v4", BL_ISA_AVX512VNNI, "tq1 v3 reading each row as one stream of 64-byte vectors, acts placed at each byte's position (2 idle bytes in 54: the scales)", bl_tq1_gemv_v4),
    GEMM(BL_OP_TQ2_GEMM, "v2", BL_ISA_AVX512VNNI, "AVX-512 VNNI decode chunk once, 2x4 dpbusd tile", bl_tq2_gemm_v2),
    GEMM(BL_OP_TQ2_GEMM, "v3", BL_ISA_AVX512VNNI, "AVX-512 VNNI 4-row panels over the whole row, 4x6 tile reduced once", bl_tq2_gemm_v3),
    GEMM(BL_OP_TQ1_GEMM, "v2", BL_ISA_AVX512VNNI, "AVX-512 VNNI decode chunk once, 2x4 dpbusd tile", bl_tq1_gemm_v2),
    GEMM(BL_OP_TQ1_GEMM, "v3", BL_ISA_AVX512VNNI, "AVX-512 VNNI 4-row panels over the whole row, 4x6 tile reduced once", bl_tq1_gemm_v3),
    GEMM(BL_OP_TQ1_GEMM, "v4", BL_ISA_AVX512VNNI, "tq1 GEMM v3 with a 512-bit base-3 decode (mask compares, 64 bytes per plane)", bl_tq1_gemm_v4),
    GEMV(BL_OP_I2S_X4_GEMV, "v2", BL_ISA_AVX512VNNI, "AVX-512 I2_S v3 on each group re-ordered to row-major", x4_gemv_v3),
    GEMV(BL_OP_I2S_X4_GEMV, "v3", BL_ISA_AVX512VNNI, "I2_S v3 on the x4 layout: one sequential stream, no prefetch", bl_i2s_x4_gemv_v3),
    GEMM(BL_OP_I2S_X4_GEMM, "v2", BL_ISA_AVX512VNNI, "AVX-512 I2_S GEMM v3 on each group re-ordered to row-major", x4_gemm_v3),
    GEMM(BL_OP_I2S_X4_GEMM, "v3", BL_ISA_AVX512VNNI, "I2_S GEMM v3 decoding straight from the x4 layout", bl_i2s_x4_gemm_v3),
    BLOCK_VERSIONS("v2", BL_ISA_AVX512VNNI, "AVX-512 VNNI: GEMM v2's decoded panels, the 4x4 dpbusd tile once per 256-weight block", v2),
    GEMV(BL_OP_TQ1_X16_GEMV, "v2", BL_ISA_AVX512VNNI, "AVX-512 TQ1_0 v4 on each group re-ordered to TQ1_0 rows", x16_gemv_v3),
    GEMV(BL_OP_TQ1_X16_GEMV, "v3", BL_ISA_AVX512VNNI, "tq1 v3 arithmetic on the x16 layout: one sequential stream, a row per int32 lane, L1 prefetch", bl_tq1_x16_gemv_v3),
    GEMM(BL_OP_TQ1_X16_GEMM, "v3", BL_ISA_AVX512VNNI, "AVX-512 TQ1_0 GEMM v3 on 32 rows at a time re-ordered to TQ1_0 rows", x16_gemm_v3),
#endif
#if defined(BL_BUILD_AMX) && defined(BL_BUILD_AVX512VNNI)
    GEMM(BL_OP_I2S_GEMM, "amx", BL_ISA_AMX, "AMX tdpbsud: 32-row panels transposed packed, 2x2 tiles of 16 tokens x 16 rows; tails v3", bl_i2s_gemm_amx),
    GEMM(BL_OP_TQ1_GEMM, "amx", BL_ISA_AMX, "AMX: 32-row panels of TQ1_0 turned into TQ2_0 rows on the stack, TQ2_0 amx on them; N < 16 GEMM v3", tq1_gemm_amx),
    GEMM(BL_OP_TQ2_GEMM, "amx", BL_ISA_AMX, "AMX tdpbsud on TQ2_0 (LSB-first planes), as I2_S amx; tails v3", bl_tq2_gemm_amx),
    GEMM(BL_OP_I2S_X4_GEMM, "amx", BL_ISA_AMX, "AMX tdpbsud decoding straight from the x4 layout; tails v3", bl_i2s_x4_gemm_amx),
    GEMM(BL_OP_TQ1_X16_GEMM, "amx", BL_ISA_AMX, "TQ1_0 amx on 32 rows at a time re-ordered to TQ1_0 rows", x16_gemm_amx),
#endif
#if defined(BL_BUILD_NEON)
    ACT("neon", BL_ISA_NEON, "NEON: vcvtnq (ties even) / vcvtaq (ties away), saturating narrow", bl_quantize_act_neon),
    GEMV(BL_OP_I2S_GEMV, "neon", BL_ISA_NEON, "NEON 128/32 layout, vmull/vmlal_s8 int16 acc widened every 16 blocks", bl_i2s_gemv_neon),
    GEMM(BL_OP_I2S_GEMM, "neon", BL_ISA_NEON, "NEON GEMV per token row (no activation reuse yet)", bl_i2s_gemm_neon),
    GEMV(BL_OP_I2S_X4_GEMV, "neon", BL_ISA_NEON, "NEON I2_S on each group re-ordered to row-major", x4_gemv_neon),
    GEMM(BL_OP_I2S_X4_GEMM, "neon", BL_ISA_NEON, "NEON I2_S on each group re-ordered to row-major", x4_gemm_neon),
#endif
#if defined(BL_BUILD_NEON_DOTPROD)
    GEMV(BL_OP_I2S_GEMV, "neon_dotprod", BL_ISA_NEON_DOTPROD, "NEON SDOT (vdotq_s32) straight into int32, 128/32 layout", bl_i2s_gemv_neon_dotprod),
    GEMM(BL_OP_I2S_GEMM, "neon_dotprod", BL_ISA_NEON_DOTPROD, "NEON SDOT GEMV per token row (no activation reuse yet)", bl_i2s_gemm_neon_dotprod),
    GEMV(BL_OP_I2S_X4_GEMV, "neon_dotprod", BL_ISA_NEON_DOTPROD, "NEON SDOT I2_S on each group re-ordered to row-major", x4_gemv_neon_dotprod),
    GEMM(BL_OP_I2S_X4_GEMM, "neon_dotprod", BL_ISA_NEON_DOTPROD, "NEON SDOT I2_S on each group re-ordered to row-major", x4_gemm_neon_dotprod),
#endif
};

#define N_VERSIONS ((int)(sizeof versions / sizeof versions[0]))

int bl_mad_version_count(void) { return N_VERSIONS; }

const bl_mad_version *bl_mad_version_at(int i) { return (i >= 0 && i < N_VERSIONS) ? &versions[i] : NULL; }

/* ---- default kernels per level ---------------------------------------------------------------
 * The best version of each op the level can run; levels without their own version of an op
 * take the next level down that they include (avxvnni ⊃ avx2; amx ⊃ avx512vnni; neon_dotprod ⊃
 * neon ⊃ scalar). */

static const bl_mad_kernels scalar_defaults = {
    bl_quantize_act_scalar, bl_i2s_gemv_v0, bl_i2s_gemm_v0, bl_tq2_gemv_v0, bl_tq1_gemv_v0, bl_tq2_gemm_v0, bl_tq1_gemm_v0,
    x4_gemv_v0, x4_gemm_v0,
    bl_i2s_bgemv_v0, bl_i2s_bgemm_v0, bl_tq2_bgemv_v0, bl_tq2_bgemm_v0, bl_tq1_bgemv_v0, bl_tq1_bgemm_v0,
    x16_gemv_v0, x16_gemm_v0,
};
#if defined(BL_BUILD_AVX2)
static const bl_mad_kernels avx2_defaults = {
    bl_quantize_act_avx2, bl_i2s_gemv_v1, bl_i2s_gemm_v1, bl_tq2_gemv_v1, bl_tq1_gemv_v1, bl_tq2_gemm_v1, bl_tq1_gemm_v1,
    bl_i2s_x4_gemv_v1x, x4_gemm_v1,
    bl_i2s_bgemv_v1, bl_i2s_bgemm_v1, bl_tq2_bgemv_v1, bl_tq2_bgemm_v1, bl_tq1_bgemv_v1, bl_tq1_bgemm_v1,
    x16_gemv_v1, x16_gemm_v1,
};
#endif
#if defined(BL_BUILD_AVXVNNI) && defined(BL_BUILD_AVX2)
static const bl_mad_kernels avxvnni_defaults = {
    bl_quantize_act_avx2, bl_i2s_gemv_avxvnni, bl_i2s_gemm_avxvnni, bl_tq2_gemv_v1, bl_tq1_gemv_v1, bl_tq2_gemm_v1, bl_tq1_gemm_v1,
    x4_gemv_avxvnni, x4_gemm_avxvnni,
    bl_i2s_bgemv_v1, bl_i2s_bgemm_v1, bl_tq2_bgemv_v1, bl_tq2_bgemm_v1, bl_tq1_bgemv_v1, bl_tq1_bgemm_v1,
    x16_gemv_v1, x16_gemm_v1,
};
#endif
#if defined(BL_BUILD_AVX512VNNI)
static const bl_mad_kernels avx512vnni_defaults = {
    bl_quantize_act_avx512, bl_i2s_gemv_v3, bl_i2s_gemm_v3, bl_tq2_gemv_v3, bl_tq1_gemv_v4, bl_tq2_gemm_v3, bl_tq1_gemm_v3,
    bl_i2s_x4_gemv_v3, bl_i2s_x4_gemm_v3,
    bl_i2s_bgemv_v2, bl_i2s_bgemm_v2, bl_tq2_bgemv_v2, bl_tq2_bgemm_v2, bl_tq1_bgemv_v2, bl_tq1_bgemm_v2,
    bl_tq1_x16_gemv_v3, x16_gemm_v3,
};
#endif
#if defined(BL_BUILD_AMX) && defined(BL_BUILD_AVX512VNNI)
/* avx512vnni's kernels with the tile GEMMs (decode has one token: nothing for a tile to reuse); TQ1_0's
 * through TQ2_0 rows converted on the stack (tq1_gemm_amx above) */
static const bl_mad_kernels amx_defaults = {
    bl_quantize_act_avx512, bl_i2s_gemv_v3, bl_i2s_gemm_amx, bl_tq2_gemv_v3, bl_tq1_gemv_v4, bl_tq2_gemm_amx, tq1_gemm_amx,
    bl_i2s_x4_gemv_v3, bl_i2s_x4_gemm_amx,
    bl_i2s_bgemv_v2, bl_i2s_bgemm_v2, bl_tq2_bgemv_v2, bl_tq2_bgemm_v2, bl_tq1_bgemv_v2, bl_tq1_bgemm_v2,
    bl_tq1_x16_gemv_v3, x16_gemm_amx,
};
#endif
#if defined(BL_BUILD_NEON)
/* TQ2_0/TQ1_0 have no NEON version yet: the NEON levels use v0 for them. */
static const bl_mad_kernels neon_defaults = {
    bl_quantize_act_neon, bl_i2s_gemv_neon, bl_i2s_gemm_neon, bl_tq2_gemv_v0, bl_tq1_gemv_v0, bl_tq2_gemm_v0, bl_tq1_gemm_v0,
    x4_gemv_neon, x4_gemm_neon,
    bl_i2s_bgemv_v0, bl_i2s_bgemm_v0, bl_tq2_bgemv_v0, bl_tq2_bgemm_v0, bl_tq1_bgemv_v0, bl_tq1_bgemm_v0,
    x16_gemv_v0, x16_gemm_v0,
};
#endif
#if defined(BL_BUILD_NEON_DOTPROD) && defined(BL_BUILD_NEON)
static const bl_mad_kernels neon_dotprod_defaults = {
    bl_quantize_act_neon, bl_i2s_gemv_neon_dotprod, bl_i2s_gemm_neon_dotprod,
    bl_tq2_gemv_v0, bl_tq1_gemv_v0, bl_tq2_gemm_v0, bl_tq1_gemm_v0, x4_gemv_neon_dotprod, x4_gemm_neon_dotprod,
    bl_i2s_bgemv_v0, bl_i2s_bgemm_v0, bl_tq2_bgemv_v0, bl_tq2_bgemm_v0, bl_tq1_bgemv_v0, bl_tq1_bgemm_v0,
    x16_gemv_v0, x16_gemm_v0,
};
#endif

const bl_mad_kernels *bl_mad_defaults(int isa) {
    switch (isa) {
    case BL_ISA_SCALAR: return &scalar_defaults;
#if defined(BL_BUILD_AVX2)
    case BL_ISA_AVX2: return &avx2_defaults;
#endif
#if defined(BL_BUILD_AVXVNNI) && defined(BL_BUILD_AVX2)
    case BL_ISA_AVXVNNI: return &avxvnni_defaults;
#endif
#if defined(BL_BUILD_AVX512VNNI)
    case BL_ISA_AVX512VNNI: return &avx512vnni_defaults;
#endif
#if defined(BL_BUILD_AMX) && defined(BL_BUILD_AVX512VNNI)
    case BL_ISA_AMX: return &amx_defaults;
#endif
#if defined(BL_BUILD_NEON)
    case BL_ISA_NEON: return &neon_defaults;
#endif
#if defined(BL_BUILD_NEON_DOTPROD) && defined(BL_BUILD_NEON)
    case BL_ISA_NEON_DOTPROD: return &neon_dotprod_defaults;
#endif
    default: return NULL;
    }
}
