"""Batched generation: many independent sequences decoded together, one pass over the weights.

A `BatchGenerator` holds ``n_slots`` KV caches. Requests are submitted with their own prompt,
sampler, seed, token limit and stop strings; each `step()` runs ONE ``forward_batch`` over every
active request (backend.py: each sequence appends to its own cache, the native engine reads the
weights once for all of them) and samples one token for each request whose prompt is in::

    gen = BatchGenerator(model, n_slots=8, n_ctx=2048)
    a = gen.submit(model.tokenizer.encode("Hello"), max_tokens=32, sampler=make_sampler(temp=0))
    b = gen.submit(ids_b, max_tokens=64, stop=["\\n\\n"], seed=7)
    while gen.active or gen.waiting:
        for ev in gen.step():          # BatchEvent: request, token_id, text, finished, reason ...
            ...
    results = generate_batch(model, ["Hello", "The sky"], n=32, seed=1)   # the whole thing

Continuous batching: a request that finishes (end-of-generation token, stop string, its token
limit, a full cache) or is cancelled frees its slot at once, and the next waiting request takes
it at the next step. Prompts are fed ``prefill_chunk`` tokens per step, so a long prompt shares
the steps with the others' decoding instead of stalling them.

Lossless: a request's tokens (and texts) are those of `generate()` on it alone with the same
sampler and seed — its logits are bit-identical (the engine's batched rows equal its rows alone;
tests/engine/test_forward_batch.py), its sampler sees its own history, its random draws come from its
own generator. The text logic (stop strings, held-back text) is loop.TextStream, generate()'s.
No context shift here: a request whose cache fills up ends with reason "context".
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace
from typing import Any, Iterable, Sequence

import numpy as np

from bitnet_lab.errors import ConfigError
from bitnet_lab.generate.loop import TextStream, _too_long, resolve_seed, stop_ids_for
from bitnet_lab.generate.sampling import SamplerChain, log_softmax_at, make_sampler, top_logprobs

__all__ = ["BatchEvent", "BatchResult", "BatchGenerator", "generate_batch"]

DEFAULT_PREFILL_CHUNK = 64   # prompt tokens a request feeds per step
DEFAULT_SLOTS = 16           # generate_batch: sequences at a time unless n_slots says (one KV cache each)


@dataclass(frozen=True)
class BatchResult:
    """A finished request: everything it generated (the stop string and EOG text excluded)."""

    request: int
    reason: str                # one of loop.DONE_REASONS
    token_ids: tuple
    text: str
    n_prompt: int
    seed: int | None


@dataclass(frozen=True)
class BatchEvent:
    """What one step did for one request: a sampled token (``token_id``, the ``text`` it
    releases — see loop.TokenEvent — and its ``logprob``), and/or the request's end
    (``finished``, ``reason``, ``result``). A cancelled request's last event has no token
    (``token_id`` None, reason "interrupted"). ``top_logprobs``: the request's ``top_logprobs``
    most likely ``(id, logprob)`` at this token (sampling.top_logprobs), when it asked for them."""

    request: int
    token_id: int | None
    text: str
    logprob: float = float("nan")
    eog: bool = False
    finished: bool = False
    reason: str | None = None
    result: BatchResult | None = None
    top_logprobs: tuple = ()


class _Request:
    """One request's state: its prompt, how much of it is in the cache, its sampler and text."""

    def __init__(self, rid: int, ids: list, sampler: SamplerChain, seed: int, max_tokens: int,
                 stops: tuple, eog: frozenset, tokenizer: Any):
        self.rid, self.prompt, self.sampler, self.seed = rid, ids, sampler, seed
        self.rng = np.random.default_rng(seed)
        self.max_tokens, self.eog = max_tokens, eog
        self.text = TextStream(tokenizer, stops) if tokenizer is not None else None
        self.context = list(ids)        # the cache's tokens (what the penalties look at)
        self.fed = 0                    # prompt tokens in the cache
        self.generated: list[int] = []
        self.parts: list[str] = []
        self.slot: int | None = None
        self.next_token: int | None = None   # sampled, to be fed at the next step
        self.top_logprobs = 0                # alternatives reported per token

    def feed(self, prefill_chunk: int) -> list:
        """The tokens this request appends to its cache at the next step."""
        if self.fed < len(self.prompt):
            return self.prompt[self.fed: self.fed + prefill_chunk]
        return [self.next_token]


class BatchGenerator:
    """Continuous batching over ``n_slots`` caches of ``n_ctx`` positions (module docstring).

    ``model_or_backend``: a `bitnet_lab.Model` (its runner, tokenizer and config), or a backend
    with ``forward_batch`` (then ``tokenizer=`` gives texts and stop strings; without one, events
    carry token ids only). ``prefill_chunk``: prompt tokens a request feeds per step.
    ``stop_ids``: the end-of-generation ids (default: the tokenizer's and config's, as generate()).
    """

    def __init__(self, model_or_backend: Any, *, n_slots: int, n_ctx: int | None = None,
                 prefill_chunk: int = DEFAULT_PREFILL_CHUNK, tokenizer: Any = None,
                 stop_ids: Iterable[int] | None = None, reuse_prefix: bool = False):
        runner = getattr(model_or_backend, "runner", model_or_backend)
        if not callable(getattr(runner, "forward_batch", None)):
            raise ConfigError(f"BatchGenerator needs a model or a backend with forward_batch, got "
                              f"{type(model_or_backend).__name__}")
        config = getattr(model_or_backend, "config", None) or getattr(runner, "config", None)
        self.runner = runner
        self.tokenizer = tokenizer if tokenizer is not None else getattr(model_or_backend, "tokenizer", None)
        for name, v in (("n_slots", n_slots), ("prefill_chunk", prefill_chunk)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ConfigError(f"{name} must be a positive integer, got {v!r}")
        if n_ctx is None:
            n_ctx = int(getattr(config, "context", 0) or 0) or 2048
        if isinstance(n_ctx, bool) or not isinstance(n_ctx, (int, np.integer)) or n_ctx < 1:
            raise ConfigError(f"n_ctx (context size per sequence) must be a positive integer, got {n_ctx!r}")
        self.n_slots, self.n_ctx, self.prefill_chunk = int(n_slots), int(n_ctx), int(prefill_chunk)
        self.vocab = int(getattr(runner, "vocab_size", 0) or getattr(config, "vocab", 0) or 0) or None
        if stop_ids is None:
            stop_ids = stop_ids_for(self.tokenizer, config) if self.tokenizer is not None else ()
        self.stop_ids = frozenset(int(t) for t in stop_ids)
        self._caches: list[Any] = [None] * self.n_slots   # made when a slot is first used
        # reuse_prefix: a request takes the free slot whose cache (left by the request before)
        # shares the longest prefix with its prompt, keeps that prefix (Cache.truncate) and feeds
        # only the rest; its logits are the same (every cached row equals its row computed alone)
        self.reuse_prefix = bool(reuse_prefix)
        self._cached: list[list] = [[] for _ in range(self.n_slots)]   # what each free slot's cache holds
        self.reused_tokens = 0                                       # prompt tokens not fed again
        self._last_used = [-1] * self.n_slots                        # when each slot was last freed
        self._n_freed = 0
        self._slots: list[_Request | None] = [None] * self.n_slots
        self._waiting: deque[_Request] = deque()
        self._ended: list[tuple[_Request, str]] = []   # finished outside a forward: (request, reason)
        self._next_id = 0

    # ---- requests ---------------------------------------------------------------------------
    def submit(self, prompt_ids: Sequence[int], *, sampler: SamplerChain | None = None, max_tokens: int = 128,
               stop: Sequence[str] = (), seed: int | None = None, ignore_eos: bool = False,
               top_logprobs: int = 0) -> int:
        """Queue a request; returns its id. ``max_tokens``: tokens to generate (-1: until an
        end-of-generation token or a full cache). ``seed``: None = random (in the result).
        ``top_logprobs``: report the k most likely tokens with each sampled one (BatchEvent).
        Raises ConfigError for an empty prompt, one longer than ``n_ctx``, a bad id."""
        ids = [int(t) for t in prompt_ids]
        if not ids:
            raise ConfigError("the prompt is empty (0 tokens): there is nothing to condition on")
        if len(ids) > self.n_ctx:
            raise _too_long(len(ids), self.n_ctx, 0)
        if self.vocab is not None:
            bad = [t for t in ids if not 0 <= t < self.vocab]
            if bad:
                raise ConfigError(f"prompt token id {bad[0]} is outside the vocabulary [0, {self.vocab})")
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, (int, np.integer)) or max_tokens < -1:
            raise ConfigError(f"max_tokens must be an integer >= -1, got {max_tokens!r}")
        stops = tuple(s for s in stop if s)
        if stops and self.tokenizer is None:
            raise ConfigError("stop strings need a tokenizer (give BatchGenerator a model, or tokenizer=)")
        if isinstance(top_logprobs, bool) or not isinstance(top_logprobs, (int, np.integer)) or top_logprobs < 0:
            raise ConfigError(f"top_logprobs must be an integer >= 0, got {top_logprobs!r}")
        rid = self._next_id
        self._next_id += 1
        r = _Request(rid, ids, make_sampler() if sampler is None else sampler, resolve_seed(seed),
                     int(max_tokens), stops, frozenset() if ignore_eos else self.stop_ids, self.tokenizer)
        r.top_logprobs = int(top_logprobs)
        self._waiting.append(r)
        return rid

    def cancel(self, rid: int) -> bool:
        """Stop request ``rid`` (waiting or active): the next `step` reports it finished with
        reason "interrupted". False when no such request is pending."""
        for r in list(self._waiting):
            if r.rid == rid:
                self._waiting.remove(r)
                self._ended.append((r, "interrupted"))
                return True
        for r in self._slots:
            if r is not None and r.rid == rid:
                self._free(r)
                self._ended.append((r, "interrupted"))
                return True
        return False

    @property
    def active(self) -> list[int]:
        """Ids of the requests holding a slot (prefilling or decoding), in slot order."""
        return [r.rid for r in self._slots if r is not None]

    @property
    def waiting(self) -> list[int]:
        """Ids of the requests waiting for a slot, in the order they will get one."""
        return [r.rid for r in self._waiting]

    # ---- the step ---------------------------------------------------------------------------
    def step(self) -> list[BatchEvent]:
        """Admit waiting requests to free slots, run one forward over every active request,
        sample where a prompt is complete. Returns the step's events (requests that ended without
        a forward — cancelled, or ``max_tokens`` 0 — first, then in slot order); [] when there is
        nothing to do."""
        self._admit()
        events = [self._finish(r, None, r.text.end() if r.text else "", float("nan"), False, why)
                  for r, why in self._ended]
        self._ended.clear()
        active = [r for r in self._slots if r is not None]
        if not active:
            return events
        feeds = [r.feed(self.prefill_chunk) for r in active]
        rows = self.runner.forward_batch(feeds, [self._caches[r.slot] for r in active], last_only=True)
        rows = np.asarray(rows)
        for r, fed, row in zip(active, feeds, rows):
            if r.fed < len(r.prompt):
                r.fed += len(fed)
                if r.fed < len(r.prompt):
                    continue                     # more prompt to feed: no token yet
            else:
                r.context.append(fed[0])
            events.append(self._sample(r, row))
        return events

    def _admit(self) -> None:
        while self._waiting and None in self._slots:
            r = self._waiting.popleft()
            slot, keep = self._pick_slot(r.prompt)
            if self._caches[slot] is None:
                self._caches[slot] = self.runner.new_cache(self.n_ctx)
            if keep:
                self._caches[slot].truncate(keep)
                r.fed = keep
                self.reused_tokens += keep
            else:
                self._caches[slot].reset()
            self._cached[slot] = []
            r.slot = slot
            self._slots[slot] = r
            if r.max_tokens == 0:            # nothing to generate: finish without a forward
                self._free(r)
                self._ended.append((r, "length"))

    def _sample(self, r: _Request, row: np.ndarray) -> BatchEvent:
        """Sample r's next token from its logits row, with its top log-probs when asked for."""
        ev = self._decide(r, row)
        return replace(ev, top_logprobs=top_logprobs(row, r.top_logprobs)) if r.top_logprobs else ev

    def _decide(self, r: _Request, row: np.ndarray) -> BatchEvent:
        """Sample r's next token from its logits row; the same decisions as loop._loop."""
        tok = r.sampler.sample(row, r.context, r.rng)
        logprob = log_softmax_at(row, tok)
        r.generated.append(tok)
        if tok in r.eog:
            return self._finish(r, tok, r.text.end() if r.text else "", logprob, True, "eos")
        if r.text is not None:
            cut = r.text.push(tok)
            if cut is not None:
                return self._finish(r, tok, cut, logprob, False, "stop_string")
        cache = self._caches[r.slot]
        if r.max_tokens >= 0 and len(r.generated) >= r.max_tokens:
            return self._finish(r, tok, r.text.end() if r.text else "", logprob, False, "length")
        if cache.pos >= cache.n_ctx:
            return self._finish(r, tok, r.text.end() if r.text else "", logprob, False, "context")
        text = r.text.release() if r.text else ""
        r.parts.append(text)
        r.next_token = tok
        return BatchEvent(r.rid, tok, text, logprob)

    def _finish(self, r: _Request, tok: int | None, text: str, logprob: float, eog: bool,
                reason: str) -> BatchEvent:
        r.parts.append(text)
        self._free(r)
        result = BatchResult(r.rid, reason, tuple(r.generated), "".join(r.parts), len(r.prompt), r.seed)
        return BatchEvent(r.rid, tok, text, logprob, eog, True, reason, result)

    def _pick_slot(self, prompt: list) -> tuple[int, int]:
        """A free slot for ``prompt`` and how many of its cached tokens to keep. reuse_prefix: the
        slot sharing the longest prefix with it, when that saves at least a prefill chunk
        (less is not worth overwriting a cache a later request may want); else the least
        recently used free slot. At most all but the prompt's last token are kept: its logits
        are needed."""
        free = [s for s in range(self.n_slots) if self._slots[s] is None]
        if not self.reuse_prefix:
            return free[0], 0
        shared = {s: _common_prefix(self._cached[s], prompt) for s in free}
        best = max(free, key=lambda s: (shared[s], -s))
        if shared[best] < self.prefill_chunk:
            best = min(free, key=lambda s: (self._last_used[s], s))
        return best, min(shared[best], len(prompt) - 1)

    def _free(self, r: _Request) -> None:
        if r.slot is not None and self._slots[r.slot] is r:
            self._slots[r.slot] = None
            cache = self._caches[r.slot]
            # the tokens its cache holds: the prompt and the generated tokens fed, up to cache.pos
            self._cached[r.slot] = r.context[: int(cache.pos)] if self.reuse_prefix else []
            self._last_used[r.slot] = self._n_freed
            self._n_freed += 1
        r.slot = None


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def generate_batch(model: Any, prompts: Sequence[str | Sequence[int]], *, n: int = 128,
                   sampler: SamplerChain | Sequence[SamplerChain] | None = None,
                   seed: int | Sequence[int | None] | None = None, stop: Sequence[str] = (),
                   n_ctx: int | None = None, n_slots: int | None = None,
                   prefill_chunk: int = DEFAULT_PREFILL_CHUNK, add_bos: bool | None = None,
                   parse_special: bool = False, ignore_eos: bool = False,
                   stop_ids: Iterable[int] | None = None) -> list[BatchResult]:
    """Generate for every prompt (text, or token ids used as they are), ``n_slots`` (default:
    all of them, at most DEFAULT_SLOTS) at a time; the results in the order of ``prompts``.

    The arguments mean what they mean for `generate()`; ``sampler`` and ``seed`` may also be
    one per prompt. One ``seed`` for all gives every prompt the generator `generate(prompt,
    seed=seed)` would use, so each result equals its generation alone (module docstring).
    """
    prompts = list(prompts)
    if not prompts:
        return []
    tok = model.tokenizer
    ids = [tok.encode(p, add_bos=add_bos, parse_special=parse_special) if isinstance(p, str)
           else [int(t) for t in p] for p in prompts]
    samplers = list(sampler) if isinstance(sampler, (list, tuple)) else [sampler] * len(ids)
    seeds = list(seed) if isinstance(seed, (list, tuple)) else [seed] * len(ids)
    for what, vals in (("samplers", samplers), ("seeds", seeds)):
        if len(vals) != len(ids):
            raise ConfigError(f"{len(vals)} {what} for {len(ids)} prompts")
    gen = BatchGenerator(model, n_slots=n_slots or min(len(ids), DEFAULT_SLOTS), n_ctx=n_ctx, prefill_chunk=prefill_chunk,
                         stop_ids=stop_ids)
    order = [gen.submit(p, sampler=s, max_tokens=n, stop=stop, seed=sd, ignore_eos=ignore_eos)
             for p, s, sd in zip(ids, samplers, seeds)]
    done: dict[int, BatchResult] = {}
    while gen.active or gen.waiting:
        for ev in gen.step():
            if ev.finished:
                done[ev.request] = ev.result
    return [done[rid] for rid in order]
