"""Each model family's chat format, token for token against its official template (issue 19).

For every family bitnet_lab supports, a tiny GGUF whose vocabulary and metadata mimic that family
(built with tests/gguf_builder.py) is read back, and a multi-turn conversation (system, user,
assistant, user, generation prompt) is encoded by the format `chat_format_for` picks — with the
file's ``tokenizer.chat_template`` and without it. The expected ids come from the family's
official template text (tests/data/chat_templates, sources in its README) rendered here with
plain ``jinja2`` as the Hub does and tokenised with special tokens parsed; the 2B-4T's expected
ids are re-derived from its training code's rule (header and content encoded separately).

Picking order (docs/formats.md#85-chat-templates): the file's template, else a Falcon file
(pre-tokenizer or general.name) gets ``falcon3``, else the vocabulary, else ``chatml``.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from bitnet_lab.generate.chat import (
    BitnetChatFormat,
    ChatMLChatFormat,
    Falcon3ChatFormat,
    JinjaChatFormat,
    Llama3ChatFormat,
    chat_format_for,
)
from bitnet_lab.tokenizer import Tokenizer, bytes_to_unicode
from gguf_builder import ARRAY, BOOL, FLOAT32, INT32, STRING, UINT32, GGUFBuilder

TEMPLATES = Path(__file__).resolve().parents[1] / "data" / "chat_templates"
CONVERSATION = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Hello, are you there?"},
    {"role": "assistant", "content": "  Yes, hello there.  "},
    {"role": "user", "content": "Tell me about the sea.\nBriefly."},
]
NORMAL, CONTROL, UNUSED = 1, 3, 5
# Falcon3's tokenizer starts with these special tokens at these ids (torchtune's
# FALCON3_SPECIAL_TOKENS, pytorch/torchtune:torchtune/models/falcon3/_tokenizer.py).
FALCON3_SPECIALS = [">>TITLE<<", ">>ABSTRACT<<", ">>INTRODUCTION<<", ">>SUMMARY<<", ">>COMMENT<<", ">>ANSWER<<",
                    ">>QUESTION<<", ">>DOMAIN<<", ">>EMAIL_ADDRESS<<", ">>IP_ADDRESS<<", "<|startoftext|>",
                    "<|endoftext|>"]
FALCON3_EOS = 11
WORDS = ["Hello", "\u0120are", "\u0120you", "\u0120the", "\u0120there", "\u0120sea", "\u0120hello", "Yes", "Tell",
         "\u0120me", "\u0120about", "Brief", "ly", "\u0120helpful", "\u0120assistant", "You", "\u0120a", "system",
         "user"]


def _template(name: str) -> str:
    return (TEMPLATES / name).read_text(encoding="utf-8")


def _official(tok: Tokenizer, template: str, messages=CONVERSATION) -> tuple[str, list[int]]:
    """The official rendering and its ids: Jinja as the Hub renders it, special tokens parsed, a
    BOS in front when the vocabulary asks for one and the text does not start with it (the
    llama.cpp rule the chat formats follow)."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    bos = tok.token_to_piece(tok.bos_id) if tok.bos_id is not None else ""
    eos = tok.token_to_piece(tok.eos_id) if tok.eos_id is not None else ""
    text = env.from_string(template).render(messages=messages, add_generation_prompt=True,
                                             bos_token=bos, eos_token=eos)
    ids = list(tok.encode(text, add_bos=False, parse_special=True))
    if tok.add_bos and not (bos and text.startswith(bos)):
        ids = [tok.bos_id] + ids
    return text, ids


def _write(path: Path, md: dict) -> Path:
    """A vocabulary-only GGUF (llama.cpp ships its vocabularies this way) with ``md``."""
    b = GGUFBuilder()
    for key, value in md.items():
        if isinstance(value, bool):
            b.add_kv(key, BOOL, value)
        elif isinstance(value, str):
            b.add_kv(key, STRING, value)
        elif isinstance(value, int):
            b.add_kv(key, UINT32, value)
        elif key == "tokenizer.ggml.token_type":
            b.add_kv(key, ARRAY, [int(x) for x in value], INT32)
        elif key == "tokenizer.ggml.scores":
            b.add_kv(key, ARRAY, [float(x) for x in value], FLOAT32)
        else:
            b.add_kv(key, ARRAY, [str(x) for x in value], STRING)
    path.write_bytes(b.build().data)
    return path


def _read(path: Path) -> tuple[Tokenizer, SimpleNamespace]:
    """The tokenizer and the config fields the chat picker reads (as a loaded model has them)."""
    from bitnet_lab.formats.gguf import read_metadata

    md = read_metadata(path)
    return Tokenizer.from_gguf(path), SimpleNamespace(arch=md["general.architecture"], name=md["general.name"])


def falcon_vocab(*, n_vocab: int | None = None, chat_tokens: bool = True, llama3_headers: bool = False) -> dict:
    """tokenizer.* keys of a Falcon3-like byte-level BPE vocabulary: Falcon3's leading special
    tokens at their ids (eos ``<|endoftext|>`` = 11), the 256 byte characters, a few merged words,
    the chat markers as control tokens (``chat_tokens``; without them the markers are plain text),
    optionally Llama-3's header tokens, padded with unused tokens to ``n_vocab``."""
    tokens = list(FALCON3_SPECIALS) + bytes_to_unicode()
    types = [CONTROL] * len(FALCON3_SPECIALS) + [NORMAL] * 256
    merges = []
    have = set(tokens)
    for word in WORDS:   # left-to-right merges build each word
        cur = word[0]
        for ch in word[1:]:
            merges.append(f"{cur} {ch}")
            cur += ch
            if cur not in have:
                tokens.append(cur)
                types.append(NORMAL)
                have.add(cur)
    extra = (["<|system|>", "<|user|>", "<|assistant|>"] if chat_tokens else []) + (
        ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"] if llama3_headers else [])
    tokens += extra
    types += [CONTROL] * len(extra)
    if n_vocab is not None:
        tokens += [f"<bitnet_lab_unused_{i}>" for i in range(len(tokens), n_vocab)]
        types += [UNUSED] * (n_vocab - len(types))
    return {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.merges": merges,
        "tokenizer.ggml.bos_token_id": FALCON3_EOS,
        "tokenizer.ggml.eos_token_id": FALCON3_EOS,
        "tokenizer.ggml.add_bos_token": False,
    }


def falcon_file(tmp_path: Path, *, pre: str = "falcon3", name: str = "Falcon3-1B-Instruct-1.58bit",
                template: str | None = None, **vocab) -> Path:
    md = {"general.architecture": "llama", "general.name": name, **falcon_vocab(**vocab),
          "tokenizer.ggml.pre": pre}
    if template is not None:
        md["tokenizer.chat_template"] = template
    return _write(tmp_path / f"{name}-{pre}.gguf", md)


# =====================================================================================
# Falcon3 / Falcon-E
# =====================================================================================


@pytest.mark.parametrize("chat_tokens", [True, False], ids=["markers-are-tokens", "markers-are-text"])
@pytest.mark.parametrize("with_template", [True, False], ids=["template", "no-template"])
def test_falcon3_matches_the_official_template(tmp_path, with_template, chat_tokens):
    official = _template("falcon3-instruct.jinja")
    tok, cfg = _read(falcon_file(tmp_path, template=official if with_template else None, chat_tokens=chat_tokens))
    fmt = chat_format_for(tok, cfg)
    if with_template:
        assert isinstance(fmt, JinjaChatFormat) and fmt.source == official and fmt.why == "the file's template"
    else:
        assert isinstance(fmt, Falcon3ChatFormat) and "tokenizer.ggml.pre = falcon3" in fmt.why
    text, want = _official(tok, official)
    assert text.startswith("<|system|>\nYou are a helpful assistant.\n<|user|>\n")
    assert "<|assistant|>\n  Yes, hello there.  <|endoftext|>\n<|user|>\n" in text and text.endswith("<|assistant|>\n")
    assert fmt.render(CONVERSATION) == text
    assert fmt.encode(CONVERSATION) == want
    assert (tok.token_to_id("<|assistant|>") in want) == chat_tokens
    # the end of an answer and the next turn, fed separately, give the same ids
    first, answer = CONVERSATION[:2], CONVERSATION[2]
    head = fmt.encode(first)
    reply = list(tok.encode(answer["content"], add_bos=False))
    close = fmt.assistant_close(first + [answer])
    assert close == [FALCON3_EOS]
    assert head + reply + close + fmt.encode_next(first + [answer], CONVERSATION[3:]) == want
    assert FALCON3_EOS in fmt.stop_ids


def test_falcon3_ends_the_last_assistant_message_as_the_official_template(tmp_path):
    tok, cfg = _read(falcon_file(tmp_path))
    fmt = chat_format_for(tok, cfg)
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    official = env.from_string(_template("falcon3-instruct.jinja"))
    for msgs in (CONVERSATION[:3], CONVERSATION, [CONVERSATION[1]]):
        for gen in (True, False):
            assert fmt.render(msgs, gen) == official.render(messages=msgs, add_generation_prompt=gen,
                                                            eos_token="<|endoftext|>", bos_token="<|endoftext|>")


@pytest.mark.parametrize("pre,name,why", [
    ("falcon3", "model", "tokenizer.ggml.pre = falcon3"),
    ("falcon_e", "model", "tokenizer.ggml.pre = falcon_e"),
    # the pre-tokenizer says Llama-3, the name says Falcon (as in our Falcon3 dummies)
    ("llama-bpe", "Falcon3-3B-Instruct-1.58bit", "general.name = 'Falcon3-3B-Instruct-1.58bit'"),
    ("llama-bpe", "Falcon-E-1B-Instruct", "general.name = 'Falcon-E-1B-Instruct'"),
])
def test_a_falcon_file_is_not_taken_for_llama3(tmp_path, pre, name, why):
    """The vocabulary has Llama-3's header tokens and the architecture is llama, which used to pick
    ``llama3``; the pre-tokenizer or the name now says Falcon first."""
    tok, cfg = _read(falcon_file(tmp_path, pre=pre, name=name, llama3_headers=True))
    fmt = chat_format_for(tok, cfg)
    assert isinstance(fmt, Falcon3ChatFormat) and why in fmt.why
    assert fmt.encode(CONVERSATION) == _official(tok, _template("falcon3-instruct.jinja"))[1]
    # the same vocabulary and architecture under another name is a Llama-3 model
    other, cfg_other = _read(falcon_file(tmp_path, pre="llama-bpe", name="Falcon-Edge-3B", llama3_headers=True))
    assert isinstance(chat_format_for(other, cfg_other), Llama3ChatFormat)


def test_the_falcon3_dummy_layouts_chat_in_falcon3(llama3_tok):
    """Our Falcon3 dummies embed the Llama-3 vocabulary under the llama architecture; their name
    decides. The Llama3-8B-1.58 dummy, same vocabulary and architecture, stays llama3."""
    from bitnet_lab.tools.layouts import get_layout

    for layout, want in (("Falcon3-1B", Falcon3ChatFormat), ("Falcon3-3B", Falcon3ChatFormat),
                         ("Llama3-8B-1.58", Llama3ChatFormat)):
        cfg = get_layout(layout).config
        assert cfg.arch == "llama"
        assert type(chat_format_for(llama3_tok, cfg)) is want, layout


# =====================================================================================
# Llama-3 vocabulary: HF1BitLLM (Llama-3 header format) and the 2B-4T (training format)
# =====================================================================================


@pytest.fixture(scope="module")
def llama3_tok():
    from bitnet_lab import paths

    return Tokenizer.from_gguf(paths.LLAMA3_VOCAB)


@pytest.fixture(scope="module")
def llama3_vocab_md():
    from bitnet_lab import paths
    from bitnet_lab.formats.gguf import read_metadata

    return {k: v for k, v in read_metadata(paths.LLAMA3_VOCAB).items() if k.startswith("tokenizer.ggml.")}


def _llama3_family(tmp_path, llama3_tok, md, *, arch, name, template):
    """A Llama-3-vocabulary file of ``arch`` / ``name``: with a template, written and read back;
    without, llama.cpp's own Llama-3 vocabulary file (``llama3_tok``, no template) under that
    architecture and name (writing and re-reading 128k tokens and 280k merges takes seconds)."""
    if template is None:
        assert llama3_tok.chat_template is None
        return llama3_tok, SimpleNamespace(arch=arch, name=name)
    meta = {"general.architecture": arch, "general.name": name, **md, "tokenizer.chat_template": template}
    return _read(_write(tmp_path / "llama3-family.gguf", meta))


@pytest.mark.parametrize("with_template", [True, False], ids=["template", "no-template"])
def test_llama3_header_family_matches_the_official_template(tmp_path, llama3_tok, llama3_vocab_md, with_template):
    official = _template("llama3-instruct.jinja")
    tok, cfg = _llama3_family(tmp_path, llama3_tok, llama3_vocab_md, arch="llama", name="Llama3-8B-1.58-100B-tokens",
                              template=official if with_template else None)
    fmt = chat_format_for(tok, cfg)
    assert isinstance(fmt, JinjaChatFormat if with_template else Llama3ChatFormat)
    text, want = _official(tok, official)
    assert text.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n")
    assert want.count(128000) == 1 and want.count(128006) == 5 and want.count(128009) == 4
    assert fmt.encode(CONVERSATION) == want


@pytest.mark.parametrize("with_template", [True, False], ids=["template", "no-template"])
def test_2b4t_builds_the_training_format(tmp_path, llama3_tok, llama3_vocab_md, with_template):
    """The 2B-4T's reference is its training code (`microsoft/BitNet:gpu/tokenizer.py` ChatFormat):
    BOS, then per message the header and the stripped content encoded *separately*, then
    ``<|eot_id|>``. Its Jinja text renders the same string, but tokenising that string merges the
    header's space into the first word, so the format builds tokens, not text. (The GGUF's
    placeholder template is replaced the same way: tests/generate/test_chat.py.)"""
    official = _template("bitnet-2b4t.jinja")
    tok, cfg = _llama3_family(tmp_path, llama3_tok, llama3_vocab_md, arch="bitnet-b1.58", name="bitnet-b1.58-2B-4T",
                              template=official if with_template else None)
    fmt = chat_format_for(tok, cfg)
    assert isinstance(fmt, BitnetChatFormat)
    want = [tok.bos_id]
    for m in CONVERSATION:
        want += tok.encode(f"{m['role'].capitalize()}: ", add_bos=False) + tok.encode(m["content"].strip(), add_bos=False)
        want.append(tok.eot_id)
    want += tok.encode("Assistant: ", add_bos=False)
    assert fmt.encode(CONVERSATION) == want
    text, string_ids = _official(tok, official)
    assert fmt.render(CONVERSATION) == text                  # the same text …
    assert string_ids != want                                # … but not the same tokens


# =====================================================================================
# The default model's own template; the 1bitLLM base models (no template: chatml)
# =====================================================================================


def test_the_default_model_uses_its_own_template():
    from bitnet_lab.formats.gguf import read_metadata
    from bitnet_lab.tools.default_model import shipped_model_path

    path = shipped_model_path()
    official = _template("default-model.jinja")
    md = read_metadata(path)
    assert md["tokenizer.chat_template"] == official
    tok = Tokenizer.from_gguf(path)
    fmt = chat_format_for(tok, SimpleNamespace(arch=md["general.architecture"], name=md["general.name"]))
    assert isinstance(fmt, JinjaChatFormat) and fmt.source == official
    text, want = _official(tok, official)
    assert text.endswith("<|user|>\nTell me about the sea.\nBriefly.\n<|assistant|>\n")
    assert fmt.encode(CONVERSATION) == want


def test_a_1bitllm_base_model_gets_llama_cpps_chatml(tmp_path):
    from bitnet_lab import paths
    from bitnet_lab.formats.gguf import read_metadata

    md = {k: v for k, v in read_metadata(paths.LLAMA2_VOCAB).items() if k.startswith("tokenizer.ggml.")}
    tok, cfg = _read(_write(tmp_path / "1bitllm.gguf",
                            {"general.architecture": "bitnet", "general.name": "bitnet_b1_58-large", **md}))
    fmt = chat_format_for(tok, cfg)
    assert isinstance(fmt, ChatMLChatFormat) and "base model" in fmt.why
    assert fmt.encode(CONVERSATION) == _official(tok, _template("chatml.jinja"))[1]


# =====================================================================================
# `bitnet-lab chat` picks the format
# =====================================================================================


def _falcon_model(tiny_gguf: Path, out: Path, template: str | None) -> Path:
    """The tiny dummy model with a Falcon3-like tokenizer of its vocabulary size and a Falcon3 name
    (its graph stays the tiny 2B-4T-style one: the picker reads the tokenizer and the name)."""
    from bitnet_lab.formats.gguf import open_gguf
    from bitnet_lab.formats.gguf_writer import write_gguf

    with open_gguf(tiny_gguf) as f:
        md = {k: v for k, v in f.metadata.items() if not k.startswith("tokenizer.")}
        types = {k: v for k, v in f.metadata_types.items() if k in md}
        n_vocab = len(f.metadata["tokenizer.ggml.tokens"])
        md.update(falcon_vocab(n_vocab=n_vocab))
        md["tokenizer.ggml.pre"] = "falcon3"
        md["general.name"] = "Falcon3-1B-Instruct-1.58bit"
        if template is not None:
            md["tokenizer.chat_template"] = template
        md["tokenizer.ggml.token_type"] = np.asarray(md["tokenizer.ggml.token_type"], np.int32)
        return write_gguf(out, md, f.tensors(), metadata_types=types)


@pytest.mark.parametrize("with_template", [True, False], ids=["template", "no-template"])
def test_bitnet_lab_chat_picks_the_falcon3_format(tiny_gguf, tmp_path, monkeypatch, capsys, with_template):
    from bitnet_lab.cli import main

    path = _falcon_model(tiny_gguf, tmp_path / "falcon.gguf",
                         _template("falcon3-instruct.jinja") if with_template else None)
    monkeypatch.setattr(sys, "stdin", io.StringIO("Hello\nAgain\n/exit\n"))
    rc = main(["chat", "-m", str(path), "-n", "3", "--temp", "0", "-c", "128", "-sys", "You are a helpful assistant."])
    out, err = capsys.readouterr()
    assert rc == 0, err
    line = next(x for x in err.splitlines() if "chat format:" in x)
    if with_template:
        assert "chat format: template" in line and "the file's template" in line
    else:
        assert "chat format: falcon3" in line and "tokenizer.ggml.pre = falcon3" in line
    assert "llama3" not in line and "bitnet" not in line.split("chat format:")[1]
    # what the chat fed: the official rendering of the system prompt and the first message
    tok = Tokenizer.from_gguf(path)
    official = _template("falcon3-instruct.jinja")
    system = [{"role": "system", "content": "You are a helpful assistant."}]
    first_turn = _official(tok, official, system + [{"role": "user", "content": "Hello"}])[1]
    assert f"[length: prompt {len(first_turn)} tokens" in err
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    system_text = env.from_string(official).render(messages=system, add_generation_prompt=False, eos_token="")
    assert f"the first {len(tok.encode(system_text, add_bos=False, parse_special=True))} tokens stay" in err
