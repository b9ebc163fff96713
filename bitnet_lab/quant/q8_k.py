"""Q8_K: llama.cpp's activation format for the K-quant dot products (Q6_K × Q8_K, TQ2_0 × Q8_K, …).

A float row is cut into blocks of 256; each block keeps one float32 scale ``d`` and 256 int8
``q`` with ``x ≈ d · q`` (plus ``bsums``, the sums of each 16 consecutive ``q``, which ggml's SIMD
dots use to fold a weight offset out of the integer loop). This is the numpy twin of
``bl_quantize_row_q8_k`` (cython_kernels/src/q8k.c) and of upstream
``ggml-org/llama.cpp:ggml/src/ggml-quants.c`` ``quantize_row_q8_K_ref``, operation for operation
in float32 (docs/numerics.md#9-embedding-and-lm_head):

* ``max`` = the first element of largest ``|x|`` in the block (a later tie does not replace it,
  so ``[-3, 3]`` has ``max = -3``); ``amax = |max|``;
* ``amax == 0`` → ``d = 0`` and every ``q = 0``;
* otherwise ``iscale = fl32(-127 / max)`` (the NEGATIVE of the usual scale: upstream's choice,
  kept because it fixes the sign of ``d`` and so the bits), ``v = nearest_int(fl32(iscale·x))``,
  ``q = min(127, v)``, ``d = fl32(1 / iscale)``.

``nearest_int`` is ggml's: add 12582912 (1.5·2^23) in float32 and take the low 23 bits of the
sum minus 2^22 — round half to even for ``|v| < 2^22``. The twin evaluates exactly that bit
recipe (not ``np.rint``), so the one case outside that range — a block whose ``|max|`` is so small
that ``-127 / max`` overflows to ±inf — also quantises as ggml does (every ``q = 0``,
``d = ∓0``) instead of being a separate rule.

Non-finite input is rejected (``CodecError``): ggml would turn a NaN into garbage integers.
"""

from __future__ import annotations

import numpy as np

from bitnet_lab.errors import CodecError

QK_K = 256  # elements per Q8_K block (ggml QK_K)
BSUM_GROUP = 16  # elements per bsums entry
_MAGIC = np.float32(12582912.0)  # 1.5·2^23: ggml's nearest_int shifter


def _check(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype != np.float32:
        raise CodecError(f"quantize_q8_k: expected float32 input, got {x.dtype}")
    if x.ndim == 0 or x.shape[-1] % QK_K != 0 or x.shape[-1] == 0:
        raise CodecError(
            f"quantize_q8_k: the last axis must be a positive multiple of {QK_K}, got shape {x.shape}"
        )
    bad = ~np.isfinite(x)
    if bad.any():
        first = int(np.flatnonzero(bad.reshape(-1))[0])
        raise CodecError(
            f"quantize_q8_k: {int(bad.sum())} non-finite input value(s), first at flat index {first}"
        )
    return x


def nearest_int(v: np.ndarray) -> np.ndarray:
    """ggml's ``nearest_int`` on float32 ``v``, bit for bit: int32 of the low 23 bits of
    ``fl32(v + 1.5·2^23)`` minus 2^22 (round half to even for |v| < 2^22)."""
    s = (np.asarray(v, np.float32) + _MAGIC).astype(np.float32)
    return (s.view(np.int32) & np.int32(0x007FFFFF)) - np.int32(0x00400000)


def quantize_q8_k(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Quantise float32 ``x`` (..., K), K % 256 == 0, to Q8_K.

    Returns ``(d, q)``: ``d`` float32 (..., K/256), ``q`` int8 (..., K).
    """
    x = _check(x)
    lead, K = x.shape[:-1], x.shape[-1]
    blocks = x.reshape(-1, QK_K)
    ax = np.abs(blocks)
    first_max = np.argmax(ax, axis=1)  # argmax returns the FIRST largest: upstream's `ax > amax`
    rows = np.arange(blocks.shape[0])
    mx = blocks[rows, first_max]
    zero = ax[rows, first_max] == 0
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        iscale = (np.float32(-127.0) / np.where(zero, np.float32(1.0), mx)).astype(np.float32)
        prod = (iscale[:, None] * blocks).astype(np.float32)
        v = np.minimum(nearest_int(prod), np.int32(127))
        d = (np.float32(1.0) / iscale).astype(np.float32)
    # C's (int8_t) of the int: keep the low byte (two's complement; only the ±inf case uses it)
    q = v.astype(np.int64).astype(np.uint8).view(np.int8)
    q[zero] = 0
    d[zero] = np.float32(0.0)
    return d.reshape(*lead, K // QK_K), q.reshape(*lead, K)


def q8_k_bsums(q: np.ndarray) -> np.ndarray:
    """Sums of each 16 consecutive ``q`` (..., K) → int16 (..., K/16) (ggml's ``bsums``; |sum| <= 2032)."""
    q = np.asarray(q)
    if q.dtype != np.int8 or q.ndim == 0 or q.shape[-1] % BSUM_GROUP != 0:
        raise CodecError(f"q8_k_bsums: expected int8 (..., K) with K % 16 == 0, got {q.dtype} {q.shape}")
    s = q.reshape(*q.shape[:-1], -1, BSUM_GROUP).astype(np.int32).sum(axis=-1)
    return s.astype(np.int16)


def dequantize_q8_k(d: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``fl32(d · q)`` per element (..., K): what a Q8_K row stands for."""
    K = q.shape[-1]
    dd = np.repeat(np.asarray(d, np.float32), QK_K, axis=-1).reshape(*q.shape[:-1], K)
    return (dd * q.astype(np.float32)).astype(np.float32)
