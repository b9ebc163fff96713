"""Hugging Face checkpoints (safetensors): read them as GGUF-named tensors, and write them.

Reading (``read_hf_checkpoint``) gives the same ``ModelConfig`` and the same tensors, under the
same names, as the GGUF reader gives for a converted file, so a model loads identically from
either:

- ``model.safetensors``, or shards listed by ``model.safetensors.index.json`` (validated: every
  shard exists, every tensor is in exactly one shard, the one the index says);
- each file's header is validated here before the ``safetensors`` library opens it (the
  library then re-checks it; its verdict must agree); tensor data are zero-copy views of a
  read-only ``np.memmap`` at the validated offsets — the library's numpy reader copies every
  tensor and has no bf16, so it is not used for the data;
- the seven projections (docs/formats.md#7-hugging-face-safetensors-layouts):
  * latent float weights (bf16 / fp16 / fp32): ternarised online with absmean
    (``bitnet_lab.quant.absmean_ternarize``) → ``TernaryWeight(layout="int8", scale=γ)``;
  * packed uint8 ``(M/4, K)`` + ``weight_scale``: unpacked with ``packing.unpack_hf``; γ is
    ``weight_scale`` for ``linear_class = autobitlinear`` and ``fl32(1/weight_scale)`` for
    ``bitlinear`` (also when ``quantization_config`` says nothing),
    docs/formats.md#74-weight_scale-multiply-or-divide;
  * llama-arch checkpoints (rope_style ``norm``): q/k rows permuted as the GGUF converters do
    (docs/formats.md#76-qk-permutation-for-llama-arch-ggufs); bitnet archs are not permuted;
- embeddings, norms and an untied lm_head stay ``FloatTensor`` (F32 / F16 / BF16 bits, F64 is
  narrowed to F32).

Writing (``write_hf_checkpoint``) produces checkpoints in the three conventions from any model,
for tests and notebooks; see its docstring for how latent weights are constructed so that
absmean gives back exactly the same ternary codes and γ.
"""

from __future__ import annotations

import json
import math
import os
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Union

import numpy as np

from bitnet_lab.config import ModelConfig
from bitnet_lab.errors import BitnetLabError, CodecError, ConfigError, SafetensorsError
from bitnet_lab.formats import names as nm
from bitnet_lab.quant.ternary import WEIGHT_EPS, absmean_ternarize
from bitnet_lab.tensors import FloatTensor, TernaryWeight

__all__ = [
    "HFCheckpoint",
    "SafetensorsHeader",
    "read_safetensors_header",
    "read_hf_checkpoint",
    "write_hf_checkpoint",
    "write_safetensors",
    "latent_from_ternary",
    "hf_config_dict",
    "bf16_bits",
]

Tensor = Union[FloatTensor, TernaryWeight]

# safetensors dtype names -> size in bits (sub-byte float types included so that any valid
# header can be sized; bitnet_lab reads only the float and U8 ones as model tensors).
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32, "I64": 64, "U64": 64, "F64": 64, "C64": 64,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}
# numpy views of the dtypes we read (little endian, as the format says). BF16 stays uint16 bits.
_NP_DTYPE = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "U8": "u1", "I8": "i1",
             "I16": "<i2", "U16": "<u2", "I32": "<i4", "U32": "<u4", "I64": "<i8", "U64": "<u8", "BOOL": "u1"}
FLOAT_DTYPES = ("F32", "F16", "BF16", "F64")
MAX_HEADER_BYTES = 100_000_000  # the safetensors library refuses larger headers too
INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
LINEAR_CLASSES = ("bitlinear", "autobitlinear")
CONVENTIONS = ("autobitlinear", "bitlinear", "latent")


# ============================================================================================
# safetensors header: our own validation (before the library sees the file)
# ============================================================================================


@dataclass(frozen=True)
class _Entry:
    dtype: str
    shape: tuple[int, ...]
    begin: int  # relative to the data section
    end: int


@dataclass
class SafetensorsHeader:
    """A validated safetensors header: where each tensor's bytes are."""

    path: Path
    file_size: int
    data_start: int  # 8 + header length
    entries: dict[str, _Entry]
    metadata: dict[str, str]

    def array(self, name: str, mm: np.ndarray) -> np.ndarray:
        """The tensor ``name`` as a numpy view of ``mm`` (the file's uint8 memmap)."""
        e = self.entries[name]
        if e.dtype not in _NP_DTYPE:
            raise SafetensorsError(f"{self.path}: tensor {name!r} has dtype {e.dtype}, which bitnet_lab does not read")
        raw = mm[self.data_start + e.begin : self.data_start + e.end]
        return raw.view(_NP_DTYPE[e.dtype]).reshape(e.shape)


def _reject_constant(c: str) -> Any:
    raise ValueError(f"non-standard JSON constant {c}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def read_safetensors_header(path: str | os.PathLike) -> SafetensorsHeader:
    """Parse and validate the header of a safetensors file (no tensor data is read).

    Checks: header length against the file size (and the 100 MB cap), UTF-8 JSON object,
    ``__metadata__`` a str→str map, every entry with a known ``dtype``, a list of non-negative
    integer ``shape`` and two ``data_offsets`` in range, ``prod(shape) × dtype size == end −
    begin``, and the byte ranges tiling the data section exactly (no gap, no overlap, nothing
    after the last tensor) — the same rules the safetensors library enforces.
    """
    path = Path(path)
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head8 = f.read(8)
            if size < 8 or len(head8) < 8:
                raise SafetensorsError(f"{path}: truncated: {size} bytes, shorter than the 8-byte header length")
            n = struct.unpack("<Q", head8)[0]
            if n == 0 or n > size - 8:
                raise SafetensorsError(
                    f"{path}: header length {n} does not fit the file ({size - 8} bytes after the length field)"
                )
            if n > MAX_HEADER_BYTES:
                raise SafetensorsError(f"{path}: header length {n} exceeds the {MAX_HEADER_BYTES}-byte limit")
            raw = f.read(n)
    except OSError as e:
        raise SafetensorsError(f"{path}: cannot read ({e.strerror or e})") from None
    if len(raw) != n:
        raise SafetensorsError(f"{path}: truncated header: {len(raw)} of {n} bytes")
    try:
        header = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise SafetensorsError(f"{path}: the {n}-byte header is not valid UTF-8 JSON ({e})") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{path}: the header is a JSON {type(header).__name__}, not an object")

    data_size = size - 8 - n
    meta = header.pop("__metadata__", None)
    if meta is None:
        meta = {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise SafetensorsError(f"{path}: __metadata__ must map strings to strings, got {str(meta)[:80]}")

    entries: dict[str, _Entry] = {}
    for name, e in header.items():
        where = f"{path}: tensor {name!r}"
        if not isinstance(e, dict):
            raise SafetensorsError(f"{where}: header entry is a {type(e).__name__}, not an object")
        dtype, shape, offs = e.get("dtype"), e.get("shape"), e.get("data_offsets")
        if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
            raise SafetensorsError(f"{where}: unknown dtype {dtype!r} (known: {', '.join(DTYPE_BITS)})")
        if not isinstance(shape, list) or not all(_is_int(s) and s >= 0 for s in shape):
            raise SafetensorsError(f"{where}: shape {str(shape)[:80]} is not a list of non-negative integers")
        if not (isinstance(offs, list) and len(offs) == 2 and all(_is_int(o) for o in offs)):
            raise SafetensorsError(f"{where}: data_offsets {str(offs)[:80]} is not a pair of integers")
        begin, end = offs
        if not 0 <= begin <= end <= data_size:
            raise SafetensorsError(
                f"{where}: data_offsets [{begin}, {end}] outside the data section of {data_size} bytes"
            )
        bits = math.prod(shape) * DTYPE_BITS[dtype]
        if bits % 8 or bits // 8 != end - begin:
            raise SafetensorsError(
                f"{where}: shape {shape} × {dtype} ({DTYPE_BITS[dtype]} bits) = {bits / 8:g} bytes, "
                f"but data_offsets [{begin}, {end}] span {end - begin} bytes"
            )
        entries[name] = _Entry(dtype, tuple(shape), begin, end)

    # The byte ranges must tile [0, data_size) exactly, as the format (and library) require.
    pos, prev = 0, None
    for name, e in sorted(entries.items(), key=lambda kv: (kv[1].begin, kv[1].end)):
        if e.begin != pos:
            what = "overlaps" if e.begin < pos else "leaves a gap after"
            raise SafetensorsError(
                f"{path}: tensor {name!r} starts at {e.begin} and {what} "
                + (f"tensor {prev!r}, which ends at {pos}" if prev else "the start of the data section")
            )
        pos, prev = e.end, name
    if pos != data_size:
        raise SafetensorsError(
            f"{path}: tensors end at byte {pos} of the data section but it holds {data_size} bytes "
            f"(file size {size}, header {n} bytes)"
        )
    return SafetensorsHeader(path, size, 8 + n, entries, meta)


def _library_check(h: SafetensorsHeader) -> None:
    """Open the file with the safetensors library (memory-mapped) and require it to agree."""
    from safetensors import safe_open

    try:
        with safe_open(str(h.path), framework="numpy") as f:
            keys = set(f.keys())
            if keys != set(h.entries):
                raise SafetensorsError(
                    f"{h.path}: the safetensors library sees {len(keys)} tensors, our parser {len(h.entries)}"
                )
            for k in keys:
                sl = f.get_slice(k)
                e = h.entries[k]
                if tuple(sl.get_shape()) != e.shape or sl.get_dtype() != e.dtype:
                    raise SafetensorsError(
                        f"{h.path}: tensor {k!r}: the safetensors library reads {sl.get_dtype()} "
                        f"{sl.get_shape()}, our parser {e.dtype} {list(e.shape)}"
                    )
    except SafetensorsError:
        raise
    except Exception as e:  # the library's own error types vary by version
        raise SafetensorsError(f"{h.path}: the safetensors library rejects the file: {e}") from None


# ============================================================================================
# Locating the files: single file, or shards + index
# ============================================================================================


def _load_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"), parse_constant=_reject_constant)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise SafetensorsError(f"{path}: cannot read {what}: {e}") from None
    if not isinstance(data, dict):
        raise SafetensorsError(f"{path}: {what} is not a JSON object")
    return data


def _locate(src: Path) -> tuple[Path, list[Path], dict[str, str] | None]:
    """(folder, shard paths, index weight_map or None) for a file or checkpoint folder."""
    if src.is_file():
        if src.name == INDEX_NAME:
            src = src.parent
        else:
            return src.parent, [src], None
    if not src.is_dir():
        raise SafetensorsError(f"{src}: no such file or folder")
    index = src / INDEX_NAME
    if index.is_file():
        data = _load_json(index, "the shard index")
        wm = data.get("weight_map")
        if not isinstance(wm, dict) or not wm or not all(isinstance(k, str) and isinstance(v, str) for k, v in wm.items()):
            raise SafetensorsError(f"{index}: 'weight_map' must be a non-empty map of tensor name -> shard file")
        shards = sorted(set(wm.values()))
        bad = [s for s in shards if Path(s).is_absolute() or ".." in Path(s).parts]
        if bad:
            raise SafetensorsError(f"{index}: shard paths must stay inside the folder: {bad[:5]}")
        missing = [s for s in shards if not (src / s).is_file()]
        if missing:
            raise SafetensorsError(
                f"{index}: {len(missing)} shard file(s) listed in the index do not exist: {', '.join(missing[:5])}"
            )
        return src, [src / s for s in shards], wm
    single = src / SINGLE_NAME
    if single.is_file():
        return src, [single], None
    found = sorted(src.glob("*.safetensors"))
    if len(found) == 1:
        return src, found, None
    if not found:
        raise SafetensorsError(f"{src}: no .safetensors file (expected {SINGLE_NAME} or {INDEX_NAME} + shards)")
    raise SafetensorsError(
        f"{src}: {len(found)} .safetensors files but no {INDEX_NAME} to say which tensor is where"
    )


def _config_inputs(folder: Path, config: Any) -> tuple[ModelConfig, dict]:
    """The ModelConfig and the raw config.json dict (for quantization_config)."""
    cfg_path = folder / "config.json"
    raw: dict = {}
    if isinstance(config, Mapping):
        raw = dict(config)
    elif isinstance(config, (str, os.PathLike)):
        raw = _load_json(Path(config), "config.json")
    elif cfg_path.is_file():
        raw = _load_json(cfg_path, "config.json")
    if isinstance(config, ModelConfig):
        return config, raw
    if not raw:
        raise ConfigError(f"{folder}: no config.json; pass config= (a ModelConfig, a dict or a path)")
    try:
        return ModelConfig.from_hf(raw), raw
    except BitnetLabError:
        raise
    except (TypeError, ValueError, ArithmeticError, AttributeError) as e:
        # config.json is user input: a wrong type or a zero head count must not escape as a crash.
        raise ConfigError(f"{folder}: config.json has an unusable value: {type(e).__name__}: {e}") from None


# ============================================================================================
# read_hf_checkpoint
# ============================================================================================


def _linear_class(raw: Mapping[str, Any]) -> str:
    qc = raw.get("quantization_config") or {}
    if not isinstance(qc, Mapping):
        raise ConfigError(f"config.json quantization_config is a {type(qc).__name__}, not an object")
    method = qc.get("quant_method", "bitnet")
    if method != "bitnet":
        raise ConfigError(f"config.json quantization_config.quant_method is {method!r}; bitnet_lab reads 'bitnet'")
    lc = qc.get("linear_class", "bitlinear")  # transformers' default (docs/formats.md#72-quantization_config)
    if lc not in LINEAR_CLASSES:
        raise ConfigError(f"config.json quantization_config.linear_class is {lc!r}; expected one of {LINEAR_CLASSES}")
    return lc


def bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 → bfloat16 bit patterns (uint16), round to nearest even (NaN kept quiet)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    # Adding 0x7FFF plus the lowest kept bit, then dropping 16 bits, rounds half to even.
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    nan = (u & 0x7FFFFFFF) > 0x7F800000
    return np.where(nan, ((u >> 16) | 0x40).astype(np.uint16), r).astype(np.uint16)


def _to_f32(a: np.ndarray, dtype: str) -> np.ndarray:
    """A float tensor (any of FLOAT_DTYPES, bf16 as uint16 bits) as float32."""
    if dtype == "BF16":
        # bf16 is the top half of a float32: widening is exact.
        return (np.asarray(a, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
    return np.asarray(a).astype(np.float32, copy=False)


def _looks_ternary_times_scale(w32: np.ndarray) -> bool:
    """True when every value is 0 or ±max|w|: a fake-quantised weight, not a latent one."""
    a = np.abs(w32)
    amax = a.max(initial=0.0)
    return bool(amax > 0 and np.all((a == 0) | (a == amax)))


class HFCheckpoint:
    """An opened, validated Hugging Face checkpoint whose tensors are built one at a time.

    Opening reads only headers, the index and config.json, and checks everything that can be
    checked without the data: names, dtypes, shapes against the config, packed rows × 4 =
    out_features, a ``weight_scale`` for every packed weight, ``quantization_config``.
    ``load(name)`` then builds one GGUF-named tensor from the memory-mapped file; nothing is
    cached, so a converter can stream a model through with one tensor in memory at a time.

    Attributes: ``config`` (ModelConfig), ``raw_config`` (config.json dict), ``info`` (see
    :func:`read_hf_checkpoint`), ``shapes`` (GGUF name → torch-order shape, in load order).
    """

    def __init__(self, path_or_dir: str | os.PathLike, *,
                 config: ModelConfig | Mapping[str, Any] | str | os.PathLike | None = None) -> None:
        folder, shard_paths, weight_map = _locate(Path(path_or_dir))
        self.folder = folder
        self.config, self.raw_config = _config_inputs(folder, config)
        mc = self.config
        headers = [read_safetensors_header(p) for p in shard_paths]
        for h in headers:
            _library_check(h)
        where: dict[str, SafetensorsHeader] = {}
        for h in headers:
            for name in h.entries:
                if name in where:
                    raise SafetensorsError(
                        f"tensor {name!r} is in two shards: {where[name].path.name} and {h.path.name}"
                    )
                where[name] = h
        if weight_map is not None:
            _check_index(weight_map, where)
        self._where = where
        self._maps: dict[Path, np.ndarray] = {}

        style = nm.hf_style(where)
        info: dict[str, Any] = {
            "source": [str(p) for p in shard_paths],
            "shards": len(shard_paths),
            "naming": style,
            "architectures": self.raw_config.get("architectures"),
            "model_type": self.raw_config.get("model_type"),
            "quantization_config": self.raw_config.get("quantization_config"),
            "skipped": [],
            "warnings": [],
            "dtypes": {},
        }
        by_gguf: dict[str, str] = {}      # GGUF name -> HF name
        scales: dict[str, str] = {}       # GGUF weight name -> HF weight_scale name
        unknown: list[str] = []
        for name, h in where.items():
            dt = h.entries[name].dtype
            info["dtypes"][dt] = info["dtypes"].get(dt, 0) + 1
            if nm.is_skipped(name):
                info["skipped"].append(name)
                continue
            if name.endswith(".weight_scale"):
                g = nm.hf_to_gguf(name[: -len("_scale")])
                if g is None or nm.projection_of(g) is None:
                    unknown.append(name)
                else:
                    scales[g] = name
                continue
            g = nm.hf_to_gguf(name)
            if g is None:
                unknown.append(name)
            elif g == "output.weight" and mc.tied_output:
                info["skipped"].append(name)  # tie_word_embeddings: lm_head is token_embd
            else:
                by_gguf[g] = name
        if unknown:
            raise SafetensorsError(
                f"{len(unknown)} tensor(s) with names bitnet_lab does not map to GGUF: {sorted(unknown)[:8]}"
            )
        # Layer count first: a config that claims far more layers than the file holds must not
        # make us enumerate millions of expected names.
        layers = {int(g.split(".")[1]) for g in by_gguf if g.startswith("blk.")}
        n_have = max(layers) + 1 if layers else 0
        if mc.n_layers > n_have:
            raise SafetensorsError(
                f"config.json says {mc.n_layers} layers but the checkpoint has tensors for {n_have} "
                f"(model.layers.0 … model.layers.{n_have - 1})"
            )
        expected = mc.tensor_shapes()
        missing = [g for g in expected if g not in by_gguf]
        if missing:
            hf_names = [nm.gguf_to_hf(g, style) for g in missing]
            raise SafetensorsError(
                f"the checkpoint lacks {len(missing)} tensor(s) the config needs: "
                + ", ".join(f"{h} ({g})" for h, g in zip(hf_names[:8], missing[:8]))
                + (" …" if len(missing) > 8 else "")
            )
        extra = [by_gguf[g] for g in by_gguf if g not in expected]
        if extra:
            raise SafetensorsError(
                f"{len(extra)} tensor(s) do not belong to a model with this config "
                f"({mc.n_layers} layers, sub_norms={mc.sub_norms}, tied={mc.tied_output}): {sorted(extra)[:8]}"
            )
        stray = [scales[g] for g in scales if g not in by_gguf]
        if stray:
            raise SafetensorsError(f"weight_scale without its weight: {stray[:5]}")
        self._by_gguf, self._scales, self.shapes = by_gguf, scales, expected

        self.permute = mc.rope_style == "norm"
        if self.permute and mc.arch != "llama":
            raise ConfigError(f"rope_style 'norm' with arch {mc.arch!r}: only llama-arch GGUFs permute q/k")
        # Header-level checks of every tensor (shape, dtype, packing, scale) before any data.
        kinds: set[str] = set()
        self.linear_class: str | None = None
        for g, shape in expected.items():
            kinds.add(self._check(g, shape))
        kinds.discard("float")
        info["permuted_qk"] = self.permute
        info["weights"] = "mixed" if len(kinds) > 1 else (next(iter(kinds)) if kinds else "none")
        info["linear_class"] = self.linear_class
        info["scale_rule"] = {
            "latent": "absmean (γ = mean|W|, t = clip(round(W/γ)))",
            "packed": None if self.linear_class is None else (
                "multiply (W = t · weight_scale, γ = weight_scale)" if self.linear_class == "autobitlinear"
                else "divide (W = t / weight_scale, γ = fl32(1/weight_scale))"),
            "mixed": "absmean for float projections, weight_scale for packed ones",
            "none": None,
        }[info["weights"]]
        self.info = info

    # ---- header-level validation ------------------------------------------------------------
    def _loc(self, g: str) -> str:
        return f"tensor {self._by_gguf[g]!r} ({g})"

    def _entry(self, hf_name: str) -> _Entry:
        return self._where[hf_name].entries[hf_name]

    def _check(self, g: str, shape: tuple[int, ...]) -> str:
        """Validate tensor ``g`` from its header entry; returns float / latent / packed."""
        hf_name, loc = self._by_gguf[g], self._loc(g)
        e = self._entry(hf_name)
        if nm.projection_of(g) is None:
            if g in self._scales:
                raise SafetensorsError(f"{loc}: has a weight_scale but is not a ternary projection")
            if e.dtype not in FLOAT_DTYPES:
                raise SafetensorsError(f"{loc}: dtype {e.dtype}; embeddings and norms must be F32/F16/BF16")
            if e.shape != shape:
                raise SafetensorsError(f"{loc}: shape {list(e.shape)}, but config.json implies {list(shape)}")
            return "float"
        M, K = shape
        if e.dtype == "U8":
            ok = len(e.shape) == 2 and e.shape[1] == K and 4 * e.shape[0] == M
            if not ok:
                rows4 = 4 * e.shape[0] if len(e.shape) == 2 else "?"
                raise SafetensorsError(
                    f"{loc}: packed uint8 shape {list(e.shape)}: rows × 4 = {rows4} must equal out_features "
                    f"{M} and the columns in_features {K} (expected [{M // 4}, {K}], "
                    "docs/formats.md#73-packed-uint8-layout)"
                )
            if g not in self._scales:
                raise SafetensorsError(f"{loc}: packed uint8 weight without its {hf_name}_scale")
            se = self._entry(self._scales[g])
            if se.dtype not in FLOAT_DTYPES or se.shape not in ((1,), ()):
                raise SafetensorsError(
                    f"tensor {self._scales[g]!r}: weight_scale is {se.dtype} {list(se.shape)}; "
                    "expected a float type with shape [1] or []"
                )
            if self.linear_class is None:
                self.linear_class = _linear_class(self.raw_config)
            return "packed"
        if e.dtype in FLOAT_DTYPES:
            if g in self._scales:
                raise SafetensorsError(
                    f"{loc}: float weight with a weight_scale ({self._scales[g]!r}); expected either latent "
                    "float weights or packed uint8 weights + weight_scale"
                )
            if e.shape != shape:
                raise SafetensorsError(f"{loc}: shape {list(e.shape)}, but config.json implies {list(shape)}")
            return "latent"
        raise SafetensorsError(f"{loc}: dtype {e.dtype}; a projection must be latent float (F32/F16/BF16) or packed U8")

    # ---- data ---------------------------------------------------------------------------------
    def _view(self, hf_name: str) -> np.ndarray:
        h = self._where[hf_name]
        if h.path not in self._maps:
            self._maps[h.path] = np.memmap(h.path, dtype=np.uint8, mode="r")
        return h.array(hf_name, self._maps[h.path])

    def _weight_scale(self, g: str) -> np.float32:
        sname = self._scales[g]
        v = np.float32(_to_f32(self._view(sname), self._entry(sname).dtype).reshape(-1)[0])  # F64 rounds once
        if not (np.isfinite(v) and v > 0):
            raise SafetensorsError(f"tensor {sname!r}: weight_scale is {v}; it must be finite and > 0")
        return v

    def gamma(self, g: str) -> np.float32:
        """γ of projection ``g`` without building its codes (a converter needs it up front)."""
        hf_name = self._by_gguf[g]
        e = self._entry(hf_name)
        if e.dtype == "U8":
            ws = self._weight_scale(g)
            # autobitlinear: W = t·weight_scale; bitlinear: W = t / weight_scale
            # (docs/formats.md#74-weight_scale-multiply-or-divide)
            gamma = ws if self.linear_class == "autobitlinear" else np.float32(np.float32(1.0) / ws)
            if not np.isfinite(gamma):
                raise SafetensorsError(f"tensor {self._scales[g]!r}: weight_scale {ws} gives γ = 1/{ws} = {gamma}")
            return gamma
        return absmean_ternarize(self._latent(g))[1]

    def _latent(self, g: str) -> np.ndarray:
        """Latent weights of projection ``g`` as float32, required finite (absmean of a NaN or
        an inf has no meaning, and casting NaN codes to int8 would invent values)."""
        hf_name = self._by_gguf[g]
        w32 = _to_f32(self._view(hf_name), self._entry(hf_name).dtype)
        bad = w32.size - int(np.count_nonzero(np.isfinite(w32)))
        if bad:
            raise SafetensorsError(f"{self._loc(g)}: {bad} non-finite latent weight(s) (NaN or ±inf)")
        return w32

    def load(self, g: str) -> Tensor:
        """Build tensor ``g`` (a GGUF name of ``shapes``) from the mapped file."""
        if g not in self.shapes:
            raise SafetensorsError(f"no tensor {g!r} in this checkpoint (GGUF names: {list(self.shapes)[:4]} …)")
        hf_name, loc, shape = self._by_gguf[g], self._loc(g), self.shapes[g]
        dtype = self._entry(hf_name).dtype
        a = self._view(hf_name)
        proj = nm.projection_of(g)
        if proj is None:
            if dtype == "F64":
                a, dtype = a.astype(np.float32), "F32"  # there is no F64 FloatTensor: narrowed once
            return FloatTensor(g, dtype, shape, a)
        M, K = shape
        if dtype == "U8":
            try:
                t = _unpack_hf(a, M)
            except CodecError as e:
                raise SafetensorsError(f"{loc}: {e}") from None
            gamma = self.gamma(g)
        else:
            w32 = self._latent(g)
            if _looks_ternary_times_scale(w32):
                msg = (f"{loc}: every value is 0 or ±max|w|, i.e. already ternary × scale; absmean "
                       "re-ternarisation keeps the codes but shrinks γ by the non-zero fraction "
                       "(docs/numerics.md#1-weight-ternarisation)")
                if msg not in self.info["warnings"]:
                    self.info["warnings"].append(msg)
                    warnings.warn(msg, stacklevel=3)
            t, gamma = absmean_ternarize(w32)
        if self.permute and proj in ("attn_q", "attn_k"):
            # HF rows are in NEOX (rotate_half) order; llama GGUFs interleave pairs
            # (docs/formats.md#76-qk-permutation-for-llama-arch-ggufs).
            t = nm.permute_qk(t, self.config.n_heads if proj == "attn_q" else self.config.n_kv_heads)
        return TernaryWeight(g, "int8", (M, K), np.ascontiguousarray(t, dtype=np.int8), scale=np.float32(gamma))


def _check_index(weight_map: Mapping[str, str], where: Mapping[str, SafetensorsHeader]) -> None:
    """Every tensor of the index is in the shard it names, and every shard tensor is listed."""
    for name, shard in weight_map.items():
        if name not in where:
            raise SafetensorsError(f"{INDEX_NAME}: tensor {name!r} is listed in {shard} but no shard holds it")
        if where[name].path.name != Path(shard).name:
            raise SafetensorsError(
                f"{INDEX_NAME}: tensor {name!r} is listed in {shard} but is in {where[name].path.name}"
            )
    unlisted = sorted(set(where) - set(weight_map))
    if unlisted:
        raise SafetensorsError(
            f"{INDEX_NAME}: {len(unlisted)} tensor(s) are in a shard but not in the index: {unlisted[:5]}"
        )


def read_hf_checkpoint(
    path_or_dir: str | os.PathLike,
    *,
    config: ModelConfig | Mapping[str, Any] | str | os.PathLike | None = None,
    progress: bool = False,
) -> tuple[ModelConfig, dict[str, Tensor], dict[str, Any]]:
    """Read a Hugging Face BitNet checkpoint as ``(config, tensors, info)``.

    ``path_or_dir``: a checkpoint folder (``model.safetensors`` or shards + index, config.json)
    or one ``.safetensors`` file (config.json next to it, or ``config=``: a ModelConfig, a
    config.json dict or path).

    ``tensors`` maps GGUF names (``token_embd.weight``, ``blk.N.attn_q.weight``, …,
    ``output.weight`` only when untied) to ``FloatTensor`` (torch-order shapes, memory-mapped
    views) or ``TernaryWeight(layout="int8")``. ``info`` says what was found and which
    conventions were applied: ``weights`` (latent / packed / mixed), ``linear_class``,
    ``scale_rule``, ``permuted_qk``, ``naming`` (bitnet2b / 1bitllm / llama), ``shards``,
    ``dtypes`` (count per safetensors dtype), ``skipped``, ``warnings``.
    """
    ck = HFCheckpoint(path_or_dir, config=config)
    names: Iterable[str] = list(ck.shapes)
    if progress:
        from tqdm.auto import tqdm

        names = tqdm(names, desc="reading checkpoint", unit="tensor")
    tensors = {g: ck.load(g) for g in names}
    return ck.config, tensors, ck.info


def _unpack_hf(packed: np.ndarray, M: int) -> np.ndarray:
    from bitnet_lab.quant import packing

    return packing.unpack_hf(packed, M)


# ============================================================================================
# Writing
# ============================================================================================


def write_safetensors(path: str | os.PathLike, arrays: Mapping[str, tuple[str, np.ndarray]],
                      metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``{name: (dtype name, array)}`` as a safetensors file (header padded to 8 bytes).

    ``BF16`` arrays are given as uint16 bit patterns. Tensors are laid out in sorted-name order,
    as the reference implementation does."""
    path = Path(path)
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    blobs, pos = [], 0
    for name in sorted(arrays):
        dtype, a = arrays[name]
        if dtype not in _NP_DTYPE:
            raise SafetensorsError(f"write_safetensors: {name!r} has unsupported dtype {dtype!r}")
        a = np.asarray(a)
        b = np.ascontiguousarray(a, dtype=_NP_DTYPE[dtype]).tobytes()
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [pos, pos + len(b)]}
        blobs.append(b)
        pos += len(b)
    hb = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hb += b" " * (-len(hb) % 8)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)
    return path


def latent_from_ternary(t: np.ndarray, gamma) -> np.ndarray:
    """float32 "latent" weights W with ``absmean_ternarize(W) == (t, gamma)`` bit for bit.

    Absmean is not idempotent: ``mean|t·γ|`` is γ times the non-zero fraction. So W is built
    from magnitudes that are γ times a power of two (exact in float32), chosen to sum to
    exactly ``n·γ`` over the ``n`` weights:

    - a zero weight is 0 or ±γ/4 (|W/γ| = 1/4 rounds to 0);
    - a non-zero weight is ±γ·2^k with k ≥ 0 (|W/γ| ≥ 1 rounds, then clamps, to ±1);
    - the ``nz`` non-zero magnitudes are ``nz`` powers of two summing to ``S`` units of γ, and
      ``4·(n − S)`` zeros carry γ/4 each, so the total is ``S + (n − S) = n`` units of γ.

    Every partial sum is γ times a multiple of 1/4 below ``n·γ``, exact in float64 for
    ``n ≤ 2^27``, so ``mean = (n·γ)/n = γ`` exactly, whatever the summation order; then
    ``W·fl(1/γ)`` is within 2⁻²³ relative of 1/4, 1, 2, … and rounds to the intended codes.
    ``S`` is the largest number ≤ n with at most ``nz`` set bits that the zeros can complete.
    """
    t = np.asarray(t)
    if t.dtype.kind not in "iu" or (t.size and (t.min() < -1 or t.max() > 1)):
        raise CodecError("latent_from_ternary: t must be an integer array in {-1, 0, 1}")
    g = np.float32(gamma)
    if not (np.isfinite(g) and g >= np.float32(WEIGHT_EPS)):
        raise CodecError(f"latent_from_ternary: γ = {gamma!r} must be finite and ≥ {WEIGHT_EPS} (absmean's floor)")
    flat = t.reshape(-1)
    n = flat.size
    nz = int(np.count_nonzero(flat))
    if n > 2**27:
        raise CodecError(f"latent_from_ternary: {n} weights > 2^27; the float64 mean would no longer be exact")
    if nz == 0:
        raise CodecError("latent_from_ternary: an all-zero matrix has absmean 0 (floored to 1e-5); γ cannot be carried")
    z = n - nz
    # Largest S <= n with popcount(S) <= nz: keep the top nz set bits of n.
    bits = [b for b in range(n.bit_length() - 1, -1, -1) if n >> b & 1][:nz]
    S = sum(1 << b for b in bits)
    if S < nz or 4 * (n - S) > z:
        raise CodecError(
            f"latent_from_ternary: cannot split {n} units of γ over {nz} non-zero and {z} zero weights "
            f"(best S = {S}); too few non-zero weights for an exact absmean"
        )
    # nz powers of two summing to S: start from S's binary digits, split the largest until nz.
    count = np.zeros(max(S.bit_length(), 1), dtype=np.int64)
    for b in bits:
        count[b] += 1
    need = nz - len(bits)
    for k in range(len(count) - 1, 0, -1):
        s = min(int(count[k]), need)
        count[k] -= s
        count[k - 1] += 2 * s
        need -= s
    assert need == 0 and int((count * (1 << np.arange(len(count)))).sum()) == S
    mags = np.repeat(np.arange(len(count))[::-1], count[::-1]).astype(np.float32)  # exponents, largest first
    w = np.zeros(n, dtype=np.float32)
    nzi = np.flatnonzero(flat)
    w[nzi] = np.sign(flat[nzi]).astype(np.float32) * (g * np.exp2(mags))  # γ·2^k: exact in f32
    # The remaining n − S units of γ: 4·(n − S) zero weights at γ/4 (1/4 unit each).
    zi = np.flatnonzero(flat == 0)[: 4 * (n - S)]
    w[zi] = g * np.float32(0.25)
    return w.reshape(t.shape)


def hf_config_dict(config: ModelConfig, convention: str = "latent", *, dtype: str = "float32") -> dict[str, Any]:
    """A config.json for ``config`` that ``ModelConfig.from_hf`` reads back to the same model
    (the arch string normalises: ``bitnet-25`` reads back as ``bitnet-b1.58``, a SiLU
    ``bitnet-b1.58`` as ``bitnet``; the name travels as ``_name_or_path``)."""
    if config.rope_dim is not None:
        raise ConfigError(f"rope_dim {config.rope_dim} != head_dim: partial RoPE has no config.json field here")
    is_llama = config.arch == "llama"
    if is_llama != (config.rope_style == "norm"):
        raise ConfigError(
            f"arch {config.arch!r} with rope_style {config.rope_style!r}: HF configs imply norm for llama, neox otherwise"
        )
    if config.sub_norms == is_llama:
        raise ConfigError(f"arch {config.arch!r} with sub_norms={config.sub_norms}: HF configs tie sub-norms to bitnet archs")
    d: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"] if is_llama else
        (["BitnetForCausalLM"] if config.arch == "bitnet" else ["BitNetForCausalLM"]),
        "model_type": "llama" if is_llama else "bitnet",
        "hidden_size": config.hidden,
        "intermediate_size": config.ffn,
        "num_hidden_layers": config.n_layers,
        "num_attention_heads": config.n_heads,
        "num_key_value_heads": config.n_kv_heads,
        "vocab_size": config.vocab,
        "max_position_embeddings": config.context,
        "rms_norm_eps": config.norm_eps,
        "rope_theta": config.rope_theta,
        "hidden_act": config.activation,
        "tie_word_embeddings": config.tied_output,
        "torch_dtype": dtype,
    }
    if config.head_dim != config.hidden // config.n_heads:
        d["head_dim"] = config.head_dim
    for k, v in (("bos_token_id", config.bos_id), ("eos_token_id", config.eos_id), ("pad_token_id", config.pad_id)):
        if v is not None:
            d[k] = v
    if config.name:
        d["_name_or_path"] = config.name
    if convention in LINEAR_CLASSES:
        d["quantization_config"] = {"quant_method": "bitnet", "linear_class": convention, "quantization_mode": "offline"}
    elif convention != "latent":
        raise ConfigError(f"unknown convention {convention!r}; expected one of {CONVENTIONS}")
    return d


def _style_for(config: ModelConfig) -> str:
    return {"bitnet": "1bitllm", "llama": "llama"}.get(config.arch, "bitnet2b")


def _float_payload(w: FloatTensor) -> tuple[str, np.ndarray]:
    if w.ggml_type in ("F32", "F16", "BF16"):
        return w.ggml_type, np.asarray(w.data).reshape(w.shape)
    return "F32", w.to_numpy()  # block-quantised (Q8_0, Q6_K): dequantised


def write_hf_checkpoint(
    out_dir: str | os.PathLike,
    config: ModelConfig,
    tensors: Mapping[str, Tensor],
    *,
    convention: str = "autobitlinear",
    shard_size: int | None = None,
    scale_dtype: str = "F32",
) -> Path:
    """Write a Hugging Face checkpoint of a model given as GGUF-named tensors.

    ``convention``:
    - ``autobitlinear``: packed uint8 (docs/formats.md#73-packed-uint8-layout) + ``weight_scale = γ``
      (``scale_dtype``);
    - ``bitlinear``: packed uint8 + ``weight_scale = fl32(1/γ)``. Reading divides, so the γ read
      back is ``fl32(1/fl32(1/γ))``: equal to γ or one ulp away (never more);
    - ``latent``: float32 weights from :func:`latent_from_ternary`, so absmean re-ternarisation
      gives back exactly the same codes and γ.

    Names follow the arch: 1bitLLM (``inner_attn_ln``/``ffn_layernorm``) for ``bitnet``, 2B-4T
    (``attn_sub_norm``/``ffn_sub_norm``) for ``bitnet-b1.58``/``bitnet-25``, Llama for ``llama``
    (q/k rows un-permuted back to HF order). ``shard_size`` (bytes) splits the tensors into
    ``model-0000i-of-0000N.safetensors`` files plus ``model.safetensors.index.json``.
    Writes config.json (with ``quantization_config`` for the packed conventions); model*.safetensors
    files and an index already in ``out_dir`` are replaced.
    """
    from bitnet_lab.quant import packing

    if convention not in CONVENTIONS:
        raise ConfigError(f"unknown convention {convention!r}; expected one of {CONVENTIONS}")
    if scale_dtype not in ("F32", "BF16", "F16"):
        raise ConfigError(f"scale_dtype {scale_dtype!r}: expected F32, BF16 or F16")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    style = _style_for(config)
    expected = config.tensor_shapes()
    missing = [g for g in expected if g not in tensors]
    if missing:
        raise ConfigError(f"write_hf_checkpoint: the model lacks {missing[:8]}")

    arrays: dict[str, tuple[str, np.ndarray]] = {}
    for g, shape in expected.items():
        w = tensors[g]
        hf_name = nm.gguf_to_hf(g, style)
        proj = nm.projection_of(g)
        if proj is None:
            if not isinstance(w, FloatTensor):
                raise ConfigError(f"{g}: expected a FloatTensor, got {type(w).__name__}")
            arrays[hf_name] = _float_payload(w)
            continue
        if not isinstance(w, TernaryWeight):
            raise ConfigError(f"{g}: expected a TernaryWeight, got {type(w).__name__}")
        t = w.ternary()
        gamma = w.gamma()
        if config.arch == "llama" and proj in ("attn_q", "attn_k"):
            t = nm.unpermute_qk(t, config.n_heads if proj == "attn_q" else config.n_kv_heads)
        if convention == "latent":
            arrays[hf_name] = ("F32", latent_from_ternary(t, gamma))
            continue
        arrays[hf_name] = ("U8", packing.pack_hf(t))
        ws = np.float32(gamma) if convention == "autobitlinear" else np.float32(np.float32(1.0) / np.float32(gamma))
        if scale_dtype == "F32":
            arrays[hf_name + "_scale"] = ("F32", np.array([ws], dtype=np.float32))
        elif scale_dtype == "F16":
            arrays[hf_name + "_scale"] = ("F16", np.array([ws], dtype=np.float16))
        else:
            arrays[hf_name + "_scale"] = ("BF16", bf16_bits(np.array([ws], dtype=np.float32)))

    cfg = hf_config_dict(config, convention, dtype="float32")
    (out / "config.json").write_text(json.dumps(cfg, indent=1) + "\n")
    for stale in list(out.glob("model*.safetensors")) + [out / INDEX_NAME]:
        if stale.exists():
            stale.unlink()
    meta = {"format": "pt"}
    if shard_size is None:
        write_safetensors(out / SINGLE_NAME, arrays, meta)
        return out
    if shard_size <= 0:
        raise ConfigError(f"shard_size must be > 0 bytes, got {shard_size}")
    groups: list[list[str]] = [[]]
    size = 0
    for name in sorted(arrays):
        nb = np.asarray(arrays[name][1]).nbytes
        if groups[-1] and size + nb > shard_size:
            groups.append([])
            size = 0
        groups[-1].append(name)
        size += nb
    n = len(groups)
    weight_map, total = {}, 0
    for i, grp in enumerate(groups, 1):
        fname = f"model-{i:05d}-of-{n:05d}.safetensors"
        write_safetensors(out / fname, {k: arrays[k] for k in grp}, meta)
        for k in grp:
            weight_map[k] = fname
            total += np.asarray(arrays[k][1]).nbytes
    (out / INDEX_NAME).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1) + "\n")
    return out
