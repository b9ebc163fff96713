"""Samplers and the generation loop (bitnet_lab.generate), on fakes: no JAX, no model file."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from bitnet_lab.errors import BitnetLabError, ConfigError
from bitnet_lab.generate import (
    Candidates,
    DoneEvent,
    Draw,
    Greedy,
    MinP,
    RepetitionPenalty,
    SamplerChain,
    Temperature,
    TokenEvent,
    TopK,
    TopP,
    generate,
    make_sampler,
    stream_tokens,
)
from fakes_generate import EOS, EOT, VOCAB, FakeRunner, FakeTokenizer, ScriptRunner, fake_model


def _ids(cand: Candidates) -> set[int]:
    return set(int(i) for i in cand.ids)


def _run(model, prompt="hi", **kw):
    events = list(generate(model, prompt, **kw))
    toks = [e for e in events if isinstance(e, TokenEvent)]
    done = events[-1]
    assert isinstance(done, DoneEvent) and all(isinstance(e, TokenEvent) for e in events[:-1])
    return toks, done


def _b(s: str) -> list[int]:
    return list(s.encode())


# =====================================================================================
# Samplers
# =====================================================================================


def test_greedy_is_argmax():
    rng = np.random.default_rng(0)
    for _ in range(20):
        logits = rng.normal(size=500).astype(np.float32)
        assert make_sampler(temp=0).sample(logits, [], rng) == int(np.argmax(logits))
        assert SamplerChain((), Greedy()).sample(logits, [], rng) == int(np.argmax(logits))
    # ties go to the lowest id
    assert SamplerChain((), Greedy()).sample(np.array([0.0, 3.0, 1.0, 3.0]), [], rng) == 1


def test_temperature_zero_in_a_chain_is_greedy():
    logits = np.array([0.1, 2.0, 1.9, -1.0])
    chain = SamplerChain((Temperature(0.0),), Draw())
    rng = np.random.default_rng(1)
    assert {chain.sample(logits, [], rng) for _ in range(50)} == {1}


def test_top_k_support_is_exactly_the_k_best():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=1000)
    for k in (1, 5, 40, 999):
        cand = TopK(k).apply(Candidates.from_logits(logits), [])
        assert _ids(cand) == set(np.argsort(-logits)[:k].tolist())
        assert cand.sorted and np.all(np.diff(cand.logits) <= 0)
    # draws land only in the support, and every member of a flat top-k is reached
    flat = np.zeros(100)
    flat[[3, 17, 42]] = 1.0
    chain = SamplerChain((TopK(3),), Draw())
    seen = {chain.sample(flat, [], rng) for _ in range(200)}
    assert seen == {3, 17, 42}
    # k <= 0 keeps everything; ties at the boundary are resolved by id, deterministically
    assert len(TopK(0).apply(Candidates.from_logits(logits), [])) == 1000
    tie = np.array([1.0, 5.0, 1.0, 1.0, 0.0])
    assert _ids(TopK(2).apply(Candidates.from_logits(tie), [])) == {1, 0}


def _probs_to_logits(p):
    return np.log(np.asarray(p, dtype=np.float64))


def test_top_p_keeps_the_smallest_set_reaching_the_mass():
    logits = _probs_to_logits([0.05, 0.5, 0.15, 0.3])
    for p, want in ((0.45, {1}), (0.75, {1, 3}), (0.85, {1, 3, 2}), (0.99, {0, 1, 2, 3})):
        assert _ids(TopP(p).apply(Candidates.from_logits(logits), [])) == want, p
    # on random distributions: kept mass >= p, and dropping the last kept token falls below p
    rng = np.random.default_rng(3)
    for _ in range(20):
        lg = rng.normal(size=300) * 2
        probs = np.exp(lg - lg.max())
        probs /= probs.sum()
        p = float(rng.uniform(0.1, 0.95))
        cand = TopP(p).apply(Candidates.from_logits(lg), [])
        kept = probs[cand.ids]
        assert kept.sum() >= p - 1e-12
        assert kept[:-1].sum() < p
        assert kept.min() >= np.delete(probs, cand.ids).max(initial=0)   # it is a top set
    assert len(TopP(1.0).apply(Candidates.from_logits(logits), [])) == 4


def test_min_p_keeps_tokens_above_a_fraction_of_the_best():
    logits = _probs_to_logits([0.05, 0.5, 0.15, 0.3])
    assert _ids(MinP(0.2).apply(Candidates.from_logits(logits), [])) == {1, 2, 3}   # >= 0.1
    assert _ids(MinP(0.5).apply(Candidates.from_logits(logits), [])) == {1, 3}      # >= 0.25
    assert _ids(MinP(0.7).apply(Candidates.from_logits(logits), [])) == {1}         # >= 0.35
    assert _ids(MinP(0.7, min_keep=2).apply(Candidates.from_logits(logits), [])) == {1, 3}
    assert len(MinP(0.0).apply(Candidates.from_logits(logits), [])) == 4


def test_repetition_penalty_direction_and_window():
    logits = np.array([2.0, -2.0, 1.0, 0.5, 3.0])
    pen = RepetitionPenalty(2.0, last_n=3)
    out = pen.apply(Candidates.from_logits(logits), [4, 0, 1, 1]).logits   # window: [0, 1, 1]
    assert out[0] == 1.0            # positive: divided
    assert out[1] == -4.0           # negative: multiplied (once, although seen twice)
    assert out[2] == 1.0 and out[3] == 0.5
    assert out[4] == 3.0            # outside the last 3 tokens
    # both directions make seen tokens less likely
    p_before = np.exp(logits) / np.exp(logits).sum()
    p_after = np.exp(out) / np.exp(out).sum()
    assert p_after[0] < p_before[0] and p_after[1] < p_before[1]
    # a penalty makes greedy avoid the repeated token
    assert make_sampler(temp=0, repeat_penalty=1.5).sample(np.array([3.0, 2.5]), [0], None) == 1
    assert make_sampler(temp=0).sample(np.array([3.0, 2.5]), [0], None) == 0
    # frequency / presence, and last_n = -1 (whole context)
    fp = RepetitionPenalty(1.0, last_n=-1, frequency=0.5, presence=1.0)
    out = fp.apply(Candidates.from_logits(logits), [2, 2, 2]).logits
    assert out[2] == pytest.approx(1.0 - 1.5 - 1.0)
    with pytest.raises(ConfigError):
        RepetitionPenalty(0.0)


def test_penalty_applies_to_candidates_after_other_filters():
    logits = np.array([5.0, 4.0, 3.0, 2.0])
    cand = TopK(3).apply(Candidates.from_logits(logits), [])
    out = RepetitionPenalty(2.0).apply(cand, [0])
    assert dict(zip(out.ids.tolist(), out.logits.tolist())) == {0: 2.5, 1: 4.0, 2: 3.0}


def test_draw_frequencies_follow_the_tempered_softmax():
    logits = np.log(np.array([0.1, 0.2, 0.3, 0.4]))
    temp = 0.7
    chain = SamplerChain((Temperature(temp),), Draw())
    rng = np.random.default_rng(4)
    n = 20000
    counts = np.bincount([chain.sample(logits, [], rng) for _ in range(n)], minlength=4)
    want = np.exp(logits / temp)
    want /= want.sum()
    # 5 standard deviations of a binomial count
    assert np.all(np.abs(counts / n - want) < 5 * np.sqrt(want * (1 - want) / n))


def test_make_sampler_order_matches_llama_cpp():
    chain = make_sampler(temp=0.8, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.1, repeat_last_n=64)
    assert [type(f) for f in chain.filters] == [RepetitionPenalty, TopK, TopP, MinP, Temperature]
    assert isinstance(chain.selector, Draw)
    assert chain.name.startswith("penalties(") and chain.name.endswith("top-k(40) -> top-p(0.95) -> min-p(0.05) -> temp(0.8) -> draw")
    assert make_sampler(temp=0).is_greedy
    # identity filters are left out
    assert make_sampler(top_k=0, top_p=1.0, min_p=0.0, temp=1.0).filters == ()
    with pytest.raises(dataclasses.FrozenInstanceError):
        chain.selector = Greedy()          # frozen descriptions
    with pytest.raises(dataclasses.FrozenInstanceError):
        TopK(3).k = 4


def test_seeded_sampling_is_reproducible_and_seeds_differ():
    logits = np.zeros(200)   # flat: every draw is a fresh choice among 200
    chain = make_sampler(top_k=0, top_p=1.0, min_p=0.0, temp=1.0)

    def draws(seed):
        rng = np.random.default_rng(seed)
        return [chain.sample(logits, [], rng) for _ in range(30)]

    assert draws(7) == draws(7)
    assert draws(7) != draws(8)


# =====================================================================================
# Generation loop
# =====================================================================================


def test_generate_stops_on_eos_and_never_emits_its_text():
    model = fake_model(ScriptRunner(_b("Hi!") + [EOS]))
    toks, done = _run(model, "hello", n=50, seed=0)
    assert [t.token_id for t in toks] == _b("Hi!") + [EOS]
    assert "".join(t.text for t in toks) == "Hi!" == done.generated_text
    assert toks[-1].eog and not any(t.eog for t in toks[:-1])
    assert done.reason == "eos" and done.n_generated == 4
    assert done.n_prompt == len("hello") + 1        # + BOS
    assert done.n_eval == 3                          # the EOS itself is never fed
    assert done.token_ids == tuple(_b("Hi!") + [EOS])


def test_generate_stops_on_eot():
    model = fake_model(ScriptRunner(_b("ok") + [EOT, ord("x")]))
    toks, done = _run(model, "q", n=50)
    assert done.reason == "eos" and done.generated_text == "ok" and toks[-1].token_id == EOT


def test_ignore_eos_and_custom_stop_ids():
    model = fake_model(ScriptRunner(_b("ab") + [EOS] + _b("cd")))
    _, done = _run(model, "q", n=6, ignore_eos=True)
    assert done.reason == "length" and done.n_generated == 6
    _, done = _run(fake_model(ScriptRunner(_b("abcd"))), "q", n=9, stop_ids=[ord("c")])
    assert done.reason == "eos" and done.generated_text == "ab"


def test_stop_string_split_across_tokens_is_never_emitted():
    model = fake_model(ScriptRunner(_b("abc<STOP>def")))
    toks, done = _run(model, "q", n=50, stop=["<STOP>"])
    assert done.reason == "stop_string"
    assert done.generated_text == "abc" == "".join(t.text for t in toks)
    assert [t.token_id for t in toks] == _b("abc<STOP>")    # stops at the token completing it
    assert all("<" not in t.text for t in toks)


def test_stop_string_false_start_is_released_later():
    model = fake_model(ScriptRunner(_b("a<STx b") + [EOS]))
    toks, done = _run(model, "q", n=50, stop=["<STOP>", "zz"])
    texts = [t.text for t in toks]
    assert texts[:4] == ["a", "", "", ""]               # "<", "S", "T" held back
    assert texts[4] == "<STx"                           # released when "x" rules the stop out
    assert done.generated_text == "a<STx b" and done.reason == "eos"


def test_held_back_text_is_flushed_at_the_length_limit():
    model = fake_model(ScriptRunner(_b("ab<ST")))
    toks, done = _run(model, "q", n=5, stop=["<STOP>"])
    assert done.reason == "length" and done.generated_text == "ab<ST" and toks[-1].text == "<ST"


def test_n_limits_the_number_of_tokens():
    model = fake_model(ScriptRunner(_b("abcdefghij")))
    toks, done = _run(model, "q", n=4)
    assert len(toks) == 4 and done.reason == "length" and done.generated_text == "abcd"
    assert done.n_eval == 3
    _, done = _run(model, "q", n=0)
    assert done.n_generated == 0 and done.reason == "length"


def test_n_minus_one_runs_to_the_end_of_the_context():
    model = fake_model(ScriptRunner(_b("never ends ")), context=20)
    toks, done = _run(model, "abcd", n=-1)           # 5 prompt tokens with BOS
    assert done.reason == "context"
    assert done.n_generated == 20 - 5 + 1            # 15 fed, the last one sampled only
    assert done.n_eval == 15
    # an explicit n_ctx overrides the model's
    _, done = _run(model, "abcd", n=-1, n_ctx=8)
    assert done.reason == "context" and done.n_generated == 8 - 5 + 1


def test_prompt_longer_than_context_is_a_clear_error():
    model = fake_model(ScriptRunner(_b("x")), context=20)
    with pytest.raises(ConfigError, match=r"30 tokens.*holds 20") as e:
        generate(model, "x" * 29)                    # + BOS = 30; raised before any event
    assert isinstance(e.value, BitnetLabError)
    with pytest.raises(ConfigError, match="empty"):
        generate(model, [], n=3)
    with pytest.raises(ConfigError, match="n .*-1"):
        generate(model, "q", n=-2)
    with pytest.raises(ConfigError, match=f"{VOCAB + 5}.*vocabulary"):
        generate(model, [1, VOCAB + 5])


def test_prompt_may_be_token_ids_and_add_bos_is_honoured():
    runner = ScriptRunner(_b("z"))
    model = fake_model(runner)
    _run(model, [256, 104, 105], n=1)
    assert runner.calls[0] == [256, 104, 105]
    _run(model, "hi", n=1, add_bos=False)
    assert runner.calls[-1] == _b("hi")


def test_utf8_never_split_in_a_text_delta():
    model = fake_model(ScriptRunner(_b("é€") + [EOS]))
    toks, done = _run(model, "q", n=10)
    assert [t.text for t in toks] == ["", "é", "", "", "€", ""]
    assert done.generated_text == "é€"


def test_logprob_is_the_model_log_probability():
    model = fake_model(ScriptRunner(_b("a")))
    toks, _ = _run(model, "q", n=2, sampler=make_sampler(temp=0))
    want = 10.0 - math.log(math.exp(10.0) + VOCAB - 1)
    assert toks[0].logprob == pytest.approx(want, abs=1e-9)


def test_sampled_generation_is_reproducible_with_a_seed():
    flat = FakeRunner(lambda toks: 0, peak=0.0)    # uniform logits: every token is a draw
    model = fake_model(flat)
    chain = make_sampler(top_k=0, top_p=1.0, min_p=0.0, temp=1.0)
    _, d1 = _run(model, "q", n=20, seed=11, sampler=chain, stop_ids=())
    _, d2 = _run(model, "q", n=20, seed=11, sampler=chain, stop_ids=())
    _, d3 = _run(model, "q", n=20, seed=12, sampler=chain, stop_ids=())
    assert d1.token_ids == d2.token_ids and d1.token_ids != d3.token_ids
    assert d1.seed == 11
    _, d4 = _run(model, "q", n=2, sampler=chain, stop_ids=())
    assert isinstance(d4.seed, int) and 0 <= d4.seed < 2**32   # random seed, reported


def test_should_stop_interrupts_cleanly():
    model = fake_model(ScriptRunner(_b("abcdef")))
    calls = {"n": 0}

    def stop_after_two():
        calls["n"] += 1
        return calls["n"] >= 2

    toks, done = _run(model, "q", n=50, should_stop=stop_after_two)
    assert done.reason == "interrupted" and done.generated_text == "ab" and len(toks) == 2


def test_done_event_rates_and_timings():
    model = fake_model(ScriptRunner(_b("abcdef")))
    toks, done = _run(model, "hello", n=6)
    assert done.prompt_ms > 0 and done.eval_ms > 0 and done.n_eval == 5
    assert done.prompt_tokens_per_s == pytest.approx(1000 * 6 / done.prompt_ms)
    assert done.eval_tokens_per_s == pytest.approx(1000 * 5 / done.eval_ms)
    assert done.eval_ms_per_token == pytest.approx(done.eval_ms / 5)
    assert all(t.t_ms >= 0 for t in toks) and toks[0].t_ms >= done.prompt_ms
    e = DoneEvent("length", 0, 0, 0.0, 0.0)
    assert math.isnan(e.prompt_tokens_per_s) and math.isnan(e.eval_ms_per_token)
    with pytest.raises(dataclasses.FrozenInstanceError):
        toks[0].text = "x"


def test_stream_tokens_continues_an_existing_cache():
    runner = ScriptRunner(_b("xy"), _b("zw"))
    tok = FakeTokenizer()
    cache = runner.new_cache(64)
    events = list(stream_tokens(runner, tok, cache, _b("ab"), n=2, sampler=make_sampler(temp=0)))
    assert events[-1].generated_text == "xy" and cache.pos == 3          # "ab" + "x"; "y" not fed
    events = list(stream_tokens(runner, tok, cache, [ord("y"), ord("c")], history=cache.tokens,
                                n=2, sampler=make_sampler(temp=0)))
    assert events[-1].generated_text == "zw" and runner.calls[-2] == [ord("y"), ord("c")]
    with pytest.raises(ConfigError, match=r"60 tokens.*holds 64 \(6 already in the cache, 58 free\)"):
        stream_tokens(runner, tok, cache, [1] * 60)


def test_model_generate_uses_the_runner_of_any_backend():
    from bitnet_lab.model import Model

    runner = ScriptRunner(_b("ok") + [EOS])
    fm = fake_model(runner)
    model = Model(config=fm.config, tensors={}, metadata={}, source=Path("fake.gguf"),
                  file_format="gguf", backend="native", _tokenizer=fm.tokenizer, _runner=runner)
    events = list(model.generate("hey", n=10))
    assert events[-1].reason == "eos" and events[-1].generated_text == "ok"
    assert runner.calls[0] == [256] + _b("hey")


# =====================================================================================
# On a real tiny model (skips while the model helpers are absent)
# =====================================================================================


def test_generate_on_a_tiny_reference_model(tiny_gguf):
    import bitnet_lab

    model = bitnet_lab.load(tiny_gguf, backend="reference")
    greedy = make_sampler(temp=0)
    d1 = list(model.generate("Hello", n=5, sampler=greedy, n_ctx=64))[-1]
    d2 = list(model.generate("Hello", n=5, sampler=greedy, n_ctx=64))[-1]
    assert d1.token_ids == d2.token_ids and d1.n_generated >= 1
    # greedy generation through the KV cache = argmax of one full forward over the sequence
    ids = model.tokenizer.encode("Hello")
    gen = [t for t in d1.token_ids if t not in model.tokenizer.eog_ids]
    full = model.logits(ids + gen[:-1])                      # (T, vocab)
    assert [int(np.argmax(r)) for r in full[len(ids) - 1:]] == gen
    # a prompt longer than the context: a clear error before any work
    with pytest.raises(ConfigError, match=r"holds 8"):
        model.generate("Hello " * 20, n_ctx=8)
