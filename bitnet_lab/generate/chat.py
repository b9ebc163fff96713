"""Chat: the message formats of each model family and a multi-turn session that reuses the KV cache.

Formats (docs/formats.md#85-chat-templates)
-------------------------
``bitnet``   BitNet-b1.58-2B-4T training format, built at the token level as
             `BitNet:gpu/tokenizer.py` ``ChatFormat`` does: ``[BOS]``, then per message the
             header ``"User: "`` (``"System: "``, ``"Assistant: "``) encoded *on its own*, then
             ``content.strip()`` encoded on its own, then ``<|eot_id|>``; the generation prompt
             is the encoded ``"Assistant: "``. Text view:
             ``<|begin_of_text|>User: hi<|eot_id|>Assistant: ``. Stops on ``<|eot_id|>`` and
             ``<|end_of_text|>``.
``llama3``   Llama-3 header tokens: ``[BOS]``, per message ``<|start_header_id|>role
             <|end_header_id|>`` + ``"\\n\\n"`` + ``content.strip()`` + ``<|eot_id|>``; the
             generation prompt is the assistant header (meta-llama/llama3 ``ChatFormat``).
``falcon3``  The Falcon3-Instruct template (the ``tokenizer_config.json`` ``chat_template`` of
             tiiuae/Falcon3-*-Instruct, without tools): ``<|system|>\\n…\\n<|user|>\\n…\\n``,
             an assistant turn ``<|assistant|>\\n…<eos>`` followed by ``\\n`` unless it is the last
             message, and the generation prompt ``<|assistant|>\\n``; no BOS in the text
             (docs/formats.md#85-chat-templates). llama.cpp's built-in ``falcon3``
             (`upstream:src/llama-chat.cpp`) writes no eos after an assistant turn; the official
             template does, and so do we.
``chatml``   ``<|im_start|>role\n…<|im_end|>\n``, generation prompt ``<|im_start|>assistant\n``.
``template`` the Jinja template of the file (``tokenizer.chat_template``), rendered as the Hub
             does (sandboxed environment, ``trim_blocks``/``lstrip_blocks``, ``raise_exception``,
             ``bos_token``/``eos_token``, ``add_generation_prompt``) and tokenised with special
             tokens parsed.

How a format is chosen (`chat_format_for`), first rule that applies:

1. an explicit name (or Jinja source) wins;
2. the file's template (``tokenizer.chat_template``), rendered with Jinja — **except** (documented
   fallbacks) (a) the 2B-4T GGUF carries a placeholder ``Human: …BITNETAssistant:`` template
   written by its converter, which is not the training format and with which the model does not
   stop — we use ``bitnet`` instead; (b) a template that renders exactly the ``bitnet`` text (the HF
   2B-4T ``tokenizer_config.json``) is built at the token level by ``bitnet``, because rendering to
   one string and tokenising merges the header's space into the first content word (``" Hey"``),
   unlike training;
3. no template, a Falcon file — ``tokenizer.ggml.pre`` ``falcon3`` / ``falcon_e``, or
   ``general.name`` naming Falcon3 / Falcon-E — gets ``falcon3``. This comes before the vocabulary
   rule because Falcon3 files use the ``llama`` architecture and a Llama-3-style BPE vocabulary
   (our Falcon3 dummies embed the Llama-3 vocabulary itself), which would otherwise pick ``llama3``;
4. no template, the vocabulary decides: ``<|start_header_id|>`` and ``<|eot_id|>`` tokens →
   ``bitnet`` on a BitNet architecture, ``llama3`` otherwise; ``<|assistant|>`` and ``<|user|>``
   tokens → ``falcon3``;
5. otherwise (a base model) ``chatml``, llama.cpp's default (its ``<|im_end|>`` is then a stop
   string, as the vocabulary has no such token).

The chosen format's ``why`` records the rule, and the CLI prints it.

Multi-turn (`ChatSession`): the session keeps the KV cache and the ids in it; a new turn feeds
only its own tokens (closing the previous answer, the new user message, the generation prompt).
When the context fills — during an answer, or when a new turn does not fit — the session shifts
it as llama.cpp's chat does (`bitnet_lab.generate.loop.context_shift`): the system prompt (BOS and
the system message; ``n_keep`` overrides) stays, the oldest half of the rest goes, the rest is
re-encoded, and the chat goes on. ``ctx_shift=False`` stops an answer at a full context instead.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from bitnet_lab.errors import ConfigError
from bitnet_lab.generate.loop import (
    context_shift,
    Event,
    keep_count,
    resolve_seed,
    stop_ids_for,
    stream_tokens,
    TokenEvent,
)
from bitnet_lab.generate.sampling import SamplerChain, make_sampler
from bitnet_lab.generate.speculative import Speculation, make_drafter

__all__ = [
    "ChatFormat",
    "BitnetChatFormat",
    "Llama3ChatFormat",
    "Falcon3ChatFormat",
    "ChatMLChatFormat",
    "JinjaChatFormat",
    "ChatSession",
    "ChatTemplateError",
    "chat_format_for",
    "CHAT_FORMATS",
]

ROLES = ("system", "user", "assistant")
# An answer's length when none is given: at most this, and at most half the context.
DEFAULT_ANSWER_TOKENS = 256
BITNET_ARCHS = ("bitnet-b1.58", "bitnet-25", "bitnet")
# The 2B-4T GGUF's placeholder template (convert-ms-to-gguf-bitnet.py) — docs/formats.md#85-chat-templates.
PLACEHOLDER_MARKERS = ("BITNETAssistant",)
# Falcon files without a template (rule 3 of the module docstring): their pre-tokenizer names, and
# a general.name such as "Falcon3-1B-Instruct-1.58bit" or "Falcon-E-3B-Instruct" ("Falcon-Edge" is
# not matched: the family letter must end the word).
FALCON_PRE_TOKENIZERS = ("falcon3", "falcon_e")
FALCON_NAME = re.compile(r"falcon[-_ ]?(?:3|e)(?![a-z0-9])", re.IGNORECASE)


class ChatTemplateError(ConfigError):
    """A chat template cannot be compiled or rendered (or raised an error itself)."""


def _check_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict]:
    out = []
    for i, m in enumerate(messages):
        try:
            role, content = m["role"], m["content"]
        except (KeyError, TypeError) as e:
            raise ConfigError(f"chat message {i} must be a mapping with 'role' and 'content': {m!r}") from e
        if not isinstance(content, str):
            raise ConfigError(f"chat message {i} content must be a string, got {type(content).__name__}")
        out.append({"role": str(role), "content": content})
    return out


def _special_id(tok: Any, text: str) -> int:
    """The id of a special token given its text (e.g. ``<|eot_id|>``); ConfigError if the
    vocabulary has no such single token."""
    lookup = getattr(tok, "token_to_id", None)
    if callable(lookup):
        try:
            v = lookup(text)
        except (KeyError, ValueError):
            v = None
        if v is not None and int(v) >= 0:
            return int(v)
    ids = _encode(tok, text, add_bos=False, parse_special=True)
    if len(ids) != 1:
        raise ConfigError(f"the vocabulary has no single token {text!r} (it encodes to {len(ids)} ids)")
    return int(ids[0])


def _encode(tok: Any, text: str, *, add_bos: bool, parse_special: bool) -> list[int]:
    """``tok.encode`` that never appends EOS (some files set ``add_eos_token``; a chat piece
    must not end with it)."""
    if getattr(tok, "add_eos", False):
        return list(tok.encode(text, add_bos=add_bos, add_eos=False, parse_special=parse_special))
    return list(tok.encode(text, add_bos=add_bos, parse_special=parse_special))


def _has_special(tok: Any, text: str) -> bool:
    try:
        _special_id(tok, text)
        return True
    except ConfigError:
        return False


def _piece(tok: Any, token_id: int | None) -> str:
    if token_id is None:
        return ""
    return tok.token_to_piece(int(token_id))


# =====================================================================================
# Formats
# =====================================================================================


class ChatFormat:
    """How a conversation becomes token ids.

    ``encode(messages)``: the whole conversation from an empty cache. ``encode_next(past,
    new)``: the ids to append when ``past`` (ending with a complete message) is already in the
    cache. ``assistant_close(past)``: the ids that end an assistant message whose header and
    content are in the cache (``past[-1]`` is that message). ``stop_ids``: end-of-turn ids.
    ``render(messages)``: the text view (for display and tests).
    """

    name = "?"
    stop_ids: frozenset = frozenset()
    stop_strings: tuple = ()   # end-of-turn markers the vocabulary has no single token for
    why = ""                   # how chat_format_for chose this format (shown by the CLI)

    def encode(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True) -> list[int]:
        raise NotImplementedError

    def encode_next(self, past: Sequence[Mapping[str, Any]], new: Sequence[Mapping[str, Any]],
                    add_generation_prompt: bool = True) -> list[int]:
        raise NotImplementedError

    def assistant_close(self, past: Sequence[Mapping[str, Any]]) -> list[int]:
        raise NotImplementedError

    def render(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True) -> str:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class _TokenFormat(ChatFormat):
    """A format defined message by message at the token level: [BOS] + messages + header."""

    def __init__(self, tokenizer: Any):
        self.tok = tokenizer
        self.bos = tokenizer.bos_id
        self.eot = _special_id(tokenizer, "<|eot_id|>")
        stops = {self.eot}
        eos = getattr(tokenizer, "eos_id", None)
        if eos is not None:
            stops.add(int(eos))
        self.stop_ids = frozenset(stops)

    def _text(self, s: str) -> list[int]:
        return _encode(self.tok, s, add_bos=False, parse_special=False)

    def header(self, role: str) -> list[int]:
        raise NotImplementedError

    def message(self, role: str, content: str) -> list[int]:
        return self.header(role) + self._text(content.strip()) + [self.eot]

    def encode(self, messages, add_generation_prompt=True):
        ids = [] if self.bos is None else [int(self.bos)]
        return ids + self.encode_next((), messages, add_generation_prompt)

    def encode_next(self, past, new, add_generation_prompt=True):
        ids: list[int] = []
        for m in _check_messages(new):
            ids += self.message(m["role"], m["content"])
        if add_generation_prompt:
            ids += self.header("assistant")
        return ids

    def assistant_close(self, past):
        return [self.eot]


class BitnetChatFormat(_TokenFormat):
    """BitNet-b1.58-2B-4T training format (`BitNet:gpu/tokenizer.py` ChatFormat)."""

    name = "bitnet"

    def header(self, role: str) -> list[int]:
        if role not in ROLES:
            raise ConfigError(f"the bitnet chat format knows roles {ROLES}, not {role!r}")
        # the header is encoded on its own: "…:" then a standalone " " token
        # (docs/formats.md#85-chat-templates)
        return self._text(f"{role.capitalize()}: ")

    def render(self, messages, add_generation_prompt=True):
        eot = "<|eot_id|>"
        s = _piece(self.tok, self.bos)
        for m in _check_messages(messages):
            s += f"{m['role'].capitalize()}: {m['content'].strip()}{eot}"
        return s + ("Assistant: " if add_generation_prompt else "")


class Llama3ChatFormat(_TokenFormat):
    """Llama-3 header tokens (meta-llama/llama3 ``ChatFormat``: header, "\\n\\n", content, eot)."""

    name = "llama3"

    def __init__(self, tokenizer: Any):
        super().__init__(tokenizer)
        self.start = _special_id(tokenizer, "<|start_header_id|>")
        self.end = _special_id(tokenizer, "<|end_header_id|>")

    def header(self, role: str) -> list[int]:
        return [self.start] + self._text(role) + [self.end] + self._text("\n\n")

    def render(self, messages, add_generation_prompt=True):
        s = _piece(self.tok, self.bos)
        for m in _check_messages(messages):
            s += f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n{m['content'].strip()}<|eot_id|>"
        if add_generation_prompt:
            s += "<|start_header_id|>assistant<|end_header_id|>\n\n"
        return s


class _StringFormat(ChatFormat):
    """A format defined by rendering the whole conversation to text; incremental turns are
    the difference of two renderings (the new one must extend the old one), tokenised with
    special tokens parsed."""

    _SENTINEL = "\x00bitnet_lab_reply\x00"

    def __init__(self, tokenizer: Any):
        self.tok = tokenizer
        self.bos_text = _piece(tokenizer, getattr(tokenizer, "bos_id", None))
        self.eos_text = _piece(tokenizer, getattr(tokenizer, "eos_id", None))
        self.stop_ids = stop_ids_for(tokenizer)

    def _tokens(self, text: str, first: bool) -> list[int]:
        add_bos = bool(first and getattr(self.tok, "add_bos", False) and self.bos_text
                       and not text.startswith(self.bos_text))
        return _encode(self.tok, text, add_bos=add_bos, parse_special=True)

    def encode(self, messages, add_generation_prompt=True):
        return self._tokens(self.render(messages, add_generation_prompt), first=True)

    def _delta(self, before: str, after: str, what: str) -> str:
        if not after.startswith(before):
            i = next((k for k, (a, b) in enumerate(zip(before, after)) if a != b), min(len(before), len(after)))
            raise ChatTemplateError(
                f"the {self.name} chat template does not extend the conversation when {what}: "
                f"renderings differ at character {i} ({before[i:i + 20]!r} vs {after[i:i + 20]!r})"
            )
        return after[len(before):]

    def encode_next(self, past, new, add_generation_prompt=True):
        past, new = _check_messages(past), _check_messages(new)
        before = self.render(past, False)
        after = self.render(past + new, add_generation_prompt)
        return self._tokens(self._delta(before, after, "a message is added"), first=not past)

    def assistant_close(self, past):
        past = _check_messages(past)
        if not past or past[-1]["role"] != "assistant":
            raise ConfigError("assistant_close needs a conversation ending with an assistant message")
        # Render the answer as a sentinel: what follows the sentinel closes the message.
        probe = self.render(past[:-1] + [{"role": "assistant", "content": self._SENTINEL}], False)
        i = probe.find(self._SENTINEL)
        if i < 0:
            raise ChatTemplateError(f"the {self.name} chat template drops the assistant's content")
        return self._tokens(probe[i + len(self._SENTINEL):], first=False)


class Falcon3ChatFormat(_StringFormat):
    """Falcon3-Instruct ``<|role|>`` blocks (see module docstring)."""

    name = "falcon3"

    def render(self, messages, add_generation_prompt=True):
        messages = _check_messages(messages)
        s = ""
        for i, m in enumerate(messages):
            if m["role"] == "assistant":
                # the official template ends the last message at the eos, others with a newline
                s += f"<|assistant|>\n{m['content']}{self.eos_text}" + ("\n" if i < len(messages) - 1 else "")
            else:
                s += f"<|{m['role']}|>\n{m['content']}\n"
        return s + ("<|assistant|>\n" if add_generation_prompt and messages else "")


class ChatMLChatFormat(_StringFormat):
    """ChatML (``<|im_start|>role\n…<|im_end|>\n``): llama.cpp's fallback for a model without
    a chat template (`upstream:common/chat.cpp`). On a vocabulary without ``<|im_end|>`` as a
    token (a base model) the marker is text, so it is also a stop string."""

    name = "chatml"

    def __init__(self, tokenizer: Any):
        super().__init__(tokenizer)
        if _has_special(tokenizer, "<|im_end|>"):
            self.stop_ids = self.stop_ids | {_special_id(tokenizer, "<|im_end|>")}
        else:
            self.stop_strings = ("<|im_end|>",)

    def render(self, messages, add_generation_prompt=True):
        s = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in _check_messages(messages))
        return s + ("<|im_start|>assistant\n" if add_generation_prompt else "")


def _raise_exception(message: str) -> None:
    raise ChatTemplateError(f"the chat template raised: {message}")


def _tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None, separators=None, sort_keys: bool = False) -> str:
    # transformers' tojson: no HTML escaping (Jinja's built-in one escapes <, >, &, ')
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def compile_template(source: str):
    """Compile a chat template the way the Hub (transformers) does."""
    try:
        import jinja2
        import jinja2.ext
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError as e:  # jinja2 is a declared dependency
        raise ConfigError("rendering a chat template needs jinja2 (pip install jinja2)") from e
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(source)
    except jinja2.TemplateError as e:
        raise ChatTemplateError(f"the chat template does not compile: {e}") from e


class JinjaChatFormat(_StringFormat):
    """The file's own Jinja template."""

    name = "template"

    def __init__(self, tokenizer: Any, source: str):
        super().__init__(tokenizer)
        self.source = source
        self.template = compile_template(source)

    def render(self, messages, add_generation_prompt=True):
        import jinja2

        try:
            return self.template.render(
                messages=_check_messages(messages),
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_text,
                eos_token=self.eos_text,
            )
        except ChatTemplateError:
            raise
        except jinja2.TemplateError as e:
            raise ChatTemplateError(f"the chat template failed to render: {e}") from e


CHAT_FORMATS = {"bitnet": BitnetChatFormat, "llama3": Llama3ChatFormat, "falcon3": Falcon3ChatFormat,
                "chatml": ChatMLChatFormat}

_PROBE = [
    {"role": "system", "content": "S"},
    {"role": "user", "content": "Hey there"},
    {"role": "assistant", "content": "Hello"},
    {"role": "user", "content": "Bye"},
]


def chat_format_for(tokenizer: Any, config: Any = None, name: str | None = None) -> ChatFormat:
    """Pick the chat format of a model (rules in the module docstring); the returned format's
    ``why`` says which rule chose it.

    ``name``: "bitnet" | "llama3" | "falcon3" | "chatml" | "template" (the file's own) | a Jinja
    source.
    """
    return _choose(tokenizer, config, name)


def _with_why(fmt: ChatFormat, why: str) -> ChatFormat:
    fmt.why = why
    return fmt


def _choose(tokenizer: Any, config: Any, name: str | None) -> ChatFormat:
    if name:
        if name in CHAT_FORMATS:
            return _with_why(CHAT_FORMATS[name](tokenizer), "chosen by name")
        if name in ("template", "jinja"):
            src = getattr(tokenizer, "chat_template", None)
            if not src:
                raise ConfigError("the model file has no chat template (tokenizer.chat_template)")
            return _with_why(JinjaChatFormat(tokenizer, src), "the file's template, chosen by name")
        if "{{" in name or "{%" in name:
            return _with_why(JinjaChatFormat(tokenizer, name), "the Jinja template given")
        raise ConfigError(
            f"unknown chat template {name!r}; use one of {', '.join([*CHAT_FORMATS, 'template'])} or a Jinja source"
        )
    arch = getattr(config, "arch", None)
    src = getattr(tokenizer, "chat_template", None)
    if src and any(m in src for m in PLACEHOLDER_MARKERS):
        return _with_why(BitnetChatFormat(tokenizer),
                         "the file's template is the 2B-4T converter's placeholder; using the training format")
    if src:
        fmt = JinjaChatFormat(tokenizer, src)
        if _has_special(tokenizer, "<|eot_id|>"):
            bit = BitnetChatFormat(tokenizer)
            try:
                rendered = fmt.render(_PROBE, True)
            except ConfigError:
                rendered = None   # e.g. a template that rejects a system message
            want = bit.render(_PROBE, True)
            bos = _piece(tokenizer, bit.bos)
            if rendered is not None and (rendered == want or (bos and rendered == want[len(bos):])):
                return _with_why(bit, "the file's template renders the 2B-4T training format; "
                                      "built at the token level as in training")
        return _with_why(fmt, "the file's template")
    falcon = _falcon_file(tokenizer, config)
    if falcon:
        return _with_why(Falcon3ChatFormat(tokenizer), f"no template; a Falcon file ({falcon})")
    if _has_special(tokenizer, "<|start_header_id|>") and _has_special(tokenizer, "<|eot_id|>"):
        if arch is None or arch in BITNET_ARCHS:
            return _with_why(BitnetChatFormat(tokenizer), "no template; Llama-3 vocabulary on a BitNet architecture")
        return _with_why(Llama3ChatFormat(tokenizer), "no template; Llama-3 vocabulary")
    if _has_special(tokenizer, "<|assistant|>") and _has_special(tokenizer, "<|user|>"):
        return _with_why(Falcon3ChatFormat(tokenizer), "no template; <|assistant|> and <|user|> tokens in the vocabulary")
    return _with_why(ChatMLChatFormat(tokenizer),
                     "no template and no known chat tokens (a base model): llama.cpp's default, chatml")


def _falcon_file(tokenizer: Any, config: Any) -> str:
    """What marks a file as Falcon3 / Falcon-E (its pre-tokenizer, else its general.name), or ""."""
    pre = getattr(tokenizer, "pre", None)
    if pre in FALCON_PRE_TOKENIZERS:
        return f"tokenizer.ggml.pre = {pre}"
    name = getattr(config, "name", None)
    if isinstance(name, str) and FALCON_NAME.search(name):
        return f"general.name = {name!r}"
    return ""


# =====================================================================================
# Session
# =====================================================================================


class ChatSession:
    """A conversation with one KV cache.

    ``messages``: the conversation (role/content dicts), ``tokens``: the ids in the cache, in
    order (``len(tokens) == cache.pos``). `send` streams the answer to a new user message
    (`TokenEvent`s then a `DoneEvent`) and feeds only the new turn's tokens: the last token
    of the previous answer (never fed during generation) and the message that closes it,
    the user message, the generation prompt. If the answer stopped on a stop string, the
    cache keeps the tokens that formed it (as llama.cpp does); ``messages`` holds the text
    before it.

    Context shift (``ctx_shift``, on by default): when the cache is full the first ``n_keep``
    tokens stay and the oldest half of the rest goes (module docstring). ``n_keep``: None or -1
    = the system prompt (the BOS and the system message, or the BOS alone without one); N >= 0
    = the BOS and the N tokens after it, system prompt or not (llama.cpp's ``--keep``). ``n_shifts`` / ``n_discarded`` count
    the shifts and the tokens they dropped.
    ``draft``: speculative decoding for every answer (`bitnet_lab.generate.speculative.Speculation`,
    or a drafter; the answers are the same tokens, or drawn from the same distribution).
    """

    def __init__(
        self,
        model: Any,
        *,
        system: str | None = None,
        chat_format: ChatFormat | str | None = None,
        n_ctx: int | None = None,
        sampler: SamplerChain | None = None,
        seed: int | None = None,
        ctx_shift: bool = True,
        n_keep: int | None = None,
        draft: Any = None,
    ):
        self.runner = model.runner
        self.tokenizer = model.tokenizer
        self.config = getattr(model, "config", None)
        if chat_format is None or isinstance(chat_format, str):
            chat_format = chat_format_for(self.tokenizer, self.config, chat_format)
        self.format = chat_format
        self.n_ctx = int(n_ctx or getattr(self.config, "context", 0) or 2048)
        self.sampler = sampler if sampler is not None else make_sampler()
        self.seed = resolve_seed(seed)
        self.rng = np.random.default_rng(self.seed)
        self.system = system
        self.cache = self.runner.new_cache(self.n_ctx)
        self.messages: list[dict] = [{"role": "system", "content": system}] if system else []
        self.tokens: list[int] = []
        self.last_prompt_ids: list[int] = []   # what the last turn fed before generating
        self.n_rebuilds = 0                    # times the cache had to be rebuilt from scratch
        self._pending: list[int] = []          # decided but not yet fed
        self._stale = False
        self.ctx_shift = bool(ctx_shift)
        self.n_keep = self._keep_count(n_keep)
        self._keep_system = n_keep is None or n_keep < 0
        self.n_shifts = 0                      # context shifts so far
        self.n_discarded = 0                   # tokens they dropped
        if draft is not None and not isinstance(draft, Speculation):
            draft = Speculation(make_drafter(draft, model))
        self.draft = draft                     # speculative decoding: one Speculation across turns

    def _keep_count(self, n_keep: int | None) -> int:
        """The cached tokens a context shift keeps (see the class docstring)."""
        try:
            head = self.format.encode(self.messages, add_generation_prompt=False)
        except ConfigError:
            head = []
        if n_keep is None or n_keep < 0:
            return len(head)
        # the BOS (when the conversation starts with one) and N more tokens, wherever they fall
        return keep_count(head, 0, getattr(self.tokenizer, "bos_id", None)) + int(n_keep)

    # ---- state ------------------------------------------------------------------------
    @property
    def n_past(self) -> int:
        """Tokens in the KV cache."""
        return int(self.cache.pos)

    def reset(self) -> None:
        """Forget the conversation (the system prompt stays) and empty the cache."""
        self.cache.reset()
        self.messages = [{"role": "system", "content": self.system}] if self.system else []
        self.tokens, self._pending, self._stale = [], [], False

    # ---- a turn -----------------------------------------------------------------------
    @property
    def default_n(self) -> int:
        """The answer length when `send` is given none: ``min(256, n_ctx // 2)`` tokens (a model
        that never says its end token would otherwise answer forever once the context shifts)."""
        return max(1, min(DEFAULT_ANSWER_TOKENS, self.n_ctx // 2))

    def send(
        self,
        content: str,
        *,
        n: int | None = None,
        stop: Sequence[str] = (),
        should_stop: Callable[[], bool] | None = None,
    ) -> Iterator[Event]:
        """Add a user message and stream the answer: at most ``n`` tokens (None: `default_n`;
        -1: until an end token). ConfigError (before anything changes) if the turn does not fit in the context (with a context shift: not even after dropping
        everything but the first ``n_keep`` tokens; without: not in what is left)."""
        user = {"role": "user", "content": content}
        n = self.default_n if n is None else n
        rebuild = self._stale or not self.tokens
        if rebuild:
            new = self.format.encode(self.messages + [user], add_generation_prompt=True)
        else:
            new = self._pending + self.format.encode_next(self.messages, [user], add_generation_prompt=True)
        history = [] if rebuild else list(self.tokens)
        if self.ctx_shift:
            if rebuild and len(new) > self.n_ctx and self.messages:
                # the conversation, read again from its messages, outgrew the context: shift it
                # as the cache was (the first n_keep tokens, then the most recent ones)
                n_turn = len(self.format.encode_next(self.messages, [user], add_generation_prompt=True))
                head = new[: len(new) - n_turn]
                drop = self._shift_or_explain(len(head), n_turn)
                keep = min(self.n_keep, len(head))
                new = head[:keep] + head[keep + drop:] + new[len(head):]
            self._shift_or_explain(len(history), len(new))
        if self._stale:   # a previous turn was cut inside a forward pass: rebuild exactly
            self.cache.reset()
            self.tokens, self._pending, self._stale = [], [], False
            self.n_rebuilds += 1
        turn = _Turn(history + new)
        vocab = getattr(self.config, "vocab", None)
        core = stream_tokens(
            self.runner, self.tokenizer, self.cache, new, history=history, n=n,
            sampler=self.sampler, rng=self.rng, stop=tuple(stop) + tuple(self.format.stop_strings),
            stop_ids=self.format.stop_ids,
            vocab=vocab, should_stop=should_stop,
            ctx_shift=self.ctx_shift, n_keep=self.n_keep, on_shift=turn.shifted, draft=self.draft,
        )  # raises here (nothing changed yet) when the turn does not fit
        return self._run(core, new, user, turn)

    def _shift_or_explain(self, n_past: int, n_new: int) -> int:
        """`context_shift` with a message in chat terms when the turn cannot fit at all."""
        try:
            return context_shift(n_past, n_new, self.n_ctx, self.n_keep)
        except ConfigError:
            kept = f"its first {self.n_keep} tokens" + (" (the system prompt)" if self._keep_system else "")
            raise ConfigError(
                f"this turn needs {n_new} tokens but the context holds {self.n_ctx} tokens and keeps "
                f"{kept} when it shifts: shorten the message"
            ) from None

    def _run(self, core: Iterator[Event], new: list[int], user: dict, turn: _Turn) -> Iterator[Event]:
        # the state changes only once the caller starts iterating
        self.messages.append(user)
        self.last_prompt_ids = list(new)
        start = int(self.cache.pos)
        parts: list[str] = []
        last_eog = False
        try:
            for ev in core:
                if isinstance(ev, TokenEvent):
                    turn.generated.append(ev.token_id)
                    parts.append(ev.text)
                    last_eog = ev.eog
                yield ev
        finally:
            self._finish(start, turn, "".join(parts), last_eog)

    def _finish(self, start: int, turn: _Turn, text: str, last_eog: bool) -> None:
        pos = int(self.cache.pos)
        generated = turn.generated
        self.n_shifts += turn.n_shifts
        self.n_discarded += turn.n_discarded
        if pos == start and not generated and not turn.n_shifts:
            # closed before the prompt was fed: the turn never happened
            self.messages.pop()
            return
        # the cache's tokens: as of the last shift (or the turn's start), then the tokens fed since
        # (the last sampled token is never fed)
        cached = turn.cached + generated[turn.n_before:-1]
        if pos != len(cached):
            self._stale = True   # interrupted inside a forward pass: the cache is unknown
        else:
            self.tokens = cached
            self._pending = [] if (not generated or last_eog) else [generated[-1]]
        self.messages.append({"role": "assistant", "content": text})
        if not self._stale:
            self._pending += self.format.assistant_close(self.messages)

    def __repr__(self) -> str:
        return (f"ChatSession({self.format.name}, {len(self.messages)} messages, "
                f"{self.n_past}/{self.n_ctx} tokens in the cache)")


class _Turn:
    """What one turn put in the cache: ``cached`` (the cache's tokens at the turn's start, or right
    after its last context shift, when ``n_before`` tokens had been generated) and ``generated``."""

    def __init__(self, cached: list[int]):
        self.cached = cached
        self.generated: list[int] = []
        self.n_before = 0
        self.n_shifts = self.n_discarded = 0

    def shifted(self, tokens: list, n_discarded: int) -> None:
        self.cached, self.n_before = list(tokens), len(self.generated)
        self.n_shifts += 1
        self.n_discarded += n_discarded
