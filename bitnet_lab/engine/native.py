"""The fast CPU path: the whole forward pass in native code over the packed ternary weights.

``NativeEngine`` implements exactly the forward interface of the JAX reference
(:class:`bitnet_lab.reference.ReferenceModel`)::

    engine = NativeEngine(config, tensors, threads=None, numerics="bitnet", rounding="half_even",
                          kv_dtype="f32", lm_head_dtype="auto")
    cache = engine.new_cache(n_ctx)          # NativeCache: .pos, .n_ctx, .reset()
    logits = engine.forward(ids, cache)      # (T, vocab) float32 for the T new tokens; appends them
    logits = engine.forward(ids, cache, last_only=True)   # (1, vocab): the last row only
    rows = engine.forward_batch([ids_a, ids_b], [cache_a, cache_b])   # (2, vocab): one pass
    logits = engine.logits(ids)              # full forward from an empty cache
    logits, caps = engine.forward(ids, cache, capture=True)   # + named intermediates
    y = engine.bitlinear("blk.0.attn_q", x)  # one projection on f32 rows (the BitLinear tier)
    prof = engine.profile_decode(position=64)  # ms per op class of one decode step (C timers)

What happens where:

* **here (Python)**: everything a user can get wrong is checked (token ids, context length,
  tensor names and shapes, packed codes, TQ block scales, TL tilings, NaN / inf in the
  embedding, the norms and an untied lm_head, a KV cache larger than the machine's memory) with
  the project's errors; before each call, the files still mapped are checked for truncation or
  an in-place rewrite (one fstat each: a truncated mapping would otherwise end in SIGBUS).
  The float tensors (embedding, lm_head, norms) and the TL1/TL2 projections are handed to C
  *without copying*: they point into the memory-mapped file. I2_S and TQ2_0 projections are, by
  default (``i2s_layout="auto"``, on a level with a native x4 GEMV: AVX-512 VNNI, AVX2), re-ordered
  ONCE at load into the x4 layout — the same 2-bit codes, 4 rows interleaved per 64-byte step, so
  a decode GEMV reads one sequential stream (src/bl_mad.h; the gain per token is in
  docs/benchmarks.md#decode-memory-layout-and-streaming); TQ1_0 projections likewise into the x16
  layout (the same 1.69-bit codes without the block scales, 16 rows interleaved per 4-byte word;
  on AVX-512 VNNI and AMX). That copy is read with preadv and the mapping's pages are dropped, so
  RSS stays about one file size. ``i2s_layout="file"`` keeps the file's bytes in place. Layouts no kernel reads (``int8``, ``hf_packed``, F32/F16 ``t·γ`` tensors, I2_S rows whose K is not a
  multiple of 128) are repacked ONCE into I2_S bytes (2 bits a weight, K padded with zero weights
  to a multiple of 128) — never dequantised to float.
* **C (cython_kernels/src/engine.c)**: one call per forward — embedding, every layer, the
  lm_head — without the GIL, in one OpenMP parallel region over ``threads`` threads. Decode
  (one token) uses the GEMV kernels, prefill the activation-parallel GEMM kernels; q/k/v share
  one activation quantisation and gate/up share one (docs/numerics.md#26-where-the-quantisation-happens).

Numerics: the engine mirrors the reference's choices (bitnet_lab/reference/layers.py) rule by
rule for the integer side and every element-wise float op — activation quantisation, exact
ternary products, the BitLinear epilogue ``(acc / s_x) · γ``, RMSNorm (squares summed in
float64, ``1.0f/sqrtf``), RoPE from the same cos/sin tables (:func:`rope_tables`, tested equal
to the reference's), ``exp`` in float64, fp16 roundings of q, the softmax output and the K/V
cache with ``kv_dtype="f16"``, and of the hidden state before an F16 lm_head; a Q8_0 lm_head
uses llama.cpp's Q8_0 dot on both sides (the hidden state quantised to Q8_0 per block of 32),
a Q6_K lm_head llama.cpp's Q6_K × Q8_K dot (the hidden state quantised to Q8_K per block of 256;
docs/numerics.md#9-embedding-and-lm_head).
Every float reduction follows one canonical order shared by all ISA levels
(cython_kernels/src/engine_float.h), so results are bit-identical for every thread count and
ISA level. Attention dots, the softmax sum and the norms accumulate in float64 like the
reference (anything upstream of an int8 activation quantisation must: a 1e-7 difference there
once flipped an o-projection input and moved the logits by 3e-3); the lm_head accumulates in
float32 (32 lanes, multiply then add, a fixed fold), which the logits alone see: they agree
with the reference within ~1e-7 relative (tests/test_engine.py checks 1e-4 and identical greedy
tokens).

Speed (cython_kernels/src/engine.c, mad_avx512vnni.c, float_avx512.c): weights stream once per
token with a software prefetch into L2 ahead of the rows being read (the hardware prefetchers
do not follow the GEMV's interleaved row streams); the lm_head reads one row at a time; threads
meet at a spin-then-sleep barrier (``spin_us``). :meth:`NativeEngine.profile_decode` shows where
a decode step's time goes.

Memory: the packed weights (mapped, not copied) + the KV cache (``new_cache``; pages are
committed as positions fill up) + a workspace kept by the engine between calls (scratch of at
most ``ENGINE_CHUNK`` rows per thread, grown on demand: a decode step allocates nothing). Load
reads every page of the ternary weights once (the check for the invalid 2-bit code 3, one C pass
at memory speed when the file is cached) but not the embedding. Float
tensors are used in place when they are F32, F16, Q8_0 or Q6_K (a Q6_K embedding is
dequantised one looked-up row at a time; a Q6_K lm_head is widened to F32 only when
``lm_head_dtype="f32"`` asks for the exact float dot); BF16 is widened to F32 once at load.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from bitnet_lab import kernels
from bitnet_lab.backend import check_batch, check_cache_size, check_numerics_shapes, check_token_ids, numerics_options
from bitnet_lab.config import ModelConfig
from bitnet_lab.engine import residency
from bitnet_lab.engine.profile import DecodeProfile
from bitnet_lab.engine.weights import (
    KV_DTYPES,
    LM_HEAD_DTYPES,
    MAX_HEAD_DIM,
    PROF_CLASSES,
    PROJECTIONS,
    ROUNDING_CODE,
    prepare_weights,
    rope_tables,
    spin_us_setting,
    x4_wanted,
    x16_wanted,
)
from bitnet_lab.errors import BitnetLabError, ConfigError
from bitnet_lab.kernels.native import _k
from bitnet_lab.quant import ternary

__all__ = ["NativeCache", "NativeEngine"]

# ---- the cache --------------------------------------------------------------------------------


class NativeCache:
    """KV cache of one sequence: ``k``, ``v`` (n_layers, n_kv_heads, n_ctx, head_dim), float32 or
    fp16 (stored as uint16 bits). ``pos`` tokens are cached; positions ≥ ``pos`` are never read.
    Also holds the RoPE tables for its ``n_ctx`` positions."""

    def __init__(self, engine: NativeEngine, n_ctx: int) -> None:
        c = engine.config
        shape = (c.n_layers, c.n_kv_heads, n_ctx, c.head_dim)
        dt = np.uint16 if engine.kv_dtype == "f16" else np.float32
        # Committed page by page as positions fill up (residency.lazy_zeros: not np.zeros, whose
        # huge pages would commit the whole cache at the first token).
        self.k = residency.lazy_zeros(shape, dt, what=f"the K cache (n_ctx {n_ctx})")
        self.v = residency.lazy_zeros(shape, dt, what=f"the V cache (n_ctx {n_ctx})")
        self.n_ctx = int(n_ctx)
        self.kv_dtype = engine.kv_dtype
        self.pos = 0
        self._owner = id(engine)

    def reset(self) -> None:
        """Forget every token (entries at and beyond ``pos`` are never read, so no zeroing)."""
        self.pos = 0

    def truncate(self, n: int) -> None:
        """Forget every token after the first ``n`` (a context shift keeps a cached head); the
        first ``n`` entries stay exactly as they were."""
        n = int(n)
        if not 0 <= n <= self.pos:
            raise BitnetLabError(f"truncate({n}): the cache holds {self.pos} tokens")
        self.pos = n

    @property
    def nbytes(self) -> int:
        return int(self.k.nbytes + self.v.nbytes)

    def __repr__(self) -> str:
        return f"NativeCache(pos={self.pos}, n_ctx={self.n_ctx}, kv_dtype={self.kv_dtype})"


# ---- the engine -------------------------------------------------------------------------------


class NativeEngine:
    """The native forward pass over ``(config, tensors)`` (GGUF names, torch-order shapes).

    Options (the reference's, same meaning, recorded in :attr:`numerics`):

    - ``threads``: OpenMP threads (``None``: :func:`bitnet_lab.kernels.effective_threads`).
    - ``numerics``: the profile, "bitnet" (default) or "llama.cpp" (docs/numerics.md#12-numerics-profiles;
      the reference's option); it sets the defaults of the three options below and refuses a
      contradicting one (``backend.numerics_options``).
    - ``rounding``: activation rounding, "half_even" or "half_away"
      (docs/numerics.md#25-rounding-modes-at-a-glance).
    - ``kv_dtype``: "f32" or "f16" (K/V stored as fp16, q and the softmax output rounded to fp16).
    - ``lm_head_dtype``: "auto" (fp16 dot iff the lm_head is F16; a Q8_0 lm_head uses llama.cpp's
      Q8_0 dot, the hidden state quantised to Q8_0 per block of 32; a Q6_K lm_head llama.cpp's
      Q6_K × Q8_K dot, read in place), "f16" or "f32".
    - ``n_ctx_max``: default cache length (default ``config.context``).
    - ``spin_us``: how long a thread waiting at a barrier between stages spins before it sleeps
      (default: ``$BITNET_LAB_SPIN_US`` or 20 µs). Spinning reacts at once on a quiet machine;
      sleeping costs a futex wake-up but frees the core on a busy one (src/engine.h says why;
      measurements in docs/benchmarks.md#threads-and-barriers).

    The ISA level is :func:`bitnet_lab.kernels.active_isa` at each call (``use_isa`` switches it).
    """

    def __init__(
        self,
        config: ModelConfig,
        tensors: Mapping[str, Any],
        *,
        threads: int | None = None,
        numerics: str | None = None,
        rounding: str | None = None,
        kv_dtype: str | None = None,
        lm_head_dtype: str | None = None,
        n_ctx_max: int | None = None,
        spin_us: float | None = None,
        i2s_layout: str = "auto",
    ) -> None:
        opts = numerics_options(numerics, rounding=rounding, kv_dtype=kv_dtype, lm_head_dtype=lm_head_dtype)
        profile, rounding, kv_dtype, lm_head_dtype = (
            opts["numerics"], opts["rounding"], opts["kv_dtype"], opts["lm_head_dtype"])
        check_numerics_shapes(config, profile)
        if profile == "llama.cpp" and i2s_layout == "x4":
            raise ConfigError("i2s_layout='x4' does not apply to numerics='llama.cpp': its per-block kernels "
                              "read the row-major layouts (use i2s_layout='auto' or 'file')")
        if rounding not in ternary.ROUNDING_MODES:
            raise ConfigError(f"rounding {rounding!r} is not one of {ternary.ROUNDING_MODES}")
        if kv_dtype not in KV_DTYPES:
            raise ConfigError(f"kv_dtype {kv_dtype!r} is not one of {KV_DTYPES}")
        if lm_head_dtype not in LM_HEAD_DTYPES:
            raise ConfigError(f"lm_head_dtype {lm_head_dtype!r} is not one of {LM_HEAD_DTYPES}")
        x4, x16 = x4_wanted(i2s_layout), x16_wanted(i2s_layout)
        self.config = config
        self.vocab_size = config.vocab
        self.threads = kernels.effective_threads(threads)
        self.rounding = rounding
        self.kv_dtype = kv_dtype
        self.n_ctx_max = int(n_ctx_max if n_ctx_max is not None else config.context)
        if self.n_ctx_max <= 0:
            raise ConfigError(f"n_ctx_max must be positive, got {self.n_ctx_max}")
        if config.head_dim > MAX_HEAD_DIM:  # the float kernels keep a head's query on the stack
            raise ConfigError(f"head_dim {config.head_dim} is larger than the native engine's {MAX_HEAD_DIM} "
                              "(real models use 64-256); the JAX reference (backend='reference') has no such limit")
        # RoPE cos/sin rows for positions 0..n-1, shared by every cache and grown on demand (a row
        # depends on its position only), so a cache of a huge n_ctx costs nothing until it fills.
        self._rope_cos = self._rope_sin = np.zeros((0, max(config.rot_dim // 2, 1)), np.float32)

        w = prepare_weights(config, tensors, x4=x4, x16=x16, lm_head_dtype=lm_head_dtype, numerics=profile)
        self._packed = w.packed
        self.i2s_layout = w.i2s_layout
        c = config
        H, V = c.hidden, c.vocab
        lm_f16, lm_q8 = w.lm_f16, w.lm_q8

        dims = {
            "hidden": H, "n_heads": c.n_heads, "n_kv_heads": c.n_kv_heads, "head_dim": c.head_dim,
            "ffn": c.ffn, "vocab": V, "rot_dim": c.rot_dim, "rope_neox": int(c.rope_style == "neox"),
            "act_relu2": int(c.activation == "relu2"), "sub_norms": int(c.sub_norms),
            "rounding": ROUNDING_CODE[rounding], "kv_f16": int(kv_dtype == "f16"), "lm_f16": int(lm_f16),
            "lm_q8": int(lm_q8),
            "block_epilogue": int(w.block_mode),  # non-uniform TQ block scales (src/engine.h BL_EPI_BLOCKS)
            # llama.cpp profile: Q8_K activations and ggml's per-block TQ dot in every projection (BL_EPI_Q8K)
            "act_q8k": int(profile == "llama.cpp"),
            "eps": float(np.float32(c.norm_eps)),
            "kq_scale": float(np.float32(1.0) / np.sqrt(np.float32(c.head_dim))),  # 1.0f/sqrtf(d)
        }
        self._lm_rows = w.lm[1]  # what lm_head_rows shows (the C core holds its own reference)
        # The arrays the C side reads that are still views of a mapped file (norms, embedding,
        # projections used in place): a file truncated under them would kill the process with
        # SIGBUS at the next touch, so every call first checks the files (one fstat each).
        self._mapped = residency.MappedFiles(w.mapped_arrays())
        self._core = _k.EngineCore(dims, w.layers, w.embed, w.lm, w.output_norm)
        self.spin_us = spin_us_setting(spin_us)
        self._core.set_spin_ns(int(self.spin_us * 1000))
        per_layer, glob = self._core.capture_specs()
        self._cap_layer, self._cap_global = per_layer, glob
        self._weight_bytes = sum(int(a.nbytes) for _, a in self._packed.values())
        if profile == "llama.cpp":  # the same words as the reference's record
            act = {"activations": "Q8_K per 256-block", "rounding": "half_even (ggml nearest_int)",
                   "epilogue": "sumf += fl32(sumi_b) * fl32(d8_b * d_w,b), f32, blocks in order"}
        else:
            act = {"activations": "per-token absmax int8", "rounding": rounding, "act_floor": ternary.ACT_EPS,
                   "epilogue": "fl32(sum_b acc_b*d_b) / s_x" if w.block_mode else "(acc / s_x) * gamma"}
        self.numerics = {
            "profile": profile,
            **act,
            "kv_dtype": kv_dtype,
            "lm_head": "q8_0" if lm_q8 else "q6_k" if w.lm_q6k else "f16" if lm_f16 else "f32",
            "embed_type": w.embed_type,
            "lm_head_type": w.lm_head_type,
            "float_dots": "float32 accumulate, canonical 16-lane order (multiply, add; fixed fold)",
            "i2s_layout": self.i2s_layout,
        }

    # ---- caches -------------------------------------------------------------------------------
    def _rope(self, n_pos: int) -> tuple[np.ndarray, np.ndarray]:
        """cos/sin tables covering at least positions 0..n_pos-1 (grown by doubling; rows of the
        recurrence start at their own position, so growing appends exactly what one build makes)."""
        have = self._rope_cos.shape[0]
        if n_pos > have:
            n = max(n_pos, 2 * have, 256)
            cos, sin = rope_tables(n, self.config.rot_dim, self.config.rope_theta, start=have)
            self._rope_cos = np.concatenate([self._rope_cos, cos])
            self._rope_sin = np.concatenate([self._rope_sin, sin])
        return self._rope_cos, self._rope_sin

    def cache_nbytes(self, n_ctx: int) -> int:
        """Bytes of the K and V caches of ``n_ctx`` positions (committed as positions fill up)."""
        c = self.config
        return 2 * c.n_layers * c.n_kv_heads * int(n_ctx) * c.head_dim * (2 if self.kv_dtype == "f16" else 4)

    def new_cache(self, n_ctx: int | None = None) -> NativeCache:
        """An empty cache for up to ``n_ctx`` tokens (default ``n_ctx_max``). A cache that could
        never fit in this machine's memory (a huge training context taken as the default) is
        refused with the numbers, before anything is allocated."""
        n_ctx = self.n_ctx_max if n_ctx is None else n_ctx
        n_ctx = check_cache_size(n_ctx, self.cache_nbytes(1), self.config.context)
        self.n_ctx_max = max(self.n_ctx_max, n_ctx)
        return NativeCache(self, n_ctx)

    # ---- forward -----------------------------------------------------------------------------
    def _isa_index(self) -> int:
        return kernels.ISA_ORDER.index(kernels.active_isa())

    def forward(self, ids: Sequence[int] | np.ndarray, cache: NativeCache, *, capture: bool = False,
                last_only: bool = False):
        """Logits (T, vocab) float32 for the T new tokens ``ids``, appended to ``cache``.

        ``last_only=True``: only the last row's logits, shape (1, vocab) (the lm_head, which reads
        the whole embedding, runs once instead of T times). ``capture=True``: returns
        ``(logits, captures)``, the reference's capture names (reference/model.py docstring).
        """
        ids = check_token_ids(ids, self.vocab_size)
        if not isinstance(cache, NativeCache) or cache._owner != id(self):
            raise BitnetLabError("forward needs a NativeCache made by this engine's new_cache()")
        T = int(ids.size)
        if cache.pos + T > cache.n_ctx:
            raise BitnetLabError(f"context overflow: {cache.pos} cached + {T} new tokens > n_ctx {cache.n_ctx}")
        V = self.vocab_size
        if T == 0:
            out = np.zeros((0, V), np.float32)
            return (out, {}) if capture else out
        row0 = T - 1 if last_only else 0
        logits = np.empty((T - row0, V), dtype=np.float32)
        caps, cap_list = self._capture_buffers(T) if capture else (None, None)
        cos, sin = self._rope(cache.pos + T)
        self._mapped.check()
        self._core.forward(ids, cache.k, cache.v, cache.n_ctx, cos, sin, cache.pos,
                           logits, row0, cap_list, self._isa_index(), self.threads)
        cache.pos += T
        if not capture:
            return logits
        caps["logits"] = logits
        return logits, caps

    def forward_batch(self, seqs: Sequence[Sequence[int]], caches: Sequence[NativeCache], *,
                      last_only: bool = True):
        """Several sequences in ONE pass over the weights: sequence i appends its tokens (one for a
        decode step, several for a prefill chunk; mixed freely) to its own ``caches[i]``.

        All rows go through the projections together (the prefill GEMM path, whose rows equal
        decode rows bit for bit), RoPE at each row's own position, attention of each row against
        its own sequence's cache; the lm_head runs only for the rows whose logits are returned.
        So each sequence's logits equal ``forward`` on it alone, bit for bit. ``last_only=True``:
        one (N, vocab) array, the last row of each sequence; else a list of (T_i, vocab) arrays.
        Everything is checked before any cache changes (backend.check_batch).
        """
        ids = check_batch(seqs, caches, self.vocab_size)
        for i, cache in enumerate(caches):
            if not isinstance(cache, NativeCache) or cache._owner != id(self):
                raise BitnetLabError(f"forward_batch: cache {i} is not a NativeCache made by this engine's new_cache()")
        lens = np.array([a.size for a in ids], dtype=np.int64)
        pos0 = np.array([c.pos for c in caches], dtype=np.int64)
        T = int(lens.sum())
        want = np.zeros(T, dtype=np.uint8)
        ends = np.cumsum(lens)
        if last_only:
            want[ends - 1] = 1
        else:
            want[:] = 1
        logits = np.empty((int(want.sum()), self.vocab_size), dtype=np.float32)
        cos, sin = self._rope(int((pos0 + lens).max()))
        self._mapped.check()
        self._core.forward_batch(np.concatenate(ids), [c.k for c in caches], [c.v for c in caches],
                                 [c.n_ctx for c in caches], cos, sin, lens, pos0, logits, want,
                                 self._isa_index(), self.threads)
        for cache, n in zip(caches, lens):
            cache.pos += int(n)
        if last_only:
            return logits
        return np.split(logits, ends[:-1])

    def _capture_buffers(self, T: int) -> tuple[dict[str, np.ndarray], list]:
        """Arrays the C side fills (T rows each) and the flat pointer list in engine.h's order.
        Sub-norm captures exist only for sub-norm families, as in the reference."""
        c = self.config
        caps: dict[str, np.ndarray] = {}
        flat: list = []
        skip = set() if c.sub_norms else {"attn_sub_norm", "ffn_sub_norm"}
        shapes = {"q_rope": (c.n_heads, c.head_dim), "k_rope": (c.n_kv_heads, c.head_dim)}
        for i in range(c.n_layers):
            for name, dt, width in self._cap_layer:
                if name in skip:
                    flat.append(None)
                    continue
                a = np.zeros((T, width), dtype=dt)
                flat.append(a)
                view = a.reshape((T,) + shapes[name]) if name in shapes else a
                caps[f"blk.{i}.{name}"] = view.reshape(T) if width == 1 else view
        for name, dt, width in self._cap_global:
            a = np.zeros((T, width), dtype=dt)
            flat.append(a)
            caps[name] = a
        return caps, flat

    def logits(self, ids: Sequence[int] | np.ndarray, *, capture: bool = False):
        """Full forward of ``ids`` from an empty cache (cache length: a power of two ≥ 64)."""
        T = len(ids)
        n_ctx = max(64, 1 << max(T - 1, 0).bit_length())
        return self.forward(ids, self.new_cache(n_ctx), capture=capture)

    # ---- profile -------------------------------------------------------------------------------
    def profile_decode(self, *, position: int = 64, steps: int = 10, seed: int = 0,
                       sequences: int = 1) -> DecodeProfile:
        """Per-op times of a decode step at cache position ``position`` (tg128's mean position
        is 64), from timers inside the C forward pass (one ``clock_gettime`` per phase boundary:
        ~30 ns each, a few hundred per step).

        ``position`` random tokens are prefilled (untimed), then ``steps`` single-token steps run
        at that same position (the cache is rewound after each). ``sequences`` > 1: that many
        sequences, each prefilled so, step together through :meth:`forward_batch`'s C path (one
        token each per step: a batched decode step). Returns a :class:`DecodeProfile` (median
        over the steps). This is what ``bitnet_lab.bench.profile.decode_breakdown`` can show for
        the native backend instead of estimating the split from differences of whole-step times.
        """
        import time

        if position < 0 or steps < 1 or sequences < 1:
            raise BitnetLabError(f"profile_decode: need position >= 0, steps >= 1 and sequences >= 1, "
                                 f"got {position}, {steps}, {sequences}")
        rng = np.random.default_rng(seed)
        caches = [self.new_cache(position + 1) for _ in range(sequences)]
        if position:
            if sequences == 1:
                self.forward(rng.integers(0, self.vocab_size, position), caches[0], last_only=True)
            else:
                self.forward_batch([rng.integers(0, self.vocab_size, position) for _ in caches], caches)
        tok = rng.integers(0, self.vocab_size, sequences).astype(np.int32)
        isa = self._isa_index()
        logits = np.empty((sequences, self.vocab_size), dtype=np.float32)
        cos, sin = self._rope(position + 1)
        ones = np.ones(sequences, dtype=np.int64)
        pos0 = np.full(sequences, position, dtype=np.int64)
        want = np.ones(sequences, dtype=np.uint8)

        def step(prof=None) -> None:  # one token per sequence at `position`; caches not advanced
            if sequences == 1:
                self._core.forward(tok, caches[0].k, caches[0].v, caches[0].n_ctx, cos, sin, position, logits, 0,
                                   None, isa, self.threads, prof)
            else:
                self._core.forward_batch(tok, [c.k for c in caches], [c.v for c in caches],
                                         [c.n_ctx for c in caches], cos, sin, ones, pos0, logits, want, isa,
                                         self.threads, prof)

        self._mapped.check()
        step()  # warm-up (pages, caches)
        rows, walls = [], []
        n_cls = len(PROF_CLASSES)
        for _ in range(steps):
            prof = np.zeros((self.threads, _k.PROF_STRIDE), dtype=np.float64)
            t0 = time.perf_counter_ns()
            step(prof)
            walls.append(time.perf_counter_ns() - t0)
            rows.append(np.concatenate([prof[:, :n_cls], prof[:, _k.PROF_CPU : _k.PROF_CPU + n_cls]], axis=1) / 1e6)
        per = np.median(np.stack(rows), axis=0)  # (threads, 2·classes) ms: wall, then CPU
        wall = [{name: float(per[t, i]) for i, name in enumerate(PROF_CLASSES)} for t in range(self.threads)]
        cpu = [{name: float(per[t, n_cls + i]) for i, name in enumerate(PROF_CLASSES)} for t in range(self.threads)]
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        return DecodeProfile(position=position, threads=self.threads, isa=kernels.active_isa(), steps=steps,
                             step_ms=statistics.median(walls) / 1e6, region_ms=float(per[0, :n_cls].sum()),
                             ops_ms=dict(wall[0]), ops_cpu_ms=dict(cpu[0]), threads_ms=wall, threads_cpu_ms=cpu,
                             loadavg=load, sequences=sequences)

    # ---- one projection ----------------------------------------------------------------------
    def bitlinear(self, name: str, x: np.ndarray, *, return_acc: bool = False):
        """One BitLinear of the model on float32 rows: native activation quantisation, exact
        ternary product, epilogue ``(acc / s_x) · γ`` (· the optional ``.scale``) — the code path
        of the forward pass. ``name``: ``"blk.{i}.{proj}"`` (``.weight`` optional). ``x``: (N, K)
        or (K,). Returns y (N, M) (or (M,)), plus the int32 accumulators if ``return_acc``."""
        base = name.removesuffix(".weight")
        parts = base.split(".")
        if len(parts) != 3 or parts[0] != "blk" or not parts[1].isdigit() or parts[2] not in PROJECTIONS:
            raise BitnetLabError(f"bitlinear: {name!r} is not 'blk.<layer>.<{'|'.join(PROJECTIONS)}>'")
        layer, slot = int(parts[1]), PROJECTIONS.index(parts[2])
        if layer >= self.config.n_layers:
            raise BitnetLabError(f"bitlinear: layer {layer} does not exist (n_layers = {self.config.n_layers})")
        K = self.config.projection_shapes()[parts[2]][1]
        a = np.asarray(x, dtype=np.float32)
        one = a.ndim == 1
        a = np.ascontiguousarray(a.reshape(1, -1) if one else a)
        if a.ndim != 2 or a.shape[1] != K or a.shape[0] == 0:
            raise BitnetLabError(f"bitlinear: {base} takes rows of K = {K} floats, got shape {np.shape(x)}")
        self._mapped.check()
        y, acc = self._core.bitlinear(layer, slot, a, self._isa_index(), self.threads, return_acc)
        if one:
            y = y[0]
            acc = acc[0] if acc is not None else None
        return (y, acc) if return_acc else y

    # ---- information -------------------------------------------------------------------------
    def packed_weight(self, name: str) -> tuple[str, np.ndarray]:
        """``(layout, bytes)`` the kernels read for projection ``name`` (``blk.{i}.{proj}.weight``):
        a view of the file's bytes, or the I2_S repack made at load."""
        try:
            return self._packed[name]
        except KeyError:
            raise BitnetLabError(f"packed_weight: no projection named {name!r}") from None

    @property
    def lm_head_rows(self) -> np.ndarray:
        """The (vocab, row bytes or hidden) rows the lm_head kernel streams every token: F16/F32
        values or Q8_0 / Q6_K blocks, in this engine's own memory when the file's were mapped."""
        return self._lm_rows

    @property
    def weight_bytes(self) -> int:
        """Bytes of the ternary weights the kernels read (mapped from the file or repacked)."""
        return self._weight_bytes

    def __repr__(self) -> str:
        c = self.config
        return (f"NativeEngine({c.arch}, {c.n_layers} layers, H={c.hidden}, vocab={c.vocab}, threads={self.threads}, "
                f"{', '.join(f'{k}={v}' for k, v in self.numerics.items())})")
