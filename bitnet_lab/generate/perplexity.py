"""Perplexity of a model on a text, the way llama.cpp's ``llama-perplexity`` measures it.

The procedure (``ggml-org/llama.cpp:tools/perplexity/perplexity.cpp``, ``perplexity()``):

1. the whole text is tokenised once, with a BOS in front when the vocabulary adds one;
2. it is cut into ``n_chunk = len(tokens) // n_ctx`` non-overlapping chunks of ``n_ctx`` tokens
   (at least two chunks' worth of tokens is required; ``n_chunks`` caps the count);
3. each chunk is evaluated from an empty cache, its first token replaced by BOS when the
   vocabulary adds one;
4. only the second half is scored: with ``first = n_ctx // 2``, the logits at positions
   ``first … n_ctx−2`` predict the tokens at ``first+1 … n_ctx−1`` (``n_ctx − first − 1`` tokens
   per chunk), so every scored token has at least ``n_ctx/2`` tokens of context;
5. a running estimate ``exp(Σ nll / count)`` is reported after every chunk;
6. the final value is ``PPL = exp(mean nll)`` with the error estimate ``PPL · sd`` where
   ``sd = sqrt((mean(nll²) − mean(nll)²) / (count − 1))`` — the standard error of the mean NLL
   carried through the exponential.

Here each token's NLL is computed from f32 logits with a float64 log-sum-exp (llama.cpp sums
``expf`` terms into a double; the two agree far below the printed digits).

``perplexity(logits_fn, tokens, n_ctx, ...)`` takes any ``logits_fn(ids) -> (T, V)`` — the native
engine, the JAX reference, or a training checkpoint — so every backend is measured by the same
code. ``model_perplexity(model, text, ...)`` is the text-level entry point.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from bitnet_lab.errors import ConfigError


@dataclass(frozen=True)
class PerplexityResult:
    """The outcome of one measurement. ``ppl ± ppl_sd``; ``running`` holds the estimate after
    each chunk (llama.cpp's ``[1]…,[2]…`` line)."""

    ppl: float
    ppl_sd: float
    nll_mean: float           # nats per scored token
    nll_sd: float             # standard error of nll_mean
    count: int                # scored tokens
    n_chunks: int
    n_ctx: int
    n_tokens: int             # tokens of the whole text (with BOS)
    seconds: float
    running: tuple[float, ...] = field(default_factory=tuple)

    def __str__(self) -> str:
        return f"PPL = {self.ppl:.4f} +/- {self.ppl_sd:.5f}"

    def to_dict(self) -> dict[str, Any]:
        return {"ppl": self.ppl, "ppl_sd": self.ppl_sd, "nll_mean": self.nll_mean, "nll_sd": self.nll_sd,
                "count": self.count, "n_chunks": self.n_chunks, "n_ctx": self.n_ctx,
                "n_tokens": self.n_tokens, "seconds": self.seconds, "running": list(self.running)}


def token_nll(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """``−log softmax(logits[i])[targets[i]]`` per row, float64. logits (N, V), targets (N,)."""
    z = np.asarray(logits, dtype=np.float64)
    m = z.max(axis=-1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(z - m).sum(axis=-1))
    return lse - z[np.arange(len(z)), np.asarray(targets)]


def perplexity(
    logits_fn: Callable[[np.ndarray], np.ndarray],
    tokens: Sequence[int] | np.ndarray,
    n_ctx: int,
    *,
    bos_id: int | None = None,
    n_chunks: int | None = None,
    on_chunk: Callable[[int, int, float], None] | None = None,
) -> PerplexityResult:
    """llama.cpp's perplexity of ``tokens`` (see the module docstring).

    ``logits_fn(ids)`` returns float logits (len(ids), V) of one sequence from an empty cache.
    ``bos_id``: put it at the start of every chunk (None: keep the text's own first token).
    ``n_chunks``: evaluate at most this many chunks. ``on_chunk(i, n_chunk, running_ppl)`` is
    called after chunk ``i`` (1-based).
    """
    toks = np.asarray(tokens, dtype=np.int64)
    n_ctx = int(n_ctx)
    if n_ctx < 4:
        raise ConfigError(f"context {n_ctx} is too short for perplexity (need at least 4 tokens)")
    if len(toks) < 2 * n_ctx:
        raise ConfigError(f"the text tokenizes to only {len(toks)} tokens; perplexity with a context of "
                          f"{n_ctx} needs at least {2 * n_ctx}")
    n_chunk = len(toks) // n_ctx
    if n_chunks is not None:
        if n_chunks <= 0:
            raise ConfigError(f"--chunks must be positive, got {n_chunks}")
        n_chunk = min(n_chunk, int(n_chunks))
    first = n_ctx // 2
    nll = nll2 = 0.0
    count = 0
    running = []
    t0 = time.perf_counter()
    for i in range(n_chunk):
        chunk = toks[i * n_ctx:(i + 1) * n_ctx].copy()
        if bos_id is not None:
            chunk[0] = bos_id
        logits = np.asarray(logits_fn(chunk))
        if logits.ndim != 2 or logits.shape[0] != n_ctx:
            raise ConfigError(f"logits_fn returned shape {logits.shape} for {n_ctx} tokens")
        # logits at first..n_ctx-2 predict the tokens at first+1..n_ctx-1 (the original ones)
        v = token_nll(logits[first:n_ctx - 1], toks[i * n_ctx + first + 1:(i + 1) * n_ctx])
        nll += float(v.sum())
        nll2 += float((v * v).sum())
        count += n_ctx - first - 1
        running.append(math.exp(nll / count))
        if on_chunk is not None:
            on_chunk(i + 1, n_chunk, running[-1])
    mean = nll / count
    var = nll2 / count - mean * mean
    # llama.cpp prints an error only when the variance is positive; with count >= 2 it is >= 0
    sd = math.sqrt(var / (count - 1)) if var > 0 and count > 1 else 0.0
    ppl = math.exp(mean)
    return PerplexityResult(ppl=ppl, ppl_sd=ppl * sd, nll_mean=mean, nll_sd=sd, count=count,
                            n_chunks=n_chunk, n_ctx=n_ctx, n_tokens=int(len(toks)),
                            seconds=time.perf_counter() - t0, running=tuple(running))


def text_tokens(tokenizer: Any, text: str) -> tuple[list[int], int | None]:
    """``(ids, bos_id)`` of ``text`` as llama-perplexity tokenises it: BOS in front when the
    vocabulary adds one (``bos_id`` is then also what every chunk starts with, else None); a
    vocabulary that appends EOS is refused, as llama.cpp asserts."""
    if tokenizer.add_eos:
        raise ConfigError("this vocabulary appends EOS to every text; llama-perplexity refuses such "
                          "vocabularies and so does bitnet_lab")
    ids = tokenizer.encode(text)  # the file's add_bos default
    return ids, (tokenizer.bos_id if tokenizer.add_bos else None)


def model_perplexity(model: Any, text: str, n_ctx: int, *, n_chunks: int | None = None,
                     on_chunk: Callable[[int, int, float], None] | None = None) -> PerplexityResult:
    """Perplexity of ``model`` (anything with ``.tokenizer`` and ``.logits(ids)``) on ``text``."""
    ids, bos = text_tokens(model.tokenizer, text)
    return perplexity(model.logits, ids, n_ctx, bos_id=bos, n_chunks=n_chunks, on_chunk=on_chunk)
