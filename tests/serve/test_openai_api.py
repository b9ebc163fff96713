"""The API as users call it: the official `openai` client against `bitnet-lab serve`'s app.

Greedy answers are checked against `bitnet_lab.generate.generate` on the same model alone, so a
wrong prompt, a lost token or a misplaced stop fails here, not only a wrong shape.
"""

from __future__ import annotations

import numpy as np
import pytest

from bitnet_lab.generate.chat import chat_format_for
from bitnet_lab.generate.loop import DoneEvent, generate
from bitnet_lab.generate.sampling import make_sampler

GREEDY = dict(temperature=0)


def alone(model, prompt_ids, n, stop=(), stop_ids=None):
    """(text, token ids, reason) of greedy generate() on the model alone."""
    done = [ev for ev in generate(model, list(prompt_ids), n=n, sampler=make_sampler(temp=0), stop=stop,
                                  n_ctx=128, stop_ids=stop_ids) if isinstance(ev, DoneEvent)][0]
    return done.generated_text, list(done.token_ids), done.reason


def ids_of(model, text):
    return list(model.tokenizer.encode(text, parse_special=True))


def test_completion_is_the_models_own_greedy_text(client, tiny):
    r = client.completions.create(model="tiny", prompt="Hello world", max_tokens=6, **GREEDY)
    text, ids, _ = alone(tiny, ids_of(tiny, "Hello world"), 6)
    assert r.object == "text_completion" and r.model == "tiny"
    assert r.choices[0].text == text and r.choices[0].finish_reason == "length"
    assert r.usage.prompt_tokens == len(ids_of(tiny, "Hello world"))
    assert r.usage.completion_tokens == 6 and r.usage.total_tokens == r.usage.prompt_tokens + 6


def test_chat_uses_the_model_familys_template(client, tiny):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]
    r = client.chat.completions.create(model="tiny", messages=messages, max_tokens=5, **GREEDY)
    fmt = chat_format_for(tiny.tokenizer, tiny.config)
    text, _, _ = alone(tiny, fmt.encode(messages), 5, stop=fmt.stop_strings)
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant" and r.choices[0].message.content == text
    assert r.usage.prompt_tokens == len(fmt.encode(messages))


def test_streaming_completion_equals_the_whole_answer(client):
    whole = client.completions.create(model="tiny", prompt="Once upon", max_tokens=7, **GREEDY)
    chunks = list(client.completions.create(model="tiny", prompt="Once upon", max_tokens=7, stream=True,
                                            stream_options={"include_usage": True}, **GREEDY))
    texts = [c.choices[0].text for c in chunks if c.choices]
    assert "".join(texts) == whole.choices[0].text
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 7


def test_streaming_chat_sends_the_role_then_the_content(client):
    messages = [{"role": "user", "content": "Tell me"}]
    whole = client.chat.completions.create(model="tiny", messages=messages, max_tokens=6, **GREEDY)
    chunks = list(client.chat.completions.create(model="tiny", messages=messages, max_tokens=6, stream=True,
                                                 **GREEDY))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].object == "chat.completion.chunk"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == whole.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == "length"


def test_n_choices_are_the_requests_with_seeds_seed_plus_index(client):
    r = client.completions.create(model="tiny", prompt="The sky", max_tokens=5, n=3, seed=11, temperature=1.0)
    assert [c.index for c in r.choices] == [0, 1, 2]
    for j, choice in enumerate(r.choices):
        one = client.completions.create(model="tiny", prompt="The sky", max_tokens=5, seed=11 + j, temperature=1.0)
        assert choice.text == one.choices[0].text
    assert len({c.text for c in r.choices}) > 1          # three different draws
    assert r.usage.prompt_tokens == one.usage.prompt_tokens   # the prompt counted once
    chat = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}], n=2,
                                          max_tokens=3, **GREEDY)
    assert [c.index for c in chat.choices] == [0, 1]
    assert chat.choices[0].message.content == chat.choices[1].message.content   # greedy: the same


def test_stop_string_ends_the_answer_before_it(client, tiny):
    prompt = "A list of words"
    full, _, _ = alone(tiny, ids_of(tiny, prompt), 12)
    stop = full[len(full) // 2: len(full) // 2 + 3]
    assert stop.strip(), full
    r = client.completions.create(model="tiny", prompt=prompt, max_tokens=12, stop=[stop], **GREEDY)
    assert r.choices[0].text == full[: full.index(stop)]
    assert r.choices[0].finish_reason == "stop"
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model="tiny", prompt=prompt, max_tokens=12, stop=stop, stream=True, **GREEDY))
    assert streamed == r.choices[0].text


def test_completion_logprobs_and_top_logprobs(client, tiny):
    r = client.completions.create(model="tiny", prompt="Hello", max_tokens=4, logprobs=3, **GREEDY)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == 4
    assert "".join(lp.tokens) == r.choices[0].text
    for tok, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
        assert len(top) == 3
        assert max(top.values()) == pytest.approx(logprob)   # greedy: the chosen token is the best
        assert top[tok] == pytest.approx(logprob)
        assert logprob < 0


@pytest.mark.parametrize("text", ["The capital of France is Paris",
                                  " ".join(["a longer prompt scored over several chunks of 16"] * 5)])
def test_echo_logprobs_score_the_prompt_as_the_model_does(client, tiny, text):
    """A harness scoring a multiple-choice answer: the prompt's tokens and log p(token | before)."""
    ids = ids_of(tiny, text)
    r = client.completions.create(model="tiny", prompt=ids, max_tokens=0, echo=True, logprobs=1, **GREEDY)
    lp = r.choices[0].logprobs
    assert len(lp.token_logprobs) == len(ids) and lp.token_logprobs[0] is None
    rows = np.asarray(tiny.runner.logits(ids), dtype=np.float64)          # (T, vocab), one forward
    lse = np.log(np.exp(rows - rows.max(1, keepdims=True)).sum(1)) + rows.max(1)
    want = [float(rows[i - 1, ids[i]] - lse[i - 1]) for i in range(1, len(ids))]
    assert lp.token_logprobs[1:] == pytest.approx(want, abs=1e-9)
    assert r.choices[0].text == tiny.tokenizer.decode(ids)
    # with generated tokens too: the prompt first, then the completion
    r2 = client.completions.create(model="tiny", prompt=ids, max_tokens=2, echo=True, logprobs=2, **GREEDY)
    lp2 = r2.choices[0].logprobs
    assert lp2.token_logprobs[: len(ids)] == pytest.approx(lp.token_logprobs)
    assert len(lp2.tokens) == len(ids) + 2 and all(len(t) == 2 for t in lp2.top_logprobs[1:])


def test_chat_logprobs(client):
    r = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hey"}], max_tokens=3,
                                       logprobs=True, top_logprobs=2, **GREEDY)
    content = r.choices[0].logprobs.content
    assert len(content) == 3
    assert "".join(c.token for c in content) == r.choices[0].message.content
    for c in content:
        assert len(c.top_logprobs) == 2 and c.top_logprobs[0].token == c.token
        assert c.top_logprobs[0].logprob == pytest.approx(c.logprob)
        assert bytes(c.bytes).decode("utf-8", "replace") == c.token


def test_models_tokenize_detokenize_metrics(client, server, tiny):
    import httpx

    assert [m.id for m in client.models.list().data] == ["tiny"]
    h = httpx.Client(base_url=server.url, headers={"Authorization": "Bearer test-key"})
    ids = h.post("/tokenize", json={"content": "Hello world"}).json()["tokens"]
    assert ids == list(tiny.tokenizer.encode("Hello world", add_bos=False))
    pieces = h.post("/tokenize", json={"content": "Hello world", "with_pieces": True}).json()["tokens"]
    assert [p["id"] for p in pieces] == ids
    assert h.post("/detokenize", json={"tokens": ids}).json()["content"] == tiny.tokenizer.decode(ids)
    client.completions.create(model="tiny", prompt="count me", max_tokens=2, **GREEDY)
    text = h.get("/metrics").text
    assert 'bitnet_lab_requests_total{endpoint="/v1/completions",status="200"}' in text
    generated = [line for line in text.splitlines() if line.startswith("bitnet_lab_generated_tokens_total ")]
    assert int(generated[0].split()[1]) >= 2
    for name in ("queue_depth", "batch_size", "tokens_per_second", "active_requests"):
        assert f"bitnet_lab_{name} " in text


def test_max_tokens_is_capped_by_the_context(client, tiny):
    """A max_tokens past the context (128 per slot here) ends where the context is full, with
    finish_reason "length", exactly where generate() with the same context stops."""
    ids = ids_of(tiny, "Count to a thousand")
    r = client.completions.create(model="tiny", prompt=ids, max_tokens=1_000_000, **GREEDY)
    text, generated, reason = alone(tiny, ids, -1)
    assert reason == "context" and r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == len(generated) and r.choices[0].text == text
    assert r.usage.prompt_tokens + r.usage.completion_tokens <= 128 + 1   # the last token is never fed
