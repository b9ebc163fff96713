"""The native Q8_K activation quantiser (src/q8k.c), twin of :mod:`bitnet_lab.quant.q8_k`.

One scalar implementation, the same on every ISA level (bl_q8k.h says why), so it takes no
``isa=``. Input checks (dtype, K % 256, finiteness) are the twin's, so both reject the same rows
with the same message.
"""

from __future__ import annotations

import numpy as np

from bitnet_lab.kernels.native import _k
from bitnet_lab.quant import q8_k as _twin


def quantize_q8_k(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q8_K of float32 ``x`` (..., K), K % 256 == 0 → ``(d (..., K/256) f32, q (..., K) int8)``."""
    x = _twin._check(x)
    lead, K = x.shape[:-1], x.shape[-1]
    rows = np.ascontiguousarray(x.reshape(-1, K))
    d = np.empty((rows.shape[0], K // _twin.QK_K), np.float32)
    q = np.empty(rows.shape, np.int8)
    _k.quantize_q8_k_rows(rows, d, q)
    return d.reshape(*lead, K // _twin.QK_K), q.reshape(*lead, K)


def q8_k_bsums(q: np.ndarray) -> np.ndarray:
    """int16 sums of each 16 consecutive ``q`` (..., K) → (..., K/16)."""
    q = np.asarray(q)
    if q.dtype != np.int8 or q.ndim == 0 or q.shape[-1] % _twin.BSUM_GROUP != 0:
        raise _twin.CodecError(f"q8_k_bsums: expected int8 (..., K) with K % 16 == 0, got {q.dtype} {q.shape}")
    rows = np.ascontiguousarray(q.reshape(-1, q.shape[-1]))
    out = np.empty((rows.shape[0], rows.shape[1] // _twin.BSUM_GROUP), np.int16)
    _k.q8_k_bsums_rows(rows, out)
    return out.reshape(*q.shape[:-1], -1)
