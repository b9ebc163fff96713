"""The engine's quantised lm_head kernels as standalone calls (src/engine_float.h ``lm_q8``,
``lm_q6k``): for their tests and ``bitnet-lab bench --kernels``. The engine runs the same
functions inside its forward pass; the numpy twins are :mod:`bitnet_lab.quant.q6_k` and
:mod:`bitnet_lab.quant.q8_0_dot` (docs/kernels.md#quantised-lm_head)."""

from __future__ import annotations

import numpy as np

from bitnet_lab.errors import CodecError
from bitnet_lab.kernels.isa import _isa_index, effective_threads
from bitnet_lab.kernels.native import _k
from bitnet_lab.kernels.q8k import q8_k_bsums, quantize_q8_k
from bitnet_lab.quant.q8_0_dot import Q8_0_BLOCK, Q8_0_BYTES, quantize_q8_0_act

Q6_K_BYTES = 210
QK_K = 256


def _rows(rows, K: int, block: int, nbytes: int, fmt: str) -> np.ndarray:
    rows = np.asarray(rows)
    if rows.dtype != np.uint8 or rows.ndim != 2 or K <= 0 or K % block or rows.shape[1] != K // block * nbytes:
        raise CodecError(f"{fmt} lm_head: expected uint8 rows (V, {K // block * nbytes if K > 0 else '?'}) for "
                         f"K = {K} (a positive multiple of {block}), got {rows.dtype} {rows.shape}")
    return np.ascontiguousarray(rows)


def _hidden(x, K: int, fmt: str) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype != np.float32 or x.ndim != 2 or x.shape[1] != K:
        raise CodecError(f"{fmt} lm_head: expected float32 hidden rows (N, {K}), got {x.dtype} {x.shape}")
    x = np.ascontiguousarray(x)
    if x.ctypes.data % 64 == 0:
        return x
    # The engine's hidden rows start on a cache line; so do these, or every 64-byte load of the
    # multi-row kernels straddles two lines and the call is timed slower than the engine runs it.
    buf = np.empty(x.size + 16, np.float32)
    start = (-buf.ctypes.data % 64) // 4
    out = buf[start : start + x.size].reshape(x.shape)
    out[...] = x
    return out


def q8_k_operand(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hidden rows (N, K) f32 → the Q6_K lm_head's operand ``(q8, d8, bsums)``."""
    d8, q8 = quantize_q8_k(x)
    return q8, d8, q8_k_bsums(q8)


def lm_head_q6_k(rows, K: int, x, *, isa: str | None = None, threads: int | None = None,
                 operand: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Logits (N, V) f32 of a Q6_K lm_head (raw rows (V, K/256·210) uint8) for hidden rows x (N, K)
    f32, quantised to Q8_K (``operand``: pass :func:`q8_k_operand`'s result to time the GEMV alone)."""
    rows = _rows(rows, K, QK_K, Q6_K_BYTES, "Q6_K")
    q8, d8, bs = operand if operand is not None else q8_k_operand(_hidden(x, K, "Q6_K"))
    out = np.empty((q8.shape[0], rows.shape[0]), np.float32)
    _k.lm_q6k_rows(rows, K, q8, d8, bs, out, _isa_index(isa), effective_threads(threads))
    return out


def lm_head_q8_0(rows, K: int, x, *, isa: str | None = None, threads: int | None = None,
                 operand: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Logits (N, V) f32 of a Q8_0 lm_head (raw rows (V, K/32·34) uint8) for hidden rows x (N, K)
    f32, quantised to Q8_0 (``operand``: :func:`quantize_q8_0_act`'s result)."""
    rows = _rows(rows, K, Q8_0_BLOCK, Q8_0_BYTES, "Q8_0")
    qx, dx, qs4 = operand if operand is not None else quantize_q8_0_act(_hidden(x, K, "Q8_0"))
    out = np.empty((qx.shape[0], rows.shape[0]), np.float32)
    _k.lm_q8_0_rows(rows, K, qx, dx, qs4, out, _isa_index(isa), effective_threads(threads))
    return out


def lm_head_float(rows, K: int, x, *, isa: str | None = None, threads: int | None = None,
                  hidden_f16: bool = False) -> np.ndarray:
    """Logits (N, V) f32 of an F32 (float32 (V, K)) or F16 (float16 (V, K)) lm_head for f32 hidden
    rows x (N, K), in the canonical 32-lane f32 order (the engine's float lm_head; with a Q6_K file
    and ``lm_head_dtype="f32"`` the engine runs it over the widened F32 copy). ``hidden_f16=True``
    (F16 rows only): x holds fp16 numbers, as the engine's F16 lm_head input does — the kernel the
    engine runs then (fused multiply-adds of exact products; the same bits)."""
    rows = np.asarray(rows)
    if rows.dtype not in (np.float32, np.float16) or rows.ndim != 2 or rows.shape[1] != K:
        raise CodecError(f"float lm_head: expected float32 / float16 rows (V, {K}), got {rows.dtype} {rows.shape}")
    x = _hidden(x, K, "float")
    ftype = 0 if rows.dtype == np.float32 else 1
    if hidden_f16:
        if ftype != 1:
            raise CodecError("float lm_head: hidden_f16=True needs float16 rows")
        if not np.array_equal(x.astype(np.float16).astype(np.float32), x, equal_nan=True):
            raise CodecError("float lm_head: hidden_f16=True needs hidden rows of fp16 values")
        ftype = 4
    raw = np.ascontiguousarray(rows).view(np.uint8)
    out = np.empty((x.shape[0], rows.shape[0]), np.float32)
    _k.lm_float_rows(ftype, raw, K, x, out, _isa_index(isa), effective_threads(threads))
    return out
