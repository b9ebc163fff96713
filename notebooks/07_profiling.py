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
# # 07 · Profiling: where the time of a token goes, and how far it is from the hardware's limit
#
# Generating a token runs every weight matrix of the model once against one activation vector.
# Each weight is used for two operations and then not again until the next token, so decode is
# usually limited by how fast the weights can be **read**, not by arithmetic. The roofline
# model makes that precise: a step cannot take less than `bytes read / memory bandwidth`.
#
# **What you will learn**
#
# 1. this machine's ceilings: memory read bandwidth and int8 dot-product peak, measured;
# 2. how many bytes one decode step reads (per part of the model), and the tokens/s ceiling
#    that implies — the **decode roofline**;
# 3. the measured pp (prefill) and tg (decode) throughput on 1 and all threads, llama-bench's
#    protocol, and why a prompt token is much cheaper than a generated one;
# 4. where the time of one decode step goes, op by op, from timers inside the native engine;
# 5. the same model next to the baselines the benchmark knows: the JAX reference, the numpy
#    policy (one layer's BitLinears), and llama.cpp when `llama-cpp-python` is installed and can
#    read the model.
#
# **Figures from a notebook run are indicative**: few repeats, small tests, a machine shared
# with whatever else is running. `bitnet-lab bench` (the same functions, longer) is the
# measurement. Everything calls `bitnet_lab.bench`.

# %% [markdown]
# ## Parameters
#
# `MODEL = None` uses the embedded default model. `PP` / `TG`: the prompt length of the prefill
# test and the number of generated tokens of the decode test; `THREADS = None` means 1 and all
# physical cores.

# %% tags=["parameters"]
MODEL = None          # None → the embedded default model; or a .gguf path, an HF folder, a Hub repo id
PP, TG = 64, 16       # pp64: 64 prompt tokens in one call; tg16: 16 tokens one at a time
REPEAT = 3            # timed runs per test (llama-bench uses 5)
THREADS = None        # None → (1, all physical cores); or e.g. (1, 2, 4)
POSITION = 32         # cache position of the profiled decode step
BANDWIDTH_MIB = 256   # buffer of the DRAM bandwidth test (raised to 4× the last-level cache)

# %%
import time

import numpy as np

import bitnet_lab
from bitnet_lab import bench, kernels
from bitnet_lab.notebook import viz
from bitnet_lab.bench.compare import llama_cpp_available
from bitnet_lab.bench.machine import llc_bytes
from bitnet_lab.tools.default_model import default_model_path
from bitnet_lab.errors import BitnetLabError
from bitnet_lab.tensors import TernaryWeight
from bitnet_lab.verify.tiers import numpy_bitlinear

source = default_model_path() if MODEL is None else MODEL
model = bitnet_lab.load(source)
cfg = model.config
N = kernels.effective_threads(None)
threads = sorted({1, N}) if THREADS is None else sorted(set(THREADS))
print(model)
print(bench.machine_header(bench.machine_info()))

# %% [markdown]
# ## 1. The machine's ceilings
#
# Two numbers bound every kernel: how many bytes per second the cores can read from memory
# (a SIMD loop summing a buffer much larger than the last-level cache), and how many int8
# multiply-adds per second they can do (a register-only loop of the best dot-product
# instruction). Both kernels check their own results against numpy before reporting. The
# `read + N FMA/64 B` rows stream the same buffer while every core also does N vector
# multiply-adds per 64 bytes: decode does almost no arithmetic per weight byte, but a batch of
# rows or a speculative verification pass does, and on a core that does not overlap the two
# those passes stream slower than the plain read rate.

# %%
llc = llc_bytes()
ceilings = bench.machine_ceilings(threads, nbytes=max(BANDWIDTH_MIB << 20, 4 * (llc or 0)), repeat=REPEAT,
                                  dot_seconds=0.02)
viz.show_report(ceilings)

# %% [markdown]
# ## 2. The decode roofline
#
# What one decode step must read: every ternary projection as stored (2 bits per weight for
# I2_S), the lm_head (here the tied embedding, in its float type), one embedding row, the norm
# weights — plus the KV cache, which grows with the position. Divided into the bandwidth, it
# gives the tokens/s no implementation can beat **when the weights come from DRAM**.
#
# A small model fits in the last-level cache: after the first token its weights are read from
# cache, not DRAM. Then the bound is the speed of reading that many bytes *hot*, so we measure
# that too, with a buffer of exactly the model's size — an estimate rather than a hard bound:
# how fast cache-resident bytes stream depends on the access pattern and prefetching, and the
# engine's decode can beat the plain read kernel there.

# %%
roof = bench.decode_roofline(model, ceilings.bandwidth(max(threads)))
viz.show_report(roof)
in_cache = llc is not None and roof.bytes_per_token <= llc
hot = {t: bench.memory_bandwidth(t, nbytes=roof.bytes_per_token, repeat=REPEAT) for t in threads} if in_cache else {}


def ceiling_tps(t):
    """The tokens/s bound for ``t`` threads: DRAM bandwidth, or hot-cache bandwidth when the
    model fits in the cache (the best measured with at most ``t`` threads)."""
    bw = (max(c.best for n, c in hot.items() if n <= t) if in_cache else ceilings.bandwidth(t))
    return bw * 1e9 / roof.bytes_per_token


print(f"{roof.bytes_per_token / 2**20:.2f} MiB read per token; last-level cache {llc / 2**20 if llc else float('nan'):.0f} MiB "
      f"→ {'fits: the cache-resident bound applies' if in_cache else 'does not fit: the DRAM bound applies'}")
print(viz.table([(t, f"{ceilings.bandwidth(t):.1f}", f"{ceilings.bandwidth(t) * 1e9 / roof.bytes_per_token:.1f}",
                  f"{hot[t].best:.1f}" if in_cache else "-", f"{ceiling_tps(t):.1f}") for t in threads],
                ["threads", "DRAM GB/s", "DRAM roofline t/s", "hot GB/s (model-sized buffer)", "bound used here (t/s)"]))

# %% [markdown]
# ## 3. Prefill and decode, on 1 and all threads
#
# llama-bench's two tests (ggml-org/llama.cpp `tools/llama-bench`): **pp N** feeds N prompt
# tokens in one call; **tg N** generates N tokens one at a time. Token ids are random, one
# warm-up run is not counted, t/s is the mean ± standard deviation over the runs.

# %%
native = bench.bench(model, pp=(PP,), tg=(TG,), threads=threads, repeat=REPEAT, backend="native", ceilings=ceilings)
viz.show_report(native)
rows = {(r.backend, r.threads, r.test): r for r in native.rows}
per_token = [(t, f"{1e3 / rows[('native', t, f'pp{PP}')].avg_ts:.3f}", f"{1e3 / rows[('native', t, f'tg{TG}')].avg_ts:.3f}",
              f"{rows[('native', t, f'pp{PP}')].avg_ts / rows[('native', t, f'tg{TG}')].avg_ts:.1f}×")
             for t in threads]
print(viz.table(per_token, ["threads", f"ms per prompt token (pp{PP})", f"ms per generated token (tg{TG})",
                            "prefill advantage"]))

# %% [markdown]
# Why is a prompt token so much cheaper? In prefill all `PP` tokens go through each weight
# matrix together (the GEMM kernels): the weights are read and decoded **once** for the whole
# batch. In decode each token reads every weight again for two operations. Prefill is bound by
# arithmetic, decode by memory — the roofline below shows both.
#
# ## 4. Where the time of one decode step goes
#
# The native engine can time its own phases from inside the C forward pass (one clock read
# per phase boundary): embedding, norms, activation quantisation, the q/k/v, output, gate/up
# and down projections, attention, the activation function, residuals, the lm_head, and
# `sync` — time a thread spent waiting for the others at a barrier (load imbalance, or a
# thread that the operating system descheduled on a busy machine). Next to the wall time the
# engine records the CPU time of each phase (the time the thread really ran): a wall-clock
# `sync` far above its CPU time means a thread was waiting for a partner that had lost its core
# to another process.

# %%
variants = {t: bitnet_lab.load(source, threads=t) for t in threads}   # same file, one engine per thread count
profiles = {}
if hasattr(variants[threads[0]].runner, "profile_decode"):
    for t, m in variants.items():
        profiles[t] = m.runner.profile_decode(position=POSITION, steps=max(5, REPEAT))
        print(profiles[t], "\n")
    bars = {}
    for t, p in profiles.items():
        bars[f"{t} thread(s): wall time of thread 0"] = p.ops_ms
        if getattr(p, "ops_cpu_ms", None):          # the time thread 0 actually ran (engines that record it)
            bars[f"{t} thread(s): CPU time of thread 0"] = p.ops_cpu_ms
    viz.show(viz.op_breakdown(bars, title=f"one decode step at position {POSITION}, per op (native engine timers)"))
else:  # an engine without its own timers: the benchmark's estimate from differences of whole-step times
    breakdown = bench.decode_breakdown(model, position=POSITION, repeat=max(5, REPEAT))
    viz.show_report(breakdown)

# %% [markdown]
# For a model whose lm_head is large compared with its layers the lm_head is the biggest of the
# compute ops: the default model's tied lm_head (4096 tokens × 256, F16: 2 MiB) holds more bytes
# than its 42 ternary projections together (4.7 M weights, 1.2 MB). (On a model this small, with
# more than one thread, waiting at the barriers between ops — `sync` — can cost more still.) It stays large in real BitNets: the
# official 2B-4T GGUF keeps its tied lm_head in F16 (128 256 × 2560, 656 MB,
# [formats.md §6](../docs/formats.md#6-tensor-names-and-shapes-per-model-family)), more bytes than all its
# 2-bit projections together (2.08 G weights, 521 MB) — section 2's table shows the split for any model.
#
# **Thread results are identical.** More threads split the rows of every matrix, but every
# output is computed in one canonical order, so the logits do not depend on the thread count —
# checked here bit for bit on a prompt and one decode step:

# %%
ids = np.random.default_rng(0).integers(0, cfg.vocab, 12).astype(np.int32)
logits_by_threads = {}
for t, m in variants.items():
    cache = m.runner.new_cache(16)
    prompt_logits = np.asarray(m.runner.forward(ids[:-1], cache))
    step_logits = np.asarray(m.runner.forward(ids[-1:], cache))
    logits_by_threads[t] = (prompt_logits, step_logits)
base = logits_by_threads[threads[0]]
threads_identical = all(np.array_equal(a, b) for t in threads for a, b in zip(logits_by_threads[t], base))
print(f"logits of {len(ids) - 1} prompt tokens and one decode step, threads {threads}: bit-identical: {threads_identical}")

# %% [markdown]
# ## 5. The roofline picture
#
# Operational intensity = operations per byte read. One token does about two operations per
# weight (ternary projections and lm_head) and reads the bytes counted in section 2: a decode
# step sits far left, where the bandwidth line is the limit. A prefill of `PP` tokens reads the
# weights once and does `PP` times the work: it moves right, towards the compute peak.

# %%
n_ternary = sum(int(np.prod(w.shape)) for w in model.tensors.values() if isinstance(w, TernaryWeight))
ops_per_token = 2 * (n_ternary + cfg.vocab * cfg.hidden)        # multiply + add per weight, projections + lm_head
best_t = max(threads, key=lambda t: rows[("native", t, f"tg{TG}")].avg_ts)
tg_ts, pp_ts = rows[("native", best_t, f"tg{TG}")].avg_ts, rows[("native", best_t, f"pp{PP}")].avg_ts
points = {f"decode (tg{TG}, {best_t} thread(s))": (ops_per_token / roof.bytes_per_token, ops_per_token * tg_ts / 1e9),
          f"prefill (pp{PP}, {best_t} thread(s))": (PP * ops_per_token / roof.bytes_per_token, ops_per_token * pp_ts / 1e9)}
bandwidths = {f"DRAM read, {best_t} thread(s)": ceilings.bandwidth(best_t)}
if in_cache:
    bandwidths[f"hot read of a model-sized buffer, {best_t} thread(s)"] = max(c.best for n, c in hot.items() if n <= best_t)
viz.show(viz.roofline(bandwidths, ceilings.int8_peak(best_t), points,
                      title=f"roofline of {model.source.name} on this CPU"))
print(f"{ops_per_token / 1e6:.1f} M operations and {roof.bytes_per_token / 2**20:.2f} MiB per token; "
      f"decode reaches {100 * tg_ts / ceiling_tps(best_t):.0f} % of its bound ({ceiling_tps(best_t):.0f} t/s)")

# %% [markdown]
# ## 6. Baselines
#
# **The JAX reference** runs the same tensors with the same numerics (it is the judge of
# notebook 05), compiled by XLA, threads chosen by XLA.

# %%
reference = bench.bench(model, pp=(PP,), tg=(TG,), repeat=REPEAT, backend="reference")
viz.show_report(reference)

# %% [markdown]
# **numpy.** The benchmark has no numpy forward pass; the numpy baseline is the BitLinear
# policy itself (`quantize_activations` → exact integer product → `(acc / s_x)·γ`, the function
# `bitnet_lab.verify` holds the engine against), timed against the engine's `bitlinear` on the
# seven projections of layer 0, one token row each. Both must give the same floats, bit for bit.

# %%
rng = np.random.default_rng(1)
shapes = cfg.projection_shapes()
numpy_rows, same_y = [], []
for proj, (M, K) in shapes.items():
    w = model.tensors[f"blk.0.{proj}.weight"]
    t_codes, gamma = w.ternary(), w.gamma()            # decoded once, outside the timing
    x = rng.standard_normal((1, K)).astype(np.float32)
    y_np, _ = numpy_bitlinear(x, t_codes, gamma, "half_even")
    y_nat = variants[best_t].runner.bitlinear(f"blk.0.{proj}", x)
    same_y.append(bool(np.array_equal(y_np, y_nat)))
    times = {}
    for who, fn in (("numpy", lambda x=x, t=t_codes, g=gamma: numpy_bitlinear(x, t, g, "half_even")),
                    ("native", lambda x=x, p=proj: variants[best_t].runner.bitlinear(f"blk.0.{p}", x))):
        fn()
        ts = []
        for _ in range(max(5, REPEAT)):
            t0 = time.perf_counter_ns()
            fn()
            ts.append(time.perf_counter_ns() - t0)
        times[who] = min(ts) / 1e3                      # µs, fastest run
    numpy_rows.append((proj, f"{M}×{K}", f"{times['numpy']:.1f}", f"{times['native']:.1f}",
                       f"{times['numpy'] / times['native']:.1f}×", same_y[-1]))
print(viz.table(numpy_rows, ["layer 0 projection", "M×K", "numpy µs", "native µs", "native speed-up", "same floats"]))

# %% [markdown]
# **llama.cpp** (through `llama-cpp-python`, in this process, with the same protocol). Upstream
# llama.cpp reads TQ1_0 / TQ2_0 / F16 / F32 files of the `bitnet` architecture (1bitLLM style);
# it does not read bitnet.cpp's I2_S / TL layouts, nor the `bitnet-b1.58` architecture of the
# 2B-4T family (and of the default model) — then the reason is printed and no figure is made
# up. For an I2_S or TL model we also try a TQ2_0 copy of the same weights, so that both
# engines can run the same file.

# %%
llama_rows, workspace = None, None
if not llama_cpp_available():
    print("llama-cpp-python is not installed (pip install 'bitnet_lab[llamacpp]'): no llama.cpp rows")
elif model.file_format != "gguf":
    print(f"llama.cpp reads GGUF files; {model.source.name} is a {model.file_format} checkpoint: no llama.cpp rows")
else:
    candidates = [model.source]
    layouts = {w.layout for w in model.ternary_weights().values()}
    if layouts - {"tq1_0", "tq2_0"}:                    # I2_S / TL: also a TQ2_0 copy of the same weights
        import tempfile

        from bitnet_lab.formats.gguf import GGUFFile
        from bitnet_lab.formats.gguf_writer import write_gguf
        from bitnet_lab.quant import packing

        workspace = tempfile.TemporaryDirectory(prefix="bitnet_lab_nb07_", ignore_cleanup_errors=True)
        gf = GGUFFile(model.source)
        tensors = {}
        for name, w in model.tensors.items():
            if isinstance(w, TernaryWeight):
                codes = w.ternary()
                d = packing.tq_default_block_scales(codes, w.gamma())   # fp16(γ) in every block
                w = TernaryWeight(name, "tq2_0", w.shape, packing.pack_tq2_0(codes, d), block_scales=d)
            tensors[name] = w
        meta = {k: v for k, v in gf.metadata.items() if k != "bitnet_lab.tl_tiling"}
        meta["general.file_type"] = 37                   # TQ2_0 (docs/formats.md#23-llama-file-types)
        candidates.append(write_gguf(f"{workspace.name}/{model.source.stem}-tq2_0.gguf", meta, tensors,
                                     metadata_types=gf.metadata_types))
    for path in candidates:
        try:
            llama_rows = bench.compare_llama_cpp(path, pp=(PP,), tg=(TG,), threads=threads, repeat=REPEAT)
        except BitnetLabError as e:
            print(f"llama.cpp cannot run {path.name} (architecture {cfg.arch!r}): {str(e).split('. Upstream')[0]}")
            continue
        same_file = bench.bench(bitnet_lab.load(path), pp=(PP,), tg=(TG,), threads=threads, repeat=REPEAT)
        llama_rows = llama_rows + same_file
        viz.show_report(llama_rows)
        break

# %%
everything = native + reference + (llama_rows if llama_rows is not None else bench.BenchTable([]))
viz.show(viz.throughput_bars(everything.records(), title=f"{model.source.name}: every backend this run could measure"))

# %% [markdown]
# ## 7. Checks
#
# Measured properties, each of which can fail: decode throughput positive and below the
# roofline bound computed in section 2, a prompt token cheaper than a generated one, logits
# identical for every thread count, the numpy policy and the engine agreeing bit for bit, and
# a profile whose parts add up to the step.

# %%
for t in threads:
    tg, pp = rows[("native", t, f"tg{TG}")], rows[("native", t, f"pp{PP}")]
    assert tg.avg_ts > 0
    if not in_cache:  # from DRAM the roofline is a hard bound (a hot-cache read is only an estimate)
        assert tg.avg_ts < ceiling_tps(t), (t, tg.avg_ts, ceiling_tps(t))
    assert 1 / pp.avg_ts < 1 / tg.avg_ts, f"{t} threads: a prompt token must cost less than a generated one"
assert threads_identical, "the logits must not depend on the thread count"
assert all(same_y), "numpy policy and native bitlinear must agree bit for bit"
assert all(r.avg_ts > 0 for r in reference.rows)
for p in profiles.values():
    assert abs(sum(p.ops_ms.values()) - p.region_ms) <= 1e-6 * max(1.0, p.region_ms)
    assert 0 < p.region_ms <= p.step_ms
if workspace is not None:
    workspace.cleanup()                       # the TQ2_0 copy of section 6
print("all checks passed")
