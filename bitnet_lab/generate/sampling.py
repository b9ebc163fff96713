"""Samplers: small frozen dataclasses that narrow a candidate set and pick one token.

A sampler is a chain of *filters* followed by one *selector*, as in llama.cpp
(`upstream:src/llama-sampling.cpp`, `common/sampling.cpp`). Filters narrow and reshape a
candidate set (token ids + logits); the selector picks one id. `make_sampler()` builds the chain
in llama.cpp's order::

    penalties -> top-k -> top-p -> min-p -> temperature -> draw        (temp > 0)
    penalties -> greedy (argmax)                                        (temp <= 0)

Every sampler is a frozen dataclass: a chain is a *description*, the random state lives in a
``numpy.random.Generator`` owned by the generation loop, so the same chain + the same seed gives
the same tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence, Union

import numpy as np

from bitnet_lab.errors import ConfigError

__all__ = ["Candidates", "RepetitionPenalty", "TopK", "TopP", "MinP", "Temperature", "Greedy", "Draw",
           "SamplerChain", "make_sampler", "log_softmax_at", "top_logprobs"]


# =====================================================================================
# Candidates: the working set a sampler chain narrows
# =====================================================================================


@dataclass
class Candidates:
    """Token ids and their (possibly transformed) logits.

    ``ids``: (n,) int64; ``logits``: (n,) float64 — float64 so that softmax sums and the
    top-p cumulative mass do not drift on a 128k vocabulary. ``sorted``: logits are in
    descending order (ties in ascending id order).
    """

    ids: np.ndarray
    logits: np.ndarray
    sorted: bool = False

    @classmethod
    def from_logits(cls, logits: np.ndarray) -> "Candidates":
        row = np.asarray(logits, dtype=np.float64).reshape(-1)   # (V,)
        return cls(np.arange(row.shape[0], dtype=np.int64), row.copy(), False)

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def sort(self) -> "Candidates":
        """Descending by logit; a stable sort of the negated logits keeps ties in id order."""
        if self.sorted:
            return self
        order = np.argsort(-self.logits, kind="stable")
        return Candidates(self.ids[order], self.logits[order], True)

    def probs(self) -> np.ndarray:
        """Softmax over the candidates (float64, max-subtracted for stability)."""
        return _softmax(self.logits)

    def take(self, index: np.ndarray, *, sorted: bool) -> "Candidates":
        return Candidates(self.ids[index], self.logits[index], sorted)


def _softmax(logits: np.ndarray) -> np.ndarray:
    m = np.max(logits)
    if not np.isfinite(m):
        raise ConfigError(f"cannot sample: the largest candidate logit is {m}")
    e = np.exp(logits - m)
    return e / e.sum()


def log_softmax_at(logits: np.ndarray, index: int) -> float:
    """log p(index) under softmax(logits), computed in float64 (log-sum-exp with max shift)."""
    row = np.asarray(logits, dtype=np.float64)
    m = np.max(row)
    return float(row[index] - m - np.log(np.exp(row - m).sum()))


def top_logprobs(logits: np.ndarray, k: int) -> tuple:
    """The ``k`` most likely ``(id, log p)`` under softmax(logits), best first, ties in id order;
    float64 as `log_softmax_at` (the OpenAI API's ``top_logprobs``). ``()`` for ``k <= 0``."""
    if k <= 0:
        return ()
    row = np.asarray(logits, dtype=np.float64).reshape(-1)
    m = np.max(row)
    lse = m + np.log(np.exp(row - m).sum())
    k = min(int(k), row.shape[0])
    idx = np.argpartition(-row, k - 1)[:k]
    idx = idx[np.lexsort((idx, -row[idx]))]       # by logit descending, then by id
    return tuple((int(i), float(row[i] - lse)) for i in idx)


# =====================================================================================
# Filters (candidate set -> smaller / reshaped candidate set)
# =====================================================================================


@dataclass(frozen=True)
class RepetitionPenalty:
    """Penalise tokens that occurred in the last ``last_n`` tokens of the context.

    llama.cpp's rule (`upstream:src/llama-sampling.cpp`, penalties): a seen token's logit is
    divided by ``penalty`` when positive and multiplied by it when negative, so ``penalty > 1``
    always makes it less likely; then ``frequency * count + presence`` is subtracted. Each
    distinct token is penalised once however often it occurred (except for ``frequency``).
    ``last_n``: 0 disables, -1 means the whole context.
    """

    penalty: float = 1.0
    last_n: int = 64
    frequency: float = 0.0
    presence: float = 0.0

    def __post_init__(self) -> None:
        if not self.penalty > 0:
            raise ConfigError(f"repeat penalty must be > 0, got {self.penalty}")
        if self.last_n < -1:
            raise ConfigError(f"repeat_last_n must be >= -1, got {self.last_n}")

    @property
    def name(self) -> str:
        return f"penalties(repeat={self.penalty:g}, last_n={self.last_n}, freq={self.frequency:g}, present={self.presence:g})"

    def apply(self, cand: Candidates, history: Sequence[int]) -> Candidates:
        if self.last_n == 0 or not history:
            return cand
        window = history if self.last_n == -1 else history[-self.last_n:]
        seen, counts = np.unique(np.asarray(window, dtype=np.int64), return_counts=True)
        # where each candidate's id sits in `seen` (seen is sorted, so searchsorted finds it)
        slot = np.searchsorted(seen, cand.ids)
        slot_c = np.minimum(slot, seen.shape[0] - 1)
        hit = seen[slot_c] == cand.ids                       # (n,) candidate was seen
        if not hit.any():
            return cand
        lg = cand.logits.copy()
        x = lg[hit]
        # divide positive logits, multiply negative ones: both move away from "more likely"
        x = np.where(x <= 0, x * self.penalty, x / self.penalty)
        x = x - counts[slot_c[hit]] * self.frequency - self.presence
        lg[hit] = x
        return Candidates(cand.ids, lg, False)


@dataclass(frozen=True)
class TopK:
    """Keep the ``k`` highest logits (ties broken by lower id). ``k <= 0`` keeps everything."""

    k: int = 40

    @property
    def name(self) -> str:
        return f"top-k({self.k})"

    def apply(self, cand: Candidates, history: Sequence[int]) -> Candidates:
        n = len(cand)
        if self.k <= 0 or self.k >= n:
            return cand
        if cand.sorted:
            return cand.take(np.arange(self.k), sorted=True)
        # argpartition finds the k largest in O(V); ties at the boundary: take every candidate
        # whose logit equals the k-th value in id order, so the result does not depend on
        # argpartition's internal order.
        kth = np.partition(cand.logits, n - self.k)[n - self.k]   # k-th largest logit
        above = np.flatnonzero(cand.logits > kth)
        equal = np.flatnonzero(cand.logits == kth)
        chosen = np.concatenate([above, equal[: self.k - above.shape[0]]])
        sub = cand.take(chosen, sorted=False)
        return sub.sort()


@dataclass(frozen=True)
class TopP:
    """Nucleus: keep the smallest prefix of the probability-sorted candidates whose mass
    reaches ``p`` (at least ``min_keep``). Probabilities are the softmax of the current
    candidates' logits, as in llama.cpp (before temperature). ``p >= 1`` keeps everything."""

    p: float = 0.95
    min_keep: int = 1

    @property
    def name(self) -> str:
        return f"top-p({self.p:g})"

    def apply(self, cand: Candidates, history: Sequence[int]) -> Candidates:
        if self.p >= 1.0 or len(cand) <= 1:
            return cand
        cand = cand.sort()
        cum = np.cumsum(cand.probs())                           # (n,) non-decreasing
        # first index whose running mass is >= p; keep it and everything before it
        last = int(np.searchsorted(cum, self.p, side="left")) + 1
        last = max(last, self.min_keep)
        return cand.take(np.arange(min(last, len(cand))), sorted=True)


@dataclass(frozen=True)
class MinP:
    """Keep tokens whose probability is at least ``p`` times the top token's probability
    (i.e. ``logit >= max_logit + log p``), at least ``min_keep``. ``p <= 0`` keeps everything."""

    p: float = 0.05
    min_keep: int = 1

    @property
    def name(self) -> str:
        return f"min-p({self.p:g})"

    def apply(self, cand: Candidates, history: Sequence[int]) -> Candidates:
        if self.p <= 0.0 or len(cand) <= 1:
            return cand
        # comparing logits avoids a softmax: p_i / p_max = exp(l_i - l_max)
        threshold = np.max(cand.logits) + math.log(self.p)
        keep = cand.logits >= threshold
        if int(keep.sum()) >= self.min_keep:
            return cand.take(np.flatnonzero(keep), sorted=cand.sorted)
        cand = cand.sort()
        return cand.take(np.arange(min(self.min_keep, len(cand))), sorted=True)


@dataclass(frozen=True)
class Temperature:
    """Divide logits by ``temp``. ``temp <= 0`` keeps only the best candidate (greedy)."""

    temp: float = 0.8

    @property
    def name(self) -> str:
        return f"temp({self.temp:g})"

    def apply(self, cand: Candidates, history: Sequence[int]) -> Candidates:
        if self.temp <= 0:
            best = int(np.argmax(cand.logits))
            return cand.take(np.array([best]), sorted=True)
        return Candidates(cand.ids, cand.logits / self.temp, cand.sorted)


# =====================================================================================
# Selectors (candidate set -> one token id)
# =====================================================================================


@dataclass(frozen=True)
class Greedy:
    """Pick the highest logit (first in candidate order on ties: the lowest id)."""

    @property
    def name(self) -> str:
        return "greedy"

    def select(self, cand: Candidates, rng: np.random.Generator) -> int:
        return int(cand.ids[int(np.argmax(cand.logits))])


@dataclass(frozen=True)
class Draw:
    """Draw one candidate from softmax(logits) with the generation's random generator
    (inverse CDF: the first candidate whose running mass reaches ``u * total``)."""

    @property
    def name(self) -> str:
        return "draw"

    def select(self, cand: Candidates, rng: np.random.Generator) -> int:
        if len(cand) == 1:
            return int(cand.ids[0])
        cum = np.cumsum(cand.probs())
        u = rng.random() * cum[-1]
        i = int(np.searchsorted(cum, u, side="left"))
        return int(cand.ids[min(i, len(cand) - 1)])


Filter = Union[RepetitionPenalty, TopK, TopP, MinP, Temperature]
Selector = Union[Greedy, Draw]


@dataclass(frozen=True)
class SamplerChain:
    """Filters applied in order, then one selector. A frozen description: the random state is
    the ``rng`` argument of `sample`."""

    filters: tuple = ()
    selector: Any = field(default_factory=Draw)

    def __post_init__(self) -> None:
        object.__setattr__(self, "filters", tuple(self.filters))
        for f in self.filters:
            if not hasattr(f, "apply"):
                raise ConfigError(f"sampler chain filter {f!r} has no apply(candidates, history)")
        if not hasattr(self.selector, "select"):
            raise ConfigError(f"sampler chain selector {self.selector!r} has no select(candidates, rng)")

    @property
    def name(self) -> str:
        return " -> ".join([f.name for f in self.filters] + [self.selector.name])

    @property
    def is_greedy(self) -> bool:
        return isinstance(self.selector, Greedy)

    def candidates(self, logits: np.ndarray, history: Sequence[int] = ()) -> Candidates:
        """The candidate set after every filter (what the selector chooses from)."""
        cand = Candidates.from_logits(logits)
        for f in self.filters:
            cand = f.apply(cand, history)
            if len(cand) == 0:
                raise ConfigError(f"sampler {f.name} left no candidate")
        return cand

    def sample(self, logits: np.ndarray, history: Sequence[int], rng: np.random.Generator) -> int:
        """One token id from a (vocab,) logits row; ``history`` = the context so far."""
        return self.selector.select(self.candidates(logits, history), rng)


def make_sampler(
    temp: float = 0.8,
    top_k: int = 40,
    top_p: float = 0.95,
    min_p: float = 0.05,
    repeat_penalty: float = 1.0,
    repeat_last_n: int = 64,
    frequency_penalty: float = 0.0,
    presence_penalty: float = 0.0,
) -> SamplerChain:
    """The llama.cpp chain from its flag values (defaults = llama.cpp's defaults).

    Filters that would do nothing (top-k <= 0, top-p >= 1, min-p <= 0, no penalty) are left
    out. ``temp <= 0`` is greedy: penalties still apply, then argmax (top-k/p and min-p
    always keep the best token, so they cannot change the argmax).
    """
    filters: list = []
    if (repeat_penalty != 1.0 or frequency_penalty != 0.0 or presence_penalty != 0.0) and repeat_last_n != 0:
        filters.append(RepetitionPenalty(repeat_penalty, repeat_last_n, frequency_penalty, presence_penalty))
    if temp <= 0:
        return SamplerChain(tuple(filters), Greedy())
    if top_k > 0:
        filters.append(TopK(int(top_k)))
    if top_p < 1.0:
        filters.append(TopP(float(top_p)))
    if min_p > 0.0:
        filters.append(MinP(float(min_p)))
    if temp != 1.0:
        filters.append(Temperature(float(temp)))
    return SamplerChain(tuple(filters), Draw())


