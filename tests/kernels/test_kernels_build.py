"""The native build and the I2_S codec kernels (bitnet_lab.kernels, bitnet_lab._kernels).

Every ISA level this machine can run is compared bit for bit with the numpy twin
(bitnet_lab.quant.packing) for 1 and 2 threads, on shapes with M = 1, odd M and odd / even
block counts per row; a hand-built block checks the docs/formats.md#31-i2_s-type-36 table independently of
both. Bad input must raise CodecError with the numbers; ISA selection (argument, set_isa,
BITNET_LAB_ISA) must fail loudly. The C-level tests (cython_kernels/tests/) run natively
and, when the cross tools are installed, for aarch64 NEON under qemu-user.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bitnet_lab import kernels
from bitnet_lab.errors import CodecError
from bitnet_lab.quant import packing as ref

ROOT = Path(__file__).resolve().parents[2]
C_TESTS = ROOT / "cython_kernels" / "tests" / "run_c_tests.sh"

ISAS = kernels.available_isas()
THREADS = (1, 2)
# (M, K): M = 1, odd M; 1, 2, 3, 10 and 20 blocks per row (odd counts exercise the AVX-512
# single-block tail, several rows per thread run exercise runs spanning rows).
SHAPES = [(1, 128), (1, 384), (3, 256), (5, 384), (8, 512), (17, 1280), (2, 2560)]


def random_ternary(rng: np.random.Generator, M: int, K: int) -> np.ndarray:
    return rng.integers(-1, 2, size=(M, K), dtype=np.int8)


def plant_code3(packed: np.ndarray, K: int, r: int, k: int) -> None:
    """Set the 2-bit code of weight (r, k) to 3 in place (docs/formats.md#31-i2_s-type-36 addressing)."""
    n = r * K + k
    j = n % 128
    packed[32 * (n // 128) + j % 32] |= np.uint8(3 << (6 - 2 * (j // 32)))


# ---- bit-exactness against the numpy twin ---------------------------------------------------


@pytest.mark.isa
@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("isa", ISAS)
def test_unpack_and_pack_match_numpy(isa, threads):
    rng = np.random.default_rng(1234)
    for M, K in SHAPES:
        t = random_ternary(rng, M, K)
        packed = ref.pack_i2_s(t)
        assert packed.shape == (M * K // 4,)
        got = kernels.unpack_i2_s(packed, M, K, isa=isa, threads=threads)
        assert got.dtype == np.int8 and got.shape == (M, K)
        np.testing.assert_array_equal(got, ref.unpack_i2_s(packed, M, K), err_msg=f"unpack {M}x{K}")
        np.testing.assert_array_equal(got, t)
        repacked = kernels.pack_i2_s(t, isa=isa, threads=threads)
        assert repacked.dtype == np.uint8 and repacked.shape == (M * K // 4,)
        np.testing.assert_array_equal(repacked, packed, err_msg=f"pack {M}x{K}")


@pytest.mark.isa
@pytest.mark.parametrize("isa", ISAS)
def test_random_bytes_unpack_matches_numpy(isa):
    """Arbitrary valid bytes (every byte value without a code 3), not only packer output."""
    rng = np.random.default_rng(7)
    valid = np.array([b for b in range(256) if all((b >> s) & 3 != 3 for s in (0, 2, 4, 6))], np.uint8)
    assert valid.size == 81  # 3^4 byte values
    M, K = 9, 640
    packed = rng.choice(valid, size=M * K // 4)
    for threads in (1, 2, 4):
        got = kernels.unpack_i2_s(packed, M, K, isa=isa, threads=threads)
        np.testing.assert_array_equal(got, ref.unpack_i2_s(packed, M, K))


@pytest.mark.isa
@pytest.mark.parametrize("isa", ISAS)
def test_known_answer_block(isa):
    """docs/formats.md#31-i2_s-type-36 table, independent of the numpy twin: element j of a 128-block is in
    byte j % 32 at shift 6 - 2*(j // 32), code = t + 1. A 64/16 (ARM build) reader fails."""
    packed = np.full(32, 0b10_01_00_01, np.uint8)  # elements b: +1, 32+b: 0, 64+b: -1, 96+b: 0
    packed[5] = 0b00_10_01_10  # elements 5: -1, 37: +1, 69: 0, 101: +1
    want = np.empty(128, np.int8)
    want[0:32], want[32:64], want[64:96], want[96:128] = 1, 0, -1, 0
    want[[5, 37, 69, 101]] = [-1, 1, 0, 1]
    np.testing.assert_array_equal(kernels.unpack_i2_s(packed, 1, 128, isa=isa)[0], want)
    np.testing.assert_array_equal(kernels.pack_i2_s(want[None, :], isa=isa), packed)


@pytest.mark.isa
@pytest.mark.parametrize("isa", ISAS)
def test_uniform_bytes(isa):
    """All-zero bytes decode to all -1, 0x55 to all 0, 0xAA to all +1."""
    M, K = 3, 384
    for byte, value in ((0x00, -1), (0x55, 0), (0xAA, 1)):
        got = kernels.unpack_i2_s(np.full(M * K // 4, byte, np.uint8), M, K, isa=isa, threads=2)
        assert (got == value).all(), hex(byte)


@pytest.mark.isa
@pytest.mark.parametrize("isa", ISAS)
def test_blob_with_tail_and_bytes_input(isa):
    """The tensor blob (codes + 32-byte scale tail, garbage after the scale) and bytes objects."""
    rng = np.random.default_rng(3)
    M, K = 4, 256
    t = random_ternary(rng, M, K)
    blob = np.concatenate([ref.pack_i2_s(t), rng.integers(0, 256, 32, dtype=np.uint8)])
    np.testing.assert_array_equal(kernels.unpack_i2_s(blob, M, K, isa=isa), t)
    np.testing.assert_array_equal(kernels.unpack_i2_s(blob.tobytes(), M, K, isa=isa), t)
    ro = np.frombuffer(blob.tobytes(), np.uint8)  # read-only, like a memory-mapped file
    assert not ro.flags.writeable
    np.testing.assert_array_equal(kernels.unpack_i2_s(ro, M, K, isa=isa), t)


# ---- invalid codes and values -----------------------------------------------------------------


@pytest.mark.isa
@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("isa", ISAS)
def test_code3_raises_with_position(isa, threads):
    rng = np.random.default_rng(11)
    M, K = 7, 384  # 3 blocks per row: an odd block count on every row
    packed = ref.pack_i2_s(random_ternary(rng, M, K))
    # first element, last element, a row in the second thread's run, an element of plane 3
    for r, k in [(0, 0), (M - 1, K - 1), (5, 200), (3, 96 + 17)]:
        bad = packed.copy()
        plant_code3(bad, K, r, k)
        with pytest.raises(CodecError, match=rf"holds 1 invalid code\(s\) 3.*first at row {r}, column {k}\b"):
            kernels.unpack_i2_s(bad, M, K, isa=isa, threads=threads, name="blk.0.ffn_up.weight")
    # two bad codes: the count is exact and the first one (in row order) is reported
    bad = packed.copy()
    plant_code3(bad, K, 6, 3)
    plant_code3(bad, K, 2, 300)
    with pytest.raises(CodecError, match=r"unpack_i2_s\('w'\).*holds 2 invalid.*row 2, column 300"):
        kernels.unpack_i2_s(bad, M, K, isa=isa, threads=threads, name="w")
    # every code invalid
    with pytest.raises(CodecError, match=rf"holds {M * K} invalid.*row 0, column 0 \(byte 0, bits 7:6\)"):
        kernels.unpack_i2_s(np.full(M * K // 4, 0xFF, np.uint8), M, K, isa=isa, threads=threads)


@pytest.mark.isa
@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("isa", ISAS)
def test_pack_value_outside_ternary_raises(isa, threads):
    rng = np.random.default_rng(12)
    M, K = 5, 384
    for (r, k), v in [((0, 0), 2), ((4, 383), -2), ((3, 129), 127), ((2, 64), -128)]:
        t = random_ternary(rng, M, K)
        t[r, k] = v
        with pytest.raises(CodecError, match=rf"1 value\(s\) outside.*row {r}, column {k} \(value {v}\)"):
            kernels.pack_i2_s(t, isa=isa, threads=threads)


# ---- argument validation ----------------------------------------------------------------------


def test_unpack_rejects_bad_arguments():
    M, K = 2, 256
    good = np.zeros(M * K // 4, np.uint8)
    cases = [
        (lambda: kernels.unpack_i2_s(good.view(np.int8), M, K), r"dtype uint8, got int8"),
        (lambda: kernels.unpack_i2_s(good.astype(np.uint16), M, K), r"dtype uint8, got uint16"),
        (lambda: kernels.unpack_i2_s(good[:-1], M, K), r"needs M\*K/4 = 128 bytes \(or 160.*got 127"),
        (lambda: kernels.unpack_i2_s(np.zeros(129, np.uint8), M, K), r"got 129"),
        (lambda: kernels.unpack_i2_s(np.zeros(161, np.uint8), M, K), r"got 161"),
        (lambda: kernels.unpack_i2_s(np.zeros(256, np.uint8)[::2], M, K), r"C-contiguous"),
        (lambda: kernels.unpack_i2_s(good.reshape(2, 64), M, K), r"1-D, got shape \(2, 64\)"),
        (lambda: kernels.unpack_i2_s(good, 1, 512 + 64), r"multiple of 128.*K=576"),
        (lambda: kernels.unpack_i2_s(good, 4, 0), r"multiple of 128.*K=0"),
        (lambda: kernels.unpack_i2_s(good, 0, K), r"M must be >= 1, got 0"),
        (lambda: kernels.unpack_i2_s(good, 2.0, K), r"M must be an integer"),
        (lambda: kernels.unpack_i2_s([0] * 128, M, K), r"numpy uint8 array or bytes, got list"),
    ]
    for call, pattern in cases:
        with pytest.raises(CodecError, match=pattern):
            call()


def test_pack_rejects_bad_arguments():
    t = np.zeros((2, 256), np.int8)
    cases = [
        (lambda: kernels.pack_i2_s(t.astype(np.int16)), r"dtype int8, got int16"),
        (lambda: kernels.pack_i2_s(t.reshape(-1)), r"2-D \(M, K\), got shape \(512,\)"),
        (lambda: kernels.pack_i2_s(np.asfortranarray(np.zeros((3, 256), np.int8))), r"C-contiguous"),
        (lambda: kernels.pack_i2_s(np.zeros((2, 200), np.int8)), r"multiple of 128.*\(2, 200\)"),
        (lambda: kernels.pack_i2_s(np.zeros((0, 128), np.int8)), r"no rows"),
        (lambda: kernels.pack_i2_s(t.tolist()), r"numpy int8 array, got list"),
    ]
    for call, pattern in cases:
        with pytest.raises(CodecError, match=pattern):
            call()


def test_isa_and_threads_arguments():
    good = np.zeros(32, np.uint8)
    with pytest.raises(kernels.KernelError, match=r"'bogus' is not an ISA level.*available here: scalar"):
        kernels.unpack_i2_s(good, 1, 128, isa="bogus")
    missing = [n for n in kernels.ISA_ORDER if n not in ISAS]
    assert missing, "some level is always unavailable (the other architecture's)"
    with pytest.raises(kernels.KernelError, match=rf"'{missing[0]}' is not available"):
        kernels.pack_i2_s(np.zeros((1, 128), np.int8), isa=missing[0])
    with pytest.raises(kernels.KernelError, match=r"threads must be >= 1, got 0"):
        kernels.unpack_i2_s(good, 1, 128, threads=0)
    with pytest.raises(kernels.KernelError, match=r"threads must be an integer"):
        kernels.unpack_i2_s(good, 1, 128, threads=1.5)
    # more threads than rows is fine
    assert (kernels.unpack_i2_s(good, 1, 128, threads=8) == -1).all()


# ---- ISA selection ----------------------------------------------------------------------------


def test_available_isas_follow_features_and_build():
    info = kernels.build_info()
    feats = kernels.cpu_features()
    assert ISAS[0] == "scalar" and set(ISAS) <= set(kernels.ISA_ORDER)
    assert list(ISAS) == [n for n in kernels.ISA_ORDER if n in ISAS]  # documented order
    if info["target_arch"] == "x86_64":
        assert ("avx2" in ISAS) == (feats["avx2"] and feats["fma"])
        # avxvnni is -1 (unknown) where the compiler cannot test it: then the level stays off
        assert ("avxvnni" in ISAS) == (feats["avx2"] and feats["fma"] and feats.get("avxvnni") is True)
        want512 = all(feats[f] for f in ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512vnni"))
        assert ("avx512vnni" in ISAS) == want512
        # amx: its TL decoders use VBMI byte permutes (every AMX CPU has VBMI)
        assert ("amx" in ISAS) <= (want512 and feats["avx512vbmi"] and feats["amx_int8"])
        assert not {"neon", "neon_dotprod"} & set(ISAS)
    elif info["target_arch"] == "aarch64":
        assert "neon" in ISAS and ("neon_dotprod" in ISAS) == (feats.get("dotprod") is True)
    if not os.environ.get(kernels.ENV_VAR):
        assert kernels.active_isa() == ISAS[-1]


def test_set_isa_and_use_isa():
    before = kernels.active_isa()
    with kernels.use_isa("scalar"):
        assert kernels.active_isa() == "scalar"
    assert kernels.active_isa() == before
    with pytest.raises(kernels.KernelError, match="available here"):
        kernels.set_isa("neon" if "neon" not in ISAS else "avx2")
    assert kernels.active_isa() == before


def _run_python(code: str, **env) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, timeout=120)


def test_env_var_forces_scalar():
    proc = _run_python("import bitnet_lab.kernels as k; print(k.active_isa())", BITNET_LAB_ISA="scalar")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "scalar"


@pytest.mark.parametrize("value", ["bogus", "AVX2 ", "__unavailable__"])
def test_env_var_bad_name_is_a_clear_error(value):
    if value == "__unavailable__":
        value = next(n for n in kernels.ISA_ORDER if n not in ISAS)
    proc = _run_python("import bitnet_lab.kernels", BITNET_LAB_ISA=value)
    assert proc.returncode != 0
    assert "KernelError" in proc.stderr and f"BITNET_LAB_ISA={value.strip()!r}" in proc.stderr, proc.stderr
    assert f"available here: {', '.join(ISAS)}" in proc.stderr, proc.stderr


def test_import_does_not_import_jax():
    proc = _run_python("import sys, bitnet_lab.kernels; print('jax' in sys.modules)")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


# ---- build facts --------------------------------------------------------------------------------


def test_build_info_flags():
    info = kernels.build_info()
    files = info["isa_files"]
    assert files["pack_scalar.c"]["isa"] == "scalar"
    for name, rec in files.items():
        flags = rec["flags"]
        assert {"-O3", "-fno-strict-aliasing", "-ffp-contract=off"} <= set(flags), name
        assert not any(f.startswith("-march") for f in flags), name
    assert not any(f.startswith("-m") for f in files["pack_scalar.c"]["flags"])
    assert not any("march=native" in f for f in info["compiler"] + info["module_flags"])
    if info["target_arch"] == "x86_64":
        assert {"-mavx2", "-mfma"} <= set(files["pack_avx2.c"]["flags"])
        assert {"-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vnni"} <= set(files["pack_avx512vnni.c"]["flags"])
        assert "pack_neon.c" not in files
    assert kernels.openmp_enabled() == info["openmp"] == info["openmp_compiled"]
    assert info["compiler_version"]


def test_extension_lives_in_the_package():
    import bitnet_lab
    import bitnet_lab._kernels as ext

    assert Path(ext.__file__).parent == Path(bitnet_lab.__file__).parent


def test_effective_threads():
    cores = kernels.physical_cores()
    logical = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert 1 <= cores <= logical
    assert kernels.effective_threads() == cores
    assert kernels.effective_threads(3) == 3
    assert kernels.effective_threads(np.int64(2)) == 2
    for bad in (0, -1, 2.5, "2"):
        with pytest.raises(kernels.KernelError):
            kernels.effective_threads(bad)


# ---- C-level tests (cython_kernels/tests) -----------------------------------------------------


def _c_test(mode: str) -> str:
    proc = subprocess.run(["bash", str(C_TESTS), mode], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.mark.isa
@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_c_kernels_native():
    if kernels.build_info()["target_arch"] != "x86_64":
        pytest.skip("run_c_tests.sh native builds the x86-64 files")
    out = _c_test("native")
    passed = re.findall(r"PASS \[(\w+)\]", out)
    assert passed == list(ISAS), out  # the same levels the Python side dispatches to


@pytest.mark.isa
@pytest.mark.skipif(
    shutil.which("aarch64-linux-gnu-gcc") is None or shutil.which("qemu-aarch64") is None,
    reason="needs aarch64-linux-gnu-gcc and qemu-aarch64 (apt: gcc-aarch64-linux-gnu qemu-user)",
)
def test_c_kernels_neon_under_qemu():
    out = _c_test("aarch64")
    runs = out.split("== qemu-aarch64")[1:]
    assert len(runs) == 2, out
    assert re.findall(r"PASS \[(\w+)\]", runs[0]) == ["scalar", "neon", "neon_dotprod"], out  # -cpu max
    assert re.findall(r"PASS \[(\w+)\]", runs[1]) == ["scalar", "neon"], out  # cortex-a53: no dotprod
