"""Weight preparation for the native engine: the checks and layout choices made once at load.

Everything a user can get wrong in a model's tensors is checked here with the project's errors
(names, shapes, packed codes, TQ block scales, TL tilings), and each projection is described to
the C side in the layout a kernel reads: in place (mapped), re-ordered to x4, or repacked to I2_S.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from bitnet_lab import kernels
from bitnet_lab.config import ModelConfig
from bitnet_lab.engine import residency
from bitnet_lab.errors import CodecError, ConfigError
from bitnet_lab.kernels.native import _k
from bitnet_lab.tensors import FloatTensor, TernaryWeight, check_finite

__all__ = [
    "PreparedWeights",
    "prepare_weights",
    "ENGINE_CHUNK",
    "GEMV_BATCH_MAX",
    "I2S_LAYOUTS",
    "KV_DTYPES",
    "LAYOUT_CODE",
    "LM_HEAD_DTYPES",
    "NUMERICS",
    "MAX_HEAD_DIM",
    "PROF_CLASSES",
    "PROJECTIONS",
    "Q8_0_BLOCK",
    "ROUNDING_CODE",
    "SPIN_ENV_VAR",
    "check_float_rows",
    "float_matrix",
    "load_workers",
    "norm_vector",
    "projection_spec",
    "rope_tables",
    "spin_us_setting",
    "to_x4",
    "x4_repacked_names",
    "x16_wanted",
    "x4_wanted",
]


# Rows the C side processes at a time (longer inputs are cut into chunks of this many rows;
# no result depends on the chunking). Bounds the per-call scratch.
ENGINE_CHUNK: int = _k.ENGINE_CHUNK
# Rows of a call up to which the AVX2 level runs the projections as row-blocked GEMVs, not the GEMM
# (cython_kernels/src/engine.c gemv_batch_max): a short prompt's prefill then uses the GEMV kernels.
GEMV_BATCH_MAX: int = _k.GEMV_BATCH_MAX
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
LAYOUT_CODE = {"i2_s": 0, "tq2_0": 1, "tq1_0": 2, "tl1": 3, "tl2": 4, "i2_s_x4": 5, "tq1_0_x16": 6}
# How the engine holds I2_S, TQ2_0, TQ1_0, TL1 and TL2 projections: "x4" re-orders them at load into
# one anonymous THP arena — I2_S and TQ2_0 (and TL1, the same 2 bits a weight) into the x4 layout
# (4 rows interleaved per 64-byte step), TQ1_0 (and TL2, 1.67 bits a weight as stored, 1.625 in
# x16) into the x16 layout (16 rows interleaved per 4-byte word) — so a decode GEMV reads one
# sequential stream (src/bl_mad.h); "file" uses the file's bytes in place (TL files: the LUT
# kernels); "auto" = I2_S/TQ2_0 into x4 where the active ISA level has a native x4 GEMV
# (kernels.i2s_x4_native), TQ1_0, TL1 and TL2 where it has the native x16 GEMV
# (kernels.tq1_x16_native: the levels whose MAD GEMVs out-stream the LUT ones), else file.
I2S_LAYOUTS = ("auto", "x4", "file")
_FT_F32, _FT_F16, _FT_Q8_0, _FT_Q6_K = 0, 1, 2, 3
ROUNDING_CODE = {"half_even": 0, "half_away": 1}

_I2S_BLOCK = 128
_TQ_BLOCK = 256
_TQ_BLOCK_BYTES = {"tq2_0": 66, "tq1_0": 54}
Q8_0_BLOCK, Q8_0_BYTES = 32, 34
Q6_K_BLOCK, Q6_K_BYTES = 256, 210


# ---- RoPE tables ------------------------------------------------------------------------------


def rope_tables(n_pos: int, n_dims: int, freq_base: float, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(cos, sin)`` float32 ``(n_pos - start, n_dims/2)`` for positions ``start..n_pos-1``:
    ggml's angle recurrence (docs/numerics.md#53-ggml-angle-computation). A row depends on its
    position only, so tables built in pieces equal one built at once.

    The same recipe as the reference's ``bitnet_lab.reference.rope.cos_sin_tables`` (which this
    module cannot import without importing JAX; tests/test_engine.py checks the two are equal
    bit for bit): ``theta_scale = fl32(pow(f32 base, f32(−2/n_dims)))`` via float64; angle of pair
    i at position p by repeated f32 multiplication ``θ ← θ·theta_scale`` from ``θ = p``;
    ``cos``/``sin`` evaluated in float64 from the f32 angle and rounded once.
    """
    exponent = np.float32(-2.0) / np.float32(n_dims)
    ts = np.float32(np.float64(np.float32(freq_base)) ** np.float64(exponent))
    theta = np.arange(start, n_pos, dtype=np.float32)
    angles = np.empty((theta.size, n_dims // 2), dtype=np.float32)
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
    (_kernels.scan_code3; a numpy version with temporaries was several times slower,
    docs/benchmarks.md#load-and-start-up)."""
    n = int(data.size)
    n_bad, first = _k.scan_code3(data, stride or max(n, 1), width or max(n, 1))
    if n_bad:
        raise CodecError(f"{name}: {layout} data holds invalid code(s) 3 (codes are t + 1 in {{0, 1, 2}}) "
                         f"in {n_bad} byte(s); first at byte {first}")


def _tq_scales(w: TernaryWeight, name: str) -> tuple[np.float32, np.ndarray | None]:
    """``(γ, None)`` when the fp16 block scales of a TQ weight are uniform over the blocks that
    hold a non-zero weight (the reference's rule, reference/weights.py), else ``(0, d)`` with
    ``d`` the (M, K/256) float32 block scales for the block epilogue
    (docs/numerics.md#35-block-scaled-tq-epilogue). Non-finite scales of used blocks: CodecError."""
    M, K = w.shape
    d = np.asarray(w.block_scales, dtype=np.float16).astype(np.float32).reshape(M, K // _TQ_BLOCK)
    distinct = np.unique(d[d != 0])
    used = None
    # only used blocks count: decode and look again when the scales alone do not settle it (a zero
    # scale on a block with weights makes the tensor block-scaled, as in the reference)
    if distinct.size > 1 or not np.isfinite(distinct).all() or (distinct.size and (d == 0).any()):
        used = np.any(w.ternary().reshape(M, K // _TQ_BLOCK, _TQ_BLOCK) != 0, axis=2)
        distinct = np.unique(d[used])
    if not np.isfinite(distinct).all():
        r, b = (int(i[0]) for i in np.nonzero(used & ~np.isfinite(d)))
        raise CodecError(f"{name}: {w.layout} block scale of row {r}, block {b} is {d[r, b]} (not finite)")
    if distinct.size <= 1:
        return (np.float32(distinct[0]) if distinct.size else np.float32(0.0)), None
    # unused blocks contribute 0 · d: a zero keeps an unused non-finite d from making a NaN
    return np.float32(0.0), np.ascontiguousarray(np.where(used, d, np.float32(0.0)), dtype=np.float32)


def _repack_i2_s(t: np.ndarray) -> tuple[np.ndarray, int]:
    """int8 ternary (M, K) -> I2_S bytes of (M, K_pad), K_pad = K rounded up to 128 (zero
    weights in the padding; the activations are zero-padded the same way, so Σ t·q is exact)."""
    M, K = t.shape
    K_pad = -(-K // _I2S_BLOCK) * _I2S_BLOCK
    if K_pad != K:
        t = np.concatenate([t, np.zeros((M, K_pad - K), dtype=np.int8)], axis=1)
    return kernels.pack_i2_s(np.ascontiguousarray(t, dtype=np.int8), threads=1), K_pad


def projection_spec(name: str, w: Any, shape: tuple[int, int], deferred: bool = False, *,
                    row_major: bool = False) -> tuple:
    """``(layout code, data, M, K, K_pad, gamma, None, tiling, block scales)`` for EngineCore
    (engine.pxi); block scales: the (M, K/256) float32 ``d`` of a TQ weight whose scales differ
    (then gamma is 0), else None.
    ``deferred=True`` (an I2_S or TQ2_0 tensor the x4 re-order will read, x4_repacked_names):
    nothing of the data is read here — no code-3 scan, no TQ scale check, gamma 0 — the re-order
    does both on the copy it reads, without touching the file's mapping (to_x4).
    ``row_major=True`` (the llama.cpp numerics profile: every projection runs the per-block
    kernels, which read I2_S, TQ2_0 and TQ1_0): TL1/TL2 weights are repacked to I2_S."""
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
        return (LAYOUT_CODE["i2_s"], data, M, K, K_pad, float(gamma), None, None, None)
    if not isinstance(w, TernaryWeight):
        raise ConfigError(f"{name}: expected a TernaryWeight or FloatTensor, got {type(w).__name__}")

    layout = w.layout
    if layout == "i2_s" and K % _I2S_BLOCK == 0:
        data = _flat_u8(w.data, name)
        if data.size != M * K // 4:
            raise CodecError(f"{name}: a ({M}, {K}) I2_S tensor needs {M * K // 4} bytes, got {data.size}")
        if not deferred:
            _check_2bit_codes(data, name, "I2_S")
        return (LAYOUT_CODE["i2_s"], data, M, K, K, float(np.float32(w.scale)), None, None, None)
    if layout in ("tq2_0", "tq1_0"):
        if K % _TQ_BLOCK:
            raise CodecError(f"{name}: {layout} needs K % {_TQ_BLOCK} == 0, got K = {K}")
        data = _flat_u8(w.data, name)
        need = M * (K // _TQ_BLOCK) * _TQ_BLOCK_BYTES[layout]
        if data.size != need:
            raise CodecError(f"{name}: a ({M}, {K}) {layout} tensor needs {need} bytes, got {data.size}")
        if deferred:
            return (LAYOUT_CODE[layout], data, M, K, K, 0.0, None, None, None)
        if layout == "tq2_0":  # the 64 code bytes of every 66-byte block (the fp16 scale follows)
            _check_2bit_codes(data, name, "TQ2_0", _TQ_BLOCK_BYTES["tq2_0"], 64)
        gamma, d = _tq_scales(w, name)
        return (LAYOUT_CODE[layout], data, M, K, K, float(gamma), None, None, d)
    if layout in ("tl1", "tl2") and not row_major:
        from bitnet_lab.quant import packing, tiling

        tl = tiling.validate_tiling(layout, M, K, w.tiling)
        data = _flat_u8(w.data, name)
        need = packing.tl1_nbytes(M, K) if layout == "tl1" else packing.tl2_nbytes(M, K, tl)
        if data.size < need:
            raise CodecError(f"{name}: a ({M}, {K}) {layout} tensor with tiling {tl} needs at least "
                             f"{need} bytes, got {data.size}")
        return (LAYOUT_CODE[layout], data, M, K, K, float(np.float32(w.scale)), None,
                (int(tl.BM), int(tl.BK), int(tl.bm)), None)
    # int8, hf_packed, I2_S with K % 128 != 0 (TL too, row_major): repack once to I2_S (2 bits per weight)
    t = w.ternary_matrix()
    data, K_pad = _repack_i2_s(t)
    return (LAYOUT_CODE["i2_s"], data, M, K, K_pad, float(np.float32(w.gamma())), None, None, None)


def _check_i2s_layout(i2s_layout: str) -> None:
    if i2s_layout not in I2S_LAYOUTS:
        raise ConfigError(f"i2s_layout {i2s_layout!r} is not one of {I2S_LAYOUTS}")


def x4_wanted(i2s_layout: str) -> bool:
    """Does ``i2s_layout`` re-order I2_S and TQ2_0 projections into x4?"""
    _check_i2s_layout(i2s_layout)
    return i2s_layout == "x4" or (i2s_layout == "auto" and kernels.i2s_x4_native())


def x16_wanted(i2s_layout: str) -> bool:
    """Does ``i2s_layout`` re-order TQ1_0 projections into x16 (and TL1 / TL2 ones into x4 / x16)?"""
    _check_i2s_layout(i2s_layout)
    return i2s_layout == "x4" or (i2s_layout == "auto" and kernels.tq1_x16_native())


def _x4_fits(K_pad: int) -> bool:
    return K_pad <= kernels.X4_MAX_K


def _reordered_names(config: ModelConfig, tensors: Mapping[str, Any], x4: bool, x16: bool) -> set[str]:
    """The projections the re-order reads: file-layout I2_S and TQ2_0 ones (x4), TQ1_0 ones (x16)."""
    shapes = config.projection_shapes()
    out = set()
    for i in range(config.n_layers):
        for p in PROJECTIONS:
            name = f"blk.{i}.{p}.weight"
            w = tensors.get(name)
            K = shapes[p][1]
            if not isinstance(w, TernaryWeight):
                continue
            if x4 and _x4_fits(K) and ((w.layout == "i2_s" and K % _I2S_BLOCK == 0)
                                       or (w.layout == "tq2_0" and K % _TQ_BLOCK == 0)):
                out.add(name)
            if x16 and w.layout in ("tq1_0", "tl2") and K % _TQ_BLOCK == 0 and K <= kernels.X16_MAX_K:
                out.add(name)
            if x16 and w.layout == "tl1" and K % _I2S_BLOCK == 0 and _x4_fits(K):
                out.add(name)
    return out


def x4_repacked_names(config: ModelConfig, tensors: Mapping[str, Any], i2s_layout: str = "auto") -> set[str]:
    """Names of the file-layout I2_S, TQ2_0, TQ1_0, TL1 and TL2 projections a NativeEngine built
    with ``i2s_layout`` would re-order into memory of its own (``load(mmap=False)`` leaves them
    out of its copy). TQ2_0 holds the same 2-bit codes in another order (kernels.tq2_to_i2s);
    TQ1_0 keeps its codes (kernels.tq1_x16_interleave); TL1 / TL2 are decoded
    (kernels.tl_ternary) and re-encoded as I2_S / TQ1_0 codes; a uniform block scale becomes
    gamma, as on the TQ kernels."""
    return _reordered_names(config, tensors, x4_wanted(i2s_layout), x16_wanted(i2s_layout))


def to_x4(specs: list[tuple[str, list]], deferred: Mapping[str, TernaryWeight], threads: int, *,
          x4: bool = True) -> None:
    """Re-order every I2_S spec (K_pad <= X4_MAX_K; only with ``x4``) and every deferred TQ2_0 spec
    in place into the x4 layout, and every deferred TQ1_0 spec into the x16 layout, all in one
    anonymous THP arena (a deferred TQ tensor whose block scales turn out not uniform stays as
    stored, read in place by the per-block kernels, with its scales in slot 8).
    Deferred tensors (``x4_repacked_names``) are
    read with preadv into a scratch buffer (the mapping's pages never enter RSS) and checked
    there — code 3, and for TQ2_0 / TQ1_0 the uniform block scale that becomes gamma — TQ2_0 codes
    are re-ordered to I2_S, then every tensor is interleaved. The tensors are spread over
    ``threads`` threads (preadv, the checks and the re-orders release the GIL): most of the time
    goes into first touches of the arena's new pages."""
    from concurrent.futures import ThreadPoolExecutor
    from dataclasses import replace

    from bitnet_lab.engine.residency import _arena, copy_bytes, drop_pages
    from bitnet_lab.quant.tiling import TLTiling

    i2s, tq2, tq1 = LAYOUT_CODE["i2_s"], LAYOUT_CODE["tq2_0"], LAYOUT_CODE["tq1_0"]
    tl1, tl2 = LAYOUT_CODE["tl1"], LAYOUT_CODE["tl2"]
    todo = [(n, s) for n, s in specs
            if (x4 and s[0] == i2s and _x4_fits(s[4])) or (s[0] in (tq2, tq1, tl1, tl2) and n in deferred)]
    if not todo:
        return
    # x4: the I2_S bytes (2 bits a weight); x16: TQ1_0's 52 code bytes per 256 weights
    sizes = [int(s[2]) * int(s[4]) // 256 * 52 if s[0] in (tq1, tl2) else int(s[2]) * int(s[4]) // 4
             for _, s in todo]
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
                if s[0] in (tl1, tl2):  # decoded, re-encoded in the MAD layout of the same or fewer bytes
                    # s[7]: the tiling projection_spec validated
                    t = kernels.tl_ternary(deferred[name].layout, buf, M, K, TLTiling(*s[7]), name=name)
                    s[7] = None
                    if s[0] == tl2:
                        s[1] = kernels.tq1_x16_pack(t, out=arena[off : off + n])
                        s[0] = LAYOUT_CODE["tq1_0_x16"]
                        continue
                    buf = kernels.pack_i2_s(t, threads=1)
                elif s[0] in (tq2, tq1):
                    w = deferred[name]
                    nbytes = _TQ_BLOCK_BYTES[w.layout]
                    if s[0] == tq2:
                        _check_2bit_codes(buf, name, "TQ2_0", nbytes, 64)
                    scales = w.block_scales  # a view of the blocks' own fp16 (GGUF): read from the copy
                    if np.may_share_memory(scales, w.data):
                        scales = np.ascontiguousarray(buf.reshape(-1, nbytes)[:, nbytes - 2 :]).view(np.float16)
                    gamma, d = _tq_scales(replace(w, data=buf, block_scales=scales.reshape(M, K // _TQ_BLOCK)), name)
                    if d is not None:  # scales differ: the per-block kernels read the tensor in place
                        s[5], s[8] = float(gamma), d
                        continue
                    s[5] = float(gamma)
                    if s[0] == tq1:
                        s[1] = kernels.tq1_x16_interleave(buf, M, K, out=arena[off : off + n])
                        s[0] = LAYOUT_CODE["tq1_0_x16"]
                        continue
                    buf = kernels.tq2_to_i2s(buf, M, K)
                else:
                    _check_2bit_codes(buf, name, "I2_S")
                src = buf
            s[1] = kernels.i2s_x4_interleave(src, M, K, out=arena[off : off + n])
            s[0] = LAYOUT_CODE["i2_s_x4"]

    with ThreadPoolExecutor(max_workers=threads) as pool:
        for f in [pool.submit(run, part) for part in range(threads)]:
            f.result()  # the first error (e.g. an invalid code) propagates


def norm_vector(tensors: Mapping[str, Any], name: str, n: int) -> np.ndarray:
    t = tensors[name]
    if not isinstance(t, FloatTensor):
        raise ConfigError(f"{name}: expected a float tensor, got {type(t).__name__}")
    if tuple(t.shape) != (n,):
        raise ConfigError(f"{name}: shape {tuple(t.shape)} but the config implies {(n,)}")
    v = np.ascontiguousarray(t.to_numpy(), dtype=np.float32)
    check_finite(name, v, "weights")
    return v


def check_float_rows(name: str, ftype: int, rows: np.ndarray, H: int) -> None:
    """NaN / inf in the rows ``float_matrix`` hands to C (F32, F16 bits, or Q8_0 / Q6_K blocks, whose
    fp16 scales are what can be non-finite: the integer codes cannot) -> a FormatError naming ``name``."""
    if ftype == _FT_F32:
        check_finite(name, rows, "weights")
    elif ftype == _FT_F16:
        check_finite(name, rows.view(np.float16), "weights")
    elif ftype == _FT_Q6_K:
        V = rows.shape[0]
        d = np.ascontiguousarray(rows.reshape(V, H // Q6_K_BLOCK, Q6_K_BYTES)[:, :, 208:210]).view(np.float16)
        check_finite(name, d.reshape(V, H // Q6_K_BLOCK), "Q6_K block scales (row, block)")
    else:
        V = rows.shape[0]
        d = np.ascontiguousarray(rows.reshape(V, H // Q8_0_BLOCK, Q8_0_BYTES)[:, :, :2]).view(np.float16)
        check_finite(name, d.reshape(V, H // Q8_0_BLOCK), "Q8_0 block scales (row, block)")


def float_matrix(t: FloatTensor, want_f16: bool | None, V: int, H: int, *, q6_k: bool = False) -> tuple[int, np.ndarray]:
    """``(ftype, rows)`` for the C side: F32 / F16 / Q8_0 used in place, and Q6_K when ``q6_k``
    (the embedding, dequantised per looked-up row, or an "auto" lm_head, llama.cpp's Q6_K × Q8_K
    dot); other types widened to F32. ``want_f16`` True: fp16 rows (F32/Q8_0/... rounded once:
    the "f16" lm_head); False: F16 is still read in place (widening is exact); None: the
    embedding (as stored)."""
    if want_f16 and t.ggml_type != "F16":
        return _FT_F16, np.ascontiguousarray(t.to_numpy().reshape(V, H).astype(np.float16)).view(np.uint16)
    if t.ggml_type == "F16":
        return _FT_F16, np.ascontiguousarray(np.asarray(t.data).reshape(V, H)).view(np.uint16)
    if t.ggml_type == "F32":
        return _FT_F32, np.ascontiguousarray(np.asarray(t.data, dtype=np.float32).reshape(V, H))
    if t.ggml_type == "Q8_0" and H % Q8_0_BLOCK == 0:
        raw = _flat_u8(t.data, t.name)
        if raw.size != V * H // Q8_0_BLOCK * Q8_0_BYTES:
            raise CodecError(f"{t.name}: a ({V}, {H}) Q8_0 tensor needs {V * H // 32 * 34} bytes, got {raw.size}")
        return _FT_Q8_0, raw.reshape(V, H // Q8_0_BLOCK * Q8_0_BYTES)
    if q6_k and t.ggml_type == "Q6_K" and H % Q6_K_BLOCK == 0:
        raw = _flat_u8(t.data, t.name)
        if raw.size != V * H // Q6_K_BLOCK * Q6_K_BYTES:
            raise CodecError(f"{t.name}: a ({V}, {H}) Q6_K tensor needs {V * H // 256 * 210} bytes, got {raw.size}")
        return _FT_Q6_K, raw.reshape(V, H // Q6_K_BLOCK * Q6_K_BYTES)
    return _FT_F32, np.ascontiguousarray(t.to_numpy().reshape(V, H), dtype=np.float32)


def load_workers() -> int:
    """Threads for the build's copies and re-orders: every core this process may run on, whatever
    the decode thread count (most of that time is the first touch of fresh memory, which is slow
    on a VM whose host has not backed the pages recently and shrinks with more cores,
    docs/benchmarks.md#load-and-start-up)."""
    return max(1, len(kernels.allowed_cpus()))


def spin_us_setting(value: float | None) -> float:
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


# ---- the whole model's weights, prepared for the C core ------------------------------------------


@dataclass
class PreparedWeights:
    """What the C core is built from: every tensor checked, each in the layout a kernel reads.

    ``layers``: per layer the norms and the 7 projection specs (projection_spec tuples);
    ``packed``: projection name -> (layout, the bytes the kernels read); ``i2s_layout``: "x4" when
    any projection was re-ordered at load, else "file"; ``embed`` / ``lm``: (float type code, rows);
    ``lm_f16`` / ``lm_q8`` / ``lm_q6k``: the lm_head's dot (fp16, llama.cpp's Q8_0 or Q6_K × Q8_K, else f32); ``block_mode``:
    a TQ projection has non-uniform block scales, so every projection takes the block epilogue
    (EngineCore dims["block_epilogue"], docs/numerics.md#35-block-scaled-tq-epilogue).
    """

    layers: list[dict[str, Any]]
    packed: dict[str, tuple[str, np.ndarray]]
    i2s_layout: str
    embed: tuple[int, np.ndarray]
    lm: tuple[int, np.ndarray]
    output_norm: np.ndarray
    lm_f16: bool
    lm_q8: bool
    embed_type: str
    lm_head_type: str
    lm_q6k: bool = False  # a Q6_K lm_head read in place with llama.cpp's Q6_K × Q8_K dot
    block_mode: bool = False  # some TQ projection's block scales differ: the block epilogue for all

    def mapped_arrays(self) -> list[np.ndarray]:
        """Every array the C side reads (norms, projections, embedding, lm_head): those still
        views of a mapped file are what residency.MappedFiles watches."""
        held = [a for spec in self.layers for k, v in spec.items() for a in
                ([s[1] for s in v] if k == "w" else [v])]
        return held + [self.embed[1], self.lm[1], self.output_norm]


NUMERICS = ("bitnet", "llama.cpp")


def prepare_weights(config: ModelConfig, tensors: Mapping[str, Any], *, x4: bool, x16: bool = False,
                    lm_head_dtype: str = "auto", numerics: str = "bitnet") -> PreparedWeights:
    """Check every tensor the graph uses against ``config`` and describe each to the C side in
    the layout its kernel reads: used in place (mapped), re-ordered to x4 (I2_S and TQ2_0, ``x4``)
    or x16 (TQ1_0, ``x16``), repacked to I2_S, or (float tensors) widened once; a mapped lm_head
    moves into 2 MiB pages.

    ``numerics="llama.cpp"``: every projection runs the per-block kernels with Q8_K activations
    (docs/numerics.md#36-llamacpp-tq-dot-with-q8_k-activations): no x4, TL1/TL2 repacked to I2_S,
    every K % 256 == 0. A TQ tensor's block scales are used as they are, uniform or not."""
    if numerics not in NUMERICS:
        raise ConfigError(f"numerics {numerics!r} is not one of {NUMERICS}")
    q8k = numerics == "llama.cpp"
    x4, x16 = x4 and not q8k, x16 and not q8k
    names = set(tensors)
    # every count against the tensors present, before anything is enumerated per layer
    config.check_tensors({n: tuple(getattr(t, "shape", ())) for n, t in tensors.items()})
    config.check_tensor_names(names)

    c = config
    H, V = c.hidden, c.vocab
    shapes = c.projection_shapes()
    layers = []
    packed: dict[str, tuple[str, np.ndarray]] = {}
    deferred = {n: tensors[n] for n in _reordered_names(config, tensors, x4, x16)}
    all_specs: list[tuple[str, list]] = []
    for i in range(c.n_layers):
        spec: dict[str, Any] = {
            "attn_norm": norm_vector(tensors, f"blk.{i}.attn_norm.weight", H),
            "ffn_norm": norm_vector(tensors, f"blk.{i}.ffn_norm.weight", H),
        }
        if c.sub_norms:
            spec["attn_sub_norm"] = norm_vector(tensors, f"blk.{i}.attn_sub_norm.weight", c.q_dim)
            spec["ffn_sub_norm"] = norm_vector(tensors, f"blk.{i}.ffn_sub_norm.weight", c.ffn)
        ws = []
        for p in PROJECTIONS:
            name = f"blk.{i}.{p}.weight"
            w = tensors[name]
            s = list(projection_spec(name, w, shapes[p], deferred=name in deferred, row_major=q8k))
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
    if x4 or deferred:
        to_x4(all_specs, deferred, load_workers(), x4=x4)
    block_mode = any(s[8] is not None for _, s in all_specs)
    if block_mode or q8k:  # per-256-block arithmetic for every projection
        bad = {p: shapes[p][1] for p in PROJECTIONS if shapes[p][1] % _TQ_BLOCK}
        if bad:
            why = "llama.cpp numerics (Q8_K activations)" if q8k else "block-scaled weights"
            raise ConfigError(f"{why} need every K % {_TQ_BLOCK} == 0; not so for {bad}")
    layout_name = {v: k for k, v in LAYOUT_CODE.items()}
    for name, s in all_specs:
        packed[name] = (layout_name[s[0]], s[1])
    for spec in layers:
        spec["w"] = [tuple(s) for s in spec["w"]]
    reordered = (LAYOUT_CODE["i2_s_x4"], LAYOUT_CODE["tq1_0_x16"])
    i2s_layout = "x4" if any(s[0] in reordered for _, s in all_specs) else "file"

    emb_t = tensors["token_embd.weight"]
    lm_t = emb_t if c.tied_output else tensors["output.weight"]
    for t in (emb_t, lm_t):
        if not isinstance(t, FloatTensor):
            raise ConfigError(f"{t.name}: expected a float tensor, got {type(t).__name__}")
        if tuple(t.shape) != (V, H):
            raise ConfigError(f"{t.name}: shape {tuple(t.shape)} but the config implies {(V, H)}")
    lm_f16 = lm_head_dtype == "f16" or (lm_head_dtype == "auto" and lm_t.ggml_type == "F16")
    # a Q8_0 lm_head ("auto"): llama.cpp's Q8_0 dot, the hidden state quantised to Q8_0
    # (docs/numerics.md#9-embedding-and-lm_head)
    lm_q8 = lm_head_dtype == "auto" and lm_t.ggml_type == "Q8_0" and H % Q8_0_BLOCK == 0
    # a Q6_K lm_head ("auto"): llama.cpp's Q6_K × Q8_K dot, read in place (no 5x wider F32 copy);
    # a Q6_K embedding is read in place too, one looked-up row dequantised at a time
    lm_q6k = lm_head_dtype == "auto" and lm_t.ggml_type == "Q6_K" and H % Q6_K_BLOCK == 0
    embed = float_matrix(emb_t, None, V, H, q6_k=True)
    shared = lm_t is emb_t and not (lm_f16 and emb_t.ggml_type != "F16") and (embed[0] != _FT_Q6_K or lm_q6k)
    lm = embed if shared else float_matrix(lm_t, lm_f16, V, H, q6_k=lm_q6k)
    # The lm_head is read whole every token (657 MB of the 2B-4T's 1178): it streams slower from
    # the file's 4 KiB page-cache pages than from 2 MiB pages
    # (docs/benchmarks.md#decode-memory-layout-and-streaming), so a mapped lm_head moves into a
    # THP arena (as the x4 projections do; a tied embedding follows).
    lm_rows = residency.to_huge_pages(lm[1], load_workers())
    if lm_rows is not lm[1]:
        embed = (embed[0], lm_rows) if embed is lm else embed
        lm = (lm[0], lm_rows)
    # NaN / inf in the float rows: refused with the tensor's name (norms: norm_vector). A
    # mapped embedding's pages are dropped after the scan (only the rows looked up stay).
    check_float_rows(lm_t.name, lm[0], lm[1], H)
    if embed[1] is not lm[1]:
        check_float_rows(emb_t.name, embed[0], embed[1], H)
        residency.drop_pages(embed[1])
    output_norm = norm_vector(tensors, "output_norm.weight", H)
    # 2 MiB pages for the streamed weights where the OS allows (a hint; more read bandwidth than
    # 4 KiB pages: src/engine.h bl_advise_hugepages)
    for _, arr in packed.values():
        _k.advise_hugepages(arr)
    for _, arr in (embed, lm):
        _k.advise_hugepages(arr)
    return PreparedWeights(layers=layers, packed=packed, i2s_layout=i2s_layout, embed=embed, lm=lm,
                           output_norm=output_norm, lm_f16=lm_f16, lm_q8=lm_q8, embed_type=emb_t.ggml_type,
                           lm_head_type=lm_t.ggml_type, lm_q6k=lm_q6k, block_mode=block_mode)
