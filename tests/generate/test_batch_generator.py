"""Batched generation (bitnet_lab.generate.batch) on the native engine.

- greedy: every sequence's tokens and text equal generate() on it alone (the shipped default
  model, real tokenizer; and the tiny dummy with random weights, many prompt lengths), with stop
  strings, end-of-generation tokens and token limits ending sequences at different steps;
- sampling with a seed per request: reproducible, equal to generate() alone with that seed, and
  independent of which other requests share the batch and of the slot it gets;
- continuous batching: never more than n_slots active, a finished request's slot goes to the
  next waiting one at the next step; a long prompt is fed prefill_chunk tokens per step while the
  others keep decoding; cancel(); max_tokens 0; bad requests raise one clear error.
"""

from __future__ import annotations

import numpy as np
import pytest

import bitnet_lab
from bitnet_lab.errors import ConfigError
from bitnet_lab.generate import DoneEvent, TokenEvent, generate, make_sampler
from bitnet_lab.generate.batch import BatchGenerator, generate_batch
from bitnet_lab.tools.default_model import shipped_model_path

GREEDY = make_sampler(temp=0)
PROMPTS = ["What does `statistics.median` do?", "def f(x):", "The queue module", "Hello", "import re\n",
           "Tell me about zipfile.", "a", "Show me the signature of `re.sub`."]


@pytest.fixture(scope="module")
def shipped():
    m = bitnet_lab.load(shipped_model_path(), threads=2)
    yield m
    m.close()


@pytest.fixture(scope="module")
def tiny(tiny_gguf):
    m = bitnet_lab.load(tiny_gguf, threads=2)
    yield m
    m.close()


def alone(model, prompt, **kw):
    events = list(generate(model, prompt, **kw))
    done = events[-1]
    assert isinstance(done, DoneEvent)
    texts = "".join(e.text for e in events if isinstance(e, TokenEvent))
    return done, texts


@pytest.mark.parametrize("stop", [(), ("\n",), ("e", "(")])
def test_greedy_batch_equals_alone(shipped, stop):
    results = generate_batch(shipped, PROMPTS, n=24, sampler=GREEDY, stop=stop, n_ctx=256, prefill_chunk=5)
    reasons = set()
    for prompt, res in zip(PROMPTS, results):
        done, text = alone(shipped, prompt, n=24, sampler=GREEDY, stop=stop, n_ctx=256)
        assert res.token_ids == done.token_ids, prompt
        assert res.text == done.generated_text == text, prompt
        assert res.reason == done.reason
        reasons.add(res.reason)
    if stop:   # the stop strings end some sequences early, so the batch shrinks mid-way
        assert "stop_string" in reasons


def test_greedy_batch_equals_alone_tiny_many_lengths(tiny):
    rng = np.random.default_rng(5)
    prompts = [rng.integers(0, tiny.config.vocab, int(n)).tolist() for n in rng.integers(1, 40, 16)]
    ns = [int(n) for n in rng.integers(1, 20, 16)]
    gen = BatchGenerator(tiny, n_slots=6, n_ctx=64, prefill_chunk=7)
    rids = [gen.submit(p, sampler=GREEDY, max_tokens=n, ignore_eos=True) for p, n in zip(prompts, ns)]
    results = {}
    while gen.active or gen.waiting:
        assert len(gen.active) <= 6
        for ev in gen.step():
            if ev.finished:
                results[ev.request] = ev.result
    for rid, p, n in zip(rids, prompts, ns):
        done, _ = alone(tiny, p, n=n, sampler=GREEDY, n_ctx=64, stop_ids=())
        assert results[rid].token_ids == done.token_ids
        assert results[rid].reason == done.reason


def test_context_full_ends_like_alone(tiny):
    p = list(range(1, 20))
    res = generate_batch(tiny, [p, p[:3]], n=-1, sampler=GREEDY, n_ctx=24, ignore_eos=True)
    done, _ = alone(tiny, p, n=-1, sampler=GREEDY, n_ctx=24, stop_ids=())
    assert res[0].reason == done.reason == "context" and res[0].token_ids == done.token_ids
    assert res[1].reason == "context" and len(res[1].token_ids) == 24 - 3 + 1


def test_seeded_sampling_reproducible_and_independent_of_the_batch(shipped):
    sampler = make_sampler(temp=1.0, top_k=50, top_p=0.95, min_p=0.0)
    target = "The queue module"
    done, _ = alone(shipped, target, n=20, sampler=sampler, seed=123, n_ctx=256)
    runs = [
        generate_batch(shipped, [target], n=20, sampler=sampler, seed=123, n_ctx=256)[0],
        generate_batch(shipped, PROMPTS[:3] + [target], n=20, sampler=sampler, seed=[1, 2, 3, 123], n_ctx=256)[3],
        generate_batch(shipped, [target] + PROMPTS[4:], n=20, sampler=sampler, seed=[123, 9, 9, 9, 9],
                       n_ctx=256, n_slots=2, prefill_chunk=3)[0],
    ]
    for r in runs:
        assert r.token_ids == done.token_ids and r.seed == 123
    other = generate_batch(shipped, [target], n=20, sampler=sampler, seed=124, n_ctx=256)[0]
    assert other.token_ids != done.token_ids   # the seed matters: the draws are not all argmax


def test_slots_are_reused_and_long_prompts_do_not_stall_decoding(tiny):
    gen = BatchGenerator(tiny, n_slots=2, n_ctx=128, prefill_chunk=4)
    short = gen.submit([1, 2], sampler=GREEDY, max_tokens=3, ignore_eos=True)
    long = gen.submit(list(range(3, 43)), sampler=GREEDY, max_tokens=2, ignore_eos=True)   # 40 tokens: 10 steps
    third = gen.submit([5], sampler=GREEDY, max_tokens=2, ignore_eos=True)
    assert gen.waiting == [short, long, third] and gen.active == []
    steps = []
    while gen.active or gen.waiting:
        evs = gen.step()
        steps.append({ev.request: ev for ev in evs})
    # step 1: short's prompt fits in one chunk -> its first token; long prefills (no event)
    assert short in steps[0] and long not in steps[0] and gen.waiting == []
    assert steps[2][short].finished and steps[2][short].reason == "length"
    # the third request takes short's slot at the very next step, while long still prefills
    assert third in steps[3] and long not in steps[3]
    assert steps[4][third].finished
    first_long = next(i for i, s in enumerate(steps) if long in s)
    assert first_long == 9   # ceil(40 / 4) steps of prefill
    assert steps[-1][long].finished


def test_cancel_and_max_tokens_zero(tiny):
    gen = BatchGenerator(tiny, n_slots=1, n_ctx=64)
    a = gen.submit([1, 2, 3], sampler=GREEDY, max_tokens=-1, ignore_eos=True)
    b = gen.submit([4], sampler=GREEDY, max_tokens=5)
    z = gen.submit([4], sampler=GREEDY, max_tokens=0)
    first = gen.step()
    assert [e.request for e in first] == [a] and not first[0].finished
    assert gen.cancel(b) and not gen.cancel(999)
    assert gen.cancel(a)
    evs = gen.step()
    ended = {e.request: e for e in evs if e.finished}
    assert ended[b].reason == ended[a].reason == "interrupted" and ended[a].token_id is None
    assert len(ended[a].result.token_ids) == 1 and ended[b].result.token_ids == ()
    assert ended[z].reason == "length" and ended[z].result.token_ids == ()
    assert not gen.active and not gen.waiting and gen.step() == []


def test_bad_requests(tiny):
    with pytest.raises(ConfigError, match="n_slots must be a positive integer"):
        BatchGenerator(tiny, n_slots=0)
    with pytest.raises(ConfigError, match="needs a model or a backend with forward_batch"):
        BatchGenerator(object(), n_slots=1)
    gen = BatchGenerator(tiny, n_slots=1, n_ctx=8)
    with pytest.raises(ConfigError, match="the prompt is empty"):
        gen.submit([])
    with pytest.raises(ConfigError, match="the prompt has 9 tokens but the context holds 8"):
        gen.submit(list(range(9)))
    with pytest.raises(ConfigError, match="outside the vocabulary"):
        gen.submit([tiny.config.vocab])
    with pytest.raises(ConfigError, match="2 seeds for 3 prompts"):
        generate_batch(tiny, [[1], [2], [3]], seed=[1, 2])


def test_model_generate_batch_takes_the_sampler_knobs(shipped):
    res = shipped.generate_batch(["Hello", "def f(x):"], n=8, temp=0, n_ctx=128)
    for prompt, r in zip(["Hello", "def f(x):"], res):
        assert r.token_ids == alone(shipped, prompt, n=8, sampler=GREEDY, n_ctx=128)[0].token_ids
    with pytest.raises(ConfigError, match="not both"):
        shipped.generate_batch(["x"], temp=0, sampler=GREEDY)
