"""`inspect_model`: what is in a model file — metadata, tensor table, ternary statistics.

``inspect_model("model.gguf")`` reads a GGUF file (or a Hugging Face checkpoint folder, through
`bitnet_lab.load`) and returns an `InspectReport`:

- the metadata (long arrays summarised as ``[128256 strings]`` in the text form);
- one row per tensor: name, type, shape in ggml order (``[ne0, ne1]``, as llama.cpp prints it)
  and in torch order (``(M, K)``), bytes, ternary layout, absolute file offset;
- for TL1/TL2 files, the tiling each shape is read with and where it came from (the caller's
  ``tl_tiling``, the file's ``bitnet_lab.tl_tiling`` key, or bitnet.cpp's preset of the model the
  shapes identify), or why none could be told (then the TL tensors get no statistics);
- for each ternary tensor, the share of −1 / 0 / +1 codes and its scale γ, computed by decoding
  the tensor (vectorised, one tensor in memory at a time). Float projections that hold ternary
  values times one scale (the F32/F16 files the converters write,
  docs/formats.md#4-where-per-tensor-scales-live) get the same statistics. ``stats=False`` skips the decoding
  for big files.

``bitnet-lab inspect FILE [--json] [--no-stats]`` prints ``report.to_text()`` / ``to_json()``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from bitnet_lab.config import ModelConfig
from bitnet_lab.errors import BitnetLabError, FormatError
from bitnet_lab.tensors import FloatTensor, TernaryWeight

# Projection tensors (GGUF names) whose float values may be ternary × scale.
_PROJECTION_RE = re.compile(r"^blk\.\d+\.(attn_q|attn_k|attn_v|attn_output|ffn_gate|ffn_up|ffn_down)\.weight$")
# Text form: arrays longer than this are summarised, strings longer than this are cut.
MAX_INLINE_ITEMS = 8
MAX_INLINE_CHARS = 100


@dataclass(frozen=True)
class TernaryStats:
    """Code shares of one ternary tensor (they sum to 1) and its scale.

    ``scale``: the per-tensor γ (TQ files: the common block ``d`` when all agree, else the mean
    of the non-zero block scales); ``scale_min``/``scale_max``: the range of the block scales
    for TQ (equal to ``scale`` otherwise)."""

    neg: float
    zero: float
    pos: float
    n: int
    scale: float
    scale_min: float
    scale_max: float


@dataclass(frozen=True)
class TensorRow:
    name: str
    type_name: str                  # ggml type ("I2_S", "F16", …) or the HF storage ("hf_packed", "F32")
    ggml_shape: tuple[int, ...]     # ne0 first
    shape: tuple[int, ...]          # torch order
    nbytes: int
    layout: str | None              # ternary layout, None for float tensors
    offset: int | None              # absolute byte offset in the file (GGUF only)
    stats: TernaryStats | None = None


@dataclass(frozen=True)
class TilingRow:
    """The tiling of one TL shape: ``source`` "given" | "file key" | "preset"; ``detail`` names
    which (the preset's model, the key, the flag); ``n_tensors`` tensors share it."""

    layout: str
    shape: tuple[int, int]          # torch (M, K)
    tiling: tuple[int, int, int]    # (BM, BK, bm)
    source: str
    detail: str
    n_tensors: int


@dataclass
class InspectReport:
    """The result of `inspect_model`; ``to_text()`` for people, ``to_json()`` for programs."""

    path: Path
    file_format: str                          # "gguf" | "safetensors"
    file_size: int                            # bytes on disk (sum of the files for a folder)
    metadata: dict[str, Any]
    metadata_types: dict[str, str]            # key -> GGUF value type name (GGUF only)
    tensors: list[TensorRow]
    config: ModelConfig | None = None
    config_error: str | None = None
    gguf_version: int | None = None
    stats_computed: bool = True
    tl_tilings: list[TilingRow] = field(default_factory=list)
    tl_tiling_error: str | None = None        # why the TL tensors' tiling could not be told

    # ---- derived ----------------------------------------------------------------------
    @property
    def n_params(self) -> int:
        return int(sum(int(np.prod(r.shape)) for r in self.tensors))

    @property
    def tensor_bytes(self) -> int:
        return int(sum(r.nbytes for r in self.tensors))

    def type_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.tensors:
            out[r.type_name] = out.get(r.type_name, 0) + 1
        return out

    def row(self, name: str) -> TensorRow:
        for r in self.tensors:
            if r.name == name:
                return r
        raise KeyError(name)

    # ---- text -------------------------------------------------------------------------
    def to_text(self) -> str:
        lines = [f"{self.path}"]
        fmt = f"GGUF v{self.gguf_version}" if self.file_format == "gguf" else "Hugging Face safetensors"
        types = ", ".join(f"{n} {t}" for t, n in sorted(self.type_counts().items(), key=lambda kv: -kv[1]))
        lines.append(
            f"{fmt}, {_human_bytes(self.file_size)}, {len(self.metadata)} metadata keys, "
            f"{len(self.tensors)} tensors ({types}), {self.n_params / 1e6:.2f}M parameters"
        )
        if self.config is not None:
            lines.append("config: " + _describe_config(self.config))
        elif self.config_error:
            lines.append(f"config: not a model bitnet_lab runs ({self.config_error})")

        if self.tl_tilings or self.tl_tiling_error:
            lines += ["", "TL tiling (BM,BK,bm per shape, and where it came from):"]
            for r in self.tl_tilings:
                lines.append(f"  {r.layout} ({r.shape[0]}, {r.shape[1]})  {r.tiling[0]},{r.tiling[1]},{r.tiling[2]}  "
                             f"{r.source}: {r.detail}  [{r.n_tensors} tensor{'s' if r.n_tensors != 1 else ''}]")
            if self.tl_tiling_error:
                lines.append(f"  not resolved: {self.tl_tiling_error}")

        lines += ["", "metadata:"]
        width = max((len(k) for k in self.metadata), default=0)
        for k, v in self.metadata.items():
            t = self.metadata_types.get(k)
            lines.append(f"  {k:<{width}}  {_summarise_value(v, t)}")

        lines += ["", "tensors:"]
        lines += _tensor_table(self.tensors, self.stats_computed)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()

    def __repr__(self) -> str:
        return (
            f"InspectReport({str(self.path)!r}, {self.file_format}, {len(self.tensors)} tensors, "
            f"{len(self.metadata)} keys)"
        )

    # ---- json -------------------------------------------------------------------------
    def to_dict(self, *, full_metadata: bool = False) -> dict[str, Any]:
        """Plain JSON-able data. Long metadata arrays become ``{"array_of": type, "length": n,
        "head": [...]}`` unless ``full_metadata``."""
        md = {k: _json_value(v, self.metadata_types.get(k), full_metadata) for k, v in self.metadata.items()}
        return {
            "path": str(self.path),
            "format": self.file_format,
            "gguf_version": self.gguf_version,
            "file_size": self.file_size,
            "n_tensors": len(self.tensors),
            "n_params": self.n_params,
            "tensor_bytes": self.tensor_bytes,
            "type_counts": self.type_counts(),
            "config": self.config.to_dict() if self.config is not None else None,
            "config_error": self.config_error,
            "metadata": md,
            "metadata_types": dict(self.metadata_types),
            "stats_computed": self.stats_computed,
            "tl_tilings": [
                {"layout": r.layout, "shape": list(r.shape), "tiling": {"BM": r.tiling[0], "BK": r.tiling[1], "bm": r.tiling[2]},
                 "source": r.source, "detail": r.detail, "n_tensors": r.n_tensors}
                for r in self.tl_tilings
            ],
            "tl_tiling_error": self.tl_tiling_error,
            "tensors": [
                {
                    "name": r.name,
                    "type": r.type_name,
                    "ggml_shape": list(r.ggml_shape),
                    "shape": list(r.shape),
                    "nbytes": r.nbytes,
                    "layout": r.layout,
                    "offset": r.offset,
                    "stats": asdict(r.stats) if r.stats is not None else None,
                }
                for r in self.tensors
            ],
        }

    def to_json(self, *, indent: int | None = 2, full_metadata: bool = False) -> str:
        return json.dumps(self.to_dict(full_metadata=full_metadata), indent=indent, ensure_ascii=False)


# ---------------------------------------------------------------------------------------------
# Building the report
# ---------------------------------------------------------------------------------------------


def inspect_model(
    path: str | os.PathLike,
    *,
    tl_tiling: Any = None,
    stats: bool = True,
    progress: bool = True,
) -> InspectReport:
    """Inspect a GGUF file or a Hugging Face checkpoint folder (or its ``.safetensors`` file).

    ``tl_tiling``: the TL1/TL2 tiling when the file does not record it: ``"BM,BK,bm"``, a
    `TLTiling`, a preset name or a mapping (see `GGUFFile`); the report says which tiling each
    shape got and from where.
    ``stats``: decode every ternary tensor for its code shares and scale (slow for big files).
    """
    p = Path(os.fspath(path)).expanduser()
    if not p.exists():
        raise FormatError(f"no such file or directory: {path}")
    if p.is_dir() or p.suffix == ".safetensors" or p.name.endswith(".safetensors.index.json"):
        if p.is_dir() and not (p / "config.json").exists():
            ggufs = sorted(p.glob("*.gguf"))
            if len(ggufs) == 1:
                return _inspect_gguf(ggufs[0], tl_tiling, stats, progress)
        return _inspect_hf(p, stats, progress)
    return _inspect_gguf(p, tl_tiling, stats, progress)


def _inspect_gguf(path: Path, tl_tiling: Any, stats: bool, progress: bool) -> InspectReport:
    from bitnet_lab.formats.gguf import GGUFFile

    f = GGUFFile(path, tl_tiling=tl_tiling)
    try:
        if f.tensor_infos:
            config, config_error = _config_or_error(lambda: ModelConfig.from_gguf(f.metadata, {ti.name: ti.shape for ti in f.tensor_infos}))
        else:
            config, config_error = None, "the file has no tensors (a vocabulary-only GGUF)"
        rows = [
            TensorRow(ti.name, ti.type_name, tuple(ti.dims), tuple(ti.shape), int(ti.nbytes), ti.layout, int(ti.offset))
            for ti in f.tensor_infos
        ]
        tilings, tiling_error = _tl_tilings(f)
        if stats:
            # TL tensors whose tiling is unknown cannot be decoded: they keep no statistics
            skip = {r.name for r in rows if r.layout in ("tl1", "tl2")} if tiling_error else set()
            rows = _with_stats(rows, f.tensor, progress, path.name, skip)
        return InspectReport(
            path=path,
            file_format="gguf",
            file_size=int(f.file_size),
            metadata=dict(f.metadata),
            metadata_types={k: _type_name(t) for k, t in f.metadata_types.items()},
            tensors=rows,
            config=config,
            config_error=config_error,
            gguf_version=int(f.version),
            stats_computed=stats,
            tl_tilings=tilings,
            tl_tiling_error=tiling_error,
        )
    finally:
        f.close()


def _tl_tilings(f) -> tuple[list[TilingRow], str | None]:
    """One row per (layout, shape, tiling, source) of the file's TL tensors, or the reason none
    could be told (`GGUFFile.tl_tilings`)."""
    try:
        choices = f.tl_tilings()
    except BitnetLabError as e:
        return [], str(e)
    counts: dict[tuple, int] = {}
    for name, c in choices.items():
        ti = f.tensor_info(name)
        key = (ti.layout, (int(ti.shape[0]), int(ti.shape[1])), (c.tiling.BM, c.tiling.BK, c.tiling.bm), c.source, c.detail)
        counts[key] = counts.get(key, 0) + 1
    return [TilingRow(*k, n) for k, n in counts.items()], None


def _inspect_hf(path: Path, stats: bool, progress: bool) -> InspectReport:
    from bitnet_lab.model import load

    model = load(path)
    try:
        rows = []
        for name, t in model.tensors.items():
            layout = t.layout if isinstance(t, TernaryWeight) else None
            type_name = t.layout if isinstance(t, TernaryWeight) else t.ggml_type
            rows.append(TensorRow(name, type_name, tuple(reversed(t.shape)), tuple(t.shape), int(t.nbytes), layout, None))
        if stats:
            rows = _with_stats(rows, model.tensors.__getitem__, progress, path.name)
        folder = model.source if model.source.is_dir() else model.source.parent
        size = sum(q.stat().st_size for q in folder.iterdir() if q.is_file())
        md = {k: v for k, v in (model.metadata or {}).items()} if isinstance(model.metadata, Mapping) else {}
        return InspectReport(
            path=model.source,
            file_format=model.file_format,
            file_size=int(size),
            metadata=md,
            metadata_types={},
            tensors=rows,
            config=model.config,
            stats_computed=stats,
        )
    finally:
        model.close()


def _config_or_error(build) -> tuple[ModelConfig | None, str | None]:
    try:
        return build(), None
    except BitnetLabError as e:
        return None, str(e)


def _with_stats(rows: list[TensorRow], get, progress: bool, label: str, skip: set[str] = frozenset()) -> list[TensorRow]:
    """Add TernaryStats to every ternary row (and float projections holding t·γ) not in ``skip``."""
    from tqdm.auto import tqdm

    todo = [i for i, r in enumerate(rows)
            if (r.layout is not None or _PROJECTION_RE.match(r.name)) and r.name not in skip]
    out = list(rows)
    total = sum(rows[i].nbytes for i in todo)
    with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=f"statistics {label}",
              disable=not progress or not todo) as bar:
        for i in todo:
            r = rows[i]
            t = get(r.name)  # built per tensor and dropped after: one decoded tensor at a time
            out[i] = TensorRow(**{**r.__dict__, "stats": ternary_stats(t)})
            bar.update(r.nbytes)
    return out


def ternary_stats(t: TernaryWeight | FloatTensor) -> TernaryStats | None:
    """Code shares and scale of a ternary weight; for a float tensor, the same if its values are
    ternary × one scale (all non-zero magnitudes equal), else None."""
    if isinstance(t, TernaryWeight):
        codes = t.ternary()
        if t.block_scales is not None:
            d = np.asarray(t.block_scales, dtype=np.float16).astype(np.float32)
            nz = d[d != 0]
            lo, hi = (float(nz.min()), float(nz.max())) if nz.size else (0.0, 0.0)
            scale = lo if lo == hi else float(nz.mean())
        else:
            scale = lo = hi = float(t.scale)
        return _shares(codes, scale, lo, hi)
    x = t.to_numpy()
    a = np.abs(x)
    nz = a[a != 0]
    if nz.size == 0 or nz.min() != nz.max():
        return None
    s = float(nz[0])
    codes = np.sign(x).astype(np.int8)
    return _shares(codes, s, s, s)


def _shares(codes: np.ndarray, scale: float, lo: float, hi: float) -> TernaryStats:
    n = int(codes.size)
    neg = int(np.count_nonzero(codes == -1))
    zero = int(np.count_nonzero(codes == 0))
    pos = n - neg - zero  # codes are {-1, 0, 1} by construction of every decoder
    return TernaryStats(neg / n, zero / n, pos / n, n, scale, lo, hi)


# ---------------------------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------------------------


def _type_name(t: Any) -> str:
    """GGUF value type (or (ARRAY, element)) → "UINT32", "ARRAY[INT32]"."""
    if isinstance(t, tuple):
        inner = t[1]
        return f"ARRAY[{getattr(inner, 'name', str(inner))}]"
    return getattr(t, "name", str(t))


def _element_word(type_name: str | None, items: list) -> str:
    if type_name and type_name.startswith("ARRAY["):
        inner = type_name[6:-1]
        return {"STRING": "strings"}.get(inner, inner.lower())
    if items and all(isinstance(v, str) for v in items):
        return "strings"
    if items and all(isinstance(v, bool) for v in items):
        return "bools"
    if items and all(isinstance(v, int) for v in items):
        return "ints"
    if items and all(isinstance(v, (int, float)) for v in items):
        return "floats"
    return "items"


def _summarise_value(v: Any, type_name: str | None) -> str:
    if isinstance(v, np.ndarray):
        v = v.tolist()
    if isinstance(v, (list, tuple)):
        if len(v) > MAX_INLINE_ITEMS:
            return f"[{len(v)} {_element_word(type_name, list(v[:64]))}]"
        return "[" + ", ".join(_summarise_value(x, None) for x in v) + "]"
    if isinstance(v, str):
        if len(v) > MAX_INLINE_CHARS:
            return repr(v[: MAX_INLINE_CHARS - 20]) + f"… ({len(v)} chars)"
        return repr(v)
    if isinstance(v, float):
        return f"{v:.7g}"
    return str(v)


def _json_value(v: Any, type_name: str | None, full: bool) -> Any:
    if isinstance(v, np.ndarray):
        v = v.tolist()
    if isinstance(v, (np.integer, np.floating, np.bool_)):
        return v.item()
    if isinstance(v, (list, tuple)) and not full and len(v) > 64:
        return {"array_of": _element_word(type_name, list(v[:64])), "length": len(v), "head": list(v[:8])}
    return v


def _human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def _describe_config(c: ModelConfig) -> str:
    return (
        f"{c.arch}, {c.n_layers} layers, hidden {c.hidden}, heads {c.n_heads}/{c.n_kv_heads} "
        f"(head_dim {c.head_dim}), ffn {c.ffn} {c.activation}, vocab {c.vocab}, context {c.context}, "
        f"rope θ {c.rope_theta:g} ({c.rope_style}), eps {c.norm_eps:.3g}, "
        f"{'sub-norms, ' if c.sub_norms else ''}{'tied' if c.tied_output else 'untied'} output"
    )


def _fmt_shape(s: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(d) for d in s) + "]"


def _tensor_table(rows: list[TensorRow], with_stats: bool) -> list[str]:
    head = ["#", "name", "type", "ggml shape", "torch shape", "bytes", "offset"]
    if with_stats:
        head += ["-1", "0", "+1", "scale"]
    body = []
    for i, r in enumerate(rows):
        cells = [str(i), r.name, r.type_name, _fmt_shape(r.ggml_shape), _fmt_shape(r.shape), f"{r.nbytes:,}",
                 "" if r.offset is None else str(r.offset)]
        if with_stats:
            s = r.stats
            if s is None:
                cells += ["", "", "", ""]
            else:
                scale = f"{s.scale:.6g}" if s.scale_min == s.scale_max else f"{s.scale_min:.4g}..{s.scale_max:.4g}"
                cells += [f"{s.neg:.3f}", f"{s.zero:.3f}", f"{s.pos:.3f}", scale]
        body.append(cells)
    right = {0, 5, 6, 7, 8, 9, 10}  # numeric columns
    widths = [max(len(c[j]) for c in [head] + body) for j in range(len(head))]

    def fmt(cells: list[str]) -> str:
        return "  " + "  ".join(c.rjust(w) if j in right else c.ljust(w) for j, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return [fmt(head), "  " + "-" * (sum(widths) + 2 * (len(widths) - 1))] + [fmt(c) for c in body]
