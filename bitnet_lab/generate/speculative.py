"""Speculative decoding: several tokens out of one pass over the weights, the same tokens out.

Decode reads every weight once per token. A *drafter* guesses the next ``k`` tokens cheaply; the
target model then runs the current token and the ``k`` guesses in ONE forward pass (the batched
GEMM path), which gives the logits of all ``k + 1`` positions; the longest prefix of guesses the
target's sampler agrees with is kept, and the KV cache is rolled back past the first rejected
position (`Cache.truncate`: positions and pages reused, nothing re-encoded)::

    cache: ... c          fed: [c, d1, d2, d3]  ->  rows r0 r1 r2 r3
    sampler(r0) == d1 ✓, sampler(r1) == d2 ✓, sampler(r2) = x != d3 ✗
    keep c d1 d2 (truncate the cache after them), emit d1 d2 x; x is the next current token

Why nothing changes (docs/numerics.md: prefill and decode give the same logits bit for bit): the
row of position ``i`` in a batched pass is the row a single-token step at ``i`` gives, and the
sampler at each verified position sees the history plain decode would (the context, the current
token and the accepted drafts before it), so with greedy sampling the tokens are plain decode's.
With temperature > 0 each position uses the speculative-sampling rule (`accept_or_resample`:
accept a draft ``d`` with probability ``min(1, p(d) / q(d))``, else draw from the normalised
residual ``max(0, p - q)``), which draws every token from exactly the target's distribution p (the
sampler's processed one: penalties, top-k/p, min-p and temperature applied). A deterministic
drafter has a one-hot q: accept with probability p(d), else draw from p without d, renormalised.

Drafters (``propose(context, k, sampler, rng) -> Draft``):

- `PromptLookup` — n-gram matches in the prompt and the text so far (no second model);
- `DraftModel` — any smaller model with the same vocabulary, with its own cache, rolled back too;
- `SelfSpeculative` — the target's own first layers and its lm_head: a draft every model has.

`AdaptiveK` sets how many tokens to draft: more while drafts are accepted, fewer (and, after
repeated misses, none for a while) when they are not; `Speculation` (what the loop holds) also
weighs what a pass of k+1 positions costs on this machine against the tokens it is expected to
yield, and steps plainly when no draft length pays, so a text with nothing to look up costs
little over plain decoding. The loop (`bitnet_lab.generate.loop`) runs `verify_step`.
"""

from __future__ import annotations

import bisect
import dataclasses
import inspect
import os
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from bitnet_lab.errors import ConfigError
from bitnet_lab.generate.sampling import SamplerChain

__all__ = ["Draft", "Drafter", "PromptLookup", "DraftModel", "SelfSpeculative", "AdaptiveK", "Speculation",
           "StepResult", "verify_step", "accept_or_resample", "target_probs", "make_drafter",
           "check_same_vocabulary", "DRAFT_MAX_DEFAULT", "PassCosts", "shared_costs"]

DRAFT_MAX_DEFAULT = 16     # llama.cpp's --draft-max default


# =====================================================================================
# Drafts and drafters
# =====================================================================================


@dataclass(frozen=True)
class Draft:
    """``tokens`` guessed to follow the context; ``q``: (len(tokens), vocab) probabilities they were
    drawn from, or None for a deterministic drafter (q one-hot on each token)."""

    tokens: tuple
    q: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.tokens)


class Drafter(Protocol):
    name: str

    def propose(self, context: Sequence[int], k: int, sampler: SamplerChain,
                rng: np.random.Generator) -> Draft: ...


class PromptLookup:
    """Prompt lookup decoding: the tokens that followed the most recent earlier occurrence of the
    context's last ``n`` tokens (``n`` from ``ngram_max`` down to ``ngram_min``), in the prompt
    and the text generated so far. No model: drafts cost a dictionary look-up.

    The index (n-gram -> where its most recent continuation starts) grows with the context and is
    rebuilt when the context is not an extension of the one it indexed (a context shift, a new
    chat). A draft may run past the end of the context into itself, so a repeating loop of any
    period is drafted in full.
    """

    def __init__(self, ngram_max: int = 3, ngram_min: int = 1):
        ngram_max, ngram_min = int(ngram_max), int(ngram_min)
        if not 1 <= ngram_min <= ngram_max:
            raise ConfigError(f"prompt lookup needs 1 <= ngram_min <= ngram_max, got {ngram_min} and {ngram_max}")
        self.ngram_max, self.ngram_min = ngram_max, ngram_min
        self._seq: list[int] = []
        self._index: dict[tuple, int] = {}

    @property
    def name(self) -> str:
        return f"lookup(n={self.ngram_min}..{self.ngram_max})"

    def _sync(self, context: Sequence[int]) -> None:
        m = len(self._seq)
        if len(context) < m or list(context[:m]) != self._seq:
            self._seq, self._index, m = [], {}, 0
        seq, index = self._seq, self._index
        for t in context[m:]:
            seq.append(int(t))
            end = len(seq) - 1             # the n-grams ending just before the new token continue at it
            for n in range(self.ngram_min, min(self.ngram_max, end) + 1):
                index[tuple(seq[end - n:end])] = end

    def propose(self, context: Sequence[int], k: int, sampler: SamplerChain = None,
                rng: np.random.Generator = None) -> Draft:
        self._sync(context)
        seq = self._seq
        for n in range(min(self.ngram_max, len(seq)), self.ngram_min - 1, -1):
            start = self._index.get(tuple(seq[len(seq) - n:]))
            if start is not None:
                out: list[int] = []
                for j in range(int(k)):    # may read its own drafts: seq + out
                    i = start + j
                    out.append(seq[i] if i < len(seq) else out[i - len(seq)])
                return Draft(tuple(out))
        return Draft(())


def check_same_vocabulary(draft_model: Any, target_model: Any) -> None:
    """ConfigError naming the first difference when two models do not share one vocabulary (a
    draft's token ids must mean the target's tokens)."""
    dc, tc = getattr(draft_model, "config", None), getattr(target_model, "config", None)
    dv, tv = getattr(dc, "vocab", None), getattr(tc, "vocab", None)
    if dv != tv:
        raise ConfigError(f"the draft model's vocabulary has {dv} tokens, the target's {tv}: "
                          "a draft model must share the target's vocabulary")
    dt, tt = getattr(draft_model, "tokenizer", None), getattr(target_model, "tokenizer", None)
    if dt is None or tt is None or not hasattr(dt, "id_to_token"):
        return
    if dt.vocab_size != tt.vocab_size:
        raise ConfigError(f"the draft model's tokenizer has {dt.vocab_size} tokens, the target's "
                          f"{tt.vocab_size}: a draft model must share the target's vocabulary")
    for i in range(dt.vocab_size):
        a, b = dt.id_to_token(i), tt.id_to_token(i)
        if a != b:
            raise ConfigError(f"the draft model's token {i} is {a!r}, the target's {b!r}: "
                              "a draft model must share the target's vocabulary")


class DraftModel:
    """Drafts with a second (smaller) backend over the same vocabulary, with a cache of its own.

    ``runner``: the forward interface (a `bitnet_lab.Model`'s ``.runner``, or the Model itself).
    Each proposal rolls the draft's cache back to the longest prefix it shares with the context,
    feeds the rest, then drafts ``k`` tokens one step at a time: the best candidate of the target's
    sampler chain applied to the draft's logits (deterministic, q one-hot) or, with
    ``sample=True`` and a sampling chain, a draw from that processed distribution (q recorded).
    ``n_ctx``: the draft cache's size (default: the backend's ``n_ctx_max``).
    """

    def __init__(self, runner: Any, *, n_ctx: int | None = None, sample: bool = False, name: str | None = None):
        self.runner = getattr(runner, "runner", runner)
        if not hasattr(self.runner, "forward") or not hasattr(self.runner, "new_cache"):
            raise ConfigError(f"a draft model needs the forward interface (new_cache, forward), got {runner!r}")
        self.n_ctx = n_ctx
        self.sample = bool(sample)
        self._name = name or f"draft({getattr(getattr(self.runner, 'config', None), 'name', '') or 'model'})"
        self._cache: Any = None
        self._tokens: list[int] = []      # what the draft cache holds
        self.n_draft_tokens = 0          # draft forward passes so far (the drafter's cost)

    @property
    def name(self) -> str:
        return self._name

    def _ensure_cache(self, need: int) -> Any:
        if self._cache is None:
            n = self.n_ctx or int(getattr(self.runner, "n_ctx_max", 0) or 0) or need
            self._cache = self.runner.new_cache(max(int(n), need))
            if not callable(getattr(self._cache, "truncate", None)):
                raise ConfigError("a draft model's cache must roll back (Cache.truncate)")
        return self._cache

    def propose(self, context: Sequence[int], k: int, sampler: SamplerChain,
                rng: np.random.Generator) -> Draft:
        context = [int(t) for t in context]
        if not context or k <= 0:
            return Draft(())
        cache = self._ensure_cache(len(context) + 1)
        k = min(int(k), cache.n_ctx - len(context) + 1)
        if k <= 0:
            return Draft(())
        same = 0
        limit = min(len(self._tokens), len(context) - 1, int(cache.pos))   # feed >= 1 token for logits
        while same < limit and self._tokens[same] == context[same]:
            same += 1
        cache.truncate(same)
        row = np.asarray(self.runner.forward(context[same:], cache, last_only=True))[-1]
        self.n_draft_tokens += 1
        history = list(context)
        tokens: list[int] = []
        qs: list[np.ndarray] = []
        drawn = self.sample and not sampler.is_greedy
        for j in range(k):
            cand = sampler.candidates(row, history)
            if drawn:
                q = np.zeros(row.shape[0], np.float64)
                q[cand.ids] = cand.probs()
                d = _draw(q, rng)
                qs.append(q)
            else:
                d = int(cand.ids[int(np.argmax(cand.logits))])
            tokens.append(d)
            history.append(d)
            if j + 1 < k:
                row = np.asarray(self.runner.forward([d], cache))[-1]
                self.n_draft_tokens += 1
        self._tokens = context + tokens[:-1]
        return Draft(tuple(tokens), np.stack(qs) if drawn else None)


class SelfSpeculative(DraftModel):
    """Self-speculation: the target's first ``n_layers`` layers and its own output norm and lm_head
    as the draft. The second backend is built over the same tensor objects (memory-mapped: nothing
    is read twice from disk; the native engine re-orders the kept layers' I2_S rows as it does at
    load) with the config's layer count lowered."""

    def __init__(self, model: Any, n_layers: int, **kwargs: Any):
        config, tensors = getattr(model, "config", None), getattr(model, "tensors", None)
        if config is None or tensors is None:
            raise ConfigError("self-speculation needs a loaded model (its config and tensors)")
        n_layers = int(n_layers)
        if not 1 <= n_layers < config.n_layers:
            raise ConfigError(f"self-speculation uses the first N layers of the target's {config.n_layers}: "
                              f"N must be in 1..{config.n_layers - 1}, got {n_layers}")
        short = dataclasses.replace(config, n_layers=n_layers)
        kept = {name: t for name, t in tensors.items()
                if not name.startswith("blk.") or int(name.split(".")[1]) < n_layers}
        target = model.runner
        backend = type(target)                      # the same backend class as the target's
        options = dict(getattr(model, "backend_options", {}) or {})
        if "threads" in inspect.signature(backend).parameters and hasattr(target, "threads"):
            options["threads"] = target.threads
        super().__init__(backend(short, kept, **options), name=f"self({n_layers}/{config.n_layers} layers)", **kwargs)
        self.n_layers = n_layers


def make_drafter(spec: Any, target: Any = None, *, load: Callable[[str], Any] | None = None) -> Any:
    """A drafter from ``spec``: a drafter object (returned as it is); ``"lookup"`` / ``"lookup:N"``
    (prompt lookup, n-grams of N down to 1 tokens; default 3); ``"self:N"`` (the target's first N
    layers); or a path to a draft model, loaded with ``load(path)`` (``bitnet_lab.load`` with the
    target's backend and threads, as `bitnet_lab.Model.generate` passes it) and checked to share the
    target's vocabulary."""
    if spec is None or hasattr(spec, "propose"):
        return spec
    if not isinstance(spec, (str, os.PathLike)):
        raise ConfigError(f"draft= takes a drafter, 'lookup:N', 'self:N' or a model path, got {spec!r}")
    text = os.fspath(spec)
    kind, _, arg = text.partition(":")
    if kind in ("lookup", "self") and not os.path.exists(text):
        try:
            n = int(arg) if arg else (3 if kind == "lookup" else None)
        except ValueError:
            n = None
        if n is None or n < 1:
            raise ConfigError(f"draft {text!r}: expected {kind}:N with N a positive integer")
        if kind == "lookup":
            return PromptLookup(ngram_max=n)
        return SelfSpeculative(target, n)
    if load is None:
        raise ConfigError(f"draft {text!r}: a draft model path needs a loader; pass draft= to "
                          "bitnet_lab.Model.generate or a DraftModel")
    if not os.path.exists(text):
        raise ConfigError(f"draft model {text!r}: no such file")
    draft_model = load(text)
    if target is not None:
        check_same_vocabulary(draft_model, target)
    return DraftModel(draft_model, name=f"draft({os.path.basename(text)})")


# =====================================================================================
# How many tokens to draft
# =====================================================================================


class AdaptiveK:
    """The draft length: starts at ``k_start``; doubles (up to ``k_max``) after a pass whose drafts
    were all accepted; falls to one more than the accepted count after a rejection (at least
    ``k_min``). After ``patience`` passes in a row with nothing accepted, drafting pauses for
    1, 2, 4, ... (at most ``max_pause``) tokens, so a text with nothing to look up runs at plain
    decode's pace; any acceptance ends the pauses."""

    def __init__(self, k_max: int = DRAFT_MAX_DEFAULT, k_min: int = 1, k_start: int | None = None,
                 patience: int = 2, max_pause: int = 64):
        k_max, k_min = int(k_max), int(k_min)
        if k_max < 1 or not 1 <= k_min <= k_max:
            raise ConfigError(f"draft lengths need 1 <= draft-min <= draft-max, got {k_min} and {k_max}")
        self.k_max, self.k_min = k_max, k_min
        self.k = min(k_max, max(k_min, int(k_start) if k_start is not None else 4))
        self.patience, self.max_pause = int(patience), int(max_pause)
        self.misses = 0
        self.pause = 0                   # steps left without drafting
        self._next_pause = 1

    def next_k(self) -> int:
        """Tokens to draft at this step (0 = step plainly)."""
        if self.pause > 0:
            self.pause -= 1
            return 0
        return self.k

    def update(self, n_drafted: int, n_accepted: int) -> None:
        if n_drafted <= 0:
            return
        if n_accepted >= n_drafted:
            self.k = min(self.k_max, max(self.k_min, 2 * n_drafted))
        else:
            self.k = min(self.k_max, max(self.k_min, n_accepted + 1))
        if n_accepted == 0:
            self.misses += 1
            if self.misses >= self.patience:
                self.pause = self._next_pause
                self._next_pause = min(self.max_pause, 2 * self._next_pause)
        else:
            self.misses, self._next_pause = 0, 1


# =====================================================================================
# Verification
# =====================================================================================


def _draw(p: np.ndarray, rng: np.random.Generator) -> int:
    """One id from the probability vector ``p`` (inverse CDF, as sampling.Draw)."""
    cum = np.cumsum(p)
    i = int(np.searchsorted(cum, rng.random() * cum[-1], side="right"))
    return min(i, p.shape[0] - 1)


def target_probs(sampler: SamplerChain, row: np.ndarray, history: Sequence[int]) -> np.ndarray:
    """The target's processed next-token distribution p over the whole vocabulary: what the
    sampler chain draws from (penalties, top-k/p, min-p, temperature applied), zero elsewhere."""
    cand = sampler.candidates(row, history)
    p = np.zeros(np.asarray(row).shape[-1], np.float64)
    p[cand.ids] = cand.probs()
    return p


def accept_or_resample(p: np.ndarray, q: np.ndarray | None, d: int, rng: np.random.Generator) -> tuple[int, bool]:
    """The speculative-sampling rule at one position: ``(d, True)`` with probability
    ``min(1, p[d] / q[d])``, else ``(x, False)`` with x drawn from ``max(0, p - q)`` normalised.
    ``q`` None = one-hot on ``d``. The token returned is distributed exactly as p."""
    d = int(d)
    qd = 1.0 if q is None else float(q[d])
    if qd <= 0.0:
        raise ConfigError(f"a drafter proposed token {d} with draft probability {qd}")
    if rng.random() * qd < p[d]:          # u < p/q without dividing
        return d, True
    if q is None:
        residual = p.copy()
        residual[d] = 0.0
    else:
        residual = np.maximum(p - q, 0.0)
    if residual.sum() <= 0.0:             # p <= q everywhere means p == q: rejection had probability 0
        residual = p
    return _draw(residual, rng), False


@dataclass
class StepResult:
    """One speculative step: ``fed`` = [current token] + drafts went through the target in one pass
    starting at cache position ``pos0``; ``rows`` their logits; ``accepted`` the drafts kept;
    ``correction``: the token the target drew where it rejected a draft (None when every draft was
    accepted: the next token is then drawn from ``rows[len(accepted)]`` as usual)."""

    pos0: int
    fed: list
    drafts: tuple
    rows: np.ndarray
    accepted: list
    correction: int | None
    draft_ms: float = 0.0
    verify_ms: float = 0.0


def verify_step(runner: Any, cache: Any, context: list, current: int, draft: Draft, sampler: SamplerChain,
                rng: np.random.Generator) -> StepResult:
    """Feed ``current`` and ``draft.tokens`` in one forward pass, accept the longest prefix the
    target agrees with (greedy: equal to its argmax; sampling: `accept_or_resample`) and roll the
    cache back to just after the accepted drafts. ``context``: the tokens before ``current`` (the
    sampler's history); it is not changed."""
    pos0 = int(cache.pos)
    fed = [int(current)] + [int(t) for t in draft.tokens]
    rows = np.asarray(runner.forward(fed, cache))
    history = list(context) + [int(current)]
    accepted: list[int] = []
    correction = None
    for j, d in enumerate(draft.tokens):
        if sampler.is_greedy:
            t = sampler.sample(rows[j], history, rng)
            ok = t == d
        else:
            q = None if draft.q is None else draft.q[j]
            t, ok = accept_or_resample(target_probs(sampler, rows[j], history), q, d, rng)
        if not ok:
            correction = int(t)
            break
        accepted.append(int(d))
        history.append(int(d))
    cache.truncate(pos0 + 1 + len(accepted))
    return StepResult(pos0, fed, tuple(draft.tokens), rows, accepted, correction)


@dataclass
class PassCosts:
    """What a plain decode step and a verification pass of each width cost on one runner: moving
    averages in ms, the cost model's timings. They depend on the machine, the model and the
    threads, not on the text, so every `Speculation` of one runner shares one (`shared_costs`):
    a new generation (a chat turn, a request, the next prompt of a workload) starts from what the
    earlier ones measured instead of paying again for the passes that teach the costs."""

    step_ms: float | None = None
    pass_ms: dict[int, float] = field(default_factory=dict)  # width (k + 1) -> ms
    widths: list[int] = field(default_factory=list)           # its keys, sorted (cost() runs k times a step)


_SHARED_COSTS: "weakref.WeakKeyDictionary[Any, PassCosts]" = weakref.WeakKeyDictionary()


def shared_costs(runner: Any) -> PassCosts | None:
    """The `PassCosts` of ``runner`` (made on first use, dropped with the runner); None for a
    runner that cannot be weakly referenced (nothing is shared then)."""
    try:
        return _SHARED_COSTS.setdefault(runner, PassCosts())
    except TypeError:
        return None


class Speculation:
    """A drafter and its draft-length controller, as the generation loop uses them, with counters:
    ``n_pass`` verification passes, ``n_draft`` tokens drafted into them, ``n_accept`` accepted.

    ``cost_aware``: also weigh what a pass costs on this machine. The loop reports the time of
    each plain step and of each speculative pass (drafting included); with the acceptance rate a
    (recent passes weigh more) a pass of k drafts yields ``(1 - a^(k+1)) / (1 - a)`` tokens for
    ``pass_ms(k+1) / step_ms`` steps' time, and only the k that yields more than it costs is
    drafted (none when no k does: the step runs plainly, and every ``probe_every`` such steps one
    draft is tried to keep the estimates current). Widths never timed are estimated from the
    marginal cost of the widest timed ones. Only timing decides it, never a token: the output is
    the same either way.
    """

    def __init__(self, drafter: Any, *, draft_max: int = DRAFT_MAX_DEFAULT, draft_min: int = 1,
                 adaptive: bool = True, cost_aware: bool = True, probe_every: int = 32):
        if not hasattr(drafter, "propose"):
            raise ConfigError(f"a drafter needs propose(context, k, sampler, rng), got {drafter!r}")
        self.drafter = drafter
        self.draft_min = max(1, int(draft_min))
        self.control = AdaptiveK(int(draft_max), min(self.draft_min, max(1, int(draft_max))),
                                 k_start=None if adaptive else int(draft_max))
        self.adaptive = bool(adaptive)
        self.cost_aware = bool(cost_aware)
        self.probe_every = max(1, int(probe_every))
        self.n_pass = self.n_draft = self.n_accept = 0
        self.n_declined = 0                # steps run plainly because no draft length paid
        self.costs = PassCosts()                            # the timings (share_costs: the runner's)
        self._acc, self._rej = 1.0, 1.0                    # decayed counts: acceptances, rejections
        self._since_probe = 0
        self._declined: tuple[int, int] | None = None      # (k, n_pass) of the last "no k pays"

    # ---- timing -----------------------------------------------------------------------------
    @staticmethod
    def _average(old: float | None, new: float) -> float:
        return new if old is None else 0.8 * old + 0.2 * new

    def share_costs(self, costs: PassCosts | None) -> None:
        """Time passes into ``costs`` (the runner's `shared_costs`, which earlier generations on
        it filled) — unless this one has timed something of its own already."""
        if costs is not None and self.costs.step_ms is None and not self.costs.pass_ms:
            self.costs = costs

    def note_step(self, ms: float) -> None:
        """The time of one plain decode step (the loop's, for the cost model)."""
        self.costs.step_ms = self._average(self.costs.step_ms, float(ms))

    def cost(self, width: int) -> float | None:
        """A pass over ``width`` positions in plain steps' time: measured, else extrapolated from
        the widest measured passes (None before anything was measured)."""
        c = self.costs
        if not c.step_ms or not c.pass_ms:
            return None
        if width in c.pass_ms:
            return c.pass_ms[width] / c.step_ms
        widths = c.widths
        if len(widths) != len(c.pass_ms):            # a width timed for the first time (keys only grow)
            widths = c.widths = sorted(c.pass_ms)
        known = widths[: bisect.bisect_left(widths, width)] or widths[:1]
        w1 = known[-1]
        c1 = c.pass_ms[w1] / c.step_ms
        w0, c0 = (known[-2], c.pass_ms[known[-2]] / c.step_ms) if len(known) > 1 else (1, 1.0)
        slope = max((c1 - c0) / (w1 - w0), 0.0) if w1 != w0 else c1 / w1
        return c1 + (width - w1) * slope

    def acceptance(self) -> float:
        """The per-token acceptance estimate (recent passes weigh more)."""
        return self._acc / (self._acc + self._rej)

    def _paying_k(self, k: int) -> int:
        if not self.cost_aware or self.cost(2) is None:
            return k                      # nothing timed yet: draft, and learn what it costs
        best_k = 0
        if self._declined != (k, self.n_pass):
            # weigh every k (the estimates move only with a pass, so a "none pays" stands until the
            # next one: the plain steps in between pay nothing for the cost model)
            a = min(self.acceptance(), 0.999)
            best = 1.0
            for j in range(1, k + 1):
                gain = (1.0 - a ** (j + 1)) / (1.0 - a) / max(self.cost(j + 1), 1e-9)
                if gain > best:
                    best_k, best = j, gain
            self._declined = None if best_k else (k, self.n_pass)
        if best_k:
            self._since_probe = 0
            return best_k
        self._since_probe += 1
        if self._since_probe >= self.probe_every:
            self._since_probe = 0
            return 1
        self.n_declined += 1
        return 0

    # ---- the loop's calls ----------------------------------------------------------------------
    def propose(self, context: list, room: int, sampler: SamplerChain, rng: np.random.Generator) -> Draft:
        """Drafts for the position after ``context`` (at most ``room``: what the cache can still take),
        or an empty draft to step plainly (nothing found, fewer than draft-min, a pause, or no
        draft length that pays)."""
        k = min(self.control.next_k() if self.adaptive else self.control.k_max, int(room))
        if k < self.draft_min:
            return Draft(())
        k = self._paying_k(k)
        if k < self.draft_min:
            return Draft(())
        draft = self.drafter.propose(context, k, sampler, rng)
        if len(draft) > k:
            draft = Draft(tuple(draft.tokens[:k]), None if draft.q is None else draft.q[:k])
        return draft if len(draft) >= self.draft_min else Draft(())

    def record(self, step: StepResult, ms: float | None = None) -> None:
        """One verification pass: its counts, and its time (drafting included) when given."""
        self.n_pass += 1
        self.n_draft += len(step.drafts)
        self.n_accept += len(step.accepted)
        self.control.update(len(step.drafts), len(step.accepted))
        self._acc = 0.9 * self._acc + len(step.accepted)
        self._rej = 0.9 * self._rej + (0 if step.correction is None else 1)
        if ms is not None:
            w = len(step.fed)
            self.costs.pass_ms[w] = self._average(self.costs.pass_ms.get(w), float(ms))
