/* bl_dispatch.c — run-time dispatch: which ISA levels this build has and this CPU can run.
 *
 * Compiled with no ISA flags (it must run on every CPU of the target). setup.py defines
 * BL_BUILD_<LEVEL> for every per-ISA file it compiled into the extension, so a level is
 * "built" exactly when its object file is linked in.
 *
 * CPU features:
 *   x86-64  — __builtin_cpu_init() / __builtin_cpu_supports() (GCC, Clang). They also check
 *             that the OS saves the wider registers (XCR0), so a feature reported here is
 *             usable. "avxvnni" is only known to GCC >= 11 and Clang >= 13; older compilers
 *             report it as -1 (cannot tell).
 *             "amx_int8" is read by hand (amx_usable below): CPUID says AMX-TILE and AMX-INT8,
 *             XCR0 says the OS saves tile state, and on Linux (>= 5.16, where a process must
 *             ask before its first tile instruction) arch_prctl grants this process the tile
 *             data state. Elsewhere it is 0: tiles are not used.
 *   aarch64 — NEON (Advanced SIMD) is part of the architecture; dot product (SDOT/UDOT) from
 *             getauxval(AT_HWCAP) & HWCAP_ASIMDDP on Linux. Elsewhere (e.g. macOS) dotprod is
 *             reported as -1 and the neon_dotprod level stays off.
 */
#include "bl_kernels.h"
#include "bl_mad.h" /* bl_mad_defaults: the MAD kernels of each level */

#include <stddef.h>

#if (defined(__x86_64__) || defined(_M_X64)) && defined(__linux__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1UL << 20) /* Linux arch/arm64 uapi hwcap.h */
#endif
#endif

/* ---- CPU features ------------------------------------------------------------------------ */

#if defined(__x86_64__) || defined(_M_X64)
#define BL_TARGET_X86 1
enum { F_AVX2, F_FMA, F_AVX512F, F_AVX512BW, F_AVX512VL, F_AVX512VNNI, F_AVX512VBMI, F_AVXVNNI, F_AMX_INT8, F_COUNT };
static const char *const feature_names[F_COUNT] = {
    "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512vnni", "avx512vbmi", "avxvnni", "amx_int8",
};
#elif defined(__aarch64__)
#define BL_TARGET_ARM64 1
enum { F_NEON, F_DOTPROD, F_COUNT };
static const char *const feature_names[F_COUNT] = {"neon", "dotprod"};
#else
enum { F_COUNT = 0 };
static const char *const feature_names[1] = {NULL};
#endif

/* 1 / 0 / -1 (cannot tell) per feature; filled by bl_dispatch_init(). */
static int feature_values[F_COUNT > 0 ? F_COUNT : 1];

#if defined(BL_TARGET_X86)
/* AMX-INT8 usable by this process (see the header). The permission request is idempotent; it is
 * made once, at import, before any thread runs a kernel. */
static int amx_usable(void) {
#if defined(__linux__)
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    if (!((d >> 24) & 1) || !((d >> 25) & 1)) return 0; /* CPUID.7.0:EDX AMX-TILE (24), AMX-INT8 (25) */
    if (!__get_cpuid(1, &a, &b, &c, &d) || !((c >> 27) & 1)) return 0; /* OSXSAVE: xgetbv allowed */
    unsigned xcr0_lo, xcr0_hi;
    __asm__ volatile("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
    if ((xcr0_lo & (3u << 17)) != (3u << 17)) return 0; /* XTILECFG, XTILEDATA */
    /* ARCH_REQ_XCOMP_PERM (0x1023) for XFEATURE_XTILEDATA (18), arch/x86/include/uapi/asm/prctl.h */
    return syscall(SYS_arch_prctl, 0x1023, 18) == 0;
#else
    return 0;
#endif
}
#endif

static void read_cpu_features(void) {
#if defined(BL_TARGET_X86)
    __builtin_cpu_init();
    feature_values[F_AVX2] = __builtin_cpu_supports("avx2") != 0;
    feature_values[F_FMA] = __builtin_cpu_supports("fma") != 0;
    feature_values[F_AVX512F] = __builtin_cpu_supports("avx512f") != 0;
    feature_values[F_AVX512BW] = __builtin_cpu_supports("avx512bw") != 0;
    feature_values[F_AVX512VL] = __builtin_cpu_supports("avx512vl") != 0;
    feature_values[F_AVX512VNNI] = __builtin_cpu_supports("avx512vnni") != 0;
    feature_values[F_AVX512VBMI] = __builtin_cpu_supports("avx512vbmi") != 0;
#if (defined(__clang__) && __clang_major__ >= 13) || (!defined(__clang__) && defined(__GNUC__) && __GNUC__ >= 11)
    feature_values[F_AVXVNNI] = __builtin_cpu_supports("avxvnni") != 0;
#else
    feature_values[F_AVXVNNI] = -1;
#endif
    feature_values[F_AMX_INT8] = amx_usable();
#elif defined(BL_TARGET_ARM64)
    feature_values[F_NEON] = 1; /* mandatory in aarch64 */
#if defined(__linux__)
    feature_values[F_DOTPROD] = (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#else
    feature_values[F_DOTPROD] = -1;
#endif
#endif
}

static int has(int f) { return f >= 0 && f < F_COUNT && feature_values[f] == 1; }

/* ---- the table --------------------------------------------------------------------------- */

static const char *const isa_names[BL_ISA_COUNT] = {
    "scalar", "avx2", "avxvnni", "avx512vnni", "amx", "neon", "neon_dotprod",
};

/* Kernels compiled into this build, per level (NULL pointers where not built). */
static bl_isa_kernels built_table[BL_ISA_COUNT];
/* CPU can run the level (every feature its compile flags enable). */
static int supported[BL_ISA_COUNT];
static int initialised = 0;

/* Put one level's LUT kernels (bl_lut.h) into the table. */
static void set_lut(int isa, bl_tl1_build_lut_fn b1, bl_tl2_build_lut_fn b2, bl_tl1_gemv_fn g1,
                    bl_tl2_gemv_fn g2) {
    built_table[isa].tl1_build_lut = b1;
    built_table[isa].tl2_build_lut = b2;
    built_table[isa].tl1_gemv = g1;
    built_table[isa].tl2_gemv = g2;
}

void bl_dispatch_init(void) {
    if (initialised) return;
    read_cpu_features();
    for (int i = 0; i < BL_ISA_COUNT; ++i) built_table[i].name = isa_names[i];

    built_table[BL_ISA_SCALAR].unpack_i2_s = bl_unpack_i2_s_scalar;
    built_table[BL_ISA_SCALAR].pack_i2_s = bl_pack_i2_s_scalar;
    supported[BL_ISA_SCALAR] = 1;

#if defined(BL_TARGET_X86)
    supported[BL_ISA_AVX2] = has(F_AVX2) && has(F_FMA);
    supported[BL_ISA_AVXVNNI] = has(F_AVX2) && has(F_FMA) && has(F_AVXVNNI);
    supported[BL_ISA_AVX512VNNI] = has(F_AVX2) && has(F_FMA) && has(F_AVX512F) && has(F_AVX512BW) &&
                                   has(F_AVX512VL) && has(F_AVX512VNNI);
    /* VBMI (byte permutes, in the TL decoders): every CPU with AMX-INT8 has it */
    supported[BL_ISA_AMX] = supported[BL_ISA_AVX512VNNI] && has(F_AVX512VBMI) && has(F_AMX_INT8);
#if defined(BL_BUILD_AVX2)
    built_table[BL_ISA_AVX2].unpack_i2_s = bl_unpack_i2_s_avx2;
    built_table[BL_ISA_AVX2].pack_i2_s = bl_pack_i2_s_avx2;
#endif
#if defined(BL_BUILD_AVX512VNNI)
    built_table[BL_ISA_AVX512VNNI].unpack_i2_s = bl_unpack_i2_s_avx512vnni;
    built_table[BL_ISA_AVX512VNNI].pack_i2_s = bl_pack_i2_s_avx512vnni;
#endif
#if defined(BL_BUILD_AMX) && defined(BL_BUILD_AVX512VNNI)
    /* AMX adds only tile products (the prefill GEMMs): the codec is AVX-512's. */
    built_table[BL_ISA_AMX].unpack_i2_s = bl_unpack_i2_s_avx512vnni;
    built_table[BL_ISA_AMX].pack_i2_s = bl_pack_i2_s_avx512vnni;
#endif
#if defined(BL_BUILD_AVXVNNI) && defined(BL_BUILD_AVX2)
    /* AVX-VNNI adds only dot products: the avxvnni level's codec is AVX2's. */
    built_table[BL_ISA_AVXVNNI].unpack_i2_s = bl_unpack_i2_s_avx2;
    built_table[BL_ISA_AVXVNNI].pack_i2_s = bl_pack_i2_s_avx2;
#endif
#elif defined(BL_TARGET_ARM64)
    supported[BL_ISA_NEON] = has(F_NEON);
    supported[BL_ISA_NEON_DOTPROD] = has(F_NEON) && has(F_DOTPROD);
#if defined(BL_BUILD_NEON)
    built_table[BL_ISA_NEON].unpack_i2_s = bl_unpack_i2_s_neon;
    built_table[BL_ISA_NEON].pack_i2_s = bl_pack_i2_s_neon;
    /* The codec has no dot product: the dotprod level shares NEON's codec. */
    built_table[BL_ISA_NEON_DOTPROD].unpack_i2_s = bl_unpack_i2_s_neon;
    built_table[BL_ISA_NEON_DOTPROD].pack_i2_s = bl_pack_i2_s_neon;
#endif
#endif
    for (int i = 0; i < BL_ISA_COUNT; ++i) built_table[i].mad = bl_mad_defaults(i); /* mad_dispatch.c */
    /* LUT family: own kernels for scalar, avx2, avx512vnni (GEMVs) and neon. avxvnni and
     * neon_dotprod add only dot products, which table lookups do not use: they run the AVX2 /
     * NEON ones; amx runs avx512vnni's. */
    set_lut(BL_ISA_SCALAR, bl_tl1_build_lut_scalar, bl_tl2_build_lut_scalar, bl_tl1_gemv_scalar,
            bl_tl2_gemv_scalar);
#if defined(BL_BUILD_LUT_AVX2)
    set_lut(BL_ISA_AVX2, bl_tl1_build_lut_avx2, bl_tl2_build_lut_avx2, bl_tl1_gemv_avx2, bl_tl2_gemv_avx2);
    set_lut(BL_ISA_AVXVNNI, bl_tl1_build_lut_avx2, bl_tl2_build_lut_avx2, bl_tl1_gemv_avx2, bl_tl2_gemv_avx2);
#if defined(BL_BUILD_LUT_AVX512)
    /* AVX-512 GEMVs with the AVX2 build (lut_avx512.c); amx adds only tile products. */
    set_lut(BL_ISA_AVX512VNNI, bl_tl1_build_lut_avx2, bl_tl2_build_lut_avx2, bl_tl1_gemv_avx512,
            bl_tl2_gemv_avx512);
    set_lut(BL_ISA_AMX, bl_tl1_build_lut_avx2, bl_tl2_build_lut_avx2, bl_tl1_gemv_avx512, bl_tl2_gemv_avx512);
#if defined(BL_BUILD_AMX) && defined(BL_BUILD_AVX512VNNI)
    /* prefill of TL weights on tiles (mad_amx.c); decode keeps the AVX-512 GEMVs set above */
    built_table[BL_ISA_AMX].tl1_gemm = bl_tl1_gemm_amx;
    built_table[BL_ISA_AMX].tl2_gemm = bl_tl2_gemm_amx;
#endif
#else
    set_lut(BL_ISA_AVX512VNNI, bl_tl1_build_lut_avx2, bl_tl2_build_lut_avx2, bl_tl1_gemv_avx2,
            bl_tl2_gemv_avx2);
    set_lut(BL_ISA_AMX, bl_tl1_build_lut_avx2, bl_tl2_build_lut_avx2, bl_tl1_gemv_avx2, bl_tl2_gemv_avx2);
#endif
#endif
#if defined(BL_BUILD_LUT_NEON)
    set_lut(BL_ISA_NEON, bl_tl1_build_lut_neon, bl_tl2_build_lut_neon, bl_tl1_gemv_neon, bl_tl2_gemv_neon);
    set_lut(BL_ISA_NEON_DOTPROD, bl_tl1_build_lut_neon, bl_tl2_build_lut_neon, bl_tl1_gemv_neon,
            bl_tl2_gemv_neon);
#endif
    initialised = 1;
}

const char *bl_isa_name(int isa) { return (isa >= 0 && isa < BL_ISA_COUNT) ? isa_names[isa] : NULL; }

int bl_isa_built(int isa) {
    if (isa < 0 || isa >= BL_ISA_COUNT) return 0;
    return built_table[isa].unpack_i2_s != NULL && built_table[isa].pack_i2_s != NULL && built_table[isa].mad != NULL &&
           built_table[isa].tl1_gemv != NULL;
}

int bl_isa_supported(int isa) { return (isa >= 0 && isa < BL_ISA_COUNT) ? supported[isa] : 0; }

const bl_isa_kernels *bl_isa_table(int isa) {
    return (bl_isa_built(isa) && bl_isa_supported(isa)) ? &built_table[isa] : NULL;
}

int bl_cpu_feature_count(void) { return F_COUNT; }

const char *bl_cpu_feature_name(int i) { return (i >= 0 && i < F_COUNT) ? feature_names[i] : NULL; }

int bl_cpu_feature_value(int i) { return (i >= 0 && i < F_COUNT) ? feature_values[i] : -1; }

const char *bl_target_arch(void) {
#if defined(BL_TARGET_X86)
    return "x86_64";
#elif defined(BL_TARGET_ARM64)
    return "aarch64";
#else
    return "other";
#endif
}

const char *bl_compiler_version(void) {
#if defined(__VERSION__)
    return __VERSION__;
#else
    return "unknown";
#endif
}
