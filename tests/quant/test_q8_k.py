"""Q8_K activation quantiser, numpy twin (bitnet_lab/quant/q8_k.py): blocks worked out by hand
from upstream quantize_row_q8_K_ref's arithmetic, and its error cases. The native C twin is
compared with it in tests/kernels/test_kernels_q8k.py."""

from __future__ import annotations

import numpy as np
import pytest

from bitnet_lab.errors import CodecError
from bitnet_lab.quant.q8_k import QK_K, dequantize_q8_k, nearest_int, q8_k_bsums, quantize_q8_k


def block(*head: float) -> np.ndarray:
    """One 256-block: `head`, then zeros."""
    x = np.zeros(QK_K, np.float32)
    x[: len(head)] = head
    return x


def test_negative_scale_ties_to_even():
    # max = 127 (positive) -> iscale = -127/127 = -1 exactly, q = nearest(-x), d = 1/-1 = -1.
    # -0.5 -> 0, -1.5 -> -2, -2.5 -> -2, 3.5 -> 4, -126.5 -> -126: half to EVEN, not away.
    d, q = quantize_q8_k(block(127, 0.5, 1.5, 2.5, -3.5, 126.5, 0.49, -0.51))
    assert d.tolist() == [-1.0]
    assert q[:8].tolist() == [-127, 0, -2, -2, 4, -126, 0, 1]
    assert not q[8:].any()


def test_negative_max_gives_positive_scale():
    # max = -127 -> iscale = +1, q = nearest(x), d = +1; 127 is |max| too but comes later.
    d, q = quantize_q8_k(block(-127, 127, 0.5, 1.5, 64.5, -64.5))
    assert d.tolist() == [1.0]
    assert q[:6].tolist() == [-127, 127, 0, 2, 64, -64]


def test_first_largest_decides_the_sign():
    # the same values in the other order: the first |x| = 127 is now +127 -> iscale = -1, d = -1
    d, q = quantize_q8_k(block(127, -127))
    assert d.tolist() == [-1.0]
    assert q[:2].tolist() == [-127, 127]


def test_non_integer_scale():
    # max = 2 -> iscale = -63.5 (exact); 1 -> -63.5 -> -64 (even); -0.5 -> 31.75 -> 32;
    # 0.25 -> -15.875 -> -16; 0.0078125 -> -0.49609375 -> 0; d = fl32(1 / -63.5) = fl32(-2/127)
    d, q = quantize_q8_k(block(2, 1, -0.5, 0.25, 0.0078125))
    assert d[0] == np.float32(-2 / 127)
    assert q[:5].tolist() == [-127, -64, 32, -16, 0]


def test_all_zero_block_and_negative_zero():
    d, q = quantize_q8_k(np.concatenate([block(), block(-0.0, -0.0)]))
    assert d.tolist() == [0.0, 0.0] and not np.signbit(d).any()
    assert not q.any()


def test_scale_overflow_block_follows_ggml_bits():
    # |max| = 1e-39 (subnormal): -127/max overflows to -inf; ggml's nearest_int bit recipe then
    # gives -2^22 for ±inf and 0 for the NaN of inf·0, which MIN(127, ·) and the int8 store turn
    # into q = 0; d = 1/-inf = -0.
    d, q = quantize_q8_k(block(1e-39, -5e-40))
    assert d[0] == 0 and np.signbit(d[0])
    assert not q.any()


def test_nearest_int_matches_round_half_even_in_range():
    v = np.float32([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, -126.5, 0.49999997, 3.0, -3.0])
    assert nearest_int(v).tolist() == np.rint(v).astype(np.int32).tolist()


def test_shape_batch_and_roundtrip(rng=np.random.default_rng(3)):
    x = rng.standard_normal((3, 2, 512)).astype(np.float32)
    d, q = quantize_q8_k(x)
    assert d.shape == (3, 2, 2) and d.dtype == np.float32 and q.shape == (3, 2, 512) and q.dtype == np.int8
    # each block's first largest element maps to exactly -127 (x·(-127/x)), and |q| <= 127
    assert np.abs(q).max() == 127 and (q != -128).all()
    err = np.abs(dequantize_q8_k(d, q) - x)
    assert (err <= np.abs(np.repeat(d, QK_K, axis=-1)) * 0.5001).all()
    # rows are independent: quantising one row alone gives the same bits
    d1, q1 = quantize_q8_k(x[1, 0])
    assert np.array_equal(d1.view(np.uint32), d[1, 0].view(np.uint32)) and np.array_equal(q1, q[1, 0])


def test_bsums():
    q = np.arange(-128, 128, dtype=np.int8)[np.random.default_rng(0).permutation(256)]
    s = q8_k_bsums(q)
    assert s.dtype == np.int16 and s.shape == (16,)
    assert s.tolist() == [int(q[i * 16:(i + 1) * 16].astype(int).sum()) for i in range(16)]


@pytest.mark.parametrize(
    "x, what",
    [
        (np.zeros(255, np.float32), "multiple of 256"),
        (np.zeros((2, 0), np.float32), "multiple of 256"),
        (np.zeros(256, np.float64), "float32"),
        (block(1, np.nan), "non-finite"),
        (block(np.inf), "non-finite"),
    ],
)
def test_bad_input(x, what):
    with pytest.raises(CodecError, match=what):
        quantize_q8_k(x)
