"""Tokenizers for BitNet models: GGUF vocabularies and Hugging Face ``tokenizer.json`` files.

Facts: docs/formats.md#8-tokenizer-metadata. Behaviour follows llama.cpp (``upstream:src/llama-vocab.cpp``),
which is what bitnet.cpp runs, and passes llama.cpp's own test vectors (``data/vocab/*.inp/.out``).

Two vocabulary kinds (``tokenizer.ggml.model``):

- ``gpt2``: byte-level BPE. Text is cut by the pre-tokenizer regex named by ``tokenizer.ggml.pre``
  (``llama3``/``llama-bpe``/``falcon3``/``falcon_e``: the Llama-3 regex, with ``ignore_merges``;
  ``default``; ``gpt-2``), each piece's bytes go through GPT-2's byte → character map, then the
  file's merges run in rank order. A file without ``tokenizer.ggml.pre`` whose vocabulary is the
  128256-token Llama-3 one (the 2B-4T GGUF,
  docs/formats.md#83-the-2b-4t-gguf-tokenizer-differs-from-a-stock-llama-3-vocab) gets the Llama-3 regex.
- ``llama``: SentencePiece BPE as llama.cpp runs it: a space is put in front of every text
  fragment, spaces become ``▁``, adjacent symbols merge when the joined text is a token (the
  highest token score first, the leftmost on ties), characters no token covers fall back to
  ``<0xXX>`` byte tokens.

The merge loops run in the `tokenizers` library (Rust): a gpt2 vocabulary is its BPE model as
is; a llama vocabulary becomes a BPE model whose merge list is every (left, right) split of
every token, ordered by the token's score (so merge rank = score order). This module is the
bridge: special-token splitting, BOS/EOS, the space prefix, byte-exact decoding, streaming.

A Hugging Face ``tokenizer.json`` runs its own pipeline (normaliser, pre-tokenizer, BPE model)
under the same special-token, BOS and decoding rules; a SentencePiece-style file with HF's
``Metaspace`` pre-tokenizer is run as sentencepiece and llama.cpp do (a space in front of every
fragment, even one that starts with a space). A checkpoint folder with only ``tokenizer.model``
is read through `bitnet_lab.formats.vocab` (what the GGUF converter would write).

Encoding (``encode``), as llama.cpp's ``llama_tokenize``:

1. special tokens are cut out of the text first, the longest token text first. CONTROL and
   UNKNOWN tokens only when ``parse_special=True``; USER_DEFINED tokens always (llama.cpp does
   the same, following HF ``tokenizers``);
2. each remaining text fragment is tokenised on its own (SPM: with its own leading space);
3. BOS in front when ``add_bos`` (default: the file's ``add_bos_token``; when absent, True for
   ``llama`` vocabularies and the Llama-3 pre-tokenizers, False otherwise), EOS at the end when
   the file says ``add_eos_token``.

Defaults chosen here: ``parse_special=False`` (text is text: a user typing ``<|eot_id|>`` gets
the characters, not the control token; llama.cpp's test vectors are defined this way too).
Code that renders a chat template passes ``parse_special=True``.

Decoding (``decode``) is the exact inverse of ``encode``: control tokens are rendered as their
text unless ``skip_special=True``; for SPM vocabularies the one space that encoding put in front
of each fragment (at the start and after each special token) is removed again, so
``decode(encode(s, parse_special=p), ...) == s``. Where llama.cpp's detokenizer differs it is
lossy and is not copied: its ``clean_spaces`` pass (`` ?`` → ``?`` for gpt2 vocabularies), and
for SPM it strips the space only at the very start (``[<s>, ▁Hello]`` → ``"<s> Hello"`` there,
``"<s>Hello"`` here). Added-token flags ``normalized`` and ``single_word`` of a tokenizer.json
are not honoured (the text is matched as written). Bytes that are not valid
UTF-8 decode to U+FFFD. `StreamDecoder` yields the same text piece by piece and never emits
half a UTF-8 character.
"""

from __future__ import annotations

import codecs
import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from bitnet_lab.errors import ConfigError

__all__ = ["Tokenizer", "StreamDecoder", "bytes_to_unicode"]

# gguf-py TokenType (docs/formats.md#81-two-tokenizer-kinds); 0 is llama.cpp's UNDEFINED.
TOKEN_UNDEFINED, TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED, TOKEN_BYTE = range(7)

# ---- pre-tokenizer regexes (upstream:src/llama-vocab.cpp llm_tokenizer_bpe) -----------------
# llama.cpp's Llama-3 form: the contractions spelled out instead of (?i:...), so that Unicode
# case folding (e.g. 'ſ' ~ 's') cannot widen them.
_LLAMA3_RE = (
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_GPT2_RE = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
# llama.cpp's fallback ("default") pre-tokenizer: four regexes applied one after the other.
_DEFAULT_RES = (
    r"[\p{P}\$\+<=>\^~\|]+",
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)",
    r"\p{N}+",
    r"[0-9][0-9][0-9]",
)


@dataclass(frozen=True)
class _PreType:
    regexes: tuple[str, ...]   # applied in sequence; matches and the text between them both kept
    ignore_merges: bool        # a pre-token that is itself a token is emitted without merging
    add_bos: bool              # llama.cpp's default when tokenizer.ggml.add_bos_token is absent


_LLAMA3 = _PreType((_LLAMA3_RE,), ignore_merges=True, add_bos=True)
_PRE_TYPES: dict[str, _PreType] = {
    "llama3": _LLAMA3, "llama-v3": _LLAMA3, "llama-bpe": _LLAMA3, "falcon3": _LLAMA3,
    # bitnet.cpp's fork maps Falcon-E to the Llama-3 pre-type (docs/formats.md#82-llama-3-vocabulary)
    "falcon_e": _LLAMA3,
    "default": _PreType(_DEFAULT_RES, ignore_merges=False, add_bos=False),
    "gpt-2": _PreType((_GPT2_RE,), ignore_merges=False, add_bos=False),
}

# ---- special tokens found by their text (upstream:src/llama-vocab.cpp, load()) --------------
_EOT_TEXTS = ("<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
              "<|end_of_text|>", "<EOT>", "_<EOT>", "<｜end▁of▁sentence｜>", "<end_of_utterance>")
_EOM_TEXTS = ("<|eom_id|>",)
_EOG_TEXTS = frozenset(_EOT_TEXTS + _EOM_TEXTS + ("<|end_of_text|>",))
_EOS_GUESS_TEXTS = ("<|end_of_text|>", "</s>", "<|endoftext|>", "<eos>")

_SPACE = "\u2581"  # "▁", SentencePiece's escaped space
_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")
_LLAMA3_VOCAB_SIZE = 128256


def bytes_to_unicode() -> list[str]:
    """GPT-2's reversible byte → printable character map: entry ``b`` is the character that
    stands for byte ``b`` in byte-level BPE tokens (``' '`` → ``'Ġ'``, ``'\\n'`` → ``'Ċ'``).

    Printable Latin-1 bytes map to themselves; the other 68 bytes, in increasing order, to
    U+0100, U+0101, ... (re-derived from GPT-2's ``encoder.py``)."""
    keep = set(range(0x21, 0x7F)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
    table, n = [], 0
    for b in range(256):
        if b in keep:
            table.append(chr(b))
        else:
            table.append(chr(256 + n))
            n += 1
    return table


_B2U = bytes_to_unicode()
_U2B_TRANS = str.maketrans({c: chr(b) for b, c in enumerate(_B2U)})  # then .encode("latin-1")
_U2B = {c: b for b, c in enumerate(_B2U)}


def _byte_level_bytes(text: str) -> bytes:
    """Bytes of a byte-level BPE token. A character outside GPT-2's map stands for itself
    (its UTF-8 bytes), as HF's ByteLevel decoder does."""
    try:
        return text.translate(_U2B_TRANS).encode("latin-1")
    except UnicodeEncodeError:
        return b"".join(bytes([_U2B[c]]) if c in _U2B else c.encode("utf-8") for c in text)


@dataclass(frozen=True)
class _Special:
    """A token cut out of the text before tokenisation."""

    text: str
    id: int
    control: bool          # CONTROL/UNKNOWN: only matched when parse_special=True
    lstrip: bool = False   # swallow whitespace to its left (HF AddedToken.lstrip)
    rstrip: bool = False   # swallow whitespace to its right


# =============================================================================================
# The tokenizer
# =============================================================================================


class Tokenizer:
    """A vocabulary plus the rules to encode text to token ids and decode ids back to text.

    Build it with `from_gguf` (a model or vocabulary-only GGUF), `from_metadata` (GGUF metadata
    already read) or `from_file` (a Hugging Face ``tokenizer.json``). The module docstring
    states the encoding and decoding rules and the defaults.

    Attributes: ``model`` ("gpt2" byte-level BPE / "llama" SentencePiece), ``pre`` (the
    pre-tokenizer in effect), ``vocab_size``, ``bos_id``, ``eos_id``, ``eot_id``, ``unk_id``
    (None when absent), ``eog_ids`` (ids that end generation), ``add_bos`` / ``add_eos`` (the
    file's defaults), ``add_space_prefix`` (SPM leading space), ``chat_template`` (str or None).
    """

    def __init__(
        self,
        *,
        engine: Any,
        texts: list[str],
        types: np.ndarray,
        pieces: list[bytes],
        model: str,
        pre: str | None,
        add_space_prefix: bool,
        bos_id: int | None,
        eos_id: int | None,
        eot_id: int | None,
        eom_id: int | None,
        unk_id: int | None,
        add_bos: bool,
        add_eos: bool,
        chat_template: str | None,
        specials: Sequence[_Special],
        source: str,
    ) -> None:
        self._engine = engine                  # tokenizers.Tokenizer without added tokens
        self._texts = texts                    # (V,) token text as stored in the vocabulary
        self._types = types                    # (V,) int32 token types
        self._pieces = pieces                  # (V,) bytes each token stands for in decoded text
        self._token_to_id = {t: i for i, t in enumerate(texts) if t}
        self.model = model
        self.pre = pre
        self.add_space_prefix = bool(add_space_prefix)
        self.bos_id, self.eos_id, self.eot_id, self.eom_id, self.unk_id = bos_id, eos_id, eot_id, eom_id, unk_id
        self.add_bos, self.add_eos = bool(add_bos), bool(add_eos)
        self.chat_template = chat_template
        self.source = source
        # Longest text first, as llama.cpp's tokenizer_st_partition (byte length, then id).
        self._specials = sorted(specials, key=lambda s: (-len(s.text.encode("utf-8")), s.id))
        # Tokens that end a text fragment in encode (so SPM decode drops the next fragment's
        # added space) and tokens that skip_special drops (llama.cpp: UNKNOWN | CONTROL).
        # (Python lists: indexed once per token in decode loops.)
        self._boundary: list[bool] = np.isin(types, (TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNKNOWN)).tolist()
        self._skippable: list[bool] = np.isin(types, (TOKEN_CONTROL, TOKEN_UNKNOWN)).tolist()
        eog = {i for i in (eos_id, eot_id, eom_id) if i is not None}
        eog |= {self._token_to_id[t] for t in _EOG_TEXTS if t in self._token_to_id}
        self.eog_ids: frozenset[int] = frozenset(eog)

    # ---- construction ---------------------------------------------------------------------
    @classmethod
    def from_gguf(cls, path: str | Path) -> "Tokenizer":
        """From a GGUF file's ``tokenizer.*`` metadata (model files and vocabulary-only files
        alike; tensors are never read)."""
        from bitnet_lab.formats.gguf import read_metadata

        return cls.from_metadata(read_metadata(path), source=str(path))

    @classmethod
    def from_metadata(cls, md: Mapping[str, Any], *, source: str = "GGUF metadata") -> "Tokenizer":
        """From GGUF metadata as a dict (arrays as lists or numpy arrays)."""
        return _from_gguf_metadata(cls, md, source)

    @classmethod
    def from_file(cls, path: str | Path) -> "Tokenizer":
        """From a Hugging Face ``tokenizer.json``, or a checkpoint folder (or any file in one,
        e.g. ``model.safetensors``): its ``tokenizer.json``, else its SentencePiece
        ``tokenizer.model`` (read as llama.cpp's converter would write it to GGUF).

        For ``tokenizer.json``: BOS/EOS, the ``add_bos_token``/``add_eos_token`` flags and the
        chat template come from a neighbouring ``tokenizer_config.json`` (then ``config.json``)
        when present. Special tokens are the file's ``added_tokens`` (``special: true`` →
        control, else user-defined; their ``lstrip``/``rstrip`` are honoured). Only BPE models
        (byte-level, or SentencePiece-style with byte fallback) are supported."""
        p = Path(path)
        if p.suffix != ".json":
            folder = p if p.is_dir() else p.parent
            if (folder / "tokenizer.json").is_file():
                p = folder / "tokenizer.json"
            elif (folder / "tokenizer.model").is_file():
                from bitnet_lab.formats.vocab import vocab_metadata_from_hf

                return cls.from_metadata(vocab_metadata_from_hf(folder), source=str(folder / "tokenizer.model"))
            else:
                raise ConfigError(f"{folder} has neither tokenizer.json nor tokenizer.model")
        return _from_hf_file(cls, p)

    # ---- vocabulary -----------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return len(self._texts)

    def __len__(self) -> int:
        return len(self._texts)

    def __repr__(self) -> str:
        return (f"Tokenizer(model={self.model!r}, pre={self.pre!r}, vocab_size={self.vocab_size}, "
                f"bos_id={self.bos_id}, eos_id={self.eos_id}, eot_id={self.eot_id}, "
                f"add_bos={self.add_bos})")

    def id_to_token(self, token_id: int) -> str:
        """The token's text as the vocabulary stores it (``'Ġthe'``, ``'▁the'``, ``'<0x0A>'``)."""
        return self._texts[self._check_id(token_id)]

    def token_to_id(self, text: str) -> int | None:
        """The id of the token whose stored text is ``text``, or None."""
        return self._token_to_id.get(text)

    def token_type(self, token_id: int) -> int:
        """The token's type (1 NORMAL, 2 UNKNOWN, 3 CONTROL, 4 USER_DEFINED, 5 UNUSED, 6 BYTE)."""
        return int(self._types[self._check_id(token_id)])

    def token_to_bytes(self, token_id: int) -> bytes:
        """The bytes the token stands for in decoded text (control tokens: their text). A byte
        token or a piece of a multi-byte character gives an incomplete UTF-8 sequence."""
        return self._pieces[self._check_id(token_id)]

    def token_to_piece(self, token_id: int) -> str:
        """`token_to_bytes` as text; bytes that are not complete UTF-8 characters become U+FFFD
        (use `token_to_bytes` or `stream` to put such tokens back together)."""
        return self.token_to_bytes(token_id).decode("utf-8", errors="replace")

    def is_special(self, token_id: int) -> bool:
        """True for CONTROL, USER_DEFINED and UNKNOWN tokens (those `encode` cuts out)."""
        return bool(self._boundary[self._check_id(token_id)])

    def is_eog(self, token_id: int) -> bool:
        return int(token_id) in self.eog_ids

    # ---- encode ---------------------------------------------------------------------------
    def encode(self, text: str, add_bos: bool | None = None, *, add_eos: bool | None = None,
               parse_special: bool = False) -> list[int]:
        """Token ids of ``text``. ``add_bos``/``add_eos``: None = the file's default.
        ``parse_special``: also match CONTROL tokens (``<|eot_id|>``) written in the text."""
        if not isinstance(text, str):
            raise TypeError(f"encode takes a str, got {type(text).__name__}")
        add_bos = self.add_bos if add_bos is None else bool(add_bos)
        add_eos = self.add_eos if add_eos is None else bool(add_eos)
        out: list[int] = []
        if add_bos:
            out.append(self._need(self.bos_id, "BOS"))
        frags = self._partition(text, parse_special)
        texts = [f for f in frags if isinstance(f, str)]
        # encode_batch_fast: no character offsets (faster); fragments run in parallel.
        batch = getattr(self._engine, "encode_batch_fast", self._engine.encode_batch)
        encoded = iter(batch(texts, add_special_tokens=False) if texts else ())
        for f in frags:
            if isinstance(f, str):
                out.extend(next(encoded).ids)
            else:
                out.append(f)
        if add_eos:
            out.append(self._need(self.eos_id, "EOS"))
        return out

    def _partition(self, text: str, parse_special: bool) -> list[str | int]:
        """Cut special tokens out of ``text``: a list of text fragments (str) and ids (int)."""
        frags: list[str | int] = [text] if text else []
        for sp in self._specials:
            if (sp.control and not parse_special) or sp.text not in text:
                continue
            new: list[str | int] = []
            for f in frags:
                if isinstance(f, int) or sp.text not in f:
                    new.append(f)
                    continue
                parts = f.split(sp.text)
                last = len(parts) - 1
                for j, p in enumerate(parts):
                    if j:
                        new.append(sp.id)
                    if sp.lstrip and j < last:
                        p = p.rstrip()
                    if sp.rstrip and j:
                        p = p.lstrip()
                    if p:
                        new.append(p)
            frags = new
        return frags

    # ---- decode ---------------------------------------------------------------------------
    def decode(self, ids: Iterable[int], skip_special: bool = False) -> str:
        """Text of ``ids`` (a whole sequence: the inverse of `encode`). ``skip_special``: drop
        CONTROL and UNKNOWN tokens (BOS, ``<|eot_id|>``...) instead of rendering their text."""
        ids = self._check_ids(ids)
        return self._decode_bytes(ids, skip_special, at_start=True).decode("utf-8", errors="replace")

    def decode_bytes(self, ids: Iterable[int], skip_special: bool = False) -> bytes:
        """The bytes `decode` turns into text (before UTF-8 decoding)."""
        return self._decode_bytes(self._check_ids(ids), skip_special, at_start=True)

    def _decode_bytes(self, ids: list[int], skip_special: bool, at_start: bool) -> bytes:
        if not self.add_space_prefix and not skip_special:
            pieces = self._pieces
            return b"".join([pieces[i] for i in ids])
        out = []
        strip = at_start
        for i in ids:
            piece, strip = self._piece_in_context(i, skip_special, strip)
            out.append(piece)
        return b"".join(out)

    def _piece_in_context(self, i: int, skip_special: bool, strip: bool) -> tuple[bytes, bool]:
        """Bytes of token ``i`` given whether it opens a text fragment (``strip``); returns the
        bytes and whether the next token opens one. Shared by decode and StreamDecoder."""
        if self._boundary[i]:
            piece = b"" if (skip_special and self._skippable[i]) else self._pieces[i]
            return piece, True
        piece = self._pieces[i]
        if strip and self.add_space_prefix and piece[:1] == b" ":
            piece = piece[1:]                  # the space encode put in front of the fragment
        return piece, False

    def stream(self, skip_special: bool = False, *, at_start: bool = False) -> "StreamDecoder":
        """A `StreamDecoder`: push ids one at a time, get text that never ends inside a UTF-8
        character. ``at_start=True``: the first id begins the text (as in `decode`); False (the
        default): the ids continue text already there (generation after a prompt)."""
        return StreamDecoder(self, skip_special=skip_special, at_start=at_start)

    # ---- checks ---------------------------------------------------------------------------
    def _check_id(self, token_id: Any) -> int:
        try:
            i = int(token_id)
        except (TypeError, ValueError):
            raise ConfigError(f"token id must be an integer, got {token_id!r}") from None
        if not 0 <= i < len(self._texts):
            raise ConfigError(f"token id {i} is out of range: the vocabulary has {len(self._texts)} tokens "
                              f"(0..{len(self._texts) - 1})")
        return i

    def _check_ids(self, ids: Iterable[int]) -> list[int]:
        arr = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids)
        if arr.size == 0:
            return []
        if arr.ndim != 1 or arr.dtype.kind not in "iu":
            raise ConfigError(f"decode takes a 1-D sequence of integer token ids, got shape {arr.shape} "
                              f"dtype {arr.dtype}")
        bad = np.flatnonzero((arr < 0) | (arr >= len(self._texts)))
        if bad.size:
            k = int(bad[0])
            raise ConfigError(f"token id {int(arr[k])} at position {k} is out of range: the vocabulary has "
                              f"{len(self._texts)} tokens (0..{len(self._texts) - 1})")
        return arr.tolist()

    def _need(self, token_id: int | None, what: str) -> int:
        if token_id is None:
            raise ConfigError(f"{self.source}: the vocabulary has no {what} token, so it cannot be added")
        return token_id


class StreamDecoder:
    """Incremental decoding for generation: ``push(id)`` returns the text that became complete,
    ``flush()`` the rest. Bytes of a character split across tokens (byte-level BPE pieces,
    ``<0xE2>``-style byte tokens) are held back until the character is whole, so no partial
    character is ever emitted; ``"".join(push(i) for i in ids) + flush()`` equals
    ``decode(ids)`` when started with ``at_start=True``. Invalid UTF-8 becomes U+FFFD."""

    def __init__(self, tokenizer: Tokenizer, *, skip_special: bool = False, at_start: bool = False) -> None:
        self._tok = tokenizer
        self._skip = bool(skip_special)
        self._strip = bool(at_start)
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        i = self._tok._check_id(token_id)
        piece, self._strip = self._tok._piece_in_context(i, self._skip, self._strip)
        return self._utf8.decode(piece, final=False)

    def flush(self) -> str:
        """Whatever is held back (an incomplete character becomes U+FFFD); the decoder can be
        used again afterwards."""
        return self._utf8.decode(b"", final=True)

    @property
    def pending(self) -> bytes:
        """The bytes held back (the start of an incomplete UTF-8 character)."""
        return self._utf8.getstate()[0]


# =============================================================================================
# GGUF metadata
# =============================================================================================


def _as_list(v: Any) -> list:
    return v.tolist() if isinstance(v, np.ndarray) else list(v)


def _token_text(t: Any) -> str:
    return t.decode("utf-8", errors="replace") if isinstance(t, (bytes, bytearray)) else str(t)


def _texts(values: Any, key: str, source: str) -> list[str]:
    """``values`` as a list of str (the GGUF reader already gives str: kept as they are; ~10^5
    entries, so one comprehension instead of a call per entry). A scalar is a ConfigError."""
    if not isinstance(values, (list, tuple, np.ndarray)):
        raise ConfigError(f"{source}: {key} is {type(values).__name__} {str(values)[:40]!r}; expected an array of strings")
    return [t if type(t) is str else _token_text(t) for t in _as_list(values)]


def _array_of(md: Mapping[str, Any], key: str, n: int, dtype: Any, source: str) -> np.ndarray | None:
    v = md.get(key)
    if v is None:
        return None
    try:
        arr = np.asarray(_as_list(v) if not isinstance(v, np.ndarray) else v, dtype=dtype)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{source}: {key} is not a numeric array ({e})") from None
    if arr.ndim != 1 or arr.shape[0] < n:
        raise ConfigError(f"{source}: {key} has {arr.size} entries, fewer than the {n} tokens")
    return arr[:n]


def _special_id(md: Mapping[str, Any], key: str, n: int, default: int | None, source: str) -> int | None:
    v = md.get(key)
    if v is None:
        return default if default is not None and default < n else None
    try:
        i = int(v)
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: {key} = {v!r} is not an integer") from None
    if not 0 <= i < n:
        raise ConfigError(f"{source}: {key} = {i} is outside the vocabulary (0..{n - 1})")
    return i


def _is_llama3_vocab(texts: Sequence[str]) -> bool:
    """The 128256-token Llama-3 vocabulary (docs/formats.md#82-llama-3-vocabulary): 2B-4T, Llama3-8B."""
    return len(texts) == _LLAMA3_VOCAB_SIZE and texts[128000] == "<|begin_of_text|>"


def _text_lookup(token_to_id: Mapping[str, int], candidates: Iterable[str]) -> int | None:
    for t in candidates:
        if t in token_to_id:
            return token_to_id[t]
    return None


def _gguf_vocab_arrays(md: Mapping[str, Any], tokens: Any, is_spm: bool,
                       source: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Token texts, types (V,) int32 and scores (V,) float32, checked as llama.cpp's loader
    does: empty texts renamed, duplicates refused, arrays at least as long as the token list."""
    texts = _texts(tokens, "tokenizer.ggml.tokens", source)
    n = len(texts)
    if n == 0:
        raise ConfigError(f"{source}: tokenizer.ggml.tokens is empty")
    if "" in texts:
        for i, t in enumerate(texts):
            if not t:
                texts[i] = f"[EMPTY_{i}]"      # llama.cpp's name for an empty token
    if len(set(texts)) != n:
        seen: dict[str, int] = {}
        for i, t in enumerate(texts):
            if t in seen:
                raise ConfigError(f"{source}: duplicate token {t!r} in tokenizer.ggml.tokens (ids {seen[t]} and {i})")
            seen[t] = i
    types = _array_of(md, "tokenizer.ggml.token_type", n, np.int32, source)
    types = np.full(n, TOKEN_NORMAL, np.int32) if types is None else types.copy()
    scores = _array_of(md, "tokenizer.ggml.scores", n, np.float32, source)
    if scores is None:
        if is_spm:
            warnings.warn(f"{source}: tokenizer.ggml.scores is missing: SentencePiece merges fall back to "
                          "token-id order (llama.cpp would merge left to right)", stacklevel=4)
        scores = np.zeros(n, np.float32)
    return texts, types, scores


def _from_gguf_metadata(cls: type, md: Mapping[str, Any], source: str) -> Tokenizer:
    model = md.get("tokenizer.ggml.model")
    tokens = md.get("tokenizer.ggml.tokens")
    if model is None or tokens is None:
        missing = [k for k in ("tokenizer.ggml.model", "tokenizer.ggml.tokens") if md.get(k) is None]
        raise ConfigError(f"{source}: no tokenizer metadata ({', '.join(missing)} missing)")
    model = str(model)
    if model not in ("gpt2", "llama"):
        raise ConfigError(f"{source}: tokenizer.ggml.model = {model!r} is not supported "
                          "(gpt2 byte-level BPE or llama SentencePiece)")
    is_spm = model == "llama"
    texts, types, scores = _gguf_vocab_arrays(md, tokens, is_spm, source)
    n = len(texts)
    bos = _special_id(md, "tokenizer.ggml.bos_token_id", n, 1 if is_spm else None, source)
    eos = _special_id(md, "tokenizer.ggml.eos_token_id", n, 2 if is_spm else None, source)
    unk = _special_id(md, "tokenizer.ggml.unknown_token_id", n, 0 if is_spm else None, source)
    eot = _special_id(md, "tokenizer.ggml.eot_token_id", n, None, source)
    eom = _special_id(md, "tokenizer.ggml.eom_token_id", n, None, source)
    tok2id = {t: i for i, t in enumerate(texts)}
    if eot is None:
        eot = _text_lookup(tok2id, _EOT_TEXTS)
    if eom is None:
        eom = _text_lookup(tok2id, _EOM_TEXTS)
    # llama.cpp marks end-of-generation tokens found by text as CONTROL whatever the file says.
    for t in _EOG_TEXTS:
        if t in tok2id and types[tok2id[t]] != TOKEN_CONTROL:
            types[tok2id[t]] = TOKEN_CONTROL

    # Only SentencePiece vocabularies put a space in front (llama.cpp ignores the key for BPE
    # when tokenising).
    add_space_prefix = is_spm and bool(md.get("tokenizer.ggml.add_space_prefix", True))
    if is_spm:
        pre = str(md.get("tokenizer.ggml.pre") or "default")
        engine = _spm_engine(texts, scores, add_space_prefix)
        default_add_bos = True
        pieces = _spm_pieces(texts, types)
    else:
        pre = md.get("tokenizer.ggml.pre")
        if not pre:
            if _is_llama3_vocab(texts):
                # the 2B-4T GGUF lacks the key
                # (docs/formats.md#83-the-2b-4t-gguf-tokenizer-differs-from-a-stock-llama-3-vocab)
                pre = "llama3"
            else:
                warnings.warn(f"{source}: tokenizer.ggml.pre is missing; using llama.cpp's 'default' "
                              "pre-tokenizer, which may not match how the model was trained", stacklevel=3)
                pre = "default"
        pre = str(pre)
        if pre not in _PRE_TYPES:
            raise ConfigError(f"{source}: tokenizer.ggml.pre = {pre!r} is not supported "
                              f"(known: {', '.join(sorted(_PRE_TYPES))})")
        merges = md.get("tokenizer.ggml.merges")
        if merges is None:
            raise ConfigError(f"{source}: tokenizer.ggml.merges is missing (required for a gpt2 vocabulary)")
        engine = _gpt2_engine(tok2id, _texts(merges, "tokenizer.ggml.merges", source), _PRE_TYPES[pre], source)
        default_add_bos = _PRE_TYPES[pre].add_bos
        pieces = _gpt2_pieces(texts, types)

    specials = [_Special(texts[i], i, control=int(types[i]) != TOKEN_USER_DEFINED)
                for i in map(int, np.flatnonzero(np.isin(types, (TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNKNOWN))))]
    template = md.get("tokenizer.chat_template")
    return cls(
        engine=engine, texts=texts, types=types, pieces=pieces, model=model, pre=pre,
        add_space_prefix=add_space_prefix, bos_id=bos, eos_id=eos, eot_id=eot, eom_id=eom, unk_id=unk,
        add_bos=bool(md.get("tokenizer.ggml.add_bos_token", default_add_bos)),
        add_eos=bool(md.get("tokenizer.ggml.add_eos_token", False)),
        chat_template=None if template is None else str(template),
        specials=specials, source=source,
    )


def _gpt2_pieces(texts: Sequence[str], types: np.ndarray) -> list[bytes]:
    """Decoded bytes per token of a byte-level BPE vocabulary (llama.cpp token_to_piece)."""
    out = []
    for t, ty in zip(texts, types.tolist()):
        if ty in (TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNKNOWN):
            out.append(t.encode("utf-8"))      # rendered as written
        elif ty == TOKEN_NORMAL:
            out.append(_byte_level_bytes(t))
        elif ty == TOKEN_BYTE and _BYTE_TOKEN.fullmatch(t):
            out.append(bytes([int(t[3:5], 16)]))
        else:
            out.append(b"")                    # UNUSED / UNDEFINED: llama.cpp prints nothing
    return out


def _spm_pieces(texts: Sequence[str], types: np.ndarray) -> list[bytes]:
    """Decoded bytes per token of a SentencePiece vocabulary: ``▁`` is a space, ``<0xXX>`` a byte."""
    out = []
    for t, ty in zip(texts, types.tolist()):
        if ty in (TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNKNOWN):
            out.append(t.encode("utf-8"))
        elif ty == TOKEN_NORMAL:
            out.append(t.replace(_SPACE, " ").encode("utf-8"))
        elif ty == TOKEN_BYTE and _BYTE_TOKEN.fullmatch(t):
            out.append(bytes([int(t[3:5], 16)]))
        else:
            out.append(b"")
    return out


def _split_merges(merges: list[str], source: str) -> tuple[list[str], list[str]]:
    """GGUF merges "left right" as (lefts, rights), each split at the first space after its first
    character, as llama.cpp does (a token may itself start with a space character). A pair listed
    twice keeps its first rank, as in llama.cpp; the string is the pair (left + " " + right), so
    the repeats are dropped as strings. Comprehensions, not a loop: Llama-3 has 280 147 merges."""
    unique = list(dict.fromkeys(merges))
    cuts = [m.find(" ", 1) for m in unique]
    if -1 in cuts:
        bad = unique[cuts.index(-1)]
        raise ConfigError(f"{source}: tokenizer.ggml.merges[{merges.index(bad)}] = {bad!r} is not a 'left right' pair")
    return [m[:p] for m, p in zip(unique, cuts)], [m[p + 1:] for m, p in zip(unique, cuts)]


def _gpt2_engine(vocab: dict[str, int], merges: list[str], pre: _PreType, source: str) -> Any:
    """The byte-level BPE over ``vocab`` (token text -> id) and the GGUF ``merges``."""
    from tokenizers import Regex, Tokenizer as _HFTokenizer, models, pre_tokenizers

    lefts, rights = _split_merges(merges, source)
    pairs = list(zip(lefts, rights))
    # llama.cpp ignores a merge that names text which is not a token (tokenizers would panic on
    # it): lookups mapped in C find whether there are any (no temporary set: the 2B-4T's 280k
    # merges would hold ~40 MB more at the load's peak), a per-pair filter drops them
    known = vocab.__contains__
    if not (all(map(known, lefts)) and all(map(known, rights)) and all(map(known, map(str.__add__, lefts, rights)))):
        kept = [(a, b) for a, b in pairs if a in vocab and b in vocab and a + b in vocab]
        warnings.warn(f"{source}: {len(pairs) - len(kept)} merges name text that is not a token; they are ignored",
                      stacklevel=4)
        pairs = kept
    engine = _HFTokenizer(models.BPE(vocab, pairs, ignore_merges=pre.ignore_merges))
    engine.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in pre.regexes]
        + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
    return engine


def _spm_merges(texts: Sequence[str], scores: np.ndarray) -> list[tuple[str, str]]:
    """Every way to build a token from two tokens, ordered so that BPE rank order is llama.cpp's
    SPM order: the higher score of the joined token first (ties: lower token id, then the
    shorter left part). llama.cpp's SPM merges any two adjacent symbols whose joined text is a
    token, so listing every split of every token loses nothing."""
    vocab = {t: i for i, t in enumerate(texts)}
    cand = []
    for i, t in enumerate(texts):
        for k in range(1, len(t)):
            left, right = t[:k], t[k:]
            if left in vocab and right in vocab:
                cand.append((-float(scores[i]), i, k, left, right))
    cand.sort()
    return [(c[3], c[4]) for c in cand]


def _spm_engine(texts: list[str], scores: np.ndarray, add_space_prefix: bool) -> Any:
    from tokenizers import Tokenizer as _HFTokenizer, models

    vocab = {t: i for i, t in enumerate(texts)}
    engine = _HFTokenizer(models.BPE(vocab, _spm_merges(texts, scores), byte_fallback=True))
    engine.normalizer = _spm_normalizer(add_space_prefix)
    return engine


def _spm_normalizer(add_space_prefix: bool, first: Any = None) -> Any:
    """``first`` (an existing normaliser, optional), then "▁" in front (applied to each text
    fragment, as llama.cpp), then spaces → "▁"."""
    from tokenizers import normalizers

    steps = [] if first is None else [first]
    if add_space_prefix:
        steps.append(normalizers.Prepend(_SPACE))
    steps.append(normalizers.Replace(" ", _SPACE))
    return normalizers.Sequence(steps)


# =============================================================================================
# Hugging Face tokenizer.json
# =============================================================================================


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"cannot read {what} {path}: {e.strerror or e}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{what} {path} is not valid JSON: {e}") from None


def _components(node: Any, kind: str) -> list[dict]:
    """Every component of type ``kind`` in a normalizer / pre-tokenizer / decoder tree."""
    found = []
    if isinstance(node, dict):
        if node.get("type") == kind:
            found.append(node)
        for v in node.values():
            found += _components(v, kind)
    elif isinstance(node, list):
        for v in node:
            found += _components(v, kind)
    return found


def _token_content(v: Any) -> str | None:
    if isinstance(v, dict):
        v = v.get("content")
    return v if isinstance(v, str) else None


def _first_int(v: Any) -> int | None:
    if isinstance(v, list):
        v = v[0] if v else None
    return int(v) if isinstance(v, (int, np.integer)) and not isinstance(v, bool) else None


def _from_hf_file(cls: type, path: str | Path) -> Tokenizer:
    from tokenizers import Tokenizer as _HFTokenizer

    p = Path(path)
    spec = _read_json(p, "tokenizer.json")
    if not isinstance(spec, dict) or not isinstance(spec.get("model"), dict):
        raise ConfigError(f"{p} is not a tokenizer.json (no 'model' object)")
    mtype = spec["model"].get("type")
    if mtype != "BPE":
        raise ConfigError(f"{p}: tokenizer model type {mtype!r} is not supported (only BPE)")
    cfg_path = p.parent / "tokenizer_config.json"
    cfg = _read_json(cfg_path, "tokenizer_config.json") if cfg_path.exists() else {}
    model_cfg_path = p.parent / "config.json"
    model_cfg = _read_json(model_cfg_path, "config.json") if model_cfg_path.exists() else {}

    try:
        full = _HFTokenizer.from_file(str(p))
    except Exception as e:  # tokenizers raises its own Exception type for bad files
        raise ConfigError(f"{p}: the tokenizers library cannot load it: {e}") from None
    # The engine: the file's normaliser, pre-tokenizer and model (shared, not copied) without
    # its added tokens (cut out here) and post-processor (BOS/EOS added here).
    engine = _HFTokenizer(full.model)
    engine.normalizer = full.normalizer
    engine.pre_tokenizer = full.pre_tokenizer

    vocab = full.get_vocab(with_added_tokens=True)
    n = max(vocab.values()) + 1
    texts = [""] * n
    for t, i in vocab.items():
        texts[i] = t
    types = np.full(n, TOKEN_UNDEFINED, np.int32)
    types[[vocab[t] for t in vocab]] = TOKEN_NORMAL
    byte_level = bool(_components(spec.get("pre_tokenizer"), "ByteLevel") or _components(spec.get("decoder"), "ByteLevel"))
    if not byte_level and spec["model"].get("byte_fallback"):
        for i, t in enumerate(texts):
            if _BYTE_TOKEN.fullmatch(t):
                types[i] = TOKEN_BYTE
    unk_text = spec["model"].get("unk_token")
    specials = []
    for a in spec.get("added_tokens") or []:
        t, i = a.get("content"), a.get("id")
        if not isinstance(t, str) or not isinstance(i, int) or not t:
            continue
        if a.get("special"):
            types[i] = TOKEN_UNKNOWN if t == unk_text else TOKEN_CONTROL
        else:
            types[i] = TOKEN_USER_DEFINED
        specials.append(_Special(t, i, control=bool(a.get("special")), lstrip=bool(a.get("lstrip")),
                                 rstrip=bool(a.get("rstrip"))))

    add_space_prefix = False
    if not byte_level:
        add_space_prefix = any(c.get("prepend") == _SPACE for c in _components(spec.get("normalizer"), "Prepend"))
        pre = spec.get("pre_tokenizer")
        if isinstance(pre, dict) and pre.get("type") == "Metaspace":
            # HF's Metaspace skips the space prefix when the text already starts with one, and
            # may split at spaces; sentencepiece and llama.cpp do neither. Run it as they do.
            scheme = pre.get("prepend_scheme", "always" if pre.get("add_prefix_space", True) else "never")
            add_space_prefix = scheme in ("always", "first")
            engine.pre_tokenizer = None
            engine.normalizer = _spm_normalizer(add_space_prefix, first=full.normalizer)
    pieces = _gpt2_pieces(texts, types) if byte_level else _spm_pieces(texts, types)

    tok2id = {t: i for i, t in enumerate(texts) if t}

    def from_cfg(name: str) -> int | None:
        t = _token_content(cfg.get(name))
        if t is not None and t in tok2id:
            return tok2id[t]
        i = _first_int(model_cfg.get(f"{name}_id"))
        return i if i is not None and 0 <= i < n else None

    template_first = _template_first_special(spec.get("post_processor"), tok2id)
    bos = from_cfg("bos_token")
    if bos is None:
        bos = template_first
    eos = from_cfg("eos_token")
    if eos is None:
        eos = _text_lookup(tok2id, _EOS_GUESS_TEXTS)
    unk = tok2id.get(unk_text) if isinstance(unk_text, str) else None
    add_bos = cfg.get("add_bos_token")
    if not isinstance(add_bos, bool):
        add_bos = (template_first is not None and template_first == bos) or (not byte_level and bos is not None)
    add_eos = cfg.get("add_eos_token")
    return cls(
        engine=engine, texts=texts, types=types, pieces=pieces,
        model="gpt2" if byte_level else "llama", pre="tokenizer.json", add_space_prefix=add_space_prefix,
        bos_id=bos, eos_id=eos, eot_id=_text_lookup(tok2id, _EOT_TEXTS), eom_id=_text_lookup(tok2id, _EOM_TEXTS),
        unk_id=unk, add_bos=bool(add_bos), add_eos=add_eos is True,
        chat_template=_hf_chat_template(cfg, p.parent), specials=specials, source=str(p),
    )


def _template_first_special(post: Any, tok2id: Mapping[str, int]) -> int | None:
    """The id of the special token a TemplateProcessing post-processor puts first (the BOS it
    adds), or None."""
    for tp in _components(post, "TemplateProcessing"):
        single = tp.get("single") or []
        if single and isinstance(single[0], dict) and "SpecialToken" in single[0]:
            name = single[0]["SpecialToken"].get("id")
            ids = ((tp.get("special_tokens") or {}).get(name) or {}).get("ids") or []
            if ids:
                return int(ids[0])
            return tok2id.get(name)
    return None


def _hf_chat_template(cfg: Mapping[str, Any], folder: Path) -> str | None:
    t = cfg.get("chat_template")
    if isinstance(t, list):                    # [{"name": ..., "template": ...}, ...]
        named = {d.get("name"): d.get("template") for d in t if isinstance(d, dict)}
        t = named.get("default", next(iter(named.values()), None))
    if isinstance(t, str):
        return t
    jinja = folder / "chat_template.jinja"
    if jinja.exists():
        try:
            return jinja.read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"cannot read {jinja}: {e.strerror or e}") from None
    return None
