"""numpy twins of the MAD-family native kernels (the CPU reference the C kernels must match).

Every native multiply-add kernel in ``bitnet_lab.kernels`` (I2_S, TQ2_0, TQ1_0 GEMV/GEMM) returns
the exact integer ``Σ_k t[r, k]·q[n, k]`` per weight row r and activation row n, as int32. The
functions here compute the same numbers the slow, obvious way: decode the ternary weights with
the codecs of :mod:`bitnet_lab.quant.packing`, then an integer matrix product in int64, cast to
int32 (exact: ``|Σ t·q| ≤ 128·K`` fits int32 for any K < 2²⁴, docs/numerics.md#31-the-integer-identity).

Activation quantisation has no twin here: it is :func:`bitnet_lab.quant.quantize_activations`
itself (the numerics policy), which ``kernels.quantize_act`` must reproduce bit for bit.

TQ2_0 / TQ1_0: these are llama.cpp's weight layouts, but the numerics are BitNet's — one int8
activation row per token with one scale (docs/numerics.md#21-bitnetcpp-i2_s-path), not llama.cpp's
per-256-block Q8_K activations. The per-block fp16 scales ``d`` are ignored by the whole-row integer
product: it equals the dequantised product (up to the common scale) only when every non-zero ``d`` of the
tensor is the same value and all-zero-scale blocks hold only zero weights — :func:`tq_uniform_scale` checks
it. Tensors whose scales differ use the per-block products (``*_block_gemm_ref``) with
:func:`block_epilogue_ref`; the ``llama.cpp`` numerics profile's dot is :func:`tq_dot_q8k`.

The int16-accumulator model (:func:`int16_accumulator_dot`) reproduces, lane by lane, the AVX2
``maddubs`` kernel of bitnet.cpp (docs/kernels.md#21-x86-avx2,
docs/kernels.md#23-the-int16-overflow-bound-and-a-safer-widening-rule), so tests can show that a 32-block
int16 interval overflows on adversarial rows while the ≤ 16-block rule our kernels follow does not.

Shapes: packed weights are flat uint8 blobs for an ``(M, K)`` tensor (torch order); ``q`` is int8
``(K,)`` for a GEMV and ``Q`` int8 ``(N, K)`` for a GEMM; GEMV results are int32 ``(M,)``, GEMM
results int32 ``(N, M)``.
"""

from __future__ import annotations

import numpy as np

from bitnet_lab.errors import CodecError
from bitnet_lab.quant import packing

__all__ = [
    "i2s_gemm_ref",
    "i2s_gemv_ref",
    "i2s_x4_from_rowmajor",
    "i2s_x4_gemm_ref",
    "i2s_x4_gemv_ref",
    "i2s_x4_to_rowmajor",
    "tq2_0_to_i2s",
    "int16_accumulator_dot",
    "raw_code_dot_ref",
    "tq1_gemm_ref",
    "tq1_gemv_ref",
    "tq1_x16_from_tq1",
    "tq1_x16_gemm_ref",
    "tq1_x16_gemv_ref",
    "tq1_x16_to_tq1",
    "tq2_gemm_ref",
    "tq2_gemv_ref",
    "tq_uniform_scale",
    "block_epilogue_ref",
    "i2s_block_gemm_ref",
    "tq1_block_gemm_ref",
    "tq2_block_gemm_ref",
    "tq_dot_q8k",
]


# ----------------------------------------------------------------------------- helpers


def _act(q, K: int, what: str, batched: bool) -> np.ndarray:
    """``q`` as int8 ``(K,)`` (GEMV) or ``(N, K)`` (GEMM), else CodecError with the shapes."""
    if not isinstance(q, np.ndarray) or q.dtype != np.int8:
        raise CodecError(f"{what}: activations must be an int8 numpy array; got {getattr(q, 'dtype', type(q).__name__)}")
    want = 2 if batched else 1
    if q.ndim != want or q.shape[-1] != K:
        shape = "(N, K)" if batched else "(K,)"
        raise CodecError(f"{what}: activations must have shape {shape} with K = {K}; got {q.shape}")
    return q


def _int_product(t: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """Exact ``Q @ tᵀ`` for int8 t (M, K) and int8 Q (N, K): int64 matmul, then int32 (N, M)."""
    return (Q.astype(np.int64) @ t.astype(np.int64).T).astype(np.int32)


# ----------------------------------------------------------------------------- I2_S


def i2s_gemv_ref(packed, q: np.ndarray, M: int, K: int) -> np.ndarray:
    """``Σ_k t[r, k]·q[k]`` for every row r of an I2_S tensor (128/32 layout): int32 (M,)."""
    t = packing.unpack_i2_s(packed, M, K)
    return _int_product(t, _act(q, K, "i2s_gemv_ref", False)[None, :])[0]


def i2s_gemm_ref(packed, Q: np.ndarray, M: int, K: int) -> np.ndarray:
    """``Σ_k t[r, k]·Q[n, k]`` for every activation row n and weight row r: int32 (N, M)."""
    t = packing.unpack_i2_s(packed, M, K)
    return _int_product(t, _act(Q, K, "i2s_gemm_ref", True))


# ----------------------------------------------------------------------------- I2_S x4


def _x4_parts(M: int, K: int, what: str) -> tuple[int, int, int]:
    """(full groups G, 64-byte steps S, bytes per row rb) of the x4 layout of an (M, K) I2_S tensor."""
    if K % 128:
        raise CodecError(f"{what}: the I2_S x4 layout needs K % 128 == 0, got K = {K}")
    return M // 4, K // 256, K // 4


def i2s_x4_from_rowmajor(packed, M: int, K: int) -> np.ndarray:
    """Row-major I2_S bytes -> the x4 order (src/bl_mad.h, "The I2_S x4 layout"): in each group of
    4 rows, the rows' 64-byte steps side by side (then their 32-byte odd blocks); M % 4 tail rows
    unchanged. The numpy statement of the layout the C repack must agree with."""
    G, S, rb = _x4_parts(M, K, "i2s_x4_from_rowmajor")
    src = np.asarray(packed, dtype=np.uint8).reshape(-1)[: M * rb]
    out = src.copy()
    rows = src[: 4 * G * rb].reshape(G, 4, rb)
    groups = out[: 4 * G * rb].reshape(G, 4 * rb)
    # (G, 4 rows, S steps, 64) -> (G, S steps, 4 rows, 64): one 256-byte run per step
    groups[:, : 256 * S] = rows[:, :, : 64 * S].reshape(G, 4, S, 64).transpose(0, 2, 1, 3).reshape(G, 256 * S)
    if rb % 64:  # the odd 128-weight block: 4 rows × 32 bytes after the steps
        groups[:, 256 * S :] = rows[:, :, 64 * S :].reshape(G, 128)
    return out


def i2s_x4_to_rowmajor(data, M: int, K: int) -> np.ndarray:
    """The inverse of :func:`i2s_x4_from_rowmajor`."""
    G, S, rb = _x4_parts(M, K, "i2s_x4_to_rowmajor")
    src = np.asarray(data, dtype=np.uint8).reshape(-1)[: M * rb]
    out = src.copy()
    groups = src[: 4 * G * rb].reshape(G, 4 * rb)
    rows = out[: 4 * G * rb].reshape(G, 4, rb)
    rows[:, :, : 64 * S] = groups[:, : 256 * S].reshape(G, S, 4, 64).transpose(0, 2, 1, 3).reshape(G, 4, 64 * S)
    if rb % 64:
        rows[:, :, 64 * S :] = groups[:, 256 * S :].reshape(G, 4, 32)
    return out


def tq2_0_to_i2s(data, M: int, K: int) -> np.ndarray:
    """The codes of a TQ2_0 tensor as I2_S bytes, through the ternary values: decode, re-encode."""
    return packing.pack_i2_s(packing.unpack_tq2_0(data, M, K)[0])


def i2s_x4_gemv_ref(data, q: np.ndarray, M: int, K: int) -> np.ndarray:
    """:func:`i2s_gemv_ref` of an I2_S x4 tensor: int32 (M,)."""
    return i2s_gemv_ref(i2s_x4_to_rowmajor(data, M, K), q, M, K)


def i2s_x4_gemm_ref(data, Q: np.ndarray, M: int, K: int) -> np.ndarray:
    """:func:`i2s_gemm_ref` of an I2_S x4 tensor: int32 (N, M)."""
    return i2s_gemm_ref(i2s_x4_to_rowmajor(data, M, K), Q, M, K)


def raw_code_dot_ref(packed, q: np.ndarray, M: int, K: int) -> np.ndarray:
    """``D = Σ_k c[r, k]·q[k]`` with the unsigned codes ``c = t + 1`` (what the u8 × s8 byte
    instructions compute before the code-offset correction): int32 (M,).

    ``D − Σ_k q[k]`` equals :func:`i2s_gemv_ref` (docs/numerics.md#31-the-integer-identity); tests check
    the two separately so an error in the correction cannot hide behind an error in the dot product.
    """
    c = packing.unpack_i2_s(packed, M, K).astype(np.int64) + 1
    return (c @ _act(q, K, "raw_code_dot_ref", False).astype(np.int64)).astype(np.int32)


def int16_accumulator_dot(packed, q: np.ndarray, M: int, K: int, widen_every: int) -> np.ndarray:
    """Model of an AVX2 I2_S kernel with an int16 accumulator widened every ``widen_every`` blocks.

    Per 128-weight block and per int16 lane ``l`` (0..15), the four ``_mm256_maddubs_epi16`` of
    the block's planes add ``c[2l]·q[2l] + c[2l+1]·q[2l+1]`` of each plane (a saturating int16
    pair sum — it never saturates for codes ≤ 2). The lanes are accumulated in **wrapping**
    int16 (``_mm256_add_epi16``) for ``widen_every`` blocks, then widened to int32 and summed.
    Returns ``D = Σ c·q`` as that kernel would: int32 (M,). Equal to :func:`raw_code_dot_ref`
    exactly when no int16 lane leaves [−32768, 32767] — true for ``widen_every ≤ 16``
    (docs/kernels.md#23-the-int16-overflow-bound-and-a-safer-widening-rule), not for bitnet.cpp's 32 on
    adversarial rows.
    """
    if widen_every < 1:
        raise ValueError(f"widen_every must be >= 1, got {widen_every}")
    q = _act(q, K, "int16_accumulator_dot", False)
    c = packing.unpack_i2_s(packed, M, K).astype(np.int32) + 1
    nb = K // 128
    # (M, blocks, plane, 16 lanes, 2 products): pairs of adjacent elements of each 32-wide plane.
    prod = (c.reshape(M, nb, 4, 16, 2) * q.astype(np.int32).reshape(1, nb, 4, 16, 2)).sum(axis=4)
    pair = np.clip(prod, -32768, 32767)  # maddubs saturates each pair sum to int16
    per_block = pair.sum(axis=2)  # (M, nb, 16): the four planes' maddubs added into the lanes
    out = np.zeros(M, dtype=np.int64)
    for start in range(0, nb, widen_every):  # loop over widening intervals only (few)
        lanes = per_block[:, start : start + widen_every].sum(axis=1)
        wrapped = ((lanes + 32768) % 65536) - 32768  # what the int16 accumulator holds
        out += wrapped.sum(axis=1)
    return out.astype(np.int32)


# ----------------------------------------------------------------------------- TQ2_0 / TQ1_0


def tq2_gemv_ref(data, q: np.ndarray, M: int, K: int) -> np.ndarray:
    """``Σ_k t[r, k]·q[k]`` for a TQ2_0 tensor (block scales ignored, see module doc): int32 (M,)."""
    t, _ = packing.unpack_tq2_0(data, M, K)
    return _int_product(t, _act(q, K, "tq2_gemv_ref", False)[None, :])[0]


def tq1_gemv_ref(data, q: np.ndarray, M: int, K: int) -> np.ndarray:
    """``Σ_k t[r, k]·q[k]`` for a TQ1_0 tensor (block scales ignored, see module doc): int32 (M,)."""
    t, _ = packing.unpack_tq1_0(data, M, K)
    return _int_product(t, _act(q, K, "tq1_gemv_ref", False)[None, :])[0]


def tq2_gemm_ref(data, Q: np.ndarray, M: int, K: int) -> np.ndarray:
    """TQ2_0 batched product: int32 (N, M)."""
    t, _ = packing.unpack_tq2_0(data, M, K)
    return _int_product(t, _act(Q, K, "tq2_gemm_ref", True))


def tq1_gemm_ref(data, Q: np.ndarray, M: int, K: int) -> np.ndarray:
    """TQ1_0 batched product: int32 (N, M)."""
    t, _ = packing.unpack_tq1_0(data, M, K)
    return _int_product(t, _act(Q, K, "tq1_gemm_ref", True))


# ----------------------------------------------------------------------------- TQ1_0 x16


def _x16_groups(M: int) -> list[tuple[int, int]]:
    """(first row, rows) of each group of the x16 layout: 16 rows, the last one M % 16 when short."""
    return [(g, min(16, M - g)) for g in range(0, M, 16)]


def tq1_x16_from_tq1(data, M: int, K: int) -> np.ndarray:
    """A TQ1_0 tensor -> the x16 order (src/bl_mad.h, "The TQ1_0 x16 layout"): the 52 code bytes of
    every block (scales dropped), and in each group of m ≤ 16 rows, the rows' 4-byte words side by
    side. The numpy statement of the layout the C repack must agree with."""
    if K % 256:
        raise CodecError(f"tq1_x16_from_tq1: TQ1_0 needs K % 256 == 0, got K = {K}")
    nb = K // 256
    codes = np.asarray(data, dtype=np.uint8).reshape(M, nb, 54)[:, :, :52].reshape(M, nb * 52 // 4, 4)
    return np.concatenate([codes[g : g + m].transpose(1, 0, 2).reshape(-1) for g, m in _x16_groups(M)])


def tq1_x16_to_tq1(data, M: int, K: int) -> np.ndarray:
    """The inverse of :func:`tq1_x16_from_tq1`: TQ1_0 bytes whose block scales are 0."""
    nb, cb = K // 256, K // 256 * 52
    src = np.asarray(data, dtype=np.uint8).reshape(-1)
    out = np.zeros((M, nb, 54), dtype=np.uint8)
    for g, m in _x16_groups(M):
        out[g : g + m, :, :52] = src[g * cb : (g + m) * cb].reshape(cb // 4, m, 4).transpose(1, 0, 2).reshape(m, nb, 52)
    return out.reshape(-1)


def tq1_x16_gemv_ref(data, q: np.ndarray, M: int, K: int) -> np.ndarray:
    """:func:`tq1_gemv_ref` of a TQ1_0 x16 tensor: int32 (M,)."""
    return tq1_gemv_ref(tq1_x16_to_tq1(data, M, K), q, M, K)


def tq1_x16_gemm_ref(data, Q: np.ndarray, M: int, K: int) -> np.ndarray:
    """:func:`tq1_gemm_ref` of a TQ1_0 x16 tensor: int32 (N, M)."""
    return tq1_gemm_ref(tq1_x16_to_tq1(data, M, K), Q, M, K)


def tq_uniform_scale(block_scales: np.ndarray, t: np.ndarray | None = None, *, name: str | None = None) -> np.float32:
    """The one scale shared by every non-zero block scale of a TQ1_0/TQ2_0 tensor, as float32.

    The native TQ kernels return the integer ``Σ t·q`` of the whole row and ignore the per-block
    fp16 ``d``; ``d_common · Σ t·q`` is the dequantised product only when all non-zero ``d`` are
    equal (true of every ternary × γ file: quantize gives ``d = fp16(γ)`` for each block holding a
    non-zero weight, 0 for all-zero blocks). Raises CodecError naming the first block whose scale
    differs. Returns 0.0 when every scale is 0.

    ``t`` (optional, int8 (M, K)): also check that blocks with ``d == 0`` hold only zero weights
    (their weights would otherwise count in ``Σ t·q`` although they dequantise to 0).
    """
    who = f"tensor {name!r}" if name else "TQ tensor"
    d = np.asarray(block_scales)
    if d.dtype != np.float16:
        raise CodecError(f"{who}: block scales must be float16 (as stored), got {d.dtype}")
    if d.size == 0:
        raise CodecError(f"{who}: no block scales")
    flat = d.reshape(-1)
    if not np.isfinite(flat).all():
        i = int(np.flatnonzero(~np.isfinite(flat))[0])
        raise CodecError(f"{who}: block scale {i} is {flat[i]} (not finite)")
    nz = np.flatnonzero(flat != 0)
    common = np.float16(0) if nz.size == 0 else flat[nz[0]]
    bad = nz[flat[nz] != common]
    if bad.size:
        i = int(bad[0])
        raise CodecError(
            f"{who}: the native TQ kernels need one common non-zero block scale; block {nz[0]} "
            f"has d = {float(common)!r} but block {i} has d = {float(flat[i])!r} "
            f"({bad.size} of {nz.size} non-zero scales differ)"
        )
    if t is not None:
        t = np.asarray(t)
        if t.ndim != 2 or t.size != flat.size * packing.QK_K:
            raise CodecError(f"{who}: t has shape {t.shape}, expected {flat.size * packing.QK_K} weights in 256-blocks")
        zero_blocks = flat == 0
        nonzero_w = (t.reshape(-1, packing.QK_K) != 0).any(axis=1)
        clash = np.flatnonzero(zero_blocks & nonzero_w)
        if clash.size:
            raise CodecError(
                f"{who}: {clash.size} block(s) have d = 0 but non-zero weights (first: block "
                f"{int(clash[0])}); the native TQ kernels would count those weights"
            )
    return np.float32(common)


# ----------------------------------------------------------------------------- per-256-block products

BLOCK = 256  # weights per block of the per-block products (TQ1_0/TQ2_0 block, Q8_K block)


def _block_product(t: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """int32 (N, M, K/256): ``Σ_{k in block b} t[r, k]·Q[n, k]`` for int8 t (M, K), Q (N, K)."""
    M, K = t.shape
    if K % BLOCK:
        raise CodecError(f"per-block products need K % {BLOCK} == 0, got K = {K}")
    nb = K // BLOCK
    tb = t.astype(np.int64).reshape(M, nb, BLOCK)
    qb = Q.astype(np.int64).reshape(Q.shape[0], nb, BLOCK)
    return np.einsum("nbk,mbk->nmb", qb, tb).astype(np.int32)


def i2s_block_gemm_ref(packed, Q: np.ndarray, M: int, K: int) -> np.ndarray:
    """Per-256-block ``Σ t·q`` of an I2_S tensor (K % 256 == 0): int32 (N, M, K/256). The twin of
    ``kernels.i2s_block_gemm`` / ``i2s_block_gemv`` (their rows summed over blocks equal
    :func:`i2s_gemm_ref`)."""
    return _block_product(packing.unpack_i2_s(packed, M, K), _act(Q, K, "i2s_block_gemm_ref", True))


def tq2_block_gemm_ref(data, Q: np.ndarray, M: int, K: int) -> np.ndarray:
    """Per-256-block ``Σ t·q`` of a TQ2_0 tensor: int32 (N, M, K/256) (block scales not applied)."""
    return _block_product(packing.unpack_tq2_0(data, M, K)[0], _act(Q, K, "tq2_block_gemm_ref", True))


def tq1_block_gemm_ref(data, Q: np.ndarray, M: int, K: int) -> np.ndarray:
    """Per-256-block ``Σ t·q`` of a TQ1_0 tensor: int32 (N, M, K/256) (block scales not applied)."""
    return _block_product(packing.unpack_tq1_0(data, M, K)[0], _act(Q, K, "tq1_block_gemm_ref", True))


def block_epilogue_ref(acc_b: np.ndarray, d: np.ndarray, s_x: np.ndarray) -> np.ndarray:
    """The bitnet profile's block-scaled epilogue (docs/numerics.md#35-block-scaled-tq-epilogue):
    ``y[n, r] = fl32(Σ_b acc_b[n, r, b]·d[r, b]) / s_x[n]``, the products exact in float64
    (|acc_b| ≤ 2^15 times an fp16 value), the blocks summed in float64 in order b = 0, 1, …,
    rounded once to float32, divided in float32. acc_b int32 (N, M, nb), d float32 (M, nb)
    (fp16 values), s_x float32 (N,) → float32 (N, M). The engine's loop, stated in numpy; the
    reference's ``layers.epilogue_blocks`` is the same value whenever the float64 sum is exact
    (every real file: see the section)."""
    acc_b = np.asarray(acc_b, dtype=np.int32)
    d = np.asarray(d, dtype=np.float32)
    tot = np.zeros(acc_b.shape[:2], dtype=np.float64)
    for b in range(acc_b.shape[2]):  # in block order, as the engine sums
        tot = tot + acc_b[:, :, b].astype(np.float64) * d[None, :, b].astype(np.float64)
    return (tot.astype(np.float32) / np.asarray(s_x, dtype=np.float32)[:, None]).astype(np.float32)


def tq_dot_q8k(t: np.ndarray, d_w: np.ndarray, q8: np.ndarray, d8: np.ndarray) -> np.ndarray:
    """llama.cpp's TQ1_0/TQ2_0 × Q8_K dot product, as its generic C computes it
    (``ggml-org/llama.cpp:ggml/src/ggml-cpu/quants.c`` ``ggml_vec_dot_tq2_0_q8_K_generic``,
    ``ggml_vec_dot_tq1_0_q8_K_generic``; docs/numerics.md#36-llamacpp-tq-dot-with-q8_k-activations).

    ``t`` int8 ternary (M, K); ``d_w`` the weight's block scales (M, K/256) as float32 holding
    fp16 values (an I2_S/TL tensor: its γ in every block); ``q8`` int8 (N, K) and ``d8`` float32
    (N, K/256) the Q8_K activations (``bitnet_lab.quant.q8_k.quantize_q8_k``). Per row and token:
    ``sumi_b = Σ_{k in b} t·q8`` exact; ``d = fl32(d8_b · d_w[b])``; ``sumf = fl32(sumf +
    fl32(float(sumi_b) · d))`` over the blocks in order, from 0 — all float32, no fused
    multiply-add. Returns float32 (N, M).
    """
    t = np.asarray(t)
    q8 = np.asarray(q8)
    if t.dtype != np.int8 or q8.dtype != np.int8 or t.ndim != 2 or q8.ndim != 2 or t.shape[1] != q8.shape[1]:
        raise CodecError(f"tq_dot_q8k: t (M, K) and q8 (N, K) must be int8 with one K; got {t.shape} "
                         f"{t.dtype}, {q8.shape} {q8.dtype}")
    M, K = t.shape
    N = q8.shape[0]
    nb = K // BLOCK
    d_w = np.asarray(d_w, dtype=np.float32)
    d8 = np.asarray(d8, dtype=np.float32)
    if K % BLOCK or d_w.shape != (M, nb) or d8.shape != (N, nb):
        raise CodecError(f"tq_dot_q8k: need K % {BLOCK} == 0, d_w (M, K/256) = {(M, nb)} and d8 (N, K/256) = "
                         f"{(N, nb)}; got K = {K}, {d_w.shape}, {d8.shape}")
    sumi = _block_product(t, q8)  # (N, M, nb) int32, exact
    sumf = np.zeros((N, M), dtype=np.float32)
    for b in range(nb):
        d = (d8[:, None, b] * d_w[None, :, b]).astype(np.float32)  # y.d · fp16→f32(x.d), one f32 rounding
        sumf = (sumf + (sumi[:, :, b].astype(np.float32) * d).astype(np.float32)).astype(np.float32)
    return sumf
