"""Numerics policy: every constant of BitNet b1.58 quantisation lives here, in numpy.

The reference model, the kernels' numpy twins and the engine all call these functions, so a
choice (rounding mode, floor, clamp range) is made once. Facts: docs/numerics.md#1-weight-ternarisation
(weights) and docs/numerics.md#2-activation-quantisation (activations).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

# Activation quantisation (docs/numerics.md#21-bitnetcpp-i2_s-path): absmax maps to ±127, the clamp range is
# the int8 range (-128 is reachable only through rounding noise), absmax is floored at 1e-5 so an all-zero
# row gives q = 0 instead of NaN.
ACT_QMAX = 127
ACT_CLAMP_MIN = -128
ACT_CLAMP_MAX = 127
ACT_EPS = 1e-5

# Weight ternarisation (docs/numerics.md#1-weight-ternarisation): gamma = mean|W| over the whole matrix,
# floored at 1e-5.
WEIGHT_EPS = 1e-5

# I2_S packing's own ternarisation of already-ternary*scale data (docs/formats.md#31-i2_s-type-36).
I2S_ZERO_THRESHOLD = 1e-6

RoundingMode = Literal["half_even", "half_away"]
ROUNDING_MODES: tuple[str, ...] = ("half_even", "half_away")
DEFAULT_ROUNDING: RoundingMode = "half_even"


def round_int(x: np.ndarray, mode: RoundingMode = DEFAULT_ROUNDING) -> np.ndarray:
    """Round float32 values to the nearest integer (still float32) under ``mode``.

    ``half_even`` is bitnet.cpp's nearest_int / torch.round; ``half_away`` is C roundf, computed
    by splitting off the integer part first so that values just below .5 never round up (the
    ``floor(x + 0.5)`` pitfall of docs/numerics.md#25-rounding-modes-at-a-glance).
    """
    x = np.asarray(x, dtype=np.float32)
    if mode == "half_even":
        return np.rint(x)
    if mode == "half_away":
        whole = np.trunc(x)
        frac = x - whole  # exact: both operands share the exponent range of x
        return whole + np.where(np.abs(frac) >= np.float32(0.5), np.sign(x), np.float32(0.0)).astype(np.float32)
    raise ValueError(f"unknown rounding mode {mode!r}; expected one of {ROUNDING_MODES}")


def absmean_ternarize(w: np.ndarray) -> tuple[np.ndarray, np.float32]:
    """Ternarise a latent float weight matrix with absmean (docs/numerics.md#1-weight-ternarisation).

    Returns ``(t, gamma)`` with ``t`` int8 in {-1, 0, 1} of the same shape and ``gamma`` the f32
    value a ±1 weight stands for. Rounding is half-to-even, as torch.round in every trainer.
    """
    w32 = np.asarray(w, dtype=np.float32)
    # The mean is accumulated in float64 then rounded once: order-independent to the last bit.
    gamma = np.float32(max(np.float32(np.abs(w32).astype(np.float64).mean()), np.float32(WEIGHT_EPS)))
    s_w = np.float32(1.0) / gamma
    t = np.clip(np.rint(w32 * s_w), -1, 1).astype(np.int8)
    return t, gamma


def activation_scale(amax: np.ndarray) -> np.ndarray:
    """``s_x = fl(127 / max(amax, 1e-5))`` per row; correctly rounded in float32
    (docs/numerics.md#21-bitnetcpp-i2_s-path)."""
    amax = np.maximum(np.asarray(amax, dtype=np.float32), np.float32(ACT_EPS))
    # float64 division then one rounding to float32 is the correctly rounded f32 quotient.
    return (np.float64(ACT_QMAX) / amax.astype(np.float64)).astype(np.float32)


def quantize_activations(
    x: np.ndarray, mode: RoundingMode = DEFAULT_ROUNDING
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-token absmax int8 quantisation of ``x`` (..., K) float32.

    Returns ``(q, s_x, sum_q)``: int8 codes (..., K), f32 scales (...,) and int32 code sums
    (...,) used by the code-offset correction ``Σ t·q = Σ c·q − Σ q``
    (docs/numerics.md#31-the-integer-identity).
    """
    x = np.asarray(x, dtype=np.float32)
    s_x = activation_scale(np.max(np.abs(x), axis=-1))
    # The product x·s_x is formed in float32, as in quantize_row_i8_s.
    q = np.clip(round_int(x * s_x[..., None], mode), ACT_CLAMP_MIN, ACT_CLAMP_MAX).astype(np.int8)
    return q, s_x, q.sum(axis=-1, dtype=np.int32)


def bitlinear_epilogue(acc: np.ndarray, s_x: np.ndarray, gamma: np.float32) -> np.ndarray:
    """``y = acc / s_x · γ`` in float32, left to right
    (docs/numerics.md#32-bitnetcpp-i2_s-epilogue-and-its-order: the order is contract).

    ``acc`` is the exact integer ``Σ t·q`` (= D − sum_q), shape (..., M); ``s_x`` shape (...,).
    """
    y = acc.astype(np.float32) / np.asarray(s_x, dtype=np.float32)[..., None]
    return y * np.float32(gamma)
