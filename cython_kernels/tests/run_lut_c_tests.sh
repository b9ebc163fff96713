#!/usr/bin/env bash
# Build and run test_lut.c, the C-level test of the TL1 / TL2 LUT kernels (lut_*.c).
#
#   run_lut_c_tests.sh native    x86-64 host: scalar + AVX2 + AVX-512 files, run directly
#   run_lut_c_tests.sh aarch64   cross-compile scalar + NEON with aarch64-linux-gnu-gcc (static)
#                                and run under qemu-aarch64 (-cpu max and -cpu cortex-a53)
#
# Same per-file flags as setup.py (common + the ISA's own flags from ../isa_flags.txt).
# Exit status 0 only when every run printed its PASS line. Needs: gcc (native), or
# aarch64-linux-gnu-gcc and qemu-aarch64 (Debian: gcc-aarch64-linux-gnu qemu-user).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
src="$here/../src"
# shellcheck source=build_c_objects.sh
source "$here/build_c_objects.sh"  # for bl_isa_flags
bl_isa_flags common common  # setup.py's flags for every file (../isa_flags.txt), then warnings
common+=(-Wall -Wextra -I"$src")
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

case "${1:-native}" in
native)
    cc="${CC:-gcc}"
    bl_isa_flags scalar scalar
    bl_isa_flags avx2 avx2
    "$cc" "${common[@]}" "${scalar[@]}" -c "$src/lut_scalar.c" -o "$out/scalar.o"
    "$cc" "${common[@]}" "${avx2[@]}" -c "$src/lut_avx2.c" -o "$out/avx2.o"
    bl_isa_flags avx512vnni avx512
    "$cc" "${common[@]}" "${avx512[@]}" -c "$src/lut_avx512.c" -o "$out/avx512.o"
    "$cc" "${common[@]}" "$here/test_lut.c" "$out"/*.o -o "$out/test_lut"
    "$out/test_lut"
    ;;
aarch64)
    cc="${CC:-aarch64-linux-gnu-gcc}"
    qemu="${QEMU:-qemu-aarch64}"
    bl_isa_flags scalar scalar
    bl_isa_flags neon neon
    "$cc" "${common[@]}" "${scalar[@]}" -c "$src/lut_scalar.c" -o "$out/scalar.o"
    "$cc" "${common[@]}" "${neon[@]}" -c "$src/lut_neon.c" -o "$out/neon.o"
    "$cc" "${common[@]}" -static "$here/test_lut.c" "$out"/*.o -o "$out/test_lut"
    for cpu in max cortex-a53; do
        echo "== qemu-aarch64 -cpu $cpu"
        "$qemu" -cpu "$cpu" "$out/test_lut"
    done
    ;;
*)
    echo "usage: $0 [native|aarch64]" >&2
    exit 2
    ;;
esac
