"""Ternary codecs (bitnet_lab/quant/packing.py) and TL tilings (bitnet_lab/quant/tiling.py).

References: docs/formats.md#3-ternary-byte-layouts (layouts), docs/formats.md#4-where-per-tensor-scales-live
(scales), docs/formats.md#73-packed-uint8-layout (HF); docs/kernels.md#5-tiling-parameters-and-code-generation
(tilings). The TL oracles below are per-weight loops written from the byte maps in packing.py's docstring, so
they check the documented layout independently of the vectorised reshapes.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from bitnet_lab.errors import CodecError
from bitnet_lab.quant import packing as P
from bitnet_lab.quant import tiling as TL
from bitnet_lab.tensors import TernaryWeight
from bitnet_lab.quant.tiling import TLTiling

gguf = pytest.importorskip("gguf")
from gguf import GGMLQuantizationType as GT  # noqa: E402
from gguf.quants import dequantize as gguf_dequantize  # noqa: E402
from gguf.quants import quantize as gguf_quantize  # noqa: E402

REAL = Path(__file__).resolve().parents[1] / "data" / "real-files"


def rand_t(rng, M, K, p_zero=0.4):
    """Random ternary (M, K) int8 with roughly p_zero zeros."""
    p_nz = (1 - p_zero) / 2
    return rng.choice(np.array([-1, 0, 1], dtype=np.int8), size=(M, K), p=[p_nz, p_zero, p_nz])


@pytest.fixture
def rng():
    return np.random.default_rng(20261121)


# ----------------------------------------------------------------------------- I2_S


def test_i2_s_hand_checked_block():
    """One 128-weight block, bytes from the spec table (docs/formats.md#31-i2_s-type-36): byte b holds
    elements b, 32+b, 64+b, 96+b in bits 7:6, 5:4, 3:2, 1:0 with code t+1."""
    t = np.zeros((1, 128), dtype=np.int8)
    t[0, 0], t[0, 32], t[0, 64], t[0, 96] = 1, -1, 0, 1   # byte 0 = 10 00 01 10
    t[0, 33] = 1                                          # byte 1 = 01 10 01 01
    t[0, 127] = -1                                        # byte 31 = 01 01 01 00
    t[0, 70] = -1                                         # byte 6 = 01 01 00 01
    expected = np.full(32, 0b01010101, dtype=np.uint8)
    expected[0] = 0b10000110
    expected[1] = 0b01100101
    expected[6] = 0b01010001
    expected[31] = 0b01010100
    packed = P.pack_i2_s(t)
    assert packed.dtype == np.uint8 and packed.shape == (32,)
    np.testing.assert_array_equal(packed, expected)
    np.testing.assert_array_equal(P.unpack_i2_s(expected, 1, 128), t)


@pytest.mark.parametrize("M,K", [(1, 128), (3, 256), (128, 640), (64, 2560), (40, 6912), (640, 2560)])
def test_i2_s_round_trip(rng, M, K):
    t = rand_t(rng, M, K)
    packed = P.pack_i2_s(t)
    assert packed.shape == (M * K // 4,)
    np.testing.assert_array_equal(P.unpack_i2_s(packed, M, K), t)


def test_i2_s_blob_and_scale(rng):
    t = rand_t(rng, 8, 256)
    blob = P.i2_s_blob(t, 1.5)
    assert blob.shape == (8 * 256 // 4 + 32,)
    assert struct.unpack("<f", blob[512:516].tobytes())[0] == 1.5
    assert not blob[516:].any()
    assert P.read_i2_s_scale(blob, 8, 256) == np.float32(1.5)
    np.testing.assert_array_equal(P.unpack_i2_s(blob, 8, 256), t)  # tail ignored
    # the tail's last 28 bytes are not data: garbage there changes nothing
    junk = blob.copy()
    junk[516:] = 0xFF
    np.testing.assert_array_equal(P.unpack_i2_s(junk, 8, 256), t)


def test_i2_s_errors(rng):
    with pytest.raises(CodecError, match="multiple of 128"):
        P.pack_i2_s(rand_t(rng, 2, 192))
    with pytest.raises(CodecError, match="multiple of 128"):
        P.unpack_i2_s(np.zeros(96, np.uint8), 2, 192)
    with pytest.raises(CodecError, match="short data.*need 128 bytes, got 127"):
        P.unpack_i2_s(np.zeros(127, np.uint8), 2, 256)
    bad = P.pack_i2_s(np.zeros((2, 256), np.int8))
    bad[70] = 0b01110101  # code 3 at bits 5:4 of byte 6 of block 2 → n = 256 + 32 + 6
    bad[3] = 0b11010101   # code 3 at bits 7:6 of byte 3 of block 0 → n = 3
    with pytest.raises(CodecError, match=r"2 invalid 2-bit codes \(3\).*first at weight \(0, 3\)"):
        P.unpack_i2_s(bad, 2, 256)
    with pytest.raises(CodecError, match="outside"):
        P.pack_i2_s(np.full((1, 128), 2, np.int8))
    with pytest.raises(CodecError, match="integer dtype"):
        P.pack_i2_s(np.zeros((1, 128), np.float32))
    with pytest.raises(CodecError, match="2-D"):
        P.pack_i2_s(np.zeros(128, np.int8))
    with pytest.raises(CodecError, match="finite"):
        P.i2_s_blob(np.zeros((1, 128), np.int8), float("nan"))


# ----------------------------------------------------------------------------- TQ2_0 / TQ1_0

TQ = {
    "tq2_0": (P.pack_tq2_0, P.unpack_tq2_0, P.quantize_tq2_0, GT.TQ2_0, 66),
    "tq1_0": (P.pack_tq1_0, P.unpack_tq1_0, P.quantize_tq1_0, GT.TQ1_0, 54),
}


@pytest.mark.parametrize("layout", TQ)
@pytest.mark.parametrize("M,K", [(1, 256), (5, 512), (64, 2560), (16, 6912)])
def test_tq_round_trip(rng, layout, M, K):
    pack, unpack, _, _, B = TQ[layout]
    t = rand_t(rng, M, K)
    d = rng.uniform(0.01, 4, size=(M, K // 256)).astype(np.float16)
    data = pack(t, d)
    assert data.shape == (M * (K // 256) * B,)
    t2, d2 = unpack(data, M, K)
    np.testing.assert_array_equal(t2, t)
    np.testing.assert_array_equal(d2.view(np.uint16), d.view(np.uint16))


def test_tq1_0_every_five_trit_byte():
    """All 243 trit patterns of a qs byte, and all 81 of a qh byte, survive pack/unpack."""
    pats = np.array(np.meshgrid(*[[-1, 0, 1]] * 5, indexing="ij")).reshape(5, -1).T  # (243, 5)
    nb = -(-243 // 32)
    t = np.zeros((nb, 256), dtype=np.int8)
    for p, trits in enumerate(pats):
        blk, m = divmod(p, 32)
        t[blk, m + 32 * np.arange(5)] = trits               # qs[m] holds elements m + 32n
        t[p % nb, 240 + (p % 4) + 4 * np.arange(4)] = pats[p % 81][1:]  # qh patterns
    d = np.ones((nb, 1), dtype=np.float16)
    t2, _ = P.unpack_tq1_0(P.pack_tq1_0(t, d), nb, 256)
    np.testing.assert_array_equal(t2, t)


@pytest.mark.parametrize("layout", TQ)
def test_tq_quantize_matches_gguf_random(rng, layout):
    _, unpack, quant, gt, _ = TQ[layout]
    x = (rng.standard_normal((32, 1024)) * rng.uniform(0.01, 10, size=(32, 1))).astype(np.float32)
    x[4, :256] = 0.0                      # an all-zero block: d = 0
    x[5, 256:512] = np.float32(-0.5)      # a constant negative block: d = 0.5, all codes −1
    half_below = np.nextafter(np.float32(0.5), np.float32(0))
    x[6, 512:768] = np.resize(np.array([1.0, 0.5, -0.5, half_below, -half_below, 0.0], np.float32), 256)
    # ±0.5 exactly round away from zero (→ ±1); the float just below 0.5 rounds to 0
    ours = quant(x)
    ref = gguf_quantize(x, gt).reshape(-1)
    np.testing.assert_array_equal(ours, ref)
    t, d = unpack(ours, 32, 1024)
    deq = t.astype(np.float32) * np.repeat(d.astype(np.float32), 256, axis=1)
    np.testing.assert_array_equal(deq, gguf_dequantize(ref.reshape(32, -1), gt))


@pytest.mark.parametrize("layout", TQ)
def test_tq_quantize_matches_gguf_ternary_times_gamma(rng, layout):
    _, unpack, quant, gt, _ = TQ[layout]
    t = rand_t(rng, 24, 768)
    t[3, :256] = 0
    gamma = np.float32(0.0371)
    x = t.astype(np.float32) * gamma
    ours = quant(x)
    np.testing.assert_array_equal(ours, gguf_quantize(x, gt).reshape(-1))
    t2, d = unpack(ours, 24, 768)
    np.testing.assert_array_equal(t2, t)
    assert d[3, 0] == 0 and np.all(d[np.arange(24) != 3] == np.float16(gamma))
    # pack() with the default block scales writes the same bytes as quantising t·γ
    np.testing.assert_array_equal(P.pack(layout, t, scale=gamma), ours)


def test_tq_errors(rng):
    t = rand_t(rng, 2, 384)
    for layout, (pack, unpack, quant, _, _) in TQ.items():
        with pytest.raises(CodecError, match="not a multiple of 256"):
            pack(t, np.ones((2, 1), np.float16))
        with pytest.raises(CodecError, match="not a multiple of 256"):
            unpack(np.zeros(10_000, np.uint8), 2, 384)
        with pytest.raises(CodecError, match="not a multiple of 256"):
            quant(np.zeros((2, 384), np.float32))
        with pytest.raises(CodecError, match="short data"):
            unpack(np.zeros(100, np.uint8), 2, 256)
        with pytest.raises(CodecError, match="float16"):
            pack(rand_t(rng, 2, 256), np.ones((2, 1), np.float32))
        with pytest.raises(CodecError, match=r"shape \(2, 1\)"):
            pack(rand_t(rng, 2, 256), np.ones((1, 2), np.float16))
        with pytest.raises(CodecError, match="non-finite"):
            quant(np.full((1, 256), np.inf, np.float32))
        with pytest.raises(CodecError, match="block_scales or a scale"):
            P.pack(layout, rand_t(rng, 1, 256))
    data = P.pack_tq2_0(np.zeros((1, 256), np.int8), np.ones((1, 1), np.float16))
    data[40] |= 0b11000000  # qs[40]: h = 1, m = 8, j = 3 → element 128 + 96 + 8
    with pytest.raises(CodecError, match=r"1 invalid 2-bit codes.*\(0, 232\)"):
        P.unpack_tq2_0(data, 1, 256)


# ----------------------------------------------------------------------------- HF packed


def hf_pack_loop(t):
    """transformers pack_weights, written per element: row q·P + p → packed[p] bits 2q."""
    R, C = t.shape
    P_ = (R + 3) // 4
    out = np.zeros((P_, C), dtype=np.uint8)
    for r in range(R):
        q, p = divmod(r, P_)
        for c in range(C):
            out[p, c] |= (int(t[r, c]) + 1) << (2 * q)
    return out


@pytest.mark.parametrize("R,C", [(8, 5), (4, 3), (5, 2), (7, 4), (1, 6), (13, 3)])
def test_hf_matches_per_element_loop(rng, R, C):
    t = rand_t(rng, R, C)
    packed = P.pack_hf(t)
    np.testing.assert_array_equal(packed, hf_pack_loop(t))
    np.testing.assert_array_equal(P.unpack_hf(packed, R), t)


def test_hf_round_trip_and_errors(rng):
    t = rand_t(rng, 2560, 64)
    packed = P.pack_hf(t)
    assert packed.shape == (640, 64)
    np.testing.assert_array_equal(P.unpack_hf(packed, 2560), t)
    with pytest.raises(CodecError, match="cannot hold R = 2561"):
        P.unpack_hf(packed, 2561)
    bad = packed.copy()
    bad[1, 2] = 0b00001100  # row P + 1 = 641 carries code 3
    with pytest.raises(CodecError, match=r"first at weight \(641, 2\)"):
        P.unpack_hf(bad, 2560)
    with pytest.raises(CodecError, match="2-D uint8"):
        P.unpack_hf(packed.astype(np.int32), 2560)


# ----------------------------------------------------------------------------- TL1 / TL2 oracles


def tl1_oracle(t, tiling):
    """Per-weight placement from packing.py's TL1 byte map."""
    M, K = t.shape
    BM, BK, bm = tiling.BM, tiling.BK, tiling.bm
    by = 256 // bm
    out = np.zeros(M * K // 4, dtype=np.uint8)
    for r in range(M):
        mt, rr = divmod(r, BM)
        bt, rr = divmod(rr, bm)
        rc, r16 = divmod(rr, 16)
        for i in range(K // 2):
            kt, ii = divmod(i, BK // 2)
            yb, ii = divmod(ii, by // 2)
            pq, h = divmod(ii, 2)
            tile = (mt * (K // BK) + kt) * (BM // bm) + bt          # (mt, kt, bt)
            pos = (((tile * (BK // by) + yb) * (bm // 16) + rc) * (by // 4) + pq) * 16 + r16
            u = 3 * int(t[r, 2 * i]) + int(t[r, 2 * i + 1]) + 4
            out[pos] |= u << 4 if h == 0 else u
    return out


SWAP = [0, 2, 1, 3]


def tl2_oracle(t, tiling):
    """Per-weight placement from packing.py's TL2 byte map (index, sign, tail, zero pad)."""
    M, K = t.shape
    BM, BK = tiling.BM, tiling.BK
    three_k = K // BK * BK
    two_k = K - three_k
    idx = np.zeros(M * three_k // 6, np.uint8)
    words = np.zeros(M * three_k // 24 // 2, np.uint16)
    tail = np.zeros(M * two_k // 4, np.uint8)
    for r in range(M):
        mt, rr = divmod(r, BM)
        bt, r32 = divmod(rr, 32)
        g, i8 = divmod(r32, 8)
        p = SWAP.index(g) * 8 + i8  # byte position holding this row
        for i in range(three_k // 3):
            t0, t1, t2 = (int(x) for x in t[r, 3 * i : 3 * i + 3])
            v = 9 * t0 + 3 * t1 + t2
            kt, ii = divmod(i, BK // 3)
            yb, j = divmod(ii, 2)
            pos = (((mt * (three_k // BK) + kt) * (BM // 32) + bt) * (BK // 6) + yb) * 32 + p
            idx[pos] |= abs(v) << 4 if j == 0 else abs(v)
            u, g8 = divmod(ii, 8)
            s, c = divmod(g8 * 32 + r32, 16)
            unit = ((mt * (three_k // BK) + kt) * (BM // 32) + bt) * (BK // 24) + u
            if v < 0:
                words[unit * 16 + c] |= 1 << (15 - s)
        for i in range(two_k // 2):
            kt, ii = divmod(i, 16)
            yb, h = divmod(ii, 2)
            pos = (((mt * (two_k // 32) + kt) * (BM // 32) + bt) * 8 + yb) * 32 + p
            uu = 3 * int(t[r, three_k + 2 * i]) + int(t[r, three_k + 2 * i + 1]) + 4
            tail[pos] |= uu << 4 if h == 0 else uu
    out = np.concatenate([idx, words.astype("<u2").view(np.uint8), tail])
    return np.concatenate([out, np.zeros(P.tl2_padded_nbytes(M, K) - out.size, np.uint8)])


@pytest.mark.parametrize(
    "M,K,tiling",
    [(64, 64, TLTiling(64, 32, 32)), (128, 64, TLTiling(64, 64, 64)), (32, 48, TLTiling(32, 16, 32))],
)
def test_tl1_matches_documented_byte_map(rng, M, K, tiling):
    t = rand_t(rng, M, K)
    np.testing.assert_array_equal(P.pack_tl1(t, tiling), tl1_oracle(t, tiling))


@pytest.mark.parametrize(
    "M,K,tiling",
    [(64, 256, TLTiling(64, 96, 32)), (64, 288, TLTiling(32, 96, 32)), (32, 256, TLTiling(32, 192, 32)),
     (32, 264, TLTiling(32, 24, 32))],
)
def test_tl2_matches_documented_byte_map(rng, M, K, tiling):
    t = rand_t(rng, M, K, p_zero=0.3)
    np.testing.assert_array_equal(P.pack_tl2(t, tiling), tl2_oracle(t, tiling))


# ----------------------------------------------------------------------------- TL round trips


@pytest.mark.parametrize("shape", sorted(TL.TL1_PRESETS))
def test_tl1_presets_round_trip(rng, shape):
    M, K = shape
    tiling = TL.TL1_PRESETS[shape]
    assert TL.is_legal("tl1", M, K, tiling)
    m = tiling.BM  # one M-tile is enough to exercise every axis of the tiling
    t = rand_t(rng, m, K)
    data = P.pack_tl1(t, tiling)
    assert data.shape == (P.tl1_nbytes(m, K),)
    np.testing.assert_array_equal(P.unpack_tl1(data, m, K, tiling), t)


@pytest.mark.parametrize("shape", sorted(TL.TL2_PRESETS))
def test_tl2_presets_round_trip(rng, shape):
    M, K = shape
    tiling = TL.TL2_PRESETS[shape]
    assert TL.is_legal("tl2", M, K, tiling)
    m = tiling.BM
    t = rand_t(rng, m, K)
    data = P.pack_tl2(t, tiling)
    assert data.shape == (P.tl2_padded_nbytes(m, K),)
    real = P.tl2_nbytes(m, K, tiling)
    assert not data[real:].any()
    np.testing.assert_array_equal(P.unpack_tl2(data, m, K, tiling), t)
    np.testing.assert_array_equal(P.unpack_tl2(data[:real], m, K, tiling), t)  # padding not needed


@pytest.mark.parametrize(
    "layout,M,K,tiling",
    [("tl1", 1536, 1536, TL.TL1_PRESETS[(1536, 1536)]), ("tl2", 3200, 3200, TL.TL2_PRESETS[(3200, 3200)])],
)
def test_tl_full_size_preset(rng, layout, M, K, tiling):
    t = rand_t(rng, M, K)
    np.testing.assert_array_equal(P.unpack(layout, P.pack(layout, t, tiling=tiling), M, K, tiling), t)


@pytest.mark.parametrize(
    "layout,M,K,tiling",
    [
        ("tl1", 256, 768, TL.DUMMY_TL1_TILING),
        ("tl1", 96, 320, TLTiling(96, 64, 32)),
        ("tl1", 128, 1000, TLTiling(64, 40, 32)),
        ("tl1", 192, 2560, TLTiling(192, 128, 64)),
        ("tl2", 256, 2560, TLTiling(128, 96, 32)),   # 2B-4T-like K: two_k = 64
        ("tl2", 96, 6912, TLTiling(96, 96, 32)),     # K % 96 == 0: no tail
        ("tl2", 64, 752, TLTiling(32, 240, 32)),     # BK = 240, two_k = 32
        ("tl2", 32, 264, TLTiling(32, 24, 32)),      # smallest BK, K % 24 == 0: no tail
    ],
)
def test_tl_non_preset_tilings(rng, layout, M, K, tiling):
    TL.validate_tiling(layout, M, K, tiling)
    t = rand_t(rng, M, K)
    data = P.pack(layout, t, tiling=tiling)
    assert data.size == P.ternary_blob_nbytes(layout, M, K, tiling)
    np.testing.assert_array_equal(P.unpack(layout, data, M, K, tiling), t)


def test_tl2_sizes():
    tiling = TL.TL2_PRESETS[(3200, 3200)]  # BK = 96 → two_k = 32
    M, K = 3200, 3200
    real = P.tl2_nbytes(M, K, tiling)
    assert real == M * 3168 // 6 + M * 3168 // 24 + M * 32 // 4
    padded = P.tl2_padded_nbytes(M, K)
    assert padded - real == (256 - 32) * M // 24  # docs/formats.md#33-tl2-type-39
    assert P.tl2_ggml_nbytes(M, K) == -(-padded // 32) * 32 + 32
    assert P.tl_scale_offset("tl2", M, K) == -(-padded // 32) * 32
    assert P.tl1_ggml_nbytes(M, K) == M * K // 4 + 32
    assert P.tl_scale_offset("tl1", M, K) == M * K // 4
    with pytest.raises(CodecError, match="K >= 256"):
        P.tl2_padded_nbytes(32, 192)


def test_tl_codec_errors(rng):
    t = rand_t(rng, 64, 256)
    with pytest.raises(CodecError, match="tiling .* is required"):
        P.pack_tl1(t, None)
    with pytest.raises(CodecError, match="tiling .* is required"):
        P.unpack("tl2", np.zeros(10_000, np.uint8), 64, 256)
    with pytest.raises(CodecError, match=r"M % BM == 0 fails: 64 % 48"):
        P.pack_tl1(t, TLTiling(48, 64, 32))
    with pytest.raises(CodecError, match=r"bm in \(32, 64\) fails: bm = 16"):
        P.pack_tl1(t, TLTiling(64, 64, 16))
    with pytest.raises(CodecError, match=r"K % BK == 0 fails: 256 % 96"):
        P.pack_tl1(t, TLTiling(64, 96, 32))
    with pytest.raises(CodecError, match=r"BK % by == 0 \(by = 256/bm = 8\) fails"):
        P.pack_tl1(rand_t(rng, 64, 24), TLTiling(64, 12, 32))
    with pytest.raises(CodecError, match=r"BK <= 256"):
        P.pack_tl1(rand_t(rng, 64, 512), TLTiling(64, 512, 32))
    with pytest.raises(CodecError, match=r"bm == 32 fails: bm = 64"):
        P.pack_tl2(t, TLTiling(64, 96, 64))
    with pytest.raises(CodecError, match=r"BK % 24 == 0 fails: 66 % 24"):
        P.pack_tl2(t, TLTiling(64, 66, 32))
    with pytest.raises(CodecError, match=r"\(K % BK\) % 32 == 0 fails: K % BK = 16"):
        P.pack_tl2(t, TLTiling(64, 240, 32))
    with pytest.raises(CodecError, match=r"BM % 32 == 0 fails"):
        P.pack_tl2(rand_t(rng, 48, 256), TLTiling(48, 96, 32))
    with pytest.raises(CodecError, match=r"K >= 256"):
        P.pack_tl2(rand_t(rng, 32, 192), TLTiling(32, 96, 32))
    with pytest.raises(CodecError, match="short data"):
        P.unpack_tl1(np.zeros(100, np.uint8), 64, 256, TLTiling(64, 64, 32))
    tiling = TLTiling(64, 96, 32)
    with pytest.raises(CodecError, match="short data"):
        P.unpack_tl2(np.zeros(P.tl2_nbytes(64, 256, tiling) - 1, np.uint8), 64, 256, tiling)
    bad = P.pack_tl1(t, TLTiling(64, 64, 32))
    bad[5] = 0x9F  # indices 9 and 15
    with pytest.raises(CodecError, match=r"2 invalid pair indices \(> 8\)"):
        P.unpack_tl1(bad, 64, 256, TLTiling(64, 64, 32))
    bad = P.pack_tl2(t, tiling)
    bad[0] = 0xE0  # magnitude 14
    with pytest.raises(CodecError, match=r"1 invalid triple magnitudes \(> 13\); first 14"):
        P.unpack_tl2(bad, 64, 256, tiling)
    bad = P.pack_tl2(t, tiling)
    tail_start = 64 * 192 // 6 + 64 * 192 // 24
    bad[tail_start] = 0x09
    with pytest.raises(CodecError, match="two-weight tail"):
        P.unpack_tl2(bad, 64, 256, tiling)


# ----------------------------------------------------------------------------- tiling.py


def test_presets_are_legal_and_default():
    for layout, presets in (("tl1", TL.TL1_PRESETS), ("tl2", TL.TL2_PRESETS)):
        for (M, K), tiling in presets.items():
            TL.validate_tiling(layout, M, K, tiling)
            assert TL.default_tiling(layout, M, K) == tiling
    # the † row of docs/kernels.md#54-preset-kernels is recorded with bm = 32 (TL2 admits no other bm)
    assert TL.TL2_PRESETS[(4096, 1536)] == TLTiling(256, 96, 32)
    assert TL.DUMMY_TL1_TILING == TLTiling(256, 256, 32)


def test_default_tiling_search():
    # dummy-generator shapes: the hard-coded 256/256/32 comes first for TL1
    assert TL.default_tiling("tl1", 3072, 768) == TL.DUMMY_TL1_TILING
    # shapes no preset knows (the 2B-4T's with other widths): legal tilings, BK 96 preferred for TL2
    for M, K in [(1280, 1280), (640, 1280), (3456, 1280), (1280, 3456)]:
        for layout in ("tl1", "tl2"):
            assert (M, K) not in (TL.TL1_PRESETS if layout == "tl1" else TL.TL2_PRESETS)
            tiling = TL.default_tiling(layout, M, K)
            TL.validate_tiling(layout, M, K, tiling)
        assert TL.default_tiling("tl2", M, K).BK == 96
    assert TL.default_tiling("tl2", 640, 1280) == TLTiling(128, 96, 32)
    # the 2B-4T's own shapes have a preset now (docs/kernels.md#56-presets-per-model)
    assert TL.default_tiling("tl2", 640, 2560) == TLTiling(320, 96, 32)
    # the real-file toy model (M = 128 rows, K = 256)
    assert TL.default_tiling("tl1", 128, 256) == TLTiling(128, 256, 32)
    assert TL.default_tiling("tl2", 128, 256) == TLTiling(128, 96, 32)
    cands = list(TL.candidate_tilings("tl2", 256, 768))
    assert cands and all(TL.is_legal("tl2", 256, 768, c) for c in cands) and len(set(cands)) == len(cands)
    with pytest.raises(CodecError, match="no legal tiling"):
        TL.default_tiling("tl1", 48, 256)
    with pytest.raises(CodecError, match="no legal tiling"):
        TL.default_tiling("tl2", 64, 200)
    with pytest.raises(CodecError, match="not to layout 'i2_s'"):
        TL.default_tiling("i2_s", 64, 256)


# ----------------------------------------------------------------------------- dispatch


ALL_LAYOUTS = ("i2_s", "tq2_0", "tq1_0", "tl1", "tl2", "hf_packed")


@pytest.mark.parametrize("layout", ALL_LAYOUTS)
def test_dispatch_round_trip_and_sizes(rng, layout):
    M, K = 128, 768
    t = rand_t(rng, M, K)
    tiling = TL.default_tiling(layout, M, K) if layout.startswith("tl") else None
    data = P.pack(layout, t, scale=np.float32(0.8), tiling=tiling)
    assert data.dtype == np.uint8
    assert data.size == P.ternary_blob_nbytes(layout, M, K, tiling)
    np.testing.assert_array_equal(P.unpack(layout, data, M, K, tiling), t)
    np.testing.assert_array_equal(P.unpack(layout, data.tobytes(), M, K, tiling), t)
    # what a reader hands out decodes through TernaryWeight
    kw = dict(block_scales=P.unpack_tq2_0(data, M, K)[1]) if layout == "tq2_0" else (
        dict(block_scales=P.unpack_tq1_0(data, M, K)[1]) if layout == "tq1_0" else dict(scale=np.float32(0.8)))
    w = TernaryWeight("blk.0.test.weight", layout, (M, K), data, tiling=tiling, **kw)
    np.testing.assert_array_equal(w.ternary(), t)
    gamma = np.float32(np.float16(0.8)) if layout.startswith("tq") else np.float32(0.8)  # TQ: fp16 d
    np.testing.assert_array_equal(w.dequantize(), t.astype(np.float32) * gamma)


def test_dispatch_errors():
    with pytest.raises(CodecError, match="unknown ternary layout 'q4_0'"):
        P.unpack("q4_0", b"", 1, 1)
    with pytest.raises(CodecError, match="unknown ternary layout"):
        P.pack("q4_0", np.zeros((1, 128), np.int8))
    with pytest.raises(CodecError, match="needs the per-tensor scale"):
        P.pack("i2_s", np.zeros((1, 128), np.int8))
    with pytest.raises(CodecError, match="data must be uint8"):
        P.unpack("i2_s", np.zeros(32, np.float32), 1, 128)
    with pytest.raises(CodecError, match="positive"):
        P.unpack("i2_s", np.zeros(32, np.uint8), 0, 128)


# ----------------------------------------------------------------------------- real files


def _read_gguf_table(path: Path) -> dict[str, tuple[tuple[int, ...], int, int]]:
    """Minimal GGUF v3 tensor table (docs/formats.md#1-the-gguf-container): name → (ggml dims, type id,
    absolute offset). Enough for the conformance test; the project's reader is bitnet_lab/formats."""
    buf = path.read_bytes()
    pos = 0

    def take(fmt):
        nonlocal pos
        vals = struct.unpack_from("<" + fmt, buf, pos)
        pos += struct.calcsize("<" + fmt)
        return vals[0] if len(vals) == 1 else vals

    def string():
        nonlocal pos
        n = take("Q")
        s = buf[pos : pos + n].decode("utf-8")
        pos += n
        return s

    scalar = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}

    def value(vtype):
        if vtype == 8:
            return string()
        if vtype == 9:
            etype, count = take("I"), take("Q")
            return [value(etype) for _ in range(count)]
        return take(scalar[vtype])

    magic, version, n_tensors, n_kv = take("IIQQ")
    assert magic == 0x46554747 and version == 3
    alignment = 32
    for _ in range(n_kv):
        key = string()
        v = value(take("I"))
        if key == "general.alignment":
            alignment = v
    infos = []
    for _ in range(n_tensors):
        name = string()
        dims = tuple(take("Q") for _ in range(take("I")))
        infos.append((name, dims, take("I"), take("Q")))
    start = -(-pos // alignment) * alignment
    return {name: (dims, typ, start + off) for name, dims, typ, off in infos}


def _f32_tensors() -> dict[str, np.ndarray]:
    r = gguf.GGUFReader(str(REAL / "bitnet-f32.gguf"))
    return {t.name: np.array(t.data) for t in r.tensors}


@pytest.mark.skipif(not (REAL / "bitnet-i2_s.gguf").exists(), reason="real files missing")
def test_real_i2_s_file_decodes_to_f32_file():
    f32 = _f32_tensors()
    table = _read_gguf_table(REAL / "bitnet-i2_s.gguf")
    raw = np.fromfile(REAL / "bitnet-i2_s.gguf", dtype=np.uint8)
    n = 0
    for name, (dims, typ, off) in table.items():
        if typ != 36:
            continue
        K, M = dims
        blob = raw[off : off + P.ternary_blob_nbytes("i2_s", M, K)]
        t = P.unpack_i2_s(blob, M, K)
        scale = P.read_i2_s_scale(blob, M, K)
        np.testing.assert_array_equal(t.astype(np.float32) * scale, f32[name], err_msg=name)
        # and our packer reproduces the file's code bytes exactly
        np.testing.assert_array_equal(P.pack_i2_s(t), blob[: M * K // 4], err_msg=name)
        n += 1
    assert n == 14  # 7 projections × 2 layers


@pytest.mark.skipif(not (REAL / "upstream-tq2_0.gguf").exists(), reason="real files missing")
@pytest.mark.parametrize("layout,fname", [("tq2_0", "upstream-tq2_0.gguf"), ("tq1_0", "upstream-tq1_0.gguf")])
def test_real_tq_files_decode_to_f32_file(layout, fname):
    _, unpack, quant, gt, _ = TQ[layout]
    f32 = _f32_tensors()
    r = gguf.GGUFReader(str(REAL / fname))
    n = 0
    for tensor in r.tensors:
        if tensor.tensor_type != gt:
            continue
        K, M = (int(s) for s in tensor.shape)
        data = np.asarray(tensor.data).reshape(-1)
        t, d = unpack(data, M, K)
        w = f32[tensor.name]
        np.testing.assert_array_equal(t, np.sign(w).astype(np.int8), err_msg=tensor.name)
        # d is the fp16 block absmax of t·γ
        amax = np.abs(w).reshape(M, K // 256, 256).max(axis=2)
        np.testing.assert_array_equal(d, amax.astype(np.float16), err_msg=tensor.name)
        deq = t.astype(np.float32) * np.repeat(d.astype(np.float32), 256, axis=1)
        np.testing.assert_array_equal(deq, gguf_dequantize(data.reshape(M, -1), gt))
        # our quantiser writes the same bytes as the C tool did
        np.testing.assert_array_equal(quant(w), data, err_msg=tensor.name)
        n += 1
    assert n == 14
