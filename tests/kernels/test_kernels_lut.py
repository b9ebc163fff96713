"""TL1 / TL2 lookup-table kernels: the numpy twins (bitnet_lab.quant.lut) and the native
kernels (bitnet_lab.kernels tl1_* / tl2_*, cython_kernels/src/lut_*.c).

* Tables: every entry against a brute force over all 9 pairs / 27 triples of weights; the byte
  planes against the int16 tables; the native tables byte for byte against the twin's.
* GEMV: twin and native (every available ISA level, 1 and 2 threads) equal the plain integer
  product ``unpack(data) @ q`` on every preset shape of tiling.py (M cut to two BM tiles) and
  on non-preset tilings (1, 2, 3 threads for the GEMVs), TL2 pair tails included; extreme activations (±127, −128) on the
  tilings with the longest int16 spans (TL1 BK = 256, TL2 BK = 240 and a 224-column tail).
* Errors: invalid index nibbles (located), short / wrong-length data, bad dtypes and shapes,
  illegal tilings, bad threads / ISA names.
* The C-level test (cython_kernels/tests/run_lut_c_tests.sh) natively and, when the cross
  tools are installed, for aarch64 NEON under qemu-user.
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from bitnet_lab import kernels
from bitnet_lab.errors import CodecError, KernelError
from bitnet_lab.quant import lut, packing
from bitnet_lab.quant.tiling import DUMMY_TL1_TILING, TL1_PRESETS, TL2_PRESETS
from bitnet_lab.quant.tiling import TLTiling

ROOT = Path(__file__).resolve().parents[2]
C_TESTS = ROOT / "cython_kernels" / "tests" / "run_lut_c_tests.sh"
ISAS = kernels.available_isas()
THREADS = (1, 2)
GEMV_THREADS = (1, 2, 3)  # 3: thread runs that start and end inside a kernel's sub-tile group

# (M, K, tiling): legal tilings no preset uses (tails, BK extremes, several tiles / sub-tiles).
TL1_EXTRA = [
    (64, 256, TLTiling(64, 256, 32)),    # BK = 256, bm = 32
    (128, 512, TLTiling(128, 256, 64)),  # BK = 256, bm = 64: the longest int16 span
    (96, 192, TLTiling(96, 64, 32)),     # 3 sub-tiles per tile
    (128, 384, TLTiling(64, 128, 64)),   # 2 M-tiles of 1 sub-tile
    (64, 40, TLTiling(64, 8, 32)),       # BK = by
    (512, 512, DUMMY_TL1_TILING),        # what the dummy generator writes
    (640, 64, TLTiling(640, 64, 32)),    # 20 sub-tiles in one M-tile: kernel groups of 16 + 4
]
TL2_EXTRA = [
    (64, 288, TLTiling(64, 96, 32)),     # no tail
    (64, 320, TLTiling(32, 96, 32)),     # tail of 32 columns, 2 M-tiles
    (32, 256, TLTiling(32, 192, 32)),    # tail of 64
    (96, 464, TLTiling(96, 216, 32)),    # BK = 216, 3 sub-tiles
    (64, 480, TLTiling(64, 240, 32)),    # BK = 240: the longest triple span
    (64, 704, TLTiling(32, 240, 32)),    # tail of 224: the longest pair-tail span
    (64, 2560, TLTiling(64, 96, 32)),    # the 2B-4T's K, tail of 64
    (640, 256, TLTiling(640, 192, 32)),  # 20 sub-tiles in one M-tile, tail of 64
]


def cut(presets: dict) -> list[tuple[int, int, TLTiling]]:
    """Every preset with M cut to two BM tiles."""
    return [(2 * t.BM, K, t) for (_, K), t in presets.items()]


TL1_CASES = cut(TL1_PRESETS) + TL1_EXTRA
TL2_CASES = cut(TL2_PRESETS) + TL2_EXTRA


def case_id(case) -> str:
    M, K, t = case
    return f"{M}x{K}-{t.BM}.{t.BK}.{t.bm}"


def ternary(rng, M, K) -> np.ndarray:
    return rng.integers(-1, 2, size=(M, K), dtype=np.int8)


def acts(rng, K) -> np.ndarray:
    q = rng.integers(-128, 128, size=K, dtype=np.int8)
    q[: min(K, 2)] = (-128, 127)[: min(K, 2)]
    return q


def product(t: np.ndarray, q: np.ndarray) -> np.ndarray:
    """The plain integer product Σ_k t[r, k]·q[k] (or (N, M) for a batch q)."""
    return (q.astype(np.int64) @ t.astype(np.int64).T).astype(np.int32)


# ---- tables (numpy twin) --------------------------------------------------------------------


def test_tl1_table_entries_brute_force():
    rng = np.random.default_rng(1)
    q = acts(rng, 64)
    tab = lut.build_tl1_lut(q)
    assert tab.shape == (32, 16) and tab.dtype == np.int16
    for t0, t1 in itertools.product((-1, 0, 1), repeat=2):
        want = t0 * q[0::2].astype(np.int32) + t1 * q[1::2].astype(np.int32)
        np.testing.assert_array_equal(tab[:, 3 * t0 + t1 + 4], want)
    assert not tab[:, 9:].any()


def test_tl2_table_entries_brute_force_with_sign():
    rng = np.random.default_rng(2)
    K, tiling = 320, TLTiling(32, 96, 32)  # three_k = 288 (96 triples), tail 32 (16 pairs)
    q = acts(rng, K)
    tab = lut.build_tl2_lut(q, K, tiling)
    assert tab.shape == (96 + 16, 16) and tab.dtype == np.int16
    b = q[:288].astype(np.int32).reshape(-1, 3)
    for t0, t1, t2 in itertools.product((-1, 0, 1), repeat=3):
        v = 9 * t0 + 3 * t1 + t2  # the weight triple reads entry |v| and negates when v < 0
        looked = np.sign(v) * tab[:96, abs(v)].astype(np.int32) if v else tab[:96, 0].astype(np.int32)
        np.testing.assert_array_equal(looked, b @ np.array([t0, t1, t2]))
    assert not tab[:96, 14:].any()
    np.testing.assert_array_equal(tab[96:], lut.build_tl1_lut(q[288:]))


def test_byte_planes_layout_and_round_trip():
    rng = np.random.default_rng(3)
    tab = lut.build_tl2_lut(acts(rng, 256), 256, TLTiling(32, 192, 32))
    planes = lut.lut_byte_planes(tab)
    assert planes.shape == (tab.shape[0], 32) and planes.dtype == np.uint8
    u = tab.view(np.uint16)
    np.testing.assert_array_equal(planes[:, :16], u & 0xFF)  # low bytes first
    np.testing.assert_array_equal(planes[:, 16:], u >> 8)    # then high bytes
    np.testing.assert_array_equal(lut.lut_from_byte_planes(planes), tab)
    np.testing.assert_array_equal(lut.lut_from_byte_planes(planes.reshape(-1)), tab)


def test_table_builders_reject_bad_rows():
    with pytest.raises(CodecError, match="int8"):
        lut.build_tl1_lut(np.zeros(8, np.int16))
    with pytest.raises(CodecError, match="even"):
        lut.build_tl1_lut(np.zeros(7, np.int8))
    with pytest.raises(CodecError, match="BK % 24"):
        lut.build_tl2_lut(np.zeros(288, np.int8), 288, TLTiling(32, 36, 32))


# ---- GEMV twins == unpack @ q -----------------------------------------------------------------


@pytest.mark.parametrize("case", TL1_CASES, ids=case_id)
def test_tl1_twin_equals_integer_product(case):
    M, K, tiling = case
    rng = np.random.default_rng(M + K)
    data = packing.pack_tl1(ternary(rng, M, K), tiling)
    q = acts(rng, K)
    want = product(packing.unpack_tl1(data, M, K, tiling), q)
    np.testing.assert_array_equal(lut.tl1_gemv_ref(data, lut.build_tl1_lut(q), M, K, tiling), want)


@pytest.mark.parametrize("case", TL2_CASES, ids=case_id)
def test_tl2_twin_equals_integer_product(case):
    M, K, tiling = case
    rng = np.random.default_rng(M + K + 1)
    data = packing.pack_tl2(ternary(rng, M, K), tiling)
    q = acts(rng, K)
    want = product(packing.unpack_tl2(data, M, K, tiling), q)
    np.testing.assert_array_equal(lut.tl2_gemv_ref(data, lut.build_tl2_lut(q, K, tiling), M, K, tiling), want)


# ---- native tables == twin tables, byte for byte ------------------------------------------------


@pytest.mark.isa
@pytest.mark.parametrize("isa", ISAS)
def test_native_tables_byte_identical(isa):
    rng = np.random.default_rng(4)
    for K in (2, 40, 1536, 8640):
        q = acts(rng, K)
        got = kernels.tl1_build_lut(q, isa=isa)
        assert got.dtype == np.uint8 and got.shape == (K // 2, 32)
        np.testing.assert_array_equal(got, lut.tl1_lut_planes(q))
    for M, K, tiling in TL2_EXTRA:
        q = acts(rng, K)
        np.testing.assert_array_equal(kernels.tl2_build_lut(q, K, tiling, isa=isa), lut.tl2_lut_planes(q, K, tiling))
    extreme = np.full(300, -128, np.int8)
    np.testing.assert_array_equal(kernels.tl1_build_lut(extreme, isa=isa), lut.tl1_lut_planes(extreme))


# ---- native GEMV == unpack @ q -------------------------------------------------------------------


@pytest.mark.isa
@pytest.mark.parametrize("isa", ISAS)
def test_native_tl1_gemv_bit_exact(isa):
    rng = np.random.default_rng(5)
    for M, K, tiling in TL1_CASES:
        data = packing.pack_tl1(ternary(rng, M, K), tiling)
        q = acts(rng, K)
        want = product(packing.unpack_tl1(data, M, K, tiling), q)
        for threads in GEMV_THREADS:
            got = kernels.tl1_gemv(data, q, M, K, tiling, isa=isa, threads=threads)
            assert got.dtype == np.int32 and got.shape == (M,)
            np.testing.assert_array_equal(got, want, err_msg=f"{case_id((M, K, tiling))} threads={threads}")


@pytest.mark.isa
@pytest.mark.parametrize("isa", ISAS)
def test_native_tl2_gemv_bit_exact(isa):
    rng = np.random.default_rng(6)
    for M, K, tiling in TL2_CASES:
        data = packing.pack_tl2(ternary(rng, M, K), tiling)
        q = acts(rng, K)
        want = product(packing.unpack_tl2(data, M, K, tiling), q)
        for threads in GEMV_THREADS:
            got = kernels.tl2_gemv(data, q, M, K, tiling, isa=isa, threads=threads)
            assert got.dtype == np.int32 and got.shape == (M,)
            np.testing.assert_array_equal(got, want, err_msg=f"{case_id((M, K, tiling))} threads={threads}")


EXTREME_TL1 = [c for c in TL1_EXTRA if c[2].BK == 256]
EXTREME_TL2 = [c for c in TL2_EXTRA if c[2].BK == 240]


@pytest.mark.isa
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("value", [127, -127, -128])
def test_extreme_activations(isa, value):
    """Constant ±127 / −128 rows with all-equal weight rows (every entry at its largest
    magnitude: |Σ| over one K-tile exceeds int16 when not widened in time) and random rows."""
    rng = np.random.default_rng(7)
    for layout, cases in (("tl1", EXTREME_TL1), ("tl2", EXTREME_TL2)):
        for M, K, tiling in cases:
            t = ternary(rng, M, K)
            t[0::3] = -1  # whole rows of -1, of +1, then random rows
            t[1::3] = 1
            q = np.full(K, value, np.int8)
            pack, gemv = (packing.pack_tl1, kernels.tl1_gemv) if layout == "tl1" else (packing.pack_tl2, kernels.tl2_gemv)
            data = pack(t, tiling)
            got = gemv(data, q, M, K, tiling, isa=isa, threads=2)
            np.testing.assert_array_equal(got, product(t, q), err_msg=f"{layout} {case_id((M, K, tiling))}")
            assert got[0] == -value * K  # nothing wrapped


@pytest.mark.isa
@pytest.mark.parametrize("isa", ISAS)
def test_batch_rows_equal_single_rows(isa):
    rng = np.random.default_rng(8)
    M, K, tiling = TL2_EXTRA[1]
    t = ternary(rng, M, K)
    d2 = packing.pack_tl2(t, tiling)
    Q = rng.integers(-128, 128, size=(3, K), dtype=np.int8)
    got = kernels.tl2_gemv(d2, Q, M, K, tiling, isa=isa)
    assert got.shape == (3, M)
    np.testing.assert_array_equal(got, product(t, Q))
    M, K, tiling = TL1_EXTRA[2]
    t = ternary(rng, M, K)
    Q = rng.integers(-128, 128, size=(2, K), dtype=np.int8)
    np.testing.assert_array_equal(kernels.tl1_gemv(packing.pack_tl1(t, tiling), Q, M, K, tiling, isa=isa), product(t, Q))


def test_blob_lengths_accepted():
    """The real bytes, the converter's padded blob and the blob with the hidden scale slot."""
    rng = np.random.default_rng(9)
    M, K, tiling = 64, 320, TLTiling(32, 96, 32)
    t, q = ternary(rng, M, K), acts(rng, K)
    want = product(t, q)
    padded = packing.pack_tl2(t, tiling)  # tl2_padded_nbytes
    assert padded.size == packing.tl2_padded_nbytes(M, K)
    real = padded[: packing.tl2_nbytes(M, K, tiling)]
    slot = np.concatenate([padded, np.zeros(packing.tl2_ggml_nbytes(M, K) - padded.size, np.uint8)])
    for blob in (real, padded, slot, bytes(slot)):
        np.testing.assert_array_equal(kernels.tl2_gemv(blob, q, M, K, tiling), want)
    d1 = packing.pack_tl1(t, TLTiling(64, 64, 32))
    with_slot = np.concatenate([d1, np.full(32, 0xFF, np.uint8)])  # the slot is never read
    np.testing.assert_array_equal(kernels.tl1_gemv(with_slot, q, M, K, TLTiling(64, 64, 32)), want)


# ---- TL back to ternary values (the engine's load-time transcode) ---------------------------------


@pytest.mark.parametrize("layout", ["tl1", "tl2"])
def test_tl_ternary_is_the_unpack_twin(layout):
    """kernels.tl_ternary (lut_scalar.c) gives the weights packing.unpack_tl1 / unpack_tl2 read, on
    every preset and every extra tiling (tails, BK extremes, several tiles), blob lengths with the
    scale slot included."""
    rng = np.random.default_rng(12)
    cases = TL1_CASES if layout == "tl1" else TL2_CASES
    for M, K, tiling in cases:
        t = ternary(rng, M, K)
        data = (packing.pack_tl1 if layout == "tl1" else packing.pack_tl2)(t, tiling)
        got = kernels.tl_ternary(layout, data, M, K, tiling)
        assert got.dtype == np.int8 and got.shape == (M, K)
        np.testing.assert_array_equal(got, t, err_msg=f"{layout} {case_id((M, K, tiling))}")
        unpack = packing.unpack_tl1 if layout == "tl1" else packing.unpack_tl2
        np.testing.assert_array_equal(got, unpack(data, M, K, tiling))


def test_tl_ternary_reports_invalid_indices_as_the_gemvs():
    rng = np.random.default_rng(13)
    M, K, tiling = 128, 384, TLTiling(64, 128, 64)
    bad = packing.pack_tl1(ternary(rng, M, K), tiling)
    bad[[700, 9000]] = (0xF0 | (bad[700] & 0x0F), (bad[9000] & 0xF0) | 0x09)
    r, k = lut.tl1_byte_location(700, M, K, tiling)
    with pytest.raises(CodecError, match=rf"tl1_ternary\('w\.0'\): TL1 .* 2 invalid pair index nibble\(s\).*byte 700 .*row {r}, columns {k}\.\."):
        kernels.tl_ternary("tl1", bad, M, K, tiling, name="w.0")
    M, K, tiling = 64, 320, TLTiling(32, 96, 32)
    bad = packing.pack_tl2(ternary(rng, M, K), tiling)
    off = M * 288 // 6 - 3
    bad[off] = (bad[off] & 0x0F) | 0xE0
    with pytest.raises(CodecError, match=rf"1 invalid .*byte {off}, in the triples part"):
        kernels.tl_ternary("tl2", bad, M, K, tiling)
    with pytest.raises(CodecError, match="needs"):
        kernels.tl_ternary("tl2", bad[:100], M, K, tiling)
    with pytest.raises(CodecError, match="layout must be"):
        kernels.tl_ternary("tq1_0", bad, M, K, tiling)


# ---- invalid data and arguments ------------------------------------------------------------------


def test_tl1_byte_location_matches_layout():
    """The helper that names weights in error messages, against the codec: one byte set in an
    all-index-0 blob changes exactly the 4 weights it names."""
    M, K, tiling = 128, 384, TLTiling(64, 128, 64)
    base = np.zeros(M * K // 4, np.uint8)  # index 0 everywhere: t = -1
    for off in (0, 17, 1000, base.size - 1):
        d = base.copy()
        d[off] = 0x44  # both pairs (0, 0)
        changed = np.argwhere(packing.unpack_tl1(d, M, K, tiling) != -1)
        r, k = lut.tl1_byte_location(off, M, K, tiling)
        np.testing.assert_array_equal(changed, [[r, k], [r, k + 1], [r, k + 2], [r, k + 3]])


def test_tl2_byte_location_matches_layout():
    """Same for TL2: in an all-zero blob (triples of magnitude 0 = weights 0, tail index 0 =
    weights -1) one changed byte changes exactly the weights it names."""
    M, K, tiling = 64, 320, TLTiling(32, 96, 32)  # three_k = 288, tail of 32
    n_idx, n_sign = M * 288 // 6, M * 288 // 24
    base = np.zeros(packing.tl2_nbytes(M, K, tiling), np.uint8)
    ref = packing.unpack_tl2(base, M, K, tiling)
    # 0x11: both triples magnitude 1 = (0, 0, 1): columns k+2 and k+5; 0x44 in the tail: both
    # pairs (0, 0) instead of (-1, -1): columns k..k+3.
    for off, val, part, cols in ((5, 0x11, "triples", (2, 5)), (n_idx - 1, 0x11, "triples", (2, 5)),
                                 (n_idx + n_sign + 3, 0x44, "tail", (0, 1, 2, 3))):
        d = base.copy()
        d[off] = val
        got_part, r, k = lut.tl2_byte_location(off, M, K, tiling)
        assert got_part == part
        diff = np.argwhere(packing.unpack_tl2(d, M, K, tiling) != ref)
        np.testing.assert_array_equal(diff, [[r, k + c] for c in cols])


@pytest.mark.isa
@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("isa", ISAS)
def test_invalid_tl1_index_raises_with_position(isa, threads):
    rng = np.random.default_rng(10)
    M, K, tiling = 128, 384, TLTiling(64, 128, 64)
    data = packing.pack_tl1(ternary(rng, M, K), tiling)
    q = acts(rng, K)
    bad = data.copy()
    bad[[700, 9000]] = (0xF0 | (bad[700] & 0x0F), (bad[9000] & 0xF0) | 0x09)
    r, k = lut.tl1_byte_location(700, M, K, tiling)
    with pytest.raises(CodecError, match=rf"2 invalid pair index nibble\(s\).*byte 700 .*row {r}, columns {k}\.\.{k + 3}"):
        kernels.tl1_gemv(bad, q, M, K, tiling, isa=isa, threads=threads)
    with pytest.raises(CodecError, match="invalid pair indices"):
        lut.tl1_gemv_ref(bad, lut.build_tl1_lut(q), M, K, tiling)


@pytest.mark.isa
@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("isa", ISAS)
def test_invalid_tl2_index_raises_with_position(isa, threads):
    rng = np.random.default_rng(11)
    M, K, tiling = 64, 320, TLTiling(32, 96, 32)
    data = packing.pack_tl2(ternary(rng, M, K), tiling)
    q = acts(rng, K)
    n_idx, n_sign = M * 288 // 6, M * 288 // 24
    for off, nib, part in ((n_idx - 3, 0xE0, "triples"), (n_idx + n_sign + 100, 0x09, "tail")):
        bad = data.copy()
        bad[off] = (bad[off] & 0x0F) | nib if nib & 0xF0 else (bad[off] & 0xF0) | nib
        _, r, k = lut.tl2_byte_location(off, M, K, tiling)
        with pytest.raises(CodecError, match=rf"1 invalid .*byte {off}, in the {part} part \(weights of row {r}, columns {k}\."):
            kernels.tl2_gemv(bad, q, M, K, tiling, isa=isa, threads=threads)
        with pytest.raises(CodecError, match="invalid"):
            lut.tl2_gemv_ref(bad, lut.build_tl2_lut(q, K, tiling), M, K, tiling)


def test_bad_arguments_raise():
    rng = np.random.default_rng(12)
    M, K, t1 = 64, 256, TLTiling(64, 256, 32)
    d1 = packing.pack_tl1(ternary(rng, M, K), t1)
    q = acts(rng, K)
    with pytest.raises(CodecError, match=r"needs one of 4096 \(tl1_nbytes\), 4128"):
        kernels.tl1_gemv(d1[:-1], q, M, K, t1)
    with pytest.raises(CodecError, match="needs one of"):
        kernels.tl1_gemv(np.concatenate([d1, d1[:5]]), q, M, K, t1)
    with pytest.raises(CodecError, match=r"M % BM == 0 fails"):
        kernels.tl1_gemv(d1, q, M, K, TLTiling(48, 256, 32))
    with pytest.raises(CodecError, match=r"bm in \(32, 64\) fails"):
        kernels.tl1_gemv(d1, q, M, K, TLTiling(64, 256, 16))
    with pytest.raises(CodecError, match="tiling must be a TLTiling"):
        kernels.tl1_gemv(d1, q, M, K, (64, 256, 32))
    with pytest.raises(CodecError, match="dtype int8"):
        kernels.tl1_gemv(d1, q.astype(np.int16), M, K, t1)
    with pytest.raises(CodecError, match=r"shape \(256,\) or \(N, 256\)"):
        kernels.tl1_gemv(d1, q[:-2], M, K, t1)
    with pytest.raises(CodecError, match="C-contiguous"):
        kernels.tl1_gemv(d1, np.stack([q, q], axis=1).T, M, K, t1)
    with pytest.raises(CodecError, match="dtype uint8"):
        kernels.tl1_gemv(d1.astype(np.int8), q, M, K, t1)
    with pytest.raises(KernelError, match="threads must be >= 1"):
        kernels.tl1_gemv(d1, q, M, K, t1, threads=0)
    with pytest.raises(KernelError, match="not an ISA level"):
        kernels.tl1_gemv(d1, q, M, K, t1, isa="sse9")
    t2 = TLTiling(64, 96, 32)
    d2 = packing.pack_tl2(ternary(rng, M, 320), t2)
    q2 = acts(rng, 320)
    with pytest.raises(CodecError, match=r"tl2_nbytes.*tl2_padded_nbytes.*tl2_ggml_nbytes.*; got 10"):
        kernels.tl2_gemv(d2[:10], q2, M, 320, t2)
    with pytest.raises(CodecError, match=r"\(K % BK\) % 32 == 0 fails"):
        kernels.tl2_gemv(d2, q2, M, 320, TLTiling(64, 120, 32))
    with pytest.raises(CodecError, match="entries, K = 320"):
        kernels.tl2_build_lut(q2[:-1], 320, t2)
    with pytest.raises(CodecError, match="BK % 24 == 0 fails"):
        kernels.tl2_build_lut(q2, 320, TLTiling(32, 36, 32))
    with pytest.raises(CodecError, match="even"):
        kernels.tl1_build_lut(q[:-1])
    with pytest.raises(CodecError, match="int8"):
        kernels.tl1_build_lut(q.astype(np.float32))


def test_private_wrapper_checks_memory_safety():
    """The compiled wrapper itself refuses what would read out of bounds (for direct calls)."""
    from bitnet_lab import _kernels as _k

    q = np.zeros(256, np.int8)
    with pytest.raises(CodecError, match="needs M\\*K/4 = 4096 bytes"):
        _k.tl1_gemv(np.zeros(100, np.uint8), q, 64, 256, 64, 256, 32, 0, 1)
    with pytest.raises(CodecError, match="illegal TL1 tiling"):
        _k.tl1_gemv(np.zeros(4096, np.uint8), q, 64, 256, 64, 512, 32, 0, 1)
    with pytest.raises(CodecError, match="illegal TL2 tiling"):
        _k.tl2_gemv(np.zeros(4096, np.uint8), q, 64, 256, 64, 100, 0, 1)


def test_kernel_versions_cover_every_level():
    versions = kernels.lut_kernel_versions()
    for op in ("tl1_build_lut", "tl2_build_lut", "tl1_gemv", "tl2_gemv"):
        defaults = [lvl for v in versions if v["op"] == op for lvl in v["default_for"]]
        assert sorted(defaults) == sorted(ISAS), op  # each available level runs exactly one version
    if "avx2" in ISAS:
        assert {v["version"] for v in versions if "avx2" in v["default_for"]} == {"v1"}


# ---- C-level tests (NEON under qemu) ---------------------------------------------------------------


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_c_level_native():
    r = subprocess.run(["bash", str(C_TESTS), "native"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "PASS test_lut" in r.stdout


@pytest.mark.isa
@pytest.mark.skipif(
    shutil.which("aarch64-linux-gnu-gcc") is None or shutil.which("qemu-aarch64") is None,
    reason="needs aarch64-linux-gnu-gcc and qemu-aarch64",
)
def test_c_level_neon_under_qemu():
    r = subprocess.run(["bash", str(C_TESTS), "aarch64"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("PASS test_lut (2 levels)") == 2  # -cpu max and -cpu cortex-a53
    assert "ok   [neon] TL2 GEMV" in r.stdout


# ---- fault injection -------------------------------------------------------------------------
# kernels.inject_fault covers the LUT ops too (bl_lut.h): a build adds 1 to every entry of its
# first table, a GEMV adds 1 to out[0]. Each must change the result, leave every other op exact,
# and be caught by verify on a model whose projections run it.

FAULT_CASES = {"tl1": (128, 384, TLTiling(64, 128, 64)), "tl2": (64, 320, TLTiling(32, 96, 32))}


@pytest.fixture
def no_fault():
    yield
    kernels.inject_fault(None)


def _lut_run(layout: str, data, q, M, K, tiling, isa, threads):
    """(LUT bytes, GEMV result) of one row through the native kernels."""
    if layout == "tl1":
        return kernels.tl1_build_lut(q, isa=isa), kernels.tl1_gemv(data, q, M, K, tiling, isa=isa, threads=threads)
    return kernels.tl2_build_lut(q, K, tiling, isa=isa), kernels.tl2_gemv(data, q, M, K, tiling, isa=isa, threads=threads)


def test_lut_ops_are_fault_ops():
    assert set(kernels.LUT_OPS) == {"tl1_build_lut", "tl2_build_lut", "tl1_gemv", "tl2_gemv", "tl1_gemm", "tl2_gemm"}
    assert kernels.FAULT_OPS == kernels.MAD_OPS + kernels.LUT_OPS
    # every op the engine runs on some layout can be broken
    assert {op for ops in kernels.LAYOUT_OPS.values() for op in ops} <= set(kernels.FAULT_OPS)
    for layout in ("tl1", "tl2"):
        assert kernels.LAYOUT_OPS[layout] == (f"{layout}_gemv", f"{layout}_build_lut", f"{layout}_gemm")


@pytest.mark.parametrize("layout", ["tl1", "tl2"])
def test_lut_faults_change_the_result(layout, no_fault):
    M, K, tiling = FAULT_CASES[layout]
    rng = np.random.default_rng(21)
    pack = packing.pack_tl1 if layout == "tl1" else packing.pack_tl2
    data = pack(ternary(rng, M, K), tiling)
    q = acts(rng, K)
    clean = {(isa, th): _lut_run(layout, data, q, M, K, tiling, isa, th) for isa in ISAS for th in THREADS}
    mad_data = packing.pack_i2_s(ternary(rng, 8, 128))
    mad_q = rng.integers(-128, 128, size=128, dtype=np.int8)
    mad_clean = kernels.i2s_gemv(mad_data, mad_q, 8, 128)
    build_op, gemv_op = f"{layout}_build_lut", f"{layout}_gemv"
    other = "tl2" if layout == "tl1" else "tl1"
    for op in (build_op, gemv_op):
        kernels.inject_fault(op)
        assert kernels.fault_status() == op and kernels.build_info()["fault"] == op
        for (isa, th), (lut0, out0) in clean.items():
            lut1, out1 = _lut_run(layout, data, q, M, K, tiling, isa, th)
            diff = out1.astype(np.int64) - out0
            if op == gemv_op:  # one unit in out[0], the same for every thread split
                np.testing.assert_array_equal(lut1, lut0)
                assert diff[0] == 1 and not diff[1:].any(), (op, isa, th)
            else:  # every entry of the first table one too large: every row moves by one
                t0 = lut0[0, :16].astype(np.int32) | (lut0[0, 16:].astype(np.int32) << 8)
                t1 = lut1[0, :16].astype(np.int32) | (lut1[0, 16:].astype(np.int32) << 8)
                assert np.array_equal((t1 - t0) % 65536, np.ones(16)), (op, isa)
                np.testing.assert_array_equal(lut1[1:], lut0[1:])
                assert np.all(np.abs(diff) == 1), (op, isa, th)
        # the other layout's kernels and the MAD kernels stay exact
        o_M, o_K, o_tiling = FAULT_CASES[other]
        o_data = (packing.pack_tl1 if other == "tl1" else packing.pack_tl2)(ternary(rng, o_M, o_K), o_tiling)
        o_q = acts(rng, o_K)
        o_want = product((packing.unpack_tl1 if other == "tl1" else packing.unpack_tl2)(o_data, o_M, o_K, o_tiling), o_q)
        np.testing.assert_array_equal(_lut_run(other, o_data, o_q, o_M, o_K, o_tiling, None, 2)[1], o_want)
        np.testing.assert_array_equal(kernels.i2s_gemv(mad_data, mad_q, 8, 128), mad_clean)
    kernels.inject_fault(None)
    assert kernels.fault_status() is None
    for (isa, th), (lut0, out0) in clean.items():
        lut1, out1 = _lut_run(layout, data, q, M, K, tiling, isa, th)
        np.testing.assert_array_equal(lut1, lut0)
        np.testing.assert_array_equal(out1, out0)


def test_lut_fault_env_var():
    import os
    import subprocess
    import sys

    code = "from bitnet_lab import kernels; print(kernels.fault_status())"
    env = {**os.environ, "BITNET_LAB_FAULT": "tl2_gemv", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["tl2_gemv"]


@pytest.mark.parametrize("layout", ["tl1", "tl2"])
def test_verify_catches_a_lut_fault(tmp_path, layout, no_fault):
    """On a TL model held in the file's layout (i2s_layout="file"; "auto" moves TL into the MAD
    layouts where the level has the x16 GEMV) the engine runs the LUT kernels (and, on the amx
    level, the TL GEMM for prefill): a fault in any is caught by verify's kernel tier (named) and
    by its model tier."""
    pytest.importorskip("jax")
    import bitnet_lab
    from bitnet_lab.tools.dummy import generate_dummy

    path = generate_dummy("tiny", tmp_path / f"tiny_{layout}.gguf", outtype=layout, progress=False)
    model = bitnet_lab.load(path, i2s_layout="file")
    try:
        assert model.runner.packed_weight("blk.0.attn_q.weight")[0] == layout
        isa = (kernels.active_isa(),)
        for op in kernels.LAYOUT_OPS[layout]:
            if op.endswith("_gemm") and not kernels.has_tl_gemm():
                continue  # the prefill GEMM exists on the amx level only
            kernels.inject_fault(op)
            # n = 2: a decoded step too, where the GEMV runs when the prompt went through the GEMM
            rep = bitnet_lab.verify(model, n=2, threads=2, isas=isa, progress=False)
            kernels.inject_fault(None)
            assert not rep.passed and not rep.model_tier.passed, (op, rep.summary())
            assert op in {c.op for c in rep.kernel.failures}, (op, [c.op for c in rep.kernel.failures])
        assert bitnet_lab.verify(model, n=1, threads=2, isas=isa, progress=False).passed
    finally:
        model.close()
