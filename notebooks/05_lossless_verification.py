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
# # 05 · Lossless verification: the fast path against the reference, side by side
#
# BitNet inference is called **lossless** on CPU because the heart of it is integer
# arithmetic: int8 activations times ternary weights, summed exactly in int32. A fast kernel
# that computes a different integer is not "a bit less accurate" — it is wrong. This notebook
# runs the JAX reference (the judge) and the native engine (the fast path) on the same prompt
# and compares them at every level, then hands the question to `bitnet_lab.verify`, and finally
# breaks a kernel on purpose to watch the check turn red.
#
# **What you will learn**
#
# 1. what "lossless" means here, tier by tier
#    ([numerics.md §11.2](../docs/numerics.md#112-the-tiers-bitnet_lab-checks)): exact int8 codes and int32
#    accumulators; float outputs within a stated tolerance; the same greedy tokens;
# 2. how to compare two forward passes through their **captures** (every intermediate, named by
#    layer and op) — the int32 accumulators of every projection of every layer;
# 3. how close the logits of the two backends are at each generated token, and how close each
#    greedy choice was to a tie;
# 4. how `bitnet_lab.verify` checks every kernel, every BitLinear and the whole model at once,
#    and how it names the first op where two passes part;
# 5. that a kernel made deliberately wrong by **one** unit (`kernels.inject_fault`) is caught;
# 6. that "lossless" is relative to an arithmetic: the same file under llama.cpp's numerics
#    (`numerics="llama.cpp"`) and under the model's training numerics, layer by layer.
#
# The notebook ends with assertions: a broken kernel fails it (and CI).

# %% [markdown]
# ## Parameters
#
# `MODEL = None` uses the embedded default model. `N_STEPS`: greedy steps compared by hand;
# `N_VERIFY`: steps of the `verify` run; `FAULT_OP`: the kernel broken in section 5.

# %% tags=["parameters"]
MODEL = None          # None → the embedded default model; or a .gguf path, an HF folder, a Hub repo id
PROMPT = "The capital of France is"
N_STEPS = 12          # greedy steps compared by hand (section 3)
N_VERIFY = 8          # greedy steps of bitnet_lab.verify (section 4)
FAULT_OP = None       # the kernel made wrong in section 5 (one of bitnet_lab.kernels.FAULT_OPS);
                      # None → the GEMV the engine runs on this model's projections
PROFILE_TEXT = "def read_lines(path):\n    with open(path) as f:\n        return f.read().splitlines()\n"
                      # the text section 6 runs under both numerics profiles

# %%
import numpy as np

import bitnet_lab
from bitnet_lab import kernels
from bitnet_lab.notebook import viz
from bitnet_lab.tools.default_model import default_model_path
from bitnet_lab.verify import DEFAULT_TOLERANCE
from bitnet_lab.verify.locate import QUANT_TAG_OF

source = default_model_path() if MODEL is None else MODEL
reference = bitnet_lab.load(source, backend="reference")   # JAX: the judge
native = bitnet_lab.load(source, backend="native")         # C kernels + OpenMP: the fast path
cfg = native.config
PROJECTIONS = list(cfg.projection_shapes())
ids = native.tokenizer.encode(PROMPT, add_bos=True)
print(native)
print(f"prompt: {PROMPT!r} → {len(ids)} tokens; native engine on {kernels.active_isa()}, "
      f"{native.runner.threads} thread(s)")

# %% [markdown]
# ## 1. What has to agree, and how exactly
#
# | tier | compared | must be |
# |---|---|---|
# | kernel | int8 codes, scales, int32 `Σ t·q` of every kernel vs its numpy twin | bit-identical |
# | BitLinear | quantise → integer product → `(acc / s_x)·γ` vs the numpy policy | bit-identical |
# | model | logits of the whole forward pass | within a tolerance (`max|Δ|/max|logit|` ≤ 1e-4) |
# | model | greedy tokens | identical, unless the top two logits are closer than the difference |
#
# Why a tolerance at the model level? Everything around the integer product — RMSNorm,
# RoPE, softmax, the float lm_head — is float arithmetic, and a fast engine may sum in another
# order than the reference. An int8 activation landing exactly on a rounding boundary could
# then flip by one code: that is reported as *tie-limited*, not as a failure.
#
# ## 2. One prompt, every capture
#
# Both backends run the prompt from an empty cache with `capture=True`: ~36 named arrays per
# layer (names in `bitnet_lab/reference/model.py`). First the integer ones: for each layer and
# projection, the int8 codes that entered it and the int32 accumulators `Σ t·q` it produced.

# %%
n_ctx = len(ids) + N_STEPS
ref_cache, nat_cache = reference.runner.new_cache(n_ctx), native.runner.new_cache(n_ctx)
ref_logits, ref_caps = reference.runner.forward(ids, ref_cache, capture=True)
nat_logits, nat_caps = native.runner.forward(ids, nat_cache, capture=True)
ref_logits, nat_logits = np.asarray(ref_logits), np.asarray(nat_logits)

L, P = cfg.n_layers, len(PROJECTIONS)
acc_differ, acc_total = np.zeros((L, P), int), np.zeros((L, P), int)
codes_differ, acc_on_same_codes = 0, []
for i in range(L):
    for j, proj in enumerate(PROJECTIONS):
        a, b = np.asarray(ref_caps[f"blk.{i}.{proj}.acc"]), np.asarray(nat_caps[f"blk.{i}.{proj}.acc"])
        qa, qb = (np.asarray(c[f"blk.{i}.{QUANT_TAG_OF[proj]}.q"]) for c in (ref_caps, nat_caps))
        acc_differ[i, j], acc_total[i, j] = int((a != b).sum()), a.size
        same_rows = (qa == qb).all(axis=1)           # tokens whose int8 input is identical
        codes_differ += int((qa != qb).sum())
        acc_on_same_codes.append(bool(np.array_equal(a[same_rows], b[same_rows])))
print(f"int8 codes entering the projections: {codes_differ} differ; int32 accumulators: "
      f"{acc_differ.sum()} of {acc_total.sum()} differ")
viz.show(viz.agreement_grid(acc_differ, total=acc_total, projections=PROJECTIONS,
                            title=f"int32 accumulators of the prompt ({len(ids)} tokens): native vs reference"))

# %% [markdown]
# Now every capture, integers and floats: how many are bit-identical, and the largest relative
# difference of the float ones (a difference there comes from the float summation order of
# norms, attention or the lm_head, never from the ternary products).

# %%
ints_same, floats_same, worst = 0, 0, (0.0, None)
for name, a in ref_caps.items():
    a, b = np.asarray(a), np.asarray(nat_caps[name])
    if a.dtype.kind in "iu":
        ints_same += int(np.array_equal(a, b))
        continue
    if np.array_equal(a, b):
        floats_same += 1
        continue
    rel = float(np.abs(a.astype(np.float64) - b).max() / max(np.abs(a).max(), 1e-30))
    if rel > worst[0]:
        worst = (rel, name)
n_int = sum(1 for a in ref_caps.values() if np.asarray(a).dtype.kind in "iu")
print(f"{len(ref_caps)} captures: {ints_same} of {n_int} integer captures bit-identical; "
      f"{floats_same} of {len(ref_caps) - n_int} float captures bit-identical"
      + (f"; largest float difference {worst[0]:.2e} (relative) in {worst[1]}" if worst[1] else ""))

# %% [markdown]
# ## 3. Token by token
#
# Then `N_STEPS` greedy steps. Both backends are fed the **reference's** token at every step
# (teacher forcing): if the two ever chose differently, their histories would part and every
# later comparison would compare different sentences. Per step: the relative logit
# difference, both argmax tokens, and the reference's top-2 margin.

# %%
row_r, row_n = ref_logits[-1], nat_logits[-1]
steps = []
for step in range(N_STEPS):
    tok_r, tok_n = int(np.argmax(row_r)), int(np.argmax(row_n))
    top2 = np.sort(row_r)[-2:]
    d = float(np.abs(row_r.astype(np.float64) - row_n).max())
    steps.append({"step": step, "ref": tok_r, "native": tok_n, "rel": d / float(np.abs(row_r).max()),
                  "max_abs": d, "margin": float(top2[1] - top2[0])})
    if step + 1 < N_STEPS:
        row_r = np.asarray(reference.runner.forward([tok_r], ref_cache))[-1]
        row_n = np.asarray(native.runner.forward([tok_r], nat_cache))[-1]
print(viz.table([(s["step"], s["ref"], s["native"], repr(native.tokenizer.token_to_piece(s["ref"])),
                  f"{s['rel']:.2e}", f"{s['margin']:.4f}") for s in steps],
                ["step", "reference token", "native token", "piece", "max|Δ|/max|logit|", "top-2 margin"]))
viz.show(viz.step_agreement([s["rel"] for s in steps], [s["margin"] for s in steps], [s["max_abs"] for s in steps],
                            tolerance=DEFAULT_TOLERANCE, title=f"{N_STEPS} greedy steps, teacher-forced"))

# %% [markdown]
# ## 4. `bitnet_lab.verify`: all tiers at once
#
# `verify(model, n=…)` does the above and more: every kernel version on every ISA level of
# this CPU, on 1 and all threads, against its numpy twin (on the prompt's real int8 codes plus
# adversarial rows), every BitLinear against the numpy policy, and the model tier with its
# captures compared op by op so that a disagreement is named by layer and op. The report
# renders as a table here and as text in a terminal (`bitnet-lab verify`).

# %%
report = bitnet_lab.verify(native, n=N_VERIFY, prompt=PROMPT, progress=False)
viz.show_report(report)

# %% [markdown]
# ## 5. Break a kernel, watch it turn red
#
# `kernels.inject_fault(op)` makes one native kernel deliberately wrong: a product kernel (MAD
# or LUT GEMV) adds 1 to the first output of each call — one unit in one accumulator; a LUT build
# adds 1 to the entries of its first table. Any kernel the engine runs can be broken
# (`kernels.FAULT_OPS`); we pick the GEMV this model's projections actually run
# (`kernels.LAYOUT_OPS` of the layout the engine holds them in: I2_S, its x4 re-order, TQ1_0/TQ2_0,
# TQ1_0's x16 re-order, TL1 or TL2; a TL file is decoded into x4 / x16 at load where the ISA level
# has the x16 GEMV). (The switch exists for exactly this purpose; it is off by default and
# `kernels.fault_status()` shows it.) We verify again on the active ISA level with the fault on,
# then switch it off and verify once more.

# %%
layout = native.runner.packed_weight(f"blk.0.{PROJECTIONS[0]}.weight")[0]
print(f"the projections run as {layout}: the engine calls {', '.join(kernels.LAYOUT_OPS[layout])} (and quantize_act)")
if FAULT_OP is None:  # e.g. i2s_x4_gemv where the engine re-orders I2_S at load, tl2_gemv on a TL2 file held as stored
    FAULT_OP = kernels.LAYOUT_OPS[layout][0]
kernels.inject_fault(FAULT_OP)
try:
    print(f"fault injected: {kernels.fault_status()} is wrong")
    broken = bitnet_lab.verify(native, n=4, prompt=PROMPT, isas=(kernels.active_isa(),), progress=False)
finally:
    kernels.inject_fault(None)                      # never leave a kernel broken
viz.show_report(broken)
print("with the fault:   ", broken.summary()[:400], "…")
repaired = bitnet_lab.verify(native, n=4, prompt=PROMPT, isas=(kernels.active_isa(),), progress=False)
print("fault switched off:", repaired.summary()[:200], "…")
print(f"fault status now: {kernels.fault_status()}")

# %% [markdown]
# Read the red report from the top: the kernel tier names the op, version, ISA level and the
# first differing accumulator; the model tier locates the first forward where the passes part
# and the first op inside it — an int32 accumulator that differs while its int8 inputs agree,
# which can only be the product kernel (or its packed weights). One unit in one accumulator is
# enough.
#
# ## 6. Whose arithmetic? The `llama.cpp` numerics profile
#
# Everything above compares two implementations of **one** arithmetic: the model's training
# numerics (per-token absmax int8 activations, `(acc / s_x)·γ`). Upstream llama.cpp runs a
# TQ1_0/TQ2_0 file with another one: Q8_K activations (one scale per 256-element block), its own
# per-block float sums, an F16 KV cache with q and the softmax output rounded to fp16
# ([numerics.md §12](../docs/numerics.md#12-numerics-profiles)). Both backends compute either
# (`bitnet_lab.load(..., numerics="llama.cpp")`), so the question "how far does llama.cpp's
# arithmetic move this model from its training numerics?" has an answer per layer:
# `bitnet-lab verify --numerics llama.cpp --against bitnet` in a terminal,
# `compare_profiles` here. The same text, teacher-forced, under both profiles on the native
# engine; the residual stream after each layer and the logits compared.

# %%
from bitnet_lab.verify.profiles import compare_profiles

profiles = compare_profiles(source, numerics="llama.cpp", against="bitnet", prompt=PROFILE_TEXT, backend="native")
viz.show_report(profiles)

# %%
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(6, 3))
layer_ids = [x.layer for x in profiles.layers]
scale = [x.max_abs / x.rel for x in profiles.layers]  # max|h| of the bitnet profile, per layer
ax.plot(layer_ids, [x.rel for x in profiles.layers], "o-", label="max|Δh| / max|h|")
ax.plot(layer_ids, [x.mean_abs / s for x, s in zip(profiles.layers, scale)], "s--", label="mean|Δh| / max|h|")
ax.set_xlabel("layer (residual stream after it)")
ax.set_ylabel("|Δh| relative to max|h|")
ax.set_yscale("log")
ax.set_title("llama.cpp numerics against the training numerics")
ax.legend()
viz.show(fig)

# %% [markdown]
# The difference appears in layer 0 (the first Q8_K activations) and is carried and grown by
# the residual stream; on the trained default model it is a small fraction of the logit range at
# the logits, and the top-1 token agrees almost everywhere (a random dummy's logits move much
# more: an F16 cache alone does that to them). That
# is the difference between two *arithmetics*, not a bug: `verify` (section 4) holds each
# backend to its own profile, and `tests/verify/test_llamacpp_conformance.py` holds this profile
# to llama.cpp's own logits.
#
# ## 7. Checks
#
# Each assertion can fail: an accumulator that differs although its int8 input agrees, logits
# beyond the tolerance, a greedy token that differs without a near-tie, a verify report that
# is not green, a fault that goes unnoticed, a fault left switched on, or a llama.cpp profile that
# computes the training numerics (or, on the default model, moves the logits by more than a tenth of
# their range) stops this notebook.

# %%
assert all(acc_on_same_codes), "an int32 accumulator differs although its int8 input codes agree"
for s in steps:
    assert s["rel"] <= DEFAULT_TOLERANCE, s
    assert s["ref"] == s["native"] or s["margin"] <= 2 * s["max_abs"], f"greedy token differs without a tie: {s}"
assert report.passed, report.summary()
assert not broken.passed, "verify must notice a kernel that is off by one"
assert any(c.op == FAULT_OP for c in broken.kernel.failures), [c.op for c in broken.kernel.failures]
assert repaired.passed, repaired.summary()
assert kernels.fault_status() is None
assert all(x.max_abs > 0 for x in profiles.layers), "the llama.cpp profile must differ from the bitnet one"
if MODEL is None:  # the trained default model; a random dummy's logits can move much more (an F16 cache alone does)
    assert profiles.logits.max_rel < 0.1 and profiles.logits.top1_rate >= 0.9, profiles.logits.line()
print("all checks passed")
