"""Generation: a `generate()` that yields events.

`generate(model, prompt, ...)` yields one `TokenEvent` per sampled token and a final `DoneEvent`;
it never prints. It needs only the forward interface every backend implements
(``runner.new_cache(n_ctx)``, ``runner.forward(ids, cache) -> (T, vocab) float32``) and the
tokenizer's streaming decoder, so the reference and the native engine are interchangeable.
`stream_tokens()` is the loop itself, on an existing cache (the chat session uses it to continue
a conversation without re-reading it).

Context shift (``ctx_shift=True``; llama.cpp's ``--context-shift``, ``--keep``): when the cache
is full and a token (or a chat turn) must still be fed, the first ``n_keep`` cached tokens stay
and the oldest half of the rest is dropped (`context_shift`), as llama.cpp does. Both backends
store K after RoPE, so the kept tokens after the gap would need their keys re-rotated to their
new positions; we re-encode them from their ids instead (one forward pass over at most
``n_ctx - n_keep`` tokens: simple, and exactly the cache a fresh run over the kept tokens
builds). The first ``n_keep`` positions do not move: their cache entries are kept (the cache is
truncated to them) through ``Cache.truncate``, else everything kept is re-encoded.
Tokens sampled before the first shift are the same as without it.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Sequence, Union

import numpy as np

from bitnet_lab.errors import ConfigError
from bitnet_lab.generate.sampling import SamplerChain, log_softmax_at, make_sampler
from bitnet_lab.generate.speculative import DRAFT_MAX_DEFAULT, Speculation, make_drafter, shared_costs, verify_step

__all__ = ["TokenEvent", "DoneEvent", "Event", "generate", "stream_tokens", "stop_ids_for", "resolve_seed",
           "DONE_REASONS", "context_shift", "keep_count", "TextStream"]


# =====================================================================================
# Events
# =====================================================================================

DONE_REASONS = ("eos", "stop_string", "length", "context", "interrupted")


@dataclass(frozen=True)
class TokenEvent:
    """One sampled token.

    ``text``: the text released at this token — possibly ``""`` (an incomplete UTF-8
    character, or text held back because it could be the start of a stop string) and
    possibly more than this token's piece (held-back text released later). Concatenating
    the ``text`` of all events gives the output. ``logprob``: natural log-probability of
    ``token_id`` under the model's raw distribution (softmax of the unmodified logits, before
    any sampler). ``t_ms``: wall time spent producing this token: the forward pass that gave
    its logits (for the first token, the whole prompt) plus sampling. ``eog``: the token is
    an end-of-generation token; its own text is never emitted. ``drafted``: the token was
    proposed by a drafter and accepted by the target's verification (speculative decoding,
    `bitnet_lab.generate.speculative`); ``n_pass``: the forward pass over generated tokens whose
    logits gave it (0: the prompt's), so tokens with one ``n_pass`` came out of one pass.
    """

    token_id: int
    text: str
    logprob: float
    t_ms: float
    eog: bool = False
    drafted: bool = False
    n_pass: int = 0


@dataclass(frozen=True)
class DoneEvent:
    """End of a generation, with llama.cpp-style counters.

    ``reason``: "eos" (an end-of-generation token), "stop_string", "length" (``n`` tokens),
    "context" (the KV cache is full), "interrupted" (``should_stop()`` returned true).
    ``prompt_ms``: the forward pass over the ``n_prompt`` new prompt tokens. ``eval_ms``:
    the ``n_eval`` one-token forward passes over generated tokens (the last sampled token is
    never fed, so ``n_eval <= n_generated - 1``). ``sample_ms``: time in the sampler.
    ``generated_text`` / ``token_ids``: everything generated (the stop string and EOG text
    excluded). ``text`` is always ``""``: the TokenEvents already released every character, so
    ``for ev in generate(...): print(ev.text, end="")`` prints the generation once.

    Speculative decoding (``draft=``): ``n_eval`` counts the generated tokens fed and kept (so
    ``eval_tokens_per_s`` is the effective decode rate) and ``eval_ms`` includes drafting;
    ``n_pass`` is the forward passes over generated tokens (plain decode: ``n_eval``), ``n_draft``
    the drafted tokens sent to verification and ``n_accept`` those the target accepted.
    """

    reason: str
    n_prompt: int
    n_generated: int
    prompt_ms: float
    eval_ms: float
    sample_ms: float = 0.0
    n_eval: int = 0
    seed: int | None = None
    generated_text: str = ""
    token_ids: tuple = ()
    n_pass: int = 0
    n_draft: int = 0
    n_accept: int = 0
    drafter: str = ""

    @property
    def acceptance_rate(self) -> float:
        """Accepted drafted tokens / drafted tokens (nan without drafts)."""
        return self.n_accept / self.n_draft if self.n_draft else float("nan")

    @property
    def tokens_per_pass(self) -> float:
        """Generated tokens fed per forward pass (1.0 for plain decode)."""
        return self.n_eval / self.n_pass if self.n_pass else float("nan")

    @property
    def text(self) -> str:
        """No new text at the end (see ``generated_text`` for the whole generation)."""
        return ""

    @property
    def prompt_tokens_per_s(self) -> float:
        return _rate(self.n_prompt, self.prompt_ms)

    @property
    def eval_tokens_per_s(self) -> float:
        return _rate(self.n_eval, self.eval_ms)

    @property
    def prompt_ms_per_token(self) -> float:
        return self.prompt_ms / self.n_prompt if self.n_prompt else float("nan")

    @property
    def eval_ms_per_token(self) -> float:
        return self.eval_ms / self.n_eval if self.n_eval else float("nan")

    @property
    def total_ms(self) -> float:
        return self.prompt_ms + self.eval_ms + self.sample_ms


def _rate(n: int, ms: float) -> float:
    return 1000.0 * n / ms if ms > 0 and n else float("nan")


Event = Union[TokenEvent, DoneEvent]


# =====================================================================================
# Stop strings: never emit a stop string, hold back what could start one
# =====================================================================================


def _find_stop(text: str, stops: Sequence[str]) -> int:
    """Index of the earliest occurrence of any stop string in ``text``, or -1."""
    best = -1
    for s in stops:
        i = text.find(s)
        if i >= 0 and (best < 0 or i < best):
            best = i
    return best


def _holdback(text: str, stops: Sequence[str]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of some stop string."""
    longest = 0
    for s in stops:
        for L in range(min(len(s) - 1, len(text)), longest, -1):
            if text.endswith(s[:L]):
                longest = L
                break
    return longest


class TextStream:
    """A generation's text, released as it becomes safe: decoded token by token (an incomplete
    UTF-8 character waits for its next byte), never a stop string, and text that could begin one
    held back until it cannot. Shared by `generate` and the batched generator (generate/batch.py).
    """

    def __init__(self, tokenizer: Any, stops: Sequence[str] = ()):
        self._decoder = tokenizer.stream()
        self.stops = tuple(s for s in stops if s)
        self._pending = ""                     # decoded text not yet released

    def push(self, tok: int) -> str | None:
        """Add a (non-EOG) token: the text before the stop string it completes (the generation
        ends there; nothing after it is ever released), or None."""
        self._pending += self._decoder.push(tok)
        cut = _find_stop(self._pending, self.stops) if self.stops else -1
        return self._pending[:cut] if cut >= 0 else None

    def release(self) -> str:
        """The pending text that can no longer be the start of a stop string."""
        keep = _holdback(self._pending, self.stops) if self.stops else 0
        out, self._pending = self._pending[: len(self._pending) - keep], self._pending[len(self._pending) - keep:]
        return out

    def end(self) -> str:
        """Everything still pending (the generation stops), cut at a stop string."""
        out, self._pending = _cut_at_stop(self._pending + self._decoder.flush(), self.stops), ""
        return out


# =====================================================================================
# The loop
# =====================================================================================


def stop_ids_for(tokenizer: Any, config: Any = None) -> frozenset:
    """End-of-generation ids: the tokenizer's EOG set plus the config's EOS/EOT (2B-4T: 128001
    and 128009, docs/formats.md#85-chat-templates)."""
    ids: set[int] = set()
    for v in (getattr(tokenizer, "eog_ids", None) or ()):
        ids.add(int(v))
    for obj in (tokenizer, config):
        for attr in ("eos_id", "eot_id"):
            v = getattr(obj, attr, None) if obj is not None else None
            if v is not None and int(v) >= 0:
                ids.add(int(v))
    return frozenset(ids)


def _too_long(n_tokens: int, n_ctx: int, pos: int) -> ConfigError:
    held = f" ({pos} already in the cache, {n_ctx - pos} free)" if pos else ""
    return ConfigError(
        f"the prompt has {n_tokens} tokens but the context holds {n_ctx}{held}; "
        f"shorten the prompt or raise the context size (-c)"
    )


def resolve_seed(seed: int | None) -> int:
    """The seed to use: ``seed`` itself, or a fresh random 32-bit one for None / negative."""
    if seed is None or int(seed) < 0:
        return secrets.randbits(32)   # llama.cpp: seed -1 / unset = a fresh random seed
    return int(seed)


# =====================================================================================
# Context shift
# =====================================================================================


def context_shift(n_past: int, n_new: int, n_ctx: int, n_keep: int) -> int:
    """How many cached tokens to drop so that ``n_new`` more fit: 0 when they fit already.

    llama.cpp's rule (``n_discard = (n_past - n_keep) / 2``): the first ``n_keep`` tokens stay,
    and the oldest half of the rest (after them) goes — more when the ``n_new`` tokens need it.
    The kept cache is ``tokens[:n_keep] + tokens[n_keep + n_discard:]``. ConfigError when even
    dropping everything after the first ``n_keep`` leaves no room for ``n_new`` tokens.
    """
    n_past, n_new, n_ctx = int(n_past), int(n_new), int(n_ctx)
    if n_past + n_new <= n_ctx:
        return 0
    n_keep = max(0, min(int(n_keep), n_past))
    n_left = n_past - n_keep
    need = n_past + n_new - n_ctx
    if need > n_left:
        raise ConfigError(
            f"{n_new} new tokens do not fit in the context of {n_ctx} even after a context shift "
            f"(the first {n_keep} tokens are kept, leaving {n_ctx - n_keep}); shorten the input"
        )
    return max(n_left // 2, need)


def keep_count(ids: Sequence[int], n_keep: int, bos_id: int | None) -> int:
    """llama.cpp's ``--keep``: the tokens of the prompt ``ids`` a context shift keeps. ``n_keep``
    counts after the BOS (a leading BOS is always kept); -1 (any negative) = the whole prompt."""
    n = len(ids)
    if n_keep < 0:
        return n
    bos = 1 if (bos_id is not None and n and int(ids[0]) == int(bos_id)) else 0
    return min(n, int(n_keep) + bos)


def _truncate(cache: Any, n: int) -> int:
    """Forget every cached token after the first ``n``; returns how many stay: ``n`` through the
    contract's ``Cache.truncate`` (both backends keep those entries exactly), or 0 for a cache
    without it, which is emptied so everything kept is re-encoded."""
    cut = getattr(cache, "truncate", None)
    if callable(cut):
        cut(n)
        return n
    cache.reset()
    return 0


def stream_tokens(
    runner: Any,
    tokenizer: Any,
    cache: Any,
    new_ids: Sequence[int],
    *,
    history: Sequence[int] = (),
    n: int = 128,
    sampler: SamplerChain | None = None,
    rng: np.random.Generator | None = None,
    seed: int | None = None,
    stop: Sequence[str] = (),
    stop_ids: Iterable[int] = (),
    vocab: int | None = None,
    should_stop: Callable[[], bool] | None = None,
    ctx_shift: bool = False,
    n_keep: int = 0,
    on_shift: Callable[[list, int], None] | None = None,
    draft: Any = None,
    draft_max: int = DRAFT_MAX_DEFAULT,
    draft_min: int = 1,
) -> Iterator[Event]:
    """Feed ``new_ids`` to ``cache`` then sample up to ``n`` tokens (-1: until EOG or a full cache).

    ``history``: the tokens already in the cache (for repetition penalties). The last sampled
    token is not fed to the cache (nothing needs its logits); callers that continue the
    sequence feed it first (see chat.ChatSession). Returns an iterator of `TokenEvent`s then
    one `DoneEvent`; the arguments are checked here, before the first event is asked for.

    ``ctx_shift``: when the cache is full (or ``new_ids`` do not fit), shift the context instead
    of stopping (module docstring): the first ``n_keep`` cached tokens stay, the oldest half of
    the rest goes and what is kept after them is re-encoded. ``history`` must then be all of the
    cache's tokens. ``on_shift(tokens, n_discarded)`` is called after each shift with the
    tokens now in the cache.

    ``draft``: speculative decoding with this drafter (`bitnet_lab.generate.speculative`: an
    object with ``propose``, or "lookup:N" / "self:N"); ``draft_max`` / ``draft_min``: the most
    and fewest tokens one pass verifies (llama.cpp's ``--draft-max`` / ``--draft-min``). The
    tokens are plain decode's (greedy), or drawn from the same distribution (sampling).
    """
    new_ids = [int(t) for t in new_ids]
    if not isinstance(n, (int, np.integer)) or n < -1:
        raise ConfigError(f"n (tokens to generate) must be an integer >= -1, got {n!r}")
    n = int(n)
    pos, n_ctx = int(cache.pos), int(cache.n_ctx)
    if not new_ids:
        raise ConfigError("the prompt is empty (0 tokens): there is nothing to condition on")
    shift = None
    if ctx_shift:
        if len(history) != pos:
            raise ConfigError(f"a context shift needs the cache's tokens as history: {pos} cached, "
                              f"{len(history)} given")
        shift = _Shift(max(0, int(n_keep)), on_shift)
        # raises (nothing changed yet) when the new tokens cannot fit even after a shift
        shift.first = context_shift(pos, len(new_ids), n_ctx, shift.n_keep)
    elif len(new_ids) > n_ctx - pos:
        raise _too_long(len(new_ids), n_ctx, pos)
    if vocab is not None:
        bad = [t for t in new_ids if not 0 <= t < vocab]
        if bad:
            raise ConfigError(f"prompt token id {bad[0]} is outside the vocabulary [0, {vocab})")
    sampler = make_sampler() if sampler is None else sampler
    used_seed = None
    if rng is None:
        used_seed = resolve_seed(seed)
        rng = np.random.default_rng(used_seed)
    stops = tuple(s for s in stop if s)
    eog = frozenset(int(t) for t in stop_ids)
    spec = None
    if draft is not None:
        if not callable(getattr(cache, "truncate", None)):
            raise ConfigError("speculative decoding rolls the KV cache back: this backend's cache has no truncate()")
        spec = draft if isinstance(draft, Speculation) else Speculation(
            make_drafter(draft, None), draft_max=_positive(draft_max, "draft_max"),
            draft_min=_positive(draft_min, "draft_min"))
        spec.share_costs(shared_costs(runner))  # what passes cost here, from earlier generations
    return _loop(runner, tokenizer, cache, new_ids, list(history), n, sampler, rng, used_seed,
                 stops, eog, should_stop, shift, spec)


def _positive(v: Any, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ConfigError(f"{what} must be a positive integer, got {v!r}")
    return int(v)


class _Shift:
    """A stream's context-shift settings (``first``: tokens to drop before the prompt)."""

    def __init__(self, n_keep: int, on_shift: Callable[[list, int], None] | None):
        self.n_keep, self.on_shift, self.first = n_keep, on_shift, 0

    def feed(self, runner: Any, cache: Any, context: list, new: list, n_discard: int) -> tuple[Any, list]:
        """Drop ``n_discard`` cached tokens after the first ``n_keep``, then feed what is kept after
        them and ``new`` in one forward pass; returns the last row's logits and the cache's tokens."""
        keep = min(self.n_keep, len(context))
        kept = context[:keep] + context[keep + n_discard:]
        reused = _truncate(cache, keep)
        logits = runner.forward(kept[reused:] + new, cache, last_only=True)
        context = kept + new
        if self.on_shift is not None:
            self.on_shift(list(context), n_discard)
        return logits, context


class _Output:
    """Turns sampled tokens into `TokenEvent`s through a `TextStream` (stop strings held back and
    cut), and says when generation ends (the same rules for plain and speculative steps)."""

    def __init__(self, tokenizer: Any, stops: tuple, eog: frozenset, n: int,
                 should_stop: Callable[[], bool] | None):
        self.text = TextStream(tokenizer, stops)
        self.eog, self.n, self.should_stop = eog, n, should_stop
        self.generated: list[int] = []
        self.parts: list[str] = []

    def token(self, tok: int, logprob: float, t_ms: float, full: bool, drafted: bool = False,
              n_pass: int = 0) -> tuple[TokenEvent, str]:
        """The event for ``tok`` and why generation ends with it ("" = it goes on). ``full``: no
        room to feed this token (the cache is full and cannot shift)."""
        self.generated.append(tok)
        if tok in self.eog:
            released = self.text.end()
            self.parts.append(released)
            return TokenEvent(tok, released, logprob, t_ms, True, drafted, n_pass), "eos"
        released = self.text.push(tok)
        if released is not None:
            self.parts.append(released)
            return TokenEvent(tok, released, logprob, t_ms, False, drafted, n_pass), "stop_string"
        if self.n >= 0 and len(self.generated) >= self.n:
            reason = "length"
        elif full:
            reason = "context"                   # no room to feed this token (and no shift)
        elif self.should_stop is not None and self.should_stop():
            reason = "interrupted"
        else:
            reason = ""
        released = self.text.end() if reason else self.text.release()   # last token: release everything
        self.parts.append(released)
        return TokenEvent(tok, released, logprob, t_ms, False, drafted, n_pass), reason


def _loop(runner, tokenizer, cache, new_ids, history, n, sampler, rng, used_seed, stops, eog,
          should_stop, shift=None, spec=None) -> Iterator[Event]:
    context = history + new_ids                  # what the penalties look at (= the cache's tokens)

    # ---- prompt -----------------------------------------------------------------------
    t0 = time.perf_counter()
    # only the last row's logits are needed (the native engine then runs the lm_head once, not
    # once per prompt token)
    if shift is not None and shift.first:
        logits, context = shift.feed(runner, cache, history, new_ids, shift.first)
    else:
        logits = runner.forward(new_ids, cache, last_only=True)   # (1, vocab) float32
    row = np.asarray(logits)[-1]                 # (vocab,) logits of the next token
    prompt_ms = (time.perf_counter() - t0) * 1e3
    step_ms = prompt_ms
    eval_ms = sample_ms = 0.0
    n_eval = n_pass = 0
    out = _Output(tokenizer, stops, eog, n, should_stop)
    correction = None                            # a token the last verification already drew
    drafter = getattr(spec.drafter, "name", type(spec.drafter).__name__) if spec is not None else ""
    drafted0 = (spec.n_draft, spec.n_accept) if spec is not None else (0, 0)   # a Speculation may be reused

    def is_full(pos: int) -> bool:               # no room to feed one more token at cache position pos
        return pos >= cache.n_ctx and (shift is None or pos <= shift.n_keep)

    if n == 0:
        yield DoneEvent("length", len(new_ids), 0, prompt_ms, 0.0, 0.0, 0, used_seed, "", ())
        return

    while True:
        ts = time.perf_counter()
        if correction is None:
            tok = sampler.sample(row, context, rng)
        else:
            tok, correction = correction, None
        logprob = log_softmax_at(row, tok)
        dt = (time.perf_counter() - ts) * 1e3
        sample_ms += dt
        ev, reason = out.token(tok, logprob, step_ms + dt, is_full(cache.pos), n_pass=n_pass)
        yield ev
        if reason:
            break

        # ---- feed the token (and drafts after it), get the next logits -----------------------
        te = time.perf_counter()
        if cache.pos >= cache.n_ctx:             # full: shift (checked above that it can)
            logits, context = shift.feed(runner, cache, context, [tok],
                                         context_shift(cache.pos, 1, cache.n_ctx, shift.n_keep))
            row = np.asarray(logits)[-1]
            draft = None
        else:
            room = cache.n_ctx - cache.pos - 1   # drafts that fit after tok, and that -n still wants
            if n >= 0:
                room = min(room, n - len(out.generated))
            context.append(tok)                  # drafts continue tok (no copy of the context per step)
            draft = spec.propose(context, room, sampler, rng) if spec else None
            if draft:
                context.pop()                    # verify_step feeds tok itself, after the context
            else:
                row = np.asarray(runner.forward([tok], cache))[-1]
        if not draft:
            step_ms = (time.perf_counter() - te) * 1e3
            eval_ms += step_ms
            n_eval += 1
            n_pass += 1
            if spec is not None:
                spec.note_step(step_ms)
            continue

        # ---- speculative: verify the drafts in one pass, emit the accepted ones ----------------
        step = verify_step(runner, cache, context, tok, draft, sampler, rng)
        pass_ms = (time.perf_counter() - te) * 1e3
        spec.record(step, pass_ms)
        n_pass += 1
        context.append(tok)
        n_eval += 1
        share = pass_ms / (len(step.accepted) + 1)   # the pass's time, split over the tokens it gave
        eval_ms += pass_ms
        for j, d in enumerate(step.accepted):
            pos = step.pos0 + 1 + j              # plain decode's cache position when it drew d
            ev, reason = out.token(d, log_softmax_at(step.rows[j], d), share, is_full(pos), True, n_pass)
            yield ev
            if reason:
                cache.truncate(pos)              # d itself is never fed, as in plain decode
                break
            context.append(d)
            n_eval += 1
        if reason:
            break
        row = step.rows[len(step.accepted)]
        correction = step.correction
        step_ms = share

    yield DoneEvent(
        reason, len(new_ids), len(out.generated), prompt_ms, eval_ms, sample_ms, n_eval,
        used_seed, "".join(out.parts), tuple(out.generated), n_pass,
        spec.n_draft - drafted0[0] if spec else 0, spec.n_accept - drafted0[1] if spec else 0, drafter,
    )


def _cut_at_stop(text: str, stops: Sequence[str]) -> str:
    i = _find_stop(text, stops) if stops else -1
    return text if i < 0 else text[:i]


def generate(
    model: Any,
    prompt: str | Sequence[int],
    *,
    n: int = 128,
    sampler: SamplerChain | None = None,
    seed: int | None = None,
    stop: Sequence[str] = (),
    n_ctx: int | None = None,
    add_bos: bool | None = None,
    parse_special: bool = False,
    stop_ids: Iterable[int] | None = None,
    ignore_eos: bool = False,
    should_stop: Callable[[], bool] | None = None,
    ctx_shift: bool = False,
    n_keep: int = 0,
    on_shift: Callable[[list, int], None] | None = None,
    draft: Any = None,
    draft_max: int = DRAFT_MAX_DEFAULT,
    draft_min: int = 1,
) -> Iterator[Event]:
    """Generate from ``prompt`` (text, or token ids used as they are) with ``model``.

    ``model``: a `bitnet_lab.Model` or anything with ``.runner`` (the forward interface) and
    ``.tokenizer`` (and optionally ``.config``). ``n``: tokens to generate, -1 = until an
    end-of-generation token or the end of the context. ``sampler``: a `SamplerChain`
    (default: llama.cpp's defaults, `make_sampler()`). ``seed``: None = random (the seed used
    is in the `DoneEvent`). ``stop``: strings that end generation (never emitted). ``n_ctx``:
    KV cache size (default: the model's training context). ``stop_ids``: override the EOG set.
    Raises ConfigError for a prompt longer than the context (the message gives both numbers).
    ``ctx_shift``: when the context is full, shift it and go on (module docstring) instead of
    stopping with reason "context" (off by default, as in llama.cpp: ``--context-shift``);
    ``n_keep``: llama.cpp's ``--keep``, the prompt tokens after its BOS that a shift keeps
    (-1: the whole prompt); ``on_shift(tokens, n_discarded)``: called after each shift.
    ``draft``: speculative decoding (`stream_tokens`; "self:N" drafts with the model's own first
    N layers; a draft model's path goes through `bitnet_lab.Model.generate`, which loads it);
    each `TokenEvent` says whether it was ``drafted``.
    Yields `TokenEvent`s and a final `DoneEvent`; never prints.
    """
    runner, tok = model.runner, model.tokenizer
    config = getattr(model, "config", None)
    if isinstance(prompt, str):
        ids = tok.encode(prompt, add_bos=add_bos, parse_special=parse_special)
    else:
        ids = [int(t) for t in prompt]
    if n_ctx is None:
        n_ctx = int(getattr(config, "context", 0) or 0) or 2048
    if n_ctx <= 0:
        raise ConfigError(f"context size must be positive, got {n_ctx}")
    if stop_ids is None:
        stop_ids = () if ignore_eos else stop_ids_for(tok, config)
    vocab = getattr(config, "vocab", None)
    if len(ids) > n_ctx:   # checked before allocating a cache
        raise _too_long(len(ids), n_ctx, 0)
    keep = keep_count(ids, n_keep, getattr(tok, "bos_id", None))
    if draft is not None and not isinstance(draft, Speculation):
        draft = Speculation(make_drafter(draft, model), draft_max=_positive(draft_max, "draft_max"),
                            draft_min=_positive(draft_min, "draft_min"))
    cache = runner.new_cache(n_ctx)
    return stream_tokens(
        runner, tok, cache, ids, n=n, sampler=sampler, seed=seed, stop=stop,
        stop_ids=stop_ids, vocab=vocab, should_stop=should_stop,
        ctx_shift=ctx_shift, n_keep=keep, on_shift=on_shift, draft=draft,
    )
