"""From ``(ModelConfig, tensors)`` to the plain numpy arrays the reference forward pass consumes.

numpy only (no JAX): checks names and shapes, decodes every projection to int8 ternary values plus
its scale, stacks the layers (leading axis = layer) so the forward pass can ``lax.scan`` over them.

Accepted projection tensors (GGUF names, torch order (M, K)):

* :class:`~bitnet_lab.tensors.TernaryWeight` of any layout: ``t = w.ternary()``, ``γ = w.gamma()``.
  For TQ1_0/TQ2_0 the fp16 block scales ``d`` are inspected: if every block that holds a non-zero
  weight has the same ``d`` the weight is per-tensor with ``γ = d`` (what ternary×γ input
  produces); otherwise the model switches to the **block epilogue** (layers.epilogue_blocks) for
  every projection, the per-tensor ones using ``d_b = γ`` for all their blocks.
* :class:`~bitnet_lab.tensors.FloatTensor` holding ``t·γ`` already folded (converter F32/F16
  GGUFs): ``γ = max|w|`` and ``t = sign(w)``, accepted only when every non-zero magnitude equals
  ``γ`` exactly — latent (un-ternarised) weights are refused, never silently re-quantised.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from bitnet_lab.config import ModelConfig
from bitnet_lab.errors import ConfigError
from bitnet_lab.quant.q6_k import decode_q6_k
from bitnet_lab.tensors import FloatTensor, TernaryWeight, check_finite

PROJECTIONS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
TQ_BLOCK = 256  # TQ1_0 / TQ2_0 block length along K (docs/formats.md#34-tq2_0-type-35)
LM_HEAD_CHUNK = 8192  # vocabulary rows converted to float64 at a time in the lm_head


@dataclass
class TernaryParts:
    """One decoded projection: int8 ``t`` (M, K), per-tensor ``gamma`` or block scales ``d``."""

    t: np.ndarray
    gamma: np.float32 | None
    d: np.ndarray | None  # float32 (M, K // 256)


@dataclass
class PreparedModel:
    """Everything the forward pass reads, as numpy arrays (stacked per layer)."""

    layers: dict[str, np.ndarray]  # e.g. "attn_q.t" (L, M, K) int8, "attn_q.gamma" (L,) f32
    embed: np.ndarray  # (V_pad or V, H) float16 or float32: the token_embd rows
    lm_head: np.ndarray  # (V_pad, H) float16 or float32, V_pad a multiple of lm_chunk
    lm_chunk: int
    lm_head_f16: bool  # round the hidden state to fp16 before the lm_head dot
    output_norm: np.ndarray  # (H,) f32
    block_mode: bool  # block epilogue for every projection
    out_scales: tuple[str, ...] = field(default_factory=tuple)  # projections with a `.scale`
    embed_type: str = "F32"
    lm_head_type: str = "F32"
    # Q8_0 lm_head (llama.cpp semantics, layers.lm_head_q8_0): lm_head is then the int8 (V_pad, H)
    # block values and this the (V_pad, H/32) f32 block scales (fp16 values); None otherwise.
    lm_head_scales: np.ndarray | None = None
    # Q6_K lm_head (llama.cpp semantics, layers.lm_head_q6_k): lm_head is then the int8 (V_pad, H)
    # codes u − 32 and this (int8 sub-block scales (V_pad, H/16), f32 block scales (V_pad, H/256));
    # None otherwise.
    lm_head_q6_k: tuple[np.ndarray, np.ndarray] | None = None


def _float(tensors: Mapping[str, object], name: str, shape: tuple[int, ...]) -> FloatTensor:
    t = tensors[name]
    if not isinstance(t, FloatTensor):
        raise ConfigError(f"{name}: expected a float tensor, got {type(t).__name__}")
    if tuple(t.shape) != tuple(shape):
        raise ConfigError(f"{name}: shape {tuple(t.shape)} but the config implies {tuple(shape)}")
    return t


def decode_projection(name: str, w: object, shape: tuple[int, int]) -> TernaryParts:
    """Decode one projection to ``TernaryParts`` (rules in the module docstring)."""
    M, K = shape
    if isinstance(w, TernaryWeight):
        if tuple(w.shape) != (M, K):
            raise ConfigError(f"{name}: shape {tuple(w.shape)} but the config implies {(M, K)}")
        t = w.ternary_matrix()
        if w.block_scales is None:
            return TernaryParts(t, np.float32(w.gamma()), None)
        if K % TQ_BLOCK:
            raise ConfigError(f"{name}: block scales need K % {TQ_BLOCK} == 0, K = {K}")
        nb = K // TQ_BLOCK
        d = np.asarray(w.block_scales, dtype=np.float16).astype(np.float32).reshape(M, nb)
        used = np.any(t.reshape(M, nb, TQ_BLOCK) != 0, axis=2)  # blocks holding a non-zero weight
        distinct = np.unique(d[used])
        if distinct.size <= 1:
            return TernaryParts(t, np.float32(distinct[0]) if distinct.size else np.float32(0.0), None)
        return TernaryParts(t, None, d)
    if isinstance(w, FloatTensor):
        if tuple(w.shape) != (M, K):
            raise ConfigError(f"{name}: shape {tuple(w.shape)} but the config implies {(M, K)}")
        a = w.to_numpy().reshape(M, K)
        mags = np.abs(a)
        distinct = np.unique(mags[mags != 0])
        if distinct.size > 1:
            raise ConfigError(
                f"{name}: {w.ggml_type} weights are not ternary × one scale ({distinct.size} distinct "
                f"magnitudes, {distinct.min():.6g}..{distinct.max():.6g}); ternarise latent weights "
                "with absmean (bitnet_lab.quant.ternary.absmean_ternarize) first"
            )
        gamma = np.float32(distinct[0]) if distinct.size else np.float32(0.0)
        return TernaryParts(np.sign(a).astype(np.int8), gamma, None)
    raise ConfigError(f"{name}: expected a TernaryWeight or FloatTensor, got {type(w).__name__}")


def prepare(config: ModelConfig, tensors: Mapping[str, object], *, lm_head_dtype: str = "auto") -> PreparedModel:
    """Check and decode ``tensors`` for ``config``; see the module docstring."""
    if lm_head_dtype not in ("auto", "f16", "f32"):
        raise ConfigError(f"lm_head_dtype {lm_head_dtype!r} is not one of 'auto', 'f16', 'f32'")
    names = set(tensors)
    # every count against the tensors present, before anything is enumerated per layer
    config.check_tensors({n: tuple(getattr(t, "shape", ())) for n, t in tensors.items()})
    config.check_tensor_names(names)
    L, H = config.n_layers, config.hidden
    shapes = config.projection_shapes()

    layers: dict[str, np.ndarray] = {}
    scales: dict[str, list] = {}  # per projection: per layer (gamma, d)
    for p in PROJECTIONS:
        M, K = shapes[p]
        stack = np.empty((L, M, K), dtype=np.int8)  # filled in place: one copy of the codes
        scales[p] = []
        for i in range(L):
            name = f"blk.{i}.{p}.weight"
            w = tensors[name]
            cached = isinstance(w, TernaryWeight) and "t" in w._cache
            x = decode_projection(name, w, (M, K))
            stack[i] = x.t
            if isinstance(w, TernaryWeight) and not cached:
                w._cache.pop("t", None)  # do not keep a second decoded copy alive in the reader's object
            scales[p].append((x.gamma, x.d))
        layers[f"{p}.t"] = stack  # (L, M, K) int8
    block_mode = any(d is not None for per in scales.values() for _, d in per)
    if block_mode:
        bad = {p: shapes[p][1] for p in PROJECTIONS if shapes[p][1] % TQ_BLOCK}
        if bad:
            raise ConfigError(f"block-scaled weights need every K % {TQ_BLOCK} == 0; not so for {bad}")
    for p in PROJECTIONS:
        M, K = shapes[p]
        if block_mode:
            layers[f"{p}.d"] = np.stack([
                d if d is not None else np.full((M, K // TQ_BLOCK), g, dtype=np.float32)
                for g, d in scales[p]])  # (L, M, K/256) f32
        else:
            layers[f"{p}.gamma"] = np.array([g for g, _ in scales[p]], dtype=np.float32)  # (L,)

    out_scales = []
    for p in PROJECTIONS:
        present = [f"blk.{i}.{p}.scale" in names for i in range(L)]
        if not any(present):
            continue
        vals = []
        for i in range(L):
            n = f"blk.{i}.{p}.scale"
            if n not in names:
                vals.append(np.float32(1.0))  # × 1.0 is exact: an absent scale changes nothing
                continue
            v = tensors[n].to_numpy().reshape(-1) if isinstance(tensors[n], FloatTensor) else None
            if v is None or v.size != 1:
                raise ConfigError(f"{n}: expected one float, got {getattr(tensors[n], 'shape', None)}")
            vals.append(np.float32(v[0]))
        layers[f"{p}.out_scale"] = np.array(vals, dtype=np.float32)
        out_scales.append(p)

    norms = ["attn_norm", "ffn_norm"] + (["attn_sub_norm", "ffn_sub_norm"] if config.sub_norms else [])
    widths = {"attn_norm": H, "ffn_norm": H, "attn_sub_norm": config.q_dim, "ffn_sub_norm": config.ffn}
    for n in norms:
        layers[n] = np.stack([
            _float(tensors, f"blk.{i}.{n}.weight", (widths[n],)).to_numpy() for i in range(L)
        ]).astype(np.float32)
        for i in range(L):  # NaN / inf: refused with the tensor's name (inspect still opens the file)
            check_finite(f"blk.{i}.{n}.weight", layers[n][i], "weights")

    out_norm = _float(tensors, "output_norm.weight", (H,)).to_numpy().astype(np.float32)
    check_finite("output_norm.weight", out_norm, "weights")
    V = config.vocab
    emb_t = _float(tensors, "token_embd.weight", (V, H))
    lm_t = emb_t if config.tied_output else _float(tensors, "output.weight", (V, H))
    lm_f16 = lm_head_dtype == "f16" or (lm_head_dtype == "auto" and lm_t.ggml_type == "F16")

    def as_stored(t: FloatTensor) -> np.ndarray:
        a = t.to_numpy()
        return a.astype(np.float16) if t.ggml_type == "F16" else a  # F16 -> f16 is exact

    chunk = min(V, LM_HEAD_CHUNK)
    v_pad = -(-V // chunk) * chunk
    # A Q8_0 lm_head ("auto") keeps its int8 blocks: llama.cpp quantises the hidden state to Q8_0
    # for the dot (docs/numerics.md#9-embedding-and-lm_head), layers.lm_head_q8_0.
    lm_q8 = lm_head_dtype == "auto" and lm_t.ggml_type == "Q8_0" and H % 32 == 0
    # A Q6_K lm_head ("auto") keeps its 6-bit codes: llama.cpp quantises the hidden state to Q8_K
    # for the dot (docs/numerics.md#9-embedding-and-lm_head), layers.lm_head_q6_k.
    lm_q6k = lm_head_dtype == "auto" and lm_t.ggml_type == "Q6_K" and H % 256 == 0
    scales = q6k = None
    if lm_q6k:
        rows = np.asarray(lm_t.data).reshape(-1).view(np.uint8).reshape(V, H // 256 * 210)
        lm, sub_scales, d6 = decode_q6_k(rows, H)
        check_finite(lm_t.name, d6, "Q6_K block scales (row, block)")
        if v_pad != V:
            sub_scales = np.concatenate([sub_scales, np.zeros((v_pad - V, H // 16), np.int8)])
            d6 = np.concatenate([d6, np.zeros((v_pad - V, H // 256), np.float32)])
        q6k = (sub_scales, d6)
    elif lm_q8:
        raw = np.asarray(lm_t.data).reshape(-1).view(np.uint8).reshape(V, H // 32, 34)
        scales = np.ascontiguousarray(raw[:, :, :2]).view(np.float16).reshape(V, H // 32).astype(np.float32)
        lm = np.ascontiguousarray(raw[:, :, 2:]).view(np.int8).reshape(V, H)
        if v_pad != V:
            scales = np.concatenate([scales, np.zeros((v_pad - V, H // 32), np.float32)])
    # lm_head "f16" keeps fp16 weights (F32 ones rounded to fp16: an F16 mat-mul); "f32" widens.
    elif lm_f16:
        lm = lm_t.to_numpy().astype(np.float16)
    else:
        lm = lm_t.to_numpy().astype(np.float32)
    if scales is not None:
        check_finite(lm_t.name, scales, "Q8_0 block scales (row, block)")
    elif q6k is None and not (lm_head_dtype == "f16" and lm_t.ggml_type != "F16"):  # an f16 rounding may overflow: not damage
        check_finite(lm_t.name, lm, "weights")
    if v_pad != V:
        lm = np.concatenate([lm, np.zeros((v_pad - V, H), dtype=lm.dtype)])
    emb = as_stored(emb_t)
    if emb_t is not lm_t or scales is not None or q6k is not None or lm_head_dtype == "f16":
        check_finite(emb_t.name, emb, "weights")
    if config.tied_output and emb.dtype == lm.dtype and np.array_equal(emb, lm[:V]):
        emb = lm  # share one array (the padded rows are never gathered: ids < vocab)
    return PreparedModel(
        layers=layers, embed=emb, lm_head=lm, lm_chunk=chunk, lm_head_f16=lm_f16,
        output_norm=out_norm, block_mode=block_mode, out_scales=tuple(out_scales),
        embed_type=emb_t.ggml_type, lm_head_type=lm_t.ggml_type, lm_head_scales=scales, lm_head_q6_k=q6k,
    )
