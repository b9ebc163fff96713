"""The MAD (multiply-add) kernel family: activation quantisation and ternary integer products.

Re-exported by :mod:`bitnet_lab.kernels` — import them from there. Facts:
docs/kernels.md#1-two-kernel-families to docs/kernels.md#2-i2_s-mad-kernels,
docs/numerics.md#2-activation-quantisation to docs/numerics.md#3-bitlinear-integer-product-and-epilogue; the C
side is documented in cython_kernels/src/bl_mad.h.

Ops (numpy twin each must match bit for bit, on every ISA and thread count):

================  ==========================================================  =====================
op                result                                                      numpy twin
================  ==========================================================  =====================
quantize_act      q int8 (N, K), s_x f32 (N,), sum_q int32 (N,)               quant.quantize_activations
i2s_gemv          int32 (M,) = Σ_k t[r, k]·q[k], canonical I2_S 128/32        quant.mad_reference.i2s_gemv_ref
i2s_gemm          int32 (N, M) = Σ_k t[r, k]·Q[n, k]                          i2s_gemm_ref
tq2_gemv / gemm   the same over TQ2_0 blocks (llama.cpp layout)               tq2_gemv_ref / tq2_gemm_ref
tq1_gemv / gemm   the same over TQ1_0 blocks                                  tq1_gemv_ref / tq1_gemm_ref
<f>_bgemv/bgemm   int32 (N, M, K/256): the same cut at every 256-weight       <f>_block_gemm_ref
                  block, f in i2s, tq2, tq1 (:func:`block_gemm`)
================  ==========================================================  =====================

The per-block ops keep the block boundary for an epilogue that weighs every block by its own
scale: TQ files whose block scales differ (docs/numerics.md#35-block-scaled-tq-epilogue) and the
``llama.cpp`` numerics profile's Q8_K activations (docs/numerics.md#36-llamacpp-tq-dot-with-q8_k-activations).

The products return the exact integer ``Σ t·q`` (= D − sum_q, docs/numerics.md#31-the-integer-identity); the
caller applies the epilogue ``(Σ t·q) / s_x · γ`` (:func:`bitnet_lab.quant.bitlinear_epilogue`).

**TQ2_0 / TQ1_0 numerics are BitNet's, not llama.cpp's** (unless the ``llama.cpp`` numerics
profile asks for Q8_K activations). The weight layouts are llama.cpp's, but the activations are
BitNet's per-token int8 (one scale per row). The whole-row products ignore the per-block fp16
scales: they equal the dequantised product only when every non-zero block scale is the same value
(:func:`tq_uniform_scale`); files whose scales differ go through the per-block ops.

Numbered versions (llm.c style; ``kernel_versions()`` lists what this CPU runs): ``v0`` portable
C, ``v1`` AVX2 (maddubs, int16 accumulators widened every ≤ 16 blocks), ``v1w1`` AVX2 widening
every block, ``v2`` AVX-512 VNNI (dpbusd into int32), ``v3`` AVX-512 VNNI without shifts (I2_S
and TQ2_0 GEMV), ``avxvnni`` (256-bit VEX dpbusd), ``neon`` (int16 widening every 16 blocks),
``neon_dotprod`` (SDOT). ``version=`` forces one; the default is the best version of the active
(or ``isa=``) level (:func:`default_version`). TQ kernels on the NEON levels are v0's.

Fault injection (for the tests of ``verify``): :func:`inject_fault` or ``BITNET_LAB_FAULT=<op>``
in the environment makes that op deliberately wrong — a product adds 1 to ``out[0]`` (row 0,
token 0), quantize_act adds 1 to ``sum_q[0]``. The C kernels read the switch once per call.
Off by default; :func:`fault_status` and ``build_info()["fault"]`` show it.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from bitnet_lab.errors import KernelError
from bitnet_lab.kernels.faults import _OP_ID, FAULT_ENV_VAR, MAD_OPS, fault_status, inject_fault  # noqa: F401 (re-exported)
from bitnet_lab.kernels.isa import ISA_ORDER, _check_isa, _dim, _k, active_isa, available_isas, effective_threads
from bitnet_lab.quant import mad_reference as _ref
from bitnet_lab.quant import packing as _packing
from bitnet_lab.quant.mad_reference import tq_uniform_scale
from bitnet_lab.quant.ternary import ROUNDING_MODES, quantize_activations

__all__ = [
    "BLOCK_OPS",
    "FAULT_ENV_VAR",
    "block_gemm",
    "MAD_OPS",
    "default_version",
    "fault_status",
    "i2s_gemm",
    "i2s_gemv",
    "i2s_x4_gemm",
    "i2s_x4_gemv",
    "i2s_x4_interleave",
    "i2s_x4_native",
    "i2s_x4_rowmajor",
    "inject_fault",
    "kernel_versions",
    "microbench",
    "quantize_act",
    "tq1_gemm",
    "tq1_gemv",
    "tq2_gemm",
    "tq2_gemv",
    "tq2_to_i2s",
    "tq_uniform_scale",
]


# Op names in the C enum's order (bl_mad_op); the index is the op id.
_ROUNDING_CODE = {"half_even": 0, "half_away": 1}  # BL_ROUND_HALF_EVEN / _AWAY

# (index, version name, op name, isa index, description) of every compiled version.
_VERSIONS = _k.mad_versions()


# ---- versions ----------------------------------------------------------------------------------


def kernel_versions(*, include_unavailable: bool = False) -> dict[str, list[tuple[str, str, str]]]:
    """``{op: [(version, isa, description), ...]}`` for every version this CPU and build can run,
    in registry order (v0 first). ``include_unavailable=True`` also lists the versions compiled
    in for ISA levels this CPU lacks (e.g. avxvnni on an AVX-512 machine). The default version of
    each op is :func:`default_version`."""
    avail = set(available_isas())
    out: dict[str, list[tuple[str, str, str]]] = {op: [] for op in MAD_OPS}
    for _, name, op, isa, desc in _VERSIONS:
        if include_unavailable or ISA_ORDER[isa] in avail:
            out[op].append((name, ISA_ORDER[isa], desc))
    return out


def default_version(op: str, isa: str | None = None) -> str:
    """Name of the version ``op`` runs by default on ``isa`` (None: the active level)."""
    if op not in _OP_ID:
        raise KernelError(f"unknown op {op!r}; known: {', '.join(MAD_OPS)}")
    return _resolve(op, isa, None)[1]


def _resolve(op: str, isa: str | None, version: str | None) -> tuple[int, str, str]:
    """(registry index, version name, isa name) of the kernel to run, else KernelError."""
    op_id = _OP_ID[op]
    if version is None:
        level = active_isa() if isa is None else _check_isa(isa, "isa=")
        vi = _k.mad_default_version(op_id, ISA_ORDER.index(level))
        return vi, _VERSIONS[vi][1], level
    matches = [v for v in _VERSIONS if v[2] == op and v[1] == version]
    if not matches:
        known = ", ".join(v[1] for v in _VERSIONS if v[2] == op)
        raise KernelError(f"{op}: unknown version {version!r}; this build has: {known}")
    vi, name, _, isa_i, _ = matches[0]
    need = ISA_ORDER[isa_i]
    if need not in available_isas():
        raise KernelError(
            f"{op} version {name!r} needs ISA level {need!r}, which this CPU/build cannot run "
            f"(available: {', '.join(available_isas())})"
        )
    if isa is not None and isa != need:
        raise KernelError(f"{op}: version {name!r} runs on ISA level {need!r}, not isa={isa!r}")
    return vi, name, need


# ---- kernels -----------------------------------------------------------------------------------


def quantize_act(
    x: np.ndarray,
    rounding: str = "half_even",
    *,
    threads: int | None = None,
    isa: str | None = None,
    version: str | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-token absmax int8 quantisation of float32 ``x`` (N, K) or (K,)
    (docs/numerics.md#21-bitnetcpp-i2_s-path).

    Returns ``(q int8 (N, K), s_x float32 (N,), sum_q int32 (N,))`` — shapes ``(K,), (), ()`` for a
    1-D ``x`` — bit-identical to :func:`bitnet_lab.quant.quantize_activations` (absmax floor 1e-5,
    ``s_x = fl32(127/amax)``, product in float32, clamp [-128, 127]) for both ``rounding`` modes.
    ``x`` must be float32 and C-contiguous; a row holding NaN or inf raises KernelError.
    """
    if rounding not in _ROUNDING_CODE:
        raise KernelError(f"quantize_act: rounding must be one of {ROUNDING_MODES}, got {rounding!r}")
    vi, _, _ = _resolve("quantize_act", isa, version)
    if isinstance(x, np.ndarray) and x.ndim == 1:
        q, s, sq = _k.quantize_act(x.reshape(1, -1), _ROUNDING_CODE[rounding], vi, effective_threads(threads))
        return q.reshape(-1), s.reshape(()), sq.reshape(())
    return _k.quantize_act(x, _ROUNDING_CODE[rounding], vi, effective_threads(threads))


def _gemv(op: str, data, q, M, K, threads, isa, version) -> np.ndarray:
    M, K = _dim(M, "M"), _dim(K, "K")
    vi, _, _ = _resolve(op, isa, version)
    return _k.gemv(vi, data, q, M, K, effective_threads(threads))


def _gemm(op: str, data, Q, M, K, threads, isa, version) -> np.ndarray:
    M, K = _dim(M, "M"), _dim(K, "K")
    vi, _, _ = _resolve(op, isa, version)
    return _k.gemm(vi, data, Q, M, K, effective_threads(threads))


def i2s_gemv(packed, q: np.ndarray, M: int, K: int, *, threads: int | None = None, isa: str | None = None,
             version: str | None = None) -> np.ndarray:
    """Exact ``Σ_k t[r, k]·q[k]`` for each row of an I2_S tensor: int32 (M,).

    ``packed``: 1-D uint8 of ``M*K/4`` bytes (or ``+ 32`` with the scale tail, ignored), canonical
    128/32 layout, ``K % 128 == 0``, no code 3 (checked at load, not here). ``q``: int8 (K,).
    Numpy twin: :func:`bitnet_lab.quant.mad_reference.i2s_gemv_ref`.
    """
    return _gemv("i2s_gemv", packed, q, M, K, threads, isa, version)


def i2s_gemm(packed, Q: np.ndarray, M: int, K: int, *, threads: int | None = None, isa: str | None = None,
             version: str | None = None) -> np.ndarray:
    """Exact ``Σ_k t[r, k]·Q[n, k]``: int32 (N, M) for int8 ``Q`` (N, K) (prefill). The weights of
    each chunk are decoded once and reused for every token row (activation-parallel)."""
    return _gemm("i2s_gemm", packed, Q, M, K, threads, isa, version)


def i2s_x4_gemv(data, q: np.ndarray, M: int, K: int, *, threads: int | None = None, isa: str | None = None,
                version: str | None = None) -> np.ndarray:
    """:func:`i2s_gemv` on the I2_S x4 layout (``data`` from :func:`i2s_x4_interleave`): int32 (M,).
    Numpy twin: :func:`bitnet_lab.quant.mad_reference.i2s_x4_gemv_ref`."""
    return _gemv("i2s_x4_gemv", data, q, M, K, threads, isa, version)


def i2s_x4_gemm(data, Q: np.ndarray, M: int, K: int, *, threads: int | None = None, isa: str | None = None,
                version: str | None = None) -> np.ndarray:
    """:func:`i2s_gemm` on the I2_S x4 layout: int32 (N, M)."""
    return _gemm("i2s_x4_gemm", data, Q, M, K, threads, isa, version)


# Levels whose x4 GEMV reads the layout itself (src/mad_dispatch.c); elsewhere the x4 kernels run
# the row-major I2_S kernel on each group re-ordered, so the engine keeps plain I2_S there.
_X4_NATIVE_GEMV = {"avx512vnni": "v3", "amx": "v3", "avx2": "v1x"}
X4_MAX_K = 65536  # BL_X4_MAX_K: the _via kernels re-order a group (4·K/4 bytes) on the stack


def i2s_x4_native(isa: str | None = None) -> bool:
    """True when ``isa`` (None: the active level) runs the x4 GEMV natively, as its default."""
    level = active_isa() if isa is None else _check_isa(isa, "isa=")
    want = _X4_NATIVE_GEMV.get(level)
    return want is not None and default_version("i2s_x4_gemv", level) == want


def i2s_x4_interleave(packed, M: int, K: int, out: np.ndarray | None = None) -> np.ndarray:
    """Row-major I2_S bytes (M·K/4, or + 32 with the scale tail, ignored) -> the x4 order
    (src/bl_mad.h; numpy statement: mad_reference.i2s_x4_from_rowmajor), into ``out`` (uint8,
    M·K/4 bytes, not overlapping ``packed``) or a new array. Returns the x4 array."""
    return _k.i2s_x4_interleave(packed, _dim(M, "M"), _dim(K, "K"), out)


def i2s_x4_rowmajor(data, M: int, K: int) -> np.ndarray:
    """The inverse of :func:`i2s_x4_interleave`: a new row-major I2_S uint8 array."""
    return _k.i2s_x4_rowmajor(data, _dim(M, "M"), _dim(K, "K"))


def tq2_to_i2s(data, M: int, K: int) -> np.ndarray:
    """The codes of an (M, K) TQ2_0 tensor as row-major I2_S bytes (a new array; block scales
    dropped): the engine's way to run TQ2_0 files on the I2_S x4 kernels. Numpy statement:
    mad_reference.tq2_0_to_i2s."""
    return _k.tq2_to_i2s(data, _dim(M, "M"), _dim(K, "K"))


def tq2_gemv(data, q: np.ndarray, M: int, K: int, *, threads: int | None = None, isa: str | None = None,
             version: str | None = None) -> np.ndarray:
    """Exact ``Σ t·q`` per row of a TQ2_0 tensor (``M*K/256*66`` bytes, ``K % 256 == 0``): int32
    (M,). Block scales are ignored — see the module doc and :func:`tq_uniform_scale`."""
    return _gemv("tq2_gemv", data, q, M, K, threads, isa, version)


def tq1_gemv(data, q: np.ndarray, M: int, K: int, *, threads: int | None = None, isa: str | None = None,
             version: str | None = None) -> np.ndarray:
    """Exact ``Σ t·q`` per row of a TQ1_0 tensor (``M*K/256*54`` bytes, ``K % 256 == 0``): int32 (M,)."""
    return _gemv("tq1_gemv", data, q, M, K, threads, isa, version)


# Levels whose TQ1_0 x16 GEMV reads the layout itself (src/mad_dispatch.c); elsewhere the x16 kernels
# run the level's TQ1_0 kernel on rows re-ordered on the stack, so the engine keeps TQ1_0 there.
_X16_NATIVE_GEMV = {"avx512vnni": "v3", "amx": "v3"}
X16_MAX_K = 16384  # BL_X16_MAX_K: the _via kernels re-order 16 TQ1_0 rows on the stack


def tq1_x16_native(isa: str | None = None) -> bool:
    """True when ``isa`` (None: the active level) runs the TQ1_0 x16 GEMV natively, as its default."""
    level = active_isa() if isa is None else _check_isa(isa, "isa=")
    want = _X16_NATIVE_GEMV.get(level)
    return want is not None and default_version("tq1_x16_gemv", level) == want


def tq1_x16_interleave(data, M: int, K: int, out: np.ndarray | None = None) -> np.ndarray:
    """An (M, K) TQ1_0 tensor (``M*K/256*54`` bytes) -> its code bytes in the x16 order
    (src/bl_mad.h, "The TQ1_0 x16 layout"; numpy statement: mad_reference.tq1_x16_from_tq1), into
    ``out`` (uint8, ``M*K/256*52`` bytes, not overlapping ``data``) or a new array. The block scales
    are dropped: the engine uses x16 only for tensors whose block scales are all equal."""
    return _k.tq1_x16_interleave(data, _dim(M, "M"), _dim(K, "K"), out)


def tq1_x16_pack(t: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """int8 ternary values ``(M, K)`` (K % 256 == 0, K <= X16_MAX_K) -> their TQ1_0 codes in the x16
    order, into ``out`` or a new array (numpy statement: ``mad_reference.tq1_x16_from_tq1`` of
    ``packing.pack_tq1_0(t, d)``, any d): how the engine brings TL2 files into x16."""
    return _k.tq1_x16_pack(t, out)


def tq1_x16_rows(data, M: int, K: int) -> np.ndarray:
    """The inverse of :func:`tq1_x16_interleave`: a new TQ1_0 uint8 array whose block scales are 0."""
    return _k.tq1_x16_rows(data, _dim(M, "M"), _dim(K, "K"))


def tq1_x16_gemv(data, q: np.ndarray, M: int, K: int, *, threads: int | None = None, isa: str | None = None,
                 version: str | None = None) -> np.ndarray:
    """:func:`tq1_gemv` on the TQ1_0 x16 layout (``data`` from :func:`tq1_x16_interleave`): int32 (M,).
    Numpy twin: :func:`bitnet_lab.quant.mad_reference.tq1_x16_gemv_ref`."""
    return _gemv("tq1_x16_gemv", data, q, M, K, threads, isa, version)


def tq1_x16_gemm(data, Q: np.ndarray, M: int, K: int, *, threads: int | None = None, isa: str | None = None,
                 version: str | None = None) -> np.ndarray:
    """:func:`tq1_gemm` on the TQ1_0 x16 layout: int32 (N, M)."""
    return _gemm("tq1_x16_gemm", data, Q, M, K, threads, isa, version)


def tq2_gemm(data, Q: np.ndarray, M: int, K: int, *, threads: int | None = None, isa: str | None = None,
             version: str | None = None) -> np.ndarray:
    """TQ2_0 batched product: int32 (N, M)."""
    return _gemm("tq2_gemm", data, Q, M, K, threads, isa, version)


def tq1_gemm(data, Q: np.ndarray, M: int, K: int, *, threads: int | None = None, isa: str | None = None,
             version: str | None = None) -> np.ndarray:
    """TQ1_0 batched product: int32 (N, M)."""
    return _gemm("tq1_gemm", data, Q, M, K, threads, isa, version)


# The per-block ops of each format: (GEMV op, GEMM op).
BLOCK_OPS = {"i2s": ("i2s_bgemv", "i2s_bgemm"), "tq2": ("tq2_bgemv", "tq2_bgemm"), "tq1": ("tq1_bgemv", "tq1_bgemm")}


def block_gemm(fmt: str, data, Q: np.ndarray, M: int, K: int, *, gemv: bool = False, threads: int | None = None,
               isa: str | None = None, version: str | None = None) -> np.ndarray:
    """Per-256-block exact products ``Σ_{k in block b} t[r, k]·Q[n, k]``: int32 (N, M, K/256) for
    int8 ``Q`` (N, K), K % 256 == 0 (src/bl_mad.h "per-block products").

    ``fmt``: "i2s" (row-major I2_S bytes), "tq2" (TQ2_0) or "tq1" (TQ1_0) — the block scales of a
    TQ tensor are not applied. ``gemv=True`` runs the GEMV op once per row of ``Q`` (what the
    engine's decode calls), else the GEMM op on all rows. Numpy twins:
    :func:`bitnet_lab.quant.mad_reference.i2s_block_gemm_ref` / ``tq2_…`` / ``tq1_…``."""
    if fmt not in BLOCK_OPS:
        raise KernelError(f"block_gemm: fmt must be one of {sorted(BLOCK_OPS)}, got {fmt!r}")
    M, K = _dim(M, "M"), _dim(K, "K")
    vi, _, _ = _resolve(BLOCK_OPS[fmt][0 if gemv else 1], isa, version)
    return _k.block_gemm(vi, data, Q, M, K, effective_threads(threads))


# ---- microbenchmark ----------------------------------------------------------------------------

_GEMV_TWINS = {"i2s_gemv": _ref.i2s_gemv_ref, "i2s_x4_gemv": _ref.i2s_x4_gemv_ref, "tq2_gemv": _ref.tq2_gemv_ref,
               "tq1_gemv": _ref.tq1_gemv_ref, "tq1_x16_gemv": _ref.tq1_x16_gemv_ref}
_GEMM_TWINS = {"i2s_gemm": _ref.i2s_gemm_ref, "i2s_x4_gemm": _ref.i2s_x4_gemm_ref, "tq2_gemm": _ref.tq2_gemm_ref,
               "tq1_gemm": _ref.tq1_gemm_ref, "tq1_x16_gemm": _ref.tq1_x16_gemm_ref}
_BLOCK_TWINS = {
    "i2s_bgemv": _ref.i2s_block_gemm_ref, "i2s_bgemm": _ref.i2s_block_gemm_ref, "tq2_bgemv": _ref.tq2_block_gemm_ref,
    "tq2_bgemm": _ref.tq2_block_gemm_ref, "tq1_bgemv": _ref.tq1_block_gemm_ref, "tq1_bgemm": _ref.tq1_block_gemm_ref,
}
_KERNELS = {
    "i2s_gemv": i2s_gemv, "tq2_gemv": tq2_gemv, "tq1_gemv": tq1_gemv, "i2s_x4_gemv": i2s_x4_gemv,
    "i2s_x4_gemm": i2s_x4_gemm,
    "i2s_gemm": i2s_gemm, "tq2_gemm": tq2_gemm, "tq1_gemm": tq1_gemm,
    "tq1_x16_gemv": tq1_x16_gemv, "tq1_x16_gemm": tq1_x16_gemm,
}


def _pack_for(op: str, t: np.ndarray) -> np.ndarray:
    if op.startswith("i2s_x4"):
        return i2s_x4_interleave(_packing.pack_i2_s(t), *t.shape)
    if op.startswith("i2s"):
        return _packing.pack_i2_s(t)
    d = _packing.tq_default_block_scales(t, 1.0)
    if op.startswith("tq1_x16"):
        return tq1_x16_interleave(_packing.pack_tq1_0(t, d), *t.shape)
    return _packing.pack_tq2_0(t, d) if op.startswith("tq2") else _packing.pack_tq1_0(t, d)


def microbench(op: str, M: int, K: int, *, version: str | None = None, threads: int | None = None,
               repeat: int = 20, N: int = 1, isa: str | None = None, seed: int = 0) -> dict:
    """Time one MAD op on random data after checking it bit-exact against its numpy twin.

    ``op`` in :data:`MAD_OPS`; weights are a random ternary (M, K) tensor, activations random int8
    (N rows for a GEMM; quantize_act takes M rows of K floats). One warm-up call, then ``repeat``
    timed calls. Returns ``{"op", "version", "isa", "threads", "M", "K", "N", "repeat",
    "seconds" (median per call), "seconds_min", "gop_s", "gb_s"}`` where one multiply-add counts as
    2 ops (quantize_act: 1 op per element) and ``gb_s`` counts the bytes the kernel must read and
    write once (packed weights + activations + output). Python call overhead (a few µs) is
    included. KernelError if the kernel disagrees with the twin.
    """
    if op not in _OP_ID:
        raise KernelError(f"microbench: unknown op {op!r}; known: {', '.join(MAD_OPS)}")
    if repeat < 1:
        raise KernelError(f"microbench: repeat must be >= 1, got {repeat}")
    vi, vname, level = _resolve(op, isa, version)
    # the runs name the version alone: a level's default may be a lower level's version (amx's
    # tq1_gemm is avx512vnni's v3), which version= + isa= would refuse as a mismatch
    threads = effective_threads(threads)
    rng = np.random.default_rng(seed)
    if op == "quantize_act":
        x = rng.standard_normal((M, K), dtype=np.float32)
        run = lambda: quantize_act(x, threads=threads, version=vname)  # noqa: E731
        got, want = run(), quantize_activations(x)
        same = all(np.array_equal(a, b) for a, b in zip(got, want))
        n_ops, n_bytes, Nrows = M * K, 5 * M * K + 8 * M, M
    elif op in _BLOCK_TWINS:  # per-block ops: (N, M, K/256) results, N activation rows for either op
        t = rng.integers(-1, 2, size=(M, K), dtype=np.int8)
        data = _pack_for(op, t)
        Nrows = N
        q = rng.integers(-127, 128, size=(Nrows, K), dtype=np.int8)
        run = lambda: block_gemm(op[:3], data, q, M, K, gemv=op.endswith("gemv"), threads=threads,  # noqa: E731
                                 version=vname)
        same = np.array_equal(run(), _BLOCK_TWINS[op](data, q, M, K))
        n_ops, n_bytes = 2 * M * K * Nrows, data.nbytes + q.nbytes + 4 * M * Nrows * (K // 256)
    else:
        t = rng.integers(-1, 2, size=(M, K), dtype=np.int8)
        data = _pack_for(op, t)
        batched = op.endswith("gemm")
        Nrows = N if batched else 1
        q = rng.integers(-127, 128, size=(Nrows, K) if batched else (K,), dtype=np.int8)
        fn = _KERNELS[op]
        run = lambda: fn(data, q, M, K, threads=threads, version=vname)  # noqa: E731
        got = run()
        want = (_GEMM_TWINS[op] if batched else _GEMV_TWINS[op])(data, q, M, K)
        same = np.array_equal(got, want)
        n_ops, n_bytes = 2 * M * K * Nrows, data.nbytes + q.nbytes + 4 * M * Nrows
    if not same:
        raise KernelError(f"microbench: {op} version {vname!r} ({level}) disagrees with its numpy twin "
                          f"for M={M}, K={K}, N={Nrows}; not timing a wrong kernel")
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    sec = statistics.median(times)
    return {
        "op": op, "version": vname, "isa": level, "threads": threads, "M": M, "K": K, "N": Nrows,
        "repeat": repeat, "seconds": sec, "seconds_min": min(times),
        "gop_s": n_ops / sec / 1e9, "gb_s": n_bytes / sec / 1e9,
    }
