# ---
# jupyter:
#   bitnet_lab:
#     requires:
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
# # 04 · Kernels step by step: one GEMV from scalar C to AVX2, VNNI and lookup tables
#
# Decoding one token multiplies every ternary weight matrix by one int8 activation vector: a
# GEMV, `acc[r] = Σ_k t[r, k]·q[k]`. bitnet_lab has several native implementations of it,
# numbered as in llm.c (`v0` portable C, `v1` AVX2, `v2`/`v3` AVX-512 VNNI, …) plus the TL1/TL2
# lookup-table kernels of notebook 03. This notebook walks through them in order, on one real
# layer of a model.
#
# **What you will learn**
#
# 1. which kernel versions exist, which ones this CPU can run, and why the others are skipped;
# 2. the trick every multiply-add (MAD) kernel uses — unsigned codes `c = t + 1` and a
#    correction `− Σq` — checked on real data;
# 3. why the AVX2 kernel widens its int16 accumulators every 16 blocks and not every 32 (an
#    adversarial row that overflows bitnet.cpp's interval, and our kernel surviving it);
# 4. that every version — scalar, AVX2, VNNI, LUT — gives **bit-identical** int32 results,
#    on 1 and on all threads, against the numpy reference;
# 5. how fast each one is on this CPU: a table and a plot of GOP/s per version and thread count.
#
# Validate, then time (llm.c's rule): nothing below is timed before it is checked. Everything
# calls bitnet_lab: `bitnet_lab.kernels` (the native kernels and their registry),
# `bitnet_lab.quant.mad_reference` (the numpy twins), `bitnet_lab.bench.kernel_bench` (the
# microbenchmark of `bitnet-lab bench --kernels`). Facts:
# [kernels.md §1](../docs/kernels.md#1-two-kernel-families)–[§2](../docs/kernels.md#2-i2_s-mad-kernels).

# %% [markdown]
# ## Parameters
#
# `MODEL = None` uses the embedded default model; `LAYER`/`TENSOR` choose the layer whose
# weights and activations are checked. The timing uses `BENCH_SHAPES` (M, K) — by default the
# model's own layer and the 2B-4T's FFN shape, whose 17.7 M weights make one call long enough
# to time. Figures from a notebook run are indicative (a few repeats on a machine shared with
# whatever else runs); `bitnet-lab bench --kernels` is the measurement.

# %% tags=["parameters"]
MODEL = None          # None → the embedded default model; or a .gguf path, an HF folder, a Hub repo id
LAYER = 0             # which transformer block
TENSOR = "ffn_up"     # attn_q, attn_k, attn_v, attn_output, ffn_gate, ffn_up or ffn_down
PROMPT = "The quick brown fox jumps over the lazy dog."
BENCH_SHAPES = None   # None → [the layer's (M, K), (6912, 2560)]; or a list of (M, K)
REPEAT = 5            # timed calls per kernel (at most; each row stops after BUDGET_S seconds)
BUDGET_S = 0.05

# %%
import numpy as np

import bitnet_lab
from bitnet_lab import kernels
from bitnet_lab.notebook import viz
from bitnet_lab.bench import KernelShape, kernel_bench
from bitnet_lab.tools.default_model import default_model_path
from bitnet_lab.errors import KernelError
from bitnet_lab.quant import mad_reference as ref
from bitnet_lab.quant import packing, tiling
from bitnet_lab.verify.locate import QUANT_TAG_OF

path = default_model_path() if MODEL is None else MODEL
model = bitnet_lab.load(path)
W = model.tensors[f"blk.{LAYER}.{TENSOR}.weight"]
t = W.ternary()                                     # int8 (M, K)
M, K = t.shape
ids = model.tokenizer.encode(PROMPT, add_bos=True)
_, caps = model.runner.logits(ids, capture=True)    # the native engine's intermediates
Q = np.ascontiguousarray(caps[f"blk.{LAYER}.{QUANT_TAG_OF[TENSOR]}.q"])   # int8 (T, K): every token
q = Q[-1]                                           # the last token's row: one GEMV
N_THREADS = kernels.effective_threads(None)         # the physical cores this process may use
print(model)
print(f"{W.name}: {M}×{K}; activations: {Q.shape[0]} int8 rows of K = {K}; threads: 1 and {N_THREADS}")

# %% [markdown]
# ## 1. What this CPU can run
#
# The kernels are compiled for several ISA levels; at import, `bitnet_lab.kernels` reads the
# CPU's features and keeps the levels it can run (`available_isas()`, best last). The active
# level can be forced with `BITNET_LAB_ISA=scalar|avx2|…` or, in code, `with
# kernels.use_isa("scalar"): …`. Each op has numbered versions; `version=` picks one, the
# default is the best of the active level.

# %%
print(f"ISA levels available here: {', '.join(kernels.available_isas())} (active: {kernels.active_isa()})")
print(f"CPU features: {', '.join(f for f, on in kernels.cpu_features().items() if on)}; "
      f"OpenMP: {kernels.openmp_enabled()}; physical cores: {kernels.physical_cores()}")

runnable, skipped = [], []
for version, isa, desc in kernels.kernel_versions(include_unavailable=True)["i2s_gemv"]:
    try:
        kernels.i2s_gemv(kernels.pack_i2_s(t[:1]), q, 1, K, version=version)   # probe: can it run here?
        runnable.append(("i2s_gemv", version, isa, desc))
    except KernelError as e:
        skipped.append(("i2s_gemv", version, isa, str(e)))
for v in kernels.lut_kernel_versions():
    if v["op"] not in ("tl1_gemv", "tl2_gemv"):
        continue
    if v["default_for"]:
        runnable.append((v["op"], v["version"], v["isa"], v["description"]))
    else:
        why = f"no available ISA level dispatches to it (needs {v['isa']}; available: {', '.join(kernels.available_isas())})"
        skipped.append((v["op"], v["version"], v["isa"], why))
print(viz.table(runnable, ["op", "version", "isa", "what it does"]))
print(f"\nskipped ({len(skipped)}):" if skipped else "\nskipped: none — this CPU runs every version compiled in")
for op, version, isa, why in skipped:
    print(f"  {op} {version} ({isa}): {why}")

# %% [markdown]
# ## 2. The reference, and the trick of every MAD kernel
#
# The numpy twin `i2s_gemv_ref` decodes the 2-bit codes and does an exact integer product —
# slow and obvious, the judge of every native version.
#
# The byte instructions the fast kernels use (`maddubs`, `dpbusd`) multiply an **unsigned**
# byte by a signed byte. A ternary weight is signed, so the file stores `c = t + 1 ∈ {0, 1, 2}`
# and the kernel computes `D = Σ c·q`; since `Σ (t + 1)·q = Σ t·q + Σ q`, the wanted result is
# `D − Σq` ([numerics.md §3.1](../docs/numerics.md#31-the-integer-identity)). `Σq` is computed once per token
# (`quantize_act` returns it).

# %%
packed = kernels.pack_i2_s(t)                        # canonical I2_S bytes, M·K/4
want = ref.i2s_gemv_ref(packed, q, M, K)             # int32 (M,): the judge
D = ref.raw_code_dot_ref(packed, q, M, K)            # Σ c·q with unsigned codes
sum_q = int(q.astype(np.int64).sum())
trick_ok = np.array_equal(D - sum_q, want)
engine_ok = np.array_equal(want, caps[f"blk.{LAYER}.{TENSOR}.acc"][-1])
print(f"D = Σ c·q (first rows) = {D[:4].tolist()}; Σq = {sum_q}; D − Σq = {(D - sum_q)[:4].tolist()}")
print(f"D − Σq equals the reference Σ t·q: {trick_ok}; the reference equals the engine's captured acc: {engine_ok}")

# %% [markdown]
# ## 3. v1 (AVX2) and the int16 accumulator
#
# `_mm256_maddubs_epi16` multiplies 32 byte pairs and adds neighbours into **int16** lanes. The
# kernel adds those into int16 accumulators and widens them to int32 from time to time. Per
# 128-weight block a lane can grow by at most `4 planes · 2 products · 2 · 127 = 2032`, so
# **16 blocks** (2048 weights) stay within int16 (`16 · 2032 = 32 512 ≤ 32 767`) while
# bitnet.cpp's **32 blocks** can reach 65 024 and wrap around
# ([kernels.md §2.3](../docs/kernels.md#23-the-int16-overflow-bound-and-a-safer-widening-rule)). Real rows
# rarely get there because signs cancel — an adversarial row does: every weight `+1` (code 2) against every
# activation `+127`.
#
# `mad_reference.int16_accumulator_dot` models that kernel lane by lane for any widening
# interval; below it runs a 32-block row with the two intervals, next to our native v1.

# %%
K_ADV = 32 * 128                                      # 32 blocks: bitnet.cpp's widening interval
t_adv = np.ones((4, K_ADV), dtype=np.int8)            # every code = 2
q_adv = np.full(K_ADV, 127, dtype=np.int8)
p_adv = kernels.pack_i2_s(t_adv)
exact_adv = ref.raw_code_dot_ref(p_adv, q_adv, 4, K_ADV)                   # D = 2·127·4096
model32 = ref.int16_accumulator_dot(p_adv, q_adv, 4, K_ADV, widen_every=32)
model16 = ref.int16_accumulator_dot(p_adv, q_adv, 4, K_ADV, widen_every=16)
adv_rows = [("exact D = Σ c·q", int(exact_adv[0])), ("int16 widened every 32 blocks (bitnet.cpp)", int(model32[0])),
            ("int16 widened every 16 blocks (bitnet_lab v1)", int(model16[0]))]
native_adv = {}
for _, version, isa, _ in [r for r in runnable if r[0] == "i2s_gemv"]:
    got = kernels.i2s_gemv(p_adv, q_adv, 4, K_ADV, version=version)       # Σ t·q = D − Σq
    native_adv[version] = bool(np.array_equal(got, exact_adv - int(q_adv.astype(np.int64).sum())))
print(viz.table(adv_rows, ["adversarial row (4096 weights of +1 × 127)", "D"]))
print(f"native versions exact on it: {native_adv}")

# %% [markdown]
# The VNNI versions avoid the question: `vpdpbusd` multiplies four byte pairs and accumulates
# **straight into int32** ([kernels.md §2.4](../docs/kernels.md#24-vnni-and-dot-product-instructions)). v2
# processes two 32-byte blocks (64 bytes, 256 weights) per step with four rows sharing the activations; v3
# drops the shifts that separate the four 2-bit planes of a byte — it multiplies the masked byte in place
# (`4^k · c`) and rescales the four int32 sums once at the end.
#
# ## 4. Every version against the reference, on 1 and on all threads
#
# One call per version and thread count on the real layer's GEMV, plus the batched product
# (GEMM) on all the prompt's tokens for the MAD family, and the LUT kernels on the same weights
# packed as TL1 / TL2. Every int32 must equal the reference.

# %%
tl1_t, tl2_t = tiling.default_tiling("tl1", M, K), tiling.default_tiling("tl2", M, K)
tl1_data, tl2_data = packing.pack_tl1(t, tl1_t), packing.pack_tl2(t, tl2_t)
want_gemm = ref.i2s_gemm_ref(packed, Q, M, K)        # int32 (T, M)
checks = []
for op, version, isa, desc in runnable:
    for n in sorted({1, N_THREADS}):
        if op == "i2s_gemv":
            got = kernels.i2s_gemv(packed, q, M, K, version=version, threads=n)
        elif op == "tl1_gemv":
            got = kernels.tl1_gemv(tl1_data, q, M, K, tl1_t, isa=isa, threads=n)
        else:
            got = kernels.tl2_gemv(tl2_data, q, M, K, tl2_t, isa=isa, threads=n)
        checks.append((op, version, isa, n, M, bool(np.array_equal(got, want))))
for version, isa, desc in kernels.kernel_versions()["i2s_gemm"]:
    for n in sorted({1, N_THREADS}):
        got = kernels.i2s_gemm(packed, Q, M, K, version=version, threads=n)
        checks.append(("i2s_gemm", version, isa, n, want_gemm.size, bool(np.array_equal(got, want_gemm))))
print(viz.table(checks, ["op", "version", "isa", "threads", "int32 results", "bit-identical to numpy"]))

# %% [markdown]
# ## 5. Timing
#
# `kernel_bench` times every version that passed on fresh random ternary weights of each
# shape — after checking each result once more against the exact numpy product. µs per call is
# the median of up to `REPEAT` calls (Python call overhead of a few µs included, which
# dominates the small shapes); GOP/s counts a multiply and an add as two operations. The
# packed weights of these shapes (4.4 MB for the 2B-4T FFN) usually fit in the last-level
# cache, so calls after the first read them hot: this measures the kernels' arithmetic more
# than DRAM (the table's notes say what this CPU's cache holds; notebook 07 looks at the whole
# decode step and its memory roofline).

# %%
shapes = BENCH_SHAPES if BENCH_SHAPES is not None else [(M, K), (6912, 2560)]
bench_shapes = [KernelShape(f"{m}×{k}" + (f" ({TENSOR})" if (m, k) == (M, K) else ""), m, k)
                for m, k in dict.fromkeys(tuple(s) for s in shapes)]
timed = kernel_bench(None, ops=("i2s_gemv", "tl1_gemv", "tl2_gemv"), shapes=bench_shapes,
                     threads=sorted({1, N_THREADS}), repeat=REPEAT, budget_s=BUDGET_S)
viz.show_report(timed)

# %%
largest = max(bench_shapes, key=lambda s: s.M * s.K)
recs = [r for r in timed.records if r["M"] == largest.M and r["K"] == largest.K]
viz.show(viz.throughput_by_version(
    recs, title=f"one GEMV of {largest.M}×{largest.K} ternary weights on this CPU, per kernel version"))
best = max((r for r in recs if r.get("verified")), key=lambda r: r["gop_s"])
scalar = min((r["us"] for r in recs if r.get("verified") and r["op"] == "i2s_gemv" and r["version"] == "v0"),
             default=None)
print(f"fastest: {best['op']} {best['version']} ({best['isa']}, {best['threads']} thread(s)): "
      f"{best['us']:.1f} µs/call, {best['gop_s']:.1f} GOP/s"
      + (f" — {scalar / best['us']:.0f}× the scalar v0" if scalar else ""))

# %% [markdown]
# What to look for: the jump from v0 to v1 is the SIMD width (32 bytes per instruction instead
# of one weight at a time); VNNI removes the int16 stage and the widening; v3 removes the
# shifts. The LUT kernels do fewer arithmetic operations per weight but a table lookup per
# nibble; on x86 with VNNI the MAD kernels usually win, and TL2's advantage — 17 % fewer weight
# bytes — shows only when the weights stream from DRAM
# ([kernels.md §9](../docs/kernels.md#9-published-performance-figures) for published figures). A second thread
# helps only when the machine has a free core: this notebook's figures say what happened on this run, not what
# the CPU can do (`bitnet-lab bench --kernels` repeats longer, and `--kernels-cold` evicts the weights from
# the caches before every call).

# %% [markdown]
# ## 6. Checks
#
# Each assertion can fail: a version that disagrees with numpy on the real layer, on all
# threads, on the GEMM, or on the adversarial row, a timing row the benchmark refused, or a
# missing explanation for a skipped version stops this notebook (and CI).

# %%
assert trick_ok and engine_ok
assert np.array_equal(model16, exact_adv), "16-block widening must be exact"
assert not np.array_equal(model32, exact_adv), "the adversarial row must overflow a 32-block int16 accumulator"
assert native_adv and all(native_adv.values()), native_adv
assert checks and all(ok for *_, ok in checks), [c for c in checks if not c[-1]]
assert {r[0] for r in runnable} >= {"i2s_gemv", "tl1_gemv", "tl2_gemv"}
assert all(why for *_, why in skipped)
failed = [r for r in timed.records if not r.get("verified")]
assert not failed, failed
assert all(r["gop_s"] > 0 and r["us"] > 0 for r in timed.records)
assert len(timed.records) == len(bench_shapes) * len(runnable) * len({1, N_THREADS})
print("all checks passed")
