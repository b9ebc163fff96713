"""RoPE angle tables, computed once in numpy exactly as ggml's ``ggml_rope_cache_init`` walks them.

docs/numerics.md#53-ggml-angle-computation: ``theta_scale = powf(freq_base, -2.0f/n_dims)`` in f32; for
position ``p`` the angle of pair ``i`` is ``θ_i = p · theta_scale^i`` obtained by **repeated f32
multiplication** (start at ``θ = (float)p``, use it, then ``θ *= theta_scale``). With ``freq_scale = 1``,
no YaRN mix and ``mscale = 1`` the table entries are plain ``cosf(θ)`` and ``sinf(θ)``.

Precision choices (documented, not copied from a libm):

* ``powf`` is evaluated as a float64 ``pow`` of the f32 operands rounded once to f32. For the
  bases 1e4, 5e5, 1000042, 1e6 and every even n_dims ≤ 512 this equals glibc 2.36's ``powf``.
* ``cos``/``sin`` are evaluated in float64 from the **f32 angles** and rounded once to f32
  (≈ correctly rounded). glibc 2.36's ``cosf``/``sinf`` differ from that by one ulp for about
  1.3 % of angles in [0, 5000), so a ggml build can differ from these tables in the last bit.
"""

from __future__ import annotations

import numpy as np


def theta_scale(freq_base: float, n_dims: int) -> np.float32:
    """``powf(freq_base, -2.0f / n_dims)`` (exponent divided in f32, as ggml)."""
    exponent = np.float32(-2.0) / np.float32(n_dims)
    return np.float32(np.float64(np.float32(freq_base)) ** np.float64(exponent))


def angle_table(n_pos: int, n_dims: int, freq_base: float) -> np.ndarray:
    """float32 (n_pos, n_dims/2): ``θ[p, i]`` by ggml's recurrence, vectorised over positions."""
    ts = theta_scale(freq_base, n_dims)
    theta = np.arange(n_pos, dtype=np.float32)  # θ = (float)p  (exact for p < 2^24)
    out = np.empty((n_pos, n_dims // 2), dtype=np.float32)
    for i in range(n_dims // 2):
        out[:, i] = theta
        theta = theta * ts  # one f32 rounding per step, as the C loop
    return out


def cos_sin_tables(n_pos: int, n_dims: int, freq_base: float) -> tuple[np.ndarray, np.ndarray]:
    """``(cos, sin)`` float32 (n_pos, n_dims/2) from the f32 angles, each via float64."""
    theta = angle_table(n_pos, n_dims, freq_base).astype(np.float64)
    return np.cos(theta).astype(np.float32), np.sin(theta).astype(np.float32)
