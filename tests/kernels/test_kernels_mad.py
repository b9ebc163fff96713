"""The MAD kernel family (bitnet_lab.kernels: quantize_act, i2s/tq2/tq1 GEMV and GEMM).

Every compiled version of every op is compared bit for bit with its numpy twin
(bitnet_lab.quant.mad_reference; bitnet_lab.quant.quantize_activations for quantize_act) on ragged
shapes, for 1 and 2 threads; versions for ISA levels this CPU lacks are skipped with the reason.
The int16 worst case (all codes 2 against all 127 / all -128) must be exact on every version, and
the numpy model of bitnet.cpp's 32-block int16 accumulator must get it wrong. Fault injection must
be visible and off by default. The C-level tests (cython_kernels/tests/run_mad_c_tests.sh) run
natively and, when the cross tools exist, for aarch64 NEON under qemu-user.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bitnet_lab import kernels
from bitnet_lab.errors import CodecError, KernelError
from bitnet_lab.quant import mad_reference as ref
from bitnet_lab.quant import packing
from bitnet_lab.quant.ternary import quantize_activations

ROOT = Path(__file__).resolve().parents[2]
C_TESTS = ROOT / "cython_kernels" / "tests" / "run_mad_c_tests.sh"
AVAILABLE = set(kernels.available_isas())
ALL_VERSIONS = kernels.kernel_versions(include_unavailable=True)

GEMV_OPS = {"i2s_gemv": ref.i2s_gemv_ref, "tq2_gemv": ref.tq2_gemv_ref, "tq1_gemv": ref.tq1_gemv_ref,
            "i2s_x4_gemv": ref.i2s_x4_gemv_ref, "tq1_x16_gemv": ref.tq1_x16_gemv_ref}
GEMM_OPS = {"i2s_gemm": ref.i2s_gemm_ref, "tq2_gemm": ref.tq2_gemm_ref, "tq1_gemm": ref.tq1_gemm_ref,
            "i2s_x4_gemm": ref.i2s_x4_gemm_ref, "tq1_x16_gemm": ref.tq1_x16_gemm_ref}
KERNEL = {op: getattr(kernels, op) for op in [*GEMV_OPS, *GEMM_OPS]}


def version_params(ops):
    """pytest params (op, version), skipped with the reason where the CPU lacks the ISA."""
    out = []
    for op in ops:
        for name, isa, _ in ALL_VERSIONS[op]:
            marks = [pytest.mark.isa]
            if isa not in AVAILABLE:
                marks.append(pytest.mark.skip(reason=f"{op} {name} needs ISA level {isa!r}; this CPU/build has "
                                                     f"{sorted(AVAILABLE)}"))
            out.append(pytest.param(op, name, id=f"{op}-{name}", marks=marks))
    return out


def isa_of(op, version):
    return next(isa for name, isa, _ in ALL_VERSIONS[op] if name == version)


def pack(op: str, t: np.ndarray, scale: float = 0.75) -> np.ndarray:
    if op.startswith("i2s_x4"):  # the numpy statement of the layout, not the C repack under test
        return ref.i2s_x4_from_rowmajor(packing.pack_i2_s(t), *t.shape)
    if op.startswith("i2s"):
        return packing.pack_i2_s(t)
    d = packing.tq_default_block_scales(t, scale)
    if op.startswith("tq1_x16"):  # the numpy statement of the layout, as for x4
        return ref.tq1_x16_from_tq1(packing.pack_tq1_0(t, d), *t.shape)
    return packing.pack_tq2_0(t, d) if op.startswith("tq2") else packing.pack_tq1_0(t, d)


def ks_for(op: str) -> list[int]:
    """K: the smallest legal value, odd block counts and a few multiples."""
    return [128, 384, 1280, 2304] if op.startswith("i2s") else [256, 768, 2304]


MS = [1, 3, 4, 5, 13, 16, 35]  # M = 1, odd, the 4-row unroll, not a multiple of it; x16: a group, 2 + a tail


# ---- products vs numpy twins ------------------------------------------------------------------


@pytest.mark.parametrize("op,version", version_params(GEMV_OPS))
def test_gemv_matches_numpy(op, version):
    rng = np.random.default_rng(11)
    for K in ks_for(op):
        for M in MS:
            t = rng.integers(-1, 2, size=(M, K), dtype=np.int8)
            data = pack(op, t)
            q = rng.integers(-128, 128, size=K, dtype=np.int8)
            want = GEMV_OPS[op](data, q, M, K)
            for threads in (1, 2):
                got = KERNEL[op](data, q, M, K, version=version, threads=threads)
                assert got.dtype == np.int32 and got.shape == (M,)
                np.testing.assert_array_equal(got, want, err_msg=f"{op} {version} M={M} K={K} threads={threads}")


@pytest.mark.parametrize("op,version", version_params(GEMM_OPS))
def test_gemm_matches_numpy(op, version):
    rng = np.random.default_rng(12)
    for K in ks_for(op):
        for M in MS:
            t = rng.integers(-1, 2, size=(M, K), dtype=np.int8)
            data = pack(op, t)
            for N in (1, 3, 6):
                Q = rng.integers(-128, 128, size=(N, K), dtype=np.int8)
                want = GEMM_OPS[op](data, Q, M, K)
                for threads in (1, 2):
                    got = KERNEL[op](data, Q, M, K, version=version, threads=threads)
                    assert got.dtype == np.int32 and got.shape == (N, M)
                    np.testing.assert_array_equal(got, want, err_msg=f"{op} {version} M={M} K={K} N={N} t={threads}")


@pytest.mark.parametrize("op,version", version_params(GEMM_OPS))
def test_gemm_tile_shapes_match_numpy(op, version):
    """Shapes that cross the tile GEMMs' blocks (amx: 16-token tiles in pairs, 32-row panels of two
    16-row tiles, 512-weight units, token slices of 1 MiB of activations; the v3 tails): full and
    partial token blocks and panels, several units with a short last one, two slices (K = 8192:
    128 tokens a slice), calls of 2 to 15 tokens (amx: short tiles of that many rows), of 17 and
    32 (amx: two small calls), and 2 threads, whose row runs start off a panel boundary."""
    rng = np.random.default_rng(13)
    shapes = [(1280, 32, 16), (2304, 70, 64), (768, 48, 33), (2560, 45, 47)]
    shapes += [(1280, 64, 2), (2560, 40, 8), (768, 70, 15)]  # amx: a whole call on short tiles
    shapes += [(1280, 48, 17), (768, 70, 32)]  # amx: two small calls of half the tokens each
    shapes += [(8192, 40, 200)] if op.startswith("i2s") else [(8192, 36, 150)]
    for K, M, N in shapes:
        t = rng.integers(-1, 2, size=(M, K), dtype=np.int8)
        data = pack(op, t)
        Q = rng.integers(-128, 128, size=(N, K), dtype=np.int8)
        want = GEMM_OPS[op](data, Q, M, K)
        for threads in (1, 2):
            got = KERNEL[op](data, Q, M, K, version=version, threads=threads)
            np.testing.assert_array_equal(got, want, err_msg=f"{op} {version} M={M} K={K} N={N} t={threads}")


@pytest.mark.parametrize("op,version", version_params([*GEMV_OPS, *GEMM_OPS]))
def test_int16_worst_case_is_exact(op, version):
    """All codes 2 (t = +1) against all q = 127 and all q = -128: Σ t·q = 127·K and -128·K. With
    K = 4096 / 8192 (32 / 64 I2_S blocks) a 32-block int16 accumulator would wrap
    (docs/kernels.md#23-the-int16-overflow-bound-and-a-safer-widening-rule). M = 9: the x4 GEMV's two-group
    pass, then a tail row."""
    M = 9
    for K in (4096, 8192):
        data = pack(op, np.ones((M, K), dtype=np.int8))
        for value in (127, -128):
            if op in GEMV_OPS:
                got = KERNEL[op](data, np.full(K, value, np.int8), M, K, version=version, threads=1)
                np.testing.assert_array_equal(got, np.full(M, value * K, np.int32))
            else:  # 3 tokens, and 35 with M = 40: the tile GEMMs' own path (amx: 16-token tiles)
                got = KERNEL[op](data, np.full((3, K), value, np.int8), M, K, version=version, threads=2)
                np.testing.assert_array_equal(got, np.full((3, M), value * K, np.int32))
                big = pack(op, np.ones((40, K), dtype=np.int8))
                got = KERNEL[op](big, np.full((35, K), value, np.int8), 40, K, version=version, threads=2)
                np.testing.assert_array_equal(got, np.full((35, 40), value * K, np.int32))


def tq1_raw(rng: np.random.Generator, M: int, K: int, fill: int | None = None) -> np.ndarray:
    """M·K/256 TQ1_0 blocks of arbitrary code bytes (TQ1_0 has no invalid byte), each block's fp16
    scale set to 1.0 (the kernels ignore it)."""
    nb = M * K // 256
    b = rng.integers(0, 256, size=(nb, 54), dtype=np.uint8) if fill is None else np.full((nb, 54), fill, np.uint8)
    b[:, 52:54] = np.frombuffer(np.float16(1.0).tobytes(), np.uint8)
    return b.reshape(-1)


@pytest.mark.parametrize("op,version", version_params(["tq1_gemv", "tq1_gemm"]))
def test_tq1_any_bytes_and_long_rows_match_numpy(op, version):
    """TQ1_0 code bytes of any value (not only the quantiser's), the all-0xFF and all-0x00 blocks
    against all 127 / all -128 (the largest q_n = b·3^n mod 256 the GEMV v3's two dpbusd sums
    meet), odd row counts over 1, 2 and 3 threads (row ranges starting off the 4-row step), and K
    past the GEMV v3's 64-block chunk of re-ordered activations (16384: one chunk; 16640, 33024:
    several, the last one short; the amx GEMM's stack buffer holds 32 rows up to K = 7936, 16 up to
    15872, none past it). Checked against the numpy twin and the scalar v0."""
    rng = np.random.default_rng(21)
    twin = GEMV_OPS[op] if op in GEMV_OPS else GEMM_OPS[op]
    for M, K in ((1, 256), (7, 768), (13, 2560), (5, 16384), (6, 16640), (3, 33024)):
        cases = [(tq1_raw(rng, M, K), rng.integers(-128, 128, size=K, dtype=np.int8))]
        cases += [(tq1_raw(rng, M, K, fill), np.full(K, v, np.int8)) for fill in (0xFF, 0x00) for v in (127, -128)]
        for data, q in cases:
            # GEMM: 35 tokens, so the amx version's tiles (16 tokens) run, then its token tail
            acts = q if op in GEMV_OPS else np.stack([q, q[::-1], -np.maximum(q, -127), np.roll(q, 5), ~q] * 7)
            want = twin(data, acts, M, K)
            np.testing.assert_array_equal(KERNEL[op](data, acts, M, K, version="v0"), want)
            for threads in (1, 2, 3):
                got = KERNEL[op](data, acts, M, K, version=version, threads=threads)
                np.testing.assert_array_equal(got, want, err_msg=f"{op} {version} M={M} K={K} threads={threads}")


@pytest.mark.parametrize("op,version", version_params(["i2s_gemv"]))
def test_i2s_gemv_thread_counts_agree(op, version):
    rng = np.random.default_rng(3)
    M, K = 37, 1280
    t = rng.integers(-1, 2, size=(M, K), dtype=np.int8)
    data = packing.i2_s_blob(t, 0.5)  # the blob with its 32-byte scale tail is accepted too
    q = rng.integers(-128, 128, size=K, dtype=np.int8)
    results = [kernels.i2s_gemv(data, q, M, K, version=version, threads=n) for n in (1, 2, 3, 8)]
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])
    np.testing.assert_array_equal(results[0], ref.i2s_gemv_ref(data, q, M, K))


@pytest.mark.parametrize("op,version", version_params(["tq1_x16_gemv", "tq1_x16_gemm"]))
def test_tq1_x16_thread_counts_and_shapes_agree(op, version):
    """x16 groups: M = 16·g + a short group (1, 15 rows), thread runs of one and several groups,
    odd word counts (K = 2304: 117 words a row), the largest K (16384), and the int32 lane bound at
    it (every trit −1 against −128: |Σ| = 128·K in one lane)."""
    rng = np.random.default_rng(9)
    for M, K in ((49, 2304), (47, 768), (64, 6912), (17, 16384)):
        data = pack(op, rng.integers(-1, 2, size=(M, K), dtype=np.int8))
        q = rng.integers(-128, 128, size=(3, K) if op.endswith("gemm") else K, dtype=np.int8)
        want = GEMV_OPS[op](data, q, M, K) if op in GEMV_OPS else GEMM_OPS[op](data, q, M, K)
        for n in (1, 2, 3, 8):
            np.testing.assert_array_equal(KERNEL[op](data, q, M, K, version=version, threads=n), want,
                                          err_msg=f"{op} {version} M={M} K={K} threads={n}")
    M, K = 17, 16384
    data = pack(op, -np.ones((M, K), np.int8))
    q = np.full((2, K) if op.endswith("gemm") else K, -128, np.int8)
    got = KERNEL[op](data, q, M, K, version=version, threads=2)
    np.testing.assert_array_equal(got, np.full(got.shape, 128 * K, np.int64))


def test_tq1_x16_interleave_is_the_numpy_layout_and_inverts():
    rng = np.random.default_rng(7)
    for M in (1, 15, 16, 17, 40):
        for K in (256, 768, 2560, 6912):
            t = rng.integers(-1, 2, size=(M, K), dtype=np.int8)
            tq = packing.pack_tq1_0(t, packing.tq_default_block_scales(t, 0.5))
            x16 = kernels.tq1_x16_interleave(tq, M, K)
            assert x16.size == M * K // 256 * 52
            np.testing.assert_array_equal(x16, ref.tq1_x16_from_tq1(tq, M, K), err_msg=f"M={M} K={K}")
            back = kernels.tq1_x16_rows(x16, M, K)
            np.testing.assert_array_equal(back, ref.tq1_x16_to_tq1(x16, M, K))
            np.testing.assert_array_equal(packing.unpack_tq1_0(back, M, K)[0], t)  # every trit kept
            if M >= 16:  # word 0 of rows 0..15 side by side: the first 4 code bytes of each row
                np.testing.assert_array_equal(x16[:64].reshape(16, 4), tq.reshape(M, -1)[:16, :4])
    ones = np.ones((16, 256), np.int8)
    tq = packing.pack_tq1_0(ones, packing.tq_default_block_scales(ones, 0.5))
    out = np.empty(16 * 52, np.uint8)
    assert kernels.tq1_x16_interleave(tq, 16, 256, out=out) is out
    with pytest.raises(CodecError, match="out must be"):
        kernels.tq1_x16_interleave(tq, 16, 256, out=np.empty(10, np.uint8))
    with pytest.raises(CodecError, match="TQ1_0 tensor"):
        kernels.tq1_x16_interleave(tq[:-1], 16, 256)
    with pytest.raises(CodecError, match="K <= 16384"):
        kernels.tq1_x16_gemv(np.zeros(52 * 128, np.uint8), np.zeros(32768, np.int8), 1, 32768)


def test_tq1_x16_pack_is_tq1_encoding_in_x16_order():
    rng = np.random.default_rng(14)
    for M, K in ((1, 256), (16, 768), (35, 2560), (3, 6912)):
        t = rng.integers(-1, 2, size=(M, K), dtype=np.int8)
        want = ref.tq1_x16_from_tq1(packing.pack_tq1_0(t, packing.tq_default_block_scales(t, 0.5)), M, K)
        np.testing.assert_array_equal(kernels.tq1_x16_pack(t), want, err_msg=f"M={M} K={K}")
        out = np.empty(want.size, np.uint8)
        assert kernels.tq1_x16_pack(t, out=out) is out
    with pytest.raises(CodecError, match="outside"):
        kernels.tq1_x16_pack(np.full((2, 256), 2, np.int8))
    with pytest.raises(CodecError, match="C-contiguous int8"):
        kernels.tq1_x16_pack(np.zeros((2, 256), np.int16))
    with pytest.raises(CodecError, match="K % 256"):
        kernels.tq1_x16_pack(np.zeros((2, 128), np.int8))


@pytest.mark.parametrize("op,version", version_params(["i2s_x4_gemv", "i2s_x4_gemm"]))
def test_i2s_x4_thread_counts_agree(op, version):
    """Row ranges of 4 rows and more, a tail group of 1 row (M = 37), odd block count (K = 1152)."""
    rng = np.random.default_rng(5)
    M, K = 37, 1152
    data = pack(op, rng.integers(-1, 2, size=(M, K), dtype=np.int8))
    q = rng.integers(-128, 128, size=(3, K) if op.endswith("gemm") else K, dtype=np.int8)
    want = GEMV_OPS[op](data, q, M, K) if op in GEMV_OPS else GEMM_OPS[op](data, q, M, K)
    for n in (1, 2, 3, 8):
        np.testing.assert_array_equal(KERNEL[op](data, q, M, K, version=version, threads=n), want)


def test_tq2_to_i2s_keeps_every_code():
    rng = np.random.default_rng(8)
    for M, K in ((1, 256), (3, 768), (5, 2560)):
        t = rng.integers(-1, 2, size=(M, K), dtype=np.int8)
        tq = packing.pack_tq2_0(t, packing.tq_default_block_scales(t, 0.5))
        got = kernels.tq2_to_i2s(tq, M, K)
        np.testing.assert_array_equal(got, ref.tq2_0_to_i2s(tq, M, K))
        np.testing.assert_array_equal(packing.unpack_i2_s(got, M, K), t)
    with pytest.raises(CodecError, match="TQ2_0"):
        kernels.tq2_to_i2s(np.zeros(66, np.uint8), 1, 128)


def test_i2s_x4_interleave_is_the_numpy_layout_and_inverts():
    rng = np.random.default_rng(6)
    for M in (1, 3, 4, 5, 13, 64):
        for K in (128, 256, 384, 2560, 6912):
            rowmajor = packing.pack_i2_s(rng.integers(-1, 2, size=(M, K), dtype=np.int8))
            x4 = kernels.i2s_x4_interleave(rowmajor, M, K)
            np.testing.assert_array_equal(x4, ref.i2s_x4_from_rowmajor(rowmajor, M, K), err_msg=f"M={M} K={K}")
            np.testing.assert_array_equal(kernels.i2s_x4_rowmajor(x4, M, K), rowmajor)
            np.testing.assert_array_equal(ref.i2s_x4_to_rowmajor(x4, M, K), rowmajor)
            if M >= 4 and K >= 256:  # rows 0..3 of step 0 sit side by side
                np.testing.assert_array_equal(x4[:256].reshape(4, 64), rowmajor.reshape(M, K // 4)[:4, :64])
    blob = packing.i2_s_blob(np.ones((4, 256), np.int8), 0.5)  # the 32-byte scale tail is ignored
    out = np.empty(4 * 64, np.uint8)
    assert kernels.i2s_x4_interleave(blob, 4, 256, out=out) is out
    with pytest.raises(CodecError, match="overlap"):
        kernels.i2s_x4_interleave(out, 4, 256, out=out)
    with pytest.raises(CodecError, match="out must be"):
        kernels.i2s_x4_interleave(blob, 4, 256, out=np.empty(10, np.uint8))
    with pytest.raises(CodecError, match="K <= 65536"):
        kernels.i2s_x4_gemv(np.zeros(4 * 65536 // 2, np.uint8), np.zeros(2 * 65536, np.int8), 4, 2 * 65536)


@pytest.mark.isa
@pytest.mark.parametrize("isa", sorted(AVAILABLE, key=kernels.ISA_ORDER.index))
def test_isa_argument_runs_that_levels_defaults(isa):
    rng = np.random.default_rng(5)
    M, K = 9, 768
    t = rng.integers(-1, 2, size=(M, K), dtype=np.int8)
    Q = rng.integers(-128, 128, size=(3, K), dtype=np.int8)
    for op in GEMV_OPS:
        data = pack(op, t)
        np.testing.assert_array_equal(KERNEL[op](data, Q[0], M, K, isa=isa), GEMV_OPS[op](data, Q[0], M, K))
    for op in GEMM_OPS:
        data = pack(op, t)
        np.testing.assert_array_equal(KERNEL[op](data, Q, M, K, isa=isa), GEMM_OPS[op](data, Q, M, K))
    with kernels.use_isa(isa):
        assert kernels.default_version("i2s_gemv") == kernels.default_version("i2s_gemv", isa)
        np.testing.assert_array_equal(kernels.i2s_gemv(packing.pack_i2_s(t), Q[1], M, K),
                                      ref.i2s_gemv_ref(packing.pack_i2_s(t), Q[1], M, K))


def test_env_var_forces_each_isa_in_a_subprocess():
    """BITNET_LAB_ISA=<level> at import: the defaults of that level run and match the twins."""
    script = r"""
import json, numpy as np
from bitnet_lab import kernels
from bitnet_lab.quant import mad_reference as ref, packing
from bitnet_lab.quant.ternary import quantize_activations
rng = np.random.default_rng(0)
M, K = 7, 1280
t = rng.integers(-1, 2, size=(M, K), dtype=np.int8)
x = rng.standard_normal((3, K)).astype(np.float32)
Q, s, sq = kernels.quantize_act(x)
assert all(np.array_equal(a, b) for a, b in zip((Q, s, sq), quantize_activations(x)))
p = packing.pack_i2_s(t)
assert np.array_equal(kernels.i2s_gemv(p, Q[0], M, K, threads=2), ref.i2s_gemv_ref(p, Q[0], M, K))
assert np.array_equal(kernels.i2s_gemm(p, Q, M, K, threads=2), ref.i2s_gemm_ref(p, Q, M, K))
print(json.dumps({"active": kernels.active_isa(), "gemv": kernels.default_version("i2s_gemv")}))
"""
    for isa in sorted(AVAILABLE, key=kernels.ISA_ORDER.index):
        env = {**os.environ, "BITNET_LAB_ISA": isa, "PYTHONPATH": str(ROOT)}
        proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        got = json.loads(proc.stdout.strip().splitlines()[-1])
        assert got == {"active": isa, "gemv": kernels.default_version("i2s_gemv", isa)}


# ---- the code-offset correction and the int16 model --------------------------------------------


def test_raw_code_dot_minus_sum_q_is_the_ternary_product():
    rng = np.random.default_rng(8)
    M, K = 6, 512
    t = rng.integers(-1, 2, size=(M, K), dtype=np.int8)
    q = rng.integers(-128, 128, size=K, dtype=np.int8)
    p = packing.pack_i2_s(t)
    D = ref.raw_code_dot_ref(p, q, M, K)
    np.testing.assert_array_equal(D, ((t.astype(np.int64) + 1) @ q.astype(np.int64)).astype(np.int32))
    np.testing.assert_array_equal(D - q.astype(np.int32).sum(), ref.i2s_gemv_ref(p, q, M, K))


def test_int16_model_shows_the_32_block_overflow():
    """The numpy model of an AVX2 maddubs kernel: widening every 32 blocks (bitnet.cpp) wraps on
    the adversarial rows, every 16 blocks (our rule) is exact; both agree on random rows."""
    M, K = 2, 8192
    p = packing.pack_i2_s(np.ones((M, K), dtype=np.int8))  # all codes 2
    for value in (127, -128):
        q = np.full(K, value, np.int8)
        exact = ref.raw_code_dot_ref(p, q, M, K)
        assert exact[0] == 2 * value * K
        np.testing.assert_array_equal(ref.int16_accumulator_dot(p, q, M, K, widen_every=16), exact)
        wrong = ref.int16_accumulator_dot(p, q, M, K, widen_every=32)
        assert (wrong != exact).all(), "a 32-block int16 accumulator should overflow here"
    rng = np.random.default_rng(9)
    t = rng.integers(-1, 2, size=(M, K), dtype=np.int8)
    q = rng.integers(-128, 128, size=K, dtype=np.int8)
    p = packing.pack_i2_s(t)
    for widen in (1, 16, 32):
        np.testing.assert_array_equal(ref.int16_accumulator_dot(p, q, M, K, widen), ref.raw_code_dot_ref(p, q, M, K))


# ---- quantize_act ------------------------------------------------------------------------------


def assert_same_quant(got, want, what):
    q, s, sq = got
    q2, s2, sq2 = want
    np.testing.assert_array_equal(q, q2, err_msg=f"q {what}")
    np.testing.assert_array_equal(s.view(np.uint32), s2.view(np.uint32), err_msg=f"s_x bits {what}")
    np.testing.assert_array_equal(sq, sq2, err_msg=f"sum_q {what}")
    assert q.dtype == np.int8 and s.dtype == np.float32 and sq.dtype == np.int32


def quant_rows(rng) -> np.ndarray:
    """Random rows at many scales, exact .5 ties, a zero row, tiny / subnormal / huge rows."""
    K = 1003  # not a multiple of any vector width
    rows = [rng.standard_normal(K) * 10.0 ** rng.integers(-6, 7) for _ in range(6)]
    tie = rng.integers(-127, 127, size=K) + 0.5  # amax 127 → s_x = 1: every x·s_x is an exact tie
    tie[3] = 127.0
    rows.append(tie)
    tie2 = (rng.integers(-127, 127, size=K) + 0.5) / 2  # amax 63.5 → s_x = 2: ties again
    tie2[5] = -63.5
    rows.append(tie2)
    rows.append(np.zeros(K))
    rows.append(rng.standard_normal(K) * 1e-30)  # below the 1e-5 floor
    rows.append(rng.standard_normal(K) * 1e-40)  # subnormal floats
    rows.append(rng.uniform(-3e38, 3e38, size=K))  # near the float32 maximum
    mixed = rng.standard_normal(K) * 1e-20
    mixed[17] = 1e30
    rows.append(mixed)
    return np.array(rows, dtype=np.float32)


@pytest.mark.parametrize("op,version", version_params(["quantize_act"]))
def test_quantize_act_matches_policy(op, version):
    rng = np.random.default_rng(21)
    x = quant_rows(rng)
    for mode in ("half_even", "half_away"):
        want = quantize_activations(x, mode)
        for threads in (1, 2):
            assert_same_quant(kernels.quantize_act(x, mode, version=version, threads=threads), want,
                              f"{version} {mode} threads={threads}")
    # the tie rows really exercise the rounding mode
    q_even = kernels.quantize_act(x[6:8], "half_even", version=version)[0]
    q_away = kernels.quantize_act(x[6:8], "half_away", version=version)[0]
    assert (q_even != q_away).any()
    # short rows (scalar tails only) and a 1-D row
    for K in (1, 7, 15, 33):
        xs = rng.standard_normal((3, K)).astype(np.float32)
        assert_same_quant(kernels.quantize_act(xs, version=version), quantize_activations(xs), f"K={K}")
    q1, s1, sq1 = kernels.quantize_act(x[0], version=version)
    assert q1.shape == (x.shape[1],) and s1.shape == () and sq1.shape == ()
    assert_same_quant((q1[None], s1[None], sq1[None]), quantize_activations(x[:1]), "1-D")


def test_quantize_act_rejects_bad_input():
    x = np.ones((2, 16), np.float32)
    for bad, pattern in [
        (x.astype(np.float64), "float32"),
        (x[:, ::2], "C-contiguous"),
        (np.ones((2, 0), np.float32), "2-D"),
        (np.ones((2, 3, 4), np.float32), "2-D"),
        ([[1.0, 2.0]], "numpy"),
    ]:
        with pytest.raises(KernelError, match=pattern):
            kernels.quantize_act(bad)
    with pytest.raises(KernelError, match="rounding"):
        kernels.quantize_act(x, "half_up")
    nan = x.copy()
    nan[1, 3] = np.nan
    with pytest.raises(KernelError, match="row 1"):
        kernels.quantize_act(nan)
    inf = np.ones((4, 16), np.float32)
    inf[2, 0] = -np.inf
    with pytest.raises(KernelError, match=r"1 of 4 activation rows.*row 2"):
        kernels.quantize_act(inf, threads=2)


# ---- argument validation -----------------------------------------------------------------------


def test_products_reject_bad_arguments():
    M, K = 4, 256
    t = np.zeros((M, K), np.int8)
    p, tq2 = packing.pack_i2_s(t), pack("tq2", t)
    q = np.zeros(K, np.int8)
    with pytest.raises(CodecError, match="needs 256 bytes"):
        kernels.i2s_gemv(p[:-1], q, M, K)
    with pytest.raises(CodecError, match="K % 128"):
        kernels.i2s_gemv(p, q, M, 200)
    with pytest.raises(CodecError, match="K % 256"):
        kernels.tq2_gemv(tq2, q[:128], M, 128)
    with pytest.raises(CodecError, match="needs 264 bytes"):
        kernels.tq2_gemv(tq2[:-2], q, M, K)
    with pytest.raises(CodecError, match="dtype uint8"):
        kernels.i2s_gemv(p.view(np.int8), q, M, K)
    with pytest.raises(CodecError, match=">= 1"):
        kernels.i2s_gemv(p, q, 0, K)
    with pytest.raises(KernelError, match="dtype int8"):
        kernels.i2s_gemv(p, q.astype(np.int16), M, K)
    with pytest.raises(KernelError, match=r"shape \(K,\) with K = 256"):
        kernels.i2s_gemv(p, q[:128], M, K)
    with pytest.raises(KernelError, match="C-contiguous"):
        kernels.i2s_gemv(p, np.zeros(2 * K, np.int8)[::2], M, K)
    with pytest.raises(KernelError, match=r"shape \(N, K\)"):
        kernels.i2s_gemm(p, q, M, K)
    with pytest.raises(KernelError, match="no rows"):
        kernels.i2s_gemm(p, np.zeros((0, K), np.int8), M, K)
    with pytest.raises(KernelError, match="threads"):
        kernels.i2s_gemv(p, q, M, K, threads=0)
    with pytest.raises(KernelError, match="unknown version 'v9'"):
        kernels.i2s_gemv(p, q, M, K, version="v9")
    with pytest.raises(KernelError, match="not an ISA level"):
        kernels.i2s_gemv(p, q, M, K, isa="sse9")
    with pytest.raises(KernelError, match="2\\^22"):
        kernels.i2s_gemv(np.zeros((1 << 23) // 4, np.uint8), np.zeros(1 << 23, np.int8), 1, 1 << 23)
    if "avx2" in AVAILABLE:
        with pytest.raises(KernelError, match="runs on ISA level 'avx2', not isa='scalar'"):
            kernels.i2s_gemv(p, q, M, K, version="v1", isa="scalar")


@pytest.mark.skipif("avxvnni" in AVAILABLE, reason="this CPU has AVX-VNNI")
def test_unavailable_version_is_a_clear_error():
    p, q = packing.pack_i2_s(np.zeros((1, 128), np.int8)), np.zeros(128, np.int8)
    with pytest.raises(KernelError, match="needs ISA level 'avxvnni'"):
        kernels.i2s_gemv(p, q, 1, 128, version="avxvnni")


def test_kernel_versions_lists_what_runs():
    versions = kernels.kernel_versions()
    block_ops = {op for pair in kernels.BLOCK_OPS.values() for op in pair}  # tests/kernels/test_kernels_blocks.py
    assert set(versions) == {"quantize_act", *GEMV_OPS, *GEMM_OPS, *block_ops}
    for op, entries in versions.items():
        assert entries[0][:2] == ("v0", "scalar")
        assert all(isa in AVAILABLE and desc for _, isa, desc in entries)
        assert kernels.default_version(op) in [name for name, _, _ in entries]
    everything = kernels.kernel_versions(include_unavailable=True)
    assert any(name == "avxvnni" for name, _, _ in everything["i2s_gemv"])  # compiled on x86-64 builds
    if "avx512vnni" in AVAILABLE:
        assert kernels.default_version("i2s_gemv", "avx512vnni") == "v3"
        assert kernels.default_version("i2s_gemv", "avx2") == "v1"


# ---- TQ scale uniformity -----------------------------------------------------------------------


def test_tq_uniform_scale():
    t = np.zeros((2, 512), np.int8)
    t[0, 3] = 1
    t[1, 300] = -1
    d = packing.tq_default_block_scales(t, 0.8)  # blocks without a non-zero weight get d = 0
    assert (d == 0).sum() == 2
    assert kernels.tq_uniform_scale(d) == np.float32(np.float16(0.8))
    assert kernels.tq_uniform_scale(d, t) == np.float32(np.float16(0.8))
    assert kernels.tq_uniform_scale(np.zeros((2, 2), np.float16)) == 0.0
    d2 = d.copy()
    d2[1, 1] = np.float16(0.5)
    with pytest.raises(CodecError, match="block 3 has d = 0.5"):
        kernels.tq_uniform_scale(d2, name="blk.0.attn_q.weight")
    t2 = t.copy()
    t2[0, 400] = 1  # weight in a block whose d is 0
    with pytest.raises(CodecError, match="d = 0 but non-zero weights"):
        kernels.tq_uniform_scale(d, t2)
    with pytest.raises(CodecError, match="float16"):
        kernels.tq_uniform_scale(d.astype(np.float32))
    # the scaled integer product equals the dequantised product when d is uniform
    rng = np.random.default_rng(2)
    t = rng.integers(-1, 2, size=(3, 512), dtype=np.int8)
    d = packing.tq_default_block_scales(t, 0.25)
    data = packing.pack_tq2_0(t, d)
    q = rng.integers(-128, 128, size=512, dtype=np.int8)
    w_deq = packing.unpack_tq2_0(data, 3, 512)[0].astype(np.float64) * np.repeat(d.astype(np.float64), 256, axis=1)
    np.testing.assert_array_equal(kernels.tq_uniform_scale(d) * kernels.tq2_gemv(data, q, 3, 512).astype(np.float64),
                                  w_deq @ q.astype(np.float64))


# ---- fault injection ---------------------------------------------------------------------------


def test_fault_injection_is_visible_and_off_by_default():
    assert kernels.fault_status() is None and kernels.build_info()["fault"] is None
    rng = np.random.default_rng(4)
    M, K = 70, 512  # M, N past the tile GEMMs' blocks (amx: 32-row panels, 16-token tiles) and tails
    t = rng.integers(-1, 2, size=(M, K), dtype=np.int8)
    x = rng.standard_normal((35, K)).astype(np.float32)
    Q, s, sq = kernels.quantize_act(x)
    clean = {
        "i2s_gemv": lambda: kernels.i2s_gemv(pack("i2s", t), Q[0], M, K, threads=2),
        "i2s_gemm": lambda: kernels.i2s_gemm(pack("i2s", t), Q, M, K, threads=2),
        "i2s_x4_gemv": lambda: kernels.i2s_x4_gemv(pack("i2s_x4", t), Q[0], M, K, threads=2),
        "i2s_x4_gemm": lambda: kernels.i2s_x4_gemm(pack("i2s_x4", t), Q, M, K, threads=2),
        "tq2_gemv": lambda: kernels.tq2_gemv(pack("tq2", t), Q[0], M, K),
        "tq1_gemv": lambda: kernels.tq1_gemv(pack("tq1", t), Q[0], M, K),
        "tq2_gemm": lambda: kernels.tq2_gemm(pack("tq2", t), Q, M, K),
        "tq1_gemm": lambda: kernels.tq1_gemm(pack("tq1", t), Q, M, K),
        "tq1_x16_gemv": lambda: kernels.tq1_x16_gemv(pack("tq1_x16", t), Q[0], M, K, threads=2),
        "tq1_x16_gemm": lambda: kernels.tq1_x16_gemm(pack("tq1_x16", t), Q, M, K, threads=2),
        "quantize_act": lambda: kernels.quantize_act(x)[2],
    }
    baseline = {op: fn() for op, fn in clean.items()}
    try:
        for op, fn in clean.items():
            kernels.inject_fault(op)
            assert kernels.fault_status() == op and kernels.build_info()["fault"] == op
            for isa in AVAILABLE:
                with kernels.use_isa(isa):
                    diff = fn().astype(np.int64) - baseline[op]
                    assert diff.reshape(-1)[0] == 1 and not diff.reshape(-1)[1:].any(), (op, isa)
            for other, other_fn in clean.items():  # the other ops stay exact
                if other != op:
                    np.testing.assert_array_equal(other_fn(), baseline[other])
        kernels.inject_fault("tq1_gemm")  # microbench verifies before it times
        with pytest.raises(KernelError, match="disagrees with its numpy twin"):
            kernels.microbench("tq1_gemm", 8, 256, N=2, repeat=1)
    finally:
        kernels.inject_fault(None)
    assert kernels.fault_status() is None
    with pytest.raises(KernelError, match="unknown kernel"):
        kernels.inject_fault("i2s_gemvv")


def test_fault_env_var():
    code = ("from bitnet_lab import kernels; import numpy as np; "
            "print(kernels.fault_status(), kernels.build_info()['fault'])")
    env = {**os.environ, "BITNET_LAB_FAULT": "i2s_gemm", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["i2s_gemm", "i2s_gemm"]
    env["BITNET_LAB_FAULT"] = "everything"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "BITNET_LAB_FAULT='everything'" in proc.stderr


@pytest.mark.parametrize("op,version", version_params([*GEMV_OPS, *GEMM_OPS]))
def test_fault_reaches_every_version(op, version):
    """Every compiled version of every product (x4, TQ and the AMX tile GEMMs included, where this
    CPU runs them) takes the injected fault: one unit in out[0], on 1 and 2 threads."""
    rng = np.random.default_rng(5)
    M, K = 70, 512
    data = pack(op, rng.integers(-1, 2, size=(M, K), dtype=np.int8))
    q = rng.integers(-128, 128, size=K if op in GEMV_OPS else (35, K), dtype=np.int8)
    for threads in (1, 2):
        clean = KERNEL[op](data, q, M, K, version=version, threads=threads)
        kernels.inject_fault(op)
        try:
            broken = KERNEL[op](data, q, M, K, version=version, threads=threads)
        finally:
            kernels.inject_fault(None)
        diff = (broken.astype(np.int64) - clean).reshape(-1)
        assert diff[0] == 1 and not diff[1:].any(), (op, version, threads)


# ---- microbenchmark ----------------------------------------------------------------------------


def test_microbench_reports_rates():
    for op in ("i2s_gemv", "i2s_gemm", "quantize_act"):
        r = kernels.microbench(op, 64, 512, N=3, repeat=3, threads=1)
        assert r["op"] == op and r["version"] == kernels.default_version(op) and r["threads"] == 1
        assert r["seconds"] > 0 and r["seconds_min"] <= r["seconds"] and r["gop_s"] > 0 and r["gb_s"] > 0
    r = kernels.microbench("i2s_gemv", 64, 512, version="v0", repeat=2)
    assert (r["version"], r["isa"], r["N"]) == ("v0", "scalar", 1)


# ---- C-level tests -----------------------------------------------------------------------------


def _c_test(mode: str) -> str:
    proc = subprocess.run(["bash", str(C_TESTS), mode], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.mark.isa
@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_c_mad_kernels_native():
    if kernels.build_info()["target_arch"] != "x86_64":
        pytest.skip("run_mad_c_tests.sh native builds the x86-64 files")
    out = _c_test("native")
    ok = re.findall(r"MAD-OK \[(\w+) (\w+)", out)
    runnable = {(op, name) for op, entries in kernels.kernel_versions().items() for name, _, _ in entries}
    assert runnable <= set(ok), out  # every version Python can run passed in C too


@pytest.mark.isa
@pytest.mark.skipif(
    shutil.which("aarch64-linux-gnu-gcc") is None or shutil.which("qemu-aarch64") is None,
    reason="needs aarch64-linux-gnu-gcc and qemu-aarch64 (apt: gcc-aarch64-linux-gnu qemu-user)",
)
def test_c_mad_kernels_neon_under_qemu():
    out = _c_test("aarch64")
    runs = out.split("== qemu-aarch64")[1:]
    assert len(runs) == 2, out
    max_ok = set(re.findall(r"MAD-OK \[(\w+) (\w+)\]", runs[0]))
    a53_ok = set(re.findall(r"MAD-OK \[(\w+) (\w+)\]", runs[1]))
    assert {("i2s_gemv", "neon"), ("i2s_gemv", "neon_dotprod"), ("quantize_act", "neon"), ("i2s_gemm", "neon")} <= max_ok
    assert ("i2s_gemv", "neon") in a53_ok and not any(v == "neon_dotprod" for _, v in a53_ok)  # ARMv8.0: no SDOT
