"""Baselines side by side: llama.cpp on the same file, in the same table.

* :func:`compare_llama_cpp` — through the ``llama-cpp-python`` package (optional extra
  ``bitnet_lab[llamacpp]``), in this process, with exactly our protocol (:func:`bench.run_test`
  drives a thin adapter). Upstream llama.cpp reads TQ1_0, TQ2_0, F16 and F32 GGUF files; it
  rejects bitnet.cpp's I2_S / TL1 / TL2 (type 36 clashes upstream,
  docs/kernels.md#10-known-bitnetcpp-bugs-and-limits row 20), and the error says which file to convert.
* :func:`compare_external` — any llama-bench binary (llama.cpp's, or bitnet.cpp's
  ``build/bin/llama-bench`` for I2_S / TL files): run with the same ``-p -n -t -r`` and
  ``-o json``, its output parsed into the same rows (:func:`rows_from_llama_bench_json`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bitnet_lab.bench.table import BenchRow, BenchTable, rows_from_llama_bench_json
from bitnet_lab.errors import BitnetLabError, ConfigError


def llama_cpp_available() -> bool:
    """True when ``import llama_cpp`` works (llama-cpp-python is installed)."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return False
    return True


class _LlamaCppRunner:
    """The forward interface over a ``llama_cpp.Llama``, for :func:`bench.run_test`: a "cache" is
    the context itself, emptied by ``reset()`` (the next ``eval`` drops every cached token)."""

    def __init__(self, llm: Any, threads: int) -> None:
        self.llm = llm
        self.threads = threads
        self.vocab_size = int(llm.n_vocab())
        import llama_cpp

        sync = getattr(llama_cpp, "llama_synchronize", None)
        ctx = getattr(getattr(llm, "_ctx", None), "ctx", None)
        self._sync = (lambda: sync(ctx)) if sync is not None and ctx is not None else (lambda: None)

    def new_cache(self, n_ctx: int) -> _LlamaCppRunner:
        self.llm.reset()
        return self

    def forward(self, ids: Sequence[int], cache: Any, *, capture: bool = False, last_only: bool = False) -> tuple:
        # llama.cpp computes the logits of the last token only (logits_all off), whatever last_only says
        self.llm.eval([int(i) for i in ids])
        self._sync()  # as llama-bench: the work is finished when the clock stops
        return ()


def _llama_meta(llm: Any, path: str) -> tuple[str, int, int]:
    """(description, size in bytes, parameters) as llama.cpp reports them, else from the file."""
    model = getattr(llm, "_model", None)
    try:
        desc = model.desc()
        size, params = int(model.size()), int(model.n_params())
        return str(desc), size, params
    except (AttributeError, TypeError, ValueError):  # older llama-cpp-python: no such accessors
        return Path(path).name, os.path.getsize(path), 0


def compare_llama_cpp(
    path: str | os.PathLike,
    *,
    pp: Iterable[int] = (128, 512),
    tg: Iterable[int] = (64, 128),
    threads: Iterable[int] = (1, 2),
    repeat: int = 5,
    n_ctx: int | None = None,
    seed: int = 0,
    warmup: bool = True,
    progress: bool = False,
    clock=time.perf_counter_ns,
) -> BenchTable:
    """pp / tg of ``path`` run by llama.cpp through llama-cpp-python, our protocol and table.

    Raises BitnetLabError when llama-cpp-python is not installed or llama.cpp cannot load the
    file (e.g. bitnet.cpp's I2_S): nothing is measured then."""
    from bitnet_lab.bench.protocol import run_test
    from bitnet_lab.bench.machine import machine_info

    try:
        import llama_cpp
    except ImportError:
        raise BitnetLabError("llama.cpp comparison needs llama-cpp-python: pip install 'bitnet_lab[llamacpp]' "
                             "(or pip install llama-cpp-python)") from None
    path = str(path)
    pp, tg = [int(x) for x in pp], [int(x) for x in tg]
    threads = [int(t) for t in threads]
    if any(t < 1 for t in threads):
        raise ConfigError(f"llama.cpp needs explicit thread counts >= 1, got {threads}")
    n_ctx = int(n_ctx) if n_ctx is not None else max(pp + tg)
    rng = np.random.default_rng(seed)
    version = getattr(llama_cpp, "__version__", "?")
    rows: list[BenchRow] = []
    plan = [(t, "pp", n) for t in threads for n in pp] + [(t, "tg", n) for t in threads for n in tg]
    plan.sort(key=lambda x: x[0])  # llama-bench order: per thread count, pp then tg
    try:
        from tqdm.auto import tqdm

        plan_iter = tqdm(plan, desc="llama.cpp", disable=not progress, leave=False)
    except ImportError:  # pragma: no cover
        plan_iter = plan
    llms: dict[int, _LlamaCppRunner] = {}
    for t, kind, n in plan_iter:
        if t not in llms:
            try:
                llm = llama_cpp.Llama(model_path=path, n_ctx=n_ctx, n_batch=max(pp + [1]), n_ubatch=max(pp + [1]),
                                      n_threads=t, n_threads_batch=t, logits_all=False, verbose=False)
            except (ValueError, RuntimeError, OSError) as e:  # how llama-cpp-python reports a failed load
                raise BitnetLabError(
                    f"llama.cpp (llama-cpp-python {version}) cannot load {path}: {e}. Upstream llama.cpp reads "
                    "TQ1_0, TQ2_0, F16 and F32 files, not bitnet.cpp's I2_S/TL1/TL2: write a TQ2_0 file "
                    "(`bitnet-lab convert --outtype tq2_0` from the checkpoint, `bitnet-lab dummy --outtype tq2_0`) "
                    "or pass bitnet.cpp's llama-bench with --compare PATH. llama.cpp reads the 2B-4T graph "
                    "under the arch name `bitnet`, not `bitnet-b1.58` (`bitnet-lab dummy --arch-name bitnet`)"
                ) from None
            llms[t] = _LlamaCppRunner(llm, t)
        runner = llms[t]
        bos = runner.llm.token_bos()
        samples = run_test(runner, kind, n, repeat=repeat, n_ctx=n_ctx, rng=rng,
                           bos_id=bos if bos is not None and bos >= 0 else None, warmup=warmup, clock=clock)
        desc, size, params = _llama_meta(runner.llm, path)
        rows.append(BenchRow(model=desc, size=size, params=params, backend="llama.cpp", isa="ggml", threads=t,
                             n_prompt=n if kind == "pp" else 0, n_gen=n if kind == "tg" else 0,
                             samples_ns=samples, model_filename=path, tool=f"llama-cpp-python {version}"))
    note = (f"llama.cpp rows: llama-cpp-python {version} in this process, same protocol (ggml picks its kernels; "
            "its TQ kernels quantise activations per 256-block (Q8_K), bitnet_lab per token: same file, "
            "different arithmetic).")
    return BenchTable(rows, machine_info(), [note])


def _int_list(xs: Iterable[int]) -> str:
    return ",".join(str(int(x)) for x in xs) or "0"


def compare_external(
    binary: str | os.PathLike,
    path: str | os.PathLike,
    *,
    pp: Iterable[int] = (128, 512),
    tg: Iterable[int] = (64, 128),
    threads: Iterable[int] = (1, 2),
    repeat: int = 5,
    extra_args: Sequence[str] = (),
    timeout: float | None = None,
) -> BenchTable:
    """Run an external llama-bench (llama.cpp's or bitnet.cpp's) on ``path`` with the same test
    parameters and ``-o json``, and return its rows in our table (backend "llama-bench").

    ``extra_args`` go to the binary as they are (e.g. ``["-ngl", "0"]``). Raises BitnetLabError
    when the binary is missing, fails (its stderr tail in the message) or prints no JSON."""
    from bitnet_lab.bench.machine import machine_info

    exe = shutil.which(str(binary)) or str(binary)
    if not (os.path.isfile(exe) and os.access(exe, os.X_OK)):
        raise BitnetLabError(f"--compare: {binary} is not an executable file (a llama-bench binary is expected)")
    cmd = [exe, "-m", str(path), "-p", _int_list(pp), "-n", _int_list(tg), "-t", _int_list(threads),
           "-r", str(int(repeat)), "-o", "json", *map(str, extra_args)]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise BitnetLabError(f"--compare: {exe} ran longer than {timeout} s") from None
    except OSError as e:
        raise BitnetLabError(f"--compare: cannot run {exe}: {e}") from None
    if r.returncode != 0:
        tail = " ".join((r.stderr or r.stdout).strip().splitlines()[-3:])
        raise BitnetLabError(f"--compare: {Path(exe).name} exited with {r.returncode}: {tail}")
    out = r.stdout
    start = out.find("[")  # some builds print a line or two before the JSON array
    rows = rows_from_llama_bench_json(out[start:] if start >= 0 else out, backend="llama-bench",
                                      tool=Path(exe).name)
    notes = [f"llama-bench rows: `{Path(exe).name} {' '.join(cmd[1:])}`, parsed from its JSON output."]
    return BenchTable(rows, machine_info(), notes)
