"""Where the time of one native decode step goes: the C side's per-op timers, as a table."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["DecodeProfile"]

@dataclass(frozen=True)
class DecodeProfile:
    """Where the time of one native decode step goes, from the C side's own timers.

    ``ops_ms``: wall-clock milliseconds per op class (:data:`PROF_CLASSES`) of thread 0, median
    over the profiled steps; ``ops_cpu_ms``: the same thread's CPU time per class (the time it
    actually ran: on a shared machine the wall figure also holds the time other processes took
    the core, the CPU figure does not — but neither removes their pressure on memory bandwidth);
    ``threads_ms`` / ``threads_cpu_ms``: per thread (index = OpenMP thread id). "sync" is the
    time a thread waited at barriers: load imbalance + wake-up. ``region_ms``: thread 0's wall
    total inside the C call (the sum of its classes); ``step_ms``: median wall time of the whole
    call (Python + C). ``loadavg``: the 1-minute load average at the end.
    """

    position: int
    threads: int
    isa: str
    steps: int
    step_ms: float
    region_ms: float
    ops_ms: dict[str, float]
    ops_cpu_ms: dict[str, float]
    threads_ms: list[dict[str, float]] = field(default_factory=list)
    threads_cpu_ms: list[dict[str, float]] = field(default_factory=list)
    loadavg: float | None = None
    sequences: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {"position": self.position, "threads": self.threads, "isa": self.isa, "steps": self.steps,
                "step_ms": self.step_ms, "region_ms": self.region_ms, "ops_ms": dict(self.ops_ms),
                "ops_cpu_ms": dict(self.ops_cpu_ms), "threads_ms": [dict(t) for t in self.threads_ms],
                "threads_cpu_ms": [dict(t) for t in self.threads_cpu_ms], "loadavg": self.loadavg,
                "sequences": self.sequences}

    def __str__(self) -> str:
        what = "decode step" if self.sequences == 1 else f"batched decode step of {self.sequences} sequences"
        head = (f"{what} at position {self.position}, {self.threads} thread(s), isa {self.isa}, "
                f"median of {self.steps}: {self.step_ms:.3f} ms (C region {self.region_ms:.3f} ms)"
                + (f", load average {self.loadavg:.2f}" if self.loadavg is not None else ""))
        cols = "".join(f"{f'wall t{i}':>10}{f'cpu t{i}':>10}" for i in range(len(self.threads_ms)))
        lines = [head, f"{'op (ms)':<12}{cols}"]
        for name in self.ops_ms:
            per = "".join(f"{w[name]:>10.3f}{c[name]:>10.3f}" for w, c in zip(self.threads_ms, self.threads_cpu_ms))
            lines.append(f"{name:<12}{per}")
        tot = "".join(f"{sum(w.values()):>10.3f}{sum(c.values()):>10.3f}"
                      for w, c in zip(self.threads_ms, self.threads_cpu_ms))
        lines.append(f"{'total':<12}{tot}")
        return "\n".join(lines)
