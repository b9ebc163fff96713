"""Quantisation policy and codecs, in numpy only (no JAX, no native code)."""

from bitnet_lab.quant.ternary import (  # noqa: F401
    ACT_CLAMP_MAX,
    ACT_CLAMP_MIN,
    ACT_EPS,
    ACT_QMAX,
    DEFAULT_ROUNDING,
    ROUNDING_MODES,
    WEIGHT_EPS,
    absmean_ternarize,
    activation_scale,
    bitlinear_epilogue,
    quantize_activations,
    round_int,
)
