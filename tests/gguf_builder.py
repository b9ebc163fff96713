"""A tiny GGUF encoder for the GGUF tests, independent of bitnet_lab's writer.

It builds a file field by field and records where every section and every integer field lies,
so a test can truncate at a section boundary or overwrite exactly one field. It knows nothing
about tensor types: blobs are given as bytes (TL blobs include their hidden scale slot).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

# GGUF metadata value types (docs/formats.md#12-metadata-value-types)
UINT8, INT8, UINT16, INT16, UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY, UINT64, INT64, FLOAT64 = range(13)
_FMT = {UINT8: "<B", INT8: "<b", UINT16: "<H", INT16: "<h", UINT32: "<I", INT32: "<i", FLOAT32: "<f",
        BOOL: "<?", UINT64: "<Q", INT64: "<q", FLOAT64: "<d"}


@dataclass
class Built:
    data: bytes
    marks: dict[str, int]                       # section / entry name -> byte offset
    fields: list[tuple[str, int, int]] = field(default_factory=list)  # (label, offset, size) of ints

    def field(self, label: str) -> tuple[int, int]:
        for lab, off, size in self.fields:
            if lab == label:
                return off, size
        raise KeyError(label)

    def patched(self, label: str, value: int) -> bytes:
        """The file with the integer field ``label`` overwritten by ``value``."""
        off, size = self.field(label)
        b = bytearray(self.data)
        b[off : off + size] = value.to_bytes(size, "little", signed=value < 0)
        return bytes(b)


class _Out:
    def __init__(self) -> None:
        self.b = bytearray()
        self.fields: list[tuple[str, int, int]] = []

    def int(self, v: int, size: int, label: str) -> None:
        self.fields.append((label, len(self.b), size))
        self.b += v.to_bytes(size, "little")

    def string(self, s: str, label: str) -> None:
        raw = s.encode("utf-8")
        self.int(len(raw), 8, label + ".len")
        self.b += raw

    def value(self, vt: int, v, label: str, elem: int | None = None) -> None:
        if vt == STRING:
            self.string(v, label)
        elif vt == ARRAY:
            self.int(elem, 4, label + ".etype")
            self.int(len(v), 8, label + ".count")
            for i, x in enumerate(v):
                self.value(elem, x, f"{label}[{i}]", None if elem != ARRAY else x[0])
        else:
            self.b += struct.pack(_FMT[vt], v)


class GGUFBuilder:
    def __init__(self, version: int = 3, alignment: int = 32) -> None:
        self.version = version
        self.alignment = alignment
        self.kv: list[tuple[str, int, object, int | None]] = []
        self.tensors: list[tuple[str, tuple[int, ...], int, bytes]] = []

    def add_kv(self, key: str, vt: int, value, elem: int | None = None) -> "GGUFBuilder":
        self.kv.append((key, vt, value, elem))
        return self

    def add_tensor(self, name: str, dims: tuple[int, ...], type_id: int, blob: bytes) -> "GGUFBuilder":
        self.tensors.append((name, tuple(dims), type_id, bytes(blob)))
        return self

    def build(self) -> Built:
        o = _Out()
        marks = {"header": 0}
        o.b += b"GGUF"
        o.int(self.version, 4, "version")
        o.int(len(self.tensors), 8, "tensor_count")
        o.int(len(self.kv), 8, "kv_count")
        marks["kv"] = len(o.b)
        for key, vt, v, elem in self.kv:
            marks[f"kv:{key}"] = len(o.b)
            o.string(key, f"kv:{key}.key")
            o.int(vt, 4, f"kv:{key}.vtype")
            marks[f"kv:{key}.value"] = len(o.b)
            o.value(vt, v, f"kv:{key}", elem)
        marks["tensor_infos"] = len(o.b)
        rel, offsets = 0, []
        for _name, _dims, _, blob in self.tensors:
            offsets.append(rel)
            rel = -(-(rel + len(blob)) // self.alignment) * self.alignment
        for (name, dims, type_id, _), off in zip(self.tensors, offsets):
            marks[f"ti:{name}"] = len(o.b)
            o.string(name, f"ti:{name}.name")
            o.int(len(dims), 4, f"ti:{name}.n_dims")
            for d_i, d in enumerate(dims):
                o.int(d, 8, f"ti:{name}.dim{d_i}")
            o.int(type_id, 4, f"ti:{name}.type")
            o.int(off, 8, f"ti:{name}.offset")
        marks["padding"] = len(o.b)
        o.b += bytes(-len(o.b) % self.alignment)
        marks["data"] = data = len(o.b)
        for (name, _, _, blob), off in zip(self.tensors, offsets):
            o.b += bytes(data + off - len(o.b))
            marks[f"t:{name}"] = len(o.b)
            o.b += blob
        o.b += bytes(-(len(o.b) - data) % self.alignment)
        marks["end"] = len(o.b)
        return Built(bytes(o.b), marks, o.fields)


def small_model(*, with_tl: bool = False) -> GGUFBuilder:
    """A small valid file: string/int/float/bool/array metadata and one tensor of F32, F16,
    BF16, Q8_0, I2_S, TQ2_0, TQ1_0 (+ TL1 and TL2 with their tiling key when ``with_tl``)."""
    from bitnet_lab.quant import packing
    from bitnet_lab.quant.tiling import TLTiling

    r = np.random.default_rng(1234)
    b = GGUFBuilder()
    b.add_kv("general.architecture", STRING, "bitnet")
    b.add_kv("general.name", STRING, "tiny")
    b.add_kv("bitnet.block_count", UINT32, 1)
    b.add_kv("bitnet.rope.freq_base", FLOAT32, 10000.0)
    b.add_kv("tokenizer.ggml.add_bos_token", BOOL, True)
    b.add_kv("tokenizer.ggml.tokens", ARRAY, ["<s>", "</s>", "a", "Ġb"], STRING)
    b.add_kv("tokenizer.ggml.scores", ARRAY, [0.0, 0.0, -1.0, -2.0], FLOAT32)
    b.add_kv("tokenizer.ggml.token_type", ARRAY, [3, 3, 1, 1], INT32)
    if with_tl:
        b.add_kv("bitnet_lab.tl_tiling", ARRAY, ["64,128,64,64,32", "32,256,32,96,32"], STRING)

    b.add_tensor("norm", (16,), 0, r.standard_normal(16).astype("<f4").tobytes())
    b.add_tensor("emb", (32, 4), 1, r.standard_normal(128).astype("<f2").tobytes())
    b.add_tensor("bf", (8,), 30, (r.standard_normal(8).astype("<f4").view("<u4") >> 16).astype("<u2").tobytes())
    q8 = np.zeros((2, 34), np.uint8)
    q8[:, :2] = np.array([0.01], "<f2").view(np.uint8)
    q8[:, 2:] = r.integers(-127, 128, size=(2, 32)).astype(np.int8).view(np.uint8)
    b.add_tensor("q8", (32, 2), 8, q8.tobytes())
    t = r.integers(-1, 2, size=(4, 128)).astype(np.int8)
    b.add_tensor("w.i2s", (128, 4), 36, packing.i2_s_blob(t, 0.5).tobytes())
    t = r.integers(-1, 2, size=(2, 256)).astype(np.int8)
    d = np.full((2, 1), 0.25, np.float16)
    b.add_tensor("w.tq2", (256, 2), 35, packing.pack_tq2_0(t, d).tobytes())
    b.add_tensor("w.tq1", (256, 2), 34, packing.pack_tq1_0(t, d).tobytes())
    if with_tl:
        for layout, (M, K), tiling in (("tl1", (64, 128), TLTiling(64, 64, 32)), ("tl2", (32, 256), TLTiling(32, 96, 32))):
            tt = r.integers(-1, 2, size=(M, K)).astype(np.int8)
            data = packing.pack(layout, tt, tiling=tiling).tobytes()
            data += bytes(-len(data) % 32) + struct.pack("<f", 0.75) + bytes(28)
            b.add_tensor(f"w.{layout}", (K, M), 38 if layout == "tl1" else 39, data)
    return b
