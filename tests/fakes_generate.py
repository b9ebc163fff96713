"""Small fakes for the generation / chat / CLI tests (no JAX, no model file).

FakeTokenizer: byte-level (ids 0..255 are bytes) plus a few special tokens, with the same
surface as bitnet_lab.tokenizer.Tokenizer (encode / decode / stream / ids / token_to_piece).
FakeRunner: the forward interface; the next-token logits are a deterministic function of the
tokens in the cache (``next_fn(tokens) -> id`` puts a peak on that id), and every forward
call is recorded.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Callable, Sequence

import numpy as np

SPECIALS = ["<s>", "</s>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>",
            "<|system|>", "<|user|>", "<|assistant|>"]
BOS, EOS, EOT, SHI, EHI = 256, 257, 258, 259, 260
VOCAB = 256 + len(SPECIALS)


class _Stream:
    def __init__(self, tok: "FakeTokenizer"):
        self.tok = tok
        self.dec = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        return self.dec.decode(self.tok.token_bytes(token_id))

    def flush(self) -> str:
        return self.dec.decode(b"", final=True)


class FakeTokenizer:
    def __init__(self, specials: Sequence[str] = SPECIALS, chat_template: str | None = None, add_bos: bool = True):
        self.specials = list(specials)
        self.bos_id, self.eos_id = 256, 257
        self.eot_id = 258 if "<|eot_id|>" in self.specials else None
        self.eog_ids = frozenset(i for i in (self.eos_id, self.eot_id) if i is not None)
        self.add_bos = add_bos
        self.chat_template = chat_template
        self.vocab_size = 256 + len(self.specials)
        self.model, self.pre = "fake", "fake"

    def token_to_id(self, text: str):
        return 256 + self.specials.index(text) if text in self.specials else None

    def token_bytes(self, i: int) -> bytes:
        return bytes([i]) if i < 256 else self.specials[i - 256].encode()

    def token_to_piece(self, i: int) -> str:
        return self.token_bytes(i).decode("utf-8", errors="replace")

    def encode(self, text: str, add_bos: bool | None = None, parse_special: bool = False) -> list[int]:
        ids = [self.bos_id] if (self.add_bos if add_bos is None else add_bos) else []
        i = 0
        while i < len(text):
            if parse_special:
                hit = next((s for s in self.specials if text.startswith(s, i)), None)
                if hit:
                    ids.append(256 + self.specials.index(hit))
                    i += len(hit)
                    continue
            ids.extend(text[i].encode())
            i += 1
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        return b"".join(self.token_bytes(i) for i in ids).decode("utf-8", errors="replace")

    def stream(self) -> _Stream:
        return _Stream(self)


@dataclass
class FakeCache:
    n_ctx: int
    tokens: list = field(default_factory=list)

    @property
    def pos(self) -> int:
        return len(self.tokens)

    def reset(self) -> None:
        self.tokens.clear()


class FakeRunner:
    """Logits at position t: ``base`` everywhere and ``peak`` on ``next_fn(tokens[:t+1])``."""

    def __init__(self, next_fn: Callable[[list], int], vocab: int = VOCAB, peak: float = 10.0):
        self.next_fn, self.vocab, self.peak = next_fn, vocab, peak
        self.calls: list[list[int]] = []

    def new_cache(self, n_ctx: int) -> FakeCache:
        return FakeCache(n_ctx)

    def forward(self, ids, cache: FakeCache, *, last_only: bool = False) -> np.ndarray:
        ids = [int(i) for i in ids]
        assert cache.pos + len(ids) <= cache.n_ctx, "fake cache overflow"
        self.calls.append(ids)
        out = np.zeros((len(ids), self.vocab), np.float32)
        for t, i in enumerate(ids):
            cache.tokens.append(i)
            out[t, int(self.next_fn(list(cache.tokens))) % self.vocab] = self.peak
        return out[-1:] if last_only else out

    def logits(self, ids) -> np.ndarray:
        return self.forward(ids, self.new_cache(len(ids)))


class ScriptRunner(FakeRunner):
    """Answers a script: after each forward call with more than one id (a prompt or a new chat
    turn), the next tokens are ``replies[turn]`` one by one, then ``after`` forever."""

    def __init__(self, *replies: Sequence[int], after: int = ord("."), vocab: int = VOCAB):
        super().__init__(self._next, vocab)
        self.replies, self.after = [list(r) for r in replies], after
        self.turn, self.start = -1, 0

    def _next(self, tokens: list) -> int:
        k = len(tokens) - self.start
        reply = self.replies[min(self.turn, len(self.replies) - 1)] if self.replies else []
        return reply[k] if 0 <= k < len(reply) else self.after

    def forward(self, ids, cache, *, last_only: bool = False):
        ids = list(ids)
        if len(ids) > 1:
            self.turn += 1
            self.start = cache.pos + len(ids)
        return super().forward(ids, cache, last_only=last_only)


def fake_model(runner: FakeRunner, tokenizer: FakeTokenizer | None = None, context: int = 256, arch: str = "bitnet-b1.58"):
    tok = tokenizer or FakeTokenizer()
    cfg = SimpleNamespace(context=context, vocab=runner.vocab, arch=arch,
                          bos_id=tok.bos_id, eos_id=tok.eos_id, eot_id=tok.eot_id)
    return SimpleNamespace(runner=runner, tokenizer=tok, config=cfg)
