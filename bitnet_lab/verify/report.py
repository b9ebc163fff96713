"""The result of :func:`bitnet_lab.verify.verify`: per-tier results and their renderings.

``VerifyReport`` holds the three tiers of docs/numerics.md#112-the-tiers-bitnet_lab-checks that compare the
fast path with the reference — T1 kernel, T2 BitLinear, T3 model — plus the settings they were run under
(model, prompt, steps, tolerance, threads, ISA levels) and the numerics both backends mirrored (activation
rounding, absmax floor, KV-cache dtype, lm_head dtype). ``passed`` is True only when every tier
holds. Renderings: :meth:`VerifyReport.to_text` (a table for people), :meth:`VerifyReport.to_json`
(for machines), ``_repr_html_`` (notebooks).
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from typing import Any

from bitnet_lab.verify.locate import CaptureComparison, Located

PASS, FAIL, TIE = "pass", "fail", "tie-limited"

# Defaults of verify() and `bitnet-lab verify` (here, in a module without the compiled kernels,
# so that building the CLI parser stays light).
DEFAULT_PROMPT = "The capital of France is"
DEFAULT_TOLERANCE = 1e-4


# ---- T1 / T2: rows of exact comparisons ------------------------------------------------------


@dataclass
class Mismatch:
    """The first differing element of one comparison, and how many differ there."""

    subject: str                 # tensor (or activation input) name
    what: str                    # "acc", "q", "s_x", "sum_q", "y", "lut"
    n_bad: int
    n_total: int
    row: int                     # activation row (token), or LUT table
    col: int                     # output feature (or element / byte)
    got: Any
    want: Any

    def describe(self) -> str:
        at = f"row {self.row}" + (f" col {self.col}" if self.col >= 0 else "")
        return (f"{self.subject} {self.what}: {self.n_bad}/{self.n_total} differ, first at {at} "
                f"(native {self.got}, numpy {self.want})")

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Check:
    """One row of the T1/T2 tables: one kernel version (or the BitLinear path) on one ISA level
    and thread count, over every sampled tensor."""

    op: str
    version: str
    isa: str
    threads: int                 # 0: not applicable (the reference, a LUT build)
    subjects: int = 0            # tensors / inputs compared
    compared: int = 0            # elements compared
    n_bad: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)  # the first per failing subject
    more: int = 0                # failing subjects beyond the MAX_KEPT kept

    MAX_KEPT = 16

    @property
    def passed(self) -> bool:
        return self.n_bad == 0

    @property
    def first(self) -> Mismatch | None:
        return self.mismatches[0] if self.mismatches else None

    def add(self, n_compared: int, mismatch: Mismatch | None, count_subject: bool = True) -> None:
        """Count ``n_compared`` elements and, when given, their mismatch. Consecutive mismatches
        of the same subject and quantity (e.g. one GEMV call per token row) are merged into the
        first (its row/column stay those of the first bad element)."""
        self.subjects += int(count_subject)
        self.compared += int(n_compared)
        if mismatch is None:
            return
        self.n_bad += mismatch.n_bad
        last = self.mismatches[-1] if self.mismatches else None
        if last is not None and (last.subject, last.what) == (mismatch.subject, mismatch.what):
            last.n_bad += mismatch.n_bad
            last.n_total += mismatch.n_total
        elif len(self.mismatches) < self.MAX_KEPT:
            self.mismatches.append(mismatch)
        else:
            self.more += 1

    def to_dict(self) -> dict:
        return {"op": self.op, "version": self.version, "isa": self.isa, "threads": self.threads,
                "subjects": self.subjects, "compared": self.compared, "n_bad": self.n_bad,
                "passed": self.passed, "mismatches": [m.to_dict() for m in self.mismatches],
                "more_failing_subjects": self.more}


@dataclass
class ExactTier:
    """T1 or T2: a claim checked by exact comparisons, one :class:`Check` per row."""

    name: str
    claim: str
    checks: list[Check] = field(default_factory=list)
    tensors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def to_dict(self) -> dict:
        return {"name": self.name, "claim": self.claim, "passed": self.passed, "seconds": self.seconds,
                "tensors": self.tensors, "notes": self.notes, "checks": [c.to_dict() for c in self.checks]}


# ---- T3: the model ---------------------------------------------------------------------------


@dataclass
class Step:
    """One greedy step: the logits predicting generated token ``step`` (0-based)."""

    step: int
    pos: int                     # tokens in the cache when these logits were produced
    token: int                   # the reference's greedy token (fed to both: teacher forcing)
    native_token: int
    rel_err: float               # max|Δ logit| / max|reference logit|
    max_abs: float
    margin: float                # reference top-1 minus top-2 logit
    status: str = PASS           # pass | tie-limited | fail
    event: int | None = None     # index into ModelTier.events when this step was located

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Event:
    """A disagreement of the model tier (a capture comparison, a token or a tolerance breach),
    located to the first op where the two passes part."""

    where: str                   # "prefill", "decode step 1", "step 7"
    status: str                  # tie-limited | fail
    reason: str
    located: Located | None
    comparison: CaptureComparison | None = None
    affects: list[str] = field(default_factory=list)  # later forwards whose divergence follows from it

    def to_dict(self) -> dict:
        return {"where": self.where, "status": self.status, "reason": self.reason, "affects": self.affects,
                "located": self.located.to_dict() if self.located else None,
                "first_bit_difference": (self.comparison.first_bit_difference.to_dict()
                                         if self.comparison and self.comparison.first_bit_difference else None)}


@dataclass
class ModelTier:
    """T3: the whole model, reference vs native, prompt then n greedy steps (teacher-forced)."""

    name: str
    claim: str
    tolerance: float
    prompt_tokens: int
    prefill_rel_err: float = 0.0
    steps: list[Step] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    capture_checks: dict[str, CaptureComparison] = field(default_factory=dict)  # "prefill", "decode step 1"
    notes: list[str] = field(default_factory=list)
    isa: str = ""
    threads: int = 1
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        if self.prefill_rel_err > self.tolerance and not any(e.where == "prefill" and e.status == TIE for e in self.events):
            return False
        return all(e.status != FAIL for e in self.events) and all(s.status != FAIL for s in self.steps)

    @property
    def max_rel_err(self) -> float:
        return max([self.prefill_rel_err] + [s.rel_err for s in self.steps])

    @property
    def tokens_identical(self) -> int:
        return sum(1 for s in self.steps if s.token == s.native_token)

    @property
    def min_margin(self) -> float | None:
        return min((s.margin for s in self.steps), default=None)

    def to_dict(self) -> dict:
        return {
            "name": self.name, "claim": self.claim, "passed": self.passed, "seconds": self.seconds,
            "tolerance": self.tolerance, "isa": self.isa, "threads": self.threads,
            "prompt_tokens": self.prompt_tokens, "prefill_rel_err": self.prefill_rel_err,
            "max_rel_err": self.max_rel_err, "steps_total": len(self.steps),
            "tokens_identical": self.tokens_identical, "min_margin": self.min_margin,
            "capture_checks": {k: v.to_dict() for k, v in self.capture_checks.items()},
            "events": [e.to_dict() for e in self.events], "steps": [s.to_dict() for s in self.steps],
            "notes": self.notes,
        }


# ---- the report --------------------------------------------------------------------------------


@dataclass
class VerifyReport:
    """Everything :func:`bitnet_lab.verify.verify` found. ``passed``: every tier holds."""

    model: str
    settings: dict
    numerics: dict               # what both backends mirrored (rounding, floor, KV, lm_head, ...)
    kernel: ExactTier
    bitlinear: ExactTier
    model_tier: ModelTier
    environment: dict = field(default_factory=dict)

    @property
    def tiers(self) -> list:
        return [self.kernel, self.bitlinear, self.model_tier]

    @property
    def passed(self) -> bool:
        return all(t.passed for t in self.tiers)

    def __bool__(self) -> bool:  # `assert bl.verify(m)` reads naturally
        return self.passed

    def summary(self) -> str:
        """One line: PASS, or FAIL with the first failure of each failing tier."""
        if self.passed:
            return "PASS: " + "; ".join(_tier_line(t) for t in self.tiers)
        return "FAIL: " + "; ".join(f"{t.name}: {_failure_line(t)}" for t in self.tiers if not t.passed)

    # ---- JSON --------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "passed": self.passed, "model": self.model, "settings": self.settings,
            "numerics": self.numerics, "environment": self.environment,
            "tiers": {"kernel": self.kernel.to_dict(), "bitlinear": self.bitlinear.to_dict(),
                      "model": self.model_tier.to_dict()},
            "summary": self.summary(),
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, default=_json_default, allow_nan=True)

    # ---- text --------------------------------------------------------------------------------
    def to_text(self) -> str:
        s = self.settings
        out = [f"bitnet-lab verify: {self.model}"]
        out.extend(_numerics_text(self.numerics))
        out.append(f"prompt {s['prompt_tokens']} tokens, {s['n']} greedy steps, tolerance {s['tolerance']:g} "
                   f"relative to max|logit|; threads {', '.join(map(str, s['threads']))}; "
                   f"ISA levels {', '.join(s['isas'])}")
        if self.environment.get("fault"):
            out.append(f"FAULT INJECTION ON: {self.environment['fault']} is deliberately wrong")
        for tier in (self.kernel, self.bitlinear):
            out.append("")
            out.extend(_exact_tier_text(tier))
        out.append("")
        out.extend(_model_tier_text(self.model_tier))
        out.append("")
        out.append("RESULT: " + self.summary())
        return "\n".join(out)

    def __str__(self) -> str:
        return self.to_text()

    def _repr_html_(self) -> str:
        color = "#1a7f37" if self.passed else "#cf222e"
        verdict = f"<span style='color:{color};font-weight:bold'>{'PASS' if self.passed else 'FAIL'}</span>"
        numerics = "<br>".join(html.escape(line) for line in _numerics_text(self.numerics))
        parts = [f"<div><b>bitnet_lab.verify</b> — {html.escape(self.model)} {verdict}</div>",
                 f"<div style='font-size:90%'>{numerics}</div>"]
        for tier in (self.kernel, self.bitlinear):
            parts.append(_html_table(f"{tier.name} — {'PASS' if tier.passed else 'FAIL'}: {tier.claim}",
                                     _EXACT_HEAD, [_exact_row(c) for c in tier.checks]))
        m = self.model_tier
        parts.append(_html_table(f"{m.name} — {'PASS' if m.passed else 'FAIL'}: {_tier_line(m)}",
                                 _STEP_HEAD, [_step_row(s) for s in m.steps]))
        if m.events:
            parts.append("<ul>" + "".join(f"<li><b>{html.escape(e.status)}</b> {html.escape(e.where)}: "
                                          f"{html.escape(e.reason)}</li>" for e in m.events) + "</ul>")
        parts.append(f"<div><b>{html.escape(self.summary())}</b></div>")
        return "\n".join(parts)


# ---- rendering helpers ---------------------------------------------------------------------------

_EXACT_HEAD = ("op", "version", "isa", "threads", "subjects", "compared", "bad", "first mismatch")
_STEP_HEAD = ("step", "pos", "token", "native", "rel err", "margin", "status")


_NUMERICS_LABELS = (
    ("profile", "profile"), ("activations", "activations"), ("rounding", "activation rounding"), ("act_floor", "absmax floor"), ("kv_dtype", "KV cache"),
    ("lm_head", "lm_head"), ("lm_head_type", "lm_head weight"), ("embed_type", "token_embd"),
    ("epilogue", "epilogue"),
)


def _numerics_text(numerics: dict) -> list[str]:
    """The mirrored settings on one line (labelled), then any other key on its own line."""
    known = dict(_NUMERICS_LABELS)
    head = ", ".join(f"{label} {numerics[k]}" for k, label in _NUMERICS_LABELS if k in numerics)
    out = [f"numerics (both backends): {head}"]
    out += [f"  {k}: {v}" for k, v in numerics.items() if k not in known]
    return out


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, tuple):
        return list(o)
    return str(o)


def _exact_row(c: Check) -> tuple:
    first = c.first.describe() if c.first else ""
    return (c.op, c.version, c.isa, str(c.threads) if c.threads else "-", str(c.subjects), str(c.compared),
            str(c.n_bad), first)


def _step_row(s: Step) -> tuple:
    return (str(s.step), str(s.pos), str(s.token), str(s.native_token), f"{s.rel_err:.3g}",
            f"{s.margin:.4g}", s.status)


def _table(head: tuple, rows: list[tuple], indent: str = "  ") -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    widths[-1] = len(head[-1])  # the last column is free text: no padding
    fmt = lambda r: indent + "  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip()  # noqa: E731
    return [fmt(head)] + [fmt(r) for r in rows]


def _tier_line(t) -> str:
    if isinstance(t, ModelTier):
        margin = f", min top-2 margin {t.min_margin:.4g}" if t.min_margin is not None else ""
        ties = sum(1 for e in t.events if e.status == TIE)
        tie = f", {ties} tie-limited" if ties else ""
        return (f"{t.name}: max |Δlogit|/max|logit| {t.max_rel_err:.3g} (tolerance {t.tolerance:g}), greedy tokens "
                f"identical {t.tokens_identical}/{len(t.steps)}{margin}{tie}")
    return f"{t.name}: {sum(c.compared for c in t.checks)} values over {len(t.checks)} checks, 0 differ"


def _failure_line(t) -> str:
    if isinstance(t, ModelTier):
        for e in t.events:
            if e.status == FAIL:
                return f"{e.where}: {e.reason}"
        bad = [s for s in t.steps if s.status == FAIL]
        if bad:
            return f"step {bad[0].step}: rel err {bad[0].rel_err:.3g}, token {bad[0].native_token} vs {bad[0].token}"
        return f"prefill rel err {t.prefill_rel_err:.3g} > {t.tolerance:g}"
    if not t.checks:
        return "nothing was checked"
    c = t.failures[0]
    ops = list(dict.fromkeys(f.op for f in t.failures))
    first = f"; first {c.first.describe()}" if c.first else ""
    return (f"{', '.join(ops)} wrong ({len(t.failures)} of {len(t.checks)} checks fail; first {c.op} {c.version} "
            f"on {c.isa}, {_threads(c.threads)}: {c.n_bad} values differ{first})")


def _threads(n: int) -> str:
    return "threads n/a" if not n else f"{n} thread" + ("s" if n != 1 else "")


def _exact_tier_text(t: ExactTier) -> list[str]:
    out = [f"{t.name}  {'PASS' if t.passed else 'FAIL'}  {t.claim}"]
    out.extend(f"  {n}" for n in t.notes)
    out.extend(_table(_EXACT_HEAD, [_exact_row(c) for c in t.checks]))
    shown: set[str] = set()
    for c in t.failures:  # details of the first failing check of each op (the others repeat them)
        if c.op in shown:
            continue
        shown.add(c.op)
        for m in c.mismatches[1:4]:
            out.append(f"    also: {c.op} {c.version} ({c.isa}, {c.threads or '-'}t): {m.describe()}")
        rest = len(c.mismatches) - 4 + c.more
        if rest > 0:
            out.append(f"    ... and {rest} more failing subject(s) of {c.op} {c.version} ({c.isa}) (all in --json)")
    return out


def _model_tier_text(m: ModelTier) -> list[str]:
    out = [f"{m.name}  {'PASS' if m.passed else 'FAIL'}  {m.claim}"]
    out.append(f"  native engine on {m.isa}, {m.threads} threads; prompt {m.prompt_tokens} tokens: "
               f"max |Δlogit|/max|logit| {m.prefill_rel_err:.3g}")
    out.extend(f"  {n}" for n in m.notes)
    for where, cc in m.capture_checks.items():
        if cc.located is None:
            fb = cc.first_bit_difference
            tail = ("all bit-identical" if fb is None else
                    f"ints identical, floats within tolerance; first bit difference {fb.name} "
                    f"({fb.n_bits} entries, max rel {fb.rel:.3g})")
            out.append(f"  captures at {where}: {cc.n_compared} compared, {tail}")
    out.append(f"  {_tier_line(m)}")
    show = m.steps if len(m.steps) <= 16 else [s for s in m.steps if s.status != PASS or s.step < 4]
    if show:
        if len(show) < len(m.steps):
            out.append(f"  (steps shown: the first 4 and every non-pass; all {len(m.steps)} are in --json)")
        out.extend(_table(_STEP_HEAD, [_step_row(s) for s in show]))
    for e in m.events:
        out.append(f"  {e.status.upper()} at {e.where}: {e.reason}")
        if e.affects:
            out.append(f"    (recurs, or follows from it through the KV cache, at: {_short_list(e.affects)})")
    return out


def _short_list(items: list[str], keep: int = 6) -> str:
    return ", ".join(items[:keep]) + (f", … ({len(items) - keep} more)" if len(items) > keep else "")


def _html_table(title: str, head: tuple, rows: list[tuple]) -> str:
    th = "".join(f"<th style='text-align:left'>{html.escape(h)}</th>" for h in head)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in r) + "</tr>" for r in rows)
    return (f"<details open><summary>{html.escape(title)}</summary><table><thead><tr>{th}</tr></thead>"
            f"<tbody>{trs}</tbody></table></details>")
