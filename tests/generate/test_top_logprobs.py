"""sampling.top_logprobs and BatchGenerator's per-token ``top_logprobs`` (the serve API's)."""

from __future__ import annotations

import numpy as np
import pytest

from bitnet_lab.generate.sampling import log_softmax_at, make_sampler, top_logprobs


def test_top_logprobs_are_the_k_best_in_order_with_ties_by_id():
    rng = np.random.default_rng(0)
    row = rng.normal(size=50).astype(np.float32)
    row[7] = row[3] = row.max() + 1.0                      # a tie at the top: id 3 before id 7
    top = top_logprobs(row, 5)
    assert [i for i, _ in top][:2] == [3, 7]
    assert [i for i, _ in top] == list(np.argsort(-row.astype(np.float64), kind="stable")[:5])
    for i, lp in top:
        assert lp == pytest.approx(log_softmax_at(row, i), abs=1e-12)
    assert top_logprobs(row, 0) == ()
    assert len(top_logprobs(row, 500)) == 50


def test_batch_events_carry_the_top_logprobs_asked_for(tiny_gguf):
    import bitnet_lab
    from bitnet_lab.generate.batch import BatchGenerator

    model = bitnet_lab.load(tiny_gguf)
    gen = BatchGenerator(model, n_slots=2, n_ctx=64)
    ids = model.tokenizer.encode("Hello world")
    with_top = gen.submit(ids, sampler=make_sampler(temp=0), max_tokens=4, top_logprobs=3, ignore_eos=True)
    without = gen.submit(ids, sampler=make_sampler(temp=0), max_tokens=4, ignore_eos=True)
    seen = {with_top: [], without: []}
    while gen.active or gen.waiting:
        for ev in gen.step():
            if ev.token_id is not None:
                seen[ev.request].append(ev)
    assert len(seen[with_top]) == 4
    for ev, twin in zip(seen[with_top], seen[without]):
        assert len(ev.top_logprobs) == 3 and twin.top_logprobs == ()
        best_id, best_lp = ev.top_logprobs[0]
        assert best_id == ev.token_id == twin.token_id     # greedy: the sampled token is the best
        assert best_lp == ev.logprob
    with pytest.raises(bitnet_lab.errors.ConfigError, match="top_logprobs"):
        gen.submit(ids, top_logprobs=-1)
