"""Context shift (issue 18 item 3): which tokens a shift keeps, and that a generation or a chat
goes on past a full context — on fakes (the arithmetic, the forward calls), then on the embedded
default model (the kept cache is exactly what a fresh forward over the kept tokens builds)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from bitnet_lab.errors import ConfigError
from bitnet_lab.generate import DoneEvent, TokenEvent, generate, make_sampler, stream_tokens
from bitnet_lab.generate.chat import ChatSession
from bitnet_lab.generate.loop import context_shift, keep_count
from fakes_generate import BOS, EOT, FakeCache, FakeRunner, ScriptRunner, fake_model

GREEDY = make_sampler(temp=0)


def _b(s: str) -> list[int]:
    return list(s.encode())


def _events(events):
    events = list(events)
    assert isinstance(events[-1], DoneEvent) and all(isinstance(e, TokenEvent) for e in events[:-1])
    return [e.token_id for e in events[:-1]], "".join(e.text for e in events[:-1]), events[-1]


# ---- the arithmetic ------------------------------------------------------------------------


def test_context_shift_drops_the_oldest_half_after_the_kept_tokens():
    assert context_shift(100, 1, 256, 1) == 0                  # fits: nothing dropped
    assert context_shift(255, 1, 256, 1) == 0
    assert context_shift(256, 1, 256, 1) == 127                # llama.cpp: (n_past - n_keep) / 2
    assert context_shift(256, 1, 256, 10) == 123
    assert context_shift(256, 1, 256, 0) == 128
    assert context_shift(200, 100, 256, 10) == 95              # half is enough room for 100
    assert context_shift(250, 200, 256, 10) == 194             # more than half when the new tokens need it
    with pytest.raises(ConfigError, match="even after a context shift"):
        context_shift(5, 1, 5, 99)                             # n_keep past the cache: all kept, no room
    with pytest.raises(ConfigError, match=r"250 new tokens do not fit in the context of 256.*first 10"):
        context_shift(100, 250, 256, 10)


def test_keep_count_is_llama_cpps_keep():
    assert keep_count([BOS, 1, 2, 3], 0, BOS) == 1             # the BOS always stays
    assert keep_count([BOS, 1, 2, 3], 2, BOS) == 3
    assert keep_count([BOS, 1, 2, 3], 99, BOS) == 4            # at most the prompt
    assert keep_count([BOS, 1, 2, 3], -1, BOS) == 4            # -1 = the whole prompt
    assert keep_count([1, 2, 3], 0, BOS) == 0                  # no BOS, nothing forced
    assert keep_count([1, 2, 3], 2, None) == 2


# ---- the generation loop on fakes ----------------------------------------------------------


class _CountingRunner(FakeRunner):
    """Next token = (number of cached tokens) % 7 + ord('a'): a function of the cache's length."""

    def __init__(self):
        super().__init__(lambda toks: ord("a") + len(toks) % 7)


class _TruncatingCache(FakeCache):
    def truncate(self, n: int) -> None:
        del self.tokens[n:]


class _TruncatingRunner(_CountingRunner):
    def new_cache(self, n_ctx: int) -> FakeCache:
        return _TruncatingCache(n_ctx)


@pytest.mark.parametrize("runner_cls", [_CountingRunner, _TruncatingRunner])
def test_generation_shifts_when_the_context_is_full(runner_cls):
    runner = runner_cls()
    model = fake_model(runner, context=16)
    shifts = []
    ids, _, done = _events(generate(model, "abcd", n=40, sampler=GREEDY, ctx_shift=True, n_keep=2,
                                       on_shift=lambda toks, d: shifts.append((list(toks), d))))
    assert done.reason == "length" and done.n_generated == 40   # went on past 16 positions
    prompt = [BOS] + _b("abcd")                                 # 5 tokens; keep = BOS + 2
    # the first shift: 16 cached (prompt + 11 generated), the 12th generated token must be fed
    seq = prompt + ids[:11]
    assert len(seq) == 16
    kept_want = seq[:3] + seq[3 + (16 - 3) // 2:] + [ids[11]]   # 6 dropped after the first 3
    assert shifts[0] == (kept_want, 6)
    assert all(d == (16 - 3) // 2 for _, d in shifts)
    shift_call = runner.calls[1 + 11]                           # the prompt, 11 decode steps, the shift
    if runner_cls is _TruncatingRunner:
        assert shift_call == kept_want[3:]                      # the kept head stays in the cache
    else:
        assert shift_call == kept_want                          # a cache that cannot be cut: all re-encoded
    # each token is a function of the cache's length at its step: 6..16, then 11 after the shift
    assert ids[:12] == [ord("a") + n % 7 for n in range(5, 17)]
    assert ids[12] == ord("a") + 11 % 7
    assert len(shifts) == 1 + (40 - 12) // 6


def test_tokens_before_the_shift_are_unchanged():
    """Lossless up to the shift: greedy tokens are the same as without a shift until it happens."""
    def fn(toks):
        return ord("a") + (sum(toks) * 31 + len(toks)) % 26

    off = _events(generate(fake_model(FakeRunner(fn), context=24), "hello", n=-1, sampler=GREEDY))
    on = _events(generate(fake_model(FakeRunner(fn), context=24), "hello", n=60, sampler=GREEDY, ctx_shift=True))
    assert off[2].reason == "context" and on[2].reason == "length"
    n_before = off[2].n_generated
    assert on[0][:n_before] == off[0] and on[1][:n_before] == off[1]
    assert len(on[0]) == 60


def test_without_ctx_shift_a_full_context_still_stops():
    _, _, done = _events(generate(fake_model(_CountingRunner(), context=12), "ab", n=-1, sampler=GREEDY))
    assert done.reason == "context" and done.n_generated == 12 - 3 + 1
    # keeping the whole context leaves nothing to drop: it stops as well
    _, _, done = _events(generate(fake_model(_CountingRunner(), context=12), "a" * 11, n=-1, sampler=GREEDY,
                                  ctx_shift=True, n_keep=-1))
    assert done.reason == "context"


def test_stream_tokens_shifts_before_a_turn_that_does_not_fit():
    runner = _TruncatingRunner()
    cache = runner.new_cache(20)
    history = [BOS] + _b("0123456789abcde")                    # 16 cached
    runner.forward(history, cache)
    shifts = []
    ids, _, done = _events(stream_tokens(runner, fake_model(runner).tokenizer, cache, _b("XYZWV"),
                                         history=history, n=2, sampler=GREEDY, ctx_shift=True, n_keep=4,
                                         on_shift=lambda t, d: shifts.append((t, d))))
    # 16 + 5 > 20: drop (16 - 4) // 2 = 6 after the first 4, then feed the rest and the turn
    kept = history[:4] + history[10:] + _b("XYZWV")
    assert shifts == [(kept, 6)] and cache.tokens == kept + ids[:1] and done.n_generated == 2
    assert runner.calls[-2] == history[10:] + _b("XYZWV")
    with pytest.raises(ConfigError, match="needs the cache's tokens"):
        stream_tokens(runner, fake_model(runner).tokenizer, cache, [1], history=[], ctx_shift=True)


# ---- a chat session on fakes ---------------------------------------------------------------


def test_chat_session_shifts_and_keeps_the_system_prompt():
    # every answer runs 30 tokens (never an end token): a 64-token context fills at once
    runner = ScriptRunner(_b("x" * 100))
    chat = ChatSession(fake_model(runner, context=64), system="Be brief.", sampler=GREEDY)
    system = chat.format.encode([{"role": "system", "content": "Be brief."}], add_generation_prompt=False)
    assert chat.n_keep == len(system) == 1 + len("System: Be brief.") + 1
    for k in range(6):
        _, text, done = _events(chat.send(f"q{k}", n=30))
        assert done.reason == "length" and text == "x" * 30
        assert chat.n_past == len(chat.tokens) == runner_cache_len(chat) <= 64
        assert chat.tokens[: len(system)] == system                  # the system prompt stays
        assert chat.tokens == chat.cache.tokens                      # the session knows the cache
    assert chat.n_shifts >= 3 and chat.n_discarded > 0


def runner_cache_len(chat):
    return len(chat.cache.tokens)


def test_chat_session_without_ctx_shift_stops_at_a_full_context():
    runner = ScriptRunner(_b("x" * 100))
    chat = ChatSession(fake_model(runner, context=64), sampler=GREEDY, ctx_shift=False)
    _, _, done = _events(chat.send("q", n=-1))
    assert done.reason == "context" and chat.n_past == 64
    with pytest.raises(ConfigError, match="context holds 64"):
        chat.send("again")


def test_chat_session_keep_n_and_a_rebuild_after_shifts():
    class Flaky(ScriptRunner):
        fail_at = None

        def forward(self, ids, cache, *, last_only=False):
            if self.fail_at is not None and len(self.calls) == self.fail_at:
                cache.tokens.append(int(ids[0]))   # half-done: the cache moved
                self.fail_at = None
                raise KeyboardInterrupt
            return super().forward(ids, cache, last_only=last_only)

    runner = Flaky(_b("y" * 100))
    chat = ChatSession(fake_model(runner, context=48), sampler=GREEDY, n_keep=3)
    assert chat.n_keep == 1 + 3                                  # the BOS and 3 more
    for k in range(4):
        _events(chat.send(f"question {k}", n=20))
    assert chat.n_shifts >= 1 and chat.tokens[:4] == chat.cache.tokens[:4]
    runner.fail_at = len(runner.calls) + 3
    with pytest.raises(KeyboardInterrupt):
        list(chat.send("cut", n=20))
    # the whole conversation no longer fits: the rebuild reads it again, shifted
    _, _, done = _events(chat.send("after", n=5))
    assert chat.n_rebuilds == 1 and done.n_generated == 5
    assert chat.n_past == len(chat.tokens) == len(chat.cache.tokens) <= 48


class _Answerer(FakeRunner):
    """Answers "ans N" + EOT to the last "question N" in the cache, reading how much of the answer
    is already there after the last "Assistant: " (so a shift inside an answer does not derail it)."""

    def __init__(self):
        super().__init__(self._next)

    @staticmethod
    def _next(toks):
        text = bytes(t for t in toks if t < 256).decode()
        i = text.rfind("Assistant: ")
        questions = re.findall(r"question (\d+)", text[:max(i, 0)])
        if not questions:                  # a prefix of the cache re-encoded after a shift
            return ord("?")
        reply = _b(f"ans {questions[-1]}") + [EOT]
        k = len(text) - i - len("Assistant: ")
        return reply[k] if k < len(reply) else EOT


def test_chat_session_goes_on_for_twenty_turns_through_shifts():
    # ~34 tokens a turn in a 128-token context: shifts before a turn and inside answers
    runner = _Answerer()
    chat = ChatSession(fake_model(runner, context=128), system="S", sampler=GREEDY)
    for k in range(20):
        _, text, done = _events(chat.send(f"question {k}"))
        assert done.reason == "eos" and text == f"ans {k}"
        assert chat.tokens == chat.cache.tokens and chat.tokens[:chat.n_keep] == runner.calls[0][:chat.n_keep]
    assert chat.n_shifts >= 3 and chat.n_past <= 128


# ---- the real default model ----------------------------------------------------------------


@pytest.fixture(scope="module")
def default_model():
    import bitnet_lab
    from bitnet_lab.tools.default_model import default_model_path

    return bitnet_lab.load(default_model_path())


def test_a_shift_on_the_default_model_is_exact(default_model):
    """After a shift that keeps the cache's head, the next logits are the ones a fresh cache over
    the kept tokens gives (the head is reused, the rest re-encoded from the ids)."""
    model = default_model
    runner = model.runner
    ids = model.tokenizer.encode("def read_lines(path):\n    ", add_bos=True)
    shifts = []
    # no stop tokens: the model may end its function with the end token before the cache is full
    events = list(generate(model, ids, n=80, sampler=GREEDY, n_ctx=64, ctx_shift=True, n_keep=4, stop_ids=(),
                           on_shift=lambda toks, d: shifts.append((list(toks), d))))
    done = events[-1]
    assert done.reason == "length" and shifts
    # the first shift by hand: the cache right after it holds `kept`, which ends with the token
    # sampled when the cache was full
    kept, _ = shifts[0]
    gen = [e.token_id for e in events[:-1]]
    full = 64 - len(ids)                     # generated tokens fed before the cache was full
    assert gen[full] == kept[-1] and kept[:4] == ids[:4]
    fresh = np.asarray(runner.forward(kept, runner.new_cache(64)))[-1]
    assert gen[full + 1] == int(np.argmax(fresh))      # the next token is the fresh cache's pick
    # a cache cut back to its first 4 entries and fed the rest gives the fresh cache's logits
    cache = runner.new_cache(64)
    runner.forward(kept[:4] + gen[:20], cache)
    cache.pos = 4
    again = np.asarray(runner.forward(kept[4:], cache, last_only=True))[-1]
    np.testing.assert_array_equal(again, fresh)


def test_an_answer_has_a_bounded_default_length():
    """Without n, an answer stops at min(256, n_ctx / 2) tokens: with a context shift, a model that
    never says its end token would otherwise answer forever."""
    runner = ScriptRunner(_b("z" * 400))
    chat = ChatSession(fake_model(runner, context=64), sampler=GREEDY)
    assert chat.default_n == 32
    _, _, done = _events(chat.send("q"))
    assert done.reason == "length" and done.n_generated == 32
    assert ChatSession(fake_model(runner, context=4096), sampler=GREEDY).default_n == 256


def test_a_shift_on_the_jax_reference_is_exact(tiny_gguf):
    """The reference's cache (K stored after RoPE, like the engine's) cut back to its head gives
    the logits of a fresh cache over the kept tokens."""
    import bitnet_lab

    model = bitnet_lab.load(tiny_gguf, backend="reference")
    runner = model.runner
    shifts = []
    events = list(generate(model, [1, 5, 9, 13], n=24, sampler=GREEDY, n_ctx=16, ctx_shift=True, n_keep=2,
                           stop_ids=(), on_shift=lambda toks, d: shifts.append(list(toks))))
    gen = [e.token_id for e in events[:-1]]
    kept = shifts[0]
    assert len(gen) == 24 and kept[:3] == [1, 5, 9] and gen[16 - 4] == kept[-1]
    fresh = np.asarray(runner.forward(kept, runner.new_cache(16)))[-1]
    assert gen[16 - 4 + 1] == int(np.argmax(fresh))
    cache = runner.new_cache(16)
    runner.forward(kept[:3] + gen[:8], cache)
    cache.pos = 3
    again = np.asarray(runner.forward(kept[3:], cache, last_only=True))[-1]
    np.testing.assert_array_equal(again, fresh)


@pytest.mark.parametrize("backend", ["native", "reference"])
def test_truncate_keeps_the_head_and_refuses_past_the_cached_tokens(tiny_gguf, backend):
    import bitnet_lab
    from bitnet_lab.errors import BitnetLabError

    runner = bitnet_lab.load(tiny_gguf, backend=backend).runner
    cache = runner.new_cache(32)
    runner.forward([1, 2, 3, 4, 5], cache)
    with pytest.raises(BitnetLabError, match="holds 5 tokens"):
        cache.truncate(6)
    cache.truncate(2)
    assert cache.pos == 2
    fresh = runner.new_cache(32)
    runner.forward([1, 2], fresh)
    np.testing.assert_array_equal(runner.forward([9], cache), runner.forward([9], fresh))
