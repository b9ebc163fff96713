"""Native Q8_K quantiser (src/q8k.c) == its numpy twin (bitnet_lab/quant/q8_k.py), bit for bit,
on random and adversarial rows. One scalar C implementation serves every ISA level (bl_q8k.h)."""

from __future__ import annotations

import numpy as np
import pytest

from bitnet_lab.errors import CodecError
from bitnet_lab.kernels import q8k as native
from bitnet_lab.quant import q8_k as twin


def _rows() -> np.ndarray:
    rng = np.random.default_rng(11)
    K = 1024
    rows = [
        rng.standard_normal(K),
        rng.standard_normal(K) * 1e-30,
        rng.standard_normal(K) * 1e30,
        rng.uniform(-1, 1, K) ** 9,  # heavy tail: most values near zero
        np.zeros(K),
        -np.zeros(K),
    ]
    # ties: k/2 · max/127 with max = 127·2^e (so iscale = -2^-e exactly) -> products at .5
    for e in (-3, 0, 5):
        t = rng.integers(-254, 255, K) / 2 * 2.0**e
        t[::256] = 127 * 2.0**e
        rows.append(t)
    # the first-largest rule: +max and -max in one block, in both orders
    t = rng.standard_normal(K)
    t[0:2], t[256:258] = (4.0, -4.0), (-4.0, 4.0)
    rows.append(t)
    # subnormal blocks (one of them overflows iscale to inf), the largest finite floats
    t = rng.standard_normal(K)
    t[:256] *= 1e-39
    t[256:512] = rng.standard_normal(256) * 1e-44
    t[512:768] = np.float32(3.4e38) * np.sign(rng.standard_normal(256))
    rows.append(t)
    return np.array(rows, dtype=np.float32)


def test_native_equals_twin_bit_for_bit():
    x = _rows()
    d_ref, q_ref = twin.quantize_q8_k(x)
    d, q = native.quantize_q8_k(x)
    assert np.array_equal(d.view(np.uint32), d_ref.view(np.uint32))
    assert np.array_equal(q, q_ref)
    assert np.array_equal(native.q8_k_bsums(q), twin.q8_k_bsums(q))


def test_native_random_rows():
    rng = np.random.default_rng(5)
    for K in (256, 2560, 6912):
        x = (rng.standard_normal((4, K)) * rng.uniform(1e-3, 1e3, (4, 1))).astype(np.float32)
        d_ref, q_ref = twin.quantize_q8_k(x)
        d, q = native.quantize_q8_k(x)
        assert np.array_equal(d.view(np.uint32), d_ref.view(np.uint32)) and np.array_equal(q, q_ref), K


@pytest.mark.parametrize("x, what", [(np.zeros(300, np.float32), "multiple of 256"),
                                     (np.full(256, np.nan, np.float32), "non-finite")])
def test_native_rejects_like_the_twin(x, what):
    with pytest.raises(CodecError, match=what):
        native.quantize_q8_k(x)
