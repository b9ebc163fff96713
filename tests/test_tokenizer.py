"""bitnet_lab.tokenizer: llama.cpp's test vectors, round trips, special tokens, streaming,
tokenizer.json, and clear errors (docs/formats.md#8-tokenizer-metadata).

The two vocabularies and their vectors are llama.cpp's (data/vocab, MIT). The SentencePiece
merge order is also checked against a direct re-derivation of llama.cpp's SPM loop and against
the sentencepiece library on the small real-file vocabulary.
"""

from __future__ import annotations

import heapq
import json
import random
import time
from pathlib import Path

import numpy as np
import pytest

from bitnet_lab.errors import BitnetLabError, ConfigError
from bitnet_lab.formats.gguf import read_metadata
from bitnet_lab.paths import LLAMA2_VOCAB, LLAMA3_VOCAB
from bitnet_lab.tokenizer import Tokenizer, bytes_to_unicode

REAL = Path(__file__).parent / "data" / "real-files"
SEP = "\n__ggml_vocab_test__\n"


def read_vectors(vocab_path: Path) -> list[tuple[str, list[int]]]:
    """llama.cpp's tests/test-tokenizer-0.cpp format: texts separated by
    "\\n__ggml_vocab_test__\\n" (so a text keeps its own leading/trailing newlines), one line
    of space-separated ids per text, no BOS."""
    raw = Path(str(vocab_path) + ".inp").read_bytes().decode("utf-8")
    texts, pos = [], 0
    while pos < len(raw):
        nxt = raw.find(SEP, pos)
        if nxt < 0:
            texts.append(raw[pos:])
            break
        texts.append(raw[pos:nxt])
        pos = nxt + len(SEP)
    lines = Path(str(vocab_path) + ".out").read_text(encoding="utf-8").split("\n")
    assert len(lines) >= len(texts) and all(not x.strip() for x in lines[len(texts):])
    return [(t, [int(x) for x in line.split()]) for t, line in zip(texts, lines)]


# ---- fixtures (each vocabulary read and built once) -------------------------------------------


@pytest.fixture(scope="module")
def md3():
    return read_metadata(LLAMA3_VOCAB)


@pytest.fixture(scope="module")
def md2():
    return read_metadata(LLAMA2_VOCAB)


@pytest.fixture(scope="module")
def bpe(md3):
    return Tokenizer.from_metadata(md3, source=str(LLAMA3_VOCAB))


@pytest.fixture(scope="module")
def spm():
    return Tokenizer.from_gguf(LLAMA2_VOCAB)


@pytest.fixture(scope="module")
def vec3():
    return read_vectors(LLAMA3_VOCAB)


@pytest.fixture(scope="module")
def vec2():
    return read_vectors(LLAMA2_VOCAB)


# ---- llama.cpp's test vectors -----------------------------------------------------------------


def test_vector_files_parse_as_llama_cpp_does(vec3, vec2):
    assert len(vec3) == len(vec2) == 46
    texts = [t for t, _ in vec3]
    assert texts[0] == "ied 4 ½ months" and texts[2] == "" and texts[3] == " " and texts[6] == "\t"
    assert "\n" in texts and "\n\n\n" in texts and "\t\n" in texts and "    Hello\n    Hello" in texts
    assert vec3[2][1] == [] and vec2[2][1] == []          # the empty text has no tokens


@pytest.mark.parametrize("which", ["llama-bpe", "llama-spm"])
def test_llama_cpp_vectors_exact(which, bpe, spm, vec3, vec2):
    tok, cases = (bpe, vec3) if which == "llama-bpe" else (spm, vec2)
    failed = [(text, tok.encode(text, add_bos=False), want) for text, want in cases
              if tok.encode(text, add_bos=False) != want]
    assert not failed, f"{len(failed)}/{len(cases)} {which} vectors differ: {failed[:3]}"


@pytest.mark.parametrize("which", ["llama-bpe", "llama-spm"])
def test_round_trip_on_vector_texts(which, bpe, spm, vec3, vec2):
    tok, cases = (bpe, vec3) if which == "llama-bpe" else (spm, vec2)
    for text, want in cases:
        assert tok.decode(want) == text                                   # llama.cpp's ids decode back
        ids = tok.encode(text)                                            # with the file's BOS
        assert ids[:1] == [tok.bos_id] and ids[1:] == want
        assert tok.decode(ids, skip_special=True) == text
        assert tok.decode(ids) == tok.id_to_token(tok.bos_id) + text      # BOS rendered as its text


def test_bpe_round_trip_on_odd_text(bpe):
    rng = random.Random(3)
    alphabet = "aZ09 \t\n\r'’-_.,!?<>|ß€😀🦙中文\u0301\u200b\x00\x7f"
    for _ in range(200):
        s = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        assert bpe.decode(bpe.encode(s, add_bos=False)) == s


# ---- SentencePiece exactness beyond the vectors -----------------------------------------------


def llama_cpp_spm(escaped: str, tok: Tokenizer, scores: np.ndarray) -> list[int]:
    """llama.cpp's llm_tokenizer_spm_session re-derived in Python (test oracle): merge the
    adjacent pair whose joined text is the token with the highest score, leftmost on ties;
    characters no token covers become <0xXX> byte tokens."""
    text = [c for c in escaped]
    prev = list(range(-1, len(text) - 1))
    nxt = list(range(1, len(text))) + [-1]
    heap: list[tuple[float, int, int, str]] = []

    def push(left: int, right: int) -> None:
        if left < 0 or right < 0:
            return
        joined = text[left] + text[right]
        tid = tok.token_to_id(joined)
        if tid is not None:
            heapq.heappush(heap, (-float(scores[tid]), left, right, joined))

    for i in range(1, len(text)):
        push(i - 1, i)
    while heap:
        _, left, right, joined = heapq.heappop(heap)
        if not text[left] or not text[right] or text[left] + text[right] != joined:
            continue                                                        # stale pair
        text[left], text[right] = joined, ""
        nxt[left] = nxt[right]
        if nxt[right] >= 0:
            prev[nxt[right]] = left
        push(prev[left], left)
        push(left, nxt[left])
    out, i = [], 0 if text else -1
    while i != -1:
        tid = tok.token_to_id(text[i])
        out += [tid] if tid is not None else [tok.token_to_id(f"<0x{b:02X}>") for b in text[i].encode()]
        i = nxt[i]
    return out


def _random_spm_text(rng: random.Random, words: list[str]) -> str:
    parts = []
    for _ in range(rng.randint(1, 10)):
        r = rng.random()
        if r < 0.5:
            parts.append(rng.choice(words))
        elif r < 0.75:
            parts.append(" " * rng.randint(1, 24))                          # equal-score space tokens
        else:
            parts.append("".join(rng.choice("\n\tabéñ½🦙中文") for _ in range(rng.randint(1, 4))))
    return "".join(parts)


@pytest.mark.parametrize("which", ["llama-spm", "real-file"])
def test_spm_matches_llama_cpp_algorithm(which, md2, spm):
    if which == "llama-spm":
        md, tok = md2, spm
    else:
        md = read_metadata(REAL / "bitnet-f32.gguf")
        tok = Tokenizer.from_metadata(md)
    scores = np.asarray(md["tokenizer.ggml.scores"], np.float32)
    words = [tok.id_to_token(i).replace("\u2581", " ") for i in range(tok.vocab_size)
             if tok.token_type(i) == 1]
    rng = random.Random(7)
    for _ in range(250):
        s = _random_spm_text(rng, words)
        want = llama_cpp_spm(("\u2581" + s).replace(" ", "\u2581"), tok, scores)
        assert tok.encode(s, add_bos=False) == want, repr(s)
        assert tok.decode(want) == s


def test_real_file_spm_agrees_with_sentencepiece():
    """The real file's GGUF vocabulary and its tokenizer.model (formats: README of real-files)
    give the same ids as the sentencepiece library on text its NFKC normaliser leaves alone."""
    spmlib = pytest.importorskip("sentencepiece")
    sp = spmlib.SentencePieceProcessor(model_file=str(REAL / "hf" / "tokenizer.model"))
    tok = Tokenizer.from_gguf(REAL / "bitnet-f32.gguf")
    assert tok.model == "llama" and tok.vocab_size == sp.vocab_size() == 1000 and tok.add_bos
    rng = random.Random(11)
    letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,;:!?'()-"
    for _ in range(300):
        words = ["".join(rng.choice(letters) for _ in range(rng.randint(1, 9))) for _ in range(rng.randint(1, 8))]
        s = " ".join(words)
        assert tok.encode(s, add_bos=False) == sp.encode(s), s
        assert tok.encode(s) == [sp.bos_id()] + sp.encode(s)


# ---- special tokens, BOS/EOS/EOT ----------------------------------------------------------------


def test_special_ids_and_defaults(bpe, spm):
    assert (bpe.model, bpe.pre, bpe.vocab_size) == ("gpt2", "llama-bpe", 128256)
    assert (bpe.bos_id, bpe.eos_id, bpe.eot_id) == (128000, 128001, 128009)
    assert bpe.eog_ids == {128001, 128009} and bpe.is_eog(128009) and not bpe.is_eog(128000)
    assert bpe.add_bos is True and bpe.add_eos is False          # no add_bos_token key: llama-bpe default
    assert bpe.chat_template is None
    assert (spm.model, spm.pre, spm.vocab_size) == ("llama", "default", 32000)
    assert (spm.bos_id, spm.eos_id, spm.unk_id, spm.eot_id) == (1, 2, 0, None)
    assert spm.eog_ids == {2} and spm.add_bos is True and spm.add_space_prefix


def tiny_gpt2_md(**extra) -> dict:
    """A small byte-level BPE vocabulary: the 256 byte characters, two merges, a control and a
    user-defined token; no tokenizer.ggml.pre, no special ids."""
    tokens = bytes_to_unicode() + ["\u0120t", "he", "\u0120the", "<ctl>", "<tool>"]
    types = [1] * 259 + [3, 4]
    md = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.token_type": types,
          "tokenizer.ggml.merges": ["\u0120 t", "h e", "\u0120t he"]}
    md.update(extra)
    return md


@pytest.fixture(scope="module")
def bpe_default(md3):
    """The Llama-3 vocabulary under llama.cpp's 'default' pre-tokenizer."""
    return Tokenizer.from_metadata({**md3, "tokenizer.ggml.pre": "default"})


def test_add_bos_default_follows_metadata(md2, bpe_default):
    assert Tokenizer.from_metadata({**md2, "tokenizer.ggml.add_bos_token": False}).encode("hi")[:1] != [1]
    assert bpe_default.add_bos is False                           # llama.cpp: only llama3-like pres add BOS
    assert bpe_default.encode("hi", add_bos=True)[0] == 128000    # the argument wins
    assert bpe_default.encode("hi", add_bos=False) == bpe_default.encode("hi")
    eos_too = Tokenizer.from_metadata({**md2, "tokenizer.ggml.add_eos_token": True})
    assert eos_too.encode("hi")[0] == 1 and eos_too.encode("hi")[-1] == 2
    assert eos_too.encode("hi", add_eos=False)[-1] != 2


def test_2b4t_style_metadata_forces_llama3_regex(md3, bpe, bpe_default, vec3):
    """The 2B-4T GGUF: same Llama-3 vocabulary, no tokenizer.ggml.pre, all-zero scores,
    add_bos_token true (docs/formats.md#83-the-2b-4t-gguf-tokenizer-differs-from-a-stock-llama-3-vocab). The
    Llama-3 regex must be used anyway."""
    md = {k: v for k, v in md3.items() if k != "tokenizer.ggml.pre"}
    md.update({"tokenizer.ggml.scores": np.zeros(128256, np.float32), "tokenizer.ggml.add_bos_token": True,
               "tokenizer.chat_template": "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}"})
    tok = Tokenizer.from_metadata(md)
    assert tok.pre == "llama3" and tok.add_bos and tok.chat_template.startswith("{{ bos_token }}")
    for text, want in vec3:
        assert tok.encode(text, add_bos=False) == want
    # the 'default' regex (what llama.cpp would use) tokenises differently:
    s = "Hello, y'all! (ok)"
    assert bpe_default.encode(s, add_bos=False) != bpe.encode(s, add_bos=False)
    assert bpe_default.decode(bpe_default.encode(s, add_bos=False)) == s
    # another vocabulary without the key gets 'default', with a warning
    with pytest.warns(UserWarning, match="tokenizer.ggml.pre is missing"):
        tiny = Tokenizer.from_metadata(tiny_gpt2_md())
    assert tiny.pre == "default" and tiny.add_bos is False and tiny.bos_id is None
    assert tiny.encode(" the") == [tiny.token_to_id("\u0120the")] and tiny.decode(tiny.encode(" the he")) == " the he"
    ctl = tiny.token_to_id("<ctl>")
    with_eot = Tokenizer.from_metadata(tiny_gpt2_md(**{"tokenizer.ggml.pre": "gpt-2", "tokenizer.ggml.eot_token_id": ctl}))
    assert with_eot.eot_id == ctl and with_eot.eog_ids == {ctl}


def test_parse_special_bpe(bpe):
    text = "<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>"
    ids = bpe.encode(text, add_bos=False, parse_special=True)
    assert ids[0] == 128006 and ids[2] == 128007 and ids[-1] == 128009
    assert ids == [128006] + bpe.encode("user", add_bos=False) + [128007] + bpe.encode("\n\nHi!", add_bos=False) + [128009]
    plain = bpe.encode(text, add_bos=False)                        # default: text is text
    assert max(plain) < 128000 and bpe.decode(plain) == text
    assert bpe.decode(ids) == text and bpe.decode(ids, skip_special=True) == "user\n\nHi!"
    # longest match first: "<|end_of_text|>" is not cut as something shorter
    assert bpe.encode("a<|end_of_text|>", add_bos=False, parse_special=True)[-1] == 128001


def test_parse_special_spm_puts_a_space_before_each_fragment(spm):
    """llama.cpp prefixes every text fragment (also after a special token) with a space; decode
    removes exactly that space again."""
    text = "Hello<s>world</s> again"
    ids = spm.encode(text, add_bos=False, parse_special=True)
    assert ids == spm.encode("Hello", add_bos=False) + [1] + spm.encode("world", add_bos=False) + [2] \
        + spm.encode(" again", add_bos=False)
    assert spm.decode(ids) == text
    assert spm.decode(ids, skip_special=True) == "Helloworld again"
    assert 1 not in spm.encode(text, add_bos=False)                # not parsed by default
    assert spm.decode(spm.encode(text, add_bos=False)) == text


def test_user_defined_tokens_are_always_cut_out():
    """llama.cpp cuts USER_DEFINED tokens out even with parse_special=False; CONTROL ones not."""
    with pytest.warns(UserWarning):
        tok = Tokenizer.from_metadata(tiny_gpt2_md(**{"tokenizer.ggml.pre": None}))
    ctl, tool = tok.token_to_id("<ctl>"), tok.token_to_id("<tool>")
    text = "a<tool>b<ctl>"
    ids = tok.encode(text)
    assert tool in ids and ctl not in ids and tok.decode(ids) == text
    ids = tok.encode(text, parse_special=True)
    assert ids[-1] == ctl and tok.decode(ids, skip_special=True) == "a<tool>b"


def test_token_pieces(bpe, spm):
    assert bpe.token_to_piece(220) == " " and bpe.token_to_piece(198) == "\n"
    assert bpe.id_to_token(220) == "\u0120" and bpe.token_to_id("\u0120") == 220
    assert bpe.token_to_piece(128009) == "<|eot_id|>" and bpe.token_type(128009) == 3 and bpe.is_special(128009)
    assert spm.token_to_bytes(spm.token_to_id("<0x0A>")) == b"\n" and spm.token_type(13) == 6
    assert spm.token_to_bytes(spm.token_to_id("<0xE2>")) == b"\xe2"
    assert spm.token_to_piece(spm.token_to_id("\u2581Hello")) == " Hello"
    assert spm.token_to_id("no such token") is None
    u = bytes_to_unicode()
    assert len(set(u)) == 256 and u[32] == "\u0120" and u[10] == "\u010a" and u[ord("A")] == "A"


# ---- streaming -----------------------------------------------------------------------------------


STREAM_TEXT = "Äpfel 🦙 ½ нещо 中文字 😶‍🌫️ ok\n"


@pytest.mark.parametrize("which", ["llama-bpe", "llama-spm"])
def test_stream_never_emits_partial_characters(which, bpe, spm):
    tok = bpe if which == "llama-bpe" else spm
    ids = tok.encode(STREAM_TEXT, add_bos=False)
    # the case under test exists: some token holds only part of a character
    assert any(tok.token_to_bytes(i).decode("utf-8", errors="replace") != tok.token_to_bytes(i).decode(
        "utf-8", errors="ignore") for i in ids)
    dec = tok.stream(at_start=True)
    outs = [dec.push(i) for i in ids]
    tail = dec.flush()
    assert "".join(outs) + tail == STREAM_TEXT == tok.decode(ids)
    assert tail == "" and not any("\ufffd" in o for o in outs)
    assert "" in outs                                              # something was held back
    # each output is whole characters: re-encoding it to UTF-8 gives exactly its bytes
    assert b"".join(o.encode("utf-8") for o in outs) == STREAM_TEXT.encode("utf-8")


def test_stream_continuation_keeps_leading_space_and_flushes_garbage(spm, bpe):
    ids = spm.encode("Hello world", add_bos=False)                 # [▁Hello, ▁world]
    dec = spm.stream()                                             # continuing after a prompt "Hello"
    assert "".join(dec.push(i) for i in ids[1:]) + dec.flush() == " world"
    dec = spm.stream(skip_special=True, at_start=True)
    assert "".join(dec.push(i) for i in spm.encode("Hi")) == "Hi"  # BOS skipped, prefix space removed
    dec = bpe.stream()
    assert dec.push(bpe.token_to_id("\u00f0")) == "" and dec.pending == b"\xf0"   # first byte of a 4-byte char
    assert dec.flush() == "\ufffd" and dec.pending == b""
    assert dec.push(220) == " "


# ---- tokenizer.json ------------------------------------------------------------------------------

HF_LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                   r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def _write_llama3_tokenizer_json(md3, folder: Path) -> None:
    """A Llama-3-style tokenizer.json built with `tokenizers` from the GGUF arrays, laid out as
    Meta's file is: 128000 BPE tokens, 256 special added tokens, a BOS template."""
    from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers, processors
    from tokenizers import Tokenizer as HF

    tokens = list(md3["tokenizer.ggml.tokens"])
    merges = [tuple(m.split(" ", 1)) for m in md3["tokenizer.ggml.merges"]]   # byte-level tokens hold no spaces
    hf = HF(models.BPE({t: i for i, t in enumerate(tokens[:128000])}, merges, ignore_merges=True))
    hf.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(HF_LLAMA3_REGEX), "isolated"),
                                                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    hf.decoder = decoders.ByteLevel()
    hf.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in tokens[128000:]])
    hf.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                                      special_tokens=[("<|begin_of_text|>", 128000)])
    hf.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": "<|begin_of_text|>", "eos_token": {"content": "<|end_of_text|>"},
        "chat_template": "{{ bos_token }}{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}<|eot_id|>{% endfor %}",
    }))


def test_from_file_agrees_with_from_gguf_bpe(md3, bpe, vec3, tmp_path):
    _write_llama3_tokenizer_json(md3, tmp_path)
    tok = Tokenizer.from_file(tmp_path / "tokenizer.json")
    assert (tok.model, tok.vocab_size, tok.bos_id, tok.eos_id, tok.eot_id) == ("gpt2", 128256, 128000, 128001, 128009)
    assert tok.add_bos and tok.eog_ids == bpe.eog_ids and tok.chat_template.startswith("{{ bos_token }}")
    samples = [t for t, _ in vec3] + ["<|start_header_id|>user<|end_header_id|>\n\nHi 🦙<|eot_id|>"]
    for s in samples:
        for ps in (False, True):
            assert tok.encode(s, parse_special=ps) == bpe.encode(s, parse_special=ps), repr(s)
        ids = bpe.encode(s, parse_special=True)
        assert tok.decode(ids) == bpe.decode(ids) == "<|begin_of_text|>" + s
        assert tok.decode(ids, skip_special=True) == bpe.decode(ids, skip_special=True)
    assert Tokenizer.from_file(tmp_path).vocab_size == 128256      # a folder works too


@pytest.mark.parametrize("style", ["normalizer", "metaspace"])
def test_from_file_agrees_with_from_gguf_spm(style, md2, spm, vec2, tmp_path):
    """A Llama-2-style tokenizer.json (Prepend/Replace normaliser, or the newer Metaspace
    pre-tokenizer; BPE with byte fallback, merges listed by descending score of the merged
    piece) from the GGUF arrays."""
    from tokenizers import AddedToken, decoders, models, normalizers, pre_tokenizers
    from tokenizers import Tokenizer as HF

    tokens, scores = list(md2["tokenizer.ggml.tokens"]), np.asarray(md2["tokenizer.ggml.scores"], np.float32)
    ids = {t: i for i, t in enumerate(tokens)}
    merges = sorted(((-scores[ids[t]], ids[t], t[:k], t[k:]) for t in tokens for k in range(1, len(t))
                     if t[:k] in ids and t[k:] in ids), key=lambda c: (c[0], c[1], len(c[2])))
    hf = HF(models.BPE(ids, [(c[2], c[3]) for c in merges], byte_fallback=True, unk_token="<unk>"))
    if style == "normalizer":
        hf.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    else:
        hf.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=False)
    hf.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                    decoders.Strip(" ", 1, 0)])
    hf.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in ("<unk>", "<s>", "</s>")])
    hf.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": True, "add_eos_token": False}))
    tok = Tokenizer.from_file(tmp_path / "tokenizer.json")
    assert (tok.model, tok.vocab_size, tok.bos_id, tok.eos_id, tok.unk_id) == ("llama", 32000, 1, 2, 0)
    assert tok.add_bos and tok.add_space_prefix and tok.token_type(13) == 6
    for s, want in vec2:
        assert tok.encode(s, add_bos=False) == want, repr(s)
        assert tok.decode(want) == s
    s = "Hello<s>world 🦙"
    assert tok.encode(s, parse_special=True) == spm.encode(s, parse_special=True)


def test_from_file_sentencepiece_folder_matches_its_gguf():
    """real-files: bitnet.cpp's converter wrote bitnet-f32.gguf's vocabulary from
    hf/tokenizer.model; reading the folder (here via a file in it) gives the same tokenizer."""
    a = Tokenizer.from_file(REAL / "hf" / "model.safetensors")
    b = Tokenizer.from_gguf(REAL / "bitnet-f32.gguf")
    assert (a.model, a.vocab_size, a.bos_id, a.eos_id, a.add_bos) == (b.model, b.vocab_size, b.bos_id, b.eos_id, b.add_bos)
    assert a.eog_ids == b.eog_ids == {2}
    for s in ["Hello world 🦙 ½", "  x\n\ny ", "<s>hi</s> there", ""]:
        for ps in (False, True):
            assert a.encode(s, parse_special=ps) == b.encode(s, parse_special=ps)


# ---- errors --------------------------------------------------------------------------------------


def test_errors_are_clear(md2, md3, spm, tmp_path):
    with pytest.raises(ConfigError, match="no tokenizer metadata.*tokenizer.ggml.model"):
        Tokenizer.from_metadata({"general.architecture": "llama"})
    with pytest.raises(ConfigError, match="'bert' is not supported"):
        Tokenizer.from_metadata({**md2, "tokenizer.ggml.model": "bert"})
    with pytest.raises(ConfigError, match="tokenizer.ggml.pre = 'qwen9' is not supported"):
        Tokenizer.from_metadata({**md3, "tokenizer.ggml.pre": "qwen9"})
    with pytest.raises(ConfigError, match="merges is missing"):
        Tokenizer.from_metadata({k: v for k, v in md3.items() if k != "tokenizer.ggml.merges"})
    with pytest.raises(ConfigError, match="token_type has 5 entries, fewer than the 32000"):
        Tokenizer.from_metadata({**md2, "tokenizer.ggml.token_type": [1] * 5})
    with pytest.raises(ConfigError, match="duplicate token '<s>'.*ids 1 and 2"):
        Tokenizer.from_metadata({**md2, "tokenizer.ggml.tokens": ["<unk>", "<s>", "<s>"] + list(md2["tokenizer.ggml.tokens"][3:])})
    with pytest.raises(ConfigError, match="bos_token_id = 99999 is outside the vocabulary"):
        Tokenizer.from_metadata({**md2, "tokenizer.ggml.bos_token_id": 99999})
    with pytest.raises(ConfigError, match="token id 32000 at position 1 is out of range.*32000 tokens"):
        spm.decode([5, 32000])
    with pytest.raises(ConfigError, match="token id -1 .*out of range"):
        spm.stream().push(-1)
    with pytest.raises(ConfigError, match="cannot read tokenizer.json"):
        Tokenizer.from_file(tmp_path / "missing.json")
    with pytest.raises(ConfigError, match="has neither tokenizer.json nor tokenizer.model"):
        Tokenizer.from_file(tmp_path)
    (tmp_path / "bad.json").write_text('{"model": {"type": "Unigram", "vocab": []}}')
    with pytest.raises(ConfigError, match="'Unigram' is not supported"):
        Tokenizer.from_file(tmp_path / "bad.json")
    with pytest.warns(UserWarning, match="scores is missing"):
        Tokenizer.from_metadata({k: v for k, v in md2.items() if k != "tokenizer.ggml.scores"})
    no_bos = Tokenizer.from_metadata(tiny_gpt2_md(**{"tokenizer.ggml.pre": "gpt-2"}))
    with pytest.raises(ConfigError, match="no BOS token"):
        no_bos.encode("x", add_bos=True)
    assert issubclass(ConfigError, BitnetLabError)


def test_gguf_file_without_tokenizer_metadata(tmp_path):
    gguf = pytest.importorskip("gguf")
    path = tmp_path / "no-vocab.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ConfigError, match=r"no-vocab.gguf: no tokenizer metadata"):
        Tokenizer.from_gguf(path)


# ---- speed (a benchmark print; the bound is ~20x the measured time) ------------------------------


def test_encode_one_megabyte(bpe, spm, vec3, capsys):
    base = "".join(t for t, _ in vec3)
    text = base * -(-1_000_000 // len(base.encode()))             # at least 1 MB of UTF-8
    for name, tok in (("llama-bpe", bpe), ("llama-spm", spm)):
        t0 = time.perf_counter()
        ids = tok.encode(text, add_bos=False)
        dt = time.perf_counter() - t0
        with capsys.disabled():
            print(f"\n[bench] {name}: encode 1 MB ({len(text.encode())} bytes) -> {len(ids)} ids in {dt:.3f} s")
        assert tok.decode(ids) == text
        assert dt < 15.0


@pytest.mark.parametrize("bad", ["\u0120 zz", "q\u0120 t", "x y"])  # right part, left part, joined text unknown
def test_a_merge_naming_a_non_token_is_dropped_with_a_warning(bad):
    md = tiny_gpt2_md(**{"tokenizer.ggml.pre": "gpt-2"})
    clean = Tokenizer.from_metadata(md)
    # "x y": x and y are tokens, "xy" is not (tokenizers itself would panic on it)
    merges = [bad, *md["tokenizer.ggml.merges"], "h e"]  # and a repeated pair, which is no error
    with pytest.warns(UserWarning, match="1 merges name text that is not a token"):
        tok = Tokenizer.from_metadata({**md, "tokenizer.ggml.merges": merges})
    for text in (" the", "the then", " thee xy"):
        assert tok.encode(text) == clean.encode(text)
    with pytest.raises(ConfigError, match=r"merges\[1\] = 'ab' is not a 'left right' pair"):
        Tokenizer.from_metadata({**md, "tokenizer.ggml.merges": ["h e", "ab"]})
