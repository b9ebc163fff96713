"""The JAX reference forward pass of every BitNet family: the judge of every fast path.

Integer-exact where the math is integer (int8 activations × ternary weights accumulated in int32),
and a fixed, documented float recipe everywhere else (docs/numerics.md; bitnet_lab/reference/layers.py
lists the few places where it defines a precision instead of copying ggml's ISA-dependent order).

The forward interface (the native engine implements the same one)::

    model = ReferenceModel(config, tensors, numerics="bitnet", rounding="half_even", kv_dtype="f32",
                           lm_head_dtype="auto")
    cache = model.new_cache(n_ctx)          # KVCache: .pos, .n_ctx, .reset()
    logits = model.forward(ids, cache)      # (T, vocab) float32 for the T new tokens; appends them
    logits = model.logits(ids)              # full forward from an empty cache
    logits, caps = model.forward(ids, cache, capture=True)   # + named intermediates (numpy)
    model.config, model.vocab_size, model.n_ctx_max, model.numerics

``forward`` handles any T: the tokens are cut into chunks whose lengths come from ``buckets``
(default 1, 16, 64); a short chunk is padded and masked, so only one compiled function per bucket
(and per cache size) exists. Every token's arithmetic is independent of how the sequence was
chunked (attention always scans the whole fixed-size cache with a mask; float reductions are
float64-accumulated), so prefill, decode and any mix of chunks give the same logits bit for bit.

Captures (``capture=True``), numpy arrays with T rows, names per layer ``blk.{i}.<name>``:

=========================  =============  ====================================================
name                       dtype, shape   what
=========================  =============  ====================================================
``embd``                   f32 (T, H)     token embedding rows
``attn_norm``              f32 (T, H)     attn_norm output = input of q, k, v
``attn_in.q/.scale/.sum``  i8 (T, H), f32 (T,), i32 (T,)   its activation quantisation (shared)
``attn_q.acc`` (k, v)      i32 (T, M)     exact Σ t·q of each projection
``attn_q.out`` (k, v)      f32 (T, M)     BitLinear output (after the epilogue)
``q_rope``, ``k_rope``     f32 (T, n, d)  q and k after RoPE
``attn_out``               f32 (T, n·d)   attention output, heads concatenated
``attn_sub_norm``          f32 (T, n·d)   its sub-norm (sub-norm families only) = input of o
``attn_output_in.*``       q/scale/sum    activation quantisation of o's input
``attn_output.acc/.out``   i32 / f32      the o projection
``attn_resid``             f32 (T, H)     residual after the attention block
``ffn_norm``               f32 (T, H)     ffn_norm output = input of gate, up
``ffn_in.*``               q/scale/sum    its activation quantisation (shared by gate and up)
``ffn_gate.acc/.out``      i32 / f32      (and ``ffn_up.acc/.out``)
``ffn_act``                f32 (T, I)     relu(g)²·u or silu(g)·u
``ffn_sub_norm``           f32 (T, I)     its sub-norm (sub-norm families only) = input of down
``ffn_down_in.*``          q/scale/sum    activation quantisation of down's input
``ffn_down.acc/.out``      i32 / f32      the down projection
``ffn_resid``              f32 (T, H)     residual after the FFN block (the layer's output)
``output_norm``            f32 (T, H)     final norm = input of the lm_head
``logits``                 f32 (T, V)     the logits (same as the returned array)
=========================  =============  ====================================================

With block-scaled (non-uniform TQ) weights ``.acc`` is the total over blocks (still exact).
With ``numerics="llama.cpp"`` the quantisation points hold Q8_K activations: ``.q`` i8 (T, K) the
Q8_K values, ``.sum`` i32 (T,) their sum, ``.scale`` 0 (the scales are per block, a pure function
of the captured float input: ``layers.quantize_q8_k``; the engine captures the same); ``.acc`` is
the exact total over blocks and ``.out`` ggml's per-block float sum
(docs/numerics.md#36-llamacpp-tq-dot-with-q8_k-activations).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from bitnet_lab.backend import check_batch, check_cache_size, check_numerics_shapes, check_token_ids, numerics_options
from bitnet_lab.config import ModelConfig
from bitnet_lab.errors import BitnetLabError, ConfigError
from bitnet_lab.quant import ternary
from bitnet_lab.reference import layers as L
from bitnet_lab.reference import rope, weights
from bitnet_lab.reference.weights import TQ_BLOCK

KV_DTYPES = {"f32": jnp.float32, "f16": jnp.float16}
DEFAULT_BUCKETS = (1, 16, 64)


@dataclass(frozen=True)
class _Static:
    """Everything the traced step needs that is not an array (hashable: part of the jit key)."""

    n_layers: int
    n_heads: int
    n_kv: int
    head_dim: int
    rot: int
    rope_style: str
    eps: float
    kq_scale: float  # f32 value of 1.0f/sqrtf(head_dim)
    activation: str
    sub_norms: bool
    rounding: str
    kv_f16: bool
    block_mode: bool
    out_scales: tuple[str, ...]
    lm_f16: bool
    lm_chunk: int
    vocab: int
    lm_q8: bool = False  # Q8_0 lm_head with llama.cpp semantics (layers.lm_head_q8_0)
    lm_q6k: bool = False  # Q6_K lm_head with llama.cpp semantics (layers.lm_head_q6_k)
    q8k: bool = False  # numerics="llama.cpp": Q8_K activations and ggml's per-block TQ dot


ROPE_ROWS_UP_FRONT = 1 << 16  # RoPE table rows built at construction at most


class KVCache:
    """Fixed-size K/V cache of one sequence: ``k``, ``v`` (n_layers, n_ctx, n_kv, head_dim).

    ``pos`` is the number of tokens already in the cache; entries at and beyond ``pos`` are zero
    or stale and are never attended to. Each ``forward`` call donates ``k``/``v`` to the compiled
    step (updated in place) and stores the new arrays here: do not keep references to old ones.
    K is stored after RoPE; with ``kv_dtype="f16"`` K and V are rounded to fp16.
    """

    def __init__(self, k: jax.Array, v: jax.Array, n_ctx: int, kv_dtype: str, owner: int) -> None:
        self.k, self.v = k, v
        self.n_ctx = int(n_ctx)
        self.kv_dtype = kv_dtype
        self.pos = 0
        self._owner = owner

    def reset(self) -> None:
        """Forget every token (zeroes the arrays so no stale value can leak through a mask)."""
        self.k = jnp.zeros_like(self.k)
        self.v = jnp.zeros_like(self.v)
        self.pos = 0

    def truncate(self, n: int) -> None:
        """Forget every token after the first ``n`` (a context shift keeps a cached head): their
        entries are zeroed, as reset() does, and the first ``n`` stay exactly as they were."""
        n = int(n)
        if not 0 <= n <= self.pos:
            raise BitnetLabError(f"truncate({n}): the cache holds {self.pos} tokens")
        self.k = self.k.at[:, n:].set(0)
        self.v = self.v.at[:, n:].set(0)
        self.pos = n

    def __repr__(self) -> str:
        return f"KVCache(pos={self.pos}, n_ctx={self.n_ctx}, kv_dtype={self.kv_dtype})"


def _step(st: _Static, params: dict, ids, pos, n_valid, cache_k, cache_v, neg_zero, *, capture: bool):
    """One chunk of C tokens through the whole model. Shapes: ids (C,) int32; pos, n_valid int32
    scalars (rows ≥ n_valid are padding: computed, never written to the cache, discarded)."""
    C = ids.shape[0]
    n_ctx = cache_k.shape[1]
    nz = neg_zero
    rows = jnp.arange(C, dtype=jnp.int32)
    q_pos = pos + rows  # (C,) absolute positions
    write_at = jnp.where(rows < n_valid, q_pos, n_ctx)  # padding -> out of bounds -> dropped
    cos = jnp.take(params["cos"], q_pos, axis=0, mode="clip")  # (C, rot/2)
    sin = jnp.take(params["sin"], q_pos, axis=0, mode="clip")
    kv_dtype = jnp.float16 if st.kv_f16 else jnp.float32
    d = st.head_dim
    h0 = jnp.take(params["embed"], ids, axis=0).astype(L.F32)  # (C, H); f16 -> f32 is exact

    def bitlinear(w, name, qx, sx):
        t = w[f"{name}.t"]
        if st.q8k:  # llama.cpp: sx holds the Q8_K block scales d8 (C, nb)
            M, K = t.shape
            d_w = w[f"{name}.d"] if st.block_mode else jnp.broadcast_to(w[f"{name}.gamma"], (M, K // TQ_BLOCK))
            y, acc = L.q8_k_block_dot(qx, sx, t, d_w, nz)
        elif st.block_mode:
            acc_b = L.int_matmul_blocks(qx, t, TQ_BLOCK)  # (nb, C, M)
            y = L.epilogue_blocks(acc_b, sx, w[f"{name}.d"])
            acc = jnp.sum(acc_b, axis=0, dtype=jnp.int32)
        else:
            acc = L.int_matmul(qx, t)  # (C, M) int32
            y = L.epilogue(acc, sx, w[f"{name}.gamma"])
        if name in st.out_scales:
            y = y * w[f"{name}.out_scale"]  # old `bitnet` arch: optional per-tensor .scale
        return y, acc

    def layer(carry, xs):
        h, ck, cv = carry
        li, w = xs
        cap: dict[str, Any] = {}
        kv: dict[str, Any] = {}

        def quant(tag, x):
            if st.q8k:  # the block scales go to the projections; the capture schema keeps one scale
                qx, sx = L.quantize_q8_k(x, nz)  # per row, 0 here as in the engine (reference docstring)
                sumx = jnp.sum(qx, axis=-1, dtype=jnp.int32)
                cap.update({f"{tag}.q": qx, f"{tag}.scale": jnp.zeros(x.shape[:-1], L.F32), f"{tag}.sum": sumx})
            else:
                qx, sx, sumx = L.quantize_activations(x, st.rounding, nz)
                cap.update({f"{tag}.q": qx, f"{tag}.scale": sx, f"{tag}.sum": sumx})
            return qx, sx

        def proj(name, qs):
            y, acc = bitlinear(w, name, *qs)
            cap.update({f"{name}.acc": acc, f"{name}.out": y})
            return y

        def rope(x):
            return L.apply_rope(x, cos, sin, st.rope_style, st.rot, nz)

        def attend(q, k, v):
            kv["k"] = ck.at[li, write_at].set(k.astype(kv_dtype), mode="drop")
            kv["v"] = cv.at[li, write_at].set(v.astype(kv_dtype), mode="drop")
            return L.attention(q, kv["k"][li], kv["v"][li], q_pos, L.F32(st.kq_scale),
                               n_rep=st.n_heads // st.n_kv, f16=st.kv_f16, neg_zero=nz)

        h = L.decoder_layer(
            h, w, n_heads=st.n_heads, n_kv=st.n_kv, head_dim=d, eps=st.eps, activation=st.activation,
            sub_norms=st.sub_norms, quant=quant, proj=proj, rope=rope, attend=attend,
            cap=cap.__setitem__, neg_zero=nz)
        return (h, kv["k"], kv["v"]), (cap if capture else None)

    xs = (jnp.arange(st.n_layers, dtype=jnp.int32), params["layers"])
    (h, cache_k, cache_v), per_layer = lax.scan(layer, (h0, cache_k, cache_v), xs)
    hn = L.rms_norm(h, params["output_norm"], st.eps)
    if st.lm_q6k:
        logits = L.lm_head_q6_k(hn, params["lm_head"], params["lm_q6_scales"], params["lm_q6_d"], chunk=st.lm_chunk,
                                neg_zero=nz)
    elif st.lm_q8:
        logits = L.lm_head_q8_0(hn, params["lm_head"], params["lm_scales"], chunk=st.lm_chunk, neg_zero=nz)
    else:
        logits = L.lm_head(hn, params["lm_head"], f16=st.lm_f16, chunk=st.lm_chunk)
    logits = logits[:, : st.vocab]
    caps = None
    if capture:
        caps = {"layers": per_layer, "embd": h0, "output_norm": hn, "logits": logits}
    return logits, cache_k, cache_v, caps


# One compiled function per (static config, shapes, capture): models of the same shape share it.
# The LLVM backend options cut XLA compile time 3-5x; run time is dominated by the int8 dots and
# float64 dots (library calls), and the numerics do not depend on them: every place where the
# backend could legally change a result (FMA contraction) is guarded in layers.py, and the tests
# compare against the plain numpy model bit for bit.
_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
_step_jit = jax.jit(
    _step,
    static_argnames=("st", "capture"),
    donate_argnames=("cache_k", "cache_v"),
    compiler_options=_COMPILER_OPTIONS,
)


class ReferenceModel:
    """The reference model over ``(config, tensors)`` (GGUF names; see weights.py for what is
    accepted). Options, recorded in :attr:`numerics`:

    - ``numerics``: the profile (docs/numerics.md#12-numerics-profiles): "bitnet" (default: the
      model's training numerics, per-token absmax int8 activations, ``(acc / s_x) · γ``) or
      "llama.cpp" (what upstream llama.cpp computes for the file: Q8_K activations per 256-block,
      ggml's per-block ``sumf += fl32(sumi) · fl32(d8 · d_w)`` in f32 for every ternary projection,
      an F16 KV cache, its lm_head). The profile sets the defaults of the options below; under
      "llama.cpp" a contradicting explicit option is refused (``backend.numerics_options``).
    - ``rounding``: activation rounding, "half_even" (bitnet.cpp fork, transformers) or
      "half_away" (later forks' ``roundf``), docs/numerics.md#25-rounding-modes-at-a-glance.
    - ``kv_dtype``: "f32" or "f16" (llama.cpp's default cache: K after RoPE and V rounded to fp16,
      q and the softmax output rounded to fp16 for their dots, docs/numerics.md#6-attention).
    - ``lm_head_dtype``: "auto" (fp16 mat-mul iff the lm_head weight is F16; for a Q8_0 lm_head
      llama.cpp's Q8_0 dot: the hidden state quantised to Q8_0, exact int8 block dots; for a Q6_K
      lm_head llama.cpp's Q6_K × Q8_K dot, docs/numerics.md#9-embedding-and-lm_head), "f16" (hidden state and weights rounded to fp16), "f32" (no
      rounding).
    - ``n_ctx_max``: the default cache length (default ``config.context``); RoPE tables are built
      for it up to ROPE_ROWS_UP_FRONT positions, and ``new_cache`` extends them on demand.
    - ``buckets``: chunk lengths compiled for ``forward`` (must contain 1).
    """

    def __init__(
        self,
        config: ModelConfig,
        tensors: Mapping[str, object],
        *,
        numerics: str | None = None,
        rounding: str | None = None,
        kv_dtype: str | None = None,
        lm_head_dtype: str | None = None,
        n_ctx_max: int | None = None,
        buckets: Sequence[int] = DEFAULT_BUCKETS,
    ) -> None:
        opts = numerics_options(numerics, rounding=rounding, kv_dtype=kv_dtype, lm_head_dtype=lm_head_dtype)
        profile, rounding, kv_dtype, lm_head_dtype = (
            opts["numerics"], opts["rounding"], opts["kv_dtype"], opts["lm_head_dtype"])
        if rounding not in ternary.ROUNDING_MODES:
            raise ConfigError(f"rounding {rounding!r} is not one of {ternary.ROUNDING_MODES}")
        if kv_dtype not in KV_DTYPES:
            raise ConfigError(f"kv_dtype {kv_dtype!r} is not one of {tuple(KV_DTYPES)}")
        buckets = tuple(sorted({int(b) for b in buckets}))
        if not buckets or buckets[0] != 1:
            raise ConfigError(f"buckets {buckets} must contain 1 (the decode step)")
        self.config = config
        self.vocab_size = config.vocab
        self.n_ctx_max = int(n_ctx_max if n_ctx_max is not None else config.context)
        if self.n_ctx_max <= 0:
            raise ConfigError(f"n_ctx_max must be positive, got {self.n_ctx_max}")
        self.buckets = buckets
        self.rounding = rounding
        self.kv_dtype = kv_dtype
        q8k = profile == "llama.cpp"
        check_numerics_shapes(config, profile)

        prep = weights.prepare(config, tensors, lm_head_dtype=lm_head_dtype)
        kq_scale = float(np.float32(1.0) / np.sqrt(np.float32(config.head_dim)))  # 1.0f/sqrtf(d)
        self._static = _Static(
            n_layers=config.n_layers, n_heads=config.n_heads, n_kv=config.n_kv_heads,
            head_dim=config.head_dim, rot=config.rot_dim, rope_style=config.rope_style,
            eps=float(np.float32(config.norm_eps)), kq_scale=kq_scale,
            activation=config.activation, sub_norms=config.sub_norms, rounding=rounding,
            kv_f16=kv_dtype == "f16", block_mode=prep.block_mode, out_scales=prep.out_scales,
            lm_f16=prep.lm_head_f16, lm_chunk=prep.lm_chunk, vocab=config.vocab,
            lm_q8=prep.lm_head_scales is not None, lm_q6k=prep.lm_head_q6_k is not None, q8k=q8k,
        )
        lm = jnp.asarray(prep.lm_head)
        self._params = {
            "layers": {k: jnp.asarray(v) for k, v in prep.layers.items()},
            "embed": lm if prep.embed is prep.lm_head else jnp.asarray(prep.embed),
            "lm_head": lm,
            "output_norm": jnp.asarray(prep.output_norm),
        }
        if prep.lm_head_scales is not None:
            self._params["lm_scales"] = jnp.asarray(prep.lm_head_scales)
        if prep.lm_head_q6_k is not None:
            self._params["lm_q6_scales"] = jnp.asarray(prep.lm_head_q6_k[0])
            self._params["lm_q6_d"] = jnp.asarray(prep.lm_head_q6_k[1])
        # tables for the usual context up front (one table shape for every cache, so no recompiles),
        # but never a huge training context's worth before a cache that long exists
        self._set_rope_tables(min(self.n_ctx_max, ROPE_ROWS_UP_FRONT))
        if q8k:
            act = {"activations": "Q8_K per 256-block", "rounding": "half_even (ggml nearest_int)",
                   "epilogue": "sumf += fl32(sumi_b) * fl32(d8_b * d_w,b), f32, blocks in order"}
        else:
            act = {"activations": "per-token absmax int8", "rounding": rounding, "act_floor": ternary.ACT_EPS,
                   "epilogue": "(acc / s_x) * gamma" if not prep.block_mode else "fl32(sum_b acc_b*d_b) / s_x"}
        self.numerics = {
            "profile": profile,
            **act,
            "kv_dtype": kv_dtype,
            "lm_head": ("q8_0" if prep.lm_head_scales is not None else "q6_k" if prep.lm_head_q6_k is not None
                        else "f16" if prep.lm_head_f16 else "f32"),
            "embed_type": prep.embed_type,
            "lm_head_type": prep.lm_head_type,
            "float_dots": "float64 accumulate, one f32 rounding",
        }
        self._neg_zero = jnp.asarray(np.float32(-0.0))

    def _set_rope_tables(self, n_pos: int) -> None:
        """cos/sin tables (n_pos, rot/2) for positions 0..n_pos-1 (rope.py)."""
        c = self.config
        cos, sin = rope.cos_sin_tables(n_pos, c.rot_dim, c.rope_theta)
        self._params["cos"], self._params["sin"] = jnp.asarray(cos), jnp.asarray(sin)
        self._rope_rows = n_pos
        self.n_ctx_max = max(self.n_ctx_max, n_pos)

    # ---- caches ----------------------------------------------------------------------------
    def new_cache(self, n_ctx: int | None = None) -> KVCache:
        """An empty cache for up to ``n_ctx`` tokens (default ``n_ctx_max``; a larger ``n_ctx``
        extends ``n_ctx_max`` and the RoPE tables)."""
        n_ctx = self.n_ctx_max if n_ctx is None else n_ctx
        c = self.config
        itemsize = np.dtype(KV_DTYPES[self.kv_dtype]).itemsize
        n_ctx = check_cache_size(n_ctx, 2 * c.n_layers * c.n_kv_heads * c.head_dim * itemsize, c.context)
        if n_ctx > self._rope_rows:  # longer than any cache so far: extend the RoPE tables (cheap)
            self._set_rope_tables(n_ctx)
        shape = (c.n_layers, n_ctx, c.n_kv_heads, c.head_dim)
        dt = KV_DTYPES[self.kv_dtype]
        return KVCache(jnp.zeros(shape, dt), jnp.zeros(shape, dt), n_ctx, self.kv_dtype, id(self))

    # ---- forward ---------------------------------------------------------------------------
    def forward(self, ids: Sequence[int] | np.ndarray, cache: KVCache, *, capture: bool = False,
                last_only: bool = False):
        """Logits (T, vocab) float32 for the T new tokens ``ids``, appended to ``cache``.

        With ``capture=True`` returns ``(logits, captures)`` (names in the module docstring).
        ``last_only=True`` returns the last row only, shape (1, vocab), as the native engine does
        (the backend contract, bitnet_lab/backend.py; here every row is still computed).
        """
        ids = check_token_ids(ids, self.vocab_size)
        c = self.config
        want = (c.n_layers, getattr(cache, "n_ctx", -1), c.n_kv_heads, c.head_dim)
        if (not isinstance(cache, KVCache) or cache._owner != id(self) or cache.k.shape != want
                or cache.kv_dtype != self.kv_dtype):
            raise BitnetLabError("forward needs a KVCache made by this model's new_cache()")
        T = int(ids.size)
        if cache.pos + T > cache.n_ctx:
            raise BitnetLabError(
                f"context overflow: {cache.pos} cached + {T} new tokens > n_ctx {cache.n_ctx}")
        outs: list[np.ndarray] = []
        caps: dict[str, list[np.ndarray]] = {}
        done = 0
        while done < T:
            left = T - done
            size = next((b for b in self.buckets if b >= left), self.buckets[-1])
            take = min(left, size)
            chunk = np.zeros(size, dtype=np.int32)
            chunk[:take] = ids[done : done + take]
            with jax.enable_x64(True):
                logits, ck, cv, cap = _step_jit(
                    self._static, self._params, chunk, np.int32(cache.pos), np.int32(take),
                    cache.k, cache.v, self._neg_zero, capture=capture)
            cache.k, cache.v = ck, cv
            cache.pos += take
            outs.append(np.asarray(logits)[:take])
            if capture:
                for name, arr in self._flatten_captures(cap, take).items():
                    caps.setdefault(name, []).append(arr)
            done += take
        logits = np.concatenate(outs) if outs else np.zeros((0, self.vocab_size), np.float32)
        if last_only:
            logits = logits[-1:]
        if not capture:
            return logits
        return logits, {k: np.concatenate(v) for k, v in caps.items()}

    def forward_batch(self, seqs: Sequence[Sequence[int]], caches: Sequence[KVCache], *, last_only: bool = True):
        """Several sequences, each appended to its own cache (the backend contract,
        bitnet_lab/backend.py): the semantic model of the native engine's batched pass, so simply
        ``forward`` on each sequence in turn. ``last_only``: one (N, vocab) array of the last rows;
        else a list of (T_i, vocab) arrays."""
        ids = check_batch(seqs, caches, self.vocab_size)
        for cache in caches:   # all checked before any cache changes
            if not isinstance(cache, KVCache) or cache._owner != id(self):
                raise BitnetLabError("forward_batch needs KVCaches made by this model's new_cache()")
        outs = [self.forward(a, cache, last_only=last_only) for a, cache in zip(ids, caches)]
        return np.concatenate(outs) if last_only else outs

    def _flatten_captures(self, cap: dict, take: int) -> dict[str, np.ndarray]:
        out = {k: np.asarray(v)[:take] for k, v in cap.items() if k != "layers"}
        for name, arr in cap["layers"].items():
            arr = np.asarray(arr)
            for i in range(self.config.n_layers):
                out[f"blk.{i}.{name}"] = arr[i, :take]
        return out

    def logits(self, ids: Sequence[int] | np.ndarray, *, capture: bool = False):
        """Full forward of ``ids`` from an empty cache (cache length: a power of two ≥ 64)."""
        T = len(ids)
        n_ctx = max(64, 1 << max(T - 1, 0).bit_length())
        return self.forward(ids, self.new_cache(n_ctx), capture=capture)

    def __repr__(self) -> str:
        c = self.config
        return (f"ReferenceModel({c.arch}, {c.n_layers} layers, H={c.hidden}, vocab={c.vocab}, "
                f"{', '.join(f'{k}={v}' for k, v in self.numerics.items())})")
