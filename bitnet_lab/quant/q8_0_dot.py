"""Q8_0 weight rows against a Q8_0-quantised hidden state: the engine's Q8_0 lm_head
(llama.cpp's ``ggml_vec_dot_q8_0_q8_0`` semantics in the canonical order of
src/engine_float.h; the reference's ``layers.lm_head_q8_0`` sums the same exact terms in float64),
as a numpy twin for the kernel's tests and benchmark (docs/numerics.md#9-embedding-and-lm_head).

* hidden row → Q8_0 (llama.cpp ``quantize_row_q8_0``): per block of 32, ``d = fl32(amax / 127)``,
  ``q = roundf(fl32(x · (d ? fl32(1/d) : 0)))`` (half away from zero), ``d`` kept as its fp16 value;
* per block b and quad j (4 consecutive elements): the exact ``p_bj = Σ q_w·q_x``; 16 float32
  lanes, lane ``8·(b % 2) + j`` summed in increasing b as ``lane + fl32(p_bj · fl32(d_w,b · d_x,b))``;
  then the fold w = 8, 4, 2, 1 (``lane[i] += lane[i + w]``); the logit is lane 0.
"""

from __future__ import annotations

import numpy as np

from bitnet_lab.errors import CodecError

Q8_0_BLOCK, Q8_0_BYTES = 32, 34


def quantize_q8_0_act(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Finite float32 rows (N, K), K % 32 == 0 → ``(q int8 (N, K), d f32 (N, K/32) fp16 values,
    qsum4 int32 (N, K/4) = 128·Σ of each quad of q)`` (the operand src/engine.c quantize_q8_0 builds)."""
    x = np.asarray(x, np.float32)
    if x.ndim != 2 or x.shape[1] % Q8_0_BLOCK or not np.isfinite(x).all():
        raise CodecError(f"quantize_q8_0_act: expected finite float32 (N, K) with K % 32 == 0, got {x.shape}")
    N, K = x.shape
    xb = x.reshape(N, K // Q8_0_BLOCK, Q8_0_BLOCK)
    d = (np.abs(xb).max(axis=-1) / np.float32(127.0)).astype(np.float32)
    with np.errstate(divide="ignore"):
        inv = np.where(d != 0, np.float32(1.0) / np.where(d != 0, d, np.float32(1.0)), np.float32(0.0)).astype(np.float32)
    v = (xb * inv[..., None]).astype(np.float32)
    q = (np.sign(v) * np.floor(np.abs(v) + np.float32(0.5))).astype(np.int8)  # roundf: half away
    # floor(|v| + 0.5) is exact here: |v| <= 127.5 has 8 integer bits, so the add cannot round
    q = q.reshape(N, K)
    qsum4 = 128 * q.reshape(N, K // 4, 4).astype(np.int32).sum(axis=-1, dtype=np.int32)
    return q, d.astype(np.float16).astype(np.float32), qsum4


def q8_0_dot_q8_0(rows: np.ndarray, K: int, dx: np.ndarray, qx: np.ndarray, *, chunk: int = 8192) -> np.ndarray:
    """Logits (N, V) float32 of Q8_0 rows (V, K/32·34) uint8 against Q8_0 hidden rows ``dx``
    (N, K/32), ``qx`` (N, K) in the canonical order (module docstring)."""
    rows = np.asarray(rows)
    nb = K // Q8_0_BLOCK
    if rows.dtype != np.uint8 or rows.ndim != 2 or K % Q8_0_BLOCK or rows.shape[1] != nb * Q8_0_BYTES:
        raise CodecError(f"q8_0_dot_q8_0: expected uint8 (V, {nb * Q8_0_BYTES}) rows, got {rows.dtype} {rows.shape}")
    N, V = qx.shape[0], rows.shape[0]
    xq = qx.reshape(N, nb, 8, 4).astype(np.int32)
    out = np.empty((N, V), np.float32)
    for r0 in range(0, V, chunk):
        blk = rows[r0:r0 + chunk].reshape(-1, nb, Q8_0_BYTES)
        v = blk.shape[0]
        dw = np.ascontiguousarray(blk[:, :, :2]).view("<f2").astype(np.float32).reshape(v, nb)
        qw = np.ascontiguousarray(blk[:, :, 2:]).view(np.int8).reshape(v, nb, 8, 4).astype(np.int32)
        p = np.einsum("nbjk,vbjk->nvbj", xq, qw)  # exact quad sums
        dd = (dw[None, :, :] * dx[:, None, :]).astype(np.float32)  # exact: 11 x 11 bits
        lane = np.zeros((N, v, 16), np.float32)
        for b in range(nb):
            t = (p[:, :, b, :].astype(np.float32) * dd[:, :, b, None]).astype(np.float32)
            o = 8 * (b % 2)
            lane[:, :, o:o + 8] = (lane[:, :, o:o + 8] + t).astype(np.float32)
        for w in (8, 4, 2, 1):
            lane[:, :, :w] = (lane[:, :, :w] + lane[:, :, w:2 * w]).astype(np.float32)
        out[:, r0:r0 + chunk] = lane[:, :, 0]
    return out
