/* bl_kernels.h — the C side of bitnet_lab's native kernels.
 *
 * One implementation per ISA level, all with the same signature, collected in a dispatch
 * table that bl_dispatch_init() fills at import from the CPU's features (bl_dispatch.c).
 * Each per-ISA file is compiled with its own flags by setup.py; nothing here is compiled
 * with -march=native.
 *
 * I2_S layout as the kernels see it (docs/formats.md#31-i2_s-type-36, docs/kernels.md#2-i2_s-mad-kernels):
 * the packed tensor is a run of 32-byte blocks over the flattened (M, K) tensor, 128 weights per block.
 * Element j (0..127) of a block sits in byte j % 32 at bit shift 6 - 2*(j / 32) (MSB-first planes),
 * with code c = t + 1 in {0, 1, 2}; code 3 is invalid. With K % 128 == 0 a block never
 * straddles two rows, so the kernels work on a flat run of blocks and know nothing of rows:
 * the Cython wrapper hands each thread a run of whole rows.
 */
#ifndef BL_KERNELS_H
#define BL_KERNELS_H

#include <stdint.h>

#include "bl_lut.h" /* TL1 / TL2 LUT kernels: types of the tl* fields below */

#ifdef __cplusplus
extern "C" {
#endif

/* Weights per I2_S block and bytes per block (canonical x86 layout, QK_I2_S = 128). */
#define BL_I2S_BLOCK 128
#define BL_I2S_BLOCK_BYTES 32

/* ISA levels. The numeric order is the order of bitnet_lab.kernels.ISA_ORDER. */
typedef enum {
    BL_ISA_SCALAR = 0,       /* portable C, no SIMD flags                                  */
    BL_ISA_AVX2 = 1,         /* x86-64: AVX2 + FMA                                         */
    BL_ISA_AVXVNNI = 2,      /* x86-64: AVX2 + AVX-VNNI (MAD kernels; codec is AVX2's)     */
    BL_ISA_AVX512VNNI = 3,   /* x86-64: AVX-512 F/BW/VL + VNNI                             */
    BL_ISA_AMX = 4,          /* x86-64: avx512vnni + AMX-TILE/AMX-INT8, OS-enabled (GEMMs) */
    BL_ISA_NEON = 5,         /* aarch64: Advanced SIMD (always present)                    */
    BL_ISA_NEON_DOTPROD = 6, /* aarch64: NEON + SDOT/UDOT (ASIMDDP)                        */
    BL_ISA_COUNT = 7
} bl_isa;

/* What a codec kernel reports about its input.
 * n_bad: number of invalid elements (code 3 when unpacking, a value outside {-1, 0, 1}
 *        when packing); first_bad: flat element index of the first one, relative to the
 *        start of the run the kernel was given, or -1 when n_bad == 0.
 * When n_bad > 0 the output of the run is unspecified (the wrapper raises). */
typedef struct {
    int64_t n_bad;
    int64_t first_bad;
} bl_status;

/* unpack: packed (32 * n_blocks bytes) -> out (128 * n_blocks int8 in {-1, 0, 1}). */
typedef bl_status (*bl_unpack_i2_s_fn)(const uint8_t *packed, int8_t *out, int64_t n_blocks);
/* pack: t (128 * n_blocks int8 in {-1, 0, 1}) -> packed (32 * n_blocks bytes). */
typedef bl_status (*bl_pack_i2_s_fn)(const int8_t *t, uint8_t *packed, int64_t n_blocks);

/* The MAD family's kernels of one level (quantize_act, I2_S/TQ2_0/TQ1_0 GEMV and GEMM):
 * defined and documented in bl_mad.h. */
struct bl_mad_kernels;

/* One row of the dispatch table: the kernels of one ISA level. */
typedef struct {
    const char *name;
    bl_unpack_i2_s_fn unpack_i2_s;
    bl_pack_i2_s_fn pack_i2_s;
    const struct bl_mad_kernels *mad; /* bl_mad.h; never NULL for a built level */
    /* LUT family (bl_lut.h). x86 levels above avx2 use the AVX2 LUT kernels, neon_dotprod
     * uses NEON's; set for every built level. */
    bl_tl1_build_lut_fn tl1_build_lut;
    bl_tl2_build_lut_fn tl2_build_lut;
    bl_tl1_gemv_fn tl1_gemv;
    bl_tl2_gemv_fn tl2_gemv;
    /* TL prefill GEMMs (bl_lut.h): the amx level's tile GEMMs; NULL elsewhere (the engine then
     * runs the GEMV once per token). */
    bl_tl1_gemm_fn tl1_gemm;
    bl_tl2_gemm_fn tl2_gemm;
} bl_isa_kernels;

/* ---- per-ISA implementations (each defined only in its own file) ---------------------- */
bl_status bl_unpack_i2_s_scalar(const uint8_t *packed, int8_t *out, int64_t n_blocks);
bl_status bl_pack_i2_s_scalar(const int8_t *t, uint8_t *packed, int64_t n_blocks);
bl_status bl_unpack_i2_s_avx2(const uint8_t *packed, int8_t *out, int64_t n_blocks);
bl_status bl_pack_i2_s_avx2(const int8_t *t, uint8_t *packed, int64_t n_blocks);
bl_status bl_unpack_i2_s_avx512vnni(const uint8_t *packed, int8_t *out, int64_t n_blocks);
bl_status bl_pack_i2_s_avx512vnni(const int8_t *t, uint8_t *packed, int64_t n_blocks);
bl_status bl_unpack_i2_s_neon(const uint8_t *packed, int8_t *out, int64_t n_blocks);
bl_status bl_pack_i2_s_neon(const int8_t *t, uint8_t *packed, int64_t n_blocks);

/* Slow, exact scans the SIMD kernels call only after their cheap "anything bad?" test
 * fired (pack_scalar.c). They return the count and the first index of the bad elements. */
bl_status bl_i2_s_scan_codes(const uint8_t *packed, int64_t n_blocks);
bl_status bl_ternary_scan(const int8_t *t, int64_t n);

/* ---- dispatch (bl_dispatch.c) ---------------------------------------------------------- */
/* Reads the CPU features and fills the table. Idempotent; call once at import. */
void bl_dispatch_init(void);
/* Name of an ISA level ("scalar", "avx2", ...), or NULL for an out-of-range index. */
const char *bl_isa_name(int isa);
/* 1 when this build contains kernels for the level, else 0. */
int bl_isa_built(int isa);
/* 1 when the CPU has every feature the level's compile flags allow, else 0. */
int bl_isa_supported(int isa);
/* The level's kernels when built AND supported, else NULL. */
const bl_isa_kernels *bl_isa_table(int isa);
/* CPU features as name / value pairs: value 1 or 0, or -1 when this compiler cannot test
 * the feature. Index runs 0 .. bl_cpu_feature_count() - 1. */
int bl_cpu_feature_count(void);
const char *bl_cpu_feature_name(int i);
int bl_cpu_feature_value(int i);
/* The target architecture this file was compiled for ("x86_64", "aarch64" or "other"). */
const char *bl_target_arch(void);
/* The compiler's own version string (__VERSION__). */
const char *bl_compiler_version(void);

#ifdef __cplusplus
}
#endif

#endif /* BL_KERNELS_H */
