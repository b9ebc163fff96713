"""Tensor names: Hugging Face checkpoints ↔ GGUF, and the q/k row permutation.

Three HF naming families exist (docs/formats.md#62-name-mapping-hf-to-gguf):

=================  ==========================  ==========================  ===============
GGUF (blk.N.*)     ``bitnet2b`` (2B-4T,         ``1bitllm`` (1bitLLM,       ``llama`` (HF1BitLLM,
                   transformers ``bitnet``)     BitnetForCausalLM)          Falcon3, Falcon-E)
=================  ==========================  ==========================  ===============
attn_sub_norm      self_attn.attn_sub_norm      self_attn.inner_attn_ln     —
ffn_sub_norm       mlp.ffn_sub_norm             mlp.ffn_layernorm           —
=================  ==========================  ==========================  ===============

All other names are shared: ``model.embed_tokens`` → ``token_embd``, ``model.norm`` →
``output_norm``, ``lm_head`` → ``output``, ``input_layernorm`` → ``attn_norm``,
``post_attention_layernorm`` → ``ffn_norm``, ``self_attn.{q,k,v,o}_proj`` → ``attn_{q,k,v,output}``,
``mlp.{gate,up,down}_proj`` → ``ffn_{gate,up,down}``. ``*.rotary_emb.inv_freq`` buffers (1bitLLM)
are skipped, as every converter does.

The permutation (docs/formats.md#76-qk-permutation-for-llama-arch-ggufs): llama-arch GGUFs hold the q/k rows
in interleaved-pair order, GGUF row ``h·d + 2i + j`` = HF row ``h·d + j·(d/2) + i``.
"""

from __future__ import annotations

import re

import numpy as np

from bitnet_lab.errors import ConfigError

# The seven ternary projections of one layer, GGUF short names (the only ternarised tensors,
# docs/numerics.md#1-weight-ternarisation).
TERNARY_PROJECTIONS: tuple[str, ...] = (
    "attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down",
)

HF_STYLES: tuple[str, ...] = ("bitnet2b", "1bitllm", "llama")

# Per-layer names shared by every family: HF suffix (after "model.layers.N.") -> GGUF short name.
_LAYER_COMMON: dict[str, str] = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
# The sub-norms, per naming style.
_SUB_NORMS: dict[str, dict[str, str]] = {
    "bitnet2b": {"self_attn.attn_sub_norm": "attn_sub_norm", "mlp.ffn_sub_norm": "ffn_sub_norm"},
    "1bitllm": {"self_attn.inner_attn_ln": "attn_sub_norm", "mlp.ffn_layernorm": "ffn_sub_norm"},
    "llama": {},
}
_GLOBAL: dict[str, str] = {
    "model.embed_tokens": "token_embd",
    "model.norm": "output_norm",
    "lm_head": "output",
}

# HF -> GGUF over all styles (the sub-norm names of the two bitnet styles do not collide).
_HF_LAYER_TO_GGUF: dict[str, str] = dict(_LAYER_COMMON)
for _m in _SUB_NORMS.values():
    _HF_LAYER_TO_GGUF.update(_m)

_LAYER_RE = re.compile(r"^model\.layers\.(\d+)\.(.+)\.weight$")
_SKIP_RE = re.compile(r"(^|\.)rotary_emb\.inv_freq$")


def is_skipped(hf_name: str) -> bool:
    """True for tensors converters drop: the 1bitLLM ``rotary_emb.inv_freq`` buffers."""
    return bool(_SKIP_RE.search(hf_name))


def hf_to_gguf(hf_name: str) -> str | None:
    """The GGUF name of an HF weight (``...weight``), or None when the name is not a model tensor
    we know (callers decide whether that is an error). ``.weight_scale`` companions are handled
    by the caller: strip ``_scale`` and map the weight."""
    if hf_name.endswith(".weight"):
        base = hf_name[: -len(".weight")]
        if base in _GLOBAL:
            return f"{_GLOBAL[base]}.weight"
    m = _LAYER_RE.match(hf_name)
    if m is None:
        return None
    short = _HF_LAYER_TO_GGUF.get(m.group(2))
    return None if short is None else f"blk.{int(m.group(1))}.{short}.weight"


def hf_style(hf_names) -> str:
    """Which naming family a set of HF names uses (sub-norm names decide; none → ``llama``)."""
    names = set(hf_names)
    found = [
        style for style, subs in _SUB_NORMS.items()
        if subs and any(n.endswith(f".{s}.weight") for n in names for s in subs)
    ]
    if len(found) > 1:
        raise ConfigError(f"checkpoint mixes sub-norm naming styles {found}")
    return found[0] if found else "llama"


def gguf_to_hf(gguf_name: str, style: str) -> str:
    """The HF name of a GGUF tensor name in naming ``style`` (one of HF_STYLES)."""
    if style not in HF_STYLES:
        raise ConfigError(f"unknown HF naming style {style!r}; expected one of {HF_STYLES}")
    for hf, gg in _GLOBAL.items():
        if gguf_name == f"{gg}.weight":
            return f"{hf}.weight"
    m = re.match(r"^blk\.(\d+)\.([a-z_]+)\.weight$", gguf_name)
    if m:
        table = {**_LAYER_COMMON, **_SUB_NORMS[style]}
        for hf, gg in table.items():
            if gg == m.group(2):
                return f"model.layers.{int(m.group(1))}.{hf}.weight"
    raise ConfigError(f"GGUF tensor {gguf_name!r} has no Hugging Face name in style {style!r}")


def projection_of(gguf_name: str) -> str | None:
    """``attn_q`` for ``blk.3.attn_q.weight``; None when the tensor is not a ternary projection."""
    m = re.match(r"^blk\.\d+\.([a-z_]+)\.weight$", gguf_name)
    return m.group(1) if m and m.group(1) in TERNARY_PROJECTIONS else None


# ---- q/k permutation (docs/formats.md#76-qk-permutation-for-llama-arch-ggufs) -------------

def _head_split(rows: np.ndarray, n_head: int) -> tuple[int, int]:
    if rows.ndim < 1:
        raise ConfigError("q/k permutation needs an array with at least one (row) dimension")
    m = rows.shape[0]
    if n_head <= 0 or m % n_head:
        raise ConfigError(f"q/k permutation: {m} rows are not a multiple of n_head={n_head}")
    d = m // n_head
    if d % 2:
        raise ConfigError(f"q/k permutation: head_dim {d} (= {m} rows / {n_head} heads) is odd")
    return m, d


def permute_qk(rows: np.ndarray, n_head: int) -> np.ndarray:
    """HF row order → GGUF (llama-arch) row order: GGUF row ``h·d + 2i + j`` = HF row
    ``h·d + j·(d/2) + i``. ``rows`` is (M, K) (or (M,)); returns a new array of the same shape."""
    rows = np.asarray(rows)
    m, d = _head_split(rows, n_head)
    rest = rows.shape[1:]
    # (n, j, i, ...) -> (n, i, j, ...): the halves of each head interleave pairwise.
    return rows.reshape(n_head, 2, d // 2, *rest).swapaxes(1, 2).reshape(m, *rest)


def unpermute_qk(rows: np.ndarray, n_head: int) -> np.ndarray:
    """The inverse of :func:`permute_qk`: GGUF (llama-arch) row order → HF row order."""
    rows = np.asarray(rows)
    m, d = _head_split(rows, n_head)
    rest = rows.shape[1:]
    return rows.reshape(n_head, d // 2, 2, *rest).swapaxes(1, 2).reshape(m, *rest)
