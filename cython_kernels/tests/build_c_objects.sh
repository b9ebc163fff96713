# build_c_objects.sh — sourced by the C test scripts: compile the whole C kernel library
# (I2_S codec, MAD family, LUT family, dispatch) into object files, with setup.py's per-file flags
# (COMMON + the ISA's own flags; never -march=native).
#
#   bl_build_objects native  OUT   x86-64 host: scalar, AVX2, AVX-VNNI, AVX-512, AMX files
#   bl_build_objects aarch64 OUT   cross-compile scalar, NEON, NEON+dotprod files (static tests)
#
# Expects $src (the src/ directory) and the array $common (flags) from the caller. Sets
# $cc (the compiler used) and, on x86-64 hosts without AVX-VNNI, BL_AVXVNNI_EMULATED=1: then
# mad_avxvnni.c is compiled with -DBL_AVXVNNI_VIA_AVX512VL (the same 256-bit dpbusd in its EVEX
# form, AVX-512 VNNI + VL) so a test can still run its algorithm on an AVX-512 machine.
# Keep the file lists in step with ISA_SOURCES in setup.py.

bl_build_objects() {
    local mode="$1" out="$2" f
    BL_AVXVNNI_EMULATED=0
    case "$mode" in
    native)
        cc="${CC:-gcc}"
        local avx2=(-mavx2 -mfma)
        local avx512=(-mavx512f -mavx512bw -mavx512vl -mavx512vnni)
        local vnni=(-mavx2 -mfma -mavxvnni)
        if ! grep -qw avx_vnni /proc/cpuinfo 2>/dev/null; then
            vnni=(-mavx2 -mfma "${avx512[@]}" -DBL_AVXVNNI_VIA_AVX512VL)
            BL_AVXVNNI_EMULATED=1
        fi
        for f in pack_scalar act_scalar mad_scalar lut_scalar; do
            "$cc" "${common[@]}" -c "$src/$f.c" -o "$out/$f.o"
        done
        for f in pack_avx2 act_avx2 mad_avx2 lut_avx2; do
            "$cc" "${common[@]}" "${avx2[@]}" -c "$src/$f.c" -o "$out/$f.o"
        done
        for f in pack_avx512vnni act_avx512 mad_avx512vnni; do
            "$cc" "${common[@]}" "${avx512[@]}" -c "$src/$f.c" -o "$out/$f.o"
        done
        "$cc" "${common[@]}" "${vnni[@]}" -c "$src/mad_avxvnni.c" -o "$out/mad_avxvnni.o"
        "$cc" "${common[@]}" "${avx512[@]}" -mamx-tile -mamx-int8 -c "$src/mad_amx.c" -o "$out/mad_amx.o"
        for f in bl_dispatch mad_dispatch mad_x4; do
            "$cc" "${common[@]}" -DBL_BUILD_AVX2=1 -DBL_BUILD_AVX512VNNI=1 -DBL_BUILD_AVXVNNI=1 \
                -DBL_BUILD_AMX=1 -DBL_BUILD_LUT_AVX2=1 -c "$src/$f.c" -o "$out/$f.o"
        done
        ;;
    aarch64)
        cc="${CC:-aarch64-linux-gnu-gcc}"
        for f in pack_scalar act_scalar mad_scalar lut_scalar pack_neon act_neon mad_neon lut_neon; do
            "$cc" "${common[@]}" -c "$src/$f.c" -o "$out/$f.o"
        done
        "$cc" "${common[@]}" -march=armv8.2-a+dotprod -c "$src/mad_neon_dotprod.c" -o "$out/mad_neon_dotprod.o"
        for f in bl_dispatch mad_dispatch mad_x4; do
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
