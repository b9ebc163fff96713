"""GGUF: a validating memory-mapped reader and a streaming writer (docs/formats.md#1-the-gguf-container to
docs/formats.md#4-where-per-tensor-scales-live).

Reading
-------
``GGUFFile(path)`` parses the header, the metadata and the tensor infos with its own small
cursor over a read-only ``np.memmap`` (``struct.unpack_from``; gguf-py's ``GGUFReader`` cannot
open bitnet.cpp files, docs/formats.md#13-rules-for-a-reader-of-bitnet-files), then **validates everything
before any array is built**: magic, version, counts against the bytes left, every string and array
length, value types, duplicate keys and names, dims, alignment, offsets, each tensor's size from its type's
size arithmetic (ternary types from ``bitnet_lab.quant.packing``), the hidden TL scale slot,
overlaps, layout constraints. Every failure is a ``GGUFError`` (``UnsupportedTypeError`` for a
type we do not read) whose message names the key or tensor and the numbers.

``tensors()`` then hands out zero-copy views of the mapped file:

- F32 / F16 tensors: float32 / float16 arrays shaped in torch order; BF16: uint16 bit patterns;
  Q8_0 / Q6_K: the raw uint8 blocks (``FloatTensor.to_numpy()`` dequantises);
- I2_S: ``TernaryWeight.data`` = the packed codes (uint8 ``(M, K/4)``, tail excluded),
  ``scale`` = the first f32 of the 32-byte tail (the other 28 bytes are garbage in real files);
- TQ1_0 / TQ2_0: ``data`` = the whole block array (uint8 ``(M, K/256, block_bytes)``, the fp16
  ``d`` included), ``block_scales`` = those ``d`` extracted as float16 ``(M, K/256)`` (a copy);
- TL1 / TL2: ``data`` = the packed bytes as declared, ``scale`` = the f32 in the hidden slot at
  ``pad32(nbytes)``, ``tiling`` = from ``tl_tiling=``, our metadata key ``bitnet_lab.tl_tiling``
  or bitnet.cpp's preset of the model the file's TL shapes identify (``quant.tiling.match_presets``,
  docs/kernels.md#56-presets-per-model); ``GGUFFile.tl_tilings()`` tells which, per tensor.

Metadata values are plain Python: integers, floats, bools, ``str``; arrays are Python lists
(numeric arrays too, e.g. ``tokenizer.ggml.scores`` is a list of floats; nested arrays are lists
of lists). ``metadata_types`` keeps the GGUF value type of every key so a file can be rewritten
with the same types.

Writing
-------
``GGUFWriter`` is two-phase and streaming: declare metadata and tensors (each with a
``producer`` callable), then ``write()`` emits header, KV pairs and tensor infos with offsets
computed from the declared sizes, and calls each producer in turn, checking its size, so at most
one tensor is in memory. TL1/TL2 tensors get the hidden 32-byte scale slot after their data,
as bitnet.cpp's fork writer does (docs/formats.md#42-tl1-and-tl2-hidden-scale-slot). ``write_gguf`` writes a
dict of ``FloatTensor`` / ``TernaryWeight``. The writer lives in ``gguf_writer.py``; both names are
importable from here.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import numpy as np

from bitnet_lab.errors import BitnetLabError, GGUFError
from bitnet_lab.formats import ggml_types as gt
from bitnet_lab.formats.ggml_types import (
    DEFAULT_ALIGNMENT,
    GGUF_MAGIC,
    MAX_DIMS,
    MetaType,
    SCALARS,
    STRUCTS,
    SUPPORTED_VERSIONS,
    TL_TILING_KEY,
    U32,
    U64,
    VT,
    parse_tiling_key,
    vt_name,
    pad_to,
)
from bitnet_lab.tensors import FloatTensor, TernaryWeight
from bitnet_lab.quant.tiling import TLTiling

__all__ = [
    "GGUF_MAGIC",
    "GGUFFile",
    "TensorInfo",
    "TL_TILING_KEY",
    "TilingChoice",
    "open_gguf",
    "read_metadata",
]

MAX_ARRAY_NESTING = 8  # nested arrays deeper than this are refused (no recursion bombs)
HEADER_SIZE = 24  # magic, version, tensor_count, kv_count
# The fewest bytes one KV pair / tensor info can take: used to bound the counts by the file.
_MIN_KV_BYTES = 8 + 4 + 1  # key length (key may be empty), value type, a 1-byte value
_MIN_TI_BYTES = 8 + 4 + 8 + 4 + 8  # name length (name may be empty), n_dims, one dim, type, offset
# No ggml type stores more than 8 elements per byte (the densest, TL2/TQ1_0, store < 5).
_MAX_ELEMENTS_PER_BYTE = 8


# ============================================================================================
# Reading: the cursor
# ============================================================================================


class _Cursor:
    """A bounds-checked little-endian reader over a buffer. Every read names what it reads."""

    __slots__ = ("buf", "pos", "end")

    def __init__(self, buf: memoryview, pos: int = 0) -> None:
        self.buf = buf
        self.pos = pos
        self.end = len(buf)

    def left(self) -> int:
        return self.end - self.pos

    def need(self, n: int, what: str) -> None:
        if n > self.end - self.pos:
            raise GGUFError(
                f"truncated: {what} needs {n} bytes at offset {self.pos}, "
                f"only {self.end - self.pos} left (file size {self.end})"
            )

    def u32(self, what: str) -> int:
        self.need(4, what)
        (v,) = U32.unpack_from(self.buf, self.pos)
        self.pos += 4
        return v

    def u64(self, what: str) -> int:
        self.need(8, what)
        (v,) = U64.unpack_from(self.buf, self.pos)
        self.pos += 8
        return v

    def string(self, what: str) -> str:
        start = self.pos
        n = self.u64(f"{what} (string length)")
        if n > self.end - self.pos:
            raise GGUFError(
                f"{what}: string length {n} at offset {start} exceeds the {self.end - self.pos} "
                f"bytes left in the file (file size {self.end})"
            )
        raw = self.buf[self.pos : self.pos + n]
        try:
            s = str(raw, "utf-8")
        except UnicodeDecodeError as e:
            raise GGUFError(f"{what}: string at offset {start} is not valid UTF-8 ({e.reason} at byte {e.start})") from None
        self.pos += n
        return s

    def scalar(self, vt: int, what: str) -> Any:
        size = SCALARS[vt][1]
        self.need(size, what)
        (v,) = STRUCTS[vt].unpack_from(self.buf, self.pos)
        if vt == VT.BOOL:
            if v > 1:
                raise GGUFError(f"{what}: bool byte {v} at offset {self.pos} is neither 0 nor 1")
            v = bool(v)
        self.pos += size
        return v


def _read_value(cur: _Cursor, vt: int, key: str, depth: int = 0) -> tuple[Any, MetaType]:
    """One metadata value of type ``vt`` -> (python value, its GGUF type)."""
    if vt in SCALARS:
        return cur.scalar(vt, f"metadata {key!r} ({vt_name(vt)})"), VT(vt)
    if vt == VT.STRING:
        return cur.string(f"metadata {key!r}"), VT.STRING
    if vt != VT.ARRAY:
        raise GGUFError(f"metadata {key!r}: unknown value type {vt} at offset {cur.pos - 4}")
    if depth >= MAX_ARRAY_NESTING:
        raise GGUFError(f"metadata {key!r}: arrays nested deeper than {MAX_ARRAY_NESTING} levels")
    at = cur.pos
    et = cur.u32(f"metadata {key!r} (array element type)")
    count = cur.u64(f"metadata {key!r} (array count)")
    left = cur.left()
    if et in SCALARS:
        size, dtype = SCALARS[et][1], SCALARS[et][2]
        if count * size > left:
            raise GGUFError(
                f"metadata {key!r}: array of {count} {vt_name(et)} at offset {at} needs "
                f"{count * size} bytes, only {left} left (file size {cur.end})"
            )
        arr = np.frombuffer(cur.buf, dtype=dtype, count=count, offset=cur.pos)
        cur.pos += count * size
        if et == VT.BOOL:
            if count and int(arr.max()) > 1:
                raise GGUFError(f"metadata {key!r}: bool array at offset {at} holds a byte {int(arr.max())} (not 0/1)")
            return arr.astype(bool).tolist(), (VT.ARRAY, VT.BOOL)
        return arr.tolist(), (VT.ARRAY, VT(et))
    if et == VT.STRING:
        if count * 8 > left:
            raise GGUFError(
                f"metadata {key!r}: array of {count} strings at offset {at} needs at least "
                f"{count * 8} bytes, only {left} left (file size {cur.end})"
            )
        return _read_string_array(cur, count, key), (VT.ARRAY, VT.STRING)
    if et == VT.ARRAY:
        if count * 12 > left:
            raise GGUFError(
                f"metadata {key!r}: array of {count} arrays at offset {at} needs at least "
                f"{count * 12} bytes, only {left} left (file size {cur.end})"
            )
        items, inner = [], None
        for i in range(count):
            v, inner = _read_value(cur, VT.ARRAY, f"{key}[{i}]", depth + 1)
            items.append(v)
        return items, (VT.ARRAY, inner if inner is not None else VT.ARRAY)
    raise GGUFError(f"metadata {key!r}: unknown array element type {et} at offset {at}")


def _read_string_array(cur: _Cursor, count: int, key: str) -> list[str]:
    """``count`` strings. Tokenizer arrays hold ~10^5 entries, so the loop runs in compiled code
    (bitnet_lab._kernels.gguf_strings, the compiled module itself: formats sit below the kernels
    package), which stops at the first bad entry; its error is worded here."""
    from bitnet_lab import _kernels as _k

    out, pos, i, status = _k.gguf_strings(cur.buf, cur.pos, count)
    end = cur.end
    if status == _k.GGUF_STRINGS_TRUNCATED_LENGTH:
        raise GGUFError(f"truncated: metadata {key!r}[{i}] string length at offset {pos} (file size {end})")
    if status == _k.GGUF_STRINGS_TOO_LONG:
        (n,) = U64.unpack_from(cur.buf, pos)
        raise GGUFError(
            f"metadata {key!r}[{i}]: string length {n} at offset {pos} exceeds the "
            f"{end - pos - 8} bytes left in the file (file size {end})"
        )
    if status == _k.GGUF_STRINGS_BAD_UTF8:
        (n,) = U64.unpack_from(cur.buf, pos)
        try:
            str(cur.buf[pos + 8 : pos + 8 + n], "utf-8")
        except UnicodeDecodeError as e:
            raise GGUFError(f"metadata {key!r}[{i}]: string at offset {pos} is not valid UTF-8 ({e.reason})") from None
    if status:
        raise GGUFError(f"metadata {key!r}[{i}]: unreadable string at offset {pos} (status {status})")
    cur.pos = pos
    return out


def _read_header(cur: _Cursor) -> tuple[int, int, int]:
    """Magic, version, counts -> (version, tensor_count, kv_count)."""
    if cur.end < 4 or bytes(cur.buf[:4]) != GGUF_MAGIC:
        got = bytes(cur.buf[:4])
        raise GGUFError(f"not a GGUF file: magic is {got!r}, expected {GGUF_MAGIC!r} (file size {cur.end})")
    cur.pos = 4
    version = cur.u32("header (version)")
    if version not in SUPPORTED_VERSIONS:
        swapped = int.from_bytes(version.to_bytes(4, "little"), "big")
        if swapped in (1, 2, 3) and version & 0xFFFF == 0:
            raise GGUFError(
                f"big-endian GGUF file (version field reads {version} = byte-swapped {swapped}); "
                "bitnet_lab reads little-endian GGUF only: re-convert without --bigendian"
            )
        if version == 1:
            raise GGUFError("GGUF version 1 (u32 counts and lengths) is not supported; re-convert the file to v3")
        raise GGUFError(f"unsupported GGUF version {version}; bitnet_lab reads versions {SUPPORTED_VERSIONS}")
    tensor_count = cur.u64("header (tensor_count)")
    kv_count = cur.u64("header (metadata_kv_count)")
    return version, tensor_count, kv_count


def _read_kv(cur: _Cursor, kv_count: int) -> tuple[dict[str, Any], dict[str, MetaType]]:
    if kv_count * _MIN_KV_BYTES > cur.left():
        raise GGUFError(
            f"header: metadata_kv_count {kv_count} cannot fit in the {cur.left()} bytes after the "
            f"header (at least {_MIN_KV_BYTES} bytes each; file size {cur.end})"
        )
    meta: dict[str, Any] = {}
    types: dict[str, MetaType] = {}
    for i in range(kv_count):
        at = cur.pos
        key = cur.string(f"metadata key #{i}")
        if key in meta:
            raise GGUFError(f"metadata key {key!r} (#{i}, offset {at}) appears twice")
        vt = cur.u32(f"metadata {key!r} (value type)")
        meta[key], types[key] = _read_value(cur, vt, key)
    return meta, types


def _alignment_of(meta: Mapping[str, Any]) -> int:
    if "general.alignment" not in meta:
        return DEFAULT_ALIGNMENT
    a = meta["general.alignment"]
    if isinstance(a, bool) or not isinstance(a, int) or a <= 0 or a & (a - 1):
        raise GGUFError(f"metadata 'general.alignment' = {a!r} is not a positive power of two")
    return a


# ============================================================================================
# Reading: tensor infos
# ============================================================================================


@dataclass(frozen=True)
class TensorInfo:
    """One validated tensor-info entry.

    ``dims`` in ggml order ``[ne0, ne1, …]``, ``shape`` in torch order (reversed). ``offset`` is
    absolute in the file. ``nbytes``: the blob as its type declares it (I2_S: with its 32-byte
    tail; TL1/TL2: without the hidden slot). ``span``: bytes reserved from ``offset`` (TL:
    ``pad32(nbytes) + 32``). ``layout``: the ternary layout (``"i2_s"``, ``"tl1"``, ``"tl2"``,
    ``"tq1_0"``, ``"tq2_0"``) or ``None`` for float types.
    """

    name: str
    type_id: int
    type_name: str
    dims: tuple[int, ...]
    shape: tuple[int, ...]
    offset: int
    nbytes: int
    layout: Optional[str]
    span: int
    rel_offset: int

    @property
    def n_elements(self) -> int:
        return math.prod(self.dims)

    @property
    def is_ternary(self) -> bool:
        return self.layout is not None


@dataclass(frozen=True)
class _RawInfo:
    name: str
    dims: tuple[int, ...]
    type_id: int
    rel_offset: int


def _read_tensor_infos(cur: _Cursor, tensor_count: int) -> list[_RawInfo]:
    if tensor_count * _MIN_TI_BYTES > cur.left():
        raise GGUFError(
            f"header: tensor_count {tensor_count} cannot fit in the {cur.left()} bytes left for "
            f"tensor infos (at least {_MIN_TI_BYTES} bytes each; file size {cur.end})"
        )
    max_elements = _MAX_ELEMENTS_PER_BYTE * cur.end
    seen: set[str] = set()
    out = []
    for i in range(tensor_count):
        at = cur.pos
        name = cur.string(f"tensor info #{i} (name)")
        if name in seen:
            raise GGUFError(f"tensor {name!r} (info #{i}, offset {at}) appears twice")
        seen.add(name)
        n_dims = cur.u32(f"tensor {name!r} (n_dims)")
        if not 1 <= n_dims <= MAX_DIMS:
            raise GGUFError(f"tensor {name!r}: n_dims = {n_dims}, must be 1..{MAX_DIMS}")
        dims = tuple(cur.u64(f"tensor {name!r} (dim {d})") for d in range(n_dims))
        if any(d == 0 for d in dims):
            raise GGUFError(f"tensor {name!r}: dims {list(dims)} contain a 0")
        n = math.prod(dims)
        if n > max_elements:
            raise GGUFError(
                f"tensor {name!r}: dims {list(dims)} hold {n} elements, more than a file of "
                f"{cur.end} bytes can store"
            )
        type_id = cur.u32(f"tensor {name!r} (type)")
        rel = cur.u64(f"tensor {name!r} (offset)")
        out.append(_RawInfo(name, dims, type_id, rel))
    return out


def _validate_tensors(
    raw: list[_RawInfo], meta: Mapping[str, Any], data_offset: int, alignment: int, file_size: int
) -> list[TensorInfo]:
    """Offsets, types, sizes, bounds, overlaps -> TensorInfo list in file order."""
    for r in raw:
        if r.rel_offset % alignment:
            raise GGUFError(
                f"tensor {r.name!r}: offset {r.rel_offset} is not a multiple of the alignment {alignment}"
            )
        if data_offset + r.rel_offset >= file_size:
            raise GGUFError(
                f"tensor {r.name!r}: data starts at {data_offset + r.rel_offset} (data section "
                f"{data_offset} + offset {r.rel_offset}), at or past the end of the file (file size {file_size})"
            )
    order = sorted(range(len(raw)), key=lambda i: raw[i].rel_offset)
    infos: dict[int, TensorInfo] = {}
    for pos, i in enumerate(order):
        r = raw[i]
        start = data_offset + r.rel_offset
        if pos + 1 < len(order):
            nxt = raw[order[pos + 1]]
            room, exact = nxt.rel_offset - r.rel_offset, True
        else:
            nxt, room, exact = None, file_size - start, False
        t = gt.resolve_type(
            r.type_id, r.dims, meta, room=room, alignment=alignment, exact_room=exact, tensor=r.name
        )
        problem = gt.shape_problem(t, r.dims)
        if problem:
            raise GGUFError(f"tensor {r.name!r}: {problem}")
        try:
            nbytes = gt.data_nbytes(t, r.dims)
            span = gt.span_nbytes(t, r.dims)
        except BitnetLabError as e:
            raise GGUFError(f"tensor {r.name!r} ({t.name}, dims {list(r.dims)}): {e}") from None
        what = f"{t.name} data of {nbytes} bytes" + (
            f" + hidden scale slot = {span} bytes" if span != nbytes else ""
        )
        if start + span > file_size:
            raise GGUFError(
                f"tensor {r.name!r}: {what} at offset {start} ends at {start + span}, past the end "
                f"of the file (file size {file_size}; truncated?)"
            )
        if nxt is not None and span > room:
            raise GGUFError(
                f"tensor {r.name!r}: {what} at offset {start} overlaps tensor {nxt.name!r} at "
                f"offset {data_offset + nxt.rel_offset} (only {room} bytes between them)"
            )
        shape = tuple(reversed(r.dims))
        if t.layout is not None:
            shape = (r.dims[1], r.dims[0])
        infos[i] = TensorInfo(
            r.name, r.type_id, t.name, r.dims, shape, start, nbytes, t.layout, span, r.rel_offset
        )
    return [infos[i] for i in range(len(raw))]


# ============================================================================================
# Reading: TL tiling
# ============================================================================================

# None; one TLTiling or "BM,BK,bm" for every TL tensor; a preset name; or {(M, K) or tensor name: TLTiling}
TilingSpec = Union[TLTiling, str, Mapping[Any, TLTiling], None]

# Where a TL tensor's tiling came from, most binding first.
TILING_GIVEN = "given"        # tl_tiling= (the CLI's --tl-tiling)
TILING_FILE_KEY = "file key"  # our metadata key bitnet_lab.tl_tiling
TILING_PRESET = "preset"      # bitnet.cpp's preset of the model the file's shapes identify


@dataclass(frozen=True)
class TilingChoice:
    """The tiling a TL1/TL2 tensor is read with, and where it came from: ``source`` is one of
    TILING_GIVEN, TILING_FILE_KEY, TILING_PRESET; ``detail`` says which (the preset's model,
    the key's name, what was given)."""

    tiling: TLTiling
    source: str
    detail: str

    def describe(self) -> str:
        t = self.tiling
        return f"{t.BM},{t.BK},{t.bm} ({self.source}: {self.detail})"


# ============================================================================================
# Reading: the file
# ============================================================================================


class GGUFFile:
    """A validated, memory-mapped GGUF file (v2/v3, little-endian).

    Attributes: ``path``, ``version``, ``alignment``, ``metadata`` (key -> Python value; arrays
    are lists), ``metadata_types`` (key -> GGUFValueType, or ``(ARRAY, element type)``),
    ``tensor_infos`` (file order), ``data_offset``, ``file_size``.

    ``tl_tiling``: the tiling of TL1/TL2 tensors, which bitnet.cpp's files do not record: one
    ``TLTiling`` or ``"BM,BK,bm"`` for all, a preset name (``quant.tiling.preset_names()``), or a
    dict keyed by tensor name or by ``(M, K)``. Tensors it leaves open take the file's
    ``bitnet_lab.tl_tiling`` key, else bitnet.cpp's preset of the model their shapes identify
    (``quant.tiling.match_presets``: unknown or ambiguous shapes are refused, naming the
    candidates). ``tl_tilings()`` says which tiling each tensor got and from where.

    Arrays handed out by ``tensors()`` are views of the mapping and keep it alive after
    ``close()``.
    """

    def __init__(self, path: Union[str, os.PathLike], *, tl_tiling: TilingSpec = None) -> None:
        from bitnet_lab.quant.tiling import parse_tl_tiling

        self.path = Path(path)
        self._tl_request = parse_tl_tiling(tl_tiling)  # a bad request fails before the file is opened
        self._tl_choices: Optional[dict[str, TilingChoice]] = None
        self._mm: Optional[np.memmap] = None
        try:
            self.file_size = os.path.getsize(self.path)
        except OSError as e:
            raise GGUFError(f"{self.path}: cannot open ({e.strerror})") from None
        if self.file_size < HEADER_SIZE:
            # np.memmap cannot map an empty file; nothing shorter than a header is GGUF anyway
            try:
                head = self.path.read_bytes()[:4]
            except OSError as e:
                raise GGUFError(f"{self.path}: cannot read ({e.strerror})") from None
            if head != GGUF_MAGIC:
                raise GGUFError(
                    f"{self.path}: not a GGUF file: magic is {head!r}, expected {GGUF_MAGIC!r} "
                    f"(file size {self.file_size})"
                )
            raise GGUFError(
                f"{self.path}: truncated: shorter than the {HEADER_SIZE}-byte GGUF header (file size {self.file_size})"
            )
        self._mm = _map(self.path)
        try:
            self._parse()
        except GGUFError as e:
            self._mm = None
            raise type(e)(f"{self.path}: {e}") from None

    def _parse(self) -> None:
        cur = _Cursor(memoryview(self._mm))
        self.version, tensor_count, kv_count = _read_header(cur)
        self.metadata, self.metadata_types = _read_kv(cur, kv_count)
        self.alignment = _alignment_of(self.metadata)
        raw = _read_tensor_infos(cur, tensor_count)
        self.data_offset = pad_to(cur.pos, self.alignment)
        if raw and self.data_offset > self.file_size:
            raise GGUFError(
                f"truncated: the data section would start at {self.data_offset} (tensor infos end "
                f"at {cur.pos}, alignment {self.alignment}), past the end of the file (file size {self.file_size})"
            )
        self._file_tilings = (
            parse_tiling_key(self.metadata[TL_TILING_KEY]) if TL_TILING_KEY in self.metadata else {}
        )
        self.tensor_infos: list[TensorInfo] = _validate_tensors(
            raw, self.metadata, self.data_offset, self.alignment, self.file_size
        )
        self._by_name = {ti.name: ti for ti in self.tensor_infos}

    # ---- context manager --------------------------------------------------------------
    def close(self) -> None:
        """Drop this object's reference to the mapping (views already handed out keep it)."""
        self._mm = None

    def __enter__(self) -> "GGUFFile":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"GGUFFile({str(self.path)!r}, v{self.version}, {len(self.metadata)} keys, "
            f"{len(self.tensor_infos)} tensors, arch={self.metadata.get('general.architecture')!r})"
        )

    # ---- tensors ----------------------------------------------------------------------
    @property
    def tensor_names(self) -> list[str]:
        return [ti.name for ti in self.tensor_infos]

    def tensor_info(self, name: str) -> TensorInfo:
        try:
            return self._by_name[name]
        except KeyError:
            raise GGUFError(f"{self.path}: no tensor named {name!r}") from None

    def tensors(self) -> dict[str, Union[FloatTensor, TernaryWeight]]:
        """Every tensor, in file order, as zero-copy views of the mapped file."""
        return {ti.name: self._build(ti) for ti in self.tensor_infos}

    def tensor(self, name: str) -> Union[FloatTensor, TernaryWeight]:
        return self._build(self.tensor_info(name))

    def _blob(self, start: int, n: int) -> np.ndarray:
        if self._mm is None:
            raise GGUFError(f"{self.path}: the file is closed")
        return self._mm[start : start + n]

    def _f32_at(self, ti: TensorInfo, pos: int, what: str) -> np.float32:
        v = np.float32(self._blob(pos, 4).view("<f4")[0])
        if not np.isfinite(v):
            raise GGUFError(f"{self.path}: tensor {ti.name!r}: {what} at offset {pos} is {v}")
        return v

    def _build(self, ti: TensorInfo) -> Union[FloatTensor, TernaryWeight]:
        blob = self._blob(ti.offset, ti.nbytes)
        name, tn = ti.name, ti.type_name
        if tn == "F32":
            return FloatTensor(name, tn, ti.shape, blob.view("<f4").reshape(ti.shape))
        if tn == "F16":
            return FloatTensor(name, tn, ti.shape, blob.view("<f2").reshape(ti.shape))
        if tn == "BF16":
            return FloatTensor(name, tn, ti.shape, blob.view("<u2").reshape(ti.shape))
        if ti.layout is None:  # Q8_0 / Q6_K: raw blocks, rows of ne0 // block_elems blocks
            t = gt.BY_NAME[tn]
            return FloatTensor(name, tn, ti.shape, blob.reshape(-1, ti.dims[0] // t.block_elems * t.block_bytes))
        M, K = ti.shape
        if ti.layout == "i2_s":
            n = M * K // 4
            scale = self._f32_at(ti, ti.offset + n, "the I2_S scale (first f32 of the tail)")
            return TernaryWeight(name, "i2_s", (M, K), blob[:n].reshape(M, K // 4), scale=scale)
        if ti.layout in ("tq1_0", "tq2_0"):
            bpb = gt.BY_NAME[tn].block_bytes
            blocks = blob.reshape(M, K // 256, bpb)
            # d is the last 2 bytes of each block (fp16); copy them out as float16 (M, K/256)
            d = np.ascontiguousarray(blocks[:, :, bpb - 2 :]).view("<f2").reshape(M, K // 256).astype(np.float16)
            bad = ~np.isfinite(d)
            if bad.any():
                r, b = np.argwhere(bad)[0]
                raise GGUFError(
                    f"{self.path}: tensor {name!r}: {int(bad.sum())} {tn} block scales are not finite; "
                    f"first d[{r}, {b}] = {d[r, b]} (block at offset {ti.offset + (r * (K // 256) + b) * bpb})"
                )
            return TernaryWeight(name, ti.layout, (M, K), blocks, block_scales=d)
        # TL1 / TL2: the scale lives in the hidden slot at pad32(nbytes)
        tiling = self._tiling_for(ti)
        scale = self._f32_at(ti, ti.offset + pad_to(ti.nbytes, 32), f"the {tn} scale (hidden slot)")
        return TernaryWeight(name, ti.layout, (M, K), blob, scale=scale, tiling=tiling)

    def tl_tilings(self) -> dict[str, TilingChoice]:
        """The tiling of every TL1/TL2 tensor (file order) and where it came from; GGUFError
        naming the shapes and the candidates when one cannot be told (module docstring)."""
        if self._tl_choices is None:
            self._tl_choices = self._resolve_tilings()
        return dict(self._tl_choices)

    def _resolve_tilings(self) -> dict[str, TilingChoice]:
        from bitnet_lab.quant import tiling as tl

        req = self._tl_request
        out: dict[str, TilingChoice] = {}
        open_shapes: dict[str, set[tuple[int, int]]] = {}  # layout -> shapes left to the presets
        for ti in self.tensor_infos:
            if ti.layout not in tl.TL_LAYOUTS:
                continue
            shape = (ti.shape[0], ti.shape[1])
            if isinstance(req, TLTiling):
                out[ti.name] = TilingChoice(req, TILING_GIVEN, "tl_tiling (--tl-tiling)")
            elif isinstance(req, dict) and (ti.name in req or shape in req):
                out[ti.name] = TilingChoice(req.get(ti.name) or req[shape], TILING_GIVEN, "tl_tiling (--tl-tiling)")
            elif shape in self._file_tilings and not isinstance(req, str):  # a named preset outranks the key
                out[ti.name] = TilingChoice(self._file_tilings[shape], TILING_FILE_KEY, f"metadata {TL_TILING_KEY!r}")
            else:
                open_shapes.setdefault(ti.layout, set()).add(shape)
        try:
            by_layout: dict[str, tuple[Mapping[tuple[int, int], TLTiling], str, str]] = {}
            for layout, shapes in open_shapes.items():
                if isinstance(req, str):  # a preset named by the caller
                    p = tl.named_preset(layout, req)
                    missing = sorted(shapes - set(p.tilings))
                    if missing:
                        raise GGUFError(f"preset {p.name!r} has no {layout} tiling for the shapes (M, K) {missing}")
                    by_layout[layout] = (p.tilings, TILING_GIVEN, f"preset {p.name} (--tl-tiling)")
                else:
                    m = tl.match_presets(layout, shapes)
                    by_layout[layout] = (m.tilings, TILING_PRESET, m.label)
            for ti in self.tensor_infos:
                if ti.layout in by_layout and ti.name not in out:
                    tilings, source, detail = by_layout[ti.layout]
                    out[ti.name] = TilingChoice(tilings[(ti.shape[0], ti.shape[1])], source, detail)
        except BitnetLabError as e:
            raise GGUFError(f"{self.path}: {e}") from None
        for ti in self.tensor_infos:
            if ti.name in out:
                c = out[ti.name]
                try:
                    tl.validate_tiling(ti.layout, ti.shape[0], ti.shape[1], c.tiling)
                except BitnetLabError as e:
                    raise GGUFError(
                        f"{self.path}: tensor {ti.name!r} {ti.shape}: tiling from {c.source} ({c.detail}): {e}"
                    ) from None
        return {ti.name: out[ti.name] for ti in self.tensor_infos if ti.name in out}

    def _tiling_for(self, ti: TensorInfo) -> TLTiling:
        return self.tl_tilings()[ti.name].tiling


def _map(path: Path) -> np.memmap:
    """The whole file, mapped read-only as uint8."""
    try:
        return np.memmap(path, dtype=np.uint8, mode="r")
    except (OSError, ValueError) as e:
        raise GGUFError(f"{path}: cannot map the file ({e})") from None


def open_gguf(path: Union[str, os.PathLike], **kw: Any) -> GGUFFile:
    """``GGUFFile(path, **kw)``."""
    return GGUFFile(path, **kw)


def read_metadata(path: Union[str, os.PathLike]) -> dict[str, Any]:
    """Header and metadata only (no tensor infos, no data): for vocabulary-only files."""
    path = Path(path)
    try:
        size = os.path.getsize(path)
    except OSError as e:
        raise GGUFError(f"{path}: cannot open ({e.strerror})") from None
    if size < HEADER_SIZE:
        raise GGUFError(f"{path}: truncated: shorter than the {HEADER_SIZE}-byte GGUF header (file size {size})")
    mm = _map(path)
    try:
        cur = _Cursor(memoryview(mm))
        _, _, kv_count = _read_header(cur)
        meta, _ = _read_kv(cur, kv_count)
        _alignment_of(meta)
        return meta
    except GGUFError as e:
        raise type(e)(f"{path}: {e}") from None
    finally:
        del mm
