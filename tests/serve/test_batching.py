"""Batching is lossless: with greedy sampling a request's tokens are the same alone and among 15
concurrent others — long prompts (prefilled in chunks across steps) and short ones mixed, requests
joining and leaving the running batch as they finish at different lengths."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from bitnet_lab.generate.loop import DoneEvent, generate
from bitnet_lab.generate.sampling import make_sampler


def _prompts(tiny):
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi".split()
    out = []
    for i in range(16):
        text = " ".join(words[i:] + words[:i])
        if i % 4 == 0:
            text = " ".join([text] * 4)                      # ~70 tokens: several prefill chunks of 16
        out.append(tiny.tokenizer.encode(text))
    return out


def test_a_request_gets_the_same_tokens_alone_and_among_15_others(server, client, tiny):
    prompts = _prompts(tiny)
    lengths = [3 + (i % 5) * 2 for i in range(16)]          # finish at different steps

    def ask(i):
        r = client.completions.create(model="tiny", prompt=prompts[i], max_tokens=lengths[i], temperature=0,
                                      logprobs=1)
        c = r.choices[0]
        return c.text, c.logprobs.tokens, c.logprobs.token_logprobs

    alone_first = ask(0)                                     # through the server, nobody else there
    with ThreadPoolExecutor(16) as pool:
        together = list(pool.map(ask, range(16)))
    assert together[0] == alone_first
    for i, (text, tokens, lps) in enumerate(together):
        done = [ev for ev in generate(tiny, prompts[i], n=lengths[i], sampler=make_sampler(temp=0), n_ctx=128)
                if isinstance(ev, DoneEvent)][0]
        assert text == done.generated_text, i
        assert tokens == [tiny.tokenizer.token_to_piece(t) for t in done.token_ids], i
    metrics = server.app.state.metrics
    assert metrics.steps and metrics.batch_rows / metrics.steps > 1   # they did share steps


def test_a_shared_prompt_prefix_is_not_fed_again_and_changes_nothing(server, client, tiny):
    system = " ".join(["You are a careful assistant who answers in one short sentence."] * 3)
    asks = [system + " What is two plus two?", system + " Name a colour."]
    first = [client.completions.create(model="tiny", prompt=p, max_tokens=4, temperature=0).choices[0].text
             for p in asks]
    before = server.app.state.metrics.reused_prompt_tokens
    again = [client.completions.create(model="tiny", prompt=p, max_tokens=4, temperature=0).choices[0].text
             for p in asks]
    assert again == first
    for p, text in zip(asks, again):
        done = [ev for ev in generate(tiny, tiny.tokenizer.encode(p), n=4, sampler=make_sampler(temp=0),
                                      n_ctx=128) if isinstance(ev, DoneEvent)][0]
        assert text == done.generated_text
    assert server.app.state.metrics.reused_prompt_tokens - before >= 2 * len(tiny.tokenizer.encode(system)) - 2
