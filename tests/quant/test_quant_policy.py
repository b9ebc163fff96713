"""The numerics policy of bitnet_lab.quant.ternary (docs/numerics.md#1-weight-ternarisation to
docs/numerics.md#3-bitlinear-integer-product-and-epilogue)."""

from __future__ import annotations

import numpy as np
import pytest

from bitnet_lab.quant import (
    absmean_ternarize,
    activation_scale,
    bitlinear_epilogue,
    quantize_activations,
    round_int,
)


def test_rounding_modes_differ_only_on_ties():
    x = np.array([0.5, 1.5, 2.5, -0.5, -2.5, 0.49999997, -0.49999997, 3.2, -3.7], np.float32)
    assert round_int(x, "half_even").tolist() == [0, 2, 2, 0, -2, 0, 0, 3, -4]
    assert round_int(x, "half_away").tolist() == [1, 2, 3, -1, -3, 0, 0, 3, -4]
    with pytest.raises(ValueError, match="rounding mode"):
        round_int(x, "half_up")


def test_activation_quantisation_matches_the_spec_by_hand():
    x = np.array([[0.0, 1.0, -2.0, 0.5]], np.float32)
    q, s, sq = quantize_activations(x)
    assert s[0] == np.float32(63.5)
    # 0.5*63.5 = 31.75 -> 32; 1*63.5 = 63.5 -> 64 (tie, half to even); -2 -> -127.
    assert q.tolist() == [[0, 64, -127, 32]] and sq.tolist() == [-31]
    q2, _, _ = quantize_activations(x, "half_away")
    assert q2.tolist() == [[0, 64, -127, 32]]


def test_zero_row_uses_the_floor_and_gives_zeros():
    q, s, sq = quantize_activations(np.zeros((2, 8), np.float32))
    assert np.all(q == 0) and np.all(sq == 0)
    assert s[0] == activation_scale(np.float32(1e-5))


def test_activation_scale_is_correctly_rounded_f32_quotient():
    rng = np.random.default_rng(0)
    amax = rng.uniform(1e-4, 100, 10000).astype(np.float32)
    s = activation_scale(amax)
    exact = 127.0 / amax.astype(np.float64)
    # correctly rounded: no other float32 is closer to the exact quotient
    for cand in (np.nextafter(s, np.float32(np.inf)), np.nextafter(s, np.float32(-np.inf))):
        assert np.all(np.abs(s.astype(np.float64) - exact) <= np.abs(cand.astype(np.float64) - exact))


def test_absmean_ternarize_gives_about_a_third_zeros_and_mean_abs_gamma():
    rng = np.random.default_rng(1)
    w = rng.normal(0, 0.02, (256, 512)).astype(np.float32)
    t, g = absmean_ternarize(w)
    assert t.dtype == np.int8 and set(np.unique(t)) <= {-1, 0, 1}
    assert g == np.float32(np.abs(w).astype(np.float64).mean())
    assert 0.25 < np.mean(t == 0) < 0.40
    # not idempotent (docs/numerics.md#1-weight-ternarisation): re-ternarising t*gamma changes gamma
    _, g2 = absmean_ternarize(t.astype(np.float32) * g)
    assert g2 < g


def test_epilogue_order_is_divide_then_multiply():
    acc = np.array([[12345, -777]], np.int32)
    s = np.array([3.3], np.float32)
    g = np.float32(1.7)
    y = bitlinear_epilogue(acc, s, g)
    expected = (acc.astype(np.float32) / s[:, None]) * g
    assert np.array_equal(y, expected)
