# ---
# jupyter:
#   bitnet_lab:
#     requires:
#     - jax
#     - matplotlib
#     - safetensors
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
# # 08 · Weight distributions: a model's statistics on one page
#
# A ternary model file is mostly codes and scales. Their statistics say a lot: a layer whose
# share of zeros is far from its neighbours', a scale γ that jumps, a projection whose +1 and
# −1 codes are out of balance, activations whose range grows layer after layer. This notebook
# computes them for every tensor of a model and puts them on one dashboard.
#
# **What you will learn**
#
# 1. how `bitnet_lab.tools.inspect` reads every ternary tensor (one at a time, so big models work)
#    and what `ternary_stats` reports: the share of −1 / 0 / +1 codes and the scale γ;
# 2. how the shares and scales vary by layer and projection (heatmaps);
# 3. what the **latent** (float) weights of a Hugging Face checkpoint look like next to their
#    codes — with a latent checkpoint written from this model, and absmean giving back the
#    file's codes and γ bit for bit;
# 4. the range of the activations that enter each int8 quantisation, captured from the JAX
#    reference on a prompt, layer by layer;
# 5. all of it as a compact dashboard, with checks that the numbers are consistent.
#
# Everything calls bitnet_lab: `bitnet_lab.tools.inspect.inspect_model` / `ternary_stats`,
# `bitnet_lab.load` (GGUF files and Hugging Face checkpoints alike),
# `bitnet_lab.formats.hf.write_hf_checkpoint`, the reference model's captures.

# %% [markdown]
# ## Parameters
#
# `MODEL = None` uses the embedded default model (a 5.8 M-parameter BitNet b1.58 model this
# project trained on the CPython standard library: `data/MODEL_CARD.md`). Point it at a `.gguf`, a Hugging Face folder or a Hub repo id to study a real
# model; a Hugging Face checkpoint with latent float weights shows its own latents in
# section 3.

# %% tags=["parameters"]
MODEL = None          # None → the embedded default model; or a .gguf path, an HF folder, a Hub repo id
PROMPT = "The quick brown fox jumps over the lazy dog. It was a sunny day in the park."
LATENT_DEMO_MAX_PARAMS = 100_000_000   # write a latent demo checkpoint only for models up to this size

# %%
import tempfile
from pathlib import Path

import numpy as np
from safetensors import safe_open

import bitnet_lab
from bitnet_lab.notebook import viz
from bitnet_lab.notebook import widgets
from bitnet_lab.tools.default_model import default_model_path
from bitnet_lab.formats.hf import write_hf_checkpoint
from bitnet_lab.formats.names import hf_to_gguf
from bitnet_lab.tools.inspect import inspect_model, ternary_stats
from bitnet_lab.quant import absmean_ternarize
from bitnet_lab.verify.locate import quant_inputs

source = default_model_path() if MODEL is None else MODEL
model = bitnet_lab.load(source)
cfg = model.config
PROJECTIONS = list(cfg.projection_shapes())
print(model)

# %% [markdown]
# ## 1. Every ternary tensor, decoded once
#
# `inspect_model` reads the file's table of tensors and decodes each ternary tensor to count
# its codes (for a Hugging Face folder it goes through `bitnet_lab.load`). One row per tensor:
# the shares of −1, 0 and +1 (they sum to 1) and the scale γ — the per-tensor absmean scale
# (TQ files: the common block scale when all agree).

# %%
report = inspect_model(model.source, progress=False)
rows = {r.name: r for r in report.tensors if r.stats is not None}
L, P = cfg.n_layers, len(PROJECTIONS)
neg, zero, pos, gamma = (np.full((L, P), np.nan) for _ in range(4))
for i in range(L):
    for j, proj in enumerate(PROJECTIONS):
        st = rows[f"blk.{i}.{proj}.weight"].stats
        neg[i, j], zero[i, j], pos[i, j], gamma[i, j] = st.neg, st.zero, st.pos, st.scale
print(f"{report.path.name}: {len(rows)} ternary tensors ({L} layers × {P} projections), "
      f"{report.n_params / 1e6:.1f} M parameters")
print(viz.table([(proj, f"{100 * zero[:, j].min():.1f}–{100 * zero[:, j].max():.1f} %",
                  f"{gamma[:, j].min():.4g}–{gamma[:, j].max():.4g}",
                  f"{100 * (pos - neg)[:, j].mean():+.2f} pp") for j, proj in enumerate(PROJECTIONS)],
                ["projection", "zero share (min–max over layers)", "γ (min–max)", "mean sign balance"]))

# %% [markdown]
# What to expect: absmean of a bell-shaped latent matrix zeroes 25–40 % of the weights
# (notebook 01); a trained layer's codes are nearly symmetric (+1 and −1 within a percentage
# point or two), and γ differs between projections because each saw differently scaled inputs
# during training. The default model was trained (ternary quantisation-aware training), so its
# statistics are a real, if tiny, model's.
#
# ## 2. Activation ranges, captured from the reference
#
# Every BitLinear quantises its input per token to int8 with the scale `127 / max|x|`. Four
# quantisation points per layer feed the seven projections (q/k/v share one, gate/up share
# one). We run the prompt through the JAX reference with `capture=True` and read, per layer and
# point, the float input (its `max |x|` over the prompt) and the int8 codes it became.

# %%
reference = bitnet_lab.load(source, backend="reference")   # the judge: the same tensors, JAX arithmetic
ids = reference.tokenizer.encode(PROMPT, add_bos=True)
_, caps = reference.runner.logits(ids, capture=True)
inputs_of = quant_inputs(cfg.sub_norms)        # quantisation point -> the capture holding its float input
act_max = {pt: np.array([np.abs(caps[f"blk.{i}.{src}"]).max() for i in range(L)]) for pt, src in inputs_of.items()}
code_zero = {pt: np.mean([np.mean(caps[f"blk.{i}.{pt}.q"] == 0) for i in range(L)]) for pt in inputs_of}
print(viz.table([(pt, src, f"{act_max[pt].min():.3g}–{act_max[pt].max():.3g}", f"{100 * code_zero[pt]:.1f} %")
                 for pt, src in inputs_of.items()],
                ["quantisation point", "its float input", "max |x| per layer (min–max)", "int8 codes equal to 0"]))

# %% [markdown]
# The input of `ffn_down` comes out of the gated activation (`relu(g)²·u` in the 2B-4T family,
# `silu(g)·u` in others), then its sub-norm: its range is wider than the normed inputs of the
# other points, and with ReLU² gating many of its int8 codes are exactly zero — the table shows
# how many for this model and prompt.
#
# ## 3. The dashboard

# %%
viz.show(viz.weight_dashboard(zero, gamma, pos - neg, projections=PROJECTIONS, activations=act_max,
                              title=f"{report.path.name}: ternary codes, scales and activation ranges"))

# %% [markdown]
# ## 4. Latent weights
#
# GGUF files store only codes and γ. A Hugging Face checkpoint may store the **latent** float
# weights instead; `bitnet_lab.load` then ternarises them with absmean on the fly. If `MODEL`
# is such a checkpoint we look at its own latents. Otherwise (and if the model is small) we
# write one: `write_hf_checkpoint(..., convention="latent")` builds float weights whose absmean
# gives back exactly this model's codes and γ.
#
# **Read the histograms with that in mind.** A trained latent matrix is bell-shaped. The
# written demo is a construction, not training: every zero code becomes `0` or `±γ/4`, every
# non-zero code a power of two times `±γ`, chosen so that `mean|W| = γ` exactly — spikes, not
# a bell. What the demo does show is the round trip: the checkpoint loads back to the same
# codes and the same γ, bit for bit. The demo checkpoint lives in a temporary folder for as long
# as this kernel runs (the explorer below reads from it whenever you move a control), and is
# removed when the kernel shuts down.

# %%
latent_dir, workspace = None, None
if model.file_format == "safetensors" and model.metadata.get("weights") in ("latent", "mixed"):
    latent_dir, latent_origin = model.source, "the model's own checkpoint"
elif model.n_params <= LATENT_DEMO_MAX_PARAMS:
    workspace = tempfile.TemporaryDirectory(prefix="bitnet_lab_nb08_", ignore_cleanup_errors=True)
    latent_dir = write_hf_checkpoint(workspace.name, cfg, model.tensors, convention="latent")
    latent_origin = "a demo checkpoint written from this model (constructed latents)"
if latent_dir is None:
    print(f"no latent weights: {model.file_format} file, {model.n_params / 1e6:.0f} M parameters "
          f"> LATENT_DEMO_MAX_PARAMS; raise it (the demo writes float32 weights) or load an HF checkpoint")
else:
    latent_model = bitnet_lab.load(latent_dir)
    latent_files = {}                            # GGUF name -> (shard, HF name) of every float projection
    for shard in sorted(Path(latent_dir).glob("*.safetensors")):
        with safe_open(shard, framework="numpy") as f:
            for hf_name in f.keys():
                g = hf_to_gguf(hf_name)
                if g is not None and g in model.ternary_weights():
                    latent_files[g] = (shard, hf_name)
    same = [bool(np.array_equal(latent_model.tensors[g].ternary(), model.tensors[g].ternary())
                 and latent_model.tensors[g].gamma() == model.tensors[g].gamma()) for g in latent_files]
    print(f"{latent_origin}: {latent_dir}")
    print(f"{len(latent_files)} latent projections; loaded back to the same codes and γ: {sum(same)} of {len(same)}")


def read_latent(name):
    shard, hf_name = latent_files[name]
    with safe_open(shard, framework="numpy") as f:
        return f.get_tensor(hf_name).astype(np.float32)


def show_latent(layer, tensor):
    name = f"blk.{layer}.{tensor}.weight"
    w = read_latent(name)
    _, g_back = absmean_ternarize(w)
    print(f"{name}: latent {w.shape[0]}×{w.shape[1]}, mean|W| = {np.abs(w).mean(dtype=np.float64):.6g}; "
          f"absmean → γ = {g_back:.6g} (file: {model.tensors[name].gamma():.6g})")
    viz.show(viz.latent_histogram(w, g_back, title=f"latent weights of {name}"))


if latent_dir is not None:
    widgets.explore(show_latent, layer=range(L), tensor=PROJECTIONS)

# %% [markdown]
# ## 5. Checks
#
# Each assertion can fail: statistics that do not sum to one, an inspector that disagrees with
# decoding the loaded tensors, a latent checkpoint that does not load back to the file's codes,
# or an int8 quantisation whose largest code is not ±127 stops this notebook (and CI).

# %%
assert len(rows) == L * P and not np.isnan(zero).any()
assert np.allclose(neg + zero + pos, 1.0, rtol=0, atol=1e-12)
for name, r in rows.items():                    # the inspector equals decoding the loaded tensor
    st = ternary_stats(model.tensors[name])
    assert (st.neg, st.zero, st.pos, st.scale) == (r.stats.neg, r.stats.zero, r.stats.pos, r.stats.scale), name
assert ((zero > 0) & (zero < 1)).all() and (gamma > 0).all()
for pt in inputs_of:                            # absmax quantisation: every non-zero row reaches ±127
    for i in range(L):
        q = caps[f"blk.{i}.{pt}.q"]
        x = caps[f"blk.{i}.{inputs_of[pt]}"]
        live = np.abs(x).max(axis=1) >= 1e-5
        assert (np.abs(q[live].astype(np.int16)).max(axis=1) == 127).all(), (i, pt)
if latent_dir is not None:
    assert same and all(same), "the latent checkpoint must load back to the file's codes and γ"
    w0 = read_latent(f"blk.0.{PROJECTIONS[0]}.weight")
    assert absmean_ternarize(w0)[1] == model.tensors[f"blk.0.{PROJECTIONS[0]}.weight"].gamma()
if latent_dir is not None:                      # the explorer above still reads its checkpoint
    assert all(shard.is_file() for shard, _ in latent_files.values()), "the latent checkpoint must outlive Run All"
print("all checks passed")
