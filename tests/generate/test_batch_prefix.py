"""BatchGenerator(reuse_prefix=True): a request reuses the cached prefix a finished request left in
a free slot, feeds only the rest of its prompt, and still gets exactly generate()'s tokens."""

from __future__ import annotations

import pytest

from bitnet_lab.generate.batch import BatchGenerator
from bitnet_lab.generate.loop import DoneEvent, generate
from bitnet_lab.generate.sampling import make_sampler


@pytest.fixture(scope="module")
def tiny(tiny_gguf):
    import bitnet_lab

    return bitnet_lab.load(tiny_gguf)


class _Counting:
    """The model's backend, counting the tokens forward_batch is fed."""

    def __init__(self, runner):
        self.inner, self.fed = runner, 0
        self.config, self.vocab_size = runner.config, runner.vocab_size

    def new_cache(self, n):
        return self.inner.new_cache(n)

    def forward_batch(self, seqs, caches, **kw):
        self.fed += sum(len(s) for s in seqs)
        return self.inner.forward_batch(seqs, caches, **kw)


def _run(tiny, prompts, reuse):
    backend = _Counting(tiny.runner)
    gen = BatchGenerator(backend, n_slots=2, n_ctx=256, prefill_chunk=8, tokenizer=tiny.tokenizer,
                         reuse_prefix=reuse)
    results = []
    for p in prompts:                      # one after the other: each finds the slots the last left
        rid = gen.submit(p, sampler=make_sampler(temp=0), max_tokens=5)
        while gen.active or gen.waiting:
            for ev in gen.step():
                if ev.finished and ev.request == rid:
                    results.append(ev.result)
    return results, backend.fed, gen.reused_tokens


def test_reused_prefixes_give_the_same_tokens_with_fewer_fed(tiny):
    enc = tiny.tokenizer.encode
    base = enc("A system prompt that every request of this conversation starts with, word for word")
    prompts = [base + enc(" first question"), base + enc(" second question"), enc("something else"),
               base + enc(" first question"), base + enc(" first question") + enc(" and more")]
    with_reuse, fed_reuse, reused = _run(tiny, prompts, True)
    without, fed_plain, none = _run(tiny, prompts, False)
    for p, a, b in zip(prompts, with_reuse, without):
        done = [ev for ev in generate(tiny, p, n=5, sampler=make_sampler(temp=0), n_ctx=256)
                if isinstance(ev, DoneEvent)][0]
        assert a.token_ids == b.token_ids == done.token_ids
        assert a.text == done.generated_text
    assert none == 0 and reused >= 3 * len(base)     # p1, p3 and p4 (p2 shares too little to evict p1)
    assert fed_reuse == fed_plain - reused


def test_a_short_shared_prefix_does_not_evict_a_useful_cache(tiny):
    enc = tiny.tokenizer.encode
    long = enc("a long shared beginning that is worth keeping for the next request")
    # 'x' shares only the BOS with the slot `long` left: it takes the other (empty) slot
    _, _, reused = _run(tiny, [long, enc("x"), long + enc(" again")], True)
    assert reused == len(long)


def test_a_prompt_equal_to_the_cache_still_feeds_its_last_token(tiny):
    p = tiny.tokenizer.encode("the same prompt twice, long enough to be worth more than a prefill chunk")
    (first, second), _, reused = _run(tiny, [p, p], True)
    assert first.token_ids == second.token_ids and reused == len(p) - 1
