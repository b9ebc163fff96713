"""Aggregate decode throughput of N parallel sequences (batched generation, generate/batch.py).

``parallel_bench(model, parallel=[1, 2, 4, 8, 16])``: for each N, N sequences each get ``prompt``
random tokens (untimed), then ``n_gen`` steps of ONE ``forward_batch`` over all N with one new
token each are timed — what a step of `BatchGenerator` runs once every prompt is in. Aggregate
t/s = N · n_gen / time. N = 1 is the single-sequence baseline, measured in the same run; the
speed-up column is each row's median over the N = 1 median. Per N: one untimed warm-up step,
then ``repeat`` timed runs on fresh caches; t/s as mean ± sample standard deviation, and the
median. Token ids are random (seeded) and drawn before the clock starts; nothing is sampled.
``bitnet-lab bench --parallel 1,2,4,8,16`` prints it (llama-bench-style list flag).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bitnet_lab.bench.table import Column, Table, fmt_pm, mean_sd
from bitnet_lab.errors import ConfigError

__all__ = ["ParallelBench", "parallel_bench"]

Clock = Callable[[], int]  # nanoseconds


@dataclass
class ParallelBench:
    """Rows of `parallel_bench`: one per N (records with the raw samples); ``table()`` shows them."""

    records: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)

    def speedup(self, n: int) -> float:
        """Median aggregate t/s at N = n over the N = 1 median (NaN without an N = 1 row)."""
        by_n = {r["n_parallel"]: r["median_ts"] for r in self.records}
        return by_n[n] / by_n[1] if 1 in by_n and n in by_n else float("nan")

    def table(self) -> Table:
        cols = [Column("threads", "threads", "r"), Column("isa", "isa"), Column("n_parallel", "sequences", "r"),
                Column("avg_ts", "aggregate t/s", "r", lambda r: fmt_pm(r["avg_ts"], r["stddev_ts"])),
                Column("median_ts", "median", "r"),
                Column("step_ms", "ms / step", "r"),
                Column("speedup", "× 1 sequence", "r", lambda r: f"{r['speedup']:.2f}")]
        return Table("parallel sequences: aggregate decode t/s (one forward_batch per step)", cols,
                     self.records, self.notes)


def parallel_bench(model: Any, *, parallel: Sequence[int] = (1, 2, 4, 8, 16), n_gen: int = 16, prompt: int = 16,
                   repeat: int = 5, warmup: bool = True, seed: int = 0, clock: Clock = time.perf_counter_ns,
                   progress: bool = False) -> ParallelBench:
    """Aggregate tokens/s of N parallel sequences for each N in ``parallel`` (module docstring).
    ``model``: a `bitnet_lab.Model` or a backend with ``forward_batch``. N = 1 is always measured
    first (the baseline), added when missing."""
    runner = getattr(model, "runner", model)
    if not callable(getattr(runner, "forward_batch", None)):
        raise ConfigError(f"parallel bench: {type(runner).__name__} has no forward_batch")
    ns = [int(n) for n in parallel]
    if not ns or any(n < 1 for n in ns) or n_gen < 1 or prompt < 1 or repeat < 1:
        raise ConfigError(f"parallel bench: need N >= 1, n_gen >= 1, prompt >= 1 and repeat >= 1, got "
                          f"N={ns}, n_gen={n_gen}, prompt={prompt}, repeat={repeat}")
    ns = [1] + sorted(set(ns) - {1})
    vocab = int(runner.vocab_size)
    rng = np.random.default_rng(seed)
    n_ctx = prompt + n_gen + 1
    from bitnet_lab import kernels

    isa = kernels.active_isa() if hasattr(runner, "threads") else "-"
    threads = int(getattr(runner, "threads", 1) or 1)
    records: list[dict[str, Any]] = []
    for n in ns:
        def fresh() -> tuple[list, np.ndarray]:
            caches = [runner.new_cache(n_ctx) for _ in range(n)]
            runner.forward_batch([rng.integers(0, vocab, prompt) for _ in range(n)], caches)
            return caches, rng.integers(0, vocab, (n_gen, n, 1))   # drawn outside the clock

        if warmup:
            caches, toks = fresh()
            runner.forward_batch(list(toks[0]), caches)
        samples = []
        for _ in range(repeat):
            caches, toks = fresh()
            t0 = clock()
            for step in range(n_gen):
                runner.forward_batch(list(toks[step]), caches)
            samples.append(clock() - t0)
            if progress:
                print(f"parallel N={n}: {1e9 * n * n_gen / samples[-1]:.2f} t/s", file=sys.stderr, flush=True)
        ts = [1e9 * n * n_gen / s for s in samples]
        avg, sd = mean_sd(ts)
        records.append({"threads": threads, "isa": isa, "n_parallel": n, "n_gen": n_gen, "prompt": prompt,
                        "samples_ns": samples, "avg_ts": avg, "stddev_ts": sd, "median_ts": statistics.median(ts),
                        "step_ms": statistics.median(samples) / n_gen / 1e6})
    base = records[0]["median_ts"]
    for r in records:
        r["speedup"] = r["median_ts"] / base
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    notes = [f"{prompt} prompt tokens per sequence (untimed), then {n_gen} timed steps; {repeat} runs per N"
             + (f"; load average {load:.2f} when done" if load is not None else "")]
    return ParallelBench(records, notes)
