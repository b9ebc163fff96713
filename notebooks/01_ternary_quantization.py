# ---
# jupyter:
#   bitnet_lab:
#     requires:
#     - jax
#     - matplotlib
#   jupytext:
#     formats: ipynb,py:percent
#     notebook_metadata_filter: bitnet_lab
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · Ternary quantisation: float weights → {−1, 0, +1}, activations → int8
#
# A BitNet b1.58 layer multiplies **ternary** weights by **int8** activations. This notebook
# takes one real layer of a model file apart and shows where both come from.
#
# **What you will learn**
#
# 1. how *absmean* turns a float ("latent") weight matrix into ternary codes `t` and one scale
#    `γ`, and why roughly a third of the codes come out `0`;
# 2. what the ternary layers of a real model file look like: share of zeros per tensor, per
#    row, per layer (with a slider over layers and tensors);
# 3. how each token's activations become int8 with one scale per token, and how large the
#    rounding error is — on real activations captured from the reference model;
# 4. where the two rounding modes (half-to-even, half-away-from-zero) differ: only on exact
#    `.5` ties;
# 5. that bitnet_lab's numpy quantiser, its integer product and its epilogue reproduce the JAX
#    reference model **bit for bit**.
#
# Everything below calls bitnet_lab's own code (`bitnet_lab.quant` is the numerics policy,
# `bitnet_lab.load` the reader, the reference model the judge); the notebook re-implements
# nothing. The facts behind each step are in
# [numerics.md §1](../docs/numerics.md#1-weight-ternarisation)–[§2](../docs/numerics.md#2-activation-quantisation).

# %% [markdown]
# ## Parameters
#
# `MODEL = None` uses the embedded default model (small and fast). Point it at any model file
# bitnet_lab reads — a `.gguf`, a Hugging Face checkpoint folder or a Hub repo id — to look at
# a bigger one; everything below adapts to its shapes.

# %% tags=["parameters"]
MODEL = None          # None → the embedded default model; or a .gguf path, an HF folder, a Hub repo id
LAYER = 0             # which transformer block to study
TENSOR = "attn_q"     # attn_q, attn_k, attn_v, attn_output, ffn_gate, ffn_up or ffn_down
PROMPT = "The quick brown fox jumps over the lazy dog."
SEED = 0              # seeds the synthetic latent weights of section 1

# %%
from math import erf, exp, pi, sqrt

import numpy as np

import bitnet_lab
from bitnet_lab.notebook import viz
from bitnet_lab.notebook import widgets
from bitnet_lab.tools.default_model import default_model_path
from bitnet_lab.tools.inspect import inspect_model
from bitnet_lab.quant import absmean_ternarize, bitlinear_epilogue, quantize_activations

path = default_model_path() if MODEL is None else MODEL
model = bitnet_lab.load(path)
print(model)

W = model.tensors[f"blk.{LAYER}.{TENSOR}.weight"]
M, K = W.shape
t_real = W.ternary()          # int8 (M, K), decoded from the file's packed bytes
gamma_real = W.gamma()        # the per-tensor scale: what a ±1 code stands for
print(W)


def shares(t):
    """Share of −1, 0, +1 codes in a ternary array."""
    return [float(np.mean(t == c)) for c in (-1, 0, 1)]


# %% [markdown]
# ## 0. Real activations, once
#
# Sections 1 and 3 need the activations this layer really sees. The reference model (JAX, the
# judge of every fast path: `bitnet_lab.load(..., backend="reference")`, the same tensors as
# `model` above, which runs on the native engine) runs the prompt once with `capture=True` and
# hands back every intermediate: the input of each projection, its int8 codes, the integer
# products, the outputs.

# %%
reference = bitnet_lab.load(path, backend="reference")
print(f"captures from the {reference.backend} backend: {type(reference.runner).__module__}.{type(reference.runner).__name__}")
ids = reference.tokenizer.encode(PROMPT, add_bos=True)
logits, caps = reference.runner.logits(ids, capture=True)
caps = {name: np.asarray(v) for name, v in caps.items()}   # JAX arrays -> numpy, once

# The float input of each projection and the name of its activation quantisation
# (docs/numerics.md#26-where-the-quantisation-happens: q, k, v share one; gate and up share one).
sub = model.config.sub_norms
INPUT_OF = {
    "attn_q": "attn_norm", "attn_k": "attn_norm", "attn_v": "attn_norm",
    "attn_output": "attn_sub_norm" if sub else "attn_out",
    "ffn_gate": "ffn_norm", "ffn_up": "ffn_norm",
    "ffn_down": "ffn_sub_norm" if sub else "ffn_act",
}
QUANT_OF = {
    "attn_q": "attn_in", "attn_k": "attn_in", "attn_v": "attn_in", "attn_output": "attn_output_in",
    "ffn_gate": "ffn_in", "ffn_up": "ffn_in", "ffn_down": "ffn_down_in",
}
x = caps[f"blk.{LAYER}.{INPUT_OF[TENSOR]}"]     # float32 (T, K): one row per token
print(f"{len(ids)} tokens; input of {TENSOR}: {x.shape[0]} rows of K = {x.shape[1]} floats")

# %% [markdown]
# ## 1. Absmean: from latent floats to ternary codes
#
# A BitNet is trained with float ("latent") weights `W`. Before inference each projection is
# ternarised once, per tensor ([numerics.md §1](../docs/numerics.md#1-weight-ternarisation)):
#
# $$\gamma = \operatorname{mean}|W|, \qquad t = \operatorname{clip}\big(\operatorname{round}(W/\gamma),\,-1,\,1\big)$$
#
# so a weight becomes `0` when `|W| < γ/2` and `±1` otherwise; the layer then computes with
# `γ·t` in place of `W`.
#
# **Which matrix is which.** A model file stores only the codes `t` and `γ` — the latent
# weights stayed with the trainer. To watch absmean at work we therefore *make* a latent
# matrix: Gaussian noise with the real layer's shape, scaled so that its `mean|W|` equals the
# real layer's `γ`. Everything in this section about latent weights is about that **synthetic**
# matrix; the **real** layer's codes appear next to it for comparison and in section 2.

# %%
rng = np.random.default_rng(SEED)
sigma = float(gamma_real) * sqrt(pi / 2)      # E|N(0, σ²)| = σ·√(2/π), so mean|W| ≈ γ_real
latent = (sigma * rng.standard_normal((M, K))).astype(np.float32)
t_lat, gamma_lat = absmean_ternarize(latent)  # the package's absmean (half-to-even rounding)
print(f"synthetic latent {M}×{K}: mean|W| = γ = {gamma_lat:.5g} (real layer γ = {gamma_real:.5g})")

viz.show(viz.latent_histogram(
    latent, gamma_lat, title=f"absmean on a synthetic Gaussian latent matrix ({M}×{K}, shape of {W.name})"))

# %% [markdown]
# **Why about 31 % zeros?** For Gaussian weights `W ~ N(0, σ²)` the mean absolute value is
# `γ = σ·√(2/π)`, and a weight is zeroed when `|W| < γ/2`:
#
# $$P(t = 0) = \operatorname{erf}\!\Big(\frac{\gamma}{2\sigma\sqrt2}\Big) = \operatorname{erf}\!\Big(\frac{1}{2\sqrt\pi}\Big) \approx 0.310.$$
#
# Heavier tails zero more: for a Laplace latent `γ = b` and `P(|W| < b/2) = 1 − e^{−1/2} ≈ 0.393`.
# The share of zeros of a real layer therefore hints at the shape of the latent weights it
# came from. Below: both synthetic latents against that theory, and the real layer's codes.

# %%
laplace = (float(gamma_real) * rng.laplace(size=(M, K))).astype(np.float32)  # E|Laplace(b)| = b
t_lap, gamma_lap = absmean_ternarize(laplace)

theory = {"Gaussian": erf(1 / (2 * sqrt(pi))), "Laplace": 1 - exp(-0.5)}
measured = {"Gaussian": shares(t_lat)[1], "Laplace": shares(t_lap)[1]}
# Five binomial standard deviations: a fair sample lands inside this band essentially always.
tol = {k: 5 * sqrt(p * (1 - p) / t_lat.size) for k, p in theory.items()}
print(viz.table(
    [(k, f"{100 * theory[k]:.2f} %", f"{100 * measured[k]:.2f} %", f"±{100 * tol[k]:.2f} %") for k in theory],
    ["latent", "theory P(t=0)", "measured", "allowed"]))

viz.show(viz.code_shares(
    {"synthetic Gaussian latent → absmean": shares(t_lat),
     "synthetic Laplace latent → absmean": shares(t_lap),
     f"real layer {W.name}": shares(t_real)},
    title="share of each ternary code"))

# %% [markdown]
# ### What ternarising costs
#
# `γ·t` is a coarse copy of `W`. What matters is the layer's output `y = W·x`, so we feed the
# **real** activations of section 0 through the synthetic latent matrix and through its ternary
# copy. (Real trained layers are ternary *during* training — the network learns to live with
# the rounding — so this is the cost of ternarising a matrix that was never trained for it: an
# upper bound on the damage, not the damage in a BitNet.)

# %%
y_latent = x.astype(np.float64) @ latent.T.astype(np.float64)
y_ternary = x.astype(np.float64) @ (float(gamma_lat) * t_lat.T.astype(np.float64))
w_err = np.linalg.norm(latent - gamma_lat * t_lat) / np.linalg.norm(latent)
y_err = np.linalg.norm(y_ternary - y_latent) / np.linalg.norm(y_latent)
corr = np.corrcoef(y_latent.ravel(), y_ternary.ravel())[0, 1]
print(f"relative error of the weights ‖W − γt‖/‖W‖ = {w_err:.3f}")
print(f"relative error of the outputs ‖y_t − y‖/‖y‖ = {y_err:.3f}, correlation {corr:.3f}")

viz.show(viz.output_scatter(
    y_latent, y_ternary, title="synthetic latent layer: float vs ternary weights, real inputs",
    xlabel="output with latent weights W·x (model units)",
    ylabel="output with ternary weights γ·t·x (model units)"))

# %% [markdown]
# ## 2. The real layer
#
# Now the codes the file really holds. The left panel shows a corner of the matrix (one colour
# per code), the right panel how the share of zeros varies from row to row.
#
# One property worth checking on real data: **absmean is not idempotent**. Ternarising what
# the file stores (`γ·t`) again keeps every code (`±γ/γ'` rounds to `±1` for any zero share
# below 100 %) but returns a *different* scale, `γ' = mean|γ·t| = γ·(1 − share of zeros)`.
# So γ must be read from the file, never recomputed from dequantised weights
# ([numerics.md §1](../docs/numerics.md#1-weight-ternarisation)).

# %%
s_real = shares(t_real)
print(f"{W.name}: {M}×{K}, γ = {gamma_real:.6g}, codes −1/0/+1 = "
      + " / ".join(f"{100 * s:.2f} %" for s in s_real))
viz.show(viz.tensor_overview(t_real, title=f"the real layer {W.name} ({W.layout}, {M}×{K})"))

t_again, gamma_again = absmean_ternarize(W.dequantize())
gamma_predicted = float(gamma_real) * (1 - s_real[1])
print(f"absmean of γ·t: same codes: {np.array_equal(t_again, t_real)}; "
      f"γ' = {gamma_again:.6g}, γ·(1 − zero share) = {gamma_predicted:.6g}")

# %% [markdown]
# ### Every layer, every projection
#
# Move the controls to look at any tensor of the model. (Run headless — in CI or as a plain
# script — the controls print a few representative settings instead.)

# %%
PROJECTIONS = list(model.config.projection_shapes())


def show_tensor(layer, tensor):
    w = model.tensors[f"blk.{layer}.{tensor}.weight"]
    t = w.ternary()
    neg, zero, pos = shares(t)
    print(f"{w.name}: {w.layout} {w.shape[0]}×{w.shape[1]}, γ = {w.gamma():.5g}, "
          f"−1/0/+1 = {100 * neg:.1f} / {100 * zero:.1f} / {100 * pos:.1f} %")
    viz.show(viz.tensor_overview(t, title=f"{w.name} ({w.layout}, {w.shape[0]}×{w.shape[1]})"))


widgets.explore(show_tensor, layer=range(model.config.n_layers), tensor=PROJECTIONS)

# %% [markdown]
# The share of zeros of **all** ternary tensors, from `bitnet_lab.tools.inspect` (which decodes one
# tensor at a time, so this works on big models too). Absmean of a bell-shaped latent gives
# 25 % (uniform) to 31 % (Gaussian) to 39 % (Laplace) zeros; we expect every tensor of a real
# model inside **20–60 %**. A tensor far outside that band was not made by absmean from a
# bell-shaped latent — or was decoded with the wrong code table.

# %%
ZERO_BAND = (0.20, 0.60)
report = inspect_model(model.source, progress=False)
records = []
for row in report.tensors:
    if row.stats is None:
        continue
    parts = row.name.split(".")          # blk.<layer>.<projection>.weight
    records.append((int(parts[1]), parts[2], row.stats.zero))
viz.show(viz.zero_shares_by_tensor(records, band=ZERO_BAND,
                                   title=f"share of zero codes in every ternary tensor of {report.path.name}"))
outside = [(layer, proj, z) for layer, proj, z in records if not ZERO_BAND[0] <= z <= ZERO_BAND[1]]
print(f"{len(records)} ternary tensors; outside the band: {outside or 'none'}")

# %% [markdown]
# ## 3. Per-token int8 activations
#
# The input of every ternary projection is quantised **per token** (one scale per row,
# [numerics.md §2.1](../docs/numerics.md#21-bitnetcpp-i2_s-path)):
#
# $$s_x = \frac{127}{\max(\max_k |x_k|,\ 10^{-5})}, \qquad q_k = \operatorname{clip}\big(\operatorname{round}(x_k s_x),\,-128,\,127\big)$$
#
# The largest entry of each row maps to ±127, and every entry is off by at most half a step
# (`1/s_x`). `quantize_activations` is the package's single implementation of this rule; the
# reference model captured its own result (`attn_in.q`, …), so we can compare bit for bit.
# Then the layer itself: the exact integer product `acc = Σ q·t` and the float epilogue
# `y = acc / s_x · γ` (in that order — the order is part of the contract,
# [numerics.md §3.2](../docs/numerics.md#32-bitnetcpp-i2_s-epilogue-and-its-order)).

# %%
q, s_x, sum_q = quantize_activations(x)
tag = f"blk.{LAYER}.{QUANT_OF[TENSOR]}"
same_q = np.array_equal(q, caps[f"{tag}.q"])
same_s = np.array_equal(s_x, caps[f"{tag}.scale"])
same_sum = np.array_equal(sum_q, caps[f"{tag}.sum"])

acc = q.astype(np.int64) @ t_real.T.astype(np.int64)          # exact: |acc| ≤ 127·K fits easily
same_acc = np.array_equal(acc, caps[f"blk.{LAYER}.{TENSOR}.acc"])
y = bitlinear_epilogue(acc, s_x, gamma_real)
same_y = np.array_equal(y, caps[f"blk.{LAYER}.{TENSOR}.out"])
print(viz.table([("int8 codes q", same_q), ("scales s_x", same_s), ("code sums Σq", same_sum),
                 ("integer product acc", same_acc), ("output y (epilogue)", same_y)],
                ["numpy policy vs JAX reference", "bit-identical"]))

err_steps = q.astype(np.float32) - x * s_x[:, None]   # rounding error in steps of 1/s_x
print(f"max |q − x·s_x| = {np.abs(err_steps).max():.4f} steps (bound 0.5); "
      f"codes range {q.min()}..{q.max()}")
viz.show(viz.activation_error(err_steps, title=f"int8 rounding error of the input of {TENSOR} ({x.shape[0]} tokens)"))

# %% [markdown]
# Against a float product with the same ternary weights, int8 activations cost little:
# the error below comes from activations alone (the weights are identical on both axes).

# %%
y_float = x.astype(np.float64) @ (float(gamma_real) * t_real.T.astype(np.float64))
act_err = np.linalg.norm(y - y_float) / np.linalg.norm(y_float)
print(f"relative output error from int8 activations: {act_err:.2e}")
viz.show(viz.output_scatter(
    y_float, y, title=f"real layer {W.name}: float vs int8 activations",
    xlabel="output with float activations γ·t·x (model units)",
    ylabel="output with int8 activations acc/s_x·γ (model units)"))

# %% [markdown]
# ## 4. Rounding modes: only `.5` ties differ
#
# Implementations disagree on how to round a value exactly halfway between two integers
# ([numerics.md §2.5](../docs/numerics.md#25-rounding-modes-at-a-glance)): bitnet.cpp's first fork,
# transformers and numpy round **half to even** (2.5 → 2), later forks reportedly use C `roundf`, **half away
# from zero** (2.5 → 3). Every other value rounds the same in both. bitnet_lab makes the mode an explicit
# parameter (`round_int(x, mode)`, `quantize_activations(x, mode)`). The same question exists for
# weights — a latent weight at exactly ±γ/2 becomes 0 under half-to-even (every trainer's
# `torch.round`) but ±1 under half-away — though there it is settled once, at conversion.

# %%
viz.show(viz.rounding_modes(("half_even", "half_away"), title="the two rounding modes over x·s_x ∈ [−3, 3]"))

# %% [markdown]
# On real activations exact ties are rare — `x·s_x` would have to land exactly on `n + ½` in
# float32. So we quantise the real rows **and** one hand-made row built to contain ties: its
# largest entry is 127, so `s_x = 1` exactly and every entry is its own `x·s_x`. The two modes
# must differ exactly where `x·s_x` is a tie whose integer part is even (2.5: 2 vs 3), and
# agree everywhere else (3.5 → 4 in both).

# %%
tie_row = np.array([127.0, 2.5, 3.5, -2.5, -3.5, 0.5, -0.5, 1.5, 0.25, 100.5, -7.0, 64.5], dtype=np.float32)
rows = np.vstack([x, np.resize(tie_row, x.shape[1])[None, :]]).astype(np.float32)
s_rows = quantize_activations(rows)[1]
p = rows * s_rows[:, None]                           # formed in float32, as quantize_activations does
is_tie = np.abs(p - np.trunc(p)) == 0.5
even_tie = is_tie & (np.trunc(np.abs(p)) % 2 == 0)  # half-even rounds these toward zero, half-away away
q_even = quantize_activations(rows, "half_even")[0]
q_away = quantize_activations(rows, "half_away")[0]
differ = q_even != q_away
print(f"real rows: {int(is_tie[:-1].sum())} exact ties among {is_tie[:-1].size} activations, "
      f"{int(differ[:-1].sum())} codes differ between the modes")
print(f"hand-made row: s_x = {s_rows[-1]}, {int(is_tie[-1].sum())} ties, {int(differ[-1].sum())} codes differ "
      f"(at x = {sorted(set(rows[-1][differ[-1]].tolist()))})")

# %% [markdown]
# ## 5. Checks
#
# Each line below can fail: a change in the numerics policy, the decoder or the reference
# model that breaks one of the properties shown above stops this notebook (and CI).

# %%
# absmean on synthetic latents matches the closed-form share of zeros
for k in theory:
    assert abs(measured[k] - theory[k]) <= tol[k], (k, measured[k], theory[k])
# absmean of the stored γ·t keeps every code and shrinks γ by the share of non-zeros
assert np.array_equal(t_again, t_real)
assert abs(float(gamma_again) / gamma_predicted - 1) < 1e-5, (gamma_again, gamma_predicted)
# every ternary tensor of the model has a plausible share of zeros
assert records and not outside, outside
# numpy policy == JAX reference, bit for bit, for the activations, the integer product and y
# (the captures are the JAX reference's own, not the native engine's)
assert reference.backend == "reference" and type(reference.runner).__module__.startswith("bitnet_lab.reference")
assert same_q and same_s and same_sum and same_acc and same_y
# int8 rounding error never exceeds half a step; codes stay in the int8 range of the policy
assert np.abs(err_steps).max() <= 0.5
assert q.min() >= -128 and q.max() <= 127
# the rounding modes differ exactly on the even .5 ties, and the hand-made row has some
assert np.array_equal(differ, even_tie)
assert differ[-1].sum() > 0
print("all checks passed")
