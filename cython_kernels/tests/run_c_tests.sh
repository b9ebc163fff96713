#!/usr/bin/env bash
# Build and run test_codec.c, the C-level test of every ISA level's I2_S codec.
#
#   run_c_tests.sh native    x86-64 host: scalar + AVX2 + AVX-512 files, run directly
#   run_c_tests.sh aarch64   cross-compile scalar + NEON with aarch64-linux-gnu-gcc (static)
#                            and run under qemu-aarch64 twice: -cpu max (has dotprod) and
#                            -cpu cortex-a53 (ARMv8.0, no dotprod)
#
# Same per-file flags as setup.py (common + the ISA's own flags from ../isa_flags.txt).
# Exit status 0 only when every run printed its PASS lines. Needs: gcc (native), or
# aarch64-linux-gnu-gcc and qemu-aarch64 (Debian: gcc-aarch64-linux-gnu qemu-user).
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
    # the whole library: bl_dispatch.c links every family's kernels (build_c_objects.sh)
    bl_build_objects native "$out"
    "$cc" "${common[@]}" "$here/test_codec.c" "$out"/*.o -o "$out/test_codec"
    "$out/test_codec"
    ;;
aarch64)
    qemu="${QEMU:-qemu-aarch64}"
    bl_build_objects aarch64 "$out"
    "$cc" "${common[@]}" -static "$here/test_codec.c" "$out"/*.o -o "$out/test_codec"
    for cpu in max cortex-a53; do
        echo "== qemu-aarch64 -cpu $cpu"
        "$qemu" -cpu "$cpu" "$out/test_codec"
    done
    ;;
*)
    echo "usage: $0 [native|aarch64]" >&2
    exit 2
    ;;
esac
