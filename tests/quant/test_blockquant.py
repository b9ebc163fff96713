"""Non-ternary block types (bitnet_lab/quant/blockquant.py) against gguf-py 0.19.0 and against
per-element loops written from the ggml block layouts. The Q8_0 / Q6_K quantisers against
llama.cpp's reference and bitnet.cpp's files: test_reference_quantisers.py."""

from __future__ import annotations

import numpy as np
import pytest

from bitnet_lab.errors import CodecError
from bitnet_lab.quant import blockquant as BQ
from bitnet_lab.quant import packing
from bitnet_lab.tensors import FloatTensor

gguf = pytest.importorskip("gguf")
from gguf import GGML_QUANT_SIZES  # noqa: E402
from gguf import GGMLQuantizationType as GT  # noqa: E402
from gguf.quants import dequantize as gguf_dequantize  # noqa: E402
from gguf.quants import quantize as gguf_quantize  # noqa: E402


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def test_block_sizes_match_gguf():
    for name, (blk, size) in BQ.BLOCK_SIZES.items():
        assert GGML_QUANT_SIZES[GT[name]] == (blk, size), name
    assert BQ.block_nbytes("Q8_0", 64) == 68
    assert BQ.block_nbytes("Q6_K", 512) == 420
    assert BQ.block_nbytes("TQ2_0", 2560 * 256) == 2560 * 66
    assert BQ.block_nbytes("BF16", 3) == 6
    with pytest.raises(CodecError, match="whole number of 32-element blocks"):
        BQ.block_nbytes("Q8_0", 48)
    with pytest.raises(CodecError, match="unknown block type 'Q4_0'"):
        BQ.block_nbytes("Q4_0", 32)


def _x(rng, shape):
    x = (rng.standard_normal(shape) * rng.uniform(0.01, 20, size=shape[:-1] + (1,))).astype(np.float32)
    x.reshape(-1)[:32] = 0.0  # an all-zero block
    return x


def test_q8_0_quantize_matches_gguf(rng):
    x = _x(rng, (24, 160))
    x[3, :32] = np.resize(np.array([127, 63.5, -63.5, 0.5, -0.5, 1], np.float32), 32)  # ties at ±.5
    ours = BQ.quantize("Q8_0", x)
    ref = gguf_quantize(x, GT.Q8_0)
    np.testing.assert_array_equal(ours, ref.reshape(-1))
    np.testing.assert_array_equal(BQ.dequantize("Q8_0", ours, x.shape), gguf_dequantize(ref, GT.Q8_0))


def test_q8_0_dequant_per_element(rng):
    raw = rng.integers(0, 256, size=(3, 34), dtype=np.uint8)
    raw[:, :2] = np.array([0.5, -2.0, 0.0078125], dtype="<f2").view(np.uint8).reshape(3, 2)
    out = BQ.dequantize("Q8_0", raw, (1, 96))
    for b in range(3):
        d = float(np.frombuffer(raw[b, :2].tobytes(), "<f2")[0])
        for i in range(32):
            q = int(np.int8(raw[b, 2 + i]))
            assert out[0, 32 * b + i] == np.float32(q) * np.float32(d)


def _q6_k_random_blocks(rng, nb):
    raw = rng.integers(0, 256, size=(nb, 210), dtype=np.uint8)
    d = rng.uniform(-0.05, 0.05, size=nb).astype("<f2")  # finite fp16 d
    raw[:, 208:210] = d.view(np.uint8).reshape(nb, 2)
    return raw


def test_q6_k_dequant_matches_gguf(rng):
    raw = _q6_k_random_blocks(rng, 12)
    ours = BQ.dequantize("Q6_K", raw, (3, 1024))
    np.testing.assert_array_equal(ours, gguf_dequantize(raw.reshape(3, -1), GT.Q6_K))


def test_q6_k_dequant_per_element(rng):
    """ggml dequantize_row_q6_K written out per element for one block."""
    raw = _q6_k_random_blocks(rng, 1)[0]
    ql, qh, sc = raw[:128], raw[128:192], raw[192:208].view(np.int8)
    d = np.float32(np.frombuffer(raw[208:210].tobytes(), "<f2")[0])
    want = np.zeros(256, np.float32)
    for half in range(2):
        for l in range(32):
            is_ = l // 16
            lq, hq, s = ql[64 * half:], qh[32 * half:], sc[8 * half:]
            q1 = ((int(lq[l]) & 0xF) | (((int(hq[l]) >> 0) & 3) << 4)) - 32
            q2 = ((int(lq[l + 32]) & 0xF) | (((int(hq[l]) >> 2) & 3) << 4)) - 32
            q3 = ((int(lq[l]) >> 4) | (((int(hq[l]) >> 4) & 3) << 4)) - 32
            q4 = ((int(lq[l + 32]) >> 4) | (((int(hq[l]) >> 6) & 3) << 4)) - 32
            base = 128 * half
            want[base + l] = d * np.float32(s[is_ + 0]) * np.float32(q1)
            want[base + l + 32] = d * np.float32(s[is_ + 2]) * np.float32(q2)
            want[base + l + 64] = d * np.float32(s[is_ + 4]) * np.float32(q3)
            want[base + l + 96] = d * np.float32(s[is_ + 6]) * np.float32(q4)
    np.testing.assert_array_equal(BQ.dequantize("Q6_K", raw, (256,)), want)


def test_float_types_match_gguf(rng):
    x = rng.standard_normal((7, 33)).astype(np.float32)
    x[0, :6] = [np.nan, np.inf, -np.inf, -0.0, 1e-40, 65520.0]
    # BF16: round to nearest even, NaN quiet (gguf-py / ggml fp32_to_bf16)
    bits = BQ.quantize("BF16", x)
    np.testing.assert_array_equal(bits, gguf_quantize(x, GT.BF16).reshape(-1).view(np.uint8))
    back = BQ.dequantize("BF16", bits, x.shape)
    np.testing.assert_array_equal(back.view(np.uint32) >> 16, bits.view("<u2").reshape(x.shape))
    # F16 / F32 (65520 overflows fp16 to inf, as numpy's cast does)
    with np.errstate(over="ignore"):
        x16 = x.astype("<f2")
    np.testing.assert_array_equal(BQ.quantize("F16", x), x16.reshape(-1).view(np.uint8))
    np.testing.assert_array_equal(BQ.dequantize("F16", x16, x.shape), x16.astype(np.float32))
    np.testing.assert_array_equal(BQ.dequantize("F32", BQ.quantize("F32", x), x.shape), x)


@pytest.mark.parametrize("name,gt", [("TQ2_0", GT.TQ2_0), ("TQ1_0", GT.TQ1_0)])
def test_tq_through_blockquant(rng, name, gt):
    x = _x(rng, (4, 512))
    data = BQ.quantize(name, x)
    np.testing.assert_array_equal(data, gguf_quantize(x, gt).reshape(-1))
    np.testing.assert_array_equal(BQ.dequantize(name, data, x.shape), gguf_dequantize(data.reshape(4, -1), gt))


def test_floattensor_uses_blockquant(rng):
    x = _x(rng, (10, 64))
    q = BQ.quantize("Q8_0", x)
    ft = FloatTensor("token_embd.weight", "Q8_0", (10, 64), q.reshape(10, -1))
    np.testing.assert_array_equal(ft.to_numpy(), gguf_dequantize(q.reshape(10, -1), GT.Q8_0))


def test_errors(rng):
    with pytest.raises(CodecError, match="not a multiple of the block size 32"):
        BQ.dequantize("Q8_0", np.zeros(34, np.uint8), (1, 48))
    with pytest.raises(CodecError, match="expected 68 bytes of data, got 67"):
        BQ.dequantize("Q8_0", np.zeros(67, np.uint8), (2, 32))
    with pytest.raises(CodecError, match="Q6_K: x has 1 non-finite values"):
        BQ.quantize("Q6_K", np.r_[np.zeros(255, np.float32), np.float32(np.nan)].reshape(1, 256))
    with pytest.raises(CodecError, match="cannot quantise to 'Q4_0'"):
        BQ.quantize("Q4_0", np.zeros((1, 32), np.float32))
    with pytest.raises(CodecError, match="float numpy array"):
        BQ.quantize("Q8_0", np.zeros((1, 32), np.int32))
    with pytest.raises(CodecError, match="non-finite"):
        BQ.quantize("Q8_0", np.full((1, 32), np.nan, np.float32))
    with pytest.raises(CodecError, match="unknown block type"):
        BQ.dequantize("Q5_K", b"", (1, 256))
    with pytest.raises(CodecError, match="short data"):
        packing.unpack_tq2_0(np.zeros(10, np.uint8), 1, 256)
