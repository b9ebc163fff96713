#!/usr/bin/env bash
# Build and run test_mad.c, the C-level test of the MAD family (bl_mad.h: quantize_act and the
# I2_S / TQ2_0 / TQ1_0 GEMV and GEMM versions).
#
#   run_mad_c_tests.sh native    x86-64 host: every version the CPU runs; on CPUs without AVX-VNNI
#                                the avxvnni kernels run through their EVEX twin (AVX-512 VNNI+VL)
#   run_mad_c_tests.sh aarch64   cross-compile with aarch64-linux-gnu-gcc (static) and run under
#                                qemu-aarch64 twice: -cpu max (has dotprod) and -cpu cortex-a53
#                                (ARMv8.0, no dotprod)
#
# Objects are built by build_c_objects.sh with setup.py's flags. Exit status 0 only when every
# run passed. Needs: gcc (native), or aarch64-linux-gnu-gcc and qemu-aarch64
# (Debian: gcc-aarch64-linux-gnu qemu-user).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
src="$here/../src"
# shellcheck source=build_c_objects.sh
source "$here/build_c_objects.sh"
bl_isa_flags common common  # setup.py's flags for every file (../isa_flags.txt), then warnings
common+=(-Wall -Wextra -I"$src")
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

case "${1:-native}" in
native)
    bl_build_objects native "$out"
    extra=()
    if [ "$BL_AVXVNNI_EMULATED" = 1 ]; then extra=(-DBL_AVXVNNI_EMULATED=1); fi
    "$cc" "${common[@]}" "${extra[@]}" "$here/test_mad.c" "$out"/*.o -lm -o "$out/test_mad"
    "$out/test_mad"
    ;;
aarch64)
    qemu="${QEMU:-qemu-aarch64}"
    bl_build_objects aarch64 "$out"
    "$cc" "${common[@]}" -static "$here/test_mad.c" "$out"/*.o -lm -o "$out/test_mad"
    for cpu in max cortex-a53; do
        echo "== qemu-aarch64 -cpu $cpu"
        "$qemu" -cpu "$cpu" "$out/test_mad"
    done
    ;;
*)
    echo "usage: $0 [native|aarch64]" >&2
    exit 2
    ;;
esac
