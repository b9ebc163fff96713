"""Profiles of one model: load time and peak RSS, and where the time of one decode step goes.

* :func:`load_profile` runs the load in a FRESH Python process, so neither the benchmark's own
  memory nor its warm caches pollute the figures: time to import, to ``bitnet_lab.load`` (open
  the file, parse metadata, map the tensors), to build the backend (the engine's checks and any
  repacking; the reference's weight preparation and JAX import), to run the first decode step
  (which touches every weight page of the memory-mapped file, and compiles for the reference)
  and a second one; the peak resident set size after each phase (VmHWM on Linux). The tokenizer
  is built on its own, after the backend, when the file has one (``bitnet-lab run`` and ``chat``
  build the two side by side, so their "load" is about the larger of the two plus the file's).
* :func:`decode_breakdown` splits one decode step. For the native engine it reads the engine's
  own per-op timers (``NativeEngine.profile_decode``: thread 0's wall time per op class inside
  the C call, median of the steps; "sync" = waiting at barriers). Otherwise (the reference, or
  ``method="differences"``) it splits by differences of measured times, using only the
  backend's public interface:
    - the whole step at cache position ``position`` (prefilled untimed), for the full model and
      for the same model cut to its first layer: ``per layer = (T_full − T_1) / (L − 1)`` and
      ``embedding + output norm + lm_head + call overhead = T_1 − per layer``;
    - each projection of every layer through the engine's own ``bitlinear`` (activation
      quantisation + the GEMV kernel + epilogue, the forward pass's code path), summed over the
      layers; ``attention, norms, RoPE, activation`` = the layers' time minus the projections.
  Per-call Python overhead (~µs) is inside every projection time; the notes say so.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from bitnet_lab.bench.table import Column, Table
from bitnet_lab.errors import BitnetLabError

_MARKER = "BITNET_LAB_LOAD_PROFILE "


# =============================================================================================
# Load time and peak RSS
# =============================================================================================


@dataclass(frozen=True)
class LoadProfile:
    """Times (s) and peak RSS (bytes) of loading one model in a fresh process."""

    path: str
    backend: str
    threads: int | None
    file_bytes: int
    phases: list[dict[str, Any]]   # {"phase", "seconds", "peak_rss", "rss"} in order
    notes: list[str] = field(default_factory=list)

    def seconds(self, phase: str) -> float:
        return next(p["seconds"] for p in self.phases if p["phase"] == phase)

    @property
    def peak_rss(self) -> int:
        return max(int(p["peak_rss"]) for p in self.phases)

    def table(self) -> Table:
        cols = [Column("phase", "phase"),
                Column("seconds", "time", "r", lambda r: f"{r['seconds'] * 1e3:.1f} ms"),
                Column("peak_rss", "peak RSS", "r", lambda r: f"{r['peak_rss'] / 2**20:.1f} MiB"),
                Column("rss", "RSS now", "r", lambda r: "-" if r.get("rss") is None else f"{r['rss'] / 2**20:.1f} MiB")]
        recs = [{**p, "backend": self.backend, "threads": self.threads, "path": self.path} for p in self.phases]
        notes = [f"fresh process; file {self.file_bytes / 2**20:.1f} MiB, backend {self.backend}"
                 + (f", {self.threads} threads" if self.threads else "") + "; peak RSS counts the mapped "
                 "weight pages the process touched."] + list(self.notes)
        return Table("Load time and memory", cols, recs, notes)

    def to_markdown(self, *, title: bool = True) -> str:
        return self.table().to_markdown(title=title)

    def _repr_html_(self) -> str:
        return self.table()._repr_html_()

    def __str__(self) -> str:
        return self.to_markdown()


def _peak_rss() -> int | None:
    """Peak resident set size of this process in bytes.

    Linux: VmHWM of /proc/self/status — the high-water mark of THIS program image. (getrusage's
    ru_maxrss is not usable in a child: the kernel carries the parent's peak across fork + exec,
    so a small child started by a big parent would report the parent's size.) Elsewhere:
    ru_maxrss (bytes on macOS, KiB on other systems)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def _rss_now() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def _load_profile_child(args: dict, t_start: float) -> None:
    """Runs in the fresh process: load, build, two decode steps; prints one JSON line."""
    from bitnet_lab.model import load

    phases = []

    def mark(phase: str, t0: float) -> float:
        t1 = time.perf_counter()
        phases.append({"phase": phase, "seconds": t1 - t0, "peak_rss": _peak_rss(), "rss": _rss_now()})
        return t1

    t = mark("python + bitnet_lab import", t_start)
    model = load(args["path"], backend=args["backend"], threads=args["threads"], **args.get("options", {}))
    t = mark("load (open, metadata, map tensors)", t)
    runner = model.runner
    t = mark(f"build the {args['backend']} backend", t)
    try:
        model.tokenizer
    except BitnetLabError:  # a file without a tokenizer still loads and runs (ids in, logits out)
        pass
    else:
        t = mark("tokenizer (from the file's metadata)", t)
    cache = runner.new_cache(8)
    tok = model.config.bos_id if model.config.bos_id is not None else 0
    np.asarray(runner.forward([tok], cache))
    t = mark("first decode step", t)
    np.asarray(runner.forward([tok], cache))
    mark("second decode step", t)
    print(_MARKER + json.dumps({"phases": phases, "source": str(model.source)}), flush=True)


_CHILD = (
    "import time; _t0 = time.perf_counter()\n"
    "import json, sys\n"
    "from bitnet_lab.bench.profile import _load_profile_child\n"
    "_load_profile_child(json.loads(sys.argv[1]), _t0)\n"
)


def load_profile(path: str | os.PathLike, *, backend: str = "native", threads: int | None = None,
                 timeout: float = 600.0, python: str = sys.executable, **backend_options: Any) -> LoadProfile:
    """Load ``path`` with ``backend`` in a fresh ``python`` process and report each phase's time
    and the peak RSS after it (module docstring). ``backend_options`` (JSON values, e.g.
    ``i2s_layout="file"``) go to ``bitnet_lab.load`` in the child. Raises BitnetLabError with the
    child's error when the load fails."""
    path = str(path)
    if _peak_rss() is None:
        raise BitnetLabError("load_profile needs the resource module (POSIX) to read the peak RSS")
    env = dict(os.environ)
    pkg_parent = str(Path(__file__).resolve().parent.parent)  # works from a checkout without install
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_parent, env.get("PYTHONPATH", "")) if p)
    args = json.dumps({"path": path, "backend": backend, "threads": threads, "options": backend_options})
    try:
        r = subprocess.run([python, "-c", _CHILD, args], capture_output=True, text=True, timeout=timeout, env=env, check=False)
    except subprocess.TimeoutExpired:
        raise BitnetLabError(f"load_profile: loading {path} took more than {timeout:.0f} s") from None
    line = next((ln for ln in reversed(r.stdout.splitlines()) if ln.startswith(_MARKER)), None)
    if r.returncode != 0 or line is None:
        tail = " ".join((r.stderr or r.stdout).strip().splitlines()[-3:])
        raise BitnetLabError(f"load_profile: the child process failed to load {path} with backend {backend} "
                             f"(exit {r.returncode}): {tail}")
    out = json.loads(line[len(_MARKER):])
    src = Path(out["source"])
    size = sum(f.stat().st_size for f in src.rglob("*") if f.is_file()) if src.is_dir() else src.stat().st_size
    return LoadProfile(path, backend, threads, int(size), out["phases"])


# =============================================================================================
# Decode-step breakdown
# =============================================================================================

PROJECTIONS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


@dataclass(frozen=True)
class DecodeBreakdown:
    """Times (ns, fastest of the repeats) of the parts of one decode step; see the module docstring."""

    model: str
    backend: str
    threads: int | None
    isa: str
    position: int
    n_layers: int
    step_ns: float                       # the whole step, full model
    layer_ns: float | None               # one layer (None for a one-layer model)
    fixed_ns: float | None               # embedding + output norm + lm_head + call overhead
    projection_ns: dict[str, float]      # per projection, summed over the layers (may be empty)
    notes: list[str] = field(default_factory=list)
    ops_ns: dict[str, float] = field(default_factory=dict)  # per op class, from the engine's timers

    def parts(self) -> list[tuple[str, float | None]]:
        if self.ops_ns:
            return [(op, ns) for op, ns in self.ops_ns.items() if ns > 0]
        out: list[tuple[str, float | None]] = []
        for p, ns in self.projection_ns.items():
            out.append((f"{p} (bitlinear, all layers)", ns))
        if self.layer_ns is not None:
            rest = self.n_layers * self.layer_ns - sum(self.projection_ns.values())
            label = ("attention, norms, RoPE, activation (layers minus projections)" if self.projection_ns
                     else "the layers (all of each layer)")
            out.append((label, rest))
            out.append(("embedding, output norm, lm_head, call overhead", self.fixed_ns))
        return out

    def table(self) -> Table:
        recs = [{"op": name, "ns": ns, "share": (ns / self.step_ns) if ns is not None else None}
                for name, ns in self.parts()]
        model_sum = (self.fixed_ns + self.n_layers * self.layer_ns) if self.layer_ns is not None else None
        recs.append({"op": "measured decode step", "ns": self.step_ns, "share": 1.0})
        if self.ops_ns:
            region = sum(self.ops_ns.values())
            recs.append({"op": "sum of the ops (inside the C call)", "ns": region, "share": region / self.step_ns})
        elif model_sum is not None:
            recs.append({"op": "fixed + layers × per-layer (consistency check)", "ns": model_sum,
                         "share": model_sum / self.step_ns})
        cols = [Column("op", "part of one decode step"),
                Column("ns", "ms", "r", lambda r: "-" if r["ns"] is None else f"{r['ns'] / 1e6:.3f}"),
                Column("share", "share", "r", lambda r: "-" if r["share"] is None else f"{100 * r['share']:.1f}%")]
        head = (f"{self.model}, backend {self.backend}, isa {self.isa}, "
                f"threads {self.threads if self.threads is not None else '-'}, at cache position {self.position}")
        return Table("Decode step breakdown", cols, recs, [head] + list(self.notes))

    def to_markdown(self, *, title: bool = True) -> str:
        return self.table().to_markdown(title=title)

    def _repr_html_(self) -> str:
        return self.table()._repr_html_()

    def __str__(self) -> str:
        return self.to_markdown()


def _first_layers(model: Any, n: int) -> Any:
    """The same model cut to its first ``n`` layers (shared tensors, a fresh runner)."""
    keep = {k: v for k, v in model.tensors.items()
            if not k.startswith("blk.") or int(k.split(".")[1]) < n}
    return replace(model, config=model.config.replace(n_layers=n), tensors=keep, _runner=None, _closer=None)


def _step_times(runner: Any, position: int, repeat: int, rng: np.random.Generator, vocab: int) -> list[int]:
    """Times (ns) of ``repeat`` decode steps at cache position ``position`` (prefilled, untimed;
    the cache is rewound after each step, so every step writes the same position)."""
    cache = runner.new_cache(position + 2)
    if position:
        np.asarray(runner.forward(rng.integers(0, vocab, position).astype(np.int32), cache))
    tok = np.asarray([int(rng.integers(0, vocab))], dtype=np.int32)
    np.asarray(runner.forward(tok, cache))  # warm-up step
    cache.pos -= 1
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter_ns()
        np.asarray(runner.forward(tok, cache))
        times.append(time.perf_counter_ns() - t0)
        cache.pos -= 1
    return times


def _spread(ts: list[int]) -> float:
    """How much a single time wanders on this machine: half the interquartile range (half the
    range below 4 samples)."""
    if len(ts) < 4:
        return (max(ts) - min(ts)) / 2
    q = statistics.quantiles(ts, n=4)
    return (q[2] - q[0]) / 2


def decode_breakdown(model: Any, *, position: int = 64, repeat: int = 20, seed: int = 0,
                     method: str = "auto") -> DecodeBreakdown:
    """Where the time of one decode step of ``model`` (a loaded Model; its backend and threads)
    goes — see the module docstring for the methods. ``position``: cached tokens before the step
    (tg128's average position is 64). ``method``: "timers" (the native engine's own per-op
    timers), "differences" (whole-step times of the model and of its first layer, projections
    one call at a time), "auto" (timers when the runner has them)."""
    from bitnet_lab.bench.protocol import _isa_of, model_label

    if repeat < 1 or position < 0:
        raise BitnetLabError(f"decode_breakdown: need repeat >= 1 and position >= 0, got {repeat}, {position}")
    if method not in ("auto", "timers", "differences"):
        raise BitnetLabError(f"decode_breakdown: method must be 'auto', 'timers' or 'differences', got {method!r}")
    cfg = model.config
    runner = model.runner
    has_timers = hasattr(runner, "profile_decode")
    if method == "timers" and not has_timers:
        raise BitnetLabError(f"decode_breakdown: the {model.backend} backend has no per-op timers; "
                             "use method='differences'")
    if method == "timers" or (method == "auto" and has_timers):
        p = runner.profile_decode(position=position, steps=repeat, seed=seed)
        notes = [f"the engine's own timers: thread 0's wall time per op class inside the C call, median of "
                 f"{repeat} steps; 'sync' = waiting at barriers (load imbalance, wake-up); the step also "
                 "holds the Python call around the C forward pass."]
        return DecodeBreakdown(model_label(model), model.backend, p.threads, p.isa, position, cfg.n_layers,
                               p.step_ms * 1e6, None, None, {}, notes,
                               ops_ns={op: ms * 1e6 for op, ms in p.ops_ms.items()})
    rng = np.random.default_rng(seed)
    L = cfg.n_layers
    notes = []
    full = _step_times(runner, position, repeat, rng, cfg.vocab)
    step = float(min(full))
    layer = fixed = None
    if L > 1:
        first = _step_times(_first_layers(model, 1).runner, position, repeat, rng, cfg.vocab)
        t1 = float(min(first))
        layer = (step - t1) / (L - 1)
        fixed = t1 - layer
        notes.append("per layer = (T(all layers) − T(first layer only)) / (layers − 1); fixed = T(first layer) − per layer.")
        noise = _spread(full) + _spread(first)
        if abs(step - t1) < noise:
            notes.append(f"the layers' time ({(step - t1) / 1e6:.3f} ms for {L - 1} layers) is within the timing "
                         f"noise (±{noise / 1e6:.3f} ms) on this machine: the split is not meaningful here.")
    else:
        notes.append("one-layer model: the step cannot be split into layers and the rest.")
    proj: dict[str, float] = {}
    if hasattr(runner, "bitlinear"):
        shapes = cfg.projection_shapes()
        xs = {p: rng.standard_normal(shapes[p][1]).astype(np.float32) for p in PROJECTIONS}
        for p in PROJECTIONS:
            runner.bitlinear(f"blk.0.{p}", xs[p])  # warm-up
        per = {p: [[] for _ in range(L)] for p in PROJECTIONS}
        for _ in range(repeat):
            for i in range(L):
                for p in PROJECTIONS:
                    t0 = time.perf_counter_ns()
                    runner.bitlinear(f"blk.{i}.{p}", xs[p])
                    per[p][i].append(time.perf_counter_ns() - t0)
        proj = {p: float(sum(min(ts) for ts in per[p])) for p in PROJECTIONS}
        notes.append("projections timed one call at a time through the engine's bitlinear (quantise + GEMV + "
                     "epilogue; q/k/v and gate/up each quantise again, and each call pays Python overhead).")
    else:
        notes.append(f"per-projection times need a runner with bitlinear() (the native engine); "
                     f"{model.backend} has none.")
    notes.append(f"every time is the fastest of {repeat} runs (the least disturbed by other processes).")
    return DecodeBreakdown(model_label(model), model.backend, getattr(runner, "threads", None)
                           if model.backend != "reference" else None, _isa_of(model.backend), position, L,
                           step, layer, fixed, proj, notes)
