"""The pp / tg protocol of ``bitnet_lab.bench`` (llama-bench's), and the roofline column."""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from bitnet_lab.bench.machine import (
    MachineCeilings,
    decode_bytes,
    machine_info,
    memory_bandwidth,
    read_buffer,
    tg_mean_positions,
)
from bitnet_lab.bench.table import (  # noqa: F401
    BenchRow,
    BenchTable,
    Table,
    mean_sd,
    rows_from_llama_bench_json,
)
from bitnet_lab.errors import BitnetLabError, ConfigError
from bitnet_lab.tensors import FloatTensor, TernaryWeight

__all__ = ["attach_roofline", "bench", "bracketed_bandwidth", "model_label", "resolve_backends", "run_test"]

Clock = Callable[[], int]  # nanoseconds


# =============================================================================================
# One test
# =============================================================================================


def run_test(runner: Any, kind: str, n: int, *, repeat: int, n_ctx: int, rng: np.random.Generator,
             bos_id: int | None = None, warmup: bool = True, clock: Clock = time.perf_counter_ns,
             between: Callable[[], None] | None = None) -> tuple[int, ...]:
    """Time one test on a runner (the forward interface: ``new_cache(n_ctx)``,
    ``forward(ids, cache)``) and return the ``repeat`` samples in nanoseconds.

    ``kind``: "pp" (``n`` tokens in one call) or "tg" (``n`` calls of one token). The warm-up
    (when ``warmup``) and cache creation happen outside the timed region; ``clock`` is read
    exactly twice per timed run (tests inject a fake one). ``between``: called after the warm-up
    and after every timed run, outside the clock (``repeat + 1`` calls: the bandwidth brackets)."""
    if kind not in ("pp", "tg"):
        raise ConfigError(f"test kind must be 'pp' or 'tg', got {kind!r}")
    if n < 1 or repeat < 1:
        raise ConfigError(f"{kind}{n}: need n >= 1 and repeat >= 1, got n={n}, repeat={repeat}")
    if n > n_ctx:
        raise ConfigError(f"{kind}{n} needs {n} cache positions but n_ctx is {n_ctx}")
    vocab = int(runner.vocab_size) if hasattr(runner, "vocab_size") else int(runner.config.vocab)
    kwargs = {"last_only": True} if kind == "pp" else {}

    def draw() -> np.ndarray:
        ids = rng.integers(0, vocab, size=n, dtype=np.int64).astype(np.int32)  # drawn outside the clock
        if bos_id is not None:
            ids[0] = bos_id
        return ids

    def once(ids: np.ndarray) -> int:
        cache = runner.new_cache(n_ctx)
        if kind == "pp":
            t0 = clock()
            np.asarray(runner.forward(ids, cache, **kwargs))
            return clock() - t0
        t0 = clock()
        for i in range(n):
            np.asarray(runner.forward(ids[i : i + 1], cache))
        return clock() - t0

    if warmup:  # llama-bench: the whole prompt for pp, one token for tg
        ids = draw()
        if kind == "pp":
            np.asarray(runner.forward(ids, runner.new_cache(n_ctx), **kwargs))
        else:
            np.asarray(runner.forward(ids[:1], runner.new_cache(n_ctx)))
    samples = []
    if between is not None:
        between()
    for _ in range(repeat):
        ids = draw()
        ns = once(ids)
        if ns <= 0:
            raise BitnetLabError(f"{kind}{n}: the clock did not advance ({ns} ns); use a finer clock")
        samples.append(int(ns))
        if between is not None:
            between()
    return tuple(samples)


# =============================================================================================
# The table of tests
# =============================================================================================


def model_label(model: Any) -> str:
    """llama-bench's ``model`` column, our way: ``arch size type``, e.g.
    ``bitnet-b1.58 2.41B I2_S`` — the type is the most common ternary layout, or the float type
    of the projections when the file stores them as floats."""
    c = model.config
    n = model.n_params
    size = f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"
    kinds: dict[str, int] = {}
    for t in model.tensors.values():
        if isinstance(t, TernaryWeight):
            kinds[t.layout.upper()] = kinds.get(t.layout.upper(), 0) + 1
    if not kinds:
        t = model.tensors.get("blk.0.attn_q.weight")
        kinds = {getattr(t, "ggml_type", "?"): 1} if isinstance(t, FloatTensor) else {"?": 1}
    return f"{c.arch} {size} {max(kinds, key=kinds.get)}"


def resolve_backends(backend: str | Sequence[str]) -> list[str]:
    """``"native"``, ``"reference"``, ``"native,reference"`` or a sequence of those."""
    from bitnet_lab.model import BACKENDS

    names = [b.strip() for b in backend.split(",")] if isinstance(backend, str) else [str(b) for b in backend]
    names = [b for b in names if b]
    bad = [b for b in names if b not in BACKENDS]
    if bad or not names:
        raise ConfigError(f"unknown backend(s) {', '.join(bad) or '(none)'}; expected {', '.join(BACKENDS)}")
    return list(dict.fromkeys(names))


def _open(model_or_path: Any, backend: str):
    from bitnet_lab.model import Model, load

    if isinstance(model_or_path, Model):
        return model_or_path
    if model_or_path is None:
        from bitnet_lab.tools.default_model import default_model_path

        model_or_path = default_model_path()
    return load(model_or_path, backend=backend)


def _variant(model: Any, backend: str, threads: int | None):
    """The model with another backend / thread count, sharing its tensors (no reload); the model
    itself when it already is that variant (its runner, maybe warm, is reused)."""
    if model.backend == backend and model.threads == threads:
        return model
    return replace(model, backend=backend, threads=threads, _runner=None, _closer=None)


def _isa_of(backend: str) -> str:
    if backend == "reference":
        return "xla"
    from bitnet_lab import kernels

    return kernels.active_isa()


def bench(
    model_or_path: Any = None,
    *,
    pp: Iterable[int] = (128, 512),
    tg: Iterable[int] = (64, 128),
    threads: Iterable[int | None] = (1, 2),
    repeat: int = 5,
    backend: str | Sequence[str] = "native",
    warmup: bool = True,
    n_ctx: int | None = None,
    seed: int = 0,
    ceilings: MachineCeilings | None = None,
    mmap: Iterable[bool] = (True,),
    bracket_bandwidth: bool = False,
    progress: bool = False,
    clock: Clock = time.perf_counter_ns,
) -> BenchTable:
    """Run llama-bench's pp / tg tests (module docstring) and return a :class:`BenchTable`.

    ``model_or_path``: a loaded Model (its tensors are shared by every variant), a path or Hub
    id, or None for the default model. ``backend``: "native", "reference" or several (a list or
    "native,reference"); the JAX reference picks its own threads, so it runs once per test with
    threads shown as "-". ``n_ctx``: the cache size of every run (default: the longest test).
    ``ceilings``: measured :class:`MachineCeilings` — tg rows then show their decode roofline.
    ``mmap``: llama-bench's ``-mmp``: True runs on the weights in place in the file's memory map,
    False on a copy in anonymous huge pages (``bitnet_lab.engine.residency``; made once, shared).
    ``bracket_bandwidth``: measure the memory read bandwidth with each native tg row's thread
    count right before its first run and right after every run (3 passes each over a 512 MiB
    buffer); each run gets the higher of its two brackets and the row their mean
    (``BenchRow.bandwidth_gbs``, :func:`bracketed_bandwidth`): its roofline then uses that
    figure — on a VM whose bandwidth drifts from minute to minute a ceiling measured earlier can
    be 40 % off.
    A backend that cannot run (e.g. the native engine not built) raises; nothing is faked.
    """
    pp, tg = [int(x) for x in pp], [int(x) for x in tg]
    if not pp and not tg:
        raise ConfigError("nothing to measure: give at least one pp or tg size")
    if min(pp + tg) < 1:
        raise ConfigError(f"test sizes must be >= 1, got pp={pp} tg={tg}")
    threads = list(dict.fromkeys(threads)) or [None]
    mmaps = [bool(m) for m in dict.fromkeys(mmap)] or [True]
    backends = resolve_backends(backend)
    base = _open(model_or_path, backends[0])
    cfg = base.config
    n_ctx = int(n_ctx) if n_ctx is not None else max(pp + tg)
    rng = np.random.default_rng(seed)
    label, size, params = model_label(base), base.size_bytes, base.n_params
    notes: list[str] = []

    plan = []  # (backend, mmap, threads, kind, n)
    for b in backends:
        for m in mmaps:
            for t in ([None] if b == "reference" else threads):
                plan += [(b, m, t, "pp", n) for n in pp] + [(b, m, t, "tg", n) for n in tg]
    if "reference" in backends and len(threads) > 1:
        notes.append("reference (JAX/XLA) chooses its own threads: measured once, threads '-'.")

    try:
        from tqdm.auto import tqdm

        bar = tqdm(plan, desc="bench", disable=not progress, leave=False)
    except ImportError:  # pragma: no cover
        bar = plan
    rows: list[BenchRow] = []
    runners: dict[tuple[str, bool, int | None], Any] = {}
    from bitnet_lab.engine.residency import to_anonymous_memory

    resident: dict[bool, Any] = {getattr(base, "mmap", True): base}  # a model may come in either way
    bw_buffer = None  # the bracketing bandwidth buffer, made at the first bracketed row
    for b, m, t, kind, n in bar:
        if m not in resident:
            if m:
                raise ConfigError("mmap=True needs a model whose weights are mapped from its file; this one was "
                                  "loaded with mmap=False (pass the path instead)")
            # the weights copied into anonymous huge pages once (-mmp 0)
            resident[m] = replace(base, tensors=to_anonymous_memory(base.tensors), mmap=False, _runner=None,
                                  _closer=None)
        if (b, m, t) not in runners:  # one runner per backend, residency and thread count, built once
            runners[(b, m, t)] = _variant(resident[m], b, t).runner
        runner = runners[(b, m, t)]
        when = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        bracket = bracket_bandwidth and kind == "tg" and b != "reference"
        if bracket and bw_buffer is None:
            bw_buffer = read_buffer(BRACKET_BYTES)
        brackets: list[float] = []  # read bandwidth before the first run and after each (GB/s)
        samples = run_test(runner, kind, n, repeat=repeat, n_ctx=n_ctx, rng=rng, bos_id=cfg.bos_id,
                           warmup=warmup, clock=clock,
                           between=(lambda: brackets.append(_bandwidth_near(runner, bw_buffer))) if bracket else None)
        shown_t = getattr(runner, "threads", t) if b != "reference" else None
        rows.append(BenchRow(
            model=label, size=size, params=params, backend=b, isa=_isa_of(b), threads=shown_t,
            n_prompt=n if kind == "pp" else 0, n_gen=n if kind == "tg" else 0, samples_ns=samples,
            model_filename=str(base.source), test_time=when, use_mmap=m,
            bandwidth_gbs=bracketed_bandwidth(brackets) if bracket else None,
            bandwidth_bracket=tuple(brackets) if bracket else None,
        ))
    if not warmup:
        notes.append("no warm-up runs: the first sample includes start-up costs.")
    numerics = (getattr(base, "backend_options", None) or {}).get("numerics", "bitnet")
    if numerics != "bitnet":  # another arithmetic runs other kernels (docs/numerics.md#12-numerics-profiles)
        notes.append(f"numerics profile {numerics}: bitnet_lab's backends ran {numerics}'s arithmetic "
                     "(Q8_K activations, per-block products), not the model's training numerics.")
    table = BenchTable(rows, machine_info(), notes)
    if ceilings is not None or any(r.bandwidth_gbs for r in rows):
        table = attach_roofline(table, base, ceilings)
    return table


BRACKET_BYTES = 512 << 20  # the bracketing buffer: 16 × a 32 MiB last-level cache


def bracketed_bandwidth(brackets: Sequence[float]) -> float:
    """The read bandwidth a row's runs had: each run's higher bracket (the one right before it or
    right after it: the smaller percentage), averaged over the runs — the roofline is linear in
    the bandwidth, so the row's roofline is the mean of its runs' rooflines. Bracketing every run
    (not only the row) follows a VM whose bandwidth drifts within the time one tg128 row takes."""
    if len(brackets) < 2:
        raise ConfigError(f"a bandwidth bracket needs a figure before and after a run, got {list(brackets)}")
    per_run = [max(a, b) for a, b in zip(brackets, brackets[1:])]
    return sum(per_run) / len(per_run)


def _bandwidth_near(runner: Any, buffer: tuple[np.ndarray, int]) -> float:
    """Best of 3 read-bandwidth passes with the runner's thread count (GB/s)."""
    return memory_bandwidth(getattr(runner, "threads", None) or 1, repeat=3, buffer=buffer).best


def attach_roofline(table: BenchTable, model: Any, ceilings: MachineCeilings | None) -> BenchTable:
    """tg rows get ``roofline_ts`` = read bandwidth / bytes per decode step of ``model`` (see
    :func:`decode_bytes`, plus the K/V cache the row reads at its mean length,
    :func:`tg_mean_positions`): the bandwidth of the row's runs when they were bracketed
    (``bench(bracket_bandwidth=True)``, :func:`bracketed_bandwidth`), else the ceilings' best at
    the row's thread count."""
    kv_dtype = (getattr(model, "backend_options", None) or {}).get("kv_dtype", "f32")
    roof = decode_bytes(model, kv_dtype=kv_dtype)

    def bandwidth(r: BenchRow) -> float | None:
        if r.bandwidth_gbs:
            return r.bandwidth_gbs
        return ceilings.bandwidth(r.threads) if ceilings is not None else None

    out = table.with_roofline(lambda r: roof.tokens_per_s(bandwidth(r), positions=tg_mean_positions(r.n_gen)))
    bracketed = any(r.bandwidth_gbs for r in table.rows)
    source = ("the read bandwidth measured between the row's runs, with its threads (each run: the higher of "
              "the brackets right before and after it, best of 3 passes over 512 MiB each; the row: the mean "
              "over its runs)" if bracketed else "memory read bandwidth reachable with the row's threads")
    out.notes.append(f"roofline: {source} / the bytes a decode step reads: {roof.bytes_per_token / 2**20:.1f} "
                     f"MiB of weights as stored, plus {roof.kv_bytes_per_position:,} bytes of {kv_dtype} K/V "
                     "cache per position at the row's mean length (tg n: (n + 1) / 2 positions).")
    llc = table.machine.get("llc_bytes")
    if llc and roof.bytes_per_token < 2 * llc:
        out.notes.append(f"the {roof.bytes_per_token / 2**20:.1f} MiB read per token fit in (or near) the "
                         f"{llc / 2**20:.0f} MiB last-level cache: DRAM bandwidth does not bound this model, "
                         "so the roofline column is not a limit here.")
    return out
