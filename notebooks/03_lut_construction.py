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
# # 03 · Lookup tables: how TL1 and TL2 replace multiplications by table reads
#
# A ternary weight is −1, 0 or +1, so a *group* of `g` weights can only take `3^g` patterns.
# The LUT kernels of bitnet.cpp (TL1 for ARM, TL2 for x86) exploit that: for every group of
# `g` activations they compute, **once per token**, the dot product with every possible weight
# pattern, store these few numbers in a small table, and then replace the weights by table
# *indices*. A matrix–vector product becomes: read an index, look the partial sum up, add.
#
# **What you will learn**
#
# 1. how TL1 builds a 16-entry table for each **pair** of int8 activations (9 patterns, 7
#    padding entries) — in numpy, entry by entry;
# 2. how TL2 folds the 27 patterns of a **triple** into 14 stored entries plus a **sign bit**,
#    and why three weights (not two, not four) is the sweet spot of a 16-entry table;
# 3. why the tables are stored as two 16-byte **byte planes**, and that the native kernel builds
#    exactly the same bytes as numpy, on every ISA level of this CPU;
# 4. that a whole GEMV through the tables (numpy twin and native kernel) gives the exact integer
#    product — the same int32 accumulators the engine's multiply-add path computes;
# 5. what each layout costs in **memory traffic per weight** compared with I2_S.
#
# Everything calls bitnet_lab's own code: the tables come from `bitnet_lab.quant.lut`
# (`build_tl1_lut`, `build_tl2_lut`, `lut_byte_planes`, `tl1_gemv_ref`, `tl2_gemv_ref`), the
# native ones from `bitnet_lab.kernels` (`tl1_build_lut`, `tl2_build_lut`, `tl1_gemv`,
# `tl2_gemv`), the tilings from `bitnet_lab.quant.tiling`. The facts are in
# [kernels.md §3](../docs/kernels.md#3-tl1-arm-neon-lut)–[§5](../docs/kernels.md#5-tiling-parameters-and-code-generation)
# and [formats.md §3.2](../docs/formats.md#32-tl1-type-38)–[§3.3](../docs/formats.md#33-tl2-type-39).

# %% [markdown]
# ## Parameters
#
# `MODEL = None` uses the embedded default model. `LAYER` / `TENSOR` choose the real layer whose
# weights and activations are used; `TOKEN` picks the activation row (one token of `PROMPT`).

# %% tags=["parameters"]
MODEL = None          # None → the embedded default model; or a .gguf path, an HF folder, a Hub repo id
LAYER = 0             # which transformer block
TENSOR = "ffn_up"     # attn_q, attn_k, attn_v, attn_output, ffn_gate, ffn_up or ffn_down
PROMPT = "The quick brown fox jumps over the lazy dog."
TOKEN = -1            # which token's activation row (index into the prompt's tokens)

# %%
import itertools
from fractions import Fraction

import numpy as np

import bitnet_lab
from bitnet_lab import kernels
from bitnet_lab.notebook import viz
from bitnet_lab.tools.default_model import default_model_path
from bitnet_lab.quant import lut, packing, tiling
from bitnet_lab.verify.locate import QUANT_TAG_OF

path = default_model_path() if MODEL is None else MODEL
model = bitnet_lab.load(path)            # native backend: the engine also captures intermediates
print(model)

W = model.tensors[f"blk.{LAYER}.{TENSOR}.weight"]
t = W.ternary()                          # int8 (M, K) in {−1, 0, +1}
M, K = t.shape
print(W)

# %% [markdown]
# ## 0. One real activation row
#
# The LUT kernels start from the same int8 activations as every other kernel: the input of the
# projection, quantised per token (`q = round(x · 127 / max|x|)`,
# [numerics.md §2.1](../docs/numerics.md#21-bitnetcpp-i2_s-path)). We run the prompt once through the native
# engine with `capture=True` and take the int8 codes that fed `TENSOR`, and the int32 accumulators `Σ t·q` the
# engine's multiply-add kernel computed for it — section 4 compares the LUT result against them.

# %%
ids = model.tokenizer.encode(PROMPT, add_bos=True)
_, caps = model.runner.logits(ids, capture=True)
tag = QUANT_TAG_OF[TENSOR]                              # e.g. ffn_up reads the "ffn_in" codes
q = np.ascontiguousarray(caps[f"blk.{LAYER}.{tag}.q"][TOKEN])   # int8 (K,)
acc_engine = caps[f"blk.{LAYER}.{TENSOR}.acc"][TOKEN]           # int32 (M,), the engine's Σ t·q
print(f"{len(ids)} tokens; token {TOKEN % len(ids)} of blk.{LAYER}.{tag}.q: K = {q.size} int8 codes, "
      f"range {q.min()}..{q.max()}; first eight: {q[:8].tolist()}")

# %% [markdown]
# ## 1. TL1: one table per pair of activations
#
# Take the first two activations `(b0, b1) = (q[0], q[1])`. Two ternary weights `(t0, t1)` can
# form 3 × 3 = 9 patterns, so their contribution `t0·b0 + t1·b1` can only take 9 values. TL1
# computes all nine once and stores them at index `u = 3·t0 + t1 + 4` (0..8); the weight file
# then stores `u` (a 4-bit nibble) instead of the two weights. A 4-bit index addresses 16
# entries: 9..15 are padding (0) — they are never read by a valid file.
#
# `build_tl1_lut(q)` builds the table of every pair at once: int16 `(K/2, 16)`.

# %%
tl1_tables = lut.build_tl1_lut(q)                   # int16 (K/2, 16)
b0, b1 = int(q[0]), int(q[1])
labels, kinds = [], []
for u in range(lut.LUT_ENTRIES):
    if u <= lut.TL1_MAX_INDEX:
        d0, d1 = (int(v) for v in lut.TL1_DIGITS[u])
        labels.append(f"{u}\n({d0:+d},{d1:+d})")
        kinds.append("stored entry t0·b0 + t1·b1")
    else:
        labels.append(f"{u}\npad")
        kinds.append("padding (never indexed)")
print(f"pair 0: (b0, b1) = ({b0}, {b1}); its table: {tl1_tables[0].tolist()}")
viz.show(viz.lut_entries(labels, tl1_tables[0], kinds=kinds,
                         title=f"TL1 table of the pair (b0, b1) = ({b0}, {b1})",
                         xlabel="index u = 3·t0 + t1 + 4 (weight pattern (t0, t1))"))

# %% [markdown]
# Check every entry of every pair against the product written out directly: for each of the 9
# patterns, `t0·q[2j] + t1·q[2j+1]` computed with plain integers.

# %%
pairs = q.astype(np.int32).reshape(-1, 2)
tl1_ok = all(
    np.array_equal(tl1_tables[:, 3 * t0 + t1 + 4], t0 * pairs[:, 0] + t1 * pairs[:, 1])
    for t0, t1 in itertools.product((-1, 0, 1), repeat=2)
) and not tl1_tables[:, lut.TL1_MAX_INDEX + 1:].any()
print(f"all {tl1_tables.shape[0]} pair tables: the 9 entries equal the direct products, "
      f"padding is zero: {tl1_ok}")

# %% [markdown]
# ## 2. TL2: triples, 14 entries and a sign bit
#
# Three weights form 27 patterns — too many for a 16-entry table. But the patterns come in
# **± pairs**: `(t0, t1, t2)` and `(−t0, −t1, −t2)` give opposite products. Write a pattern as
# the balanced-ternary number `v = 9·t0 + 3·t1 + t2` (−13..13); then `v` and `−v` are the two
# members of a pair, and it suffices to store the 14 products of `v = 0..13` (entry `m` holds
# the product of the pattern with value `+m`) and keep **one sign bit** per triple: a weight
# triple with `v < 0` reads entry `|v|` and negates it. 4 bits of index + 1 sign bit = 5 bits
# for 3 weights.
#
# Below, the product of the first triple of activations with all 27 patterns, in order of `v`:
# the right half is read straight from the table, the left half is the same entries negated.

# %%
tl2_tiling = tiling.default_tiling("tl2", M, K)
tl2_tables = lut.build_tl2_lut(q, K, tl2_tiling)     # int16 (three_k/3 + two_k/2, 16)
three_k, two_k = lut.tl2_split(K, tl2_tiling.BK)
triple = q[:3].astype(np.int32)
pattern_labels, pattern_values, pattern_kinds = [], [], []
for v in range(-13, 14):
    digits = lut.TL2_DIGITS[abs(v)].astype(np.int32) * (1 if v >= 0 else -1)   # (t0, t1, t2) of v
    entry = int(tl2_tables[0, abs(v)]) * (1 if v >= 0 else -1)
    assert entry == int(digits @ triple)            # the folded lookup is the product
    pattern_labels.append(f"{v:+d} " + "".join("−0+"[d + 1] for d in digits))
    pattern_values.append(entry)
    pattern_kinds.append("entry |v|, negated (sign bit 1)" if v < 0 else "entry v, read as is (sign bit 0)")
print(f"tiling {tl2_tiling}: K = {K} → {three_k} columns in triples ({three_k // 3} triple tables) "
      f"+ {two_k} tail columns in pairs ({two_k // 2} pair tables)")
print(f"triple 0: (b0, b1, b2) = {tuple(triple.tolist())}; stored entries 0..15: {tl2_tables[0].tolist()}")
viz.show(viz.lut_entries(pattern_labels, pattern_values, kinds=pattern_kinds,
                         title=f"TL2: the 27 patterns of the triple {tuple(triple.tolist())} from 14 stored entries",
                         xlabel="pattern value v = 9·t0 + 3·t1 + t2 and its weights (t0 t1 t2)",
                         ylabel="dot product with the triple (int)"))

# %%
trip = q[:three_k].astype(np.int32).reshape(-1, 3)
tl2_ok = all(
    np.array_equal(np.sign(v) * tl2_tables[: three_k // 3, abs(v)] if v else tl2_tables[: three_k // 3, 0],
                   trip @ np.array([t0, t1, t2]))
    for t0, t1, t2 in itertools.product((-1, 0, 1), repeat=3)
    for v in [9 * t0 + 3 * t1 + t2]
)
tail_ok = np.array_equal(tl2_tables[three_k // 3:], lut.build_tl1_lut(q[three_k:])) if two_k else True
print(f"all {three_k // 3} triple tables reproduce the 27 products with the sign rule: {tl2_ok}; "
      f"the {two_k // 2} tail tables are TL1 pair tables: {tail_ok}")

# %% [markdown]
# ### Why three weights and a sign bit?
#
# The x86 and ARM shuffle instructions (`pshufb`, `tbl`) look a 4-bit index up in a 16-byte
# register: a table of **at most 16 entries** costs one instruction per byte plane. For a group
# of `g` weights the table needs `3^g` entries, or `(3^g + 1)/2` with the sign fold (zero and
# the positive half). Bits per weight are the index bits (plus the sign bit) over `g`. The
# table below is computed, not typed in:

# %%
rows = []
for g in range(1, 6):
    patterns = 3 ** g
    folded = (patterns + 1) // 2                    # 0 and the patterns with a positive leading digit
    plain_bits = (patterns - 1).bit_length()        # index bits to address every pattern
    fold_bits = (folded - 1).bit_length() + 1       # magnitude index + one sign bit
    rows.append((g, patterns, folded, f"{plain_bits}/{g} = {plain_bits / g:.3f}",
                 f"{fold_bits}/{g} = {fold_bits / g:.3f}", "yes" if folded <= 16 else "no",
                 "yes" if patterns <= 16 else "no"))
print(viz.table(rows, ["g", "patterns 3^g", "entries after the sign fold", "bits/weight (plain index)",
                       "bits/weight (folded + sign)", "folded table fits 16", "plain table fits 16"]))
print(f"\nentropy bound: log2(3) = {np.log2(3):.3f} bits per weight")
fits = [g for g, *_, f, _ in rows if f == "yes"]
print(f"largest group whose folded table fits one 16-entry shuffle: g = {max(fits)} (TL2's triple); "
      f"without the fold: g = {max(g for g, *_, p in rows if p == 'yes')} (TL1's pair)")

# %% [markdown]
# Pairs without a sign bit (TL1) cost 2 bits per weight, like I2_S. Triples with a sign bit
# (TL2) cost 5/3 ≈ 1.667 bits, close to the `log2 3 ≈ 1.585` bound — and four weights would
# need 41 entries, three shuffles per lookup. The price of TL2: a table of 14 useful entries
# per 3 activations must be built for every token, and the sign must be applied (`(x + s) ^ s`
# with `s ∈ {0, −1}`, a two's-complement negation without a multiply,
# [kernels.md §4.2](../docs/kernels.md#42-compute-per-32-rows)).

# %% [markdown]
# ## 3. Byte planes, and the native kernel's table byte for byte
#
# A shuffle looks up **bytes**, but the entries are int16 (|entry| ≤ 3·128 = 384 does not fit
# a byte). So each table is split into a plane of the 16 low bytes and a plane of the 16 high
# bytes (two's complement): the kernel looks the index up in both and interleaves the results
# back into int16 (`unpacklo/hi_epi8`, `vzip`). `lut_byte_planes` turns the int16 tables into
# this form — 32 bytes per table, tables in activation order — which is exactly the buffer the
# native kernels build (`bitnet_lab/quant/lut.py` docstring).

# %%
tl1_planes = lut.lut_byte_planes(tl1_tables)          # uint8 (K/2, 32)
tl2_planes = lut.lut_byte_planes(tl2_tables)
entry0 = tl1_tables[0]
lo_hi = tl1_planes[0, [0, 16]]                          # entry 0 of pair 0: its low and high byte
print(f"pair 0, entry 0 = {entry0[0]}: low byte 0x{lo_hi[0]:02x}, high byte 0x{lo_hi[1]:02x} "
      f"→ read back as little-endian int16: {lo_hi.view('<i2')[0]}")
viz.show(viz.byte_planes(tl1_planes, title=f"TL1 LUT buffer of token {TOKEN % len(ids)}: the first tables in byte-plane form"))

# %% [markdown]
# Now the native kernels: `kernels.tl1_build_lut` / `tl2_build_lut` on every ISA level this CPU
# runs (the scalar v0 and the AVX2 v1 build the tables differently; both must give the same
# bytes as numpy).

# %%
native_luts = []
for isa in kernels.available_isas():
    n1 = kernels.tl1_build_lut(q, isa=isa)
    n2 = kernels.tl2_build_lut(q, K, tl2_tiling, isa=isa)
    native_luts.append(("tl1_build_lut", isa, n1.nbytes, bool(np.array_equal(n1, tl1_planes))))
    native_luts.append(("tl2_build_lut", isa, n2.nbytes, bool(np.array_equal(n2, tl2_planes))))
print(viz.table(native_luts, ["native kernel", "isa", "LUT bytes", "byte-identical to numpy"]))
roundtrip_ok = (np.array_equal(lut.lut_from_byte_planes(tl1_planes), tl1_tables)
                and np.array_equal(lut.lut_from_byte_planes(tl2_planes), tl2_tables))
print(f"byte planes read back to the int16 tables: {roundtrip_ok}")

# %% [markdown]
# ## 4. A whole GEMV through the tables
#
# Pack the real layer into TL1 and TL2 (bitnet.cpp's preset tiling for the shape if there is
# one, else the first legal one, `tiling.default_tiling`), then compute `Σ_k t[r, k]·q[k]` for
# every output row `r` four ways:
#
# - **exact**: the integer matrix product in numpy (int64);
# - **numpy twin**: `tl1_gemv_ref` / `tl2_gemv_ref` decode the index nibbles (and TL2's sign
#   plane) from the packed bytes and sum the looked-up entries;
# - **native**: `kernels.tl1_gemv` / `tl2_gemv` on every ISA level;
# - **the engine**: the int32 accumulators the I2_S multiply-add kernel produced inside the
#   forward pass (section 0).

# %%
tl1_tiling = tiling.default_tiling("tl1", M, K)
tl1_data = packing.pack_tl1(t, tl1_tiling)
tl2_data = packing.pack_tl2(t, tl2_tiling, pad=False)      # the real packed bytes, no converter padding
exact = (t.astype(np.int64) @ q.astype(np.int64)).astype(np.int32)
results = {
    ("TL1", "numpy twin"): lut.tl1_gemv_ref(tl1_data, tl1_tables, M, K, tl1_tiling),
    ("TL2", "numpy twin"): lut.tl2_gemv_ref(tl2_data, tl2_tables, M, K, tl2_tiling),
}
for isa in kernels.available_isas():
    results[("TL1", f"native {isa}")] = kernels.tl1_gemv(tl1_data, q, M, K, tl1_tiling, isa=isa)
    results[("TL2", f"native {isa}")] = kernels.tl2_gemv(tl2_data, q, M, K, tl2_tiling, isa=isa)
gemv_rows = [(lay, how, bool(np.array_equal(r, exact)), bool(np.array_equal(r, acc_engine)))
             for (lay, how), r in results.items()]
print(f"{TENSOR} {M}×{K}: TL1 tiling {tl1_tiling}, TL2 tiling {tl2_tiling}")
print(viz.table(gemv_rows, ["layout", "computed by", "equals the exact product", "equals the engine's I2_S acc"]))
print(f"first accumulators: {exact[:6].tolist()}")

# %% [markdown]
# ## 5. Memory traffic per weight
#
# In decode (one token at a time) a mat-vec reads every weight once, from DRAM for a real-size
# model, and does two operations per weight: decode time is bounded by **weight bytes**. The
# activation side is small and stays in cache: I2_S reads the int8 row (`K` bytes, plus a
# per-row sum), the LUT kernels read their tables (32 bytes per pair or triple: 16·K bytes for
# TL1, about 10.7·K for TL2) — built once per token and reused by all `M` rows, so per weight
# it costs `LUT bytes / (M·K)`.
#
# The sizes below are measured from the real buffers: packed blobs from `packing`, the LUTs the
# native kernels built above, the int8 row.

# %%
i2s_data = kernels.pack_i2_s(t)
act_bytes = {"I2_S": q.nbytes + 4, "TL1": tl1_planes.nbytes, "TL2": tl2_planes.nbytes}   # +4: the int32 Σq
weight_bytes = {"I2_S": i2s_data.nbytes, "TL1": tl1_data.nbytes, "TL2": tl2_data.nbytes}
n_w = M * K
traffic = {lay: {"weights (DRAM in decode)": 8 * weight_bytes[lay] / n_w,
                 "activation row or LUT, amortised over the M rows (cache)": 8 * act_bytes[lay] / n_w}
           for lay in weight_bytes}
print(viz.table([(lay, f"{weight_bytes[lay]:,}", f"{act_bytes[lay]:,}", f"{v['weights (DRAM in decode)']:.4f}",
                  f"{sum(v.values()):.4f}") for lay, v in traffic.items()],
                ["layout", "weight bytes", "activation-side bytes", "weight bits/weight", "total bits/weight"]))
tl2_documented = (Fraction(5, 3) * three_k + 2 * two_k) / K
print(f"TL2 weight bits per weight: measured {Fraction(8 * weight_bytes['TL2'], n_w)}, "
      f"documented (5/3·three_k + 2·two_k)/K = {tl2_documented}")
viz.show(viz.stacked_bars(traffic, title=f"bits read per weight in one decode GEMV of {TENSOR} ({M}×{K})",
                          xlabel="layout", ylabel="memory traffic (bits per weight)"))

# %% [markdown]
# The same arithmetic for the shapes of a real-size model, BitNet-b1.58-2B-4T, from the size
# rules of `packing` (the real layer above checks that these rules give the buffers' true
# sizes): with thousands of rows the tables cost almost nothing per weight.

# %%
from bitnet_lab.tools.layouts import layout_config


def gemv_bytes(M, K):
    """(I2_S, TL1, TL2) bytes one GEMV reads: packed weights + int8 row and Σq, or the LUT."""
    t2 = tiling.default_tiling("tl2", M, K)
    k3, k2 = lut.tl2_split(K, t2.BK)
    return (M * K // 4 + K + 4,
            packing.tl1_nbytes(M, K) + lut.LUT_TABLE_BYTES * (K // 2),
            packing.tl2_nbytes(M, K, t2) + lut.LUT_TABLE_BYTES * (k3 // 3 + k2 // 2))


rules_match = gemv_bytes(M, K) == tuple(weight_bytes[lay] + act_bytes[lay] for lay in ("I2_S", "TL1", "TL2"))
big = layout_config("2b-4t").projection_shapes()
print(viz.table([(proj, f"{m}×{k}", *(f"{8 * b / (m * k):.4f}" for b in gemv_bytes(m, k)))
                 for proj, (m, k) in big.items()],
                ["2B-4T projection", "M×K", "I2_S bits/weight", "TL1 bits/weight", "TL2 bits/weight"]))
print(f"the size rules reproduce the measured buffers of {TENSOR}: {rules_match}")

# %% [markdown]
# TL2 reads `1 − (5/3)/2 ≈ 17 %` fewer weight bytes than I2_S and TL1 on the columns coded in
# triples — its whole advantage when decode is memory-bound. In exchange its activation-side
# buffer is ~10× the int8 row, and the tables must be built for every token (compute that a
# memory-bound kernel has to spare). For small matrices (small `M`) the table cost per weight
# grows as `1/M`; notebook 04 times the kernels.

# %% [markdown]
# ## 6. Checks
#
# Each assertion can fail: a wrong table entry, a native LUT that differs by one byte, a GEMV
# that drifts from the exact product, or a size that disagrees with the documented layout
# stops this notebook (and CI).

# %%
assert tl1_ok, "a TL1 table entry differs from t0·b0 + t1·b1"
assert tl2_ok and tail_ok, "a TL2 table (or its tail) does not reproduce the 27 products"
assert all(same for *_, same in native_luts), native_luts
assert roundtrip_ok
assert all(a and b for *_, a, b in gemv_rows), gemv_rows
assert max(fits) == 3, fits                            # three weights: the largest folded group that fits 16
assert Fraction(8 * weight_bytes["TL2"], n_w) == tl2_documented
assert weight_bytes["TL1"] == weight_bytes["I2_S"] == n_w // 4   # both 2 bits per weight
assert weight_bytes["TL2"] < weight_bytes["I2_S"] or three_k == 0
assert rules_match
print("all checks passed")
