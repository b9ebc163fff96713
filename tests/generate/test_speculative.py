"""Speculative decoding (bitnet_lab.generate.speculative): lossless by construction, checked.

- greedy: token-for-token plain decode's, on fakes and on tiny dummy files of every ternary type,
  through the native engine at every ISA level present and the JAX reference, with drafters that
  are often right, always wrong, prompt lookup and self-speculation;
- the batched verification rows and the rows after a rollback are plain decode's, bit for bit;
- sampling: the acceptance rule draws from exactly the target distribution (chi-square on a
  small vocabulary, fixed seeds, enough draws that a wrong rule fails);
- stops (EOS, stop strings, -n, a full context, a context shift) cut where plain decode cuts, and
  the cache ends holding what plain decode's holds;
- the draft-length controller; errors.
"""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest

from bitnet_lab.errors import ConfigError
from bitnet_lab.generate import DoneEvent, TokenEvent, generate, make_sampler, stream_tokens
from bitnet_lab.generate.speculative import (
    AdaptiveK,
    Draft,
    DraftModel,
    PromptLookup,
    SelfSpeculative,
    Speculation,
    accept_or_resample,
    check_same_vocabulary,
    make_drafter,
    shared_costs,
    target_probs,
    verify_step,
)
from fakes_generate import EOS, FakeCache, FakeRunner, FakeTokenizer, fake_model

GREEDY = make_sampler(temp=0)


# =====================================================================================
# Helpers: a fake cache that rolls back, and drafters that know the answer
# =====================================================================================


class RollbackCache(FakeCache):
    def truncate(self, n: int) -> None:
        assert 0 <= n <= self.pos
        del self.tokens[n:]


class RollbackRunner(FakeRunner):
    def new_cache(self, n_ctx: int) -> RollbackCache:
        return RollbackCache(n_ctx)


class Oracle:
    """Drafts from a known continuation (plain decode's tokens after ``prompt``), each token wrong
    with probability ``p_wrong`` (seeded); ``p_wrong=1``: every drafted token is wrong."""

    name = "oracle"

    def __init__(self, prompt: list, answer: list, vocab: int, p_wrong: float, seed: int = 0):
        self.prompt, self.answer, self.vocab = list(prompt), list(answer), vocab
        self.p_wrong, self.rng = p_wrong, np.random.default_rng(seed)
        self.calls = 0

    def propose(self, context, k, sampler=None, rng=None) -> Draft:
        self.calls += 1
        at = len(context) - len(self.prompt)
        out = []
        for j in range(k):
            i = at + j
            right = self.answer[i] if i < len(self.answer) else int(self.rng.integers(self.vocab))
            out.append((right + 1) % self.vocab if self.rng.random() < self.p_wrong else right)
        return Draft(tuple(out))


def _events(gen):
    events = list(gen)
    assert isinstance(events[-1], DoneEvent)
    return events[:-1], events[-1]


def _same_stream(a, b):
    """Same tokens, same text per event, same end."""
    (ta, da), (tb, db) = a, b
    assert [e.token_id for e in ta] == [e.token_id for e in tb]
    assert [e.text for e in ta] == [e.text for e in tb]
    assert [e.eog for e in ta] == [e.eog for e in tb]
    assert (da.reason, da.n_generated, da.generated_text, da.token_ids) == \
        (db.reason, db.n_generated, db.generated_text, db.token_ids)


def _hash_next(vocab: int):
    """A deterministic next-token function of the whole context (no periodic structure)."""
    def f(tokens):
        return (sum((i + 1) * t for i, t in enumerate(tokens[-5:])) * 2654435761) % vocab
    return f


# =====================================================================================
# Greedy on fakes: every kind of drafter, every kind of stop
# =====================================================================================


@pytest.mark.parametrize("p_wrong", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("seed", range(4))
def test_greedy_equals_plain_decode_with_an_oracle_drafter(p_wrong, seed):
    vocab = 50
    model = fake_model(RollbackRunner(_hash_next(vocab), vocab=vocab), context=512)
    prompt = [int(t) for t in np.random.default_rng(seed).integers(0, vocab, 7)]
    plain = _events(generate(model, prompt, n=60, sampler=GREEDY, stop_ids=()))
    oracle = Oracle(prompt, list(plain[1].token_ids), vocab, p_wrong, seed)
    spec = _events(generate(model, prompt, n=60, sampler=GREEDY, stop_ids=(),
                            draft=Speculation(oracle, draft_max=6, cost_aware=False)))
    _same_stream(plain, spec)
    done = spec[1]
    assert oracle.calls > 0 and done.n_draft > 0
    if p_wrong == 1.0:        # every draft wrong: nothing accepted, no token marked drafted
        assert done.n_accept == 0 and not any(e.drafted for e in spec[0])
    if p_wrong == 0.0:        # always right: several tokens a pass
        assert done.n_accept == done.n_draft and done.tokens_per_pass > 2
    assert sum(e.drafted for e in spec[0]) == done.n_accept <= done.n_draft
    assert done.n_eval == plain[1].n_eval == len(plain[1].token_ids) - 1


def test_the_cache_ends_holding_what_plain_decode_leaves():
    """Plain decode never feeds the last token; a verification pass that ran past the stop is
    rolled back to the same place (a chat continues from there)."""
    vocab = 40
    for n in (1, 2, 5, 13):
        caches = []
        for draft in (None, "oracle"):
            runner = RollbackRunner(_hash_next(vocab), vocab=vocab)
            cache = runner.new_cache(200)
            prompt = [3, 4, 5]
            if draft:
                plain_ids = _events(stream_tokens(RollbackRunner(_hash_next(vocab), vocab=vocab), FakeTokenizer(),
                                                  RollbackCache(200), prompt, n=n, sampler=GREEDY))[1].token_ids
                draft = Oracle(prompt, list(plain_ids), vocab, 0.0)
            _events(stream_tokens(runner, FakeTokenizer(), cache, prompt, n=n, sampler=GREEDY, draft=draft,
                                  draft_max=8))
            caches.append(list(cache.tokens))
        assert caches[0] == caches[1]


def _text_model(text: str, vocab: int = 300):
    """A fake whose greedy continuation spells ``text`` after the prompt, then EOS."""
    data = list(text.encode())

    def nxt(tokens):
        i = len(tokens) - 3                         # prompt of 3 tokens
        return data[i] if 0 <= i < len(data) else EOS
    return fake_model(RollbackRunner(nxt, vocab=vocab), context=400)


@pytest.mark.parametrize("kw", [dict(), dict(stop=["STOP"]), dict(stop=["lo w"]), dict(n=4), dict(n=9),
                                dict(stop=["d!"]), dict(n_ctx=12), dict(n_ctx=12, ctx_shift=True, n_keep=1, n=30)])
def test_stops_cut_exactly_where_plain_decode_cuts(kw):
    model = _text_model("hello world! hello world! STOP hello")
    prompt = [1, 2, 3]
    plain = _events(generate(model, prompt, sampler=GREEDY, **kw))
    oracle = Oracle(prompt, list(plain[1].token_ids) + [EOS] * 40, 300, 0.0)
    for draft in (oracle, PromptLookup(3), Oracle(prompt, list(plain[1].token_ids), 300, 0.5)):
        spec = _events(generate(model, prompt, sampler=GREEDY, draft=draft, draft_max=5, **kw))
        _same_stream(plain, spec)


def test_prompt_lookup_accepts_a_repeated_text():
    model = _text_model("abcdefgh abcdefgh abcdefgh abcdefgh abcdefgh")
    plain = _events(generate(model, [1, 2, 3], n=40, sampler=GREEDY))
    spec = _events(generate(model, [1, 2, 3], n=40, sampler=GREEDY,
                            draft=Speculation(PromptLookup(3), cost_aware=False)))
    _same_stream(plain, spec)
    done = spec[1]
    assert done.drafter == "lookup(n=1..3)"
    assert done.n_accept >= 20 and done.n_pass < 20
    # the events say which tokens came out of which pass
    by_pass = Counter(e.n_pass for e in spec[0])
    assert max(by_pass.values()) > 2


def test_prompt_lookup_finds_the_latest_match_and_drafts_into_itself():
    pl = PromptLookup(ngram_max=2)
    assert pl.propose([5, 6, 7, 1, 2, 9, 9, 1, 2], 3).tokens == (9, 9, 1)
    assert pl.propose([5, 6, 7, 1, 2, 9, 9, 1, 2, 9], 2).tokens == (9, 1)   # index grows incrementally
    assert pl.propose([4, 4], 5).tokens == (4, 4, 4, 4, 4)                   # rebuilt; a loop of period 1
    assert pl.propose([1, 2, 3], 4).tokens == ()
    with pytest.raises(ConfigError, match="ngram_min <= ngram_max"):
        PromptLookup(ngram_max=1, ngram_min=2)


def test_penalties_see_plain_decodes_history():
    """A repetition penalty depends on the tokens before each position: the verified positions
    must use the history plain decode has there (context + current + accepted drafts)."""
    vocab = 30

    def nxt(tokens):       # a flat-ish preference the penalty can overturn
        return tokens[-1]  # "repeat the last token"
    runner = RollbackRunner(nxt, vocab=vocab, peak=1.0)
    model = fake_model(runner, context=300)
    sampler = make_sampler(temp=0, repeat_penalty=3.0, repeat_last_n=4)
    prompt = [1, 2, 3, 4, 5]
    plain = _events(generate(model, prompt, n=30, sampler=sampler))
    for p_wrong in (0.0, 0.4):
        spec = _events(generate(model, prompt, n=30, sampler=sampler,
                                draft=Speculation(Oracle(prompt, list(plain[1].token_ids), vocab, p_wrong),
                                                  draft_max=7, cost_aware=False)))
        _same_stream(plain, spec)
        assert spec[1].n_accept > 0


# =====================================================================================
# The draft-length controller
# =====================================================================================


def test_adaptive_k_grows_shrinks_and_pauses():
    c = AdaptiveK(k_max=16, k_min=1, k_start=2, patience=2, max_pause=8)
    assert c.next_k() == 2
    c.update(2, 2)
    assert c.k == 4
    c.update(4, 4)
    c.update(8, 8)
    c.update(16, 16)
    assert c.k == 16                      # capped at k_max
    c.update(16, 3)
    assert c.k == 4                       # one more than accepted
    c.update(4, 0)
    assert c.k == 1 and c.next_k() == 1   # one miss: no pause yet
    c.update(1, 0)                        # second miss in a row: pause 1 step
    assert [c.next_k() for _ in range(2)] == [0, 1]
    c.update(1, 0)                        # third: pause 2
    assert [c.next_k() for _ in range(3)] == [0, 0, 1]
    c.update(1, 1)                        # an acceptance ends the pauses
    assert c.next_k() == 2 and c.misses == 0
    with pytest.raises(ConfigError, match="draft-min <= draft-max"):
        AdaptiveK(k_max=2, k_min=3)


def test_the_cost_model_drafts_only_what_pays():
    """Speculation(cost_aware=True) with given timings: a pass of k+1 positions costing c(k+1)
    steps is worth it when the expected tokens (1 - a^(k+1)) / (1 - a) exceed c(k+1)."""
    def spec_with(cost_of_width, acc, rej):
        s = Speculation(PromptLookup(2), draft_max=8, probe_every=3)
        s.note_step(1.0)
        for w, c in cost_of_width.items():
            s.costs.pass_ms[w] = c
        s._acc, s._rej = acc, rej
        return s

    cheap = spec_with({2: 1.05, 3: 1.1}, acc=9.0, rej=1.0)          # a = 0.9, passes almost free
    assert cheap._paying_k(8) == 8                                   # extrapolated: 0.05 a position
    assert abs(cheap.cost(9) - (1.1 + 6 * 0.05)) < 1e-9
    dear = spec_with({2: 1.93}, acc=6.0, rej=4.0)                    # a = 0.6: 1.6 tokens for 1.93 steps
    assert [dear._paying_k(8) for _ in range(6)] == [0, 0, 1, 0, 0, 1]   # declined; a probe every 3rd
    assert dear.n_declined == 4
    sure = spec_with({2: 1.93}, acc=99.0, rej=1.0)                   # a = 0.99: 1.99 tokens for 1.93
    assert sure._paying_k(8) >= 1
    fresh = Speculation(PromptLookup(2))                             # nothing timed: draft and learn
    assert fresh._paying_k(5) == 5 and fresh.cost(2) is None
    off = spec_with({2: 50.0}, acc=1.0, rej=9.0)
    off.cost_aware = False
    assert off._paying_k(4) == 4


def test_a_drafter_that_is_always_wrong_is_asked_less_and_less():
    vocab = 50
    model = fake_model(RollbackRunner(_hash_next(vocab), vocab=vocab), context=600)
    prompt = [1, 2, 3]
    plain = _events(generate(model, prompt, n=300, sampler=GREEDY, stop_ids=()))
    wrong = Oracle(prompt, list(plain[1].token_ids), vocab, 1.0)
    spec = _events(generate(model, prompt, n=300, sampler=GREEDY, stop_ids=(),
                            draft=Speculation(wrong, cost_aware=False)))
    _same_stream(plain, spec)
    done = spec[1]
    # pauses of 1, 2, 4 ... 64 tokens: a few dozen verification passes in 300 tokens, each of 1 draft
    # after the first
    assert done.n_accept == 0 and done.n_draft < 40 and wrong.calls < 30
    assert done.n_pass == done.n_eval == 299



def test_a_new_generation_starts_from_the_pass_costs_measured_before_on_that_runner():
    """The cost model's timings belong to the runner (machine, model, threads), not to a text: a
    fresh Speculation on the same runner adopts them (no passes spent relearning them), one on
    another runner starts empty, and the output stays plain decode's either way."""
    vocab = 50
    runner = RollbackRunner(_hash_next(vocab), vocab=vocab)
    model = fake_model(runner, context=600)
    prompt = [1, 2, 3]
    plain = _events(generate(model, prompt, n=60, sampler=GREEDY, stop_ids=()))
    first = Speculation(PromptLookup(2))
    assert first.cost(2) is None
    _same_stream(plain, _events(generate(model, prompt, n=60, sampler=GREEDY, stop_ids=(), draft=first)))
    assert first.costs is shared_costs(runner) and first.costs.step_ms and first.costs.pass_ms
    second = Speculation(PromptLookup(2))
    _same_stream(plain, _events(generate(model, prompt, n=60, sampler=GREEDY, stop_ids=(), draft=second)))
    assert second.costs is first.costs                       # learned once, shared
    other = RollbackRunner(_hash_next(vocab), vocab=vocab)
    assert shared_costs(other) is not first.costs and shared_costs(other).step_ms is None
    own = Speculation(PromptLookup(2))
    own.note_step(2.0)                                        # timed something itself: keeps its own
    own.share_costs(first.costs)
    assert own.costs is not first.costs and own.costs.step_ms == 2.0

# =====================================================================================
# Sampling: exactly the target distribution
# =====================================================================================


def _chi2_ok(counts: np.ndarray, probs: np.ndarray, alpha: float = 1e-6) -> tuple[bool, float]:
    from scipy.stats import chi2

    keep = probs > 0
    assert counts[~keep].sum() == 0, "a token of probability 0 was drawn"
    n = counts.sum()
    exp = n * probs[keep]
    stat = float((((counts[keep] - exp) ** 2) / exp).sum())
    return stat < chi2.ppf(1 - alpha, keep.sum() - 1), stat


@pytest.mark.parametrize("q_kind", ["one-hot", "close", "far", "disjoint-support"])
def test_accept_or_resample_draws_from_the_target_distribution(q_kind):
    """40k draws of the rule at one position on a 6-token vocabulary; chi-square at 1e-6. A rule
    that resamples from p instead of the residual, or accepts with p(d) instead of p(d)/q(d),
    fails this by a wide margin (checked by mutating it once)."""
    rng = np.random.default_rng(1234)
    p = np.array([0.05, 0.4, 0.25, 0.0, 0.2, 0.1])
    q = {"one-hot": None,
         "close": np.array([0.1, 0.35, 0.2, 0.05, 0.2, 0.1]),
         "far": np.array([0.5, 0.05, 0.05, 0.3, 0.05, 0.05]),
         "disjoint-support": np.array([0.0, 0.0, 0.0, 0.7, 0.0, 0.3])}[q_kind]
    n = 40_000
    counts = np.zeros(6, np.int64)
    accepted = 0
    for _ in range(n):
        d = 2 if q is None else int(rng.choice(6, p=q))
        t, ok = accept_or_resample(p, q, d, rng)
        counts[t] += 1
        accepted += ok
    ok, stat = _chi2_ok(counts, p)
    assert ok, (q_kind, stat, counts / n)
    # the acceptance rate is sum(min(p, q)) (one-hot on 2: p[2])
    expect = p[2] if q is None else float(np.minimum(p, q).sum())
    assert abs(accepted / n - expect) < 5 * np.sqrt(expect * (1 - expect) / n) + 1e-9


class _SmallLM:
    """A 5-token 'language model' whose logits depend on the last two tokens (fixed table)."""

    def __init__(self, seed: int, vocab: int = 5):
        self.table = np.random.default_rng(seed).normal(0, 1.2, (vocab, vocab, vocab)).astype(np.float32)
        self.vocab = vocab

    def row(self, tokens):
        prev = tokens[-2] if len(tokens) > 1 else 0
        return self.table[prev % self.vocab, tokens[-1] % self.vocab]


class _TableRunner(RollbackRunner):
    def __init__(self, lm: _SmallLM):
        super().__init__(lambda t: 0, vocab=lm.vocab)
        self.lm = lm

    def forward(self, ids, cache, *, last_only=False):
        rows = []
        for i in ids:
            cache.tokens.append(int(i))
            rows.append(self.lm.row(cache.tokens))
        out = np.stack(rows).astype(np.float32)
        return out[-1:] if last_only else out


@pytest.mark.parametrize("drafter_kind", ["draft-model-sampled", "draft-model-greedy", "lookup"])
def test_sampled_generation_has_the_target_distribution(drafter_kind):
    """The joint distribution of the first 3 generated tokens (125 outcomes) under temperature
    0.9 + top-k 4 + a repetition penalty, from 3000 seeded generations with speculation, against
    the exact target distribution enumerated from the sampler's own processed probabilities."""
    target_lm, draft_lm = _SmallLM(7), _SmallLM(8)
    sampler = make_sampler(temp=0.9, top_k=4, top_p=1.0, min_p=0.0, repeat_penalty=1.3, repeat_last_n=3)
    tok = FakeTokenizer()
    model = fake_model(_TableRunner(target_lm), tok, context=64)
    model.config.vocab = 5
    prompt = [1, 3, 1, 3]

    exact = np.zeros((5, 5, 5))
    for a, b, c in itertools.product(range(5), repeat=3):
        h = list(prompt)
        pr = 1.0
        for t in (a, b, c):
            pr *= target_probs(sampler, target_lm.row(h), h)[t]
            h.append(t)
        exact[a, b, c] = pr
    assert abs(exact.sum() - 1) < 1e-9

    counts = np.zeros((5, 5, 5), np.int64)
    n_accept = 0
    for seed in range(3000):
        if drafter_kind == "lookup":
            drafter = PromptLookup(2)
        else:
            drafter = DraftModel(_TableRunner(draft_lm), n_ctx=64, sample=drafter_kind == "draft-model-sampled")
        events = list(generate(model, prompt, n=3, sampler=sampler, seed=seed, stop_ids=(),
                               draft=Speculation(drafter, draft_max=3, cost_aware=False)))
        counts[tuple(e.token_id for e in events[:-1])] += 1
        n_accept += events[-1].n_accept
    ok, stat = _chi2_ok(counts.reshape(-1), exact.reshape(-1))
    assert ok, (drafter_kind, stat)
    assert n_accept > 300                 # the drafts were really verified and often kept


# =====================================================================================
# Unit pieces and errors
# =====================================================================================


def test_verify_step_rolls_back_past_the_first_rejection():
    vocab = 20
    runner = RollbackRunner(lambda t: (t[-1] + 1) % vocab, vocab=vocab)   # counts up
    cache = runner.new_cache(50)
    runner.forward([3, 4], cache)
    step = verify_step(runner, cache, [3, 4], 5, Draft((6, 7, 9, 10)), GREEDY, np.random.default_rng(0))
    assert step.fed == [5, 6, 7, 9, 10] and step.accepted == [6, 7] and step.correction == 8
    assert cache.tokens == [3, 4, 5, 6, 7]   # 9 and 10 rolled back
    step = verify_step(runner, cache, [3, 4, 5, 6, 7], 8, Draft((9, 10)), GREEDY, np.random.default_rng(0))
    assert step.accepted == [9, 10] and step.correction is None and cache.tokens == [3, 4, 5, 6, 7, 8, 9, 10]
    assert int(np.argmax(step.rows[2])) == 11


def test_spec_strings_and_errors(tiny_gguf):
    assert isinstance(make_drafter("lookup"), PromptLookup) and make_drafter("lookup:5").ngram_max == 5
    for bad in ("lookup:0", "lookup:x", "self:", "self:-1"):
        with pytest.raises(ConfigError, match="positive integer"):
            make_drafter(bad)
    with pytest.raises(ConfigError, match="no such file"):
        make_drafter("/nonexistent/draft.gguf", load=lambda p: None)
    with pytest.raises(ConfigError, match="needs a loader"):
        make_drafter(str(tiny_gguf))
    with pytest.raises(ConfigError, match="draft= takes"):
        make_drafter(3.5)
    model = fake_model(FakeRunner(lambda t: 1))              # FakeCache has no truncate
    with pytest.raises(ConfigError, match="no truncate"):
        generate(model, [1, 2], draft="lookup:2")
    rmodel = fake_model(RollbackRunner(lambda t: 1))
    with pytest.raises(ConfigError, match="draft_max must be a positive integer"):
        generate(rmodel, [1, 2], draft="lookup:2", draft_max=0)
    import bitnet_lab as bl

    m = bl.load(tiny_gguf)
    for n in (0, 4, 9):
        with pytest.raises(ConfigError, match=r"N must be in 1\.\.3"):
            SelfSpeculative(m, n)


def test_a_draft_model_with_another_vocabulary_is_refused(tmp_path, tiny_gguf):
    import bitnet_lab as bl
    from bitnet_lab.tools.default_model import default_model_path

    target = bl.load(tiny_gguf)
    other = bl.load(default_model_path())
    with pytest.raises(ConfigError, match="vocabulary has 4096 tokens, the target's 32000"):
        check_same_vocabulary(other, target)
    with pytest.raises(ConfigError, match="vocabulary has 4096 tokens"):
        list(target.generate("hi", n=2, draft=str(other.source)))
    check_same_vocabulary(bl.load(tiny_gguf), target)       # the same file: fine


def test_a_chat_with_speculation_answers_as_without_it():
    """Two turns of a chat session: same answers, same cache, the drafter kept across turns."""
    from bitnet_lab.generate.chat import ChatSession

    cycle = {ord("a"): ord("b"), ord("b"): ord("c"), ord("c"): ord("a")}

    def nxt(tokens):                 # a, b, c, a, ... for 10 tokens, then EOS
        run = 0
        while run < len(tokens) and tokens[-1 - run] in cycle:
            run += 1
        if run >= 10:
            return EOS
        return cycle[tokens[-1]] if run else ord("abc"[len(tokens) % 3])

    answers = []
    for draft in (None, Speculation(PromptLookup(2), cost_aware=False)):
        runner = RollbackRunner(nxt)
        session = ChatSession(fake_model(runner, context=400), sampler=GREEDY, chat_format="llama3", draft=draft)
        got = []
        for msg in ("hi", "again"):
            events = list(session.send(msg))
            got.append((events[-1].token_ids, events[-1].generated_text))
        answers.append((got, list(session.cache.tokens), session.tokens))
        if draft:
            assert events[-1].n_accept > 0 and session.draft.n_pass > 2
    assert answers[0] == answers[1]
