"""GGUF writer: streaming, two-phase, little-endian GGUF v3 (docs/formats.md#11-layout,
docs/formats.md#14-rules-for-a-writer-that-bitnetcpp-binaries-must-load,
docs/formats.md#42-tl1-and-tl2-hidden-scale-slot).

Declare metadata and tensors (each with a ``producer`` callable), then ``write()`` emits the
header, the KV pairs and the tensor infos with offsets computed from the declared sizes, pads
to the alignment, and calls each producer in turn, checking that it returns exactly the
declared number of bytes — so at most one tensor is in memory at a time. TL1/TL2 tensors get
the hidden 32-byte scale slot after their data, as bitnet.cpp's fork writer reserves it
(``pad32(nbytes)`` then the f32 scale and 28 zero bytes). ``write_gguf`` writes a dict of
``FloatTensor`` / ``TernaryWeight`` in the layouts they have.

Files in upstream types (F32, F16, BF16, Q8_0, Q6_K, TQ1_0, TQ2_0) read in gguf-py's
``GGUFReader``; I2_S files follow bitnet.cpp's layout (v3, alignment 32, type 36, blob
``M·K/4 + 32``); the caller sets ``general.file_type`` (40 for I2_S, docs/formats.md#23-llama-file-types).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Union

import numpy as np
from gguf import GGUFValueType

from bitnet_lab.errors import BitnetLabError, GGUFError
from bitnet_lab.formats import ggml_types as gt
from bitnet_lab.formats.ggml_types import (
    DEFAULT_ALIGNMENT,
    GGUF_MAGIC,
    INT_RANGES,
    MAX_DIMS,
    SCALARS,
    STRUCTS,
    TL_TILING_KEY,
    U32,
    U64,
    VT,
    GGMLType,
    MetaType,
    format_tiling_key,
    pad_to,
    parse_tiling_key,
    vt_name,
)
from bitnet_lab.tensors import FloatTensor, TernaryWeight
from bitnet_lab.quant.tiling import TLTiling

__all__ = ["GGUFWriter", "write_gguf"]


def _infer_scalar_type(value: Any, key: str) -> GGUFValueType:
    if isinstance(value, (bool, np.bool_)):
        return VT.BOOL
    if isinstance(value, str):
        return VT.STRING
    if isinstance(value, (int, np.integer)):
        return _int_type(int(value), int(value), key)
    if isinstance(value, np.floating):
        return {4: VT.FLOAT32, 8: VT.FLOAT64}.get(value.dtype.itemsize, VT.FLOAT32)
    if isinstance(value, float):
        return VT.FLOAT32
    raise GGUFError(f"metadata {key!r}: cannot store a value of type {type(value).__name__}")


def _int_type(lo: int, hi: int, key: str) -> GGUFValueType:
    if lo >= 0:
        if hi <= 2**32 - 1:
            return VT.UINT32
        if hi <= 2**64 - 1:
            return VT.UINT64
    elif lo >= -(2**31) and hi <= 2**31 - 1:
        return VT.INT32
    elif lo >= -(2**63) and hi <= 2**63 - 1:
        return VT.INT64
    raise GGUFError(f"metadata {key!r}: integer range [{lo}, {hi}] does not fit a 64-bit GGUF integer")


_DTYPE_TO_VT = {
    "u1": VT.UINT8, "i1": VT.INT8, "u2": VT.UINT16, "i2": VT.INT16, "u4": VT.UINT32, "i4": VT.INT32,
    "u8": VT.UINT64, "i8": VT.INT64, "f4": VT.FLOAT32, "f8": VT.FLOAT64, "b1": VT.BOOL,
}


def _infer_type(value: Any, key: str) -> MetaType:
    if isinstance(value, np.ndarray):
        vt = _DTYPE_TO_VT.get(value.dtype.str[1:])
        if vt is None or value.ndim != 1:
            raise GGUFError(f"metadata {key!r}: cannot store a {value.ndim}-D {value.dtype} array")
        return (VT.ARRAY, vt)
    if isinstance(value, (list, tuple)):
        return (VT.ARRAY, _infer_element_type(list(value), key))
    return _infer_scalar_type(value, key)


def _infer_element_type(items: list, key: str) -> MetaType:
    if not items:
        return VT.INT32
    if all(isinstance(v, (bool, np.bool_)) for v in items):
        return VT.BOOL
    if all(isinstance(v, str) for v in items):
        return VT.STRING
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in items):
        return _int_type(int(min(items)), int(max(items)), key)
    if all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_)) for v in items):
        return VT.FLOAT32
    if all(isinstance(v, (list, tuple, np.ndarray)) for v in items):
        return VT.ARRAY
    raise GGUFError(f"metadata {key!r}: array elements of mixed or unsupported types")


def _normalise_type(vtype: Any, value: Any, key: str) -> MetaType:
    """An explicit ``vtype`` -> our MetaType. For a list value a scalar vtype is the element type."""
    if isinstance(vtype, tuple):
        if len(vtype) != 2 or VT(vtype[0]) != VT.ARRAY:
            raise GGUFError(f"metadata {key!r}: array type must be (ARRAY, element type), got {vtype!r}")
        return (VT.ARRAY, VT(vtype[1]))
    try:
        vt = VT(vtype)
    except ValueError:
        raise GGUFError(f"metadata {key!r}: {vtype!r} is not a GGUF value type") from None
    if isinstance(value, (list, tuple, np.ndarray)):
        if vt == VT.ARRAY:
            return _infer_type(value, key)
        return (VT.ARRAY, vt)
    return vt


def _encode_scalar(vt: int, value: Any, key: str) -> bytes:
    if vt == VT.STRING:
        if not isinstance(value, str):
            raise GGUFError(f"metadata {key!r}: STRING value must be str, got {type(value).__name__}")
        b = value.encode("utf-8")
        return U64.pack(len(b)) + b
    if vt == VT.BOOL:
        if not isinstance(value, (bool, np.bool_)):
            raise GGUFError(f"metadata {key!r}: BOOL value must be a bool, got {value!r}")
        return b"\x01" if value else b"\x00"
    if vt in (VT.FLOAT32, VT.FLOAT64):
        if not isinstance(value, (int, float, np.integer, np.floating)) or isinstance(value, bool):
            raise GGUFError(f"metadata {key!r}: {vt_name(vt)} value must be a number, got {value!r}")
        return STRUCTS[vt].pack(float(value))
    if vt in INT_RANGES:
        if not isinstance(value, (int, np.integer)) or isinstance(value, (bool, np.bool_)):
            raise GGUFError(f"metadata {key!r}: {vt_name(vt)} value must be an integer, got {value!r}")
        lo, hi = INT_RANGES[vt]
        if not lo <= int(value) <= hi:
            raise GGUFError(f"metadata {key!r}: {value} does not fit {vt_name(vt)} [{lo}, {hi}]")
        return STRUCTS[vt].pack(int(value))
    raise GGUFError(f"metadata {key!r}: cannot encode value type {vt_name(vt)}")


def _encode_array(et: MetaType, items: Any, key: str) -> bytes:
    """u32 element type, u64 count, elements."""
    if isinstance(et, tuple):  # nested: (ARRAY, inner) as element type
        et = VT.ARRAY
    n = len(items)
    head = U32.pack(int(et)) + U64.pack(n)
    if et in SCALARS and et != VT.BOOL:
        dtype = SCALARS[et][2]
        if et in INT_RANGES:
            arr = np.asarray(items)
            if n and (arr.dtype.kind not in "iu"):
                raise GGUFError(f"metadata {key!r}: {vt_name(et)} array holds non-integers ({arr.dtype})")
            lo, hi = INT_RANGES[et]
            if n and not (lo <= int(arr.min()) and int(arr.max()) <= hi):
                raise GGUFError(f"metadata {key!r}: array values [{arr.min()}, {arr.max()}] do not fit {vt_name(et)}")
            return head + np.asarray(arr, dtype=dtype).tobytes()
        arr = np.asarray(items)
        if n and arr.dtype.kind not in "iuf":
            raise GGUFError(f"metadata {key!r}: {vt_name(et)} array holds non-numbers ({arr.dtype})")
        return head + arr.astype(dtype).tobytes()
    if et == VT.ARRAY:
        return head + b"".join(_encode_array(_infer_type(v, key)[1], v, key) for v in items)
    return head + b"".join(_encode_scalar(et, v, key) for v in items)


def _encode_kv(key: str, value: Any, vtype: MetaType) -> bytes:
    try:
        kb = key.encode("utf-8")
        out = U64.pack(len(kb)) + kb
        if isinstance(vtype, tuple):
            return out + U32.pack(VT.ARRAY) + _encode_array(vtype[1], value, key)
        return out + U32.pack(int(vtype)) + _encode_scalar(vtype, value, key)
    except UnicodeEncodeError as e:
        raise GGUFError(f"metadata {key!r}: not encodable as UTF-8 ({e.reason})") from None
    except (ValueError, TypeError, OverflowError) as e:  # numpy conversions of odd lists
        if isinstance(e, GGUFError):
            raise
        raise GGUFError(f"metadata {key!r}: cannot encode {type(value).__name__} value ({e})") from None


@dataclass
class _Pending:
    name: str
    t: GGMLType
    dims: tuple[int, ...]
    nbytes: int
    span: int
    producer: Callable[[], Any]
    tl_scale: Optional[float]


Producer = Callable[[], Union[np.ndarray, bytes, bytearray, memoryview]]


class GGUFWriter:
    """Streaming two-phase GGUF v3 writer (little-endian).

    Declare with ``add_metadata`` / ``add_tensor`` / ``add_tensor_array``, then ``write()``.
    Producers are called during ``write()``, one at a time, in declaration order, and must
    return exactly the declared number of bytes (I2_S: ``M·K/4 + 32`` including the tail with
    the scale; TL1/TL2: the packed data, the scale goes in ``tl_scale=``). The file appears
    atomically (written to ``<path>.tmp`` and renamed) and only if everything succeeded.
    """

    def __init__(self, path: Union[str, os.PathLike], alignment: int = DEFAULT_ALIGNMENT, *, progress: bool = False) -> None:
        if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
            raise GGUFError(f"alignment {alignment!r} is not a positive power of two")
        self.path = Path(path)
        self.alignment = alignment
        self.progress = progress
        self._kv: dict[str, tuple[Any, bytes]] = {}  # key -> (value, encoded KV pair)
        self._tensors: list[_Pending] = []
        self._names: set[str] = set()
        self._tilings: dict[tuple[int, int], TLTiling] = {}
        self._written = False

    # ---- declaring --------------------------------------------------------------------
    def add_metadata(self, key: str, value: Any, vtype: Any = None) -> None:
        """Add one KV pair. Types are inferred (str, bool, int -> UINT32 if it fits, else
        UINT64 / INT32 / INT64, float -> FLOAT32, lists -> ARRAY of the inferred element type,
        1-D numpy arrays -> ARRAY of their dtype) unless ``vtype`` is given: a GGUFValueType
        (for a list: the element type), or ``(GGUFValueType.ARRAY, element type)``."""
        if not isinstance(key, str) or not key:
            raise GGUFError(f"metadata key must be a non-empty str, got {key!r}")
        if key in self._kv:
            raise GGUFError(f"metadata key {key!r} added twice")
        mt = _infer_type(value, key) if vtype is None else _normalise_type(vtype, value, key)
        if isinstance(value, np.ndarray):
            value = value.tolist()
        # encoded now, so that a bad value fails here, naming the key, and only once
        self._kv[key] = (value, _encode_kv(key, value, mt))

    def add_tensor(
        self,
        name: str,
        type_name: str,
        shape_torch: Iterable[int],
        producer: Producer,
        *,
        tl_scale: Optional[float] = None,
        tiling: Optional[TLTiling] = None,
    ) -> None:
        """Declare a tensor of ``type_name`` (``"F32"``, ``"I2_S"``, …) and torch-order shape.

        ``tl_scale``: TL1/TL2 only (required), written in the hidden 32-byte slot after the
        padded data. ``tiling``: TL1/TL2 only, recorded in the ``bitnet_lab.tl_tiling`` key.
        """
        if not isinstance(name, str) or not name:
            raise GGUFError(f"tensor name must be a non-empty str, got {name!r}")
        if name in self._names:
            raise GGUFError(f"tensor {name!r} added twice")
        try:
            name.encode("utf-8")
        except UnicodeEncodeError as e:
            raise GGUFError(f"tensor {name!r}: name is not encodable as UTF-8 ({e.reason})") from None
        t = gt.by_name(type_name)
        shape = tuple(int(s) for s in shape_torch)
        if not 1 <= len(shape) <= MAX_DIMS or any(s <= 0 for s in shape):
            raise GGUFError(f"tensor {name!r}: shape {shape} must have 1..{MAX_DIMS} positive dims")
        dims = tuple(reversed(shape))
        problem = gt.shape_problem(t, dims)
        if problem:
            raise GGUFError(f"tensor {name!r} (torch shape {shape}): {problem}")
        try:
            nbytes = gt.data_nbytes(t, dims)
        except BitnetLabError as e:
            raise GGUFError(f"tensor {name!r} ({t.name}, shape {shape}): {e}") from None
        span = gt.span_nbytes(t, dims)
        is_tl = t.layout in ("tl1", "tl2")
        if is_tl:
            if tl_scale is None or not np.isfinite(np.float32(tl_scale)):
                raise GGUFError(f"tensor {name!r}: {t.name} needs a finite tl_scale= (got {tl_scale!r})")
            if tiling is not None:
                key = (shape[0], shape[1])
                if self._tilings.get(key, tiling) != tiling:
                    raise GGUFError(
                        f"tensor {name!r}: shape {key} already has tiling {self._tilings[key]}, "
                        f"got {tiling}; {TL_TILING_KEY} records one tiling per shape"
                    )
                self._tilings[key] = tiling
        elif tl_scale is not None or tiling is not None:
            raise GGUFError(f"tensor {name!r}: tl_scale= / tiling= are for TL1/TL2 only, not {t.name}")
        if not callable(producer):
            raise GGUFError(f"tensor {name!r}: producer must be callable")
        self._names.add(name)
        self._tensors.append(_Pending(name, t, dims, nbytes, span, producer, tl_scale))

    def add_tensor_array(self, name: str, type_name: str, array: np.ndarray) -> None:
        """Declare a tensor from a numpy array in torch-order shape, encoded now as F32 / F16 /
        BF16 / Q8_0 / Q6_K by ``bitnet_lab.quant.blockquant.quantize`` (BF16: round to nearest
        even; Q8_0 / Q6_K: llama.cpp's reference quantisers).
        A uint16 array with type BF16 is taken as BF16 bit patterns as they are."""
        tn = type_name.upper()
        a = np.asarray(array)
        if tn not in ("F32", "F16", "BF16", "Q8_0", "Q6_K"):
            raise GGUFError(f"tensor {name!r}: add_tensor_array takes F32/F16/BF16/Q8_0/Q6_K, got {type_name!r}; use add_tensor")
        if tn == "BF16" and a.dtype == np.uint16:
            data = np.ascontiguousarray(a, dtype="<u2").reshape(-1).view(np.uint8)
        else:
            from bitnet_lab.quant import blockquant

            if a.dtype.kind not in "fiu":
                raise GGUFError(f"tensor {name!r}: cannot encode a {a.dtype} array as {tn}")
            try:
                data = blockquant.quantize(tn, a.astype(np.float32, copy=False))
            except BitnetLabError as e:
                raise GGUFError(f"tensor {name!r}: {e}") from None
        self.add_tensor(name, tn, a.shape, lambda: data)

    # ---- writing ----------------------------------------------------------------------
    def _final_kv(self) -> dict[str, tuple[Any, bytes]]:
        """The KV pairs to write: the user's, plus general.alignment (when not 32) and our TL
        tiling key (merged with one given by the user)."""
        kv = dict(self._kv)
        if "general.alignment" in kv:
            a = kv["general.alignment"][0]
            if a != self.alignment:
                raise GGUFError(f"metadata 'general.alignment' = {a!r} but the writer aligns to {self.alignment}")
        elif self.alignment != DEFAULT_ALIGNMENT:
            kv["general.alignment"] = (self.alignment, _encode_kv("general.alignment", self.alignment, VT.UINT32))
        tilings = dict(self._tilings)
        if TL_TILING_KEY in kv:
            for shp, t in parse_tiling_key(kv[TL_TILING_KEY][0]).items():
                if tilings.get(shp, t) != t:
                    raise GGUFError(
                        f"metadata {TL_TILING_KEY!r} says {shp} -> {t}, a tensor was added with {tilings[shp]}"
                    )
                tilings[shp] = t
        if tilings:
            value = format_tiling_key(tilings)
            kv[TL_TILING_KEY] = (value, _encode_kv(TL_TILING_KEY, value, (VT.ARRAY, VT.STRING)))
        return kv

    def write(self) -> Path:
        """Write the file; returns its path."""
        if self._written:
            raise GGUFError(f"{self.path}: write() was already called")
        kv = self._final_kv()
        header = [GGUF_MAGIC, U32.pack(3), U64.pack(len(self._tensors)), U64.pack(len(kv))]
        header += [encoded for _, encoded in kv.values()]
        rel = 0
        for p in self._tensors:
            nb = p.name.encode("utf-8")
            header.append(U64.pack(len(nb)) + nb + U32.pack(len(p.dims)))
            header.append(b"".join(U64.pack(d) for d in p.dims) + U32.pack(p.t.id) + U64.pack(rel))
            rel = pad_to(rel + p.span, self.alignment)
        head = b"".join(header)
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(head)
                f.write(b"\0" * (pad_to(len(head), self.alignment) - len(head)))
                data_start = f.tell()
                for p in self._progress(self._tensors):
                    self._write_one(f, p)
                    f.write(b"\0" * (pad_to(f.tell() - data_start, self.alignment) - (f.tell() - data_start)))
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        self._written = True
        return self.path

    def _progress(self, items: list[_Pending]):
        if not self.progress:
            return items
        from tqdm.auto import tqdm

        return tqdm(items, desc=f"writing {self.path.name}", unit="tensor")

    def _write_one(self, f, p: _Pending) -> None:
        data = p.producer()
        if isinstance(data, np.ndarray):
            buf = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
        elif isinstance(data, (bytes, bytearray, memoryview)):
            buf = memoryview(data).cast("B")
        else:
            raise GGUFError(f"tensor {p.name!r}: producer returned {type(data).__name__}, not bytes or an ndarray")
        if len(buf) != p.nbytes:
            raise GGUFError(
                f"tensor {p.name!r} ({p.t.name}, dims {list(p.dims)}): producer returned {len(buf)} bytes, "
                f"declared {p.nbytes}"
            )
        f.write(buf)
        if p.tl_scale is not None:  # hidden slot: pad32, then f32 scale + 28 zero bytes
            f.write(b"\0" * (pad_to(p.nbytes, 32) - p.nbytes))
            f.write(struct.pack("<f", float(np.float32(p.tl_scale))) + b"\0" * (gt.TL_SCALE_SLOT - 4))


# ============================================================================================
# write_gguf
# ============================================================================================


def _tensor_producer(w: Union[FloatTensor, TernaryWeight]) -> tuple[str, Producer, dict]:
    """(ggml type name, producer, extra add_tensor kwargs) for one tensor object."""
    if isinstance(w, FloatTensor):
        dtype = {"F32": "<f4", "F16": "<f2", "BF16": "<u2"}.get(w.ggml_type, "<u1")
        return w.ggml_type, (lambda: np.ascontiguousarray(w.data, dtype=dtype)), {}
    if not isinstance(w, TernaryWeight):
        raise GGUFError(f"cannot write {type(w).__name__}; expected FloatTensor or TernaryWeight")
    if w.layout not in gt.LAYOUT_TO_TYPE:
        raise GGUFError(
            f"tensor {w.name!r}: layout {w.layout!r} has no GGUF type; convert it to i2_s, tl1, tl2, "
            "tq1_0 or tq2_0 first"
        )
    from bitnet_lab.quant import packing

    def ternary() -> np.ndarray:
        # Decode without filling TernaryWeight's cache: writing a model must not keep it all.
        cached = w._cache.get("t")
        if cached is not None:
            return cached
        M, K = w.shape
        return packing.unpack(w.layout, w.data, M, K, tiling=w.tiling)

    t = gt.LAYOUT_TO_TYPE[w.layout]
    if w.layout == "i2_s":
        return t.name, (lambda: packing.i2_s_blob(ternary(), np.float32(w.scale))), {}
    if w.layout in ("tq1_0", "tq2_0"):
        return t.name, (lambda: packing.pack(w.layout, ternary(), block_scales=w.block_scales)), {}
    extra = {"tl_scale": float(w.scale), "tiling": w.tiling}
    return t.name, (lambda: packing.pack(w.layout, ternary(), scale=w.scale, tiling=w.tiling)), extra


def write_gguf(
    path: Union[str, os.PathLike],
    metadata: Mapping[str, Any],
    tensors: Mapping[str, Union[FloatTensor, TernaryWeight]],
    *,
    metadata_types: Optional[Mapping[str, Any]] = None,
    alignment: Optional[int] = None,
    progress: bool = False,
) -> Path:
    """Write ``tensors`` (name -> FloatTensor / TernaryWeight, each in its own layout) and
    ``metadata`` to a GGUF v3 file, streaming one tensor at a time.

    ``metadata_types`` (key -> GGUF type, e.g. ``GGUFFile.metadata_types``) keeps the value
    types of a file being rewritten; other keys get inferred types. Ternary weights in the
    ``int8`` / ``hf_packed`` layouts are refused: convert them first. The ``general.file_type``
    key is the caller's (40 for an I2_S model, docs/formats.md#23-llama-file-types).
    """
    if alignment is None:
        alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    w = GGUFWriter(path, alignment=alignment, progress=progress)
    types = metadata_types or {}
    for k, v in metadata.items():
        w.add_metadata(k, v, types.get(k))
    for name, t in tensors.items():
        type_name, producer, extra = _tensor_producer(t)
        w.add_tensor(name, type_name, t.shape, producer, **extra)
    return w.write()
