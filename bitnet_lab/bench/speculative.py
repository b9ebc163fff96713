"""Speculative decoding, measured: what a verification pass costs, and what each drafter gains.

* :func:`verification_cost` — llama-bench's vocabulary: a *step* is one decode forward (one token
  at cache position ``position``), a *pass of k+1* is the forward a speculative step runs (the
  current token and k drafts, every row's logits). For k = 1..16 the table gives both times and
  their ratio; each of the ``repeat`` runs times a step and a pass back to back at the same
  position (the cache is rolled back after each), so a busy machine slows both alike. Random
  weights do not matter here: the cost does not depend on them (a 2B-4T-layout dummy serves).
* :func:`drafter_comparison` — on a real text workload (the shipped edit workload: reproduce or
  rename a standard-library function; and free text with nothing to copy): per drafter, the
  acceptance rate, tokens per pass, effective decode tokens/s (generated tokens fed / the time
  of drafting, verifying and stepping) and its ratio to plain decode measured in the same run,
  and whether the greedy tokens are plain decode's (they must be). Acceptance needs a trained
  model: the default model or any real one.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from bitnet_lab.bench.table import Column, Table
from bitnet_lab.errors import ConfigError

__all__ = ["verification_cost", "drafter_comparison", "edit_workload", "WORKLOAD_FILE"]

WORKLOAD_FILE = "spec-edit-workload.json"
Clock = Callable[[], int]   # nanoseconds


def edit_workload(kind: str = "edit") -> list[dict[str, str]]:
    """The shipped prompts: ``kind`` "edit" (reproduce / rename a standard-library function) or
    "free" (nothing to copy). Each is ``{"name", "task", "prompt"}``."""
    from bitnet_lab import paths

    doc = json.loads((paths.DATA_DIR / WORKLOAD_FILE).read_text(encoding="utf-8"))
    if kind not in ("edit", "free"):
        raise ConfigError(f"workload kind must be 'edit' or 'free', got {kind!r}")
    return list(doc[kind])


def _fmt(key: str, digits: int = 2) -> Callable[[dict], str]:
    return lambda r: "" if r.get(key) is None else f"{r[key]:.{digits}f}"


def verification_cost(runner: Any, ks: Iterable[int] = range(1, 17), *, repeat: int = 5, position: int = 64,
                      seed: int = 0, label: str = "", clock: Clock = time.perf_counter_ns) -> Table:
    """The cost of a verification pass over k+1 positions against a single-token step (median of
    ``repeat`` runs each), at cache position ``position`` (prefilled with random tokens, untimed)."""
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1 or repeat < 1 or position < 1:
        raise ConfigError(f"verification_cost: need k >= 1, repeat >= 1, position >= 1; got {ks}, {repeat}, {position}")
    rng = np.random.default_rng(seed)
    vocab = int(runner.config.vocab)
    cache = runner.new_cache(position + ks[-1] + 1)
    runner.forward(rng.integers(0, vocab, position).astype(np.int32), cache, last_only=True)

    def timed(ids: np.ndarray) -> int:
        t0 = clock()
        np.asarray(runner.forward(ids, cache))
        dt = clock() - t0
        cache.truncate(position)
        return dt

    one = rng.integers(0, vocab, 1).astype(np.int32)
    timed(one)                                                   # warm-up
    records = []
    for k in ks:
        ids = rng.integers(0, vocab, k + 1).astype(np.int32)
        timed(ids)                                               # warm-up of this width
        steps, passes = [], []
        for _ in range(repeat):
            steps.append(timed(one))
            passes.append(timed(ids))
        step, pss = statistics.median(steps) / 1e6, statistics.median(passes) / 1e6
        records.append({"k": k, "positions": k + 1, "step_ms": step, "pass_ms": pss, "ratio": pss / step,
                        "per_position": pss / step / (k + 1), "steps_ms": [s / 1e6 for s in steps],
                        "passes_ms": [p / 1e6 for p in passes]})
    threads = getattr(runner, "threads", None)
    cols = [Column("k", "k", "r"), Column("positions", "positions", "r"),
            Column("step_ms", "step ms", "r", _fmt("step_ms", 3)), Column("pass_ms", "pass ms", "r", _fmt("pass_ms", 3)),
            Column("ratio", "pass / step", "r", _fmt("ratio")),
            Column("per_position", "per position", "r", _fmt("per_position", 3))]
    notes = [f"median of {repeat} runs per row; step = one token at position {position}, pass = k+1 tokens "
             "from the same position (every row's logits, as verification needs); cache rolled back after each",
             "a speculative step pays off when (tokens it yields) / (pass / step) > 1"]
    title = f"verification pass cost{' — ' + label if label else ''}" + (f", {threads} threads" if threads else "")
    return Table(title, cols, records, notes)


def _run_prompt(model: Any, prompt: str, n: int, n_ctx: int, draft: Any) -> Any:
    from bitnet_lab.generate.loop import DoneEvent, generate
    from bitnet_lab.generate.sampling import make_sampler

    done = None
    for ev in generate(model, prompt, n=n, sampler=make_sampler(temp=0), n_ctx=n_ctx, stop_ids=(), draft=draft):
        if isinstance(ev, DoneEvent):
            done = ev
    return done


def drafter_comparison(model: Any, drafters: Sequence[tuple[str, Callable[[], Any]]], *,
                       workloads: Sequence[str] = ("edit", "free"), n: int | None = None, repeat: int = 5,
                       draft_max: int = 16, progress: bool = False) -> Table:
    """Greedy generation over each workload, plain and with each drafter (``(label, make)``:
    ``make()`` returns a fresh drafter), ``repeat`` times each, interleaved per prompt. Effective
    tokens/s = tokens fed / eval time (drafting included), median over the runs of the
    workload-wide totals; ratio to plain decode's median of the same run. ``make()`` may return a
    `Speculation` (its own settings) instead of a drafter (cost-aware, ``draft_max``)."""
    from bitnet_lab.generate.speculative import Speculation

    n_ctx = int(model.config.context)
    records = []
    for kind in workloads:
        prompts = edit_workload(kind)
        runs: dict[str, list[tuple[float, int]]] = {}
        counts: dict[str, list[int]] = {}
        same: dict[str, bool] = {}
        for rep in range(repeat):
            totals: dict[str, list[float]] = {}
            for item in prompts:
                ids = model.tokenizer.encode(item["prompt"])
                # an edit's answer is about as long as the code it copies (about half the prompt); free
                # text gets 64 tokens
                budget = n if n is not None else (len(ids) // 2 + 8 if kind == "edit" else 64)
                budget = max(1, min(budget, n_ctx - len(ids) - 1))
                plain = _run_prompt(model, item["prompt"], budget, n_ctx, None)
                for label, make in [("plain", None)] + list(drafters):
                    if make is not None:
                        drafter = make()
                        if not isinstance(drafter, Speculation):
                            drafter = Speculation(drafter, draft_max=draft_max)
                    done = plain if make is None else _run_prompt(model, item["prompt"], budget, n_ctx, drafter)
                    t = totals.setdefault(label, [0.0, 0, 0, 0, 0])
                    t[0] += done.eval_ms
                    t[1] += done.n_eval
                    t[2] += done.n_pass
                    t[3] += done.n_draft
                    t[4] += done.n_accept
                    same[label] = same.get(label, True) and done.token_ids == plain.token_ids
            for label, t in totals.items():
                runs.setdefault(label, []).append((t[1] / (t[0] / 1e3), t[1]))
                counts[label] = t[1:]
            if progress:
                import sys

                print(f"spec bench {kind}: run {rep + 1}/{repeat}", file=sys.stderr, flush=True)
        base = statistics.median(r for r, _ in runs["plain"])
        for label, rs in runs.items():
            n_eval, n_pass, n_draft, n_accept = counts[label]
            rate = statistics.median(r for r, _ in rs)
            records.append({"workload": kind, "drafter": label, "prompts": len(prompts), "tokens": n_eval,
                            "acceptance": n_accept / n_draft if n_draft else None,
                            "tokens_per_pass": n_eval / n_pass if n_pass else None,
                            "tokens_per_s": rate, "vs_plain": rate / base, "identical": same[label],
                            "runs_tokens_per_s": [r for r, _ in rs]})
    cols = [Column("workload", "workload"), Column("drafter", "drafter"), Column("tokens", "tokens", "r"),
            Column("acceptance", "acceptance", "r",
                   lambda r: "" if r["acceptance"] is None else f"{100 * r['acceptance']:.1f} %"),
            Column("tokens_per_pass", "tokens / pass", "r", _fmt("tokens_per_pass")),
            Column("tokens_per_s", "effective t/s", "r", _fmt("tokens_per_s", 1)),
            Column("vs_plain", "vs plain", "r", _fmt("vs_plain")),
            Column("identical", "greedy tokens = plain", fmt=lambda r: "yes" if r["identical"] else "NO")]
    threads = getattr(model.runner, "threads", None)
    notes = [f"greedy; median of {repeat} runs of the whole workload, plain decode in the same run; draft-max "
             f"{draft_max}, adaptive, cost-aware unless the row says otherwise",
             "effective t/s = generated tokens fed / (time drafting + verifying + stepping)"]
    return Table(f"drafters on {getattr(model.source, 'name', model)}"
                 + (f", {threads} threads" if threads else ""), cols, records, notes)


def layout_dummy(layout: str = "2B-4T", outtype: str = "i2_s", *, progress: bool = False) -> Any:
    """A dummy GGUF of ``layout`` (seed 0) in the bitnet_lab cache, written once and reused: the
    verification cost depends on the shapes, not on the (random) weights."""
    from bitnet_lab import paths
    from bitnet_lab.tools.dummy import generate_dummy

    path = paths.CACHE_DIR / "dummies" / f"{layout.lower()}-{outtype}-seed0.gguf"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        generate_dummy(layout, path, outtype=outtype, progress=progress)
    return path


def spec_tables(model: Any, *, layout: str = "2B-4T", threads: int | None = None, repeat: int = 5,
                progress: bool = False, load: Callable[..., Any] | None = None) -> list[Table]:
    """``bitnet-lab bench --spec``: the verification cost on ``layout``'s dummy (I2_S) and the
    drafters (prompt lookup, self-speculation on half the layers) on ``model``."""
    from bitnet_lab.generate.speculative import PromptLookup, SelfSpeculative, Speculation

    if load is None:
        from bitnet_lab.model import load
    dummy = load(layout_dummy(layout, progress=progress), threads=threads)
    tables = [verification_cost(dummy.runner, range(1, 17), repeat=repeat, label=f"{layout} layout (I2_S dummy)")]
    dummy.close()
    half = max(1, model.config.n_layers // 2)
    drafters = [("lookup:3", lambda: PromptLookup(3)), ("lookup:2", lambda: PromptLookup(2)),
                ("lookup:3, no cost model", lambda: Speculation(PromptLookup(3), cost_aware=False))]
    if model.config.n_layers > 1:
        drafters.append((f"self:{half}", lambda: SelfSpeculative(model, half)))
    tables.append(drafter_comparison(model, drafters, repeat=repeat, progress=progress))
    return tables
