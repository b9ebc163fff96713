"""The AVX-512 TL1 / TL2 GEMVs (cython_kernels/src/lut_avx512.c, version v2 of the avx512vnni
and amx levels) against the numpy twins (bitnet_lab.quant.lut) and the scalar kernel.

test_kernels_lut.py already runs every available level through its cases; this file adds what
the 512-bit kernels' own structure needs: every tiling the 2B-4T presets use at full K (the
shapes the layout runs), row ranges that start and end inside an M-tile and inside a kernel's
sub-tile group (thread counts 1..7), the int16 worst cases on those tilings (every entry at its
largest magnitude, and the sign pattern that makes every product positive), the TL2 sign plane
at every bit, and invalid indices reported exactly as the scalar kernel reports them.
Skipped where the CPU or the build lacks the avx512vnni level.
"""

from __future__ import annotations

import numpy as np
import pytest

from bitnet_lab import kernels
from bitnet_lab.errors import CodecError
from bitnet_lab.quant import lut, packing
from bitnet_lab.quant.tiling import MODEL_PRESETS, TLTiling

AVX512_ISAS = [i for i in ("avx512vnni", "amx") if i in kernels.available_isas()]
pytestmark = [
    pytest.mark.isa,
    pytest.mark.skipif(not AVX512_ISAS, reason="needs the avx512vnni level (CPU and build)"),
]
RANGE_THREADS = (1, 2, 3, 4, 5, 7)


def _preset_cases(layout: str) -> list[tuple[int, int, TLTiling]]:
    """The 2B-4T preset tilings at their full K, M cut to two M-tiles (k/v: its full 640 rows)."""
    p = next(p for p in MODEL_PRESETS if p.layout == layout and p.name == "BitNet-b1.58-2B-4T")
    return list(dict.fromkeys((min(M, 2 * t.BM), K, t) for (M, K), t in p.tilings.items()))


TL1_2B4T = _preset_cases("tl1")
TL2_2B4T = _preset_cases("tl2")
# the widest int16 spans: TL1 BK = 256 (bm 32 and 64), TL2 BK = 240 with a 224-column pair tail
TL1_WIDE = [(64, 512, TLTiling(64, 256, 32)), (128, 512, TLTiling(128, 256, 64))]
TL2_WIDE = [(64, 480, TLTiling(64, 240, 32)), (64, 704, TLTiling(32, 240, 32))]


def case_id(case) -> str:
    M, K, t = case
    return f"{M}x{K}-{t.BM}.{t.BK}.{t.bm}"


def _pack(layout, t, tiling):
    return packing.pack_tl1(t, tiling) if layout == "tl1" else packing.pack_tl2(t, tiling)


def _gemv(layout, data, q, M, K, tiling, isa, threads):
    fn = kernels.tl1_gemv if layout == "tl1" else kernels.tl2_gemv
    return fn(data, q, M, K, tiling, isa=isa, threads=threads)


def _twin(layout, data, q, M, K, tiling):
    if layout == "tl1":
        return lut.tl1_gemv_ref(data, lut.build_tl1_lut(q), M, K, tiling)
    return lut.tl2_gemv_ref(data, lut.build_tl2_lut(q, K, tiling), M, K, tiling)


def test_v2_is_the_gemv_of_the_avx512_levels():
    versions = kernels.lut_kernel_versions()
    for op in ("tl1_gemv", "tl2_gemv"):
        (v2,) = [v for v in versions if v["op"] == op and v["version"] == "v2"]
        assert v2["isa"] == "avx512vnni" and sorted(v2["default_for"]) == sorted(AVX512_ISAS)
    for op in ("tl1_build_lut", "tl2_build_lut"):  # the builds stay AVX2's (v1)
        assert not [v for v in versions if v["op"] == op and v["version"] == "v2"]
        (v1,) = [v for v in versions if v["op"] == op and v["version"] == "v1"]
        assert set(AVX512_ISAS) <= set(v1["default_for"])


@pytest.mark.parametrize("isa", AVX512_ISAS)
@pytest.mark.parametrize("case", [("tl1", c) for c in TL1_2B4T + TL1_WIDE] + [("tl2", c) for c in TL2_2B4T + TL2_WIDE],
                         ids=lambda c: f"{c[0]}-{case_id(c[1])}")
def test_random_rows_equal_twin_and_scalar_every_row_range(case, isa):
    layout, (M, K, tiling) = case
    rng = np.random.default_rng(M * 7 + K)
    t = rng.integers(-1, 2, size=(M, K), dtype=np.int8)
    data = _pack(layout, t, tiling)
    q = rng.integers(-128, 128, size=K, dtype=np.int8)
    want = _twin(layout, data, q, M, K, tiling)
    np.testing.assert_array_equal(_gemv(layout, data, q, M, K, tiling, "scalar", 1), want)
    for threads in RANGE_THREADS:  # runs of ceil(sub-tiles / threads) sub-tiles each
        got = _gemv(layout, data, q, M, K, tiling, isa, threads)
        np.testing.assert_array_equal(got, want, err_msg=f"{layout} {case_id((M, K, tiling))} threads={threads}")
    Q = rng.integers(-128, 128, size=(3, K), dtype=np.int8)  # a batch: one LUT per row
    np.testing.assert_array_equal(_gemv(layout, data, Q, M, K, tiling, isa, 2),
                                  np.stack([_twin(layout, data, r, M, K, tiling) for r in Q]))


@pytest.mark.parametrize("isa", AVX512_ISAS)
@pytest.mark.parametrize("layout", ["tl1", "tl2"])
def test_int16_worst_cases(layout, isa):
    """Every entry at its largest magnitude (|e| = 256 for TL1 pairs, 384 for TL2 triples: q all
    -128 and whole rows of -1 or +1), and q of ±127 / -128 with weights -sign(q) or sign(q), which
    makes every product the same sign: the int16 stages see their largest sums on each tiling."""
    cases = (TL1_2B4T + TL1_WIDE) if layout == "tl1" else (TL2_2B4T + TL2_WIDE)
    rng = np.random.default_rng(17)
    for M, K, tiling in cases:
        for qkind in ("-128", "127", "mixed"):
            if qkind == "mixed":
                q = np.where(rng.random(K) < 0.5, -128, 127).astype(np.int8)
            else:
                q = np.full(K, int(qkind), np.int8)
            t = rng.integers(-1, 2, size=(M, K), dtype=np.int8)
            t[0::4] = -1
            t[1::4] = 1
            t[2::4] = -np.sign(q).astype(np.int8)  # every product +|q|
            t[3::8] = np.sign(q).astype(np.int8)   # every product -|q|
            data = _pack(layout, t, tiling)
            want = (t.astype(np.int64) @ q.astype(np.int64)).astype(np.int32)
            assert int(np.abs(want).max()) == int(np.abs(q.astype(np.int64)).sum())  # the extreme is present
            for threads in (1, 2):
                got = _gemv(layout, data, q, M, K, tiling, isa, threads)
                np.testing.assert_array_equal(got, want, err_msg=f"{layout} {case_id((M, K, tiling))} q={qkind}")


@pytest.mark.parametrize("isa", AVX512_ISAS)
def test_tl2_every_sign_bit(isa):
    """One weight row pattern per sign bit: a tensor whose triples are all +13 except one triple
    position per row negated, over every (row, triple-in-unit) pair, equals the twin."""
    M, K, tiling = 64, 2560, TLTiling(64, 96, 32)
    rng = np.random.default_rng(23)
    t = np.ones((M, K), np.int8)
    for r in range(M):  # row r negates triple g of each unit of 8 triples; rows r, r + 16 differ
        g = (r + 3 * (r // 16)) % 8
        for k0 in range(3 * g, 2496, 24):
            t[r, k0:k0 + 3] = -1
    data = packing.pack_tl2(t, tiling)
    q = rng.integers(-128, 128, size=K, dtype=np.int8)
    want = (t.astype(np.int64) @ q.astype(np.int64)).astype(np.int32)
    np.testing.assert_array_equal(kernels.tl2_gemv(data, q, M, K, tiling, isa=isa, threads=1), want)
    np.testing.assert_array_equal(lut.tl2_gemv_ref(data, lut.build_tl2_lut(q, K, tiling), M, K, tiling), want)


def _error(layout, data, q, M, K, tiling, isa, threads) -> str:
    with pytest.raises(CodecError) as exc:
        _gemv(layout, data, q, M, K, tiling, isa, threads)
    return str(exc.value)


@pytest.mark.parametrize("isa", AVX512_ISAS)
@pytest.mark.parametrize("layout", ["tl1", "tl2"])
def test_invalid_indices_reported_as_scalar(layout, isa):
    """Bad nibbles planted at the start, middle and end of the blob (TL2: in the triple part
    and the pair tail): the same count and first byte as the scalar kernel, for 1 and 2 threads."""
    M, K, tiling = (TL1_2B4T if layout == "tl1" else TL2_2B4T)[0]
    rng = np.random.default_rng(29)
    data = _pack(layout, rng.integers(-1, 2, size=(M, K), dtype=np.int8), tiling)
    q = rng.integers(-128, 128, size=K, dtype=np.int8)
    if layout == "tl1":
        spots = [(0, 0xF0), (data.size // 2 + 5, 0x09), (data.size - 1, 0x90)]
    else:
        K3 = K // tiling.BK * tiling.BK
        n_idx, n_sign = M * K3 // 6, M * K3 // 24
        end = packing.tl2_nbytes(M, K, tiling)  # the blob is padded past the bytes the kernels read
        spots = [(3, 0xE0), (n_idx - 1, 0x0F), (n_idx + n_sign + 7, 0x09), (end - 1, 0xA0)]
    for picks in ([spots[0]], spots[1:], spots):
        bad = data.copy()
        for off, nib in picks:
            bad[off] = (bad[off] & 0x0F) | nib if nib & 0xF0 else (bad[off] & 0xF0) | nib
        want = _error(layout, bad, q, M, K, tiling, "scalar", 1)
        for threads in (1, 2):
            assert _error(layout, bad, q, M, K, tiling, isa, threads) == want
