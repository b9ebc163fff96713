"""ggml tensor type ids as they appear in GGUF files, keyed by the raw id (docs/formats.md#2-ggml-type-ids).

Two numberings meet in BitNet files: upstream ggml (ggml-org/llama.cpp) and the bitnet.cpp
fork (Eddie-Wang1120/llama.cpp). They agree up to 35 and disagree from 36 on:

    id   upstream                       bitnet.cpp fork
    36   IQ4_NL_4_4 (removed)           I2_S
    37   IQ4_NL_4_8 (removed)           I8_S (in-memory only, never in a file)
    38   IQ4_NL_8_8 (removed)           TL1
    39   MXFP4                          TL2

So a raw id alone does not say what a tensor is. ``resolve_type`` decides ids 36, 38 and 39 from
the file's provenance (``general.architecture``, ``general.file_type``) and cross-checks the
decision against the bytes the tensor actually occupies (its offset gap), and refuses with a
message that says which reading failed and why when the evidence disagrees.

Sizes:

- block types (F32, F16, BF16, Q8_0, Q6_K, TQ1_0, TQ2_0): ``rows · (ne0 / block) · block_bytes``;
- ternary fork types (I2_S, TL1, TL2): **never** from a block table (the fork declares them
  ``blck_size = type_size = 1`` and special-cases ``ggml_nbytes``,
  docs/formats.md#13-rules-for-a-reader-of-bitnet-files). Their sizes come from the codec module
  ``bitnet_lab.quant.packing``.

This module is pure Python (no numpy), and knows nothing about files.
"""

from __future__ import annotations

from dataclasses import dataclass
import struct
from typing import Any, Mapping, Optional, Union

from gguf import GGUFValueType

from bitnet_lab.errors import BitnetLabError, GGUFError, UnsupportedTypeError
from bitnet_lab.quant.tiling import TLTiling

# --------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GGMLType:
    """One ggml type id.

    ``block_elems``/``block_bytes`` are set for the block types whose size follows the generic
    block arithmetic (and for the alternative upstream readings of 36/38/39, used only to
    explain a refusal); ``None`` for the fork's ternary types, whose sizes are per-type
    formulas. ``readable``: bitnet_lab builds tensors of this type. ``layout``: the ternary
    layout name (``tensors.TERNARY_LAYOUTS``) for ternary types, else ``None``.
    """

    id: int
    name: str
    block_elems: Optional[int] = None
    block_bytes: Optional[int] = None
    readable: bool = False
    layout: Optional[str] = None
    note: str = ""

    def block_nbytes(self, dims: tuple[int, ...]) -> int:
        """Bytes of a tensor of ggml-order ``dims`` for a block type (ne0 must be whole blocks)."""
        if self.block_elems is None or self.block_bytes is None:  # pragma: no cover - guarded
            raise GGUFError(f"type {self.id} ({self.name}) has no block size")
        ne0 = dims[0]
        rows = 1
        for d in dims[1:]:
            rows *= d
        return rows * (ne0 // self.block_elems) * self.block_bytes


# Types bitnet_lab reads. Float types give FloatTensor, the rest TernaryWeight.
_READ = {
    0: GGMLType(0, "F32", 1, 4, True),
    1: GGMLType(1, "F16", 1, 2, True),
    8: GGMLType(8, "Q8_0", 32, 34, True),
    14: GGMLType(14, "Q6_K", 256, 210, True),
    30: GGMLType(30, "BF16", 1, 2, True),
    34: GGMLType(34, "TQ1_0", 256, 54, True, "tq1_0"),
    35: GGMLType(35, "TQ2_0", 256, 66, True, "tq2_0"),
    36: GGMLType(36, "I2_S", None, None, True, "i2_s", "bitnet.cpp fork; upstream: removed IQ4_NL_4_4"),
    38: GGMLType(38, "TL1", None, None, True, "tl1", "bitnet.cpp fork; upstream: removed IQ4_NL_8_8"),
    39: GGMLType(39, "TL2", None, None, True, "tl2", "bitnet.cpp fork; upstream: MXFP4"),
}

# Names of every other id we know of (so errors can name them). Block sizes where they are
# standard ggml values (gguf-py GGML_QUANT_SIZES); they are never used to read data.
_KNOWN = {
    2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
    4: ("Q4_2 (removed)", None, None), 5: ("Q4_3 (removed)", None, None),
    6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 9: ("Q8_1", 32, 40),
    10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176), 15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74), 18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50), 20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82), 23: ("IQ4_XS", 256, 136),
    24: ("I8", 1, 1), 25: ("I16", 1, 2), 26: ("I32", 1, 4), 27: ("I64", 1, 8),
    28: ("F64", 1, 8), 29: ("IQ1_M", 256, 56),
    31: ("Q4_0_4_4 (removed)", None, None), 32: ("Q4_0_4_8 (removed)", None, None),
    33: ("Q4_0_8_8 (removed)", None, None),
    37: ("I8_S (bitnet.cpp in-memory activations; never in a file)", None, None),
    40: ("NVFP4 (upstream)", 64, 36), 41: ("Q1_0 (upstream)", 128, 18),
    42: ("Q2_0 (newer upstream)", None, None),
}

TYPES: dict[int, GGMLType] = dict(_READ)
for _id, (_name, _be, _bb) in _KNOWN.items():
    TYPES[_id] = GGMLType(_id, _name, _be, _bb, False)

# Alternative (upstream) readings of the clashing ids, used to explain a refusal.
UPSTREAM_READING = {
    36: GGMLType(36, "IQ4_NL_4_4 (upstream, removed)", 32, 18),
    38: GGMLType(38, "IQ4_NL_8_8 (upstream, removed)", 32, 18),
    39: GGMLType(39, "MXFP4 (upstream)", 32, 17),
}

BY_NAME: dict[str, GGMLType] = {t.name: t for t in _READ.values()}
TERNARY_TYPE_IDS = frozenset(t.id for t in _READ.values() if t.layout is not None)
LAYOUT_TO_TYPE: dict[str, GGMLType] = {t.layout: t for t in _READ.values() if t.layout}

# general.architecture values written by bitnet.cpp / for BitNet models
# (docs/formats.md#51-architecture-strings).
BITNET_ARCHS = ("bitnet", "bitnet-25", "bitnet-b1.58")
# general.file_type values of the fork's llama_ftype (docs/formats.md#23-llama-file-types).
FTYPE_FORK_TL1 = 38
FTYPE_FORK_TL2 = 39
FTYPE_FORK_I2_S = 40


def type_name(type_id: int) -> str:
    """A printable name for any raw id, known or not."""
    t = TYPES.get(type_id)
    return t.name if t is not None else "unknown"


def describe(type_id: int) -> str:
    """``"type 12 (Q4_K)"``: how errors name a type."""
    return f"type {type_id} ({type_name(type_id)})"


def get_readable(type_id: int, *, tensor: str = "") -> GGMLType:
    """The table entry of a type we read, or ``UnsupportedTypeError`` naming id and name."""
    t = TYPES.get(type_id)
    where = f"tensor {tensor!r}: " if tensor else ""
    if t is None:
        raise UnsupportedTypeError(f"{where}ggml type id {type_id} is unknown (not an upstream or bitnet.cpp type)")
    if not t.readable:
        readable = ", ".join(f"{x.name}" for x in _READ.values())
        raise UnsupportedTypeError(f"{where}{describe(type_id)} is not supported; bitnet_lab reads {readable}")
    return t


def by_name(name: str) -> GGMLType:
    """Look up a readable type by its name (``"I2_S"``, ``"F16"``, ...), case-insensitive."""
    t = BY_NAME.get(name.upper())
    if t is None:
        raise UnsupportedTypeError(
            f"ggml type {name!r} is not one bitnet_lab writes; use one of {', '.join(BY_NAME)}"
        )
    return t


# --------------------------------------------------------------------------------------------
# Sizes
# --------------------------------------------------------------------------------------------


def _packing():
    # Imported lazily: the codecs are numpy modules, this table is not.
    from bitnet_lab.quant import packing

    return packing


def pad_to(n: int, alignment: int) -> int:
    """``n`` rounded up to a multiple of ``alignment`` (a power of two)."""
    return (n + alignment - 1) // alignment * alignment


# the hidden 32-byte scale slot after a TL tensor (docs/formats.md#42-tl1-and-tl2-hidden-scale-slot)
TL_SCALE_SLOT = 32


def shape_problem(t: GGMLType, dims: tuple[int, ...]) -> Optional[str]:
    """Why ``dims`` (ggml order) cannot hold a tensor of type ``t``, or None if they can.

    Layout constraints (docs/formats.md#22-block-sizes-of-the-non-ternary-types,
    docs/formats.md#3-ternary-byte-layouts): block types need whole blocks along ne0; ternary types are 2-D
    weights [K, M] with I2_S ``K % 128 == 0`` (128-weight blocks stay in a row), TQ ``K % 256 == 0``; TL1/TL2
    need an even K (pairs) — their tiling constraints are checked when the tiling is known.
    """
    if t.layout is not None:
        if len(dims) < 2 or any(d != 1 for d in dims[2:]):
            return f"{t.name} is a 2-D weight [K, M], got dims {list(dims)}"
        K = dims[0]
        if t.layout == "i2_s" and K % 128:
            return f"I2_S needs K % 128 == 0 (128-weight blocks per row), got K = {K}"
        if t.layout in ("tq1_0", "tq2_0") and K % 256:
            return f"{t.name} needs K % 256 == 0 (256-weight blocks per row), got K = {K}"
        if t.layout in ("tl1", "tl2") and K % 2:
            return f"{t.name} needs an even K, got K = {K}"
        return None
    if t.block_elems and dims[0] % t.block_elems:
        return f"{t.name} needs ne0 % {t.block_elems} == 0 (whole blocks per row), got ne0 = {dims[0]}"
    return None


def data_nbytes(t: GGMLType, dims: tuple[int, ...]) -> int:
    """Bytes of the tensor's blob as declared in the file, hidden TL slot excluded.

    - float / block types: block arithmetic;
    - every ternary type from its codec's size formula (``packing.ternary_blob_nbytes``):
    - TQ1_0 / TQ2_0: ``M·K/256`` blocks of 54 / 66 bytes;
    - I2_S: ``M·K/4 + 32`` (packed codes + the 32-byte tail whose first f32 is the scale);
    - TL1: ``M·K/4`` packed indices;
    - TL2: the converter's zero-padded size ``(K−256)·M/3·5/8 + 256·M/2·4/8``
      (``packing.tl2_padded_nbytes``; the fork's ``ggml_nbytes`` is that padded to 32, + 32).

    The caller must have checked ``shape_problem`` first.
    """
    if t.layout is None:
        return t.block_nbytes(dims)
    M, K = dims[1], dims[0]
    return int(_packing().ternary_blob_nbytes(t.layout, M, K))


def span_nbytes(t: GGMLType, dims: tuple[int, ...]) -> int:
    """Bytes the tensor occupies from its offset: the blob, plus for TL1/TL2 the padding to 32
    and the hidden 32-byte scale slot (docs/formats.md#42-tl1-and-tl2-hidden-scale-slot)."""
    n = data_nbytes(t, dims)
    if t.layout in ("tl1", "tl2"):
        return pad_to(n, 32) + TL_SCALE_SLOT
    return n


# --------------------------------------------------------------------------------------------
# Resolving the clashing ids 36, 38, 39
# --------------------------------------------------------------------------------------------


def _provenance(metadata: Mapping[str, Any]) -> tuple[Any, Any]:
    return metadata.get("general.architecture"), metadata.get("general.file_type")


def resolve_type(
    type_id: int,
    dims: tuple[int, ...],
    metadata: Mapping[str, Any],
    *,
    room: int,
    alignment: int,
    exact_room: bool,
    tensor: str = "",
) -> GGMLType:
    """The type a tensor with raw ``type_id`` really is, or a GGUFError / UnsupportedTypeError.

    ``room``: bytes from the tensor's offset to the next tensor's offset (``exact_room=True``,
    after alignment padding) or to the end of the file (``exact_room=False``, last tensor).
    For ids without a clash this is just the table lookup (sizes are checked by the caller).
    """
    if type_id in (36, 38, 39):
        return resolve_fork_type(
            type_id, dims, metadata, room=room, alignment=alignment, exact_room=exact_room, tensor=tensor
        )
    return get_readable(type_id, tensor=tensor)


def resolve_fork_type(
    type_id: int,
    dims: tuple[int, ...],
    metadata: Mapping[str, Any],
    *,
    room: int,
    alignment: int,
    exact_room: bool,
    tensor: str = "",
) -> GGMLType:
    """Decide 36 (I2_S vs removed IQ4_NL_4_4), 38 (TL1 vs removed IQ4_NL_8_8), 39 (TL2 vs MXFP4).

    Evidence, in order (docs/formats.md#21-upstream-ggml-vs-the-bitnetcpp-fork):

    1. provenance: ``general.architecture`` in BITNET_ARCHS, or ``general.file_type`` equal to
       the fork's ftype for that tensor type (38 TL1, 39 TL2; 40 for I2_S) says "fork";
    2. size arithmetic: the fork reading's span (formula of packing.py, + hidden slot for TL)
       and the upstream reading's span (``n/32 · 17`` for MXFP4, ``n/32 · 18`` for the removed
       IQ4_NL_x_y) compared with the bytes the tensor has (offset gap / file end).

    For 36 and 38 the upstream readings are types that upstream removed before any BitNet file
    existed, so the fork reading is the default and only the sizes can overrule it. For 39,
    MXFP4 is live upstream, so without provenance the fork reading (TL2) is refused.
    """
    fork = _READ[type_id]
    up = UPSTREAM_READING[type_id]
    where = f"tensor {tensor!r}: " if tensor else ""
    arch, ftype = _provenance(metadata)
    fork_ftype = {36: FTYPE_FORK_I2_S, 38: FTYPE_FORK_TL1, 39: FTYPE_FORK_TL2}[type_id]
    says_fork = arch in BITNET_ARCHS or ftype == fork_ftype
    why = (
        f"general.architecture = {arch!r}, general.file_type = {ftype!r}"
        + (" (bitnet.cpp provenance)" if says_fork else " (no bitnet.cpp provenance)")
    )

    # Size of each reading (None when the dims cannot hold it at all).
    problem = shape_problem(fork, dims)
    fork_span: Optional[int] = None
    fork_err = problem
    if problem is None:
        try:
            fork_span = span_nbytes(fork, dims)
        except BitnetLabError as e:  # CodecError from the size formula: impossible shape
            fork_err = str(e)
    up_span = up.block_nbytes(dims) if dims[0] % 32 == 0 else None
    kind = "up to the next tensor" if exact_room else "up to the end of the file"

    def fits(span: Optional[int]) -> bool:
        return span is not None and span <= room

    def exact(span: Optional[int]) -> bool:
        # What a contiguous writer produces: the next tensor starts right after the padding;
        # the last tensor ends the file with or without its padding.
        if span is None:
            return False
        padded = pad_to(span, alignment)
        return room == padded if exact_room else span <= room <= padded

    fork_fits, fork_exact, up_fits, up_exact = fits(fork_span), exact(fork_span), fits(up_span), exact(up_span)
    fork_txt = (
        f"as {fork.name} it needs {fork_span} bytes"
        if fork_span is not None
        else f"as {fork.name} it is impossible ({fork_err})"
    )
    up_txt = (
        f"as {up.name} it would need {up_span} bytes"
        if up_span is not None
        else f"as {up.name} it is impossible (ne0 = {dims[0]} is not a multiple of 32)"
    )
    evidence = f"{why}; {fork_txt}, {up_txt}; the tensor has {room} bytes {kind}"
    if type_id == 39 and not says_fork:
        raise UnsupportedTypeError(
            f"{where}type 39 read as MXFP4 (upstream meaning), which bitnet_lab does not support: {evidence}. "
            "If this is a bitnet.cpp TL2 file, its general.architecture / general.file_type (39) are missing"
        )
    if fork_fits and not (up_exact and not fork_exact):
        return fork
    if up_fits:
        raise UnsupportedTypeError(
            f"{where}type {type_id} does not read as {fork.name}: the bytes match {up.name} instead, "
            f"which bitnet_lab does not support ({evidence})"
        )
    if fork_span is None:
        raise GGUFError(f"{where}type {type_id} cannot be {fork.name} with dims {list(dims)}: {fork_err} ({evidence})")
    raise GGUFError(f"{where}type {type_id} read as {fork.name} does not fit the file: {evidence}")


def resolve_type_39(
    dims: tuple[int, ...],
    metadata: Mapping[str, Any],
    *,
    room: int,
    alignment: int = 32,
    exact_room: bool = True,
    tensor: str = "",
) -> GGMLType:
    """Type id 39: TL2 (bitnet.cpp fork) or MXFP4 (upstream); see ``resolve_fork_type``."""
    return resolve_fork_type(39, dims, metadata, room=room, alignment=alignment, exact_room=exact_room, tensor=tensor)


# ---- GGUF container constants and value types (shared by the reader and the writer) -----------

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)  # v2 and v3 share the little-endian layout (u64 counts); v1 used u32
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4  # GGML_MAX_DIMS
# Our own key: the TL tiling per shape, as strings "M,K,BM,BK,bm" (the file format has none).
TL_TILING_KEY = "bitnet_lab.tl_tiling"

VT = GGUFValueType
# value type -> (struct format, size, numpy dtype) for fixed-size scalars
SCALARS: dict[int, tuple[str, int, str]] = {
    VT.UINT8: ("<B", 1, "<u1"),
    VT.INT8: ("<b", 1, "<i1"),
    VT.UINT16: ("<H", 2, "<u2"),
    VT.INT16: ("<h", 2, "<i2"),
    VT.UINT32: ("<I", 4, "<u4"),
    VT.INT32: ("<i", 4, "<i4"),
    VT.FLOAT32: ("<f", 4, "<f4"),
    VT.BOOL: ("<B", 1, "<u1"),
    VT.UINT64: ("<Q", 8, "<u8"),
    VT.INT64: ("<q", 8, "<i8"),
    VT.FLOAT64: ("<d", 8, "<f8"),
}
STRUCTS = {vt: struct.Struct(fmt) for vt, (fmt, _, _) in SCALARS.items()}
U32 = struct.Struct("<I")
U64 = struct.Struct("<Q")
INT_RANGES = {
    VT.UINT8: (0, 2**8 - 1), VT.INT8: (-(2**7), 2**7 - 1),
    VT.UINT16: (0, 2**16 - 1), VT.INT16: (-(2**15), 2**15 - 1),
    VT.UINT32: (0, 2**32 - 1), VT.INT32: (-(2**31), 2**31 - 1),
    VT.UINT64: (0, 2**64 - 1), VT.INT64: (-(2**63), 2**63 - 1),
}

MetaType = Union[GGUFValueType, tuple]  # a scalar type, or (ARRAY, element type [, ...])


def vt_name(v: int) -> str:
    try:
        return VT(v).name
    except ValueError:
        return f"unknown ({v})"


# ---- our TL tiling key ----------------------------------------------------------------------------

def parse_tiling_key(value: Any) -> dict[tuple[int, int], TLTiling]:
    """Our metadata key: a list of strings "M,K,BM,BK,bm" -> {(M, K): TLTiling}."""
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise GGUFError(f"metadata {TL_TILING_KEY!r} must be an array of strings 'M,K,BM,BK,bm', got {value!r:.80}")
    out: dict[tuple[int, int], TLTiling] = {}
    for s in value:
        parts = s.split(",")
        try:
            M, K, BM, BK, bm = (int(p) for p in parts)
        except ValueError:
            raise GGUFError(f"metadata {TL_TILING_KEY!r}: entry {s!r:.80} is not 'M,K,BM,BK,bm' (5 integers)") from None
        if min(M, K, BM, BK, bm) <= 0:
            raise GGUFError(f"metadata {TL_TILING_KEY!r}: entry {s!r} has a value <= 0")
        t = TLTiling(BM=BM, BK=BK, bm=bm)
        if out.get((M, K), t) != t:
            raise GGUFError(f"metadata {TL_TILING_KEY!r}: shape ({M}, {K}) has two tilings ({out[(M, K)]} and {t})")
        out[(M, K)] = t
    return out


def format_tiling_key(tilings: Mapping[tuple[int, int], TLTiling]) -> list[str]:
    return [f"{M},{K},{t.BM},{t.BK},{t.bm}" for (M, K), t in sorted(tilings.items())]
