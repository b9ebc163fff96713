"""TL1 / TL2 tiling: the legal (BM, BK, bm) for a weight shape, the published presets, and a
small documented search for shapes no preset covers.

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

from dataclasses import dataclass

import operator
from typing import Iterator

from bitnet_lab.errors import CodecError

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

# docs/kernels.md#54-preset-kernels (BitNet:preset_kernels/*/kernel_config_tl{1,2}.ini), keyed by torch
# (M, K). Model of each entry: large = 1bitLLM/bitnet_b1_58-large, 3B = bitnet_b1_58-3B,
# 8B = HF1BitLLM/Llama3-8B-1.58-100B-tokens.
TL1_PRESETS: dict[tuple[int, int], TLTiling] = {
    (1536, 4096): TLTiling(256, 128, 32),   # large ffn_down
    (1536, 1536): TLTiling(128, 64, 64),    # large attn q/k/v/o
    (4096, 1536): TLTiling(256, 128, 32),   # large ffn_gate/up
    (3200, 8640): TLTiling(160, 64, 32),    # 3B ffn_down
    (3200, 3200): TLTiling(320, 128, 64),   # 3B attn
    (8640, 3200): TLTiling(320, 64, 32),    # 3B ffn_gate/up
    (14336, 4096): TLTiling(256, 128, 64),  # 8B ffn_gate/up
    (4096, 14336): TLTiling(256, 128, 32),  # 8B ffn_down
    (1024, 4096): TLTiling(128, 64, 64),    # 8B attn_k/v
    (4096, 4096): TLTiling(128, 64, 32),    # 8B attn_q/o
}

TL2_PRESETS: dict[tuple[int, int], TLTiling] = {
    (1536, 4096): TLTiling(256, 96, 32),
    (1536, 1536): TLTiling(128, 192, 32),
    # † docs/kernels.md#54-preset-kernels lists bm = 64 for this preset. We record bm = 32 instead: TL2 admits
    # only bm == 32 (codegen_tl2.py asserts it; with bm = 64 the converter's by = 192 // 64 = 3
    # leaves one triple group per byte and its `weight[..., 1]` indexing fails, so no file can
    # have been written with it), and setup_env.py generates this shape with bm = 32.
    (4096, 1536): TLTiling(256, 96, 32),
    (3200, 8640): TLTiling(160, 96, 32),
    (3200, 3200): TLTiling(320, 96, 32),
    (8640, 3200): TLTiling(320, 96, 32),
    (14336, 4096): TLTiling(256, 96, 32),
    (4096, 14336): TLTiling(128, 96, 32),
    (1024, 4096): TLTiling(256, 96, 32),
    (4096, 4096): TLTiling(128, 96, 32),
}

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
