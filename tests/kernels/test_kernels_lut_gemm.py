"""The TL1 / TL2 prefill GEMMs (cython_kernels/src/mad_amx.c, the amx level only): the index
nibbles decoded once per call into AMX B tiles, for a block of activation rows at a time.

Against the plain integer product and the GEMV of the same level: every 2B-4T preset tiling at
full K (the shapes prefill runs) and the widest spans, token counts around the 16-row tile
(1, 2, 15, 16, 17, 40), row ranges split over 1..7 threads, the all-one-sign worst cases, the TL2
sign plane at every bit, invalid indices reported exactly as the GEMV reports them, and the
fault bits. Levels without the GEMM refuse it by name. Skipped where the CPU or build lacks AMX.
"""

from __future__ import annotations

import numpy as np
import pytest

from bitnet_lab import kernels
from bitnet_lab.errors import CodecError, KernelError
from bitnet_lab.quant import packing
from bitnet_lab.quant.tiling import MODEL_PRESETS, TLTiling

HAS_AMX = "amx" in kernels.available_isas()
pytestmark = [pytest.mark.isa]
needs_amx = pytest.mark.skipif(not HAS_AMX, reason="needs the amx level (CPU and build)")
RANGE_THREADS = (1, 2, 3, 5, 7)
TOKENS = (1, 2, 15, 16, 17, 40)


def _preset_cases(layout: str) -> list[tuple[int, int, TLTiling]]:
    """The 2B-4T preset tilings at their full K, M cut to two M-tiles (k/v: its full 640 rows)."""
    p = next(p for p in MODEL_PRESETS if p.layout == layout and p.name == "BitNet-b1.58-2B-4T")
    return list(dict.fromkeys((min(M, 2 * t.BM), K, t) for (M, K), t in p.tilings.items()))


TL1_CASES = _preset_cases("tl1") + [(64, 512, TLTiling(64, 256, 32)), (128, 512, TLTiling(128, 256, 64))]
TL2_CASES = _preset_cases("tl2") + [(64, 960, TLTiling(64, 240, 32)),  # BK = 240, no tail
                                     (64, 704, TLTiling(32, 240, 32)),  # a 224-column pair tail
                                     (96, 384, TLTiling(96, 192, 32))]  # two K-tiles, 3 sub-tiles
CASES = [("tl1", c) for c in TL1_CASES] + [("tl2", c) for c in TL2_CASES]


def case_id(case) -> str:
    layout, (M, K, t) = case
    return f"{layout}-{M}x{K}-{t.BM}.{t.BK}.{t.bm}"


def _pack(layout, t, tiling):
    return packing.pack_tl1(t, tiling) if layout == "tl1" else packing.pack_tl2(t, tiling)


def _gemm(layout, data, Q, M, K, tiling, threads, isa="amx"):
    fn = kernels.tl1_gemm if layout == "tl1" else kernels.tl2_gemm
    return fn(data, Q, M, K, tiling, isa=isa, threads=threads)


def _gemv(layout, data, Q, M, K, tiling, isa="amx"):
    fn = kernels.tl1_gemv if layout == "tl1" else kernels.tl2_gemv
    return fn(data, Q, M, K, tiling, isa=isa, threads=2)


def product(t: np.ndarray, Q: np.ndarray) -> np.ndarray:
    return (Q.astype(np.int64) @ t.astype(np.int64).T).astype(np.int32)


def test_only_amx_has_the_gemm():
    versions = kernels.lut_kernel_versions()
    for op in ("tl1_gemm", "tl2_gemm"):
        defaults = [lvl for v in versions if v["op"] == op for lvl in v["default_for"]]
        assert defaults == (["amx"] if HAS_AMX else []), op
    for isa in kernels.available_isas():
        assert kernels.has_tl_gemm(isa) == (isa == "amx")


@pytest.mark.parametrize("isa", [i for i in kernels.available_isas() if i != "amx"])
def test_other_levels_refuse_the_gemm(isa):
    M, K, tiling = TL1_CASES[-2]
    data = packing.pack_tl1(np.zeros((M, K), np.int8), tiling)
    with pytest.raises(KernelError, match=f"tl1_gemm.*{isa}"):
        kernels.tl1_gemm(data, np.zeros((2, K), np.int8), M, K, tiling, isa=isa)


@needs_amx
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_random_rows_equal_product_and_gemv(case):
    layout, (M, K, tiling) = case
    rng = np.random.default_rng(M * 7 + K)
    t = rng.integers(-1, 2, size=(M, K), dtype=np.int8)
    data = _pack(layout, t, tiling)
    Q = rng.integers(-128, 128, size=(max(TOKENS), K), dtype=np.int8)
    Q[0, :2] = (-128, 127)
    want = product(t, Q)
    np.testing.assert_array_equal(_gemv(layout, data, Q[:3], M, K, tiling), want[:3])
    for n in TOKENS:
        for threads in RANGE_THREADS if n in (1, 17) else (2,):
            got = _gemm(layout, data, np.ascontiguousarray(Q[:n]), M, K, tiling, threads)
            assert got.dtype == np.int32 and got.shape == (n, M)
            np.testing.assert_array_equal(got, want[:n], err_msg=f"{case_id(case)} N={n} threads={threads}")


@needs_amx
@pytest.mark.parametrize("layout", ["tl1", "tl2"])
def test_one_sign_worst_cases(layout):
    """q of ±127 / -128 with weight rows of -1, +1, -sign(q) and sign(q): every product of a row
    has the same sign, so each row's sum is ±Σ|q| (nothing may wrap anywhere)."""
    rng = np.random.default_rng(17)
    for M, K, tiling in TL1_CASES if layout == "tl1" else TL2_CASES:
        rows = []
        for qkind in ("-128", "127", "mixed"):
            rows.append(np.where(rng.random(K) < 0.5, -128, 127) if qkind == "mixed" else np.full(K, int(qkind)))
        Q = np.stack(rows).astype(np.int8)
        t = rng.integers(-1, 2, size=(M, K), dtype=np.int8)
        t[0::4] = -1
        t[1::4] = 1
        t[2::4] = -np.sign(Q[2]).astype(np.int8)
        t[3::8] = np.sign(Q[2]).astype(np.int8)
        data = _pack(layout, t, tiling)
        want = product(t, Q)
        assert int(np.abs(want[2]).max()) == int(np.abs(Q[2].astype(np.int64)).sum())
        np.testing.assert_array_equal(_gemm(layout, data, Q, M, K, tiling, 2), want, err_msg=case_id((layout, (M, K, tiling))))


@needs_amx
def test_tl2_every_sign_bit():
    """Triples all +1 except one triple position per row negated, over every (row, triple-in-unit)
    pair: the sign plane's bit order in the decode."""
    M, K, tiling = 64, 2560, TLTiling(64, 96, 32)
    rng = np.random.default_rng(23)
    t = np.ones((M, K), np.int8)
    for r in range(M):
        g = (r + 3 * (r // 16)) % 8
        for k0 in range(3 * g, 2496, 24):
            t[r, k0:k0 + 3] = -1
    data = packing.pack_tl2(t, tiling)
    Q = rng.integers(-128, 128, size=(5, K), dtype=np.int8)
    np.testing.assert_array_equal(kernels.tl2_gemm(data, Q, M, K, tiling, isa="amx", threads=1), product(t, Q))


def _error(fn) -> str:
    with pytest.raises(CodecError) as exc:
        fn()
    return str(exc.value)


@needs_amx
@pytest.mark.parametrize("layout", ["tl1", "tl2"])
def test_invalid_indices_reported_as_the_gemv(layout):
    """Bad nibbles at the start, middle and end (TL2: triples and pair tail): the GEMM names the
    same count and first byte as the GEMV, for 1 and 2 threads and 1 or 17 tokens."""
    M, K, tiling = (TL1_CASES if layout == "tl1" else TL2_CASES)[0]
    rng = np.random.default_rng(29)
    data = _pack(layout, rng.integers(-1, 2, size=(M, K), dtype=np.int8), tiling)
    Q = rng.integers(-128, 128, size=(17, K), dtype=np.int8)
    if layout == "tl1":
        spots = [(0, 0xF0), (data.size // 2 + 5, 0x09), (data.size - 1, 0x90)]
    else:
        K3 = K // tiling.BK * tiling.BK
        n_idx, n_sign = M * K3 // 6, M * K3 // 24
        end = packing.tl2_nbytes(M, K, tiling)
        spots = [(3, 0xE0), (n_idx - 1, 0x0F), (n_idx + n_sign + 7, 0x09), (end - 1, 0xA0)]
    for picks in ([spots[0]], spots[1:], spots):
        bad = data.copy()
        for off, nib in picks:
            bad[off] = (bad[off] & 0x0F) | nib if nib & 0xF0 else (bad[off] & 0xF0) | nib
        want = _error(lambda: _gemv(layout, bad, Q[:1], M, K, tiling, "scalar"))
        for n in (1, 17):
            for threads in (1, 2):
                got = _error(lambda: _gemm(layout, bad, np.ascontiguousarray(Q[:n]), M, K, tiling, threads))
                assert got.replace(f"{layout}_gemm", f"{layout}_gemv") == want


@needs_amx
def test_bad_arguments_raise():
    M, K, tiling = 64, 512, TLTiling(64, 256, 32)
    data = packing.pack_tl1(np.zeros((M, K), np.int8), tiling)
    Q = np.zeros((3, K), np.int8)
    with pytest.raises(CodecError, match="needs one of"):
        kernels.tl1_gemm(data[:-1], Q, M, K, tiling)
    with pytest.raises(CodecError, match=r"2-D int8 array \(N, K\)"):
        kernels.tl1_gemm(data, Q[0], M, K, tiling)
    with pytest.raises(CodecError, match="K % 64"):
        t2 = TLTiling(64, 96, 32)
        kernels.tl2_gemm(packing.pack_tl2(np.zeros((64, 288), np.int8), t2), np.zeros((2, 288), np.int8), 64, 288, t2)
    with pytest.raises(CodecError, match="dtype int8"):
        kernels.tl1_gemm(data, Q.astype(np.int16), M, K, tiling)
    with pytest.raises(KernelError, match="threads must be >= 1"):
        kernels.tl1_gemm(data, Q, M, K, tiling, threads=0)


@needs_amx
@pytest.mark.parametrize("layout", ["tl1", "tl2"])
def test_gemm_fault_changes_one_value(layout):
    M, K, tiling = (TL1_CASES if layout == "tl1" else TL2_CASES)[-1]
    rng = np.random.default_rng(31)
    t = rng.integers(-1, 2, size=(M, K), dtype=np.int8)
    data = _pack(layout, t, tiling)
    Q = rng.integers(-128, 128, size=(17, K), dtype=np.int8)
    want = product(t, Q)
    op = f"{layout}_gemm"
    assert op in kernels.LUT_OPS and op in kernels.LAYOUT_OPS[layout]
    try:
        kernels.inject_fault(op)
        for threads in (1, 2):
            diff = _gemm(layout, data, Q, M, K, tiling, threads).astype(np.int64) - want
            assert diff[0, 0] == 1 and np.count_nonzero(diff) == 1, threads
        np.testing.assert_array_equal(_gemv(layout, data, Q[:2], M, K, tiling), want[:2])  # the GEMV stays exact
    finally:
        kernels.inject_fault(None)
    np.testing.assert_array_equal(_gemm(layout, data, Q, M, K, tiling, 2), want)
