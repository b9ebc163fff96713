"""The backend contract: what the JAX reference and the native engine both implement.

``bitnet_lab.load`` returns a model whose ``runner`` is one of them; generation, verification,
benchmarks and notebooks are written against this contract only, so either backend serves::

    cache = runner.new_cache(n_ctx)                      # .pos, .n_ctx, .reset(), .truncate(n)
    logits = runner.forward(ids, cache)                  # (T, vocab) float32 for T new tokens
    logits = runner.forward(ids, cache, last_only=True)  # (1, vocab): the last row only
    logits, caps = runner.forward(ids, cache, capture=True)   # + named intermediates
    logits = runner.logits(ids)                          # full forward from an empty cache
    rows = runner.forward_batch([ids_a, ids_b], [cache_a, cache_b])   # (2, vocab): several
                                                         # sequences, each on its own cache

``forward_batch`` (batched generation, bitnet_lab/generate/batch.py): sequence i appends its
tokens (one for a decode step, several for a prefill chunk) to ``caches[i]``; the result for
each sequence equals its ``forward`` alone. ``last_only=True`` (the default) gives one (N, vocab)
array of each sequence's last row; ``last_only=False`` a list of (T_i, vocab) arrays. The native
engine runs all rows in one pass over the weights; the reference loops over the sequences.

Both check token ids with :func:`check_token_ids` (and a batch with :func:`check_batch`), so a
bad id gets the same message from either.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import os

import numpy as np

from bitnet_lab.config import ModelConfig
from bitnet_lab.errors import BitnetLabError, ConfigError

__all__ = ["MAX_N_CTX", "NUMERICS", "Backend", "Cache", "check_batch", "check_cache_size", "check_numerics_shapes",
           "check_token_ids", "numerics_options", "physical_memory"]

MAX_N_CTX = 2**31 - 1  # the most positions one cache may hold (the C side indexes them with int32)


# ---- numerics profiles (docs/numerics.md#12-numerics-profiles) -------------------------------------
#
# A profile names a whole arithmetic: "bitnet" is the model's training numerics (per-token absmax
# int8 activations, (acc / s_x) · γ); "llama.cpp" is what upstream llama.cpp computes for the same
# file (Q8_K activations per 256-block, ggml's per-block float accumulation, an F16 KV cache with its
# fp16 roundings, its lm_head dot). Each profile fixes the defaults of the finer options; an
# explicit option that contradicts the profile is refused rather than silently mixed in.
NUMERICS = ("bitnet", "llama.cpp")
_PROFILE_OPTIONS = {
    "bitnet": {"rounding": "half_even", "kv_dtype": "f32", "lm_head_dtype": "auto"},
    # Q8_K rounds with ggml's nearest_int (half to even); llama.cpp's KV cache is F16 by default;
    # "auto" is llama.cpp's lm_head (fp16 for F16, its Q8_0 dot for Q8_0, f32 for F32)
    "llama.cpp": {"rounding": "half_even", "kv_dtype": "f16", "lm_head_dtype": "auto"},
}
_FIXED_BY_PROFILE = {"llama.cpp": ("rounding", "kv_dtype", "lm_head_dtype")}


def numerics_options(numerics: str | None, *, rounding: str | None = None, kv_dtype: str | None = None,
                     lm_head_dtype: str | None = None) -> dict[str, str]:
    """The full option set of a backend: ``{"numerics", "rounding", "kv_dtype", "lm_head_dtype"}``.

    ``None`` options take the profile's default. Under "bitnet" every option may be changed (it is
    the research profile); under "llama.cpp" the options are llama.cpp's own, so a different
    explicit value is a ConfigError naming both.
    """
    numerics = "bitnet" if numerics is None else numerics
    if numerics not in NUMERICS:
        raise ConfigError(f"numerics {numerics!r} is not one of {', '.join(repr(n) for n in NUMERICS)}")
    given = {"rounding": rounding, "kv_dtype": kv_dtype, "lm_head_dtype": lm_head_dtype}
    out = {"numerics": numerics}
    for key, default in _PROFILE_OPTIONS[numerics].items():
        value = given[key]
        if value is not None and value != default and key in _FIXED_BY_PROFILE.get(numerics, ()):
            raise ConfigError(f"numerics={numerics!r} computes with {key}={default!r}; {key}={value!r} "
                              f"contradicts it (leave {key} out, or use numerics='bitnet')")
        out[key] = default if value is None else value
    return out


Q8_K_BLOCK = 256  # llama.cpp's activation blocks (ggml QK_K)


def check_numerics_shapes(config: ModelConfig, numerics: str) -> None:
    """numerics="llama.cpp" quantises every projection input to Q8_K, whose blocks are 256 long:
    a projection whose K is not a multiple of 256 cannot run (llama.cpp cannot run such a file either)."""
    if numerics != "llama.cpp":
        return
    bad = {p: K for p, (_, K) in config.projection_shapes().items() if K % Q8_K_BLOCK}
    if bad:
        raise ConfigError(f"numerics='llama.cpp' needs every projection's input width K to be a multiple of "
                          f"{Q8_K_BLOCK} (Q8_K blocks); not so for {', '.join(f'{p} (K={k})' for p, k in bad.items())}")


@runtime_checkable
class Cache(Protocol):
    """A sequence's KV cache: ``pos`` tokens cached out of ``n_ctx``."""

    pos: int
    n_ctx: int

    def reset(self) -> None: ...

    def truncate(self, n: int) -> None:
        """Keep the first ``n`` cached tokens exactly and forget the rest (a context shift)."""
        ...


@runtime_checkable
class Backend(Protocol):
    """A forward pass over one loaded model (the reference or the native engine)."""

    config: ModelConfig
    vocab_size: int
    n_ctx_max: int

    def new_cache(self, n_ctx: int | None = None) -> Cache: ...

    def forward(self, ids: Any, cache: Any, *, capture: bool = False, last_only: bool = False) -> Any: ...

    def logits(self, ids: Any, *, capture: bool = False) -> Any: ...

    def forward_batch(self, seqs: Any, caches: Any, *, last_only: bool = True) -> Any: ...


def check_token_ids(ids: Any, vocab_size: int) -> np.ndarray:
    """``ids`` as a contiguous int32 1-D array, or BitnetLabError naming what is wrong with it."""
    if ids is None or isinstance(ids, (str, bytes)) or np.isscalar(ids):
        raise BitnetLabError(f"token ids must be a 1-D sequence of integers, got {type(ids).__name__}")
    a = np.asarray(ids)
    if a.ndim != 1:
        raise BitnetLabError(f"token ids must be a 1-D sequence, got shape {a.shape}")
    if a.size and not np.issubdtype(a.dtype, np.integer):
        raise BitnetLabError(f"token ids must be integers, got dtype {a.dtype}")
    if a.size and (a.min() < 0 or a.max() >= vocab_size):
        bad = a[(a < 0) | (a >= vocab_size)]
        raise BitnetLabError(f"token id {int(bad[0])} is outside the vocabulary 0..{vocab_size - 1}")
    return np.ascontiguousarray(a, dtype=np.int32)


def check_batch(seqs: Any, caches: Any, vocab_size: int) -> list[np.ndarray]:
    """The token ids of a ``forward_batch`` call, one int32 array per sequence, or one
    BitnetLabError naming the sequence: as many caches as sequences, at least one sequence, no
    empty one, no cache given twice, and every sequence fits in its cache. Checked before any
    cache changes, so a refused batch leaves every cache as it was."""
    if isinstance(seqs, (str, bytes)) or not hasattr(seqs, "__len__"):
        raise BitnetLabError(f"forward_batch takes a list of token-id sequences, got {type(seqs).__name__}")
    caches = list(caches)
    if len(seqs) != len(caches):
        raise BitnetLabError(f"forward_batch: {len(seqs)} sequences but {len(caches)} caches")
    if not len(seqs):
        raise BitnetLabError("forward_batch: no sequences")
    out, seen = [], {}
    for i, (ids, cache) in enumerate(zip(seqs, caches)):
        try:
            a = check_token_ids(ids, vocab_size)
        except BitnetLabError as e:
            raise BitnetLabError(f"forward_batch: sequence {i}: {e}") from None
        if a.size == 0:
            raise BitnetLabError(f"forward_batch: sequence {i} has no tokens")
        if id(cache) in seen:
            raise BitnetLabError(f"forward_batch: sequences {seen[id(cache)]} and {i} share one cache "
                                 f"(each sequence needs its own)")
        seen[id(cache)] = i
        pos, n_ctx = int(getattr(cache, "pos", 0)), int(getattr(cache, "n_ctx", 0))
        if pos + a.size > n_ctx:
            raise BitnetLabError(f"forward_batch: sequence {i}: context overflow: {pos} cached + {a.size} "
                                 f"new tokens > n_ctx {n_ctx}")
        out.append(a)
    return out


def physical_memory() -> int | None:
    """Bytes of RAM of this machine (None where the OS does not say)."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, OSError, ValueError):
        return None


def check_cache_size(n_ctx: Any, bytes_per_position: int, training_context: int) -> int:
    """``n_ctx`` as an int, or a one-line error when it is not a positive integer or its KV cache
    (``bytes_per_position`` each) could never fit in this machine's memory — a huge training
    context taken as the default is refused with the numbers before anything is allocated."""
    if isinstance(n_ctx, bool) or not isinstance(n_ctx, (int, np.integer)) or n_ctx <= 0:
        raise BitnetLabError(f"n_ctx must be positive (an integer), got {n_ctx!r}")
    n_ctx = int(n_ctx)
    need, ram = n_ctx * bytes_per_position, physical_memory()
    if n_ctx > MAX_N_CTX or (ram and need > ram):
        fits = min(MAX_N_CTX, ram // max(bytes_per_position, 1)) if ram else MAX_N_CTX
        raise ConfigError(
            f"a KV cache of n_ctx {n_ctx} positions needs {need / 2**30:.4g} GiB"
            + (f", more than this machine's {ram / 2**30:.4g} GiB of memory" if ram and need > ram else "")
            + f" (at most {MAX_N_CTX} positions); pass a smaller n_ctx (CLI: -c), e.g. {min(fits, 4096)}"
            + (f" (the model's training context is {training_context})" if n_ctx == training_context else ""))
    return n_ctx
