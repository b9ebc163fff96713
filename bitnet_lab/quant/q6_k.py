"""Q6_K weight rows against a Q8_K hidden state: llama.cpp's ``ggml_vec_dot_q6_K_q8_K`` semantics
in the project's one canonical float order (numpy twin of src/bl_q6k.h, the native Q6_K lm_head;
docs/numerics.md#9-embedding-and-lm_head).

Per 256-block ``b`` of a weight row and a hidden row (quantised by :func:`quant.q8_k.quantize_q8_k`):

* ``isum_b = Σ_s scales[s] · Σ_{e in sub-block s} (u_e − 32) · q8_e`` — an exact int32
  (16 sub-blocks of 16; ``u`` the 6-bit codes);
* ``sum = sum + fl32(fl32(isum_b) · fl32(d6_b · d8_b))``, blocks in increasing order from
  ``sum = 0`` (a multiply, then an add: never fused).

ggml sums the same integers but folds the floats in an order that differs per ISA; this order is
the one the TQ × Q8_K projections use (reference ``layers.q8_k_block_dot``).
"""

from __future__ import annotations

import numpy as np

from bitnet_lab.errors import CodecError
from bitnet_lab.quant.blockquant import q6_k_parts
from bitnet_lab.quant.q8_k import QK_K

Q6_K_BYTES = 210  # ql[128], qh[64], int8 scales[16], fp16 d


def decode_q6_k(rows: np.ndarray, K: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw Q6_K rows (V, K/256·210) uint8 → ``(w int8 (V, K) = u − 32, scales int8 (V, K/16),
    d float32 (V, K/256))`` (the block layout: blockquant.q6_k_parts)."""
    rows = np.asarray(rows)
    if rows.dtype != np.uint8 or rows.ndim != 2 or K % QK_K or rows.shape[1] != K // QK_K * Q6_K_BYTES:
        raise CodecError(f"decode_q6_k: expected uint8 (V, {K // QK_K * Q6_K_BYTES}) rows for K = {K} "
                         f"(a multiple of {QK_K}), got {rows.dtype} {rows.shape}")
    V, nb = rows.shape[0], K // QK_K
    q, scales, d = q6_k_parts(rows.reshape(V * nb, Q6_K_BYTES))
    return q.reshape(V, K), scales.reshape(V, K // 16), d.reshape(V, nb)


def block_isums(w: np.ndarray, scales: np.ndarray, q8: np.ndarray) -> np.ndarray:
    """Exact ``isum`` (N, V, K/256) int32 of weight codes ``w`` (V, K) int8 (u − 32), ``scales``
    (V, K/16) and Q8_K codes ``q8`` (N, K)."""
    V, K = w.shape
    N = q8.shape[0]
    sub = np.einsum("nsk,vsk->nvs", q8.reshape(N, K // 16, 16).astype(np.int32),
                    w.reshape(V, K // 16, 16).astype(np.int32))  # (N, V, K/16), |.| <= 16·32·127
    return (sub * scales.astype(np.int32)[None]).reshape(N, V, K // QK_K, 16).sum(axis=-1, dtype=np.int32)


def q6_k_dot_q8_k(rows: np.ndarray, K: int, d8: np.ndarray, q8: np.ndarray, *, chunk: int = 4096) -> np.ndarray:
    """Logits (N, V) float32 of Q6_K rows (V, K/256·210) uint8 against Q8_K hidden rows
    ``d8`` (N, K/256), ``q8`` (N, K), in the canonical order (module docstring). The vocabulary is
    walked ``chunk`` rows at a time to bound the int32 temporaries."""
    V = np.asarray(rows).shape[0]
    q8 = np.asarray(q8, np.int8).reshape(-1, K)
    d8 = np.asarray(d8, np.float32).reshape(q8.shape[0], K // QK_K)
    out = np.empty((q8.shape[0], V), np.float32)
    for r0 in range(0, V, chunk):
        w, scales, d6 = decode_q6_k(rows[r0:r0 + chunk], K)
        isum = block_isums(w, scales, q8)  # (N, v, nb)
        dd = (d6[None, :, :] * d8[:, None, :]).astype(np.float32)  # fl32(d6 · d8)
        s = np.zeros(isum.shape[:2], np.float32)
        for b in range(K // QK_K):
            s = (s + (isum[:, :, b].astype(np.float32) * dd[:, :, b]).astype(np.float32)).astype(np.float32)
        out[:, r0:r0 + chunk] = s
    return out
