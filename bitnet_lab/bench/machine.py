"""The machine under a benchmark: what it is, how fast it can go, and the decode roofline.

* :func:`machine_info` — CPU model, the SIMD flags that matter here, cores, load average, date,
  the bitnet_lab version and git commit, the kernel build: what a results table must print,
  because every figure depends on it.
* :func:`machine_ceilings` — measured in the same run as the benchmark, with the native
  microkernels of ``cython_kernels/src/ceiling_<isa>.c`` (see ``ceiling.h``):
    - memory read bandwidth: streaming reads of a buffer much larger than the last-level cache
      (default 1 GiB), one contiguous slice per thread, GB/s = 1e9 bytes per second;
    - int8 dot-product peak: a register-resident loop of the level's best int8 multiply-
      accumulate instruction (vpdpbusd, vpmaddubsw, sdot, …), GOP/s counting a multiply and an
      add as two operations (1e9 per second).
  Both report the best of ``repeat`` timed runs (a ceiling is what the machine *can* do; the
  median is kept too) after one untimed warm-up, and both verify their checksums against
  numpy before anything is reported.
* :func:`decode_roofline` — bytes read per generated token (every ternary tensor's packed bytes
  and scales, the lm_head, the norms, one embedding row; the KV cache stated separately) and
  the tokens/s that the measured bandwidth allows: decode reads every weight once per token,
  so ``bandwidth / bytes_per_token`` bounds tg from above.
"""

from __future__ import annotations

import datetime
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bitnet_lab.bench.table import Column, Table, machine_line
from bitnet_lab.errors import BitnetLabError, KernelError
from bitnet_lab.tensors import FloatTensor, TernaryWeight

# /proc/cpuinfo flags worth printing next to a benchmark (x86 names, then aarch64 "Features").
SIMD_FLAGS = (
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512vbmi",
    "avx_vnni", "avx512_bf16", "amx_int8", "asimd", "asimddp", "i8mm", "sve", "sve2",
)

GB = 1e9  # bandwidth and operation rates are decimal: GB/s = 1e9 bytes/s, GOP/s = 1e9 ops/s


# =============================================================================================
# What machine is this
# =============================================================================================


def _cpuinfo() -> dict[str, str]:
    """First value of each key of /proc/cpuinfo (Linux); empty elsewhere."""
    out: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep and key.strip() not in out:
                    out[key.strip()] = value.strip()
    except OSError:
        pass
    return out


def cpu_model() -> str:
    """The CPU's marketing name ("AMD EPYC 7V13 64-Core Processor", "Apple M2", ...)."""
    info = _cpuinfo()
    for key in ("model name", "Model", "Hardware", "cpu model"):
        if info.get(key):
            return info[key]
    if sys.platform == "darwin":
        try:
            r = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, timeout=2, check=False)
            if r.returncode == 0 and r.stdout.strip():
                return r.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    if info.get("CPU implementer"):  # aarch64 Linux without a model name
        return f"aarch64 implementer {info['CPU implementer']} part {info.get('CPU part', '?')}"
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_flags() -> list[str]:
    """The SIMD-relevant CPU flags (``SIMD_FLAGS``) the OS reports, in that order."""
    info = _cpuinfo()
    have = set((info.get("flags") or info.get("Features") or "").split())
    return [f for f in SIMD_FLAGS if f in have]


def llc_bytes() -> int | None:
    """Size of the last-level cache (the highest cache level of CPU 0) in bytes, or None.

    Linux: /sys/devices/system/cpu/cpu0/cache/index*/{level,size}; macOS: sysctl
    hw.l3cachesize / hw.l2cachesize."""
    best: tuple[int, int] | None = None
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    try:
        for idx in sorted(base.glob("index*")):
            level = int((idx / "level").read_text().strip())
            text = (idx / "size").read_text().strip().upper()
            mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
            size = int(text.rstrip("KMG")) * mult
            if best is None or level > best[0]:
                best = (level, size)
    except (OSError, ValueError):
        best = None
    if best is not None:
        return best[1]
    if sys.platform == "darwin":
        for key in ("hw.l3cachesize", "hw.l2cachesize"):
            try:
                r = subprocess.run(["sysctl", "-n", key], capture_output=True, text=True, timeout=2, check=False)
                if r.returncode == 0 and int(r.stdout.strip() or 0) > 0:
                    return int(r.stdout.strip())
            except (OSError, subprocess.SubprocessError, ValueError):
                pass
    return None


def _git(args: Sequence[str], cwd: Path) -> str | None:
    try:
        r = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def git_commit() -> tuple[str | None, bool]:
    """(short commit hash, dirty) of the checkout bitnet_lab is imported from, or (None, False)
    for an installed copy outside git."""
    root = Path(__file__).resolve().parent.parent
    commit = _git(["rev-parse", "--short=12", "HEAD"], root)
    if commit is None:
        return None, False
    status = _git(["status", "--porcelain", "--untracked-files=no"], root)
    return commit, bool(status)


def machine_info() -> dict[str, Any]:
    """Everything a results table should say about where it was measured (JSON-able)."""
    from bitnet_lab._version import __version__

    commit, dirty = git_commit()
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cpus = os.cpu_count() or 1
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "flags": cpu_flags(),
        "logical_cpus": cpus,
        "llc_bytes": llc_bytes(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "version": __version__,
        "commit": commit,
        "dirty": dirty,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(terse=True),
    }
    try:
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        info["load_average"] = None
    try:
        from bitnet_lab import kernels

        info["cores"] = kernels.physical_cores()
        info["isas"] = list(kernels.available_isas())
        info["active_isa"] = kernels.active_isa()
        info["openmp"] = kernels.openmp_enabled()
        info["compiler"] = kernels.build_info().get("compiler_version")
    except ImportError as e:
        info["cores"] = None
        info["kernels"] = f"not importable: {e}"
    return info


def machine_header(m: Mapping[str, Any]) -> str:
    """The few lines printed above a report: CPU, flags, cores, load, kernels, date, commit."""
    lines = [f"CPU: {m.get('cpu')}"]
    if m.get("flags"):
        lines.append(f"flags: {' '.join(m['flags'])}")
    cores = f"{m.get('cores')} physical cores, " if m.get("cores") else ""
    llc = f", last-level cache {m['llc_bytes'] / 2**20:.0f} MiB" if m.get("llc_bytes") else ""
    lines.append(f"cores: {cores}{m.get('logical_cpus')} logical CPUs available{llc}")
    la = m.get("load_average")
    if la:
        busy = la[0] > 0.5 * (m.get("logical_cpus") or 1)
        lines.append(f"load average before the run: {la[0]} {la[1]} {la[2]}"
                     + (" — other processes are using the CPU: timings are noisy" if busy else ""))
    if m.get("isas"):
        lines.append(f"kernels: {', '.join(m['isas'])} (active {m.get('active_isa')}), "
                     f"OpenMP {'on' if m.get('openmp') else 'off'}, {m.get('compiler')}")
    elif m.get("kernels"):
        lines.append(f"kernels: {m['kernels']}")
    lines.append(machine_line(m))
    return "\n".join(lines)


# =============================================================================================
# Machine ceilings
# =============================================================================================


@dataclass(frozen=True)
class Ceiling:
    """One measured ceiling: ``samples`` holds the rate of every timed run."""

    what: str                  # "memory read" | "int8 dot"
    isa: str
    threads: int
    unit: str                  # "GB/s" | "GOP/s"
    samples: tuple[float, ...]
    detail: str                # instructions, buffer size, iterations

    @property
    def best(self) -> float:
        return max(self.samples)

    @property
    def median(self) -> float:
        return float(statistics.median(self.samples))

    def record(self) -> dict[str, Any]:
        return {"what": self.what, "isa": self.isa, "threads": self.threads, "best": self.best,
                "median": self.median, "unit": self.unit, "samples": list(self.samples), "detail": self.detail}


def _pick_by_threads(items: Sequence[Ceiling], threads: int | None) -> Ceiling | None:
    """The measurement for ``threads``; else the one with the most threads below it; else the
    fewest threads measured. ``threads=None`` (the backend chooses, e.g. XLA): the most threads."""
    if not items:
        return None
    if threads is None:
        return max(items, key=lambda c: c.threads)
    exact = [c for c in items if c.threads == threads]
    if exact:
        return exact[0]
    below = [c for c in items if c.threads < threads]
    return max(below, key=lambda c: c.threads) if below else min(items, key=lambda c: c.threads)


@dataclass
class MachineCeilings:
    """Memory read bandwidth and int8 dot peak, per thread count."""

    ceilings: list[Ceiling]
    notes: list[str] = field(default_factory=list)

    def _bound(self, what: str, threads: int | None) -> float | None:
        """The best rate of ``what`` reachable with ``threads`` threads: the best over every
        measured count <= threads (a program may always use fewer threads), else the smallest
        count measured; ``threads=None`` (the backend chooses): the best of all."""
        items = [c for c in self.ceilings if c.what == what]
        if not items:
            return None
        usable = [c for c in items if threads is None or c.threads <= threads]
        if not usable:
            usable = [_pick_by_threads(items, threads)]
        return max(c.best for c in usable)

    def bandwidth(self, threads: int | None) -> float | None:
        """Memory read bandwidth bound in GB/s for ``threads`` threads (see ``_bound``)."""
        return self._bound("memory read", threads)

    def int8_peak(self, threads: int | None) -> float | None:
        """int8 dot-product bound in GOP/s for ``threads`` threads (see ``_bound``)."""
        return self._bound("int8 dot", threads)

    def table(self) -> Table:
        cols = [
            Column("what", "ceiling"),
            Column("isa", "isa"),
            Column("threads", "threads", "r"),
            Column("best", "best", "r", lambda r: f"{r['best']:.1f} {r['unit']}"),
            Column("median", "median", "r", lambda r: f"{r['median']:.1f} {r['unit']}"),
            Column("detail", "how"),
        ]
        return Table("Machine ceilings (best of the timed runs)", cols, [c.record() for c in self.ceilings],
                     list(self.notes))

    def to_markdown(self, *, title: bool = True) -> str:
        return self.table().to_markdown(title=title)

    def to_csv(self) -> str:
        return self.table().to_csv()

    def to_json(self) -> str:
        return self.table().to_json()

    def _repr_html_(self) -> str:
        return self.table()._repr_html_()

    def __str__(self) -> str:
        return self.to_markdown()


def _kernels():
    try:
        from bitnet_lab import kernels
    except ImportError as e:
        raise KernelError(f"machine ceilings need the native kernels: {e}") from e
    return kernels


def _ceiling_isa(isa: str | None) -> tuple[str, int]:
    """(name, index) of the level to measure: ``isa`` or the best available with ceiling
    kernels. KernelError when the build has none for it."""
    k = _kernels()
    names = [isa] if isa is not None else list(reversed(k.available_isas()))
    for name in names:
        if name not in k.ISA_ORDER:
            raise KernelError(f"unknown ISA level {name!r}; known: {', '.join(k.ISA_ORDER)}")
        i = k.ISA_ORDER.index(name)
        if k.native._k.ceiling_info(i) is not None:
            return name, i
    raise KernelError(f"no ceiling kernels for {isa or 'any available level'} in this build on this CPU "
                      f"(available levels: {', '.join(k.available_isas())})")


PATTERN_BYTES = 1 << 16  # the read buffer is this random pattern repeated
# Multiply-adds per 64 bytes read of the busy ceilings: a light and a heavy load (an 8-row F16 lm_head
# pass does 16 zmm multiply-adds per 64 bytes of weights, a 2-row one 4)
BUSY_FMAS = (4, 16)


def read_buffer(nbytes: int, seed: int = 0) -> tuple[np.ndarray, int]:
    """(buffer, expected byte sum): ``nbytes`` rounded up to a multiple of 64 KiB, filled with a
    random 64 KiB pattern repeated (filling is fast and every page is touched, so no page fault
    lands in a timed run)."""
    if nbytes <= 0:
        raise BitnetLabError(f"the bandwidth buffer must have a positive size, got {nbytes}")
    n_rep = -(-int(nbytes) // PATTERN_BYTES)
    pattern = np.random.default_rng(seed).integers(0, 256, PATTERN_BYTES, dtype=np.uint8)
    buf = np.empty(n_rep * PATTERN_BYTES, dtype=np.uint8)
    buf.reshape(n_rep, PATTERN_BYTES)[:] = pattern
    return buf, int(pattern.sum(dtype=np.uint64)) * n_rep


def _stream_samples(call: Callable[[], int], nbytes: int, expected: int, repeat: int, clock, what: str) -> tuple:
    """GB/s of ``repeat`` timed passes of a stream kernel over ``nbytes`` (after one warm-up pass:
    thread start-up, TLB), every pass's byte sum checked against ``expected``."""
    samples = []
    for rep in range(repeat + 1):
        t0 = clock()
        got = call()
        dt = clock() - t0
        if got != expected:
            raise KernelError(f"{what} summed {got}, numpy says {expected}: the kernel is wrong; no bandwidth reported")
        if rep > 0:
            samples.append(nbytes / max(dt, 1))  # bytes per ns = GB/s
    return tuple(samples)


def memory_bandwidth(threads: int = 1, *, isa: str | None = None, nbytes: int = 1 << 30, repeat: int = 5,
                     buffer: tuple[np.ndarray, int] | None = None, clock=time.perf_counter_ns) -> Ceiling:
    """Read bandwidth with ``threads`` threads over a ``nbytes`` buffer (pass ``buffer`` from
    :func:`read_buffer` to reuse one). One warm-up pass, then ``repeat`` timed passes; every
    pass's byte sum is checked (KernelError if the kernel did not read every byte)."""
    k = _kernels()
    name, i = _ceiling_isa(isa)
    buf, expected = buffer if buffer is not None else read_buffer(nbytes)
    threads = k.effective_threads(threads)
    samples = _stream_samples(lambda: k.native._k.ceiling_read(buf, i, threads), buf.nbytes, expected, repeat,
                              clock, f"ceiling_read({name}, {threads} threads)")
    info = k.native._k.ceiling_info(i)
    return Ceiling("memory read", name, threads, "GB/s", samples,
                   f"{info['read_insn']}, {buf.nbytes / 2**20:.0f} MiB buffer, {threads} slice(s)")


def busy_bandwidth(threads: int = 1, fmas: int = 16, *, isa: str | None = None, nbytes: int = 1 << 30,
                   repeat: int = 5, buffer: tuple[np.ndarray, int] | None = None,
                   clock=time.perf_counter_ns) -> Ceiling:
    """Read bandwidth while computing: :func:`memory_bandwidth`'s stream with ``fmas`` vector
    multiply-adds per 64 bytes read on every thread (src/ceiling.h, busy). What a pass that does
    arithmetic per weight byte (a batch of rows, a verification pass) can stream at best; equal to
    the plain read bandwidth only on a core that overlaps memory and arithmetic. Byte sums
    checked as in :func:`memory_bandwidth`; KernelError where the level has no busy loop."""
    k = _kernels()
    name, i = _ceiling_isa(isa)
    info = k.native._k.ceiling_info(i)
    if not info.get("busy_insn"):
        raise KernelError(f"ISA level {name!r} has no busy read loop in this build (src/ceiling.h)")
    buf, expected = buffer if buffer is not None else read_buffer(nbytes)
    threads = k.effective_threads(threads)
    samples = _stream_samples(lambda: k.native._k.ceiling_busy(buf, fmas, i, threads), buf.nbytes, expected, repeat,
                              clock, f"ceiling_busy({name}, {fmas} FMA, {threads} threads)")
    return Ceiling(f"read + {fmas} FMA/64 B", name, threads, "GB/s", samples,
                   f"the memory read loop plus {fmas} × {info['busy_insn']} per 64 bytes, "
                   f"{buf.nbytes / 2**20:.0f} MiB buffer, {threads} slice(s)")


def dot_expected(info: Mapping[str, int], a: np.ndarray, b: np.ndarray, iters: int) -> int:
    """What one thread of the dot-peak kernel must return (the contract of ceiling.h): per chain
    and lane, ``iters`` times the lane's product sum, wrapped to ``lane_bits`` signed bits,
    summed over chains and lanes. A tile kernel's lanes are the elements of A_c · B."""
    V, g, bits, cols = info["vec_bytes"], info["group"], info["lane_bits"], info.get("tile_cols", 0)
    if cols:
        A = a.reshape(info["a_vectors"], V // g, g).astype(np.int64)                  # (a, rows, g)
        B = b.reshape(g // 4, cols, 4).transpose(0, 2, 1).reshape(g, cols).astype(np.int64)  # tile order
        per_lane = (A @ B).reshape(info["a_vectors"], -1)
    else:
        A = a.reshape(info["a_vectors"], V).astype(np.int64)
        per_lane = (A * b.astype(np.int64)).reshape(info["a_vectors"], V // g, g).sum(axis=-1)
    lanes = per_lane[np.arange(info["chains"]) % info["a_vectors"]]   # (chains, lanes)
    m = 1 << bits
    w = (lanes * int(iters)) % m                                       # wrap modulo 2^bits ...
    w = np.where(w >= m // 2, w - m, w)                                # ... read as signed
    return int(w.sum())


def int8_peak(threads: int = 1, *, isa: str | None = None, seconds: float = 0.1, repeat: int = 5,
              seed: int = 0, clock=time.perf_counter_ns) -> Ceiling:
    """int8 dot-product peak with ``threads`` threads each running the register-resident loop.
    Verified against :func:`dot_expected` first (small and timed iteration counts); the
    iteration count is calibrated so one run takes about ``seconds``."""
    k = _kernels()
    name, i = _ceiling_isa(isa)
    info = k.native._k.ceiling_info(i)
    threads = k.effective_threads(threads)
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 3, info["a_vectors"] * info["vec_bytes"], dtype=np.uint8)  # codes 0..2
    b = rng.integers(-127, 128, info["vec_bytes"], dtype=np.int8)

    def run(iters: int) -> int:
        t0 = clock()
        got = k.native._k.ceiling_dot(a, b, iters, i, threads)
        dt = clock() - t0
        want = dot_expected(info, a, b, iters)
        if any(int(x) != want for x in got):
            raise KernelError(f"ceiling_dot({name}, {iters} iterations) returned {list(got)}, expected {want}: "
                              "the dot kernel is wrong; no peak reported")
        return max(dt, 1)

    run(1003)  # verification (and thread start-up)
    probe = 1 << 14
    while True:  # grow until one run lasts >= 20 ms, then scale to `seconds`
        dt = run(probe)
        if dt >= 20e6 or probe >= 1 << 40:
            break
        probe *= 4
    iters = max(probe, int(probe * seconds * 1e9 / dt))
    run(iters)  # warm-up at the timed size (clocks ramp up)
    macs = iters * info["chains"] * info["vec_bytes"] * max(1, info.get("tile_cols", 0)) * threads
    samples = tuple(2 * macs / run(iters) for _ in range(repeat))  # 2 ops per MAC, per ns = GOP/s
    return Ceiling("int8 dot", name, threads, "GOP/s", samples,
                   f"{info['dot_insn']} × {info['chains']} chains, {iters:,} iterations")


def machine_ceilings(threads: Iterable[int | None] = (1, None), *, isa: str | None = None, nbytes: int = 1 << 30,
                     repeat: int = 5, dot_seconds: float = 0.1, busy_fmas: Sequence[int] = BUSY_FMAS,
                     progress: bool = False) -> MachineCeilings:
    """Memory read bandwidth, the same while computing (``busy_fmas``: multiply-adds per 64 bytes,
    :func:`busy_bandwidth`; levels without a busy loop skip it) and int8 dot peak for each thread
    count (``None`` = all physical cores, :func:`bitnet_lab.kernels.effective_threads`), on
    ``isa`` (default: the best level with ceiling kernels). ``nbytes``: the bandwidth buffer
    (default 1 GiB; keep it much larger than the last-level cache)."""
    k = _kernels()
    counts = sorted({k.effective_threads(t) for t in threads})
    buffer = read_buffer(nbytes)
    out: list[Ceiling] = []
    _, i = _ceiling_isa(isa)
    fmas = list(busy_fmas) if k.native._k.ceiling_info(i).get("busy_insn") else []
    try:
        from tqdm.auto import tqdm

        bar = tqdm(total=(2 + len(fmas)) * len(counts), desc="ceilings", disable=not progress, leave=False)
    except ImportError:  # pragma: no cover - tqdm is a dependency
        bar = None
    for t in counts:
        out.append(memory_bandwidth(t, isa=isa, repeat=repeat, buffer=buffer))
        if bar is not None:
            bar.update()
    for f in fmas:
        for t in counts:
            out.append(busy_bandwidth(t, f, isa=isa, repeat=repeat, buffer=buffer))
            if bar is not None:
                bar.update()
    del buffer
    for t in counts:
        out.append(int8_peak(t, isa=isa, seconds=dot_seconds, repeat=repeat))
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()
    notes = ["GB/s = 1e9 bytes/s; GOP/s counts a multiply and an add as 2 operations (1e9/s)."]
    if fmas:
        notes.append("read + N FMA/64 B: the read loop with N vector multiply-adds on registers per 64 bytes on every "
                     "thread — what a pass doing that much arithmetic per weight byte can stream (an 8-row F16 "
                     "lm_head pass: 16 zmm multiply-adds per 64 bytes of weights); the plain read rate only where "
                     "the cores overlap memory and arithmetic.")
    notes += ["best = the fastest of the timed runs (one warm-up excluded); checksums verified against numpy."]
    return MachineCeilings(out, notes)


# =============================================================================================
# Decode roofline
# =============================================================================================

_PROJ_SUFFIXES = ("attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_output.weight",
                  "ffn_gate.weight", "ffn_up.weight", "ffn_down.weight")


@dataclass(frozen=True)
class DecodeRoofline:
    """Bytes one decode step reads, by part, and the tokens/s a bandwidth allows.

    ``kv_bytes_per_position``: what attention reads per cached position (K and V of every
    layer); not in ``bytes_per_token`` — a step that attends over p positions reads p times this
    more (``tokens_per_s(positions=p)``)."""

    parts: dict[str, int]          # "ternary projections", "lm_head", "norms", "embedding row", ...
    kv_bytes_per_position: int
    kv_dtype: str
    bandwidth: float | None = None  # GB/s

    @property
    def bytes_per_token(self) -> int:
        return int(sum(self.parts.values()))

    def tokens_per_s(self, bandwidth: float | None = None, *, positions: float = 0.0) -> float | None:
        """The roofline: bandwidth (GB/s; default the one given) / bytes per token, the K/V cache
        of ``positions`` cached positions included."""
        bw = self.bandwidth if bandwidth is None else bandwidth
        if bw is None or self.bytes_per_token == 0:
            return None
        return bw * GB / (self.bytes_per_token + positions * self.kv_bytes_per_position)

    def table(self) -> Table:
        total = self.bytes_per_token
        recs = [{"part": k, "bytes": v, "share": v / total if total else math.nan} for k, v in self.parts.items()]
        recs.append({"part": "total per token", "bytes": total, "share": 1.0 if total else math.nan})
        cols = [Column("part", "read per decode step"),
                Column("bytes", "MiB", "r", lambda r: f"{r['bytes'] / 2**20:.2f}"),
                Column("share", "share", "r", lambda r: "-" if math.isnan(r["share"]) else f"{100 * r['share']:.1f}%")]
        notes = [(f"KV cache not included: +{self.kv_bytes_per_position:,} bytes per cached position "
                  f"({self.kv_dtype} K and V of every layer; the bench's tg rows add it at their mean length).")]
        tps = self.tokens_per_s()
        if tps is not None:
            notes.append(f"roofline at {self.bandwidth:.1f} GB/s: {tps:.1f} tokens/s "
                         "(bandwidth / bytes per token; tg cannot beat it).")
        return Table("Decode roofline: bytes read per generated token", cols, recs, notes)

    def to_markdown(self, *, title: bool = True) -> str:
        return self.table().to_markdown(title=title)

    def _repr_html_(self) -> str:
        return self.table()._repr_html_()

    def __str__(self) -> str:
        return self.to_markdown()


def decode_bytes(model: Any, *, kv_dtype: str = "f32") -> DecodeRoofline:
    """What one decode step of ``model`` (a Model, or anything with ``.config`` and
    ``.tensors``) reads, from the tensors as stored:

    - every ternary projection's packed bytes and scales as stored (``nbytes``); projections
      stored as float (F32/F16 files) are counted as stored, under their own part;
    - the lm_head: ``output.weight``, or ``token_embd.weight`` when tied;
    - one row of ``token_embd`` (the embedding gather);
    - the norm weights and any other float tensor (e.g. old ``.scale`` tensors).
    """
    if kv_dtype not in ("f32", "f16"):
        raise BitnetLabError(f"kv_dtype must be 'f32' or 'f16', got {kv_dtype!r}")
    config, tensors = model.config, model.tensors
    parts = {"ternary projections": 0, "float projections (as stored)": 0, "lm_head": 0,
             "embedding row": 0, "norms and scales": 0}
    lm_name = "output.weight" if "output.weight" in tensors else "token_embd.weight"
    for name, t in tensors.items():
        nb = int(t.nbytes)
        if isinstance(t, TernaryWeight):
            parts["ternary projections"] += nb
        elif name == lm_name:
            parts["lm_head"] += nb
            if name == "token_embd.weight":  # tied: the gathered row is part of the same matrix
                parts["embedding row"] += nb // max(1, config.vocab)
        elif name == "token_embd.weight":
            parts["embedding row"] += nb // max(1, config.vocab)
        elif name.endswith(_PROJ_SUFFIXES):
            parts["float projections (as stored)"] += nb
        elif isinstance(t, FloatTensor):
            parts["norms and scales"] += nb
    parts = {k: v for k, v in parts.items() if v or k in ("ternary projections", "lm_head")}
    kv = 2 * config.n_layers * config.kv_dim * (4 if kv_dtype == "f32" else 2)
    return DecodeRoofline(parts, kv, kv_dtype)


def tg_mean_positions(n_gen: int) -> float:
    """Mean cached positions a step of ``tg n_gen`` attends over: it starts from an empty cache,
    so step t (0-based) reads t + 1 positions, its own included: (n_gen + 1) / 2."""
    return (int(n_gen) + 1) / 2


def decode_roofline(model: Any, bandwidth: float | None, *, kv_dtype: str = "f32") -> DecodeRoofline:
    """:func:`decode_bytes` with a bandwidth (GB/s) attached: ``.tokens_per_s()`` is the tg
    roofline, ``.bytes_per_token`` what it divides by."""
    r = decode_bytes(model, kv_dtype=kv_dtype)
    return DecodeRoofline(r.parts, r.kv_bytes_per_position, r.kv_dtype, bandwidth)
