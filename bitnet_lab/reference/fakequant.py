"""The trainer's forward pass: the reference architecture with differentiable fake-quant BitLinears.

One architecture, two arithmetics. ``forward`` runs the same :func:`layers.decoder_layer` as the
integer-exact reference (``model.py``): RMSNorm, RoPE from the same ggml-recurrence tables, GQA
attention, relu²·u, the sub-norms before o and down, the tied lm_head. Only the callables differ:

* every projection is :func:`ste_bitlinear`: the BitNet b1.58 recipe (docs/numerics.md#1-weight-ternarisation
  to docs/numerics.md#3-bitlinear-integer-product-and-epilogue) on latent float weights — absmean
  ternarisation of ``W`` per tensor, per-token absmax int8 activations — evaluated as the inference math does
  it (exact integer dot, then ``acc / s_x · γ`` in f32), with the straight-through estimator for the gradients
  (``x_q ≈ x`` and ``W_q ≈ W``: ``dx = dy·(t·γ)``, ``dW = dyᵀ·(q/s_x)``). With ``fp=True`` it is a plain f32
  ``x·Wᵀ``: the full-precision baseline of the same architecture.
* the float reductions accumulate in f32 (``acc=F32``) instead of float64: training runs with JAX's
  default 32-bit types. Norms, softmax and the lm_head therefore differ from the reference in the
  last bits, which can flip a rare activation rounding; the exported model's reference logits stay
  close to this forward (tests/test_train.py measures it).

Shapes: ``ids`` (B, T) int32; parameters as :func:`init_params` makes them — ``embed`` (V, H),
``output_norm`` (H,), ``layers`` a dict of per-layer stacks (leading axis = layer, GGUF short
names: ``attn_q`` (L, q_dim, H) … ``ffn_down`` (L, H, I), ``attn_norm`` (L, H) …).
"""

from __future__ import annotations

from functools import lru_cache, partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from bitnet_lab.config import ModelConfig
from bitnet_lab.quant import ternary
from bitnet_lab.reference import layers as L
from bitnet_lab.reference import rope as rope_tables
from bitnet_lab.reference.weights import PROJECTIONS

F32 = jnp.float32
_DOT_LAST = (((1,), (1,)), ((), ()))  # contract the last dim of both: (N, K) × (M, K) -> (N, M)


# ---- weights ------------------------------------------------------------------------------
def norm_widths(config: ModelConfig) -> dict[str, int]:
    """The RMSNorm weights of one layer and their lengths."""
    widths = {"attn_norm": config.hidden, "ffn_norm": config.hidden}
    if config.sub_norms:
        widths.update(attn_sub_norm=config.q_dim, ffn_sub_norm=config.ffn)
    return widths


def init_params(config: ModelConfig, seed: int, std: float = 0.02) -> dict:
    """Latent parameters as numpy float32 (deterministic for a seed, independent of JAX's PRNG).

    Projections and the embedding ~ N(0, std²); the two projections that write into the residual
    stream (attn_output, ffn_down) use std / sqrt(2·n_layers) (GPT-2's depth scaling) so the
    stream's variance does not grow with depth; every RMSNorm weight starts at 1.
    """
    rng = np.random.default_rng(seed)
    L_ = config.n_layers
    layers: dict[str, np.ndarray] = {}
    for name, (M, K) in config.projection_shapes().items():
        s = std / np.sqrt(2 * L_) if name in ("attn_output", "ffn_down") else std
        layers[name] = (rng.standard_normal((L_, M, K)) * s).astype(np.float32)
    for name, n in norm_widths(config).items():
        layers[name] = np.ones((L_, n), np.float32)
    embed = (rng.standard_normal((config.vocab, config.hidden)) * std).astype(np.float32)
    return {"embed": embed, "output_norm": np.ones(config.hidden, np.float32), "layers": layers}


def ternarize(w: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Absmean ternarisation (docs/numerics.md#1-weight-ternarisation), in JAX:
    ``(t f32 in {-1,0,1}, γ f32 scalar)``.

    The same steps as ``bitnet_lab.quant.absmean_ternarize`` (γ floored at 1e-5, ``s_w = 1/γ``,
    ``t = clip(round_half_even(W·s_w), -1, 1)``), except that the mean is accumulated in f32 by
    XLA rather than in float64: γ can differ in the last bit from the numpy policy.
    """
    gamma = jnp.maximum(jnp.mean(jnp.abs(w)), F32(ternary.WEIGHT_EPS))
    s_w = F32(1.0) / gamma
    return jnp.clip(jnp.round(w * s_w), -1.0, 1.0), gamma


# ---- the straight-through BitLinear ---------------------------------------------------------
def _bitlinear_core(x2, w, neg_zero, rounding):
    """Fake-quant BitLinear of rows ``x2`` (N, K) and latent ``w`` (M, K), as inference does it."""
    t, gamma = ternarize(w)
    q, s_x, _ = L.quantize_activations(x2, rounding, neg_zero, acc=F32)  # (N, K) int8, (N,) f32
    # Integer-valued f32 operands: every partial sum is an integer below 128·K < 2^24, so the f32
    # dot is exact whatever order the backend sums in (= the reference's int32 accumulator).
    acc = lax.dot_general(q.astype(F32), t, _DOT_LAST)  # (N, M)
    # acc / s_x · γ, left to right (docs/numerics.md#32-bitnetcpp-i2_s-epilogue-and-its-order)
    y = L.epilogue(acc, s_x, gamma)
    return y, (q, s_x, t.astype(jnp.int8), gamma)


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def ste_bitlinear(x: jax.Array, w: jax.Array, neg_zero: jax.Array, rounding: str) -> jax.Array:
    """``y`` (..., M) = BitLinear(x (..., K), latent w (M, K)) with straight-through gradients.

    ``neg_zero``: a traced f32 ``-0.0`` (see layers.rounded); ``rounding``: activation rounding
    mode (static).
    """
    y, _ = _bitlinear_core(x.reshape(-1, x.shape[-1]), w, neg_zero, rounding)
    return y.reshape(*x.shape[:-1], w.shape[0])


def _ste_fwd(x, w, neg_zero, rounding):
    y, res = _bitlinear_core(x.reshape(-1, x.shape[-1]), w, neg_zero, rounding)
    return y.reshape(*x.shape[:-1], w.shape[0]), res


def _ste_bwd(rounding, res, dy):
    q, s_x, t, gamma = res
    M, K = t.shape
    dy2 = dy.reshape(-1, M)  # (N, M)
    w_q = t.astype(F32) * gamma  # the weight the forward used: t·γ (M, K)
    x_q = q.astype(F32) / s_x[:, None]  # the activation it used: q / s_x (N, K)
    dx = (dy2 @ w_q).reshape(*dy.shape[:-1], K)  # STE: d x_q / d x = 1
    dw = lax.dot_general(dy2, x_q, (((0,), (0,)), ((), ())))  # (M, K); STE: d W_q / d W = 1
    return dx, dw, jnp.zeros((), F32)


ste_bitlinear.defvjp(_ste_fwd, _ste_bwd)


def float_linear(x: jax.Array, w: jax.Array) -> jax.Array:
    """The full-precision baseline's projection: ``x (..., K) · wᵀ`` in f32."""
    return jnp.einsum("...k,mk->...m", x, w)


# ---- the forward pass -------------------------------------------------------------------------
@lru_cache(maxsize=8)
def _rope(n_pos: int, rot: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    return rope_tables.cos_sin_tables(n_pos, rot, theta)  # the reference's own tables


def forward(params: dict, ids: jax.Array, config: ModelConfig, *, fp: bool = False,
            rounding: str = ternary.DEFAULT_ROUNDING, neg_zero: jax.Array | None = None) -> jax.Array:
    """Logits (B, T, V) f32 of token ids (B, T), every sequence from position 0 (causal)."""
    c = config
    nz = jnp.asarray(np.float32(-0.0)) if neg_zero is None else neg_zero
    B, T = ids.shape
    cos, sin = _rope(T, c.rot_dim, float(c.rope_theta))
    pos = jnp.arange(T, dtype=jnp.int32)
    kq_scale = F32(np.float32(1.0) / np.sqrt(np.float32(c.head_dim)))  # 1.0f/sqrtf(d), as the reference
    eps = float(np.float32(c.norm_eps))

    def attend_one(q, k, v):  # one sequence: q (T, n, d), k/v (T, n_kv, d): the cache is the sequence
        return L.attention(q, k, v, pos, kq_scale, n_rep=c.n_rep, f16=False, neg_zero=nz, acc=F32)

    def layer(h, w):
        def proj(name, x):
            return float_linear(x, w[name]) if fp else ste_bitlinear(x, w[name], nz, rounding)

        h = L.decoder_layer(
            h, w, n_heads=c.n_heads, n_kv=c.n_kv_heads, head_dim=c.head_dim, eps=eps,
            activation=c.activation, sub_norms=c.sub_norms,
            quant=lambda tag, x: x,  # the STE BitLinear quantises its own input
            proj=proj,
            rope=lambda x: L.apply_rope(x, cos, sin, c.rope_style, c.rot_dim, nz),
            attend=jax.vmap(attend_one),
            cap=lambda name, value: None,
            neg_zero=nz, acc=F32)
        return h, None

    h = jnp.take(params["embed"], ids, axis=0)  # (B, T, H)
    h, _ = lax.scan(layer, h, params["layers"])
    hn = L.rms_norm(h, params["output_norm"], eps, F32)
    V = params["embed"].shape[0]
    logits = L.lm_head(hn.reshape(B * T, -1), params["embed"], f16=False, chunk=V, acc=F32)  # tied
    return logits.reshape(B, T, V)


def token_nll(params: dict, ids: jax.Array, targets: jax.Array, config: ModelConfig, **kw) -> jax.Array:
    """Negative log-likelihood (B, T) of ``targets`` given ``ids`` (next-token prediction)."""
    logp = jax.nn.log_softmax(forward(params, ids, config, **kw), axis=-1)
    return -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]


def loss(params: dict, ids: jax.Array, targets: jax.Array, config: ModelConfig, **kw) -> jax.Array:
    """Mean next-token cross-entropy (nats/token)."""
    return jnp.mean(token_nll(params, ids, targets, config, **kw))


__all__ = ["PROJECTIONS", "init_params", "ternarize", "ste_bitlinear", "float_linear", "forward",
           "token_nll", "loss", "norm_widths"]
