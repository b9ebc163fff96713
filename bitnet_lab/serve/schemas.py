"""The request bodies of the HTTP API, as pydantic models with OpenAI's field names.

A field outside its range, of the wrong type, or unknown to a feature we do not implement (a
non-empty ``logit_bias``, ``suffix``) fails validation, and the app answers 400 with the OpenAI
error object whose ``param`` names the field (`param_of`). Fields OpenAI clients send that change
nothing here (``user``, ``store``, ``metadata`` …) are accepted and ignored, as llama.cpp's server
does.

Sampling defaults are llama-server's (and ``bitnet-lab run``'s): temperature 0.8, top-k 40,
top-p 0.95, min-p 0.05 — a client that wants OpenAI's plain softmax sampling sends
``temperature=1, top_p=1, top_k=0, min_p=0``; ``temperature=0`` is greedy.
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

__all__ = ["CompletionRequest", "ChatCompletionRequest", "ChatMessage", "TokenizeRequest",
           "DetokenizeRequest", "StreamOptions", "MAX_N", "MAX_TOP_LOGPROBS", "MAX_STOP", "param_of"]

MAX_N = 16              # choices per request (each takes a slot, like a request of its own)
MAX_TOP_LOGPROBS = 20   # OpenAI's limit for chat; completions' `logprobs` shares it here
MAX_STOP = 16           # stop strings per request


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class StreamOptions(_Body):
    include_usage: bool = False


class _Sampling(_Body):
    """What both endpoints share: the sampler, the length, the stop strings, streaming."""

    model: Optional[str] = None                # one model per server: any name is accepted
    max_tokens: Optional[int] = Field(None, ge=0)
    temperature: float = Field(0.8, ge=0.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    top_k: int = Field(40, ge=0)
    min_p: float = Field(0.05, ge=0.0, le=1.0)
    seed: Optional[int] = None
    stop: Union[str, list[str], None] = None
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    repeat_penalty: float = Field(1.0, gt=0.0)   # llama-server's extension
    repeat_last_n: int = Field(64, ge=-1)        # llama-server's extension (-1: the whole context)
    n: int = Field(1, ge=1, le=MAX_N)
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    logit_bias: Optional[dict[str, float]] = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: Any) -> list[str]:
        stops = [v] if isinstance(v, str) else list(v or [])
        if len(stops) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop strings, got {len(stops)}")
        return [s for s in stops if s]

    @field_validator("logit_bias")
    @classmethod
    def _no_bias(cls, v: Any) -> None:
        if v:
            raise ValueError("logit_bias is not supported by this server")
        return None

    @property
    def stops(self) -> list[str]:
        return list(self.stop or [])

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


PromptIds = list[int]


class CompletionRequest(_Sampling):
    """``POST /v1/completions``. ``prompt``: a string, a list of strings, a list of token ids, or
    a list of such lists. ``echo`` + ``logprobs``: the prompt's tokens and their log-probs come
    back in front of the completion (how a harness scores a multiple-choice answer)."""

    prompt: Union[str, list[str], PromptIds, list[PromptIds]]
    max_tokens: Optional[int] = Field(16, ge=0)  # OpenAI's default for completions
    echo: bool = False
    logprobs: Optional[int] = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    suffix: Optional[str] = None
    best_of: Optional[int] = None

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, v: Any) -> Any:
        if isinstance(v, list) and not v:
            raise ValueError("the prompt list is empty")
        if isinstance(v, list) and any(isinstance(p, list) and not p for p in v):
            raise ValueError("a prompt token list is empty")
        return v

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, v: Any) -> None:
        if v:
            raise ValueError("suffix (insertion) is not supported by this server")
        return None

    @field_validator("best_of")
    @classmethod
    def _best_of(cls, v: Any, info: ValidationInfo) -> Any:
        if v is not None and v != info.data.get("n", 1):
            raise ValueError("best_of other than n is not supported by this server")
        return v

    def prompts(self) -> list[Union[str, list[int]]]:
        """The prompts, each a string or a list of token ids."""
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if all(isinstance(x, int) for x in p):
            return [list(p)]
        return [x if isinstance(x, str) else list(x) for x in p]


class TextPart(_Body):
    type: Literal["text"]
    text: str


class ChatMessage(_Body):
    role: Literal["system", "developer", "user", "assistant"]
    content: Union[str, list[TextPart], None] = None
    name: Optional[str] = None

    def text(self) -> str:
        """The content as one string (text parts joined, as llama-server does)."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)

    def as_dict(self) -> dict:
        # "developer" is OpenAI's newer name for the system role
        return {"role": "system" if self.role == "developer" else self.role, "content": self.text()}


class ChatCompletionRequest(_Sampling):
    """``POST /v1/chat/completions``: the conversation is rendered with the model family's chat
    format (`bitnet_lab.generate.chat.chat_format_for`, as ``bitnet-lab chat`` does)."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: Optional[int] = Field(None, ge=0)   # OpenAI's newer name for max_tokens
    logprobs: bool = False
    top_logprobs: Optional[int] = Field(None, ge=0, le=MAX_TOP_LOGPROBS)

    @field_validator("top_logprobs")
    @classmethod
    def _top_needs_logprobs(cls, v: Any, info: ValidationInfo) -> Any:
        if v and not info.data.get("logprobs"):
            raise ValueError("top_logprobs needs logprobs: true")
        return v

    @property
    def answer_limit(self) -> Optional[int]:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class TokenizeRequest(_Body):
    """llama-server's ``POST /tokenize``."""

    content: str
    add_special: bool = False
    with_pieces: bool = False


class DetokenizeRequest(_Body):
    """llama-server's ``POST /detokenize``."""

    tokens: list[int]


def param_of(loc: tuple) -> Optional[str]:
    """The OpenAI ``param`` for a pydantic error location: ``("body", "messages", 0, "role")`` ->
    ``"messages[0].role"``; the union member names pydantic adds (``str``, ``list[int]`` …) are
    dropped. None for the body as a whole."""
    out = ""
    for part in loc[1:] if loc and loc[0] == "body" else loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif "[" in part or part in ("str", "int", "float", "bool", "function-after", "none") or part.startswith(
                ("function-", "list[", "union[", "literal[")):
            continue
        else:
            out += f".{part}" if out else part
    return out or None
