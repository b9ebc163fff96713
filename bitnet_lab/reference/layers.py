"""The building blocks of the reference forward pass, as pure ``jax.numpy`` functions.

Every function here mirrors one numbered rule of docs/numerics.md. They are meant
to run inside ``jax.jit`` **under** ``jax.enable_x64(True)`` (the model wraps every call in that
context; the user's global JAX config is never changed): several reductions are accumulated in
float64 and rounded once to float32. The trainer's differentiable twin (``fakequant.py``) calls
the same functions with ``acc=F32`` in JAX's default 32-bit mode; :func:`decoder_layer` is the
layer structure both share.

Three XLA-CPU facts shape the code (all measured on jax 0.10.2; ``tests/test_reference.py`` pins
the results bit for bit against a plain numpy twin, so a regression shows):

* LLVM contracts ``a*b + c`` into one fused multiply-add (one rounding instead of two) even with
  fast-math off. ggml and numpy round the product first. :func:`rounded` defeats this by adding a
  *runtime* ``-0.0`` (passed in as an argument, so no compiler can fold it away): ``p + (-0.0)``
  is exactly ``p`` for every float, and an add whose operand is no longer a bare multiply cannot
  be contracted with the next one.
* XLA's algebraic simplifier rewrites ``1/sqrt(x)`` into ``rsqrt(x)``, which is not correctly
  rounded on CPU. An ``optimization_barrier`` between the sqrt and the division keeps ggml's
  ``1.0f/sqrtf(...)`` (both correctly rounded IEEE operations).
* It also rewrites ``a / broadcast(b)`` into ``a * broadcast(1/b)``; :func:`exact_div` hides the
  divisor behind a barrier so the epilogue's ``acc / s_x`` stays one IEEE division.

Precision choices that are *defined* here rather than copied from ggml (ggml's f32 SIMD
reduction order is ISA dependent, so no portable reference can copy it):

* dot products in floating point (attention q·k and p·v, the lm_head) take their f32 (or fp16)
  operands to float64, where every product is exact, accumulate there, and round once to f32
  ("≈ correctly rounded dot"; order-independent to the last f32 bit except in astronomically
  rare near-midpoint cases). ggml accumulates these in f32 (ISA order).
* ``exp`` (softmax, SiLU) is evaluated in float64 and rounded to f32 (≈ correctly rounded
  ``expf``; glibc 2.36's ``expf`` differs from it in ~6e-4 of random arguments by one ulp).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from bitnet_lab.quant import ternary

F32 = jnp.float32
F64 = jnp.float64


def exact_div(a: jax.Array, b: jax.Array) -> jax.Array:
    """IEEE ``a / b`` with ``b`` broadcast to ``a``'s shape.

    XLA's simplifier turns ``a / broadcast(b)`` into ``a * broadcast(1/b)`` (two roundings); the
    barrier on the broadcast divisor keeps the single correctly rounded division.
    """
    b = lax.optimization_barrier(jnp.broadcast_to(b, jnp.broadcast_shapes(a.shape, jnp.shape(b))))
    return a / b


def rounded(p: jax.Array, neg_zero: jax.Array) -> jax.Array:
    """``fl32(p)`` as a value LLVM cannot fuse into a following add (see module docstring).

    ``neg_zero`` must be a traced f32 scalar holding ``-0.0`` (a jit argument, not a constant).
    """
    return p + neg_zero


# ---- activation quantisation (docs/numerics.md#21-bitnetcpp-i2_s-path; mirrors bitnet_lab.quant.ternary) ----
def round_int(v: jax.Array, mode: str) -> jax.Array:
    """Round f32 values to integers (still f32), exactly as ``ternary.round_int``.

    ``v`` must already be a :func:`rounded` value when ``mode == "half_away"`` (its ``v - trunc``
    would otherwise be contracted with the product that formed ``v``).
    """
    if mode == "half_even":
        return jnp.round(v)  # jnp.round is round-half-to-even, like np.rint
    if mode == "half_away":
        whole = jnp.trunc(v)
        frac = v - whole  # exact, as in the numpy policy
        return whole + jnp.where(jnp.abs(frac) >= F32(0.5), jnp.sign(v), F32(0.0))
    raise ValueError(f"unknown rounding mode {mode!r}; expected one of {ternary.ROUNDING_MODES}")


def quantize_activations(x: jax.Array, mode: str, neg_zero: jax.Array, acc=F64):
    """Per-token absmax int8: ``(q int8 (..., K), s_x f32 (...,), sum_q int32 (...,))``.

    Same arithmetic as ``ternary.quantize_activations``: absmax in f32 (exact), floored at
    f32(1e-5); ``s_x = fl32(127 / amax)`` via one float64 division (= the correctly rounded f32
    quotient); ``x·s_x`` in f32; round; clamp to [-128, 127]. ``acc=F32`` (the trainer, which
    runs without x64) divides in f32 directly: the same correctly rounded quotient
    (docs/numerics.md#21-bitnetcpp-i2_s-path).
    """
    amax = jnp.maximum(jnp.max(jnp.abs(x), axis=-1), F32(ternary.ACT_EPS))
    s_x = exact_div(acc(ternary.ACT_QMAX), amax.astype(acc)).astype(F32)
    v = rounded(x * s_x[..., None], neg_zero)
    q = jnp.clip(round_int(v, mode), ternary.ACT_CLAMP_MIN, ternary.ACT_CLAMP_MAX).astype(jnp.int8)
    return q, s_x, jnp.sum(q, axis=-1, dtype=jnp.int32)


# ---- BitLinear (docs/numerics.md#3-bitlinear-integer-product-and-epilogue) --------------------
def int_matmul(q: jax.Array, t: jax.Array) -> jax.Array:
    """Exact ``Σ_k q[c,k]·t[m,k]``: int8 (C, K) × int8 (M, K) → int32 (C, M)."""
    return lax.dot_general(q, t, (((1,), (1,)), ((), ())), preferred_element_type=jnp.int32)


def int_matmul_blocks(q: jax.Array, t: jax.Array, block: int) -> jax.Array:
    """Per-block partial sums: int8 (C, K) × int8 (M, K) → int32 (nb, C, M), nb = K // block."""
    C, K = q.shape
    M = t.shape[0]
    qb = q.reshape(C, K // block, block)
    tb = t.reshape(M, K // block, block)
    # batch over the block axis, contract within the block
    return lax.dot_general(qb, tb, (((2,), (2,)), ((1,), (1,))), preferred_element_type=jnp.int32)


def epilogue(acc: jax.Array, s_x: jax.Array, gamma: jax.Array) -> jax.Array:
    """``y = acc / s_x · γ`` in f32, left to right (docs/numerics.md#32-bitnetcpp-i2_s-epilogue-and-its-order:
    the order is the contract)."""
    return exact_div(acc.astype(F32), s_x[:, None]) * gamma


def epilogue_blocks(acc_b: jax.Array, s_x: jax.Array, d: jax.Array) -> jax.Array:
    """Block-scaled epilogue (TQ weights whose fp16 block scales are not uniform).

    ``y[c, m] = fl32( Σ_b acc_b[b, c, m] · d[m, b] ) / s_x[c]``: each product is exact in float64
    (|acc_b| < 2^15 times an fp16 value), the sum over blocks is accumulated in float64 and rounded
    once to f32, then divided by the activation scale in f32. acc_b (nb, C, M), d (M, nb) f32.
    """
    y = jnp.einsum("bcm,mb->cm", acc_b.astype(F64), d.astype(F64)).astype(F32)
    return exact_div(y, s_x[:, None])


# ---- llama.cpp's TQ products, numerics="llama.cpp" (docs/numerics.md#121-the-two-profiles-rule-by-rule) ----
Q8K_BLOCK = 256  # elements per Q8_K block (ggml QK_K)
_NEAREST_INT_SHIFTER = 12582912.0  # 1.5·2^23: ggml's nearest_int adds it in f32 and reads the low bits


def quantize_q8_k(x: jax.Array, neg_zero: jax.Array):
    """llama.cpp's Q8_K activations (``quantize_row_q8_K_ref``), the JAX twin of
    ``bitnet_lab.quant.q8_k.quantize_q8_k``: per block of 256, ``max`` = the first element of
    largest ``|x|``; ``iscale = fl32(-127 / max)``; ``q = min(127, nearest_int(fl32(iscale·x)))``
    (ggml's shifter bit recipe: round half to even); ``d = fl32(1 / iscale)``; an all-zero block
    gives ``d = 0`` and zero codes. x (C, K) f32, K % 256 == 0 -> (q int8 (C, K), d f32 (C, K/256)).
    """
    C, K = x.shape
    xb = x.reshape(C, K // Q8K_BLOCK, Q8K_BLOCK)
    ax = jnp.abs(xb)
    first = jnp.argmax(ax, axis=-1)  # jnp.argmax returns the FIRST largest, as upstream's `ax > amax`
    mx = jnp.take_along_axis(xb, first[..., None], axis=-1)[..., 0]
    zero = jnp.take_along_axis(ax, first[..., None], axis=-1)[..., 0] == F32(0.0)
    iscale = exact_div(F32(-127.0), jnp.where(zero, F32(1.0), mx))
    v = rounded(iscale[..., None] * xb, neg_zero)  # the f32 product, kept apart from the shifter add
    shifted = rounded(v + F32(_NEAREST_INT_SHIFTER), neg_zero)
    bits = lax.bitcast_convert_type(shifted, jnp.int32)
    n = (bits & jnp.int32(0x007FFFFF)) - jnp.int32(0x00400000)
    q = jnp.minimum(n, jnp.int32(127))
    q = lax.bitcast_convert_type((q & jnp.int32(0xFF)).astype(jnp.uint8), jnp.int8)  # C's (int8_t): the low byte
    q = jnp.where(zero[..., None], jnp.int8(0), q)
    d = jnp.where(zero, F32(0.0), exact_div(F32(1.0), iscale))
    return q.reshape(C, K), d


def q8_k_block_dot(q: jax.Array, d8: jax.Array, t: jax.Array, d_w: jax.Array, neg_zero: jax.Array):
    """ggml's ``vec_dot_tq{1,2}_0_q8_K`` for every (activation row, weight row): per 256-block the
    exact int32 ``sumi = Σ t·q``, then ``sumf += fl32(sumi) · fl32(d8 · d_w)`` in float32, block by
    block in order from 0 (each product rounded before its add, as in ggml's scalar loop).

    q int8 (C, K), d8 f32 (C, nb), t int8 (M, K), d_w f32 (M, nb) (a uniform-scale tensor passes
    γ in every block) -> (y f32 (C, M), acc int32 (C, M) = Σ over blocks of sumi, exact).
    """
    sumi = int_matmul_blocks(q, t, Q8K_BLOCK)  # (nb, C, M) int32, each |sumi| <= 127·256: exact in f32
    scale = d8.T[:, :, None] * d_w.T[:, None, :]  # (nb, C, M): fl32(d8 · d_w), one rounding

    def add_block(sumf, xs):
        s_b, sc_b = xs
        return sumf + rounded(s_b.astype(F32) * sc_b, neg_zero), None

    # sumf starts at a *runtime* +0.0: with a constant 0 XLA drops the first add (0 + x -> x), and
    # ggml's 0.0f + (-0.0f) = +0.0f would become -0.0 (a single-block row whose sum is 0 with d8 < 0)
    zero = jnp.broadcast_to(-neg_zero, sumi.shape[1:])
    y, _ = lax.scan(add_block, zero, (sumi, scale))
    return y, jnp.sum(sumi, axis=0, dtype=jnp.int32)


# ---- RMSNorm (docs/numerics.md#41-ggml, ggml_compute_forward_rms_norm_f32) --------------------
def rms_norm(x: jax.Array, w: jax.Array, eps: float, acc=F64) -> jax.Array:
    """ggml RMSNorm of each row of ``x`` (..., n) f32, then the separate weight multiply.

    Squares formed in f32 and summed in float64 (``acc``; the trainer sums in f32); ``mean =
    fl32(sum / n)``; ``scale = 1.0f / sqrtf(mean + eps)`` (eps as f32, inside the root);
    ``(x · scale) · w`` as two f32 multiplies.
    """
    n = x.shape[-1]
    ss = jnp.sum((x * x).astype(acc), axis=-1)
    mean = exact_div(ss, acc(n)).astype(F32)
    root = lax.optimization_barrier(jnp.sqrt(mean + F32(eps)))  # keep 1/sqrt out of rsqrt
    scale = exact_div(F32(1.0), root)
    return (x * scale[..., None]) * w


# ---- RoPE (docs/numerics.md#53-ggml-angle-computation; tables come from bitnet_lab.reference.rope) ----
def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array, style: str, rot: int, neg_zero):
    """Rotate the first ``rot`` dims of every head of ``x`` (C, n_heads, head_dim) f32.

    ``cos``/``sin`` (C, rot/2) f32 for each row's position. ``style`` "neox": dim ``i`` pairs with
    ``i + rot/2``; "norm": dim ``2i`` pairs with ``2i+1``. Rotation in f32, each product rounded
    before the add/sub (ggml): ``x0' = x0·cos − x1·sin``, ``x1' = x0·sin + x1·cos``.
    """
    half = rot // 2
    c = cos[:, None, :]  # (C, 1, rot/2): the same angle for every head
    s = sin[:, None, :]
    if style == "neox":
        x0, x1 = x[..., :half], x[..., half:rot]
    elif style == "norm":
        x0, x1 = x[..., 0:rot:2], x[..., 1:rot:2]
    else:
        raise ValueError(f"unknown rope style {style!r}")
    y0 = rounded(x0 * c, neg_zero) - rounded(x1 * s, neg_zero)
    y1 = rounded(x0 * s, neg_zero) + rounded(x1 * c, neg_zero)
    if style == "neox":
        rotated = jnp.concatenate([y0, y1], axis=-1)
    else:
        rotated = jnp.stack([y0, y1], axis=-1).reshape(*y0.shape[:-1], rot)
    return jnp.concatenate([rotated, x[..., rot:]], axis=-1) if rot < x.shape[-1] else rotated


# ---- attention (docs/numerics.md#6-attention) -------------------------------------------------
def attention(q, k_cache, v_cache, q_pos, kq_scale, *, n_rep: int, f16: bool, neg_zero, acc=F64):
    """Causal GQA attention of C query rows over a whole fixed-size cache.

    q (C, n_heads, d) f32 after RoPE; k_cache/v_cache (n_ctx, n_kv, d) in the cache dtype,
    already holding this chunk's keys/values; q_pos (C,) int32 absolute positions. Query head
    ``j`` reads kv head ``j // n_rep`` (docs/numerics.md#6-attention). Returns (C, n_heads·d) f32, heads
    in order.

    Arithmetic (ggml's soft_max_f32 structure): ``s = fl32(q·k) · kq_scale`` (f32); keys after the
    query position masked to −inf; ``e = fl32(exp(s − max))``; ``sum`` in float64;
    ``p = e · fl32(1/sum)``; ``o = fl32(Σ p·v)``. Dots accumulate in float64 (module docstring).
    With an fp16 cache, q and p are rounded to fp16 before their dots, as llama.cpp's F16
    mat-muls convert their f32 operand (vec_dot_type F16).
    ``acc``: the dtype of the dots, the exp and the softmax sum (float64; the trainer: f32).
    """
    C, n_heads, d = q.shape
    n_ctx, n_kv, _ = k_cache.shape
    if f16:
        q = q.astype(jnp.float16)
    qg = q.astype(acc).reshape(C, n_kv, n_rep, d)  # head j = g·n_rep + r  ->  kv head g
    scores = jnp.einsum("cgrd,ngd->cgrn", qg, k_cache.astype(acc)).astype(F32)
    s = rounded(scores * kq_scale, neg_zero)
    mask = jnp.arange(n_ctx, dtype=jnp.int32)[None, :] <= q_pos[:, None]  # (C, n_ctx) causal
    mask = mask[:, None, None, :]
    s = jnp.where(mask, s, F32(-jnp.inf))
    m = jnp.max(s, axis=-1, keepdims=True)
    e = jnp.exp((s - m).astype(acc)).astype(F32)
    e = jnp.where(mask, e, F32(0.0))
    total = jnp.sum(e.astype(acc), axis=-1, keepdims=True)
    p = e * exact_div(acc(1.0), total).astype(F32)
    if f16:
        p = p.astype(jnp.float16)
    o = jnp.einsum("cgrn,ngd->cgrd", p.astype(acc), v_cache.astype(acc)).astype(F32)
    return o.reshape(C, n_heads * d)


# ---- FFN activation (docs/numerics.md#7-ffn-activation-relu-squared-vs-silu) ------------------
def silu(g: jax.Array) -> jax.Array:
    """``fl32(g / (1 + exp(−g)))`` evaluated in float64 (≈ correctly rounded SiLU)."""
    g64 = g.astype(F64)
    return exact_div(g64, F64(1.0) + jnp.exp(-g64)).astype(F32)


def gated_activation(g: jax.Array, u: jax.Array, activation: str) -> jax.Array:
    """``relu(g)² · u`` (ggml relu, sqr, mul: f32, left to right) or ``silu(g) · u``."""
    if activation == "relu2":
        r = jnp.where(g > F32(0.0), g, F32(0.0))  # ggml_relu: x > 0 ? x : 0
        return (r * r) * u
    if activation == "silu":
        return silu(g) * u
    raise ValueError(f"unknown activation {activation!r}")


# ---- lm_head (docs/numerics.md#9-embedding-and-lm_head) ---------------------------------------
def lm_head(h: jax.Array, w: jax.Array, *, f16: bool, chunk: int, acc=F64) -> jax.Array:
    """Logits (C, V_pad) f32 = fl32(h · wᵀ) accumulated in float64.

    h (C, H) f32 (the output_norm'ed hidden state), w (V_pad, H) f16 or f32 with V_pad a multiple
    of ``chunk``. When ``f16`` the hidden state is rounded to fp16 first (ggml's F16 mat-mul
    converts its f32 operand). ``preferred_element_type=float64`` forms every product exactly
    in float64 (checked against explicit upcasts in the tests) without a float64 copy of the
    weights; the vocabulary is walked in chunks to bound XLA's temporaries. ``acc=F32``: the
    trainer's plain f32 dot.
    """
    h = h.astype(jnp.float16) if f16 else h
    V, H = w.shape
    h = h.astype(w.dtype)  # exact: h is already representable in w's dtype (fp16 or f32)
    dims = (((1,), (1,)), ((), ()))

    def block(wb):
        return lax.dot_general(h, wb, dims, preferred_element_type=acc).astype(F32)

    if V == chunk:
        return block(w)
    out = lax.map(block, w.reshape(V // chunk, chunk, H))  # (nc, C, chunk)
    return jnp.transpose(out, (1, 0, 2)).reshape(h.shape[0], V)


def quantize_q8_0(x: jax.Array, neg_zero: jax.Array):
    """The hidden state as llama.cpp's Q8_0 vec_dot operand (``quantize_row_q8_0``;
    docs/numerics.md#9-embedding-and-lm_head): per block of 32, ``d = amax / 127`` (f32),
    ``q = roundf(x · (d ? 1/d : 0))`` (half away from zero), ``d`` stored as fp16. x (C, H) f32, H % 32 == 0
    -> (q int32 (C, H/32, 32), d f32 (C, H/32) holding the fp16 values)."""
    xb = x.reshape(x.shape[0], -1, 32)
    amax = jnp.max(jnp.abs(xb), axis=-1)
    d = exact_div(amax, F32(127.0))
    inv = jnp.where(d != F32(0.0), exact_div(F32(1.0), d), F32(0.0))
    v = rounded(xb * inv[..., None], neg_zero)
    q = round_int(v, "half_away").astype(jnp.int32)  # |v| <= 127 + rounding: no clamp needed
    return q, d.astype(jnp.float16).astype(F32)


def lm_head_q8_0(h: jax.Array, q_w: jax.Array, d_w: jax.Array, *, chunk: int, neg_zero: jax.Array) -> jax.Array:
    """Logits (C, V_pad) f32 of a Q8_0 lm_head with llama.cpp's semantics: the hidden state is
    quantised to Q8_0 (:func:`quantize_q8_0`), each block's integer dot Σ q_w·q_x is exact, and
    ``logit = fl32(Σ_b isum_b · fl32(d_w,b · d_x,b))`` summed in float64 (the products are exact:
    19 + 22 bits). q_w (V_pad, H) int8, d_w (V_pad, H/32) f32 (fp16 values)."""
    qx, dx = quantize_q8_0(h, neg_zero)  # (C, nb, 32), (C, nb)
    V, H = q_w.shape

    def block(args):
        qw, dw = args  # (chunk, H) int8, (chunk, nb)
        isum = jnp.einsum("cbk,vbk->cvb", qx, qw.reshape(chunk, -1, 32).astype(jnp.int32))
        scale = dw[None, :, :] * dx[:, None, :]  # f32, exact (11 x 11 significant bits)
        return jnp.sum(isum.astype(F64) * scale.astype(F64), axis=-1).astype(F32)

    out = lax.map(block, (q_w.reshape(V // chunk, chunk, H), d_w.reshape(V // chunk, chunk, -1)))
    return jnp.transpose(out, (1, 0, 2)).reshape(h.shape[0], V)


def lm_head_q6_k(h: jax.Array, w: jax.Array, scales: jax.Array, d_w: jax.Array, *, chunk: int,
                 neg_zero: jax.Array) -> jax.Array:
    """Logits (C, V_pad) f32 of a Q6_K lm_head with llama.cpp's semantics (``ggml_vec_dot_q6_K_q8_K``;
    docs/numerics.md#9-embedding-and-lm_head): the hidden state quantised to Q8_K
    (:func:`quantize_q8_k`), per 256-block the exact int32 ``isum_b = Σ_s scales_s · Σ (u − 32)·q8``,
    then ``sum = sum + fl32(fl32(isum_b) · fl32(d_w,b · d8_b))`` in float32, blocks in order from 0
    (the engine's canonical order, src/bl_q6k.h). w (V_pad, H) int8 = u − 32, scales (V_pad, H/16)
    int8, d_w (V_pad, H/256) f32 (fp16 values); H % 256 == 0."""
    q8, d8 = quantize_q8_k(h, neg_zero)  # (C, H) int8, (C, nb)
    C, H = q8.shape
    V, nb = w.shape[0], H // Q8K_BLOCK
    xs = q8.reshape(C, H // 16, 16).astype(jnp.int32)

    def block(args):
        wb, sb, db = args  # (chunk, H) int8, (chunk, H/16) int8, (chunk, nb) f32
        sub = jnp.einsum("csk,vsk->cvs", xs, wb.reshape(chunk, H // 16, 16).astype(jnp.int32))  # |.| <= 16·32·127
        isum = jnp.sum((sub * sb.astype(jnp.int32)[None]).reshape(C, chunk, nb, 16), axis=-1)  # exact int32
        dd = rounded(db[None, :, :] * d8[:, None, :], neg_zero)  # fl32(d_w · d8)

        def add_block(total, xs_b):
            isum_b, dd_b = xs_b
            return total + rounded(isum_b.astype(F32) * dd_b, neg_zero), None

        total, _ = lax.scan(add_block, jnp.zeros((C, chunk), F32),
                            (jnp.moveaxis(isum, -1, 0), jnp.moveaxis(dd, -1, 0)))
        return total

    out = lax.map(block, (w.reshape(V // chunk, chunk, H), scales.reshape(V // chunk, chunk, H // 16),
                          d_w.reshape(V // chunk, chunk, nb)))
    return jnp.transpose(out, (1, 0, 2)).reshape(C, V)


# ---- one decoder layer ---------------------------------------------------------------------
# quantisation points: docs/numerics.md#26-where-the-quantisation-happens;
# sub-norm placement: docs/numerics.md#8-sub-norm-placement
def decoder_layer(h, w, *, n_heads: int, n_kv: int, head_dim: int, eps: float, activation: str,
                  sub_norms: bool, quant, proj, rope, attend, cap, neg_zero, acc=F64):
    """One pre-norm decoder layer of every BitNet family: the architecture, written once.

    The reference forward pass (``model.py``) and the trainer's differentiable fake-quant forward
    (``fakequant.py``) both call this function; they differ only in the callables they pass:

    - ``quant(tag, x) -> X``: what a projection consumes of the float activation ``x`` (the
      reference: int8 codes and scales; the trainer: ``x`` itself, quantised inside its
      straight-through BitLinear). One call per quantisation point: q, k and v share one, as do
      gate and up (docs/numerics.md#26-where-the-quantisation-happens).
    - ``proj(name, X) -> y`` f32 (..., M): the BitLinear named by its GGUF short name.
    - ``rope(x) -> x``: RoPE of (..., n, head_dim) rows at their positions.
    - ``attend(q, k, v) -> o`` f32 (..., n_heads·head_dim): causal GQA attention.
    - ``cap(name, value)``: records an intermediate (a no-op when nothing is captured).

    ``h`` (..., H) f32 is the residual stream (any leading dims); ``w`` maps "attn_norm",
    "ffn_norm" (and with ``sub_norms`` "attn_sub_norm", "ffn_sub_norm") to the layer's RMSNorm
    weights. Returns the layer's output (..., H).
    """
    lead = h.shape[:-1]
    # ---- attention block
    a = rms_norm(h, w["attn_norm"], eps, acc)
    cap("attn_norm", a)
    xa = quant("attn_in", a)  # one quantisation shared by q, k, v
    q = proj("attn_q", xa).reshape(*lead, n_heads, head_dim)
    k = proj("attn_k", xa).reshape(*lead, n_kv, head_dim)
    v = proj("attn_v", xa).reshape(*lead, n_kv, head_dim)
    q, k = rope(q), rope(k)
    cap("q_rope", q)
    cap("k_rope", k)
    o = attend(q, k, v)
    cap("attn_out", o)
    if sub_norms:
        o = rms_norm(o, w["attn_sub_norm"], eps, acc)  # before o_proj (docs/numerics.md#8-sub-norm-placement)
        cap("attn_sub_norm", o)
    h = h + rounded(proj("attn_output", quant("attn_output_in", o)), neg_zero)
    cap("attn_resid", h)
    # ---- FFN block
    m = rms_norm(h, w["ffn_norm"], eps, acc)
    cap("ffn_norm", m)
    xm = quant("ffn_in", m)  # shared by gate and up
    g = proj("ffn_gate", xm)
    u = proj("ffn_up", xm)
    f = gated_activation(g, u, activation)
    cap("ffn_act", f)
    if sub_norms:
        f = rms_norm(f, w["ffn_sub_norm"], eps, acc)  # before down_proj
        cap("ffn_sub_norm", f)
    h = h + rounded(proj("ffn_down", quant("ffn_down_in", f)), neg_zero)
    cap("ffn_resid", h)
    return h
