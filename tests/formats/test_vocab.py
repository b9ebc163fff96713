"""Tokenizer metadata for GGUF from HF tokenizer files (SentencePiece and byte-level BPE)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from _hf_models import REAL_F32, REAL_HF
from bitnet_lab.errors import ConfigError
from bitnet_lab.formats.gguf import read_metadata
from bitnet_lab.formats.vocab import (
    LLAMA3_REGEX,
    TOKEN_CONTROL,
    TOKEN_UNUSED,
    TOKEN_USER_DEFINED,
    vocab_metadata_from_gguf,
    vocab_metadata_from_hf,
)
from bitnet_lab.paths import LLAMA3_VOCAB


def _same(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for k in a:
        if isinstance(a[k], np.ndarray) or isinstance(b[k], np.ndarray):
            np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)
        else:
            assert a[k] == b[k], k


def test_sentencepiece_matches_bitnet_cpp_gguf():
    """tokenizer.model + config.json give exactly the tokenizer keys bitnet.cpp's converter
    wrote into bitnet-f32.gguf (tokens, scores, token types, ids; no add_bos_token)."""
    ours = vocab_metadata_from_hf(REAL_HF, vocab_size=1000)
    theirs = vocab_metadata_from_gguf(REAL_F32)
    _same(ours, theirs)
    assert ours["tokenizer.ggml.model"] == "llama" and ours["tokenizer.ggml.pre"] == "default"
    assert ours["tokenizer.ggml.scores"].dtype == np.float32
    assert ours["tokenizer.ggml.token_type"].dtype == np.int32
    assert "tokenizer.ggml.add_bos_token" not in ours


def test_sentencepiece_padding_added_tokens_and_template(tmp_path):
    for f in ("tokenizer.model", "config.json"):
        (tmp_path / f).write_bytes((REAL_HF / f).read_bytes())
    (tmp_path / "added_tokens.json").write_text(json.dumps({"<pad>": 1000}))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({
        "add_bos_token": True, "add_eos_token": False, "pad_token": "<pad>",
        "chat_template": "{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}",
        "added_tokens_decoder": {"1001": {"content": "<|turn|>", "special": True}},
    }))
    md = vocab_metadata_from_hf(tmp_path, vocab_size=1004)
    toks, types, scores = md["tokenizer.ggml.tokens"], md["tokenizer.ggml.token_type"], md["tokenizer.ggml.scores"]
    assert len(toks) == 1004
    assert (toks[1000], types[1000], scores[1000]) == ("<pad>", TOKEN_USER_DEFINED, -1000.0)
    assert (toks[1001], types[1001]) == ("<|turn|>", TOKEN_CONTROL)
    assert toks[1002:] == ["[PAD1002]", "[PAD1003]"] and list(types[1002:]) == [TOKEN_UNUSED] * 2
    assert md["tokenizer.ggml.padding_token_id"] == 1000
    assert md["tokenizer.ggml.add_bos_token"] is True and md["tokenizer.ggml.add_eos_token"] is False
    assert md["tokenizer.chat_template"].startswith("{{ bos_token }}")
    with pytest.raises(ConfigError, match="id 1003 of '<x>' is outside the vocabulary"):
        (tmp_path / "added_tokens.json").write_text(json.dumps({"<pad>": 1000, "<x>": 1003}))
        vocab_metadata_from_hf(tmp_path, vocab_size=1003)
    (tmp_path / "added_tokens.json").unlink()
    (tmp_path / "tokenizer_config.json").unlink()
    with pytest.raises(ConfigError, match="1000 tokens but config.json says vocab_size 900"):
        vocab_metadata_from_hf(tmp_path, vocab_size=900)


@pytest.fixture(scope="module")
def llama3_dir(tmp_path_factory):
    """A Llama-3 tokenizer.json rebuilt from llama.cpp's ggml-vocab-llama-bpe.gguf (the 2B-4T
    vocabulary), with the tokenizer_config / generation_config the HF repos carry."""
    md = read_metadata(LLAMA3_VOCAB)
    tokens, types, merges = md["tokenizer.ggml.tokens"], md["tokenizer.ggml.token_type"], md["tokenizer.ggml.merges"]
    added = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i, t in enumerate(tokens) if types[i] == 3]
    tj = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": LLAMA3_REGEX}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
        "post_processor": {"type": "Sequence", "processors": [
            {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
            {"type": "TemplateProcessing",
             "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
             "pair": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                      {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
             "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>", "ids": [128000], "tokens": ["<|begin_of_text|>"]}}}]},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": True,
                  "vocab": {t: i for i, t in enumerate(tokens) if types[i] == 1},
                  "merges": [m.split(" ") for m in merges]},
    }
    d = tmp_path_factory.mktemp("llama3")
    (d / "tokenizer.json").write_text(json.dumps(tj, ensure_ascii=False))
    (d / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>",
        "chat_template": "{% for m in messages %}{{ m.role | capitalize }}: {{ m.content }}<|eot_id|>{% endfor %}",
    }))
    (d / "generation_config.json").write_text(json.dumps({"bos_token_id": 128000, "eos_token_id": [128001, 128009]}))
    return d, md


def test_fixture_tokenizer_is_the_llama3_tokenizer(llama3_dir):
    """The rebuilt tokenizer.json tokenises llama.cpp's own test vectors to the expected ids, so
    the BPE test below runs on a faithful Llama-3 tokenizer.json."""
    from tokenizers import Tokenizer

    d, _ = llama3_dir
    tok = Tokenizer.from_file(str(d / "tokenizer.json"))
    texts = LLAMA3_VOCAB.with_suffix(".gguf.inp").read_text(encoding="utf-8").split("\n__ggml_vocab_test__\n")
    outs = LLAMA3_VOCAB.with_suffix(".gguf.out").read_text().split("\n")
    for text, ids in list(zip(texts, outs))[:20]:
        assert tok.encode(text, add_special_tokens=False).ids == [int(x) for x in ids.split()], repr(text)


def test_bpe_llama3_vocab(llama3_dir):
    d, gg = llama3_dir
    md = vocab_metadata_from_hf(d, vocab_size=128256)
    assert md["tokenizer.ggml.model"] == "gpt2" and md["tokenizer.ggml.pre"] == "llama-bpe"
    assert md["tokenizer.ggml.tokens"] == gg["tokenizer.ggml.tokens"]
    np.testing.assert_array_equal(md["tokenizer.ggml.token_type"], gg["tokenizer.ggml.token_type"])
    assert md["tokenizer.ggml.merges"] == gg["tokenizer.ggml.merges"]
    assert md["tokenizer.ggml.bos_token_id"] == gg["tokenizer.ggml.bos_token_id"] == 128000
    assert md["tokenizer.ggml.eos_token_id"] == gg["tokenizer.ggml.eos_token_id"] == 128001
    assert md["tokenizer.ggml.eot_token_id"] == 128009  # <|eot_id|> (docs/formats.md#85-chat-templates)
    assert md["tokenizer.ggml.add_bos_token"] is True  # the post-processor prepends BOS
    assert "<|eot_id|>" in md["tokenizer.chat_template"]
    assert "tokenizer.ggml.scores" not in md


def test_bpe_pre_tokenizer_recognition(tmp_path):
    base = {"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]},
            "added_tokens": [{"id": 3, "content": "<|begin_of_text|>", "special": True}],
            "pre_tokenizer": {"type": "Split", "pattern": {"Regex": LLAMA3_REGEX}}}
    for sub, hint, want in (("plain", "", "llama-bpe"), ("Falcon3-1B-Instruct-1.58bit", "", "falcon3"),
                            ("x", "tiiuae/Falcon-E-1B-Base", "falcon_e")):
        d = tmp_path / sub
        d.mkdir()
        (d / "tokenizer.json").write_text(json.dumps(base))
        assert vocab_metadata_from_hf(d, name_hint=hint)["tokenizer.ggml.pre"] == want
    other = dict(base, pre_tokenizer={"type": "ByteLevel"})
    d = tmp_path / "other"
    d.mkdir()
    (d / "tokenizer.json").write_text(json.dumps(other))
    with pytest.raises(ConfigError, match="unrecognised BPE pre-tokenizer.*tokenizer_pre="):
        vocab_metadata_from_hf(d)
    assert vocab_metadata_from_hf(d, pre="gpt-2")["tokenizer.ggml.pre"] == "gpt-2"


def test_vocab_from_gguf_file():
    md = vocab_metadata_from_gguf(LLAMA3_VOCAB)
    assert md["tokenizer.ggml.pre"] == "llama-bpe" and len(md["tokenizer.ggml.tokens"]) == 128256
    assert all(k.startswith("tokenizer.") for k in md)
    with pytest.raises(ConfigError, match="no tokenizer.ggml.tokens"):
        import tempfile

        from bitnet_lab.formats.gguf_writer import GGUFWriter

        with tempfile.TemporaryDirectory() as t:
            w = GGUFWriter(f"{t}/x.gguf")
            w.add_metadata("general.architecture", "llama")
            w.write()
            vocab_metadata_from_gguf(f"{t}/x.gguf")
