"""The fast CPU path: the whole forward pass in native code over the packed ternary weights.

``NativeEngine`` implements exactly the forward interface of the JAX reference
(:class:`bitnet_lab.reference.ReferenceModel`)::

    engine = NativeEngine(config, tensors, threads=None, rounding="half_even", kv_dtype="f32",
                          lm_head_dtype="auto")
    cache = engine.new_cache(n_ctx)          # NativeCache: .pos, .n_ctx, .reset()
    logits = engine.forward(ids, cache)      # (T, vocab) float32 for the T new tokens; appends them
    logits = engine.forward(ids, cache, last_only=True)   # (1, vocab): the last row only
    logits = engine.logits(ids)              # full forward from an empty cache
    logits, caps = engine.forward(ids, cache, capture=True)   # + named intermediates
    y = engine.bitlinear("blk.0.attn_q", x)  # one projection on f32 rows (the BitLinear tier)
    prof = engine.profile_decode(position=64)  # ms per op class of one decode step (C timers)

What happens where:

* **here (Python)**: everything a user can get wrong is checked (token ids, context length,
  tensor names and shapes, packed codes, TQ block scales, TL tilings) with the project's errors.
  The float tensors (embedding, lm_head, norms) and the TL1/TL2/TQ1_0 projections are handed to C
  *without copying*: they point into the memory-mapped file. I2_S and TQ2_0 projections are, by
  default (``i2s_layout="auto"``, on a level with a native x4 GEMV: AVX-512 VNNI, AVX2), re-ordered
  ONCE at load into the x4 layout — the same 2-bit codes, 4 rows interleaved per 64-byte step, so
  a decode GEMV reads one sequential stream (src/bl_mad.h; 2B-4T on a Zen 4 core: projections
  21.7 -> 18.5 ms per token). That copy is read with preadv and the mapping's pages are dropped,
  so RSS stays about one file size. ``i2s_layout="file"`` keeps the file's bytes in place. Layouts
  no kernel reads (``int8``, ``hf_packed``, F32/F16 ``t·γ`` tensors, I2_S rows whose K is not a
  multiple of 128) are repacked ONCE into I2_S bytes (2 bits a weight, K padded with zero weights
  to a multiple of 128) — never dequantised to float.
* **C (cython_kernels/src/engine.c)**: one call per forward — embedding, every layer, the
  lm_head — without the GIL, in one OpenMP parallel region over ``threads`` threads. Decode
  (one token) uses the GEMV kernels, prefill the activation-parallel GEMM kernels; q/k/v share
  one activation quantisation and gate/up share one (numerics.md §2.6).

Numerics: the engine mirrors the reference's choices (bitnet_lab/reference/layers.py) rule by
rule for the integer side and every element-wise float op — activation quantisation, exact
ternary products, the BitLinear epilogue ``(acc / s_x) · γ``, RMSNorm (squares summed in
float64, ``1.0f/sqrtf``), RoPE from the same cos/sin tables (:func:`rope_tables`, tested equal
to the reference's), ``exp`` in float64, fp16 roundings of q, the softmax output and the K/V
cache with ``kv_dtype="f16"``, and of the hidden state before an F16 lm_head; a Q8_0 lm_head
uses llama.cpp's Q8_0 dot on both sides (the hidden state quantised to Q8_0 per block of 32).
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
at memory speed, ~0.06 s for the 2B-4T when the file is cached) but not the embedding. Float
tensors are used in place when they are F32, F16 or Q8_0; other float types (BF16, Q6_K) are
widened to F32 once at load (the Q6_K lm_head then runs the F32 path).
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bitnet_lab import kernels, residency
from bitnet_lab.config import ModelConfig
from bitnet_lab.errors import BitnetLabError, CodecError, ConfigError
from bitnet_lab.quant import ternary
from bitnet_lab.tensors import FloatTensor, TernaryWeight

__all__ = ["ENGINE_CHUNK", "KV_DTYPES", "PROF_CLASSES", "PROJECTIONS", "DecodeProfile", "NativeCache", "NativeEngine",
           "rope_tables"]

_k = kernels._k  # the compiled module (engine core, test hooks)

# Rows the C side processes at a time (longer inputs are cut into chunks of this many rows;
# no result depends on the chunking). Bounds the per-call scratch.
ENGINE_CHUNK: int = _k.ENGINE_CHUNK
MAX_HEAD_DIM = 1024  # per-head stack scratch of the attention kernels: 2 × 1024 doubles at most

PROJECTIONS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
# Op classes timed by the C side (src/engine.h BL_PROF_*), in order.
PROF_CLASSES: tuple[str, ...] = _k.PROF_NAMES
# Environment override of how long a thread waiting at one of the engine's barriers spins before
# it sleeps, in µs (default: the C side's BL_SPIN_NS_DEFAULT / 1000).
SPIN_ENV_VAR = "BITNET_LAB_SPIN_US"
KV_DTYPES = ("f32", "f16")
LM_HEAD_DTYPES = ("auto", "f16", "f32")

# Codes of src/engine.h / engine_float.h / bl_mad.h.
_LAYOUT_CODE = {"i2_s": 0, "tq2_0": 1, "tq1_0": 2, "tl1": 3, "tl2": 4, "i2_s_x4": 5}
# How the engine holds I2_S projections: "x4" re-orders them at load into one anonymous THP
# arena, 4 rows interleaved per 64-byte step (src/bl_mad.h: a decode GEMV then reads one
# sequential stream); "file" uses the file's bytes in place; "auto" = x4 where the active ISA
# level has a native x4 GEMV (kernels.i2s_x4_native), else file.
I2S_LAYOUTS = ("auto", "x4", "file")
_FT_F32, _FT_F16, _FT_Q8_0 = 0, 1, 2
_ROUNDING_CODE = {"half_even": 0, "half_away": 1}

_I2S_BLOCK = 128
_TQ_BLOCK = 256
_TQ_BLOCK_BYTES = {"tq2_0": 66, "tq1_0": 54}
_Q8_0_BLOCK, _Q8_0_BYTES = 32, 34


# ---- RoPE tables ------------------------------------------------------------------------------


def rope_tables(n_pos: int, n_dims: int, freq_base: float) -> tuple[np.ndarray, np.ndarray]:
    """``(cos, sin)`` float32 ``(n_pos, n_dims/2)``: ggml's angle recurrence (numerics.md §5.3).

    The same recipe as the reference's ``bitnet_lab.reference.rope.cos_sin_tables`` (which this
    module cannot import without importing JAX; tests/test_engine.py checks the two are equal
    bit for bit): ``theta_scale = fl32(pow(f32 base, f32(−2/n_dims)))`` via float64; angle of pair
    i at position p by repeated f32 multiplication ``θ ← θ·theta_scale`` from ``θ = p``;
    ``cos``/``sin`` evaluated in float64 from the f32 angle and rounded once.
    """
    exponent = np.float32(-2.0) / np.float32(n_dims)
    ts = np.float32(np.float64(np.float32(freq_base)) ** np.float64(exponent))
    theta = np.arange(n_pos, dtype=np.float32)
    angles = np.empty((n_pos, n_dims // 2), dtype=np.float32)
    for i in range(n_dims // 2):
        angles[:, i] = theta
        theta = theta * ts  # one f32 rounding per step, as ggml_rope_cache_init
    a64 = angles.astype(np.float64)
    return np.cos(a64).astype(np.float32), np.sin(a64).astype(np.float32)


# ---- weight preparation (zero-copy where the kernels read the file's layout, else one repack) --


def _flat_u8(data: Any, name: str) -> np.ndarray:
    """The bytes of ``data`` as a 1-D uint8 view (no copy for contiguous arrays)."""
    a = np.asarray(data)
    if not a.flags.c_contiguous:
        raise ConfigError(f"{name}: packed data is not contiguous in memory")
    return a.reshape(-1).view(np.uint8)


def _check_2bit_codes(data: np.ndarray, name: str, layout: str, stride: int = 0, width: int = 0) -> None:
    """Every 2-bit field must be 0, 1 or 2 (code 3 is invalid): the first ``width`` bytes of every
    ``stride``-byte group of ``data`` (default: all bytes). One pass in C at memory speed
    (_kernels.scan_code3; a numpy version with temporaries cost ~0.35 s for the 2B-4T)."""
    n = int(data.size)
    n_bad, first = _k.scan_code3(data, stride or max(n, 1), width or max(n, 1))
    if n_bad:
        raise CodecError(f"{name}: {layout} data holds invalid code(s) 3 (codes are t + 1 in {{0, 1, 2}}) "
                         f"in {n_bad} byte(s); first at byte {first}")


def _tq_gamma(w: TernaryWeight, name: str) -> np.float32:
    """The per-tensor scale of a TQ weight: its fp16 block scales must be uniform over the blocks
    that hold a non-zero weight (the reference's rule, reference/weights.py), else error."""
    M, K = w.shape
    d = np.asarray(w.block_scales, dtype=np.float16).astype(np.float32).reshape(M, K // _TQ_BLOCK)
    distinct = np.unique(d[d != 0])
    if distinct.size > 1:  # only the used blocks count: decode (rare path) and look again
        used = np.any(w.ternary().reshape(M, K // _TQ_BLOCK, _TQ_BLOCK) != 0, axis=2)
        distinct = np.unique(d[used])
    if distinct.size > 1:
        raise ConfigError(
            f"{name}: {w.layout} block scales are not uniform ({distinct.size} distinct values, "
            f"{distinct.min():.6g}..{distinct.max():.6g}); the native engine needs one scale per tensor "
            "(per-block scales are supported by backend='reference')")
    return np.float32(distinct[0]) if distinct.size else np.float32(0.0)


def _repack_i2_s(t: np.ndarray) -> tuple[np.ndarray, int]:
    """int8 ternary (M, K) -> I2_S bytes of (M, K_pad), K_pad = K rounded up to 128 (zero
    weights in the padding; the activations are zero-padded the same way, so Σ t·q is exact)."""
    M, K = t.shape
    K_pad = -(-K // _I2S_BLOCK) * _I2S_BLOCK
    if K_pad != K:
        t = np.concatenate([t, np.zeros((M, K_pad - K), dtype=np.int8)], axis=1)
    return kernels.pack_i2_s(np.ascontiguousarray(t, dtype=np.int8), threads=1), K_pad


def _projection_spec(name: str, w: Any, shape: tuple[int, int], deferred: bool = False) -> tuple:
    """``(layout code, data, M, K, K_pad, gamma, None, tiling)`` for EngineCore (engine.pxi).
    ``deferred=True`` (an I2_S or TQ2_0 tensor the x4 re-order will read, x4_repacked_names):
    nothing of the data is read here — no code-3 scan, no TQ scale check, gamma 0 — the re-order
    does both on the copy it reads, without touching the file's mapping (_to_x4)."""
    M, K = shape
    if tuple(getattr(w, "shape", ())) != (M, K):
        raise ConfigError(f"{name}: shape {tuple(getattr(w, 'shape', ()))} but the config implies {(M, K)}")
    if isinstance(w, FloatTensor):  # converter F32/F16 GGUFs: t·γ already folded (reference rule)
        a = w.to_numpy().reshape(M, K)
        mags = np.abs(a)
        distinct = np.unique(mags[mags != 0])
        if distinct.size > 1:
            raise ConfigError(
                f"{name}: {w.ggml_type} weights are not ternary × one scale ({distinct.size} distinct "
                f"magnitudes, {distinct.min():.6g}..{distinct.max():.6g}); ternarise latent weights "
                "with absmean (bitnet_lab.quant.ternary.absmean_ternarize) first")
        gamma = np.float32(distinct[0]) if distinct.size else np.float32(0.0)
        data, K_pad = _repack_i2_s(np.sign(a).astype(np.int8))
        return (_LAYOUT_CODE["i2_s"], data, M, K, K_pad, float(gamma), None, None)
    if not isinstance(w, TernaryWeight):
        raise ConfigError(f"{name}: expected a TernaryWeight or FloatTensor, got {type(w).__name__}")

    layout = w.layout
    if layout == "i2_s" and K % _I2S_BLOCK == 0:
        data = _flat_u8(w.data, name)
        if data.size != M * K // 4:
            raise CodecError(f"{name}: a ({M}, {K}) I2_S tensor needs {M * K // 4} bytes, got {data.size}")
        if not deferred:
            _check_2bit_codes(data, name, "I2_S")
        return (_LAYOUT_CODE["i2_s"], data, M, K, K, float(np.float32(w.scale)), None, None)
    if layout in ("tq2_0", "tq1_0"):
        if K % _TQ_BLOCK:
            raise CodecError(f"{name}: {layout} needs K % {_TQ_BLOCK} == 0, got K = {K}")
        data = _flat_u8(w.data, name)
        need = M * (K // _TQ_BLOCK) * _TQ_BLOCK_BYTES[layout]
        if data.size != need:
            raise CodecError(f"{name}: a ({M}, {K}) {layout} tensor needs {need} bytes, got {data.size}")
        if deferred:
            return (_LAYOUT_CODE[layout], data, M, K, K, 0.0, None, None)
        if layout == "tq2_0":  # the 64 code bytes of every 66-byte block (the fp16 scale follows)
            _check_2bit_codes(data, name, "TQ2_0", _TQ_BLOCK_BYTES["tq2_0"], 64)
        gamma = _tq_gamma(w, name)
        return (_LAYOUT_CODE[layout], data, M, K, K, float(gamma), None, None)
    if layout in ("tl1", "tl2"):
        from bitnet_lab.quant import packing, tiling

        tl = tiling.validate_tiling(layout, M, K, w.tiling)
        data = _flat_u8(w.data, name)
        need = packing.tl1_nbytes(M, K) if layout == "tl1" else packing.tl2_nbytes(M, K, tl)
        if data.size < need:
            raise CodecError(f"{name}: a ({M}, {K}) {layout} tensor with tiling {tl} needs at least "
                             f"{need} bytes, got {data.size}")
        return (_LAYOUT_CODE[layout], data, M, K, K, float(np.float32(w.scale)), None,
                (int(tl.BM), int(tl.BK), int(tl.bm)))
    # int8, hf_packed, I2_S with K % 128 != 0: repack once to I2_S (2 bits per weight)
    t = np.asarray(w.ternary(), dtype=np.int8).reshape(M, K)
    if t.size and int(np.abs(t).max()) > 1:
        raise CodecError(f"{name}: values outside {{-1, 0, 1}} (max |t| = {int(np.abs(t).max())})")
    data, K_pad = _repack_i2_s(t)
    return (_LAYOUT_CODE["i2_s"], data, M, K, K_pad, float(np.float32(w.gamma())), None, None)


def _x4_wanted(i2s_layout: str) -> bool:
    if i2s_layout not in I2S_LAYOUTS:
        raise ConfigError(f"i2s_layout {i2s_layout!r} is not one of {I2S_LAYOUTS}")
    return i2s_layout == "x4" or (i2s_layout == "auto" and kernels.i2s_x4_native())


def _x4_fits(K_pad: int) -> bool:
    return K_pad <= kernels.X4_MAX_K


def x4_repacked_names(config: ModelConfig, tensors: Mapping[str, Any], i2s_layout: str = "auto") -> set[str]:
    """Names of the file-layout I2_S and TQ2_0 projections a NativeEngine built with
    ``i2s_layout`` would re-order into x4 memory of its own (``load(mmap=False)`` leaves them out
    of its copy). TQ2_0 holds the same 2-bit codes in another order (kernels.tq2_to_i2s); its
    uniform block scale becomes gamma, as on the TQ2_0 kernels."""
    if not _x4_wanted(i2s_layout):
        return set()
    shapes = config.projection_shapes()
    out = set()
    for i in range(config.n_layers):
        for p in PROJECTIONS:
            name = f"blk.{i}.{p}.weight"
            w = tensors.get(name)
            K = shapes[p][1]
            if not (isinstance(w, TernaryWeight) and _x4_fits(K)):
                continue
            if (w.layout == "i2_s" and K % _I2S_BLOCK == 0) or (w.layout == "tq2_0" and K % _TQ_BLOCK == 0):
                out.add(name)
    return out


def _to_x4(specs: list[tuple[str, list]], deferred: Mapping[str, TernaryWeight], threads: int) -> None:
    """Re-order every I2_S spec (K_pad <= X4_MAX_K) and every deferred TQ2_0 spec in place into
    the x4 layout, all in one anonymous THP arena. Deferred tensors (``x4_repacked_names``) are
    read with preadv into a scratch buffer (the mapping's pages never enter RSS) and checked
    there — code 3, and for TQ2_0 the uniform block scale that becomes gamma — TQ2_0 codes are
    re-ordered to I2_S, then every tensor is interleaved. The tensors are spread over
    ``threads`` threads (preadv, the checks and the re-orders release the GIL): most of the time
    goes into first touches of the arena's new pages."""
    from concurrent.futures import ThreadPoolExecutor
    from dataclasses import replace

    from bitnet_lab.residency import _arena, copy_bytes, drop_pages

    i2s, tq2 = _LAYOUT_CODE["i2_s"], _LAYOUT_CODE["tq2_0"]
    todo = [(n, s) for n, s in specs if (s[0] == i2s and _x4_fits(s[4])) or (s[0] == tq2 and n in deferred)]
    if not todo:
        return
    sizes = [int(s[2]) * int(s[4]) // 4 for _, s in todo]
    offsets = np.concatenate([[0], np.cumsum([-(-n // 64) * 64 for n in sizes])])  # 64-byte aligned rows
    arena = _arena(int(offsets[-1]))

    def run(part: int) -> None:
        scratch = np.empty(max(int(s[1].nbytes) for _, s in todo), dtype=np.uint8)
        for k in range(part, len(todo), threads):
            (name, s), n, off = todo[k], sizes[k], int(offsets[k])
            M, K = int(s[2]), int(s[4])
            src = s[1]
            if name in deferred:
                buf = scratch[: src.nbytes]
                copy_bytes(src.reshape(-1), buf)
                drop_pages(src)  # pages a reader touched (e.g. the TQ2_0 scales) leave RSS
                if s[0] == tq2:
                    _check_2bit_codes(buf, name, "TQ2_0", _TQ_BLOCK_BYTES["tq2_0"], 64)
                    w = deferred[name]
                    scales = w.block_scales  # a view of the blocks' own fp16 (GGUF): read from the copy
                    if np.may_share_memory(scales, w.data):
                        scales = np.ascontiguousarray(buf.reshape(-1, 66)[:, 64:]).view(np.float16)
                    s[5] = float(_tq_gamma(replace(w, data=buf, block_scales=scales.reshape(M, K // _TQ_BLOCK)), name))
                    buf = kernels.tq2_to_i2s(buf, M, K)
                else:
                    _check_2bit_codes(buf, name, "I2_S")
                src = buf
            s[1] = kernels.i2s_x4_interleave(src, M, K, out=arena[off : off + n])
            s[0] = _LAYOUT_CODE["i2_s_x4"]

    with ThreadPoolExecutor(max_workers=threads) as pool:
        for f in [pool.submit(run, part) for part in range(threads)]:
            f.result()  # the first error (e.g. an invalid code) propagates


def _norm(tensors: Mapping[str, Any], name: str, n: int) -> np.ndarray:
    t = tensors[name]
    if not isinstance(t, FloatTensor):
        raise ConfigError(f"{name}: expected a float tensor, got {type(t).__name__}")
    if tuple(t.shape) != (n,):
        raise ConfigError(f"{name}: shape {tuple(t.shape)} but the config implies {(n,)}")
    return np.ascontiguousarray(t.to_numpy(), dtype=np.float32)


def _float_matrix(t: FloatTensor, want_f16: bool | None, V: int, H: int) -> tuple[int, np.ndarray]:
    """``(ftype, rows)`` for the C side: F32 / F16 / Q8_0 used in place; other types widened to
    F32. ``want_f16`` True: fp16 rows (F32/Q8_0/... rounded once: the "f16" lm_head); False:
    F16 is still read in place (widening is exact); None: the embedding (as stored)."""
    if want_f16 and t.ggml_type != "F16":
        return _FT_F16, np.ascontiguousarray(t.to_numpy().reshape(V, H).astype(np.float16)).view(np.uint16)
    if t.ggml_type == "F16":
        return _FT_F16, np.ascontiguousarray(np.asarray(t.data).reshape(V, H)).view(np.uint16)
    if t.ggml_type == "F32":
        return _FT_F32, np.ascontiguousarray(np.asarray(t.data, dtype=np.float32).reshape(V, H))
    if t.ggml_type == "Q8_0" and H % _Q8_0_BLOCK == 0:
        raw = _flat_u8(t.data, t.name)
        if raw.size != V * H // _Q8_0_BLOCK * _Q8_0_BYTES:
            raise CodecError(f"{t.name}: a ({V}, {H}) Q8_0 tensor needs {V * H // 32 * 34} bytes, got {raw.size}")
        return _FT_Q8_0, raw.reshape(V, H // _Q8_0_BLOCK * _Q8_0_BYTES)
    return _FT_F32, np.ascontiguousarray(t.to_numpy().reshape(V, H), dtype=np.float32)


def _expected_names(config: ModelConfig) -> set[str]:
    names = {"token_embd.weight", "output_norm.weight"}
    if not config.tied_output:
        names.add("output.weight")
    per_layer = ["attn_norm", "ffn_norm", *PROJECTIONS] + (["attn_sub_norm", "ffn_sub_norm"] if config.sub_norms else [])
    for i in range(config.n_layers):
        names.update(f"blk.{i}.{n}.weight" for n in per_layer)
    return names


def _load_workers() -> int:
    """Threads for the build's copies and re-orders: every core this process may run on, whatever
    the decode thread count (most of that time is the first touch of fresh memory, which on the
    project's VM costs ~2.8 s for the 2B-4T on one core when the host has not backed the pages
    recently, 1.5 s on two)."""
    return max(1, len(kernels.allowed_cpus()))


def _spin_us(value: float | None) -> float:
    """The barrier spin time in µs: ``value``, else ``$BITNET_LAB_SPIN_US``, else the C default."""
    if value is None:
        env = os.environ.get(SPIN_ENV_VAR, "").strip()
        if not env:
            return _k.SPIN_NS_DEFAULT / 1000
        try:
            value = float(env)
        except ValueError:
            raise ConfigError(f"{SPIN_ENV_VAR}={env!r} is not a number of microseconds") from None
    if not value >= 0:  # also rejects NaN
        raise ConfigError(f"spin_us must be >= 0, got {value}")
    return float(value)


# ---- per-op profile -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecodeProfile:
    """Where the time of one native decode step goes, from the C side's own timers.

    ``ops_ms``: wall-clock milliseconds per op class (:data:`PROF_CLASSES`) of thread 0, median
    over the profiled steps; ``ops_cpu_ms``: the same thread's CPU time per class (the time it
    actually ran: on a shared machine the wall figure also holds the time other processes took
    the core, the CPU figure does not — but neither removes their pressure on memory bandwidth);
    ``threads_ms`` / ``threads_cpu_ms``: per thread (index = OpenMP thread id). "sync" is the
    time a thread waited at barriers: load imbalance + wake-up. ``region_ms``: thread 0's wall
    total inside the C call (the sum of its classes); ``step_ms``: median wall time of the whole
    call (Python + C). ``loadavg``: the 1-minute load average at the end.
    """

    position: int
    threads: int
    isa: str
    steps: int
    step_ms: float
    region_ms: float
    ops_ms: dict[str, float]
    ops_cpu_ms: dict[str, float]
    threads_ms: list[dict[str, float]] = field(default_factory=list)
    threads_cpu_ms: list[dict[str, float]] = field(default_factory=list)
    loadavg: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"position": self.position, "threads": self.threads, "isa": self.isa, "steps": self.steps,
                "step_ms": self.step_ms, "region_ms": self.region_ms, "ops_ms": dict(self.ops_ms),
                "ops_cpu_ms": dict(self.ops_cpu_ms), "threads_ms": [dict(t) for t in self.threads_ms],
                "threads_cpu_ms": [dict(t) for t in self.threads_cpu_ms], "loadavg": self.loadavg}

    def __str__(self) -> str:
        head = (f"decode step at position {self.position}, {self.threads} thread(s), isa {self.isa}, "
                f"median of {self.steps}: {self.step_ms:.3f} ms (C region {self.region_ms:.3f} ms)"
                + (f", load average {self.loadavg:.2f}" if self.loadavg is not None else ""))
        cols = "".join(f"{f'wall t{i}':>10}{f'cpu t{i}':>10}" for i in range(len(self.threads_ms)))
        lines = [head, f"{'op (ms)':<12}{cols}"]
        for name in self.ops_ms:
            per = "".join(f"{w[name]:>10.3f}{c[name]:>10.3f}" for w, c in zip(self.threads_ms, self.threads_cpu_ms))
            lines.append(f"{name:<12}{per}")
        tot = "".join(f"{sum(w.values()):>10.3f}{sum(c.values()):>10.3f}"
                      for w, c in zip(self.threads_ms, self.threads_cpu_ms))
        lines.append(f"{'total':<12}{tot}")
        return "\n".join(lines)


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
        self.k = residency.lazy_zeros(shape, dt)
        self.v = residency.lazy_zeros(shape, dt)
        self.n_ctx = int(n_ctx)
        self.kv_dtype = engine.kv_dtype
        self.pos = 0
        self.rope_cos, self.rope_sin = engine._rope(n_ctx)
        self._owner = id(engine)

    def reset(self) -> None:
        """Forget every token (entries at and beyond ``pos`` are never read, so no zeroing)."""
        self.pos = 0

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
    - ``rounding``: activation rounding, "half_even" or "half_away" (numerics.md §2.5).
    - ``kv_dtype``: "f32" or "f16" (K/V stored as fp16, q and the softmax output rounded to fp16).
    - ``lm_head_dtype``: "auto" (fp16 dot iff the lm_head is F16; a Q8_0 lm_head uses llama.cpp's
      Q8_0 dot, the hidden state quantised to Q8_0 per block of 32), "f16" or "f32".
    - ``n_ctx_max``: default cache length (default ``config.context``).
    - ``spin_us``: how long a thread waiting at a barrier between stages spins before it sleeps
      (default: ``$BITNET_LAB_SPIN_US`` or 20 µs). Spinning reacts in ~0.1 µs on a quiet
      machine; sleeping costs a futex wake-up but frees the core on a busy one (src/engine.h
      has the measurements).

    The ISA level is :func:`bitnet_lab.kernels.active_isa` at each call (``use_isa`` switches it).
    """

    def __init__(
        self,
        config: ModelConfig,
        tensors: Mapping[str, Any],
        *,
        threads: int | None = None,
        rounding: str = ternary.DEFAULT_ROUNDING,
        kv_dtype: str = "f32",
        lm_head_dtype: str = "auto",
        n_ctx_max: int | None = None,
        spin_us: float | None = None,
        i2s_layout: str = "auto",
    ) -> None:
        if rounding not in ternary.ROUNDING_MODES:
            raise ConfigError(f"rounding {rounding!r} is not one of {ternary.ROUNDING_MODES}")
        if kv_dtype not in KV_DTYPES:
            raise ConfigError(f"kv_dtype {kv_dtype!r} is not one of {KV_DTYPES}")
        if lm_head_dtype not in LM_HEAD_DTYPES:
            raise ConfigError(f"lm_head_dtype {lm_head_dtype!r} is not one of {LM_HEAD_DTYPES}")
        x4 = _x4_wanted(i2s_layout)
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
        self._rope_cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

        names = set(tensors)
        needed = _expected_names(config)
        missing = sorted(needed - names)
        if missing:
            raise ConfigError(f"missing tensors for {config.arch} ({len(missing)}): {', '.join(missing[:8])}")
        optional = {f"blk.{i}.{p}.scale" for i in range(config.n_layers) for p in PROJECTIONS}
        unknown = sorted(names - needed - optional)
        if unknown:
            raise ConfigError(f"tensors the {config.arch} graph does not use ({len(unknown)}): {', '.join(unknown[:8])}")

        c = config
        H, V = c.hidden, c.vocab
        shapes = c.projection_shapes()
        layers = []
        self._packed: dict[str, tuple[str, np.ndarray]] = {}
        deferred = {n: tensors[n] for n in x4_repacked_names(config, tensors, "x4")} if x4 else {}
        all_specs: list[tuple[str, list]] = []
        for i in range(c.n_layers):
            spec: dict[str, Any] = {
                "attn_norm": _norm(tensors, f"blk.{i}.attn_norm.weight", H),
                "ffn_norm": _norm(tensors, f"blk.{i}.ffn_norm.weight", H),
            }
            if c.sub_norms:
                spec["attn_sub_norm"] = _norm(tensors, f"blk.{i}.attn_sub_norm.weight", c.q_dim)
                spec["ffn_sub_norm"] = _norm(tensors, f"blk.{i}.ffn_sub_norm.weight", c.ffn)
            ws = []
            for p in PROJECTIONS:
                name = f"blk.{i}.{p}.weight"
                w = tensors[name]
                s = list(_projection_spec(name, w, shapes[p], deferred=name in deferred))
                scale_name = f"blk.{i}.{p}.scale"
                if scale_name in names:  # old `bitnet` arch: y · scale after the epilogue
                    st = tensors[scale_name]
                    v = st.to_numpy().reshape(-1) if isinstance(st, FloatTensor) else None
                    if v is None or v.size != 1:
                        raise ConfigError(f"{scale_name}: expected one float, got {getattr(st, 'shape', None)}")
                    s[6] = float(np.float32(v[0]))
                ws.append(s)
                all_specs.append((name, s))
            spec["w"] = ws
            layers.append(spec)
        if x4:
            _to_x4(all_specs, deferred, _load_workers())
        layout_name = {v: k for k, v in _LAYOUT_CODE.items()}
        for name, s in all_specs:
            self._packed[name] = (layout_name[s[0]], s[1])
        for spec in layers:
            spec["w"] = [tuple(s) for s in spec["w"]]
        self.i2s_layout = "x4" if any(s[0] == _LAYOUT_CODE["i2_s_x4"] for _, s in all_specs) else "file"

        emb_t = tensors["token_embd.weight"]
        lm_t = emb_t if c.tied_output else tensors["output.weight"]
        for t in (emb_t, lm_t):
            if not isinstance(t, FloatTensor):
                raise ConfigError(f"{t.name}: expected a float tensor, got {type(t).__name__}")
            if tuple(t.shape) != (V, H):
                raise ConfigError(f"{t.name}: shape {tuple(t.shape)} but the config implies {(V, H)}")
        lm_f16 = lm_head_dtype == "f16" or (lm_head_dtype == "auto" and lm_t.ggml_type == "F16")
        # a Q8_0 lm_head ("auto"): llama.cpp's Q8_0 dot, the hidden state quantised to Q8_0 (numerics §9)
        lm_q8 = lm_head_dtype == "auto" and lm_t.ggml_type == "Q8_0" and H % _Q8_0_BLOCK == 0
        embed = _float_matrix(emb_t, None, V, H)
        lm = embed if (lm_t is emb_t and not (lm_f16 and emb_t.ggml_type != "F16")) else _float_matrix(lm_t, lm_f16, V, H)
        # The lm_head is read whole every token (657 MB of the 2B-4T's 1178): from the file's
        # 4 KiB page-cache pages it streamed ~7 % slower at 1 thread than from 2 MiB pages, so a
        # mapped lm_head moves into a THP arena (as the x4 projections do; a tied embedding follows).
        lm_rows = residency.to_huge_pages(lm[1], _load_workers())
        if lm_rows is not lm[1]:
            embed = (embed[0], lm_rows) if embed is lm else embed
            lm = (lm[0], lm_rows)
        output_norm = _norm(tensors, "output_norm.weight", H)

        dims = {
            "hidden": H, "n_heads": c.n_heads, "n_kv_heads": c.n_kv_heads, "head_dim": c.head_dim,
            "ffn": c.ffn, "vocab": V, "rot_dim": c.rot_dim, "rope_neox": int(c.rope_style == "neox"),
            "act_relu2": int(c.activation == "relu2"), "sub_norms": int(c.sub_norms),
            "rounding": _ROUNDING_CODE[rounding], "kv_f16": int(kv_dtype == "f16"), "lm_f16": int(lm_f16),
            "lm_q8": int(lm_q8),
            "eps": float(np.float32(c.norm_eps)),
            "kq_scale": float(np.float32(1.0) / np.sqrt(np.float32(c.head_dim))),  # 1.0f/sqrtf(d)
        }
        # 2 MiB pages for the streamed weights where the OS allows (a hint; ~20% more read
        # bandwidth than 4 KiB pages on the reference machine: src/engine.h bl_advise_hugepages)
        for _, arr in self._packed.values():
            _k.advise_hugepages(arr)
        for _, arr in (embed, lm):
            _k.advise_hugepages(arr)
        self._lm_rows = lm[1]  # what lm_head_rows shows (the C core holds its own reference)
        self._core = _k.EngineCore(dims, layers, embed, lm, output_norm)
        self.spin_us = _spin_us(spin_us)
        self._core.set_spin_ns(int(self.spin_us * 1000))
        per_layer, glob = self._core.capture_specs()
        self._cap_layer, self._cap_global = per_layer, glob
        self._weight_bytes = sum(int(a.nbytes) for _, a in self._packed.values())
        self.numerics = {
            "rounding": rounding,
            "act_floor": ternary.ACT_EPS,
            "epilogue": "(acc / s_x) * gamma",
            "kv_dtype": kv_dtype,
            "lm_head": "q8_0" if lm_q8 else "f16" if lm_f16 else "f32",
            "embed_type": emb_t.ggml_type,
            "lm_head_type": lm_t.ggml_type,
            "float_dots": "float32 accumulate, canonical 16-lane order (multiply, add; fixed fold)",
            "i2s_layout": self.i2s_layout,
        }

    # ---- caches -------------------------------------------------------------------------------
    def _rope(self, n_ctx: int) -> tuple[np.ndarray, np.ndarray]:
        tab = self._rope_cache.get(n_ctx)
        if tab is None:
            tab = rope_tables(n_ctx, self.config.rot_dim, self.config.rope_theta)
            self._rope_cache = {n_ctx: tab}  # keep the latest size only
        return tab

    def new_cache(self, n_ctx: int | None = None) -> NativeCache:
        """An empty cache for up to ``n_ctx`` tokens (default ``n_ctx_max``)."""
        n_ctx = self.n_ctx_max if n_ctx is None else int(n_ctx)
        if n_ctx <= 0:
            raise BitnetLabError(f"n_ctx must be positive, got {n_ctx}")
        self.n_ctx_max = max(self.n_ctx_max, n_ctx)
        return NativeCache(self, n_ctx)

    # ---- forward -----------------------------------------------------------------------------
    def _check_ids(self, ids: Any) -> np.ndarray:
        a = np.asarray(ids)
        if a.ndim != 1:
            raise BitnetLabError(f"token ids must be a 1-D sequence, got shape {a.shape}")
        if a.size and not np.issubdtype(a.dtype, np.integer):
            raise BitnetLabError(f"token ids must be integers, got dtype {a.dtype}")
        if a.size and (a.min() < 0 or a.max() >= self.vocab_size):
            bad = a[(a < 0) | (a >= self.vocab_size)]
            raise BitnetLabError(f"token id {int(bad[0])} is outside the vocabulary 0..{self.vocab_size - 1}")
        return np.ascontiguousarray(a, dtype=np.int32)

    def _isa_index(self) -> int:
        return kernels.ISA_ORDER.index(kernels.active_isa())

    def forward(self, ids: Sequence[int] | np.ndarray, cache: NativeCache, *, capture: bool = False,
                last_only: bool = False):
        """Logits (T, vocab) float32 for the T new tokens ``ids``, appended to ``cache``.

        ``last_only=True``: only the last row's logits, shape (1, vocab) (the lm_head, which reads
        the whole embedding, runs once instead of T times). ``capture=True``: returns
        ``(logits, captures)``, the reference's capture names (reference/model.py docstring).
        """
        ids = self._check_ids(ids)
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
        self._core.forward(ids, cache.k, cache.v, cache.n_ctx, cache.rope_cos, cache.rope_sin, cache.pos,
                           logits, row0, cap_list, self._isa_index(), self.threads)
        cache.pos += T
        if not capture:
            return logits
        caps["logits"] = logits
        return logits, caps

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
    def profile_decode(self, *, position: int = 64, steps: int = 10, seed: int = 0) -> DecodeProfile:
        """Per-op times of a decode step at cache position ``position`` (tg128's mean position
        is 64), from timers inside the C forward pass (one ``clock_gettime`` per phase boundary:
        ~30 ns each, a few hundred per step).

        ``position`` random tokens are prefilled (untimed), then ``steps`` single-token steps run
        at that same position (the cache is rewound after each). Returns a
        :class:`DecodeProfile` (median over the steps). This is what
        ``bitnet_lab.bench_profile.decode_breakdown`` can show for the native backend instead of
        estimating the split from differences of whole-step times.
        """
        import time

        if position < 0 or steps < 1:
            raise BitnetLabError(f"profile_decode: need position >= 0 and steps >= 1, got {position}, {steps}")
        rng = np.random.default_rng(seed)
        cache = self.new_cache(position + 1)
        if position:
            self.forward(rng.integers(0, self.vocab_size, position), cache, last_only=True)
        tok = np.array([int(rng.integers(0, self.vocab_size))], dtype=np.int32)
        isa = self._isa_index()
        logits = np.empty((1, self.vocab_size), dtype=np.float32)
        self._core.forward(tok, cache.k, cache.v, cache.n_ctx, cache.rope_cos, cache.rope_sin, cache.pos, logits, 0,
                           None, isa, self.threads)  # warm-up (pages, caches)
        rows, walls = [], []
        n_cls = len(PROF_CLASSES)
        for _ in range(steps):
            prof = np.zeros((self.threads, _k.PROF_STRIDE), dtype=np.float64)
            t0 = time.perf_counter_ns()
            self._core.forward(tok, cache.k, cache.v, cache.n_ctx, cache.rope_cos, cache.rope_sin, cache.pos, logits,
                               0, None, isa, self.threads, prof)
            walls.append(time.perf_counter_ns() - t0)
            rows.append(np.concatenate([prof[:, :n_cls], prof[:, _k.PROF_CPU : _k.PROF_CPU + n_cls]], axis=1) / 1e6)
        per = np.median(np.stack(rows), axis=0)  # (threads, 2·classes) ms: wall, then CPU
        wall = [{name: float(per[t, i]) for i, name in enumerate(PROF_CLASSES)} for t in range(self.threads)]
        cpu = [{name: float(per[t, n_cls + i]) for i, name in enumerate(PROF_CLASSES)} for t in range(self.threads)]
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        return DecodeProfile(position=position, threads=self.threads, isa=kernels.active_isa(), steps=steps,
                             step_ms=statistics.median(walls) / 1e6, region_ms=float(per[0, :n_cls].sum()),
                             ops_ms=dict(wall[0]), ops_cpu_ms=dict(cpu[0]), threads_ms=wall, threads_cpu_ms=cpu,
                             loadavg=load)

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
        values or Q8_0 blocks, in this engine's own memory when the file's were mapped."""
        return self._lm_rows

    @property
    def weight_bytes(self) -> int:
        """Bytes of the ternary weights the kernels read (mapped from the file or repacked)."""
        return self._weight_bytes

    def __repr__(self) -> str:
        c = self.config
        return (f"NativeEngine({c.arch}, {c.n_layers} layers, H={c.hidden}, vocab={c.vocab}, threads={self.threads}, "
                f"{', '.join(f'{k}={v}' for k, v in self.numerics.items())})")
