"""Tiny deterministic random models for tests and notebooks (numpy only, no JAX).

``tiny_model(arch, seed=...)`` returns ``(ModelConfig, tensors)`` under GGUF names, exactly what a
file reader hands out, with each family's real structure
(docs/formats.md#6-tensor-names-and-shapes-per-model-family,
docs/numerics.md#7-ffn-activation-relu-squared-vs-silu to docs/numerics.md#8-sub-norm-placement):

=================  ==========  =========  ==========  ======  ==========
arch               FFN         sub-norms  attention   lm_head RoPE
=================  ==========  =========  ==========  ======  ==========
``bitnet-b1.58``   relu(g)²·u  yes        GQA         tied    neox, θ 500000
``bitnet``         silu(g)·u   yes        MHA         tied    neox, θ 10000
``llama``          silu(g)·u   no         GQA         output  norm (interleaved), θ 500000
=================  ==========  =========  ==========  ======  ==========

Statistics are chosen to look like real checkpoints: ternary weights uniform over {-1, 0, 1}
(≈ a third zeros); γ ≈ c/√K with c in [0.5, 2] so every projection roughly keeps the scale of its
input (the real 2B-4T has γ ≈ 1.5 at K = 2560 and larger norms; what matters here is that
activations neither vanish nor blow up); norm weights |1 + 0.1·N(0,1)|; embeddings N(0, σ²) with
σ drawn in [0.02, 1]. Same seed, same arguments -> the same bytes.
"""

from __future__ import annotations

import numpy as np

from bitnet_lab.config import ModelConfig
from bitnet_lab.errors import ConfigError
from bitnet_lab.tensors import FloatTensor, TernaryWeight

FAMILIES = {
    # arch: (activation, sub_norms, tied, rope_style, theta, GQA)
    "bitnet-b1.58": ("relu2", True, True, "neox", 500000.0, True),
    "bitnet": ("silu", True, True, "neox", 10000.0, False),
    "llama": ("silu", False, False, "norm", 500000.0, True),
}
LAYOUTS = ("int8", "i2_s", "tq2_0", "tq1_0")
EMBED_DTYPES = ("F16", "F32")


def _float_tensor(name: str, a: np.ndarray, ggml_type: str) -> FloatTensor:
    data = a.astype(np.float16 if ggml_type == "F16" else np.float32)
    return FloatTensor(name, ggml_type, tuple(a.shape), data)


def ternary_weight(name: str, t: np.ndarray, gamma: np.float32, layout: str = "int8") -> TernaryWeight:
    """A :class:`TernaryWeight` of ternary int8 ``t`` (M, K) and per-tensor ``gamma`` in ``layout``
    (``int8`` needs nothing else; the packed layouts use ``bitnet_lab.quant.packing``)."""
    M, K = t.shape
    if layout == "int8":
        return TernaryWeight(name, "int8", (M, K), t.astype(np.int8), scale=np.float32(gamma))
    from bitnet_lab.quant import packing

    if layout == "i2_s":
        return TernaryWeight(name, "i2_s", (M, K), packing.pack_i2_s(t), scale=np.float32(gamma))
    if layout in ("tq2_0", "tq1_0"):
        d = packing.tq_default_block_scales(t, gamma)
        return TernaryWeight(name, layout, (M, K), packing.pack(layout, t, block_scales=d), block_scales=d)
    raise ConfigError(f"tiny_model layout {layout!r} is not one of {LAYOUTS}")


def tiny_model(
    arch: str = "bitnet-b1.58",
    *,
    seed: int = 0,
    hidden: int = 64,
    n_layers: int = 2,
    n_heads: int = 4,
    n_kv_heads: int | None = None,
    ffn: int = 128,
    vocab: int = 256,
    context: int = 256,
    layout: str = "int8",
    embed_dtype: str = "F16",
    norm_eps: float = 1e-5,
) -> tuple[ModelConfig, dict[str, FloatTensor | TernaryWeight]]:
    """A random model of family ``arch`` (table in the module docstring).

    ``n_kv_heads`` defaults to the family's choice (GQA: ``n_heads // 2``; MHA: ``n_heads``).
    ``layout``: "int8" (ternary values as int8, needs no codec), "i2_s" (needs every K % 128 ==
    0), "tq2_0"/"tq1_0" (K % 256 == 0). ``embed_dtype``: "F16" (as in real I2_S files) or "F32";
    it also applies to the untied ``output.weight``.
    """
    if arch not in FAMILIES:
        raise ConfigError(f"tiny_model arch {arch!r} is not one of {tuple(FAMILIES)}")
    if layout not in LAYOUTS:
        raise ConfigError(f"tiny_model layout {layout!r} is not one of {LAYOUTS}")
    if embed_dtype not in EMBED_DTYPES:
        raise ConfigError(f"tiny_model embed_dtype {embed_dtype!r} is not one of {EMBED_DTYPES}")
    activation, sub_norms, tied, rope_style, theta, gqa = FAMILIES[arch]
    if n_kv_heads is None:
        n_kv_heads = max(1, n_heads // 2) if gqa else n_heads
    if hidden % n_heads:
        raise ConfigError(f"hidden {hidden} is not a multiple of n_heads {n_heads}")
    head_dim = hidden // n_heads
    config = ModelConfig(
        arch=arch, hidden=hidden, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv_heads,
        head_dim=head_dim, ffn=ffn, vocab=vocab, context=context, rope_theta=theta,
        rope_style=rope_style, norm_eps=norm_eps, activation=activation, sub_norms=sub_norms,
        tied_output=tied, bos_id=1, eos_id=2, name=f"tiny-{arch}-seed{seed}",
    )
    quantum = {"i2_s": 128, "tq2_0": 256, "tq1_0": 256}.get(layout)
    if quantum:
        bad = {p: mk[1] for p, mk in config.projection_shapes().items() if mk[1] % quantum}
        if bad:
            raise ConfigError(f"layout {layout} needs every K % {quantum} == 0; not so for {bad}")

    rng = np.random.default_rng(seed)
    tensors: dict[str, FloatTensor | TernaryWeight] = {}

    def norm_weight(n: int) -> np.ndarray:
        return np.abs(1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    sigma = rng.uniform(0.02, 1.0)
    tensors["token_embd.weight"] = _float_tensor(
        "token_embd.weight", sigma * rng.standard_normal((vocab, hidden)), embed_dtype)
    for i in range(n_layers):
        p = f"blk.{i}."
        tensors[p + "attn_norm.weight"] = _float_tensor(p + "attn_norm.weight", norm_weight(hidden), "F32")
        tensors[p + "ffn_norm.weight"] = _float_tensor(p + "ffn_norm.weight", norm_weight(hidden), "F32")
        if sub_norms:
            tensors[p + "attn_sub_norm.weight"] = _float_tensor(
                p + "attn_sub_norm.weight", norm_weight(config.q_dim), "F32")
            tensors[p + "ffn_sub_norm.weight"] = _float_tensor(p + "ffn_sub_norm.weight", norm_weight(ffn), "F32")
        for proj, (M, K) in config.projection_shapes().items():
            name = f"{p}{proj}.weight"
            t = rng.integers(-1, 2, size=(M, K)).astype(np.int8)  # uniform: ≈ 1/3 zeros
            gamma = np.float32(rng.uniform(0.5, 2.0) / np.sqrt(K))
            tensors[name] = ternary_weight(name, t, gamma, layout)
    tensors["output_norm.weight"] = _float_tensor("output_norm.weight", norm_weight(hidden), "F32")
    if not tied:
        tensors["output.weight"] = _float_tensor(
            "output.weight", rng.uniform(0.02, 0.2) * rng.standard_normal((vocab, hidden)), embed_dtype)
    return config, tensors
