"""The engine's float lm_head dot (F32 / F16 rows against an f32 hidden state) in its canonical
order, as a numpy twin for the kernel's tests and benchmark (src/engine_float.h; the reference's
``layers.lm_head`` accumulates the same products in float64 instead)."""

from __future__ import annotations

import numpy as np


def f32_dot_canonical(rows: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Logits (N, V) f32 of float rows (V, K) (f32, or f16 widened exactly) against f32 hidden rows
    (N, K) in the engine's canonical f32 order (src/engine_float.h): 32 lanes, element k into
    lane k % 32 as ``lane + fl32(a·b)`` in increasing k, then the fold w = 16, 8, 4, 2, 1."""
    w = np.asarray(rows).astype(np.float32)
    h = np.asarray(h, np.float32)
    V, K = w.shape
    out = np.empty((h.shape[0], V), np.float32)
    for n in range(h.shape[0]):
        lane = np.zeros((V, 32), np.float32)
        for k0 in range(0, K, 32):
            k1 = min(K, k0 + 32)
            lane[:, : k1 - k0] = (lane[:, : k1 - k0] + (w[:, k0:k1] * h[n, k0:k1]).astype(np.float32)).astype(np.float32)
        for width in (16, 8, 4, 2, 1):
            lane[:, :width] = (lane[:, :width] + lane[:, width:2 * width]).astype(np.float32)
        out[n] = lane[:, 0]
    return out
