# build_c_objects.sh — sourced by the C test scripts: the flags table, and the whole C kernel
# library (I2_S codec, MAD family, LUT family, dispatch) compiled into object files with
# setup.py's per-file flags (common + the ISA level's own flags, both read from
# ../isa_flags.txt, the table setup.py reads; never -march=native).
#
#   bl_isa_flags LEVEL ARRAY       set the array ARRAY to LEVEL's flags (LEVEL common: the
#                                  flags every file gets first)
#   bl_build_objects native  OUT   x86-64 host: scalar, AVX2, AVX-VNNI, AVX-512, AMX files
#   bl_build_objects aarch64 OUT   cross-compile scalar, NEON, NEON+dotprod files (static tests)
#
# bl_build_objects expects $src (the src/ directory) and the array $common (flags) from the
# caller. It sets $cc (the compiler used) and, on x86-64 hosts without AVX-VNNI,
# BL_AVXVNNI_EMULATED=1: then mad_avxvnni.c is compiled with -DBL_AVXVNNI_VIA_AVX512VL (the same
# 256-bit dpbusd in its EVEX form, AVX-512 VNNI + VL) so a test can still run its algorithm on an
# AVX-512 machine. Keep the file lists in step with ISA_SOURCES in setup.py.

bl_isa_table="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/isa_flags.txt"

bl_isa_flags() {
    local level arch flags
    while read -r level arch flags; do
        if [ "$level" = "$1" ]; then
            read -r -a "$2" <<< "$flags"
            return 0
        fi
    done < "$bl_isa_table"
    echo "bl_isa_flags: no level '$1' in $bl_isa_table" >&2
    return 1
}

bl_build_objects() {
    local mode="$1" out="$2" f
    BL_AVXVNNI_EMULATED=0
    case "$mode" in
    native)
        cc="${CC:-gcc}"
        local scalar avx2 avx512 vnni amx
        bl_isa_flags scalar scalar
        bl_isa_flags avx2 avx2
        bl_isa_flags avx512vnni avx512
        bl_isa_flags avxvnni vnni
        bl_isa_flags amx amx
        if ! grep -qw avx_vnni /proc/cpuinfo 2>/dev/null; then
            vnni=("${avx2[@]}" "${avx512[@]}" -DBL_AVXVNNI_VIA_AVX512VL)
            BL_AVXVNNI_EMULATED=1
        fi
        for f in pack_scalar act_scalar mad_scalar lut_scalar; do
            "$cc" "${common[@]}" "${scalar[@]}" -c "$src/$f.c" -o "$out/$f.o"
        done
        for f in pack_avx2 act_avx2 mad_avx2 lut_avx2; do
            "$cc" "${common[@]}" "${avx2[@]}" -c "$src/$f.c" -o "$out/$f.o"
        done
        for f in pack_avx512vnni act_avx512 mad_avx512vnni lut_avx512; do
            "$cc" "${common[@]}" "${avx512[@]}" -c "$src/$f.c" -o "$out/$f.o"
        done
        "$cc" "${common[@]}" "${vnni[@]}" -c "$src/mad_avxvnni.c" -o "$out/mad_avxvnni.o"
        "$cc" "${common[@]}" "${amx[@]}" -c "$src/mad_amx.c" -o "$out/mad_amx.o"
        for f in bl_dispatch mad_dispatch mad_x4 mad_x16; do
            "$cc" "${common[@]}" -DBL_BUILD_AVX2=1 -DBL_BUILD_AVX512VNNI=1 -DBL_BUILD_AVXVNNI=1 \
                -DBL_BUILD_AMX=1 -DBL_BUILD_LUT_AVX2=1 -DBL_BUILD_LUT_AVX512=1 -c "$src/$f.c" -o "$out/$f.o"
        done
        ;;
    aarch64)
        cc="${CC:-aarch64-linux-gnu-gcc}"
        local scalar neon dotprod
        bl_isa_flags scalar scalar
        bl_isa_flags neon neon
        bl_isa_flags neon_dotprod dotprod
        for f in pack_scalar act_scalar mad_scalar lut_scalar; do
            "$cc" "${common[@]}" "${scalar[@]}" -c "$src/$f.c" -o "$out/$f.o"
        done
        for f in pack_neon act_neon mad_neon lut_neon; do
            "$cc" "${common[@]}" "${neon[@]}" -c "$src/$f.c" -o "$out/$f.o"
        done
        "$cc" "${common[@]}" "${dotprod[@]}" -c "$src/mad_neon_dotprod.c" -o "$out/mad_neon_dotprod.o"
        for f in bl_dispatch mad_dispatch mad_x4 mad_x16; do
            "$cc" "${common[@]}" -DBL_BUILD_NEON=1 -DBL_BUILD_NEON_DOTPROD=1 -DBL_BUILD_LUT_NEON=1 \
                -c "$src/$f.c" -o "$out/$f.o"
        done
        ;;
    *)
        echo "bl_build_objects: unknown mode $mode" >&2
        return 2
        ;;
    esac
}
