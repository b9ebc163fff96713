"""TL1 / TL2 tiling: the legal (BM, BK, bm) for a weight shape, bitnet.cpp's presets per model
(and the choice of one by a file's whole set of shapes), the parsing of a user's tiling request,
and a small documented search that writers use for shapes no preset covers.

Readers: a file's tiling comes from the caller (:func:`parse_tl_tiling`), our metadata key, or
:func:`match_presets`, which refuses unknown or ambiguous shapes naming the candidates
(docs/kernels.md#56-presets-per-model); readers never search, since another legal tiling reads the
same bytes as other weights without any error.

A TL file does not record its tiling (docs/formats.md#32-tl1-type-38, docs/formats.md#33-tl2-type-39,
docs/kernels.md#52-code-generators-and-config-files): the bytes of a TL1/TL2 tensor can only be read with the
(BM, BK, bm) that wrote them. Shapes are torch order ``(M, K)`` = (output rows, input columns), which is also
the ``(m, k)`` of bitnet.cpp's ``kernel_config.ini`` and ``ModelShapeDict`` (``m == ne1``, ``k == ne0``).

Rules (each checked by :func:`validate_tiling`, with the rule named in the error):

TL1 (``BitNet:utils/codegen_tl1.py`` asserts, ``BitNet:utils/convert-hf-to-gguf-bitnet.py``
``process_tl1`` reshapes; docs/kernels.md#51-the-parameters):

- ``bm ∈ {32, 64}``; ``by = 256 // bm`` weights per compute block along K;
- ``M % BM == 0`` and ``BM % bm == 0``;
- ``K % BK == 0`` and ``BK % by == 0`` (the converter splits each BK tile into BK/by blocks);
- ``BK ≤ 256`` (the kernel accumulates a BK tile in int16: BK/2 · 254 ≤ 32767).

TL2 (``BitNet:utils/codegen_tl2.py`` asserts, ``preprocess_three_weights_tl2`` /
``preprocess_two_weights_tl2`` reshapes, ``BitNet:utils/templates/tl2_table_impl.h``):

- ``bm == 32`` (``by = 192 // bm = 6``; the converter reads two triple groups per byte, which
  needs ``by // 3 == 2``, and codegen asserts ``bm in [32]``);
- ``M % BM == 0`` and ``BM % 32 == 0``;
- ``BK % 24 == 0``: stricter than the ``BK % 6`` of docs/formats.md#33-tl2-type-39. The converter cuts each
  BK tile's sign plane into units of ``4·by = 24`` columns (``BY // (by * 4)``) and the kernel
  walks ``KK/8`` sign vectors of 8 triple groups (``KK = BK/3``); a BK that is a multiple of 6
  but not of 24 loses columns in both;
- ``(K % BK) % 32 == 0`` (the two-weight tail is tiled in 32-column blocks);
- ``BK ≤ 256`` (int16 accumulation, docs/kernels.md#51-the-parameters);
- ``K ≥ 256``: the size every fork tool reserves for a TL2 tensor,
  ``(K − 256)·M/3·5/8 + 256·M/2·4/8``, is only well defined (and the same in C and Python
  integer division) for ``K ≥ 256``.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Iterable, Iterator, Mapping

from bitnet_lab.errors import BitnetLabError, CodecError, ConfigError

@dataclass(frozen=True)
class TLTiling:
    """TL1/TL2 tiling parameters (docs/kernels.md#5-tiling-parameters-and-code-generation). Not stored in GGUF
    files."""

    BM: int
    BK: int
    bm: int

    def __str__(self) -> str:  # pragma: no cover - trivial
        return f"BM={self.BM} BK={self.BK} bm={self.bm}"



TL_LAYOUTS = ("tl1", "tl2")

# Weights per compute block along K for TL1 (docs/kernels.md#51-the-parameters: by = 256 / bm).
TL1_BM_SMALL = (32, 64)
# TL2 sub-tile is fixed at 32 rows; the two-weight tail is tiled in 32-column blocks.
TL2_BM_SMALL = 32
TL2_TAIL_BK = 32
# int16 accumulation bound on BK shared by both kernels (docs/kernels.md#32-compute-per-block step 3,
# docs/kernels.md#42-compute-per-32-rows step 3).
MAX_BK = 256
# TL2 three-weight columns come in sign units of 4 compute blocks of 6 columns.
TL2_BK_MULTIPLE = 24

# BitNet:utils/generate-dummy-bitnet-model.py hard-codes BM = BY = 256, bm = 32
# (docs/kernels.md#55-known-configuration-bugs).
DUMMY_TL1_TILING = TLTiling(256, 256, 32)

# Search preferences for shapes without a preset (first legal wins; see _search).
_BM_PREFERRED = (256, 128, 320, 160)
_TL1_BK_PREFERRED = (256, 128, 64)   # 256 first: what the dummy generator writes
_TL2_BK_PREFERRED = (96, 192)        # what setup_env.py and every TL2 preset use


def _check_layout(layout: str) -> None:
    if layout not in TL_LAYOUTS:
        raise CodecError(f"tiling applies to {TL_LAYOUTS}, not to layout {layout!r}")


def _check_shape(M: int, K: int) -> tuple[int, int]:
    try:
        M, K = operator.index(M), operator.index(K)
    except TypeError:
        raise CodecError(f"shape must be positive integers (M, K); got ({M!r}, {K!r})") from None
    if M <= 0 or K <= 0:
        raise CodecError(f"shape must be positive integers (M, K); got ({M}, {K})")
    return M, K


def tiling_violations(layout: str, M: int, K: int, tiling: TLTiling) -> list[str]:
    """Every rule of the module docstring that ``tiling`` breaks for (M, K), as sentences."""
    _check_layout(layout)
    M, K = _check_shape(M, K)
    BM, BK, bm = int(tiling.BM), int(tiling.BK), int(tiling.bm)
    bad: list[str] = []
    if BM <= 0 or BK <= 0 or bm <= 0:
        return [f"BM, BK, bm must be positive; got {tiling}"]
    if M % BM:
        bad.append(f"M % BM == 0 fails: {M} % {BM} = {M % BM}")
    if BK > MAX_BK:
        bad.append(f"BK <= {MAX_BK} (int16 accumulation) fails: BK = {BK}")
    if layout == "tl1":
        if bm not in TL1_BM_SMALL:
            bad.append(f"bm in {TL1_BM_SMALL} fails: bm = {bm}")
            return bad
        by = 256 // bm
        if BM % bm:
            bad.append(f"BM % bm == 0 fails: {BM} % {bm} = {BM % bm}")
        if K % BK:
            bad.append(f"K % BK == 0 fails: {K} % {BK} = {K % BK}")
        if BK % by:
            bad.append(f"BK % by == 0 (by = 256/bm = {by}) fails: {BK} % {by} = {BK % by}")
    else:
        if bm != TL2_BM_SMALL:
            bad.append(f"bm == {TL2_BM_SMALL} fails: bm = {bm}")
        if BM % TL2_BM_SMALL:
            bad.append(f"BM % 32 == 0 fails: {BM} % 32 = {BM % 32}")
        if BK % TL2_BK_MULTIPLE:
            bad.append(f"BK % {TL2_BK_MULTIPLE} == 0 fails: {BK} % {TL2_BK_MULTIPLE} = {BK % TL2_BK_MULTIPLE}")
        if (K % BK) % TL2_TAIL_BK:
            bad.append(f"(K % BK) % 32 == 0 fails: K % BK = {K % BK}, {K % BK} % 32 = {(K % BK) % 32}")
        if K < 256:
            bad.append(f"K >= 256 (TL2 size formula) fails: K = {K}")
    return bad


def is_legal(layout: str, M: int, K: int, tiling: TLTiling) -> bool:
    return not tiling_violations(layout, M, K, tiling)


def validate_tiling(layout: str, M: int, K: int, tiling: TLTiling) -> TLTiling:
    """Return ``tiling`` if it is legal for ``layout`` at (M, K); else raise CodecError naming
    every violated rule with its numbers."""
    if not isinstance(tiling, TLTiling):
        raise CodecError(f"{layout}: tiling must be a TLTiling(BM, BK, bm); got {tiling!r}")
    bad = tiling_violations(layout, M, K, tiling)
    if bad:
        raise CodecError(f"{layout} tiling {tiling} is illegal for (M, K) = ({M}, {K}): " + "; ".join(bad))
    return tiling


def _ordered(preferred: tuple[int, ...], rest: list[int]) -> list[int]:
    """``preferred`` first (in that order), then ``rest`` descending, without repeats."""
    out = list(preferred)
    out += sorted((v for v in rest if v not in preferred), reverse=True)
    return out


def candidate_tilings(layout: str, M: int, K: int) -> Iterator[TLTiling]:
    """Legal tilings for (M, K) in preference order: the preset (if any), then the search.

    Search (documented order; each axis independent, first legal combination wins):

    - ``bm``: TL1 32 then 64; TL2 32;
    - ``BK``: TL1 256, 128, 64, then the other multiples of ``by`` dividing K, descending;
      TL2 96, 192, then the other multiples of 24 up to 256, descending;
    - ``BM``: 256, 128, 320, 160, then the other multiples of ``bm`` dividing M, descending.

    For the dummy-generator shapes (multiples of 256) the first TL1 result is
    ``DUMMY_TL1_TILING`` (256/256/32).
    """
    _check_layout(layout)
    M, K = _check_shape(M, K)
    seen: set[TLTiling] = set()
    preset = (TL1_PRESETS if layout == "tl1" else TL2_PRESETS).get((M, K))
    if preset is not None and is_legal(layout, M, K, preset):
        seen.add(preset)
        yield preset
    bms = (32, 64) if layout == "tl1" else (32,)
    for bm in bms:
        if layout == "tl1":
            by = 256 // bm
            bk_all = [b for b in range(by, MAX_BK + 1, by) if K % b == 0]
            bks = _ordered(tuple(b for b in _TL1_BK_PREFERRED if b in bk_all), bk_all)
        else:
            bk_all = list(range(TL2_BK_MULTIPLE, MAX_BK + 1, TL2_BK_MULTIPLE))
            bks = _ordered(_TL2_BK_PREFERRED, bk_all)
        BM_all = [b for b in range(bm, M + 1, bm) if M % b == 0]
        BMs = _ordered(tuple(b for b in _BM_PREFERRED if b in BM_all), BM_all)
        for BK in bks:
            for BM in BMs:
                t = TLTiling(BM, BK, bm)
                if t not in seen and is_legal(layout, M, K, t):
                    seen.add(t)
                    yield t


def default_tiling(layout: str, M: int, K: int) -> TLTiling:
    """The preset for (M, K) when known, else the first legal tiling of the search in
    :func:`candidate_tilings`; CodecError when the shape has no legal tiling at all."""
    for t in candidate_tilings(layout, M, K):
        return t
    why = "M must be a multiple of 32" if M % 32 else (
        "K must be a multiple of 8 (bm=32) or 4 (bm=64) with a divisor BK <= 256"
        if layout == "tl1" else "K must be >= 256 with (K % BK) % 32 == 0 for some BK in 24..256 step 24")
    raise CodecError(f"{layout}: shape (M, K) = ({M}, {K}) has no legal tiling ({why})")


# ---------------------------------------------------------------------------------------------
# Per-model presets (docs/kernels.md#56-presets-per-model)
# ---------------------------------------------------------------------------------------------
#
# bitnet.cpp compiles a TL tiling per (M, K) into its kernels from one model's table:
# microsoft/BitNet:setup_env.py `gen_code` runs utils/codegen_tl{1,2}.py with `--model X --BM ..
# --BK .. --bm ..`, one list entry per shape of codegen's `ModelShapeDict[X]`, and the converter
# (utils/convert-hf-to-gguf-bitnet.py `preprocess_weights_tl{1,2}`) reads the tiling of each
# tensor back from the generated include/kernel_config.ini by (M, K). The lists below are those
# of `gen_code`, one tiling per *role* of a projection, in ModelShapeDict's order:
#   bitnet_b1_58-large / -3B: [ffn_down (H, I)], [attention (H, H)], [ffn_gate/up (I, H)];
#   Llama3-8B-1.58-100B-tokens: [ffn_gate/up (I, H)], [ffn_down (H, I)], [attn_k/v (KV, H)], [attn_q/o (H, H)].
# setup_env.py gives the 2B-4T the 3B lists (`--model bitnet_b1_58-3B`) and every Falcon3 /
# Falcon-E model the Llama3-8B lists (`--model Llama3-8B-1.58-100B-tokens`), so bitnet.cpp only
# ever generates kernels for the 3B / Llama3-8B shapes (docs/kernels.md#55-known-configuration-bugs):
# a file of those models exists only where a user added the model's own shapes to
# ModelShapeDict. Their presets here are the same lists applied by role to the model's own
# shapes; where a listed BM does not divide M (which codegen's `M % BM == 0` assert refuses too)
# the largest legal BM below it is taken and the preset's notes say so.

# Roles: ffn_up stands for ffn_gate too (same shape, same kernel).
ROLES = ("attn_qo", "attn_kv", "ffn_up", "ffn_down")


def _lists(attn_qo, attn_kv, ffn_up, ffn_down) -> dict[str, TLTiling]:
    return {"attn_qo": TLTiling(*attn_qo), "attn_kv": TLTiling(*attn_kv),
            "ffn_up": TLTiling(*ffn_up), "ffn_down": TLTiling(*ffn_down)}


# microsoft/BitNet:setup_env.py gen_code, by role. The 1bitLLM models are MHA: their one
# attention entry tiles q, k, v and o alike.
_SETUP_ENV_LISTS: dict[str, dict[str, dict[str, TLTiling]]] = {
    "tl1": {
        # --BM 256,128,256 --BK 128,64,128 --bm 32,64,32
        "large": _lists((128, 64, 64), (128, 64, 64), (256, 128, 32), (256, 128, 32)),
        # --BM 160,320,320 --BK 64,128,64 --bm 32,64,32
        "3B": _lists((320, 128, 64), (320, 128, 64), (320, 64, 32), (160, 64, 32)),
        # --BM 256,128,256,128 --BK 128,64,128,64 --bm 32,64,32,64
        "llama": _lists((128, 64, 64), (256, 128, 32), (256, 128, 32), (128, 64, 64)),
    },
    "tl2": {
        # --BM 256,128,256 --BK 96,192,96 --bm 32,32,32
        "large": _lists((128, 192, 32), (128, 192, 32), (256, 96, 32), (256, 96, 32)),
        # --BM 160,320,320 --BK 96,96,96 --bm 32,32,32
        "3B": _lists((320, 96, 32), (320, 96, 32), (320, 96, 32), (160, 96, 32)),
        # --BM 256,128,256,128 --BK 96,96,96,96 --bm 32,32,32,32
        "llama": _lists((128, 96, 32), (256, 96, 32), (256, 96, 32), (128, 96, 32)),
    },
}

# microsoft/BitNet:preset_kernels/Llama3-8B-1.58-100B-tokens/kernel_config_tl1.ini
# (docs/kernels.md#54-preset-kernels): the pretuned TL1 kernels (`setup_env.py --use-pretuned`)
# differ from gen_code's lists for every Llama3-8B shape. The other preset_kernels files agree with
# gen_code, except the large model's TL2 (4096, 1536) entry, which lists bm = 64: TL2 admits only
# bm == 32 (codegen_tl2.py asserts it; with bm = 64 the converter's by = 192 // 64 = 3 leaves one
# triple group per byte and its `weight[..., 1]` indexing fails, so no file can have been written
# with it), so it is the gen_code value, bm = 32.
_LLAMA3_8B_PRETUNED_TL1 = _lists((128, 64, 32), (128, 64, 64), (256, 128, 64), (256, 128, 32))


@dataclass(frozen=True)
class ModelPreset:
    """The tiling bitnet.cpp gives each projection shape of one model, for one TL layout.

    ``name`` is what ``tl_tiling=`` / ``--tl-tiling`` accepts to force this preset (one model
    can have several, e.g. ``Llama3-8B-1.58-100B-tokens:pretuned``); ``tilings`` maps torch
    (M, K) to its tiling; ``source`` cites where the values come from; ``notes`` say where they
    were adapted to the model's shapes."""

    name: str
    layout: str
    tilings: Mapping[tuple[int, int], TLTiling]
    source: str
    notes: tuple[str, ...] = ()

    def covers(self, shapes: Iterable[tuple[int, int]]) -> bool:
        return all(tuple(s) in self.tilings for s in shapes)


def role_shapes(hidden: int, ffn: int, kv: int) -> dict[str, tuple[int, int]]:
    """Torch (M, K) of each role for a model of hidden size H, FFN size I, K/V width KV."""
    return {"attn_qo": (hidden, hidden), "attn_kv": (kv, hidden), "ffn_up": (ffn, hidden), "ffn_down": (hidden, ffn)}


def _fit(layout: str, M: int, K: int, t: TLTiling) -> tuple[TLTiling, str | None]:
    """``t`` when legal at (M, K); else the same BK and bm with the largest legal BM below t.BM,
    and a note saying why."""
    if is_legal(layout, M, K, t):
        return t, None
    step = t.bm if layout == "tl1" else TL2_BM_SMALL
    for BM in range(t.BM - t.BM % step, 0, -step):
        u = TLTiling(BM, t.BK, t.bm)
        if is_legal(layout, M, K, u):
            why = "; ".join(tiling_violations(layout, M, K, t))
            return u, f"({M}, {K}): BM {t.BM} -> {BM} ({why})"
    raise AssertionError(f"no BM <= {t.BM} fits {layout} ({M}, {K}) with BK {t.BK}, bm {t.bm}")  # pragma: no cover


def _model_preset(name: str, layout: str, dims: tuple[int, int, int], lists: dict[str, TLTiling],
                  source: str, kv_note: str | None = None) -> ModelPreset:
    tilings: dict[tuple[int, int], TLTiling] = {}
    notes: list[str] = [kv_note] if kv_note else []
    for role, (M, K) in role_shapes(*dims).items():
        t, note = _fit(layout, M, K, lists[role])
        if tilings.get((M, K), t) != t:
            raise AssertionError(f"{name} {layout}: two roles give ({M}, {K}) two tilings")  # pragma: no cover
        tilings[(M, K)] = t
        if note:
            notes.append(note)
    return ModelPreset(name, layout, MappingProxyType(tilings), source, tuple(notes))


_GEN_CODE = "microsoft/BitNet:setup_env.py gen_code"
# (name, (H, I, KV), which gen_code lists, how setup_env.py treats the model)
_MODELS: tuple[tuple[str, tuple[int, int, int], str, str], ...] = (
    ("bitnet_b1_58-large", (1536, 4096, 1536), "large", f"{_GEN_CODE} (--model bitnet_b1_58-large)"),
    ("bitnet_b1_58-3B", (3200, 8640, 3200), "3B", f"{_GEN_CODE} (--model bitnet_b1_58-3B)"),
    ("Llama3-8B-1.58-100B-tokens", (4096, 14336, 1024), "llama", f"{_GEN_CODE} (--model Llama3-8B-1.58-100B-tokens)"),
    ("BitNet-b1.58-2B-4T", (2560, 6912, 640), "3B",
     f"{_GEN_CODE}: the 2B-4T gets the bitnet_b1_58-3B lists, applied here by role to its own shapes"),
    ("Falcon3-1B-1.58bit", (2048, 8192, 1024), "llama",
     f"{_GEN_CODE}: Falcon models get the Llama3-8B lists, applied here by role to their own shapes"),
    ("Falcon3-3B-1.58bit", (3072, 9216, 1024), "llama",
     f"{_GEN_CODE}: Falcon models get the Llama3-8B lists, applied here by role to their own shapes"),
    ("Falcon3-7B-1.58bit", (3072, 23040, 1024), "llama",
     f"{_GEN_CODE}: Falcon models get the Llama3-8B lists, applied here by role to their own shapes"),
    ("Falcon3-10B-1.58bit", (3072, 23040, 1024), "llama",
     f"{_GEN_CODE}: Falcon models get the Llama3-8B lists, applied here by role to their own shapes"),
)
# The 2B-4T has GQA (k/v are 640 x 2560) but the 3B lists it borrows are MHA: k/v take the
# attention entry, as they do in the 3B.
_KV_NOTE = {"BitNet-b1.58-2B-4T": "attn_k/v (640, 2560) take the attention entry (the 3B lists are MHA)"}


def _build_model_presets() -> tuple[ModelPreset, ...]:
    out = []
    for layout in TL_LAYOUTS:
        for name, dims, lists, source in _MODELS:
            out.append(_model_preset(name, layout, dims, _SETUP_ENV_LISTS[layout][lists], source, _KV_NOTE.get(name)))
        if layout == "tl1":
            out.append(_model_preset(
                "Llama3-8B-1.58-100B-tokens:pretuned", "tl1", (4096, 14336, 1024), _LLAMA3_8B_PRETUNED_TL1,
                "microsoft/BitNet:preset_kernels/Llama3-8B-1.58-100B-tokens/kernel_config_tl1.ini (setup_env.py --use-pretuned)",
            ))
    return tuple(out)


MODEL_PRESETS: tuple[ModelPreset, ...] = _build_model_presets()
# Models of bitnet.cpp's supported-models table without a preset: their shapes are open
# (docs/formats.md#61-hyper-parameters); a TL file of one needs tl_tiling= / --tl-tiling.
MODELS_WITHOUT_PRESET = ("Falcon-E-1B", "Falcon-E-3B")


def _flat(layout: str) -> dict[tuple[int, int], TLTiling]:
    """(M, K) -> tiling over the gen_code presets of ``layout`` (the ``:pretuned`` variants left
    out); a shape two models tile differently would be left out too (none is today)."""
    out: dict[tuple[int, int], TLTiling] = {}
    clash: set[tuple[int, int]] = set()
    for p in MODEL_PRESETS:
        if p.layout != layout or ":" in p.name:
            continue
        for shape, t in p.tilings.items():
            if out.setdefault(shape, t) != t:
                clash.add(shape)
    return {s: t for s, t in out.items() if s not in clash}


# The preset of each (M, K): what writers use by default (default_tiling) for a shape of a known model.
TL1_PRESETS: dict[tuple[int, int], TLTiling] = _flat("tl1")
TL2_PRESETS: dict[tuple[int, int], TLTiling] = _flat("tl2")


def preset_names() -> tuple[str, ...]:
    """Every preset name ``tl_tiling=`` accepts, in table order (one per model and variant)."""
    return tuple(dict.fromkeys(p.name for p in MODEL_PRESETS))


def named_preset(layout: str, name: str) -> ModelPreset:
    """The preset called ``name`` (case-insensitive) for ``layout``; ConfigError naming the known
    ones when there is none."""
    _check_layout(layout)
    key = name.strip().lower()
    for p in MODEL_PRESETS:
        if p.layout == layout and p.name.lower() == key:
            return p
    known = [n for n in preset_names() if any(p.layout == layout and p.name == n for p in MODEL_PRESETS)]
    raise ConfigError(f"no {layout} preset named {name!r}; known: {', '.join(known)}")


@dataclass(frozen=True)
class PresetMatch:
    """The tilings the presets give a file's shapes, and every preset that agrees on them (the
    shapes of Falcon3-7B and -10B are the same, for one)."""

    layout: str
    tilings: Mapping[tuple[int, int], TLTiling]
    presets: tuple[ModelPreset, ...]

    @property
    def label(self) -> str:
        return " = ".join(p.name for p in self.presets)


def _fmt_tiling(t: TLTiling) -> str:
    return f"{t.BM},{t.BK},{t.bm}"


def _fmt_shapes(shapes: Iterable[tuple[int, int]]) -> str:
    return ", ".join(f"({M}, {K})" for M, K in sorted(shapes))


def common_tilings(layout: str, shapes: Iterable[tuple[int, int]], limit: int = 3) -> list[TLTiling]:
    """Up to ``limit`` tilings legal for every shape at once, in the search order of
    :func:`candidate_tilings` for the first shape: what one ``--tl-tiling BM,BK,bm`` could be."""
    shapes = sorted(set(shapes))
    if not shapes:
        return []
    out = []
    for t in candidate_tilings(layout, *shapes[0]):
        if all(is_legal(layout, M, K, t) for M, K in shapes[1:]):
            out.append(t)
            if len(out) == limit:
                break
    return out


def match_presets(layout: str, shapes: Iterable[tuple[int, int]]) -> PresetMatch:
    """The preset tilings of a TL file whose ``layout`` tensors have these torch (M, K) shapes.

    The model is recognised by the whole set of shapes: every preset that lists all of them is
    a candidate. When the candidates agree on every shape, that is the answer; when they
    disagree (the same shapes, two tilings: Llama3-8B's gen_code and pretuned TL1 kernels), or
    when no preset lists them all, CodecError names the shapes and the candidates, since a wrong
    tiling reads as wrong weights without any error."""
    _check_layout(layout)
    shapes = sorted({_check_shape(M, K) for M, K in shapes})
    found = tuple(p for p in MODEL_PRESETS if p.layout == layout and p.covers(shapes))
    if not found:
        near = [p.name for p in MODEL_PRESETS if p.layout == layout and any(s in p.tilings for s in shapes)]
        common = common_tilings(layout, shapes)
        hint = (f"tilings legal for every shape: {'; '.join(_fmt_tiling(t) for t in common)}" if common
                else "no single tiling is legal for every shape")
        part = f"; some shapes are in the presets of {', '.join(near)}" if near else ""
        raise CodecError(
            f"{layout}: the tensor shapes (M, K) {_fmt_shapes(shapes)} match no bitnet.cpp preset "
            f"(presets: {', '.join(n for n in preset_names() if ':' not in n)}; none for "
            f"{', '.join(MODELS_WITHOUT_PRESET)}){part}; the file does not record its tiling, so pass it: "
            f"--tl-tiling BM,BK,bm / load(tl_tiling='BM,BK,bm') ({hint})"
        )
    first = found[0].tilings
    disagree = [p for p in found[1:] if any(p.tilings[s] != first[s] for s in shapes)]
    if disagree:
        def described(p: ModelPreset) -> str:
            return f"{p.name} ({'; '.join(f'({M}, {K}) {_fmt_tiling(p.tilings[(M, K)])}' for M, K in shapes)})"

        raise CodecError(
            f"{layout}: the tensor shapes (M, K) {_fmt_shapes(shapes)} are in presets that tile them "
            f"differently: {' | '.join(described(p) for p in found)}; the file does not record which, so "
            f"pass one: --tl-tiling NAME / load(tl_tiling='NAME')"
        )
    return PresetMatch(layout, MappingProxyType({s: first[s] for s in shapes}), found)


def parse_tl_tiling(spec: Any) -> "TLTiling | str | dict | None":
    """A user's TL tiling request, checked: None; a `TLTiling` (every TL tensor); a string
    ``"BM,BK,bm"`` (the same; ``/`` also separates) or a preset name from :func:`preset_names`
    (returned as that name); a mapping ``{(M, K) or tensor name: TLTiling or "BM,BK,bm"}``.
    Anything else is a ConfigError naming what was given and what is accepted."""
    if spec is None or isinstance(spec, TLTiling):
        return spec
    if isinstance(spec, str):
        text = spec.strip()
        parts = text.replace("/", ",").split(",")
        if len(parts) == 3 and all(p.strip().lstrip("+-").isdigit() for p in parts):
            BM, BK, bm = (int(p) for p in parts)
            if min(BM, BK, bm) <= 0:
                raise ConfigError(f"tl_tiling {spec!r}: BM, BK, bm must be positive")
            return TLTiling(BM, BK, bm)
        for name in preset_names():
            if name.lower() == text.lower():
                return name
        raise ConfigError(
            f"tl_tiling {spec!r} is neither 'BM,BK,bm' (three positive integers, e.g. '256,128,32') "
            f"nor a preset name ({', '.join(preset_names())})"
        )
    if isinstance(spec, Mapping):
        out: dict = {}
        for k, v in spec.items():
            t = parse_tl_tiling(v) if isinstance(v, str) else v
            if not isinstance(t, TLTiling):
                raise ConfigError(f"tl_tiling[{k!r}] must be a TLTiling or 'BM,BK,bm', got {v!r}")
            if isinstance(k, tuple) and len(k) == 2:
                k = _check_shape(*k)
            elif not isinstance(k, str):
                raise ConfigError(f"tl_tiling keys are (M, K) shapes or tensor names, got {k!r}")
            out[k] = t
        return out
    raise ConfigError(
        f"tl_tiling must be None, a TLTiling, 'BM,BK,bm', a preset name or a mapping of them; "
        f"got {type(spec).__name__} {spec!r:.60}"
    )


def writer_tiling(layout: str, M: int, K: int, request: Any, name: str | None = None) -> TLTiling:
    """The tiling a writer (convert, dummy) uses for one (M, K) tensor called ``name``, from a
    user's request as :func:`parse_tl_tiling` accepts it: None → :func:`default_tiling`; one
    tiling → it, validated; a preset name → that preset's tiling for (M, K) (an error when the
    preset has none for this shape); a mapping → the entry for ``name`` or (M, K), else the
    default. Errors name the tensor and its shape."""
    req = parse_tl_tiling(request)
    who = f"{name + ' ' if name else ''}(M, K) = ({M}, {K})"
    if isinstance(req, str):
        preset = named_preset(layout, req)
        chosen = preset.tilings.get((M, K))
        if chosen is None:
            raise ConfigError(f"{who}: the {layout} preset {preset.name} has no tiling for this shape "
                              f"(it covers {', '.join(f'{m}x{k}' for m, k in sorted(preset.tilings))})")
    elif isinstance(req, Mapping):
        chosen = (req.get(name) if name is not None else None) or req.get((M, K))
    else:
        chosen = req
    try:
        return default_tiling(layout, M, K) if chosen is None else validate_tiling(layout, M, K, chosen)
    except BitnetLabError as e:  # the user's tiling request does not fit: a configuration error
        raise ConfigError(f"{who}: {e}") from None

