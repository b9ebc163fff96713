"""Chat formats and the multi-turn session (bitnet_lab.generate.chat).

Formats and KV-cache reuse run on fakes (byte-level tokenizer, scripted runner); the exact
token ids of the 2B-4T training format are checked with the real Llama-3 vocabulary once
bitnet_lab.tokenizer exists.
"""

from __future__ import annotations

import pytest

from bitnet_lab.generate.chat import (
    BitnetChatFormat,
    ChatMLChatFormat,
    ChatSession,
    ChatTemplateError,
    Falcon3ChatFormat,
    JinjaChatFormat,
    Llama3ChatFormat,
    chat_format_for,
)
from bitnet_lab.errors import ConfigError
from bitnet_lab.generate import DoneEvent, TokenEvent, make_sampler
from fakes_generate import BOS, EHI, EOS, EOT, SHI, FakeTokenizer, ScriptRunner, fake_model

GREEDY = make_sampler(temp=0)


def _b(s: str) -> list[int]:
    return list(s.encode())


def _u(content):
    return {"role": "user", "content": content}


def _a(content):
    return {"role": "assistant", "content": content}


def _s(content):
    return {"role": "system", "content": content}


# A Llama-3-style Jinja template, written the way Hub templates are (trim/lstrip blocks matter).
LLAMA3_JINJA = """{% for message in messages %}
    {% if loop.first %}{{ bos_token }}{% endif %}
    {% if message['role'] not in ['system', 'user', 'assistant'] %}
        {{ raise_exception('unknown role ' + message['role']) }}
    {% endif %}
{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}
{% if add_generation_prompt %}
{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"""

# The HF 2B-4T tokenizer_config.json template (docs/formats.md#85-chat-templates): Role: content<|eot_id|>,
# no BOS.
HF_2B4T_JINJA = (
    "{% for message in messages %}{{ message['role'] | capitalize + ': ' + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant: ' }}{% endif %}"
)

# The 2B-4T GGUF placeholder (convert-ms-to-gguf-bitnet.py), docs/formats.md#85-chat-templates.
PLACEHOLDER = ("{% for message in messages %}{% if message['role'] == 'user' %}{{ 'Human: ' + message['content'] + "
               "'\\n\\nBITNETAssistant: ' + eos_token }}{% elif message['role'] == 'assistant' %}"
               "{{ message['content'] + eos_token }}{% endif %}{% endfor %}")

# Falcon3-like: the last assistant message has no trailing newline (loop.last), others do.
FALCON3_JINJA = (
    "{% for message in messages %}{% if message['role'] == 'assistant' %}"
    "{% if not loop.last %}{{ '<|assistant|>\\n' + message['content'] + eos_token + '\\n' }}"
    "{% else %}{{ '<|assistant|>\\n' + message['content'] + eos_token }}{% endif %}"
    "{% else %}{{ '<|' + message['role'] + '|>\\n' + message['content'] + '\\n' }}{% endif %}"
    "{% if loop.last and add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}{% endfor %}"
)


# =====================================================================================
# Formats
# =====================================================================================


def test_bitnet_format_tokens_and_text():
    tok = FakeTokenizer()
    fmt = BitnetChatFormat(tok)
    msgs = [_s(" Be brief. "), _u("hi"), _a("yo"), _u("ok?")]
    want = ([BOS] + _b("System: ") + _b("Be brief.") + [EOT] + _b("User: ") + _b("hi") + [EOT]
            + _b("Assistant: ") + _b("yo") + [EOT] + _b("User: ") + _b("ok?") + [EOT] + _b("Assistant: "))
    assert fmt.encode(msgs) == want
    assert fmt.render(msgs) == "<s>System: Be brief.<|eot_id|>User: hi<|eot_id|>Assistant: yo<|eot_id|>User: ok?<|eot_id|>Assistant: "
    assert fmt.encode(msgs, add_generation_prompt=False) == want[: -len(_b("Assistant: "))]
    assert fmt.stop_ids == {EOT, EOS}
    assert fmt.assistant_close(msgs[:3]) == [EOT]


def test_bitnet_format_encodes_header_and_content_separately():
    calls = []

    class Spy(FakeTokenizer):
        def encode(self, text, add_bos=None, parse_special=False):
            calls.append((text, add_bos, parse_special))
            return super().encode(text, add_bos=add_bos, parse_special=parse_special)

    BitnetChatFormat(Spy()).encode([_u("  Hey <|eot_id|> ")])
    texts = [c[0] for c in calls if c[0] != "<|eot_id|>"]
    assert texts == ["User: ", "Hey <|eot_id|>", "Assistant: "]
    # content is never parsed for special tokens, and no BOS inside a message
    assert all(c[1] is False and c[2] is False for c in calls if c[0] != "<|eot_id|>")


def test_llama3_format_tokens_and_text():
    tok = FakeTokenizer()
    fmt = Llama3ChatFormat(tok)
    msgs = [_u(" hi ")]
    assert fmt.encode(msgs) == ([BOS, SHI] + _b("user") + [EHI] + _b("\n\n") + _b("hi") + [EOT]
                                + [SHI] + _b("assistant") + [EHI] + _b("\n\n"))
    assert fmt.render(msgs) == ("<s><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
                                "<|start_header_id|>assistant<|end_header_id|>\n\n")


def test_falcon3_format():
    tok = FakeTokenizer()
    fmt = Falcon3ChatFormat(tok)
    msgs = [_s("S"), _u("hi"), _a("yo"), _u("ok")]
    assert fmt.render(msgs) == "<|system|>\nS\n<|user|>\nhi\n<|assistant|>\nyo</s>\n<|user|>\nok\n<|assistant|>\n"
    ids = fmt.encode(msgs)
    assert ids[0] == BOS and ids.count(tok.token_to_id("<|assistant|>")) == 2   # parsed as special tokens
    assert EOS in fmt.stop_ids


def test_jinja_template_renders_like_the_hub():
    tok = FakeTokenizer(chat_template=LLAMA3_JINJA)
    fmt = JinjaChatFormat(tok, LLAMA3_JINJA)
    # trim_blocks / lstrip_blocks: no stray newlines or indentation from the template's layout
    assert fmt.render([_u(" hi ")]) == ("<s><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
                                        "<|start_header_id|>assistant<|end_header_id|>\n\n")
    # the rendered BOS text is parsed as the BOS token, and not added twice
    ids = fmt.encode([_u("hi")])
    assert ids[:2] == [BOS, SHI] and ids.count(BOS) == 1
    with pytest.raises(ChatTemplateError, match="unknown role tool"):
        fmt.render([{"role": "tool", "content": "x"}])
    with pytest.raises(ChatTemplateError, match="does not compile"):
        JinjaChatFormat(tok, "{% for m in messages %}")
    # sandboxed: no access to Python internals
    with pytest.raises(ChatTemplateError):
        JinjaChatFormat(tok, "{{ messages.__class__.__mro__[1].__subclasses__() }}").render([_u("x")])
    with pytest.raises(ConfigError, match="role"):
        fmt.render([{"content": "no role"}])


def test_jinja_incremental_turns_equal_a_full_rendering():
    tok = FakeTokenizer()
    fmt = JinjaChatFormat(tok, FALCON3_JINJA)
    past = [_u("hi"), _a("yo")]
    # the close of an answer + the next turn == the full conversation (loop.last handled)
    head = fmt.encode([_u("hi")])
    reply = _b("yo")
    close = fmt.assistant_close(past)
    nxt = fmt.encode_next(past, [_u("ok")])
    assert close == [EOS]
    assert head + reply + close + nxt == fmt.encode(past + [_u("ok")])
    # a template whose rendering does not extend the previous one is refused with the position
    bad = JinjaChatFormat(tok, "{{ messages | length }}{% for m in messages %}{{ m['content'] }}{% endfor %}")
    with pytest.raises(ChatTemplateError, match="character 0"):
        bad.encode_next([_u("a")], [_u("b")])


def test_chat_format_choice():
    # no template: the vocabulary and the architecture decide
    assert isinstance(chat_format_for(FakeTokenizer(), fake_model(ScriptRunner()).config), BitnetChatFormat)
    llama_cfg = fake_model(ScriptRunner(), arch="llama").config
    assert isinstance(chat_format_for(FakeTokenizer(), llama_cfg), Llama3ChatFormat)
    falcon_tok = FakeTokenizer(specials=["<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>"])
    assert isinstance(chat_format_for(falcon_tok, llama_cfg), Falcon3ChatFormat)
    # a base model: chatml, as llama.cpp; its end marker is text here, so a stop string
    base = chat_format_for(FakeTokenizer(specials=["<s>", "</s>"]), llama_cfg)
    assert isinstance(base, ChatMLChatFormat) and base.stop_strings == ("<|im_end|>",)
    assert "base model" in base.why
    # the 2B-4T GGUF placeholder is replaced by the training format
    placeholder_tok = FakeTokenizer(chat_template=PLACEHOLDER)
    fmt = chat_format_for(placeholder_tok, llama_cfg)
    assert isinstance(fmt, BitnetChatFormat) and "placeholder" in fmt.why
    # the HF 2B-4T template renders the training text: built at the token level instead
    assert isinstance(chat_format_for(FakeTokenizer(chat_template=HF_2B4T_JINJA)), BitnetChatFormat)
    # any other template is used as it is
    fmt = chat_format_for(FakeTokenizer(chat_template=LLAMA3_JINJA), llama_cfg)
    assert isinstance(fmt, JinjaChatFormat) and fmt.source == LLAMA3_JINJA
    # explicit choices
    assert isinstance(chat_format_for(FakeTokenizer(), None, "llama3"), Llama3ChatFormat)
    assert isinstance(chat_format_for(placeholder_tok, None, "template"), JinjaChatFormat)
    assert isinstance(chat_format_for(FakeTokenizer(), None, LLAMA3_JINJA), JinjaChatFormat)
    assert isinstance(chat_format_for(FakeTokenizer(), None, "chatml"), ChatMLChatFormat)
    with pytest.raises(ConfigError, match="unknown chat template 'vicuna'"):
        chat_format_for(FakeTokenizer(), None, "vicuna")
    with pytest.raises(ConfigError, match="no chat template"):
        chat_format_for(FakeTokenizer(), None, "template")


# =====================================================================================
# Session: the KV cache is reused across turns
# =====================================================================================


def _answer(events):
    events = list(events)
    assert isinstance(events[-1], DoneEvent) and all(isinstance(e, TokenEvent) for e in events[:-1])
    return events[-1]


def test_second_turn_feeds_only_its_own_tokens():
    runner = ScriptRunner(_b("Yo") + [EOT], _b("Fine") + [EOT])
    model = fake_model(runner)
    chat = ChatSession(model, system="Be brief.", sampler=GREEDY, seed=0)
    fmt = chat.format
    assert isinstance(fmt, BitnetChatFormat)

    d1 = _answer(chat.send("hi"))
    assert d1.reason == "eos" and d1.generated_text == "Yo"
    first_prompt = fmt.encode([_s("Be brief."), _u("hi")])
    assert runner.calls[0] == first_prompt
    assert chat.n_past == len(chat.tokens) == len(first_prompt) + 2     # + "Y", "o" (EOT not fed)

    n_calls = len(runner.calls)
    d2 = _answer(chat.send("ok?"))
    assert d2.generated_text == "Fine"
    turn2 = [EOT] + _b("User: ") + _b("ok?") + [EOT] + _b("Assistant: ")
    assert runner.calls[n_calls] == turn2 == chat.last_prompt_ids        # only the new tokens
    assert d2.n_prompt == len(turn2)
    # the cache holds exactly the whole conversation, as a from-scratch encoding would
    assert chat.messages == [_s("Be brief."), _u("hi"), _a("Yo"), _u("ok?"), _a("Fine")]
    whole = fmt.encode(chat.messages[:-1]) + _b("Fine")                 # the EOT is not fed
    assert runner.calls and sum(len(c) for c in runner.calls) == len(whole) == chat.n_past
    assert chat.tokens == whole


def test_an_answer_cut_by_length_is_closed_before_the_next_turn():
    runner = ScriptRunner(_b("abcdef"), _b("z") + [EOT])
    chat = ChatSession(fake_model(runner), sampler=GREEDY)
    d1 = _answer(chat.send("q", n=3))
    assert d1.reason == "length" and chat.messages[-1] == _a("abc")
    n_calls = len(runner.calls)
    _answer(chat.send("more"))
    # the last sampled token ("c", never fed) comes first, then the close of the message
    assert runner.calls[n_calls][:2] == [ord("c"), EOT]
    assert chat.tokens[: len(chat.format.encode([_u("q")]))] == chat.format.encode([_u("q")])


def test_jinja_session_matches_the_full_rendering():
    tok = FakeTokenizer(chat_template=FALCON3_JINJA)
    runner = ScriptRunner(_b("yo") + [EOS], _b("k") + [EOS])
    chat = ChatSession(fake_model(runner, tok, arch="llama"), sampler=GREEDY)
    assert isinstance(chat.format, JinjaChatFormat)
    _answer(chat.send("hi"))
    _answer(chat.send("ok"))
    fmt = chat.format
    assert chat.tokens == fmt.encode(chat.messages[:-1]) + _b("k")


def test_reset_and_context_overflow():
    runner = ScriptRunner(_b("Yo") + [EOT])
    chat = ChatSession(fake_model(runner, context=64), system="S", sampler=GREEDY)
    _answer(chat.send("hi"))
    before = (list(chat.messages), list(chat.tokens), chat.n_past)
    # a turn that does not fit even after a context shift (the system prompt's 11 tokens stay)
    with pytest.raises(ConfigError, match=r"this turn needs 99 tokens but the context holds 64 tokens "
                                          r"and keeps its first 11 tokens \(the system prompt\)"):
        chat.send("x" * 80)
    assert (chat.messages, chat.tokens, chat.n_past) == before           # nothing changed
    # without a context shift: what is left of the context is what counts
    chat.ctx_shift = False
    with pytest.raises(ConfigError, match=r"tokens but the context holds 64 \(\d+ already in the cache"):
        chat.send("x" * 40)
    assert (chat.messages, chat.tokens, chat.n_past) == before
    chat.ctx_shift = True
    chat.reset()
    assert chat.messages == [_s("S")] and chat.n_past == 0 and chat.tokens == []
    n_calls = len(runner.calls)
    _answer(chat.send("again"))
    assert runner.calls[n_calls] == chat.format.encode([_s("S"), _u("again")])


def test_a_stopped_answer_keeps_the_session_consistent():
    runner = ScriptRunner(_b("abcdef") + [EOT], _b("z") + [EOT])
    chat = ChatSession(fake_model(runner), sampler=GREEDY)
    gen = chat.send("q")
    got = [next(gen), next(gen)]                 # the consumer stops reading (Ctrl-C in the CLI)
    gen.close()
    assert "".join(e.text for e in got) == "ab"
    assert chat.messages[-1] == _a("ab") and chat.n_past == len(chat.tokens)
    # a turn that was never iterated changes nothing
    unused = chat.send("never read")
    del unused
    assert chat.messages[-1] == _a("ab")
    _answer(chat.send("next"))
    assert chat.n_past == len(chat.tokens) and chat.messages[-1] == _a("z")


def test_should_stop_interrupts_an_answer():
    runner = ScriptRunner(_b("abcdef") + [EOT])
    chat = ChatSession(fake_model(runner), sampler=GREEDY)
    n = {"k": 0}

    def stop():
        n["k"] += 1
        return n["k"] >= 3

    d = _answer(chat.send("q", should_stop=stop))
    assert d.reason == "interrupted" and d.generated_text == "abc" and chat.messages[-1] == _a("abc")


def test_a_forward_cut_midway_rebuilds_the_cache():
    class Flaky(ScriptRunner):
        fail_at = None

        def forward(self, ids, cache, *, last_only=False):
            if self.fail_at is not None and len(self.calls) == self.fail_at:
                cache.tokens.append(int(ids[0]))   # half-done: the cache moved
                self.fail_at = None
                raise KeyboardInterrupt
            return super().forward(ids, cache, last_only=last_only)

    runner = Flaky(_b("abc") + [EOT], _b("z") + [EOT], _b("w") + [EOT])
    chat = ChatSession(fake_model(runner), sampler=GREEDY)
    runner.fail_at = 2                              # the second decode step of turn 1
    with pytest.raises(KeyboardInterrupt):
        list(chat.send("q"))
    assert chat.messages[-1]["role"] == "assistant"
    n_calls = len(runner.calls)
    _answer(chat.send("next"))
    assert chat.n_rebuilds == 1
    assert runner.calls[n_calls] == chat.format.encode(chat.messages[:-1])   # re-read from scratch
    assert chat.n_past == len(chat.tokens)


def test_chatml_session_on_a_base_vocabulary_stops_on_the_text_marker():
    tok = FakeTokenizer(specials=["<s>", "</s>"])
    runner = ScriptRunner(_b("yo<|im_end|>\nmore"), _b("k<|im_end|>"), vocab=258)
    chat = ChatSession(fake_model(runner, tok, arch="llama"), sampler=GREEDY)
    assert isinstance(chat.format, ChatMLChatFormat)
    d = _answer(chat.send("hi"))
    assert d.reason == "stop_string" and d.generated_text == "yo"
    assert runner.calls[0] == [256] + _b("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    n_calls = len(runner.calls)
    _answer(chat.send("ok"))
    # the last sampled token (">" of the marker) then the close of the answer and the next turn
    assert runner.calls[n_calls] == _b("><|im_end|>\n<|im_start|>user\nok<|im_end|>\n<|im_start|>assistant\n")


def test_session_sampling_is_reproducible():
    from fakes_generate import FakeRunner

    def run(seed):
        r = FakeRunner(lambda t: 0, peak=0.0)
        chat = ChatSession(fake_model(r), sampler=make_sampler(top_k=0, top_p=1.0, min_p=0.0, temp=1.0), seed=seed)
        return [_answer(chat.send(m, n=8)).token_ids for m in ("a", "b")]

    assert run(5) == run(5) and run(5) != run(6)


# =====================================================================================
# Exact token ids with the real Llama-3 vocabulary (docs/formats.md#85-chat-templates)
# =====================================================================================


@pytest.fixture(scope="module")
def llama3_tok():
    import bitnet_lab.tokenizer as tokmod
    from bitnet_lab import paths

    return tokmod.Tokenizer.from_gguf(paths.LLAMA3_VOCAB)


def test_bitnet_training_format_exact_ids(llama3_tok):
    # Llama-3 ids (= cl100k's for these words), read from the vocabulary's token list:
    # System 2374, User 1502, Assistant 72803, ":" 25, " " 220, Hello 9906, Hey 19182.
    fmt = BitnetChatFormat(llama3_tok)
    msgs = [_s("Hello"), _u("Hey"), _a("Hello"), _u("Hey")]
    assert fmt.encode(msgs) == [
        128000,
        2374, 25, 220, 9906, 128009,
        1502, 25, 220, 19182, 128009,
        72803, 25, 220, 9906, 128009,
        1502, 25, 220, 19182, 128009,
        72803, 25, 220,
    ]
    assert fmt.stop_ids == {128009, 128001}
    # rendering to one string and tokenising would merge the space into " Hey" (28653)
    assert llama3_tok.encode("User: Hey", add_bos=False) == [1502, 25, 28653]


def test_llama3_header_format_exact_ids(llama3_tok):
    fmt = Llama3ChatFormat(llama3_tok)
    assert fmt.encode([_u("Hey")]) == [128000, 128006, 882, 128007, 271, 19182, 128009,
                                       128006, 78191, 128007, 271]
    # the same ids as the Hub-style Jinja rendering tokenised with special tokens parsed
    jinja = JinjaChatFormat(llama3_tok, LLAMA3_JINJA)
    assert jinja.encode([_u("Hey")]) == fmt.encode([_u("Hey")])


def test_a_template_rendering_the_training_text_is_built_at_the_token_level(llama3_tok):
    import copy
    from types import SimpleNamespace

    from bitnet_lab.tools import layouts
    tok = copy.copy(llama3_tok)
    tok.chat_template = layouts.CHAT_TEMPLATE_2B4T          # what the 2B-4T dummy (and HF) carry
    fmt = chat_format_for(tok, SimpleNamespace(arch="bitnet-b1.58"))
    assert isinstance(fmt, BitnetChatFormat) and "token level" in fmt.why
    jinja = JinjaChatFormat(tok, layouts.CHAT_TEMPLATE_2B4T)
    msgs = [_s("Hello"), _u("Hey")]
    assert jinja.render(msgs) == fmt.render(msgs) == (
        "<|begin_of_text|>System: Hello<|eot_id|>User: Hey<|eot_id|>Assistant: ")
    # same text, different tokens: the whole-string route merges the header's space (" Hey")
    assert 28653 in jinja.encode(msgs) and 28653 not in fmt.encode(msgs)
