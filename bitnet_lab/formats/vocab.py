"""GGUF tokenizer metadata (``tokenizer.*`` keys) from Hugging Face tokenizer files.

Two kinds (docs/formats.md#81-two-tokenizer-kinds):

- ``tokenizer.json`` with a BPE model → ``tokenizer.ggml.model = gpt2``: ``tokens``,
  ``token_type``, ``merges`` and ``tokenizer.ggml.pre`` (the llama.cpp pre-tokenizer name);
- ``tokenizer.model`` (SentencePiece) → ``tokenizer.ggml.model = llama``: ``tokens``, ``scores``,
  ``token_type``, ``pre = default``.

Special token ids, ``add_bos_token``/``add_eos_token`` and the chat template come from
``tokenizer_config.json``, ``config.json`` and ``generation_config.json`` (first one that says
wins, in that order). ``vocab_metadata_from_gguf`` copies the ``tokenizer.*`` keys of an existing
GGUF (e.g. ``data/vocab/*.gguf``) instead.

Values are plain Python / numpy: token lists are ``list[str]``, ``scores`` float32 arrays,
``token_type`` int32 arrays, ids ``int``, flags ``bool``. ``TOKENIZER_KEY_TYPES`` says which
GGUF value type each key is written as.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from bitnet_lab.errors import ConfigError

# gguf-py TokenType (docs/formats.md#81-two-tokenizer-kinds).
TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED, TOKEN_BYTE = 1, 2, 3, 4, 5, 6

# The Llama-3 pre-tokenizer regex (tiktoken form, docs/formats.md#82-llama-3-vocabulary).
LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# The GGUF value type of every key this module writes ("str", "u32", "bool", "str[]", "f32[]",
# "i32[]"). Writers translate these to their own type ids.
TOKENIZER_KEY_TYPES: dict[str, str] = {
    "tokenizer.ggml.model": "str",
    "tokenizer.ggml.pre": "str",
    "tokenizer.ggml.tokens": "str[]",
    "tokenizer.ggml.scores": "f32[]",
    "tokenizer.ggml.token_type": "i32[]",
    "tokenizer.ggml.merges": "str[]",
    "tokenizer.ggml.add_bos_token": "bool",
    "tokenizer.ggml.add_eos_token": "bool",
    "tokenizer.chat_template": "str",
}
SPECIAL_TYPES: tuple[str, ...] = ("bos", "eos", "unk", "sep", "pad", "cls", "mask", "eot")
for _t in SPECIAL_TYPES:
    TOKENIZER_KEY_TYPES[f"tokenizer.ggml.{_t if _t != 'pad' else 'padding'}_token_id"] = "u32"


def special_id_key(typ: str) -> str:
    """GGUF key of a special-token id (``pad`` is spelled ``padding`` in GGUF)."""
    return f"tokenizer.ggml.{'padding' if typ == 'pad' else typ}_token_id"


def key_type(key: str) -> str | None:
    """The GGUF value type for a tokenizer key (named chat templates are strings)."""
    if key.startswith("tokenizer.chat_template"):
        return "str"
    return TOKENIZER_KEY_TYPES.get(key)


# ---- helpers -------------------------------------------------------------------------------

def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"cannot read {path}: {e}") from e


def _maybe_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    data = _read_json(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is not a JSON object")
    return data


def _looks_special(content: str) -> bool:
    """``<|...|>``-style tokens are control tokens even when not flagged special."""
    return bool(re.fullmatch(r"<\|.*\|>", content))


# ---- SentencePiece ---------------------------------------------------------------------------

def sentencepiece_vocab(model_path: str | Path, vocab_size: int | None = None,
                        src_dir: str | Path | None = None) -> dict[str, Any]:
    """``tokenizer.ggml.{model,pre,tokens,scores,token_type}`` from a SentencePiece model.

    Types: unknown / control / unused / byte as the model says, else normal. Entries of
    ``added_tokens.json`` become user-defined (score -1000); ids of ``tokenizer_config.json``'s
    ``added_tokens_decoder`` are control when special, user-defined otherwise; ids up to
    ``vocab_size`` (config.json) the model lacks become unused ``[PAD{i}]`` (score -10000)."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor()
    try:
        sp.LoadFromFile(str(model_path))
    except (OSError, RuntimeError) as e:
        raise ConfigError(f"cannot load SentencePiece model {model_path}: {e}") from e
    n_sp = sp.vocab_size()
    n = max(n_sp, vocab_size or 0)
    tokens = [f"[PAD{i}]" for i in range(n)]
    scores = np.full(n, -10000.0, dtype=np.float32)  # padding ids, as llama.cpp's converter
    types = np.full(n, TOKEN_UNUSED, dtype=np.int32)
    for i in range(n_sp):
        tokens[i] = sp.IdToPiece(i)
        scores[i] = sp.GetScore(i)
        if sp.IsUnknown(i):
            types[i] = TOKEN_UNKNOWN
        elif sp.IsControl(i):
            types[i] = TOKEN_CONTROL
        elif sp.IsUnused(i):
            types[i] = TOKEN_UNUSED
        elif sp.IsByte(i):
            types[i] = TOKEN_BYTE
        else:
            types[i] = TOKEN_NORMAL
    if src_dir is not None:
        src_dir = Path(src_dir)
        for content, tid in _maybe_json(src_dir / "added_tokens.json").items():
            tid = int(tid)
            if not 0 <= tid < n:
                raise ConfigError(f"added_tokens.json: id {tid} of {content!r} is outside the vocabulary (size {n})")
            tokens[tid], scores[tid], types[tid] = content, -1000.0, TOKEN_USER_DEFINED
        decoder = _maybe_json(src_dir / "tokenizer_config.json").get("added_tokens_decoder") or {}
        for tid, entry in decoder.items():
            tid = int(tid)
            if not 0 <= tid < n:
                raise ConfigError(f"tokenizer_config.json: added token id {tid} is outside the vocabulary (size {n})")
            content = str(entry["content"])
            special = bool(entry.get("special")) or _looks_special(content)
            tokens[tid] = content if special else content.replace("\u2581", " ")
            scores[tid] = -1000.0
            types[tid] = TOKEN_CONTROL if special else TOKEN_USER_DEFINED
    return {
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.pre": "default",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.scores": scores,
        "tokenizer.ggml.token_type": types,
    }


# ---- byte-level BPE (tokenizer.json) -----------------------------------------------------------

def _split_regexes(pre_tokenizer: Any) -> list[str]:
    """The regex patterns of every ``Split`` pre-tokenizer (recursing into ``Sequence``)."""
    if not isinstance(pre_tokenizer, dict):
        return []
    if pre_tokenizer.get("type") == "Sequence":
        return [r for p in pre_tokenizer.get("pretokenizers", []) for r in _split_regexes(p)]
    if pre_tokenizer.get("type") == "Split":
        pat = pre_tokenizer.get("pattern") or {}
        return [pat["Regex"]] if "Regex" in pat else []
    return []


def detect_bpe_pre(tokenizer_json: Mapping[str, Any], name_hint: str = "") -> str | None:
    """The llama.cpp pre-tokenizer name for a BPE ``tokenizer.json``, or None if unrecognised.

    llama.cpp's converters fingerprint the tokenizer by hashing its output on a test text; we
    recognise the families bitnet_lab targets from their structure instead:

    - ``llama-bpe``: the Llama-3 split regex and ``<|begin_of_text|>`` in the vocabulary
      (2B-4T, Llama3-8B-1.58);
    - ``falcon3`` / ``falcon_e``: the Llama-3 regex (llama.cpp maps ``falcon3`` to it) in a
      checkpoint whose name says Falcon3 / Falcon-E (``name_hint``: repo id, folder or
      ``_name_or_path``), since nothing inside the vocabulary is known to tell them apart.
    """
    regexes = _split_regexes(tokenizer_json.get("pre_tokenizer"))
    llama3 = LLAMA3_REGEX in regexes
    vocab = (tokenizer_json.get("model") or {}).get("vocab") or {}
    added = {a.get("content") for a in tokenizer_json.get("added_tokens") or [] if isinstance(a, dict)}
    hint = name_hint.lower().replace("_", "-")
    if llama3 and "falcon-e" in hint:
        return "falcon_e"
    if llama3 and "falcon3" in hint:
        return "falcon3"
    if llama3 and ("<|begin_of_text|>" in added or "<|begin_of_text|>" in vocab):
        return "llama-bpe"
    return None


def bpe_vocab(tokenizer_json_path: str | Path, vocab_size: int | None = None, *, pre: str | None = None,
              name_hint: str = "") -> tuple[dict[str, Any], dict[str, int]]:
    """``tokenizer.ggml.{model,pre,tokens,token_type,merges}`` from a BPE ``tokenizer.json``,
    and the token → id map (for resolving special tokens by text).

    Types: added tokens flagged special (or ``<|...|>``-shaped) → control, other added tokens →
    user-defined, ids up to ``vocab_size`` that nothing defines → unused ``[PAD{i}]``, the rest
    normal. Merges given as pairs are joined with a space (a space inside a part is written as
    U+0120, as llama.cpp's converter does)."""
    tj = _read_json(Path(tokenizer_json_path))
    if not isinstance(tj, dict) or not isinstance(tj.get("model"), dict):
        raise ConfigError(f"{tokenizer_json_path}: not a tokenizers JSON file (no 'model' object)")
    model = tj["model"]
    if model.get("type", "BPE") != "BPE":
        raise ConfigError(f"{tokenizer_json_path}: tokenizer model type {model.get('type')!r} is not BPE; "
                          "bitnet_lab converts BPE tokenizer.json or SentencePiece tokenizer.model")
    vocab: dict[str, int] = model.get("vocab") or {}
    added = [a for a in tj.get("added_tokens") or [] if isinstance(a, dict)]
    ids = [int(v) for v in vocab.values()] + [int(a["id"]) for a in added]
    if not ids:
        raise ConfigError(f"{tokenizer_json_path}: empty vocabulary")
    n = max(max(ids) + 1, vocab_size or 0)
    tokens: list[str | None] = [None] * n
    types = np.full(n, TOKEN_UNUSED, dtype=np.int32)
    for tok, tid in vocab.items():
        tokens[int(tid)] = tok
        types[int(tid)] = TOKEN_NORMAL
    for a in added:
        tid, content = int(a["id"]), str(a["content"])
        tokens[tid] = content
        special = bool(a.get("special")) or _looks_special(content)
        types[tid] = TOKEN_CONTROL if special else TOKEN_USER_DEFINED
    tokens = [t if t is not None else f"[PAD{i}]" for i, t in enumerate(tokens)]

    merges_raw = model.get("merges") or []
    merges: list[str] = []
    for m in merges_raw:
        if isinstance(m, str):
            merges.append(m)
        elif isinstance(m, (list, tuple)) and len(m) == 2:
            merges.append(" ".join(p.replace(" ", "\u0120") for p in m))
        else:
            raise ConfigError(f"{tokenizer_json_path}: unknown merges entry {m!r}")

    pre_name = pre or detect_bpe_pre(tj, name_hint)
    if pre_name is None:
        raise ConfigError(
            f"{tokenizer_json_path}: unrecognised BPE pre-tokenizer (split regexes "
            f"{_split_regexes(tj.get('pre_tokenizer'))!r}); pass the llama.cpp pre-tokenizer name "
            "explicitly (tokenizer_pre=..., e.g. 'llama-bpe', 'falcon3', 'falcon_e')"
        )
    token_to_id = {t: i for i, t in enumerate(tokens)}
    return {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": pre_name,
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.merges": merges,
    }, token_to_id


# ---- special tokens, flags, chat template ----------------------------------------------------

def _first_int(v: Any) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, list) and v and isinstance(v[0], int) and not isinstance(v[0], bool):
        return v[0]
    return None


def special_metadata(src_dir: str | Path, token_to_id: Mapping[str, int], n_vocab: int,
                     tokenizer_json: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Special-token ids, add_bos/add_eos flags and chat templates for a checkpoint folder.

    Ids: ``tokenizer_config.json`` ``<typ>_token`` (text → id), then ``config.json``
    ``<typ>_token_id``, then ``generation_config.json`` (first wins). EOT: ``eot_token``, else the
    ``<|eot_id|>`` token when the vocabulary has it (Llama-3 chat turns end with it,
    docs/formats.md#85-chat-templates). Flags: ``add_bos_token``/``add_eos_token`` of tokenizer_config.json,
    else the tokenizer.json post-processor template (a leading BOS means add_bos)."""
    src_dir = Path(src_dir)
    tc = _maybe_json(src_dir / "tokenizer_config.json")
    cfg = _maybe_json(src_dir / "config.json")
    gen = _maybe_json(src_dir / "generation_config.json")
    md: dict[str, Any] = {}

    def put(typ: str, tid: int | None, origin: str) -> None:
        key = special_id_key(typ)
        if tid is None or key in md:
            return
        if not 0 <= tid < n_vocab:
            raise ConfigError(f"{origin}: {typ} token id {tid} is outside the vocabulary (size {n_vocab})")
        md[key] = int(tid)

    for typ in SPECIAL_TYPES:
        entry = tc.get(f"{typ}_token")
        text = entry.get("content") if isinstance(entry, dict) else entry
        if isinstance(text, str):
            if text not in token_to_id:
                raise ConfigError(f"tokenizer_config.json: {typ}_token {text!r} is not in the vocabulary")
            put(typ, token_to_id[text], "tokenizer_config.json")
    for typ in SPECIAL_TYPES:
        put(typ, _first_int(cfg.get(f"{typ}_token_id")), "config.json")
    for typ in SPECIAL_TYPES:
        put(typ, _first_int(gen.get(f"{typ}_token_id")), "generation_config.json")
    if "<|eot_id|>" in token_to_id:
        put("eot", token_to_id["<|eot_id|>"], "vocabulary")

    for typ in ("bos", "eos"):
        flag = tc.get(f"add_{typ}_token")
        if isinstance(flag, bool):
            md[f"tokenizer.ggml.add_{typ}_token"] = flag
    if "tokenizer.ggml.add_bos_token" not in md and tokenizer_json:
        first = _template_first_special(tokenizer_json.get("post_processor"))
        bos = md.get("tokenizer.ggml.bos_token_id")
        if first is not None and bos is not None and token_to_id.get(first) == bos:
            md["tokenizer.ggml.add_bos_token"] = True

    template = tc.get("chat_template")
    if template is None and (src_dir / "chat_template.jinja").is_file():
        template = (src_dir / "chat_template.jinja").read_text(encoding="utf-8")
    if template is None and (src_dir / "chat_template.json").is_file():
        template = _maybe_json(src_dir / "chat_template.json").get("chat_template")
    if isinstance(template, str):
        md["tokenizer.chat_template"] = template
    elif isinstance(template, list):
        for t in template:
            name, body = t.get("name"), t.get("template")
            if isinstance(body, str):
                key = "tokenizer.chat_template" if name == "default" else f"tokenizer.chat_template.{name}"
                md[key] = body
    elif template is not None:
        raise ConfigError(f"chat_template has type {type(template).__name__}; expected a string or a list")
    return md


def _template_first_special(post: Any) -> str | None:
    """The token a ``TemplateProcessing`` post-processor puts first in a single sequence."""
    if not isinstance(post, dict):
        return None
    if post.get("type") == "Sequence":
        for p in post.get("processors", []):
            r = _template_first_special(p)
            if r is not None:
                return r
        return None
    if post.get("type") == "TemplateProcessing":
        single = post.get("single") or []
        if len(single) > 1 and isinstance(single[0], dict) and "SpecialToken" in single[0]:
            return single[0]["SpecialToken"].get("id")
    return None


# ---- entry points -----------------------------------------------------------------------------

def vocab_metadata_from_hf(src_dir: str | Path, *, vocab_size: int | None = None, pre: str | None = None,
                           name_hint: str = "") -> dict[str, Any]:
    """All ``tokenizer.*`` keys for the checkpoint folder ``src_dir``.

    ``tokenizer.json`` (BPE) is preferred when present, else ``tokenizer.model``. ``vocab_size``
    (config.json's) pads the token list with unused ``[PAD{i}]`` entries. ``pre`` overrides the
    detected BPE pre-tokenizer name."""
    src_dir = Path(src_dir)
    tj_path, sp_path = src_dir / "tokenizer.json", src_dir / "tokenizer.model"
    tj = None
    if tj_path.is_file():
        md, token_to_id = bpe_vocab(tj_path, vocab_size, pre=pre, name_hint=name_hint or src_dir.name)
        tj = _read_json(tj_path)
    elif sp_path.is_file():
        md = sentencepiece_vocab(sp_path, vocab_size, src_dir)
        token_to_id = {}
        for i, t in enumerate(md["tokenizer.ggml.tokens"]):
            token_to_id.setdefault(t, i)
    else:
        raise ConfigError(
            f"{src_dir} has neither tokenizer.json nor tokenizer.model; pass a GGUF to copy the "
            "vocabulary from (e.g. data/vocab/ggml-vocab-llama-bpe.gguf)"
        )
    n = len(md["tokenizer.ggml.tokens"])
    if vocab_size is not None and n != vocab_size:
        raise ConfigError(f"the tokenizer has {n} tokens but config.json says vocab_size {vocab_size}")
    md.update(special_metadata(src_dir, token_to_id, n, tj))
    return md


def canonical_tokenizer_value(key: str, value: Any) -> Any:
    """``value`` in the form this module hands out for ``key`` (arrays typed, ids int)."""
    kt = key_type(key)
    if kt == "f32[]":
        return np.asarray(value, dtype=np.float32)
    if kt == "i32[]":
        return np.asarray(value, dtype=np.int32)
    if kt == "str[]":
        return [v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else str(v) for v in value]
    if kt == "u32":
        return int(value)
    if kt == "bool":
        return bool(value)
    if kt == "str":
        return value.decode("utf-8") if isinstance(value, bytes) else str(value)
    return value


def vocab_metadata_from_gguf(path: str | Path) -> dict[str, Any]:
    """Every ``tokenizer.*`` key of an existing GGUF file (read with bitnet_lab's GGUF reader)."""
    from bitnet_lab.formats.gguf import read_metadata

    md = read_metadata(path)
    out = {k: canonical_tokenizer_value(k, v) for k, v in md.items() if k.startswith("tokenizer.")}
    if "tokenizer.ggml.tokens" not in out:
        raise ConfigError(f"{path} has no tokenizer.ggml.tokens: not a GGUF with a vocabulary")
    return out
