"""One model under two numerics profiles: how far one engine's arithmetic moves it from another's.

``bitnet-lab verify --numerics llama.cpp --against bitnet`` answers the research question of
docs/numerics.md#12-numerics-profiles: the same file, the same backend, teacher-forced on the same
text, once with llama.cpp's arithmetic (Q8_K activations per 256-block, its per-block float sums,
F16 KV cache) and once with the model's training numerics (per-token absmax int8). Nothing here is
a pass/fail check: it is a measurement, per layer and for the logits.

What is measured (``A`` = ``numerics``, ``B`` = ``against``, the baseline):

* per layer, the residual stream after the layer (``blk.{i}.ffn_resid``, capture names of
  reference/model.py): ``max|Δh|``, ``mean|Δh|`` and ``max|Δh| / max|h_B|``;
* the logits of every position: ``max|Δlogit|``, ``mean|Δlogit|``, top-1 agreement and the mean
  ``KL(p_B ‖ p_A)`` (nats; softmax in float64). A position whose top-2 margin under B is below
  ``tie_rel · max|logit_B|`` of that position is a *tie*: its top-1 can flip on any rounding, so
  it is counted apart from the agreement (:func:`logit_agreement`, also used to hold our
  ``llama.cpp`` profile against llama.cpp's own logits, tests/data/llamacpp-logits).
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bitnet_lab.errors import ConfigError
from bitnet_lab.verify.report import DEFAULT_PROMPT

__all__ = ["DEFAULT_TIE_REL", "LayerDelta", "LogitAgreement", "ProfileReport", "compare_profiles", "logit_agreement"]

DEFAULT_TIE_REL = 1e-3  # a top-2 margin below this fraction of the row's max|logit| is a tie


# ---- logits ------------------------------------------------------------------------------------


@dataclass
class LogitAgreement:
    """How logits ``a`` agree with baseline logits ``b`` (T rows each)."""

    rows: int
    max_abs: float               # max |a - b| over every entry
    mean_abs: float              # mean |a - b|
    max_rel: float               # max |a - b| / max |b|
    top1_agree: int              # non-tie rows whose argmax is the same
    decided: int                 # non-tie rows (top-2 margin of b at least tie_rel · max|b| of the row)
    ties: int                    # rows counted apart
    ties_agree: int              # tie rows whose argmax is the same anyway
    kl_mean: float               # mean over rows of KL(softmax(b) ‖ softmax(a)), nats
    kl_max: float
    tie_rel: float
    per_row: dict = field(default_factory=dict, repr=False)  # arrays of T: max_abs, margin, agree, tie, kl

    @property
    def top1_rate(self) -> float:
        """Top-1 agreement over the decided (non-tie) rows; nan when every row is a tie."""
        return self.top1_agree / self.decided if self.decided else float("nan")

    def to_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "per_row"}
        d["top1_rate"] = self.top1_rate
        d["per_row"] = {k: np.asarray(v).tolist() for k, v in self.per_row.items()}
        return d

    def line(self) -> str:
        return (f"max |Δlogit| {self.max_abs:.4g} ({self.max_rel:.3g} of max|logit|), mean |Δlogit| "
                f"{self.mean_abs:.4g}; top-1 agreement {self.top1_agree}/{self.decided} "
                f"({100 * self.top1_rate:.2f} %) with {self.ties} tie(s) counted apart "
                f"(margin < {self.tie_rel:g}·max|logit|; {self.ties_agree} of them agree); "
                f"KL(B‖A) mean {self.kl_mean:.3g}, max {self.kl_max:.3g} nats")


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def top2_margin(logits: np.ndarray) -> np.ndarray:
    """Per row: the largest logit minus the second largest (float64)."""
    part = np.partition(logits.astype(np.float64), -2, axis=-1)
    return part[:, -1] - part[:, -2]


def logit_agreement(a: np.ndarray, b: np.ndarray, *, tie_rel: float = DEFAULT_TIE_REL) -> LogitAgreement:
    """Compare logits ``a`` (T, V) with the baseline ``b`` (T, V) (module docstring)."""
    a = np.asarray(a, np.float32)
    b = np.asarray(b, np.float32)
    if a.shape != b.shape or a.ndim != 2 or a.shape[0] == 0:
        raise ConfigError(f"logit_agreement: need two (T, V) arrays of one shape, got {a.shape} and {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ConfigError("logit_agreement: the logits hold NaN or inf")
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    scale = np.abs(b).max(axis=-1).astype(np.float64)
    margin = top2_margin(b)
    tie = margin < tie_rel * scale
    agree = a.argmax(axis=-1) == b.argmax(axis=-1)
    lb = _log_softmax(b)
    kl = (np.exp(lb) * (lb - _log_softmax(a))).sum(axis=-1)
    return LogitAgreement(
        rows=int(a.shape[0]), max_abs=float(diff.max()), mean_abs=float(diff.mean()),
        max_rel=float(diff.max() / max(float(scale.max()), np.finfo(np.float32).tiny)),
        top1_agree=int((agree & ~tie).sum()), decided=int((~tie).sum()), ties=int(tie.sum()),
        ties_agree=int((agree & tie).sum()), kl_mean=float(kl.mean()), kl_max=float(kl.max()), tie_rel=float(tie_rel),
        per_row={"max_abs": diff.max(axis=-1), "margin": margin, "agree": agree, "tie": tie, "kl": kl},
    )


# ---- per layer -----------------------------------------------------------------------------------


@dataclass
class LayerDelta:
    """How far the residual stream after one layer moved (A against the baseline B)."""

    layer: int
    max_abs: float
    mean_abs: float
    rel: float                   # max|Δh| / max|h_B|

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def layer_deltas(caps_a: dict, caps_b: dict, n_layers: int) -> list[LayerDelta]:
    out = []
    for i in range(n_layers):
        ha = np.asarray(caps_a[f"blk.{i}.ffn_resid"], np.float64)
        hb = np.asarray(caps_b[f"blk.{i}.ffn_resid"], np.float64)
        d = np.abs(ha - hb)
        out.append(LayerDelta(i, float(d.max()), float(d.mean()), float(d.max() / max(np.abs(hb).max(), 1e-30))))
    return out


# ---- the report ----------------------------------------------------------------------------------


@dataclass
class ProfileReport:
    """``numerics`` (A) against ``against`` (B) on one model, backend and text."""

    model: str
    backend: str
    numerics: str
    against: str
    tokens: int
    text: str | None
    layers: list[LayerDelta]
    logits: LogitAgreement
    settings: dict = field(default_factory=dict)   # what each side computed with (backend .numerics)
    text_tokens: int = 0         # tokens of the whole text (more than ``tokens`` when cut at the context)

    def summary(self) -> str:
        return (f"{self.numerics} against {self.against} ({self.backend}, {self.tokens} tokens): "
                f"{self.logits.line()}")

    def to_dict(self) -> dict:
        return {"model": self.model, "backend": self.backend, "numerics": self.numerics, "against": self.against,
                "tokens": self.tokens, "text_tokens": self.text_tokens, "text": self.text, "layers": [x.to_dict() for x in self.layers],
                "logits": self.logits.to_dict(), "settings": self.settings, "summary": self.summary()}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=True)

    def table_rows(self) -> list[tuple[str, str, str, str]]:
        """(where, max|Δ|, mean|Δ|, max|Δ| / max|B|) per layer, then the logits."""
        rows = [(f"layer {x.layer}", f"{x.max_abs:.4g}", f"{x.mean_abs:.4g}", f"{x.rel:.3g}") for x in self.layers]
        g = self.logits
        rows.append(("logits", f"{g.max_abs:.4g}", f"{g.mean_abs:.4g}", f"{g.max_rel:.3g}"))
        return rows

    def to_text(self) -> str:
        out = [f"bitnet-lab verify --numerics {self.numerics} --against {self.against}: {self.model}",
               f"backend {self.backend}; teacher-forced on {self.tokens} tokens"
               + (f" of {self.text!r}" if self.text and len(self.text) <= 60 else "")
               + (f" (the first {self.tokens} of the text's {self.text_tokens}: the model's context)"
                  if self.text_tokens > self.tokens else "")]
        for side in (self.numerics, self.against):
            s = self.settings.get(side, {})
            out.append(f"  {side}: " + ", ".join(f"{k} {v}" for k, v in s.items()
                                                 if k in ("activations", "epilogue", "kv_dtype", "lm_head")))
        out.append("")
        out.append(f"residual stream after each layer, {self.numerics} (A) against {self.against} (B):")
        head = ("where", "max|Δ|", "mean|Δ|", "max|Δ|/max|B|")
        rows = self.table_rows()
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
        for r in [head, *rows]:
            out.append("  " + "  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
        out.append("")
        out.append("logits: " + self.logits.line())
        return "\n".join(out)

    def __str__(self) -> str:
        return self.to_text()

    def _repr_html_(self) -> str:
        th = "".join(f"<th style='text-align:left'>{h}</th>" for h in ("where", "max|Δ|", "mean|Δ|", "max|Δ|/max|B|"))
        trs = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in r) + "</tr>" for r in self.table_rows())
        return (f"<div><b>{html.escape(self.numerics)}</b> against <b>{html.escape(self.against)}</b> — "
                f"{html.escape(self.model)}, {html.escape(self.backend)}, {self.tokens} tokens</div>"
                f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"
                f"<div>{html.escape(self.logits.line())}</div>")


# ---- the entry point -----------------------------------------------------------------------------


def _runner(backend: str, config, tensors, numerics: str, threads: int | None, n_ctx: int):
    if backend == "native":
        from bitnet_lab.engine.native import NativeEngine

        return NativeEngine(config, tensors, threads=threads, numerics=numerics, n_ctx_max=n_ctx)
    if backend == "reference":
        from bitnet_lab.reference import ReferenceModel

        return ReferenceModel(config, tensors, numerics=numerics, n_ctx_max=n_ctx)
    raise ConfigError(f"verify: backend {backend!r} is not 'native' or 'reference'")


def compare_profiles(
    model_or_path: Any,
    *,
    numerics: str = "llama.cpp",
    against: str = "bitnet",
    prompt: str | Sequence[int] | None = None,
    backend: str = "native",
    threads: int | None = None,
    tie_rel: float = DEFAULT_TIE_REL,
    tl_tiling: Any = None,
) -> ProfileReport:
    """Run ``model_or_path`` teacher-forced on ``prompt`` (text, token ids; default
    :data:`DEFAULT_PROMPT`; a text longer than the model's context is cut there) under
    ``numerics`` and under ``against`` on one ``backend``; return the
    per-layer and logit comparison (:class:`ProfileReport`). ``model_or_path``: what
    :func:`bitnet_lab.verify.verify` takes. Raises the project's errors when it cannot run (an
    unknown profile, an empty text, a model the backend cannot run)."""
    from bitnet_lab.backend import numerics_options
    from bitnet_lab.verify.tiers import _open, _prompt_ids

    for name in (numerics, against):
        numerics_options(name)  # an unknown profile: one clear error
    if numerics == against:
        raise ConfigError(f"verify: --numerics and --against are both {numerics!r}: nothing to compare")
    if not (isinstance(tie_rel, (int, float)) and tie_rel >= 0):
        raise ConfigError(f"verify: tie_rel must be a number >= 0, got {tie_rel!r}")
    config, tensors, name, tokenizer_of, closer = _open(model_or_path, tl_tiling)
    try:
        ids = _prompt_ids(prompt, tokenizer_of)
        text_tokens = len(ids)
        ids = ids[: config.context]  # one teacher-forced pass: a longer text is cut at the context
        n_ctx = max(64, -(-len(ids) // 64) * 64)
        results, settings = {}, {}
        for side in (numerics, against):
            runner = _runner(backend, config, tensors, side, threads, n_ctx)
            results[side] = runner.forward(np.asarray(ids, np.int32), runner.new_cache(n_ctx), capture=True)
            settings[side] = {k: str(v) for k, v in runner.numerics.items()}
            del runner
        (la, ca), (lb, cb) = results[numerics], results[against]
        text = DEFAULT_PROMPT if prompt is None else prompt if isinstance(prompt, str) else None
        return ProfileReport(
            model=name, backend=backend, numerics=numerics, against=against, tokens=len(ids), text=text,
            layers=layer_deltas(ca, cb, config.n_layers), logits=logit_agreement(la, lb, tie_rel=tie_rel),
            settings=settings, text_tokens=text_tokens,
        )
    finally:
        if closer is not None:
            closer()


def read_text_file(path: str | os.PathLike) -> str:
    """A text file for ``verify -f``: UTF-8, or one clear error."""
    try:
        return open(path, encoding="utf-8").read()
    except FileNotFoundError:
        raise ConfigError(f"no such file: {path}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
