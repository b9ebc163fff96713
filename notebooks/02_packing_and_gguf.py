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
# # 02 · Packing ternary weights, and the GGUF file around them
#
# A ternary weight carries log₂3 ≈ 1.58 bits of information, but files store it in whole
# bits, bytes and blocks — and every runtime chose its own arrangement. This notebook opens
# the five layouts BitNet models ship in and the GGUF container that holds them.
#
# **What you will learn**
#
# 1. how **I2_S**, **TQ2_0**, **TQ1_0**, **TL1** and **TL2** lay ternary weights out — drawn bit
#    by bit for a small block, from what bitnet_lab's decoder actually reads;
# 2. to pack a block *by hand* from the drawing, and check the decoder reads it back;
# 3. that every codec round-trips exactly, on random blocks and on a real layer;
# 4. how a GGUF file is built — header, metadata, tensor-info table, aligned data — by writing
#    one layer in all five layouts, reading it back, and measuring the **bits per weight** of
#    each from the real blob sizes;
# 5. to walk a model file byte by byte and land exactly where bitnet_lab's reader says.
#
# The codecs are `bitnet_lab.quant.packing`, the container is `bitnet_lab.formats.gguf`; the
# notebook calls them and re-implements neither. The facts are in
# [formats.md §1](../docs/formats.md#1-the-gguf-container) (GGUF) and
# [formats.md §3](../docs/formats.md#3-ternary-byte-layouts) (layouts).

# %% [markdown]
# ## Parameters
#
# `MODEL = None` uses the embedded default model; point it at any model bitnet_lab reads
# (a GGUF file is walked byte by byte in section 6; for other formats the walk uses the file
# written in section 5). `TENSOR` picks the real layer used for round trips and sizes.

# %% tags=["parameters"]
MODEL = None          # None → the embedded default model; or a .gguf path, an HF folder, a Hub repo id
LAYER = 0             # which transformer block the real layer comes from
TENSOR = "ffn_down"   # attn_q, attn_k, attn_v, attn_output, ffn_gate, ffn_up or ffn_down
SEED = 0              # random blocks for the round trips

# %%
import struct
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np

import bitnet_lab
from bitnet_lab.notebook import viz
from bitnet_lab.notebook import widgets
from bitnet_lab.tools.default_model import default_model_path
from bitnet_lab.errors import CodecError
from bitnet_lab.formats.gguf import GGUFFile
from bitnet_lab.formats.gguf_writer import write_gguf
from bitnet_lab.quant import packing, tiling
from bitnet_lab.tensors import TernaryWeight
from bitnet_lab.quant.tiling import TLTiling

path = default_model_path() if MODEL is None else MODEL
model = bitnet_lab.load(path)
print(model)
W = model.tensors[f"blk.{LAYER}.{TENSOR}.weight"]
t_real = W.ternary()
M, K = W.shape
print(W)
rng = np.random.default_rng(SEED)


def type_name(vt):
    """A GGUF value type as text: UINT32, STRING, ARRAY[STRING], …"""
    return f"ARRAY[{vt[1].name}]" if isinstance(vt, tuple) else vt.name


# %% [markdown]
# ## 1. From ternary values to codes
#
# Every layout starts from `t ∈ {−1, 0, +1}`. The 2-bit layouts store the unsigned code
# `c = t + 1` (`00` = −1, `01` = 0, `10` = +1; `11` is invalid and every decoder rejects it).
# The others pack several weights into one code word:
#
# | layout | origin | code word | bits per weight |
# |---|---|---|---|
# | I2_S | bitnet.cpp (x86, MAD kernels) | `c = t+1`, 2 bits, MSB-first, 128-weight blocks + one f32 scale per tensor | 2 |
# | TQ2_0 | upstream llama.cpp | `c = t+1`, 2 bits, LSB-first, 256-weight blocks with an fp16 scale each | 2.0625 |
# | TQ1_0 | upstream llama.cpp | 5 trits per byte in base 3, 256-weight blocks with an fp16 scale | 1.6875 |
# | TL1 | bitnet.cpp (ARM, LUT kernels) | pair index `3·t0 + t1 + 4` ∈ 0..8 in a nibble, tiled | 2 |
# | TL2 | bitnet.cpp (x86, LUT kernels) | triple `9·t0 + 3·t1 + t2`: magnitude nibble + sign bit; pairs in the tail | ≈ 1.67 |
#
# The scale (γ, or a per-block `d`) is not part of the codes: I2_S keeps one f32 after the
# codes, TL1/TL2 in a hidden 32-byte slot after the tensor, TQ in every block.

# %% [markdown]
# ## 2. Drawing a layout: ask the decoder
#
# We do not draw the layouts from their documentation. `viz.probe_bit_map` asks
# `packing.unpack` directly: it packs a matrix whose weights are all equal (all −1, all 0,
# all +1), flips **one bit** of the packed bytes, decodes, and records which weights changed.
# Repeating this for every bit gives the map "bit → weights it holds", exactly as the reader
# sees it. Neighbouring bits whose weights overlap form one **code word** (a box in the
# drawings; a weight label `w5` is the flat index in a one-row block, `r3 k0–2` is row 3,
# columns 0 to 2).
#
# The small blocks we probe, and the bytes we draw of each:

# %%
TL1_DEMO = TLTiling(BM=32, BK=16, bm=32)   # the smallest legal TL1 tiling for a 32×16 block
TL2_DEMO = TLTiling(BM=32, BK=96, bm=32)   # TL2 needs K ≥ 256: a 32×256 block, 192 + 64 columns
tl2_three_k = (256 // TL2_DEMO.BK) * TL2_DEMO.BK
tl2_idx = 32 * tl2_three_k // 6            # index nibbles of the triples (docs/formats.md#33-tl2-type-39)
tl2_sign = 32 * tl2_three_k // 24          # sign bits of the triples

DEMOS = {
    "i2_s": dict(shape=(1, 128), tiling=None, probe=[(0, 32)], draw=[(0, 8), (29, 32)],
                 names={(0, 8): "byte b: weights b, b+32, b+64, b+96", (29, 32): "… up to byte 31"}),
    "tq2_0": dict(shape=(1, 256), tiling=None, probe=[(0, 8), (32, 40), (64, 66)],
                  draw=[(0, 6), (32, 36), (64, 66)],
                  names={(0, 6): "qs, weights 0–127", (32, 36): "qs, weights 128–255",
                         (64, 66): "d: fp16 block scale"}),
    "tq1_0": dict(shape=(1, 256), tiling=None, probe=[(0, 6), (32, 36), (48, 54)],
                  draw=[(0, 4), (32, 34), (48, 54)],
                  names={(0, 4): "qs[0..31]: 5 trits each", (32, 34): "qs[32..47]: 5 trits each",
                         (48, 54): "qh[0..3]: 4 trits, then d"}),
    "tl1": dict(shape=(32, 16), tiling=TL1_DEMO, probe=[(0, 128)], draw=[(0, 3), (15, 18), (32, 34), (64, 66)],
                names={(0, 3): "rows first: k0–3", (15, 18): "then k4–7 of rows 0–15",
                       (32, 34): "rows 16–31", (64, 66): "next compute block: k8–11"}),
    "tl2": dict(shape=(32, 256), tiling=TL2_DEMO,
                probe=[(0, 128), (tl2_idx, tl2_idx + 32), (tl2_idx + tl2_sign, tl2_idx + tl2_sign + 16)],
                draw=[(0, 2), (7, 9), (15, 17), (tl2_idx, tl2_idx + 4), (tl2_idx + tl2_sign, tl2_idx + tl2_sign + 2)],
                names={(0, 2): "index nibbles: |v| of a triple", (7, 9): "row 7, then row 16 (8-row groups 0,2,1,3)",
                       (15, 17): "", (tl2_idx, tl2_idx + 4): "sign bits: one per triple, 16-bit LE words",
                       (tl2_idx + tl2_sign, tl2_idx + tl2_sign + 2): "two-weight tail (TL1 pairs)"}),
}
maps = {lay: viz.probe_bit_map(lay, d["shape"], tiling=d["tiling"], byte_ranges=d["probe"])
        for lay, d in DEMOS.items()}


def draw(layout, title):
    d = DEMOS[layout]
    viz.show(viz.bit_map_figure(maps[layout], title=title, byte_ranges=d["draw"], names=d["names"]))


# %% [markdown]
# ### I2_S — bitnet.cpp's x86 format
#
# 128 weights make a 32-byte block. Byte `b` holds weights `b`, `b+32`, `b+64`, `b+96`, the
# first in the **top** two bits: each 2-bit plane of the block lines up with 32 consecutive
# activations, which is what the AVX2 kernel wants ([kernels.md §2](../docs/kernels.md#2-i2_s-mad-kernels)).
# Blocks run over the flattened matrix, so a row of K weights is K/4 bytes when K is a multiple of 128.

# %%
draw("i2_s", "I2_S: one 128-weight block (32 bytes)")

# %% [markdown]
# ### TQ2_0 — upstream llama.cpp, 2 bits
#
# The same four-weights-per-byte idea with two differences: the first weight sits in the
# **bottom** two bits (LSB-first), and each 256-weight block carries its own fp16 scale `d` in
# its last two bytes (which hold no weight: flipping them changes no code). 66 bytes for 256
# weights: 2.0625 bits per weight.

# %%
draw("tq2_0", "TQ2_0: one 256-weight block (66 bytes)")

# %% [markdown]
# ### TQ1_0 — upstream llama.cpp, base 3
#
# 3⁵ = 243 ≤ 256, so five trits fit in a byte. Byte `m` of the first 32 holds weights
# `m, m+32, …, m+128` as one base-3 number `v` (first weight most significant), stored as
# `⌈v·256/243⌉` so the decoder can pull each trit out with a multiply and a shift. In base 3
# no bit belongs to a single weight: every bit of the byte moves several trits, which is why
# each byte is one box. The last four `qh` bytes hold four trits each; then `d`.

# %%
draw("tq1_0", "TQ1_0: one 256-weight block (54 bytes)")

# %% [markdown]
# ### TL1 — bitnet.cpp's ARM LUT format
#
# Weights go in **pairs** along K: index `3·t0 + t1 + 4` (nine values, one nibble), two pairs
# per byte, high nibble first. The kernel looks the index up in a 9-entry table of
# precomputed activation sums, so the bytes are ordered for the kernel's loops: within a
# 16-row chunk the bytes walk **down the rows** first, then along K. That order depends on
# the tiling `(BM, BK, bm)`, which the file does **not** record.

# %%
draw("tl1", f"TL1: a 32×16 block, tiling {TL1_DEMO}")

# %% [markdown]
# The same weights under different tilings land in different bytes. Below, every legal TL1
# tiling of a 64×64 block packs one random matrix; tilings that produce identical bytes are
# the same layout and are grouped. The picture colours each weight by the byte that holds it:
# tiles of `BM` rows and `BK` columns and the 16-row chunks inside them appear as blocks of
# colour. Move the control to compare the distinct layouts (headless: three are printed). A
# TL1 file read with the wrong tiling decodes without any error — into the wrong matrix.

# %%
TL1_SHAPE = (64, 64)
t_tile = rng.integers(-1, 2, size=TL1_SHAPE).astype(np.int8)
layouts_by_bytes = {}
for tl in tiling.candidate_tilings("tl1", *TL1_SHAPE):
    layouts_by_bytes.setdefault(packing.pack_tl1(t_tile, tl).tobytes(), []).append(tl)
# label "BM/BK/bm" → the tilings that write the same bytes (the first one stands for them)
tl1_choices = {f"{same[0].BM}/{same[0].BK}/{same[0].bm}": same for same in layouts_by_bytes.values()}
n_legal = sum(len(v) for v in layouts_by_bytes.values())
print(f"{n_legal} legal TL1 tilings of a {TL1_SHAPE[0]}×{TL1_SHAPE[1]} block, {len(tl1_choices)} distinct byte layouts "
      "(BM/BK/bm):")
for label, same in tl1_choices.items():
    others = ", ".join(f"{t.BM}/{t.BK}/{t.bm}" for t in same[1:])
    print(f"   {label:>9}" + (f"  (the same bytes as {others})" if others else ""))


def draw_tl1(BM_BK_bm):
    # one base (all −1: pair index 0, every single-bit flip decodes) finds the byte of every weight
    tl = tl1_choices[BM_BK_bm][0]
    bm = viz.probe_bit_map("tl1", TL1_SHAPE, tiling=tl, bases=(-1,))
    viz.show(viz.byte_order_image(bm, title=f"TL1 {TL1_SHAPE[0]}×{TL1_SHAPE[1]}, tiling {tl}: where each weight lives"))


# short labels: the buttons show them whole
widgets.explore(draw_tl1, BM_BK_bm=list(tl1_choices))

# %% [markdown]
# ### TL2 — bitnet.cpp's x86 LUT format
#
# Weights go in **triples**: `v = 9·t0 + 3·t1 + t2` ∈ −13..13 is stored as its magnitude
# `|v|` (a nibble) plus a **sign bit** in a separate plane; a triple and its negation share
# one table entry, halving the lookup table. That is 5 bits per 3 weights (1.67 bits/weight).
# Inside each 32-row sub-tile the 8-row groups are stored in the order 0, 2, 1, 3 to match the
# AVX2 unpack lanes — visible below: byte 7 is row 7, byte 8 is row 16. Columns beyond the
# last whole `BK` tile (here 256 − 192 = 64) use TL1-style pairs, the "two-weight tail".

# %%
draw("tl2", f"TL2: a 32×256 block, tiling {TL2_DEMO}")

# %% [markdown]
# ## 3. Packing by hand
#
# A drawing is only worth something if the decoder agrees with it. So we pack by hand: for
# every box of the map, write the code word of its weights into exactly those bits, using the
# code formula of the table in section 1 — nothing else. The result must (a) decode with
# `packing.unpack` to the weights we chose and (b) equal, byte for byte in the probed range,
# what `packing.pack` writes.

# %%
def code_word(nbits, ws):
    """The integer a code word of ``nbits`` bits holds for the weights ``ws`` (flat order)."""
    c = [int(w) + 1 for w in ws]
    if nbits == 2 and len(ws) == 1:               # I2_S, TQ2_0: c = t + 1
        return c[0]
    if nbits == 4 and len(ws) == 2:               # TL1 pair / TL2 tail: 3·t0 + t1 + 4
        return 3 * int(ws[0]) + int(ws[1]) + 4
    if nbits == 4 and len(ws) == 3:               # TL2 magnitude |9·t0 + 3·t1 + t2|
        return abs(9 * int(ws[0]) + 3 * int(ws[1]) + int(ws[2]))
    if nbits == 1 and len(ws) == 3:               # TL2 sign bit: the triple is negative
        return int(9 * int(ws[0]) + 3 * int(ws[1]) + int(ws[2]) < 0)
    if nbits == 8 and len(ws) in (4, 5):          # TQ1_0: base 3, first trit most significant
        v = sum(ci * 3 ** (len(c) - 1 - i) for i, ci in enumerate(c)) * 3 ** (5 - len(c))
        return (v * 256 + 242) // 243             # ⌈v·256/243⌉
    raise ValueError(f"no code word of {nbits} bits for {len(ws)} weights")


def hand_pack(bm, t, base):
    """Write the code words of ``t`` into a copy of ``base`` at the bits the map names."""
    out = base.copy()
    flat = t.reshape(-1)
    for byte, hi, lo, own in bm.groups():
        if not own:
            continue                               # scale bytes: not ours to write
        width = hi - lo + 1
        mask = ((1 << width) - 1) << lo
        out[byte] = (int(out[byte]) & ~mask & 0xFF) | (code_word(width, flat[list(own)]) << lo)
    return out


def packed(layout, t, tl):
    """The bytes packing writes for t (TQ: d = 1.0 per block; I2_S: scale 1.0)."""
    m, k = t.shape
    if layout.startswith("tq"):
        return packing.pack(layout, t, block_scales=np.ones((m, k // 256), dtype=np.float16))
    return packing.pack(layout, t, scale=1.0, tiling=tl)


hand_results = {}
for lay, d in DEMOS.items():
    bm, (m, k), tl = maps[lay], d["shape"], d["tiling"]
    covered = sorted({w for own in bm.owners.values() if own for w in own})
    t_hand = np.zeros((m, k), dtype=np.int8)
    t_hand.reshape(-1)[covered] = rng.integers(-1, 2, size=len(covered))  # random weights in the probed bytes
    blob = hand_pack(bm, t_hand, packed(lay, np.zeros((m, k), np.int8), tl))
    decoded_ok = np.array_equal(packing.unpack(lay, blob, m, k, tiling=tl), t_hand)
    ref = packed(lay, t_hand, tl)
    probed = np.concatenate([np.arange(a, b) for a, b in d["probe"]])
    same_bytes = np.array_equal(blob[probed], ref[probed])
    hand_results[lay] = (len(covered), decoded_ok, same_bytes)
print(viz.table([(lay, n, ok, same) for lay, (n, ok, same) in hand_results.items()],
                ["layout", "weights set by hand", "unpack reads them back", "bytes equal packing.pack"]))

# %% [markdown]
# ## 4. Round trips
#
# `unpack(pack(t)) == t` for every layout, first on random blocks of a shape all five accept,
# then on the real layer `TENSOR` of the model (a layout whose shape rules the layer breaks is
# reported with the codec's own reason, not skipped in silence). TL tilings come from
# `tiling.default_tiling`: bitnet.cpp's preset for the shape if there is one, else the first
# legal tiling of a documented search.

# %%
LAYOUTS = ("i2_s", "tq2_0", "tq1_0", "tl1", "tl2", "hf_packed")


def round_trip(layout, t):
    """(ok, detail) for unpack(pack(t)) == t in ``layout``; CodecError → (None, reason)."""
    m, k = t.shape
    try:
        tl = tiling.default_tiling(layout, m, k) if layout in ("tl1", "tl2") else None
        data = packed(layout, t, tl)
        back = packing.unpack(layout, data, m, k, tiling=tl)
    except CodecError as e:
        return None, str(e)
    return bool(np.array_equal(back, t)), f"{np.asarray(data).size} bytes" + (f", tiling {tl}" if tl else "")


t_rand = rng.integers(-1, 2, size=(64, 512)).astype(np.int8)
trips = {}
for lay in LAYOUTS:
    trips[("random 64×512", lay)] = round_trip(lay, t_rand)
    trips[(f"{W.name} {M}×{K}", lay)] = round_trip(lay, t_real)
print(viz.table([(what, lay, "n/a" if ok is None else ok, detail) for (what, lay), (ok, detail) in trips.items()],
                ["matrix", "layout", "exact", "detail"]))

# %% [markdown]
# ## 5. Into a GGUF file, and out again
#
# GGUF is llama.cpp's container: a small header, a list of typed key–value metadata, a table
# of tensor infos (name, dims, ggml type, offset), then the tensor blobs, each aligned to 32
# bytes ([formats.md §1](../docs/formats.md#1-the-gguf-container)). We write the real layer **five times**,
# one file per layout — a real model file uses one ternary layout throughout, and bitnet_lab records one TL
# tiling per shape — with `write_gguf`, read each file back with `GGUFFile`, and check that the codes and
# scales survive. The blob sizes in the files' tensor tables then give the bits per weight.

# %%
GGUF_LAYOUTS = ("i2_s", "tq2_0", "tq1_0", "tl1", "tl2")
# general.file_type of a model in each layout (docs/formats.md#23-llama-file-types: the bitnet.cpp fork's
# numbering)
FILE_TYPE = {"tq1_0": 36, "tq2_0": 37, "tl1": 38, "tl2": 39, "i2_s": 40}
gamma = W.gamma()
name = W.name
workspace = tempfile.TemporaryDirectory(prefix="bitnet_lab_nb02_", ignore_cleanup_errors=True)
workdir = Path(workspace.name)            # removed at the end of the notebook
demo_tensors, demo_files, demo_skipped = {}, {}, {}
for lay in GGUF_LAYOUTS:
    try:
        if lay in ("tl1", "tl2"):
            tl = tiling.default_tiling(lay, M, K)
            w = TernaryWeight(name, lay, (M, K), packing.pack(lay, t_real, tiling=tl), scale=gamma, tiling=tl)
        elif lay == "i2_s":
            w = TernaryWeight(name, lay, (M, K), packing.pack_i2_s(t_real), scale=gamma)
        else:
            d = packing.tq_default_block_scales(t_real, gamma)
            w = TernaryWeight(name, lay, (M, K), packing.pack(lay, t_real, block_scales=d), block_scales=d)
    except CodecError as e:
        demo_skipped[lay] = str(e)           # the codec's own reason: shown, not hidden
        continue
    demo_tensors[lay] = w
    demo_files[lay] = write_gguf(
        workdir / f"{TENSOR}-{lay}.gguf",
        {"general.architecture": "bitnet-b1.58", "general.file_type": FILE_TYPE[lay],
         "general.name": f"{name} of {Path(str(model.source)).name} as {lay.upper()}"},
        {name: w})
print(f"written: {', '.join(p.name for p in demo_files.values())} in {workdir}")
print(f"not legal for {M}×{K}: {demo_skipped or 'none'}")

gguf_trips, demo_infos = {}, {}
for lay, p in demo_files.items():
    g = GGUFFile(p)
    r, w = g.tensor(name), demo_tensors[lay]
    same_t = np.array_equal(r.ternary(), t_real)
    same_scale = (np.array_equal(r.block_scales, w.block_scales) if w.block_scales is not None
                  else np.float32(r.scale) == np.float32(w.scale))
    gguf_trips[lay] = (same_t, bool(same_scale), p.stat().st_size)
    demo_infos[lay] = g.tensor_info(name)
print(viz.table([(lay, g_t, g_s, f"{size:,}") for lay, (g_t, g_s, size) in gguf_trips.items()],
                ["layout", "codes read back", "scale(s) read back", "file size (bytes)"]))

# %% [markdown]
# ### Bits per weight, from the file
#
# The tensor table says where each blob starts and how many bytes its type takes (`nbytes`),
# and how many bytes it reserves (`span`: TL1/TL2 add the hidden 32-byte scale slot). Dividing
# by the number of weights gives the storage cost. The documented values
# ([formats.md §3](../docs/formats.md#3-ternary-byte-layouts)):
#
# - I2_S: 2 bits of codes per weight, plus one 32-byte tail per **tensor** (f32 scale + padding);
# - TQ2_0: 66 bytes per 256 weights = 2.0625; TQ1_0: 54 bytes per 256 = 1.6875 — the fp16
#   scales are inside the blocks;
# - TL1: 2 bits per weight, plus the 32-byte slot;
# - TL2: 5/3 bits per weight for the `three_k` columns of whole `BK` tiles and 2 for the
#   `two_k` tail columns; bitnet.cpp's converter then **pads** the blob to
#   `(K−256)·M/3·5/8 + 256·M/2·4/8` bytes, a size that assumes a 256-column tail.

# %%
n = M * K
bpw_file, bpw_codes, documented = {}, {}, {}
for lay, w in demo_tensors.items():
    ti = demo_infos[lay]
    bpw_file[lay.upper()] = 8 * ti.span / n                         # everything the tensor occupies
    if lay == "i2_s":
        codes = packing.pack_i2_s(t_real).size                      # without the 32-byte tail
        documented["I2_S"] = Fraction(2)
    elif lay in ("tq2_0", "tq1_0"):
        codes = ti.nbytes                                           # blocks: codes and d together
        documented[lay.upper()] = Fraction({"tq2_0": 66, "tq1_0": 54}[lay] * 8, 256)
    elif lay == "tl1":
        codes = ti.nbytes                                           # the slot is outside nbytes
        documented["TL1"] = Fraction(2)
    else:
        codes = packing.pack_tl2(t_real, w.tiling, pad=False).size  # the real packed bytes
        three_k = (K // w.tiling.BK) * w.tiling.BK
        documented["TL2"] = (Fraction(5, 3) * three_k + 2 * (K - three_k)) / K
    bpw_codes[lay.upper()] = Fraction(8 * codes, n)
print(viz.table([(lay, f"{float(bpw_codes[lay]):.4f}", f"{float(documented[lay]):.4f}",
                  f"{bpw_file[lay]:.4f}") for lay in bpw_codes],
                ["layout", "bits/weight (codes)", "documented", "bits/weight (whole blob in the file)"]))
viz.show(viz.bits_per_weight({k: float(v) for k, v in bpw_codes.items()},
                             {k: float(v) for k, v in documented.items()}, in_file=bpw_file,
                             title=f"storage cost of {W.name} ({M}×{K}) in each layout"))

# %% [markdown]
# ## 6. Walking a GGUF file byte by byte
#
# Now a whole model file: the model's own file if it is a GGUF, else the file of section 5.
# We decode the start of it by hand with `struct` — the header, the first metadata pair, the
# whole tensor-info table — and check at every step that we land where `GGUFFile` says.

# %%
walk_path = Path(str(model.source)) if model.file_format == "gguf" else next(iter(demo_files.values()))
gf = GGUFFile(walk_path)
with open(walk_path, "rb") as f:
    head = f.read(gf.data_offset)               # everything before the tensor data
print(gf)

magic, version, n_tensors, n_kv = struct.unpack_from("<4sIQQ", head, 0)
key_len = struct.unpack_from("<Q", head, 24)[0]
key = head[32:32 + key_len].decode()
vtype = struct.unpack_from("<I", head, 32 + key_len)[0]
print(viz.hexdump(head[:64], notes={0: "magic 'GGUF'", 4: f"version u32 = {version}",
                                    8: f"tensor_count u64 = {n_tensors}", 16: f"metadata_kv_count u64 = {n_kv}",
                                    24: f"key length u64 = {key_len}", 32: f"key {key!r} …"}))
print(f"\nheader: magic {magic!r}, version {version}, {n_tensors} tensors, {n_kv} metadata pairs")
print(f"first metadata pair: key {key!r}, value type {vtype} ({type_name(gf.metadata_types[key])})")

# %% [markdown]
# The metadata: typed key–value pairs. For a model: the architecture and its hyper-parameters,
# the tokenizer (for a Llama vocabulary that is tens of thousands of strings — most of the
# bytes before the tensor data), and, in bitnet_lab's files, the TL tiling.

# %%
def summary(v, limit=60):
    if isinstance(v, list):
        return f"[{len(v)} items]"
    s = repr(v)
    return s if len(s) <= limit else s[:limit - 1] + "…"


print(viz.table([(k, type_name(gf.metadata_types[k]), summary(v)) for k, v in gf.metadata.items()],
                ["key", "type", "value"]))

# %% [markdown]
# The tensor-info table follows the metadata and starts with the first tensor's name (a u64
# length, then the bytes). We find that spot and decode **every** entry by hand — name,
# number of dims, dims (ggml order: `ne0`, the contiguous one, first), type id, offset relative
# to the data section — then pad to the alignment. That must be exactly where the data
# section starts.

# %%
first = gf.tensor_infos[0].name.encode()
pos = head.rfind(struct.pack("<Q", len(first)) + first, 24)
tensor_info_start = pos
walked = []
for _ in range(n_tensors):
    (name_len,) = struct.unpack_from("<Q", head, pos)
    name = head[pos + 8: pos + 8 + name_len].decode()
    pos += 8 + name_len
    (n_dims,) = struct.unpack_from("<I", head, pos)
    dims = struct.unpack_from(f"<{n_dims}Q", head, pos + 4)
    type_id, rel_offset = struct.unpack_from("<IQ", head, pos + 4 + 8 * n_dims)
    pos += 4 + 8 * n_dims + 4 + 8
    walked.append((name, tuple(dims), type_id, rel_offset))
pad_end = -(-pos // gf.alignment) * gf.alignment
infos_match = walked == [(ti.name, ti.dims, ti.type_id, ti.rel_offset) for ti in gf.tensor_infos]
print(f"tensor infos: bytes {tensor_info_start}..{pos}, padded to {pad_end}; "
      f"GGUFFile's data section starts at {gf.data_offset}; all {len(walked)} entries match: {infos_match}")
print(viz.table([(ti.name, ti.type_name, list(ti.dims), ti.offset, ti.nbytes, ti.span)
                 for ti in gf.tensor_infos[:12]],
                ["name", "type", "dims (ggml order)", "offset (bytes)", "nbytes", "span"]))
if len(gf.tensor_infos) > 12:
    print(f"… and {len(gf.tensor_infos) - 12} more")
viz.show(viz.gguf_file_map(gf, tensor_info_start=tensor_info_start, title=f"byte map of {walk_path.name}"))

# %% [markdown]
# Last step of the walk: one ternary blob, read straight from the file at its offset and
# decoded with `packing.unpack`, must equal what the loader handed out; so must its scale,
# read where its layout keeps it (I2_S: the first 4 bytes after the codes; TL1/TL2: the
# hidden slot at `pad32(nbytes)`; TQ: the `d` at the end of each block).

# %%
ti = next(ti for ti in gf.tensor_infos if ti.is_ternary)
tw = gf.tensor(ti.name)
m, k = ti.shape
with open(walk_path, "rb") as f:
    f.seek(ti.offset)
    raw = np.frombuffer(f.read(ti.span), dtype=np.uint8)
codes_ok = np.array_equal(packing.unpack(ti.layout, raw, m, k, tiling=tw.tiling), tw.ternary())
if ti.layout == "i2_s":
    scale_ok = packing.read_i2_s_scale(raw, m, k) == tw.scale
elif ti.layout in ("tl1", "tl2"):
    at = packing.tl_scale_offset(ti.layout, m, k)
    scale_ok = raw[at:at + 4].view("<f4")[0] == tw.scale
else:
    unpack_tq = packing.unpack_tq2_0 if ti.layout == "tq2_0" else packing.unpack_tq1_0
    scale_ok = np.array_equal(unpack_tq(raw, m, k)[1], tw.block_scales)
print(f"{ti.name} ({ti.type_name}, {m}×{k}) at byte {ti.offset}: codes equal the loader's: {codes_ok}; "
      f"scale equal: {bool(scale_ok)}")

# %% [markdown]
# ## 7. Checks
#
# Each assertion can fail: a codec, the writer, the reader or the size arithmetic that drifts
# from the others stops this notebook (and CI).

# %%
# the hand-packed blocks decode as drawn and equal what the packer writes
for lay, (n_set, ok, same) in hand_results.items():
    assert n_set > 0 and ok and same, (lay, n_set, ok, same)
# I2_S and TQ2_0 maps: weight j of a block sits where docs/formats.md#31-i2_s-type-36,
# docs/formats.md#34-tq2_0-type-35 say
i2 = maps["i2_s"]
assert all(i2.bits_of(j) == [(j % 32, 6 - 2 * (j // 32)), (j % 32, 7 - 2 * (j // 32))] for j in range(128))
tq2 = maps["tq2_0"]
assert all(tq2.bits_of(j) == [(32 * (j // 128) + j % 32, 2 * (j % 128 // 32)),
                              (32 * (j // 128) + j % 32, 2 * (j % 128 // 32) + 1)]
           for j in range(256) if tq2.bits_of(j))
# every codec round-trips random blocks, and the real layer wherever its shape is legal
assert all(ok is True for (what, lay), (ok, _) in trips.items() if what.startswith("random"))
assert all(ok is not False for ok, _ in trips.values())
assert trips[(f"{W.name} {M}×{K}", "i2_s")][0] is not False
# the layer survives the trip through a GGUF file in every layout written
assert demo_files and all(a and b for a, b, _ in gguf_trips.values()), gguf_trips
# bits per weight from the real blob sizes equal the documented values, exactly
for lay in bpw_codes:
    assert bpw_codes[lay] == documented[lay], (lay, bpw_codes[lay], documented[lay])
if "TL2" in bpw_codes:
    assert Fraction(5, 3) <= bpw_codes["TL2"] <= 2
# the hand walk of the file lands where the reader says
assert magic == b"GGUF" and version == gf.version
assert n_tensors == len(gf.tensor_infos) and n_kv == len(gf.metadata)
assert key == next(iter(gf.metadata))
assert infos_match and pad_end == gf.data_offset
assert codes_ok and scale_ok
workspace.cleanup()                       # the five demo files of section 5
print("all checks passed")
