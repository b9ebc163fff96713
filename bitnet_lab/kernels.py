"""bitnet_lab.kernels — the native kernels, the ISA level they run on, and threads.

The compiled module ``bitnet_lab._kernels`` (built by setup.py from cython_kernels/) holds one
implementation per ISA level of every kernel; a C dispatch table filled at import says which
levels this build contains and this CPU can run. This module picks one of them:

* by default the best available level (the last of :func:`available_isas`);
* ``BITNET_LAB_ISA=<level>`` in the environment forces a level at import — an unknown or
  unavailable name raises :class:`KernelError` listing what is available (never a silent
  fallback);
* :func:`set_isa` / :func:`use_isa` switch it at run time (tests, notebooks), and every
  kernel takes ``isa=`` to run one call on a given level.

ISA levels (``ISA_ORDER``; on each architecture the best level comes last):

    scalar        portable C (v0), any CPU
    avx2          x86-64 AVX2 + FMA (v1)
    avxvnni       x86-64 AVX2 + AVX-VNNI (MAD kernels; the codec and LUT kernels are AVX2's)
    avx512vnni    x86-64 AVX-512 F/BW/VL + VNNI (v2)
    amx           x86-64 avx512vnni + AMX-INT8 tiles, enabled by the OS for this process (the
                  prefill GEMMs run on tiles; everything else is avx512vnni's)
    neon          aarch64 Advanced SIMD
    neon_dotprod  aarch64 NEON + SDOT/UDOT (I2_S products use SDOT; codec and LUT are NEON's)

Threads: every kernel takes ``threads=None`` → :func:`effective_threads`. Rows are split into
``threads`` runs of whole rows, so results are bit-identical for any thread count. Without
OpenMP in the build (:func:`openmp_enabled` False) the runs execute one after another.

Importing this module never imports JAX.
"""

from __future__ import annotations

import contextlib
import functools
import operator
import os
from collections.abc import Iterator

import numpy as np

from bitnet_lab.errors import CodecError, KernelError  # noqa: F401 (KernelError re-exported)

# OpenMP threads waiting at a barrier sleep instead of spinning, unless the user chose otherwise.
# The native engine passes ~5 barriers per layer; on a shared or busy machine spinning waiters
# steal the CPU from the thread they wait for (measured on a loaded 2-core VM, 2B-4T decode at
# 2 threads: 835 ms/token spinning, 196 passive). The OpenMP runtime reads this when it is loaded
# (with _kernels, below); it has no effect if another library loaded an OpenMP runtime first.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

try:
    from bitnet_lab import _kernels as _k
except ImportError as exc:  # no silent fallback: the native build is part of the package
    raise ImportError(
        "bitnet_lab._kernels (the compiled kernels) is not importable: build it with "
        "`pip install -e .` (or `python setup.py build_ext --inplace`) in the checkout"
    ) from exc

__all__ = [
    "ENV_VAR",
    "ISA_ORDER",
    "KernelError",
    "active_isa",
    "allowed_cpus",
    "available_isas",
    "build_info",
    "cpu_features",
    "effective_threads",
    "lut_kernel_versions",
    "openmp_enabled",
    "pack_i2_s",
    "physical_cores",
    "set_isa",
    "unpack_i2_s",
    "tl1_build_lut",
    "tl1_gemv",
    "tl2_build_lut",
    "tl2_gemv",
    "use_isa",
    # MAD family (bitnet_lab.kernels_mad, imported at the end of this module)
    "X4_MAX_K",
    "default_version",
    "fault_status",
    "i2s_gemm",
    "i2s_x4_gemm",
    "i2s_x4_gemv",
    "i2s_x4_interleave",
    "i2s_x4_native",
    "i2s_x4_rowmajor",
    "i2s_gemv",
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

ENV_VAR = "BITNET_LAB_ISA"

# Must equal the C enum bl_isa (src/bl_kernels.h); checked below.
ISA_ORDER: tuple[str, ...] = ("scalar", "avx2", "avxvnni", "avx512vnni", "amx", "neon", "neon_dotprod")


if _k.isa_names() != ISA_ORDER:  # pragma: no cover - only after an inconsistent edit
    raise ImportError(f"bitnet_lab._kernels ISA table {_k.isa_names()} != kernels.ISA_ORDER {ISA_ORDER}")

_INDEX = {name: i for i, name in enumerate(ISA_ORDER)}


# ---- ISA levels ------------------------------------------------------------------------------


def available_isas() -> tuple[str, ...]:
    """Levels this CPU can run AND this build contains, in ``ISA_ORDER`` (best last)."""
    return tuple(n for i, n in enumerate(ISA_ORDER) if _k.isa_built(i) and _k.isa_supported(i))


def _check_isa(name: object, source: str) -> str:
    """``name`` if it is an available level, else KernelError saying why and what is.

    ``source`` prefixes the name in the message: "BITNET_LAB_ISA=", "isa=", "ISA "."""
    avail = available_isas()
    if name in avail:
        return name  # type: ignore[return-value]
    if not isinstance(name, str) or name not in _INDEX:
        why = f"is not an ISA level (known: {', '.join(ISA_ORDER)})"
    else:
        i = _INDEX[name]  # type: ignore[index]
        reasons = []
        if not _k.isa_built(i):
            reasons.append(f"this build (target {_k.build_info()['target_arch']}) has no kernels for it")
        if not _k.isa_supported(i):
            reasons.append("this CPU lacks its features")
        why = "is not available: " + " and ".join(reasons)
    raise KernelError(f"{source}{name!r} {why}; available here: {', '.join(avail)}")


def _isa_from_env() -> str:
    value = os.environ.get(ENV_VAR, "").strip()
    if not value:
        return available_isas()[-1]
    return _check_isa(value, f"{ENV_VAR}=")


_active: str = _isa_from_env()


def active_isa() -> str:
    """The level kernels use when called with ``isa=None``."""
    return _active


def set_isa(name: str) -> None:
    """Make ``name`` the active level (KernelError when unknown or unavailable)."""
    global _active
    _active = _check_isa(name, "ISA ")


@contextlib.contextmanager
def use_isa(name: str) -> Iterator[str]:
    """``with use_isa("scalar"): ...`` — run a block on one level, then restore the previous."""
    previous = _active
    set_isa(name)
    try:
        yield name
    finally:
        set_isa(previous)


def _isa_index(isa: str | None) -> int:
    return _INDEX[_active if isa is None else _check_isa(isa, "isa=")]


def cpu_features() -> dict[str, bool]:
    """CPU features the dispatcher read at import, e.g. {'avx2': True, 'avx512vnni': False, ...}
    on x86-64 or {'neon': True, 'dotprod': True} on aarch64. Features the compiler could not
    test (avxvnni on GCC < 11) are left out."""
    return _k.cpu_features()


def openmp_enabled() -> bool:
    """True when the kernels were compiled with OpenMP (threads > 1 run in parallel)."""
    return _k.openmp_enabled()


def build_info() -> dict:
    """How the kernels were built: compiler command and version, flags per C file (per ISA),
    OpenMP flags and result, target platform/architecture, and the MAD op made deliberately
    wrong by fault injection (``"fault"``: None unless switched on)."""
    info = _k.build_info()
    info["fault"] = fault_status()
    return info


# ---- threads ---------------------------------------------------------------------------------


def _read_int(path: str) -> int:
    with open(path) as f:
        return int(f.read().strip())


def allowed_cpus() -> list[int]:
    """The logical CPUs this process may run on: its affinity set where the OS has one, else all."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS / Windows
        return list(range(os.cpu_count() or 1))


@functools.lru_cache(maxsize=1)
def physical_cores() -> int:
    """Physical cores among the CPUs this process may run on (affinity-aware).

    Heuristic, in order:
    1. Linux sysfs: count distinct (physical_package_id, core_id) over the CPUs in
       ``os.sched_getaffinity(0)`` — exact, and SMT siblings count once;
    2. /proc/cpuinfo: logical CPUs in the affinity set // ("siblings" // "cpu cores"), the
       threads per core of the first package (x86 Linux);
    3. otherwise the number of logical CPUs available (no SMT information: count them all).
    Cached for the life of the process.
    """
    cpus = allowed_cpus()
    cores = set()
    try:
        for cpu in cpus:
            topo = f"/sys/devices/system/cpu/cpu{cpu}/topology"
            cores.add((_read_int(f"{topo}/physical_package_id"), _read_int(f"{topo}/core_id")))
    except (OSError, ValueError):
        cores = set()
    if cores:
        return len(cores)
    threads_per_core = 1
    try:
        info: dict[str, int] = {}
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("siblings", "cpu cores") and key not in info:
                    info[key] = int(value)
                if len(info) == 2:
                    break
        if len(info) == 2 and info["cpu cores"] > 0:
            threads_per_core = max(1, info["siblings"] // info["cpu cores"])
    except (OSError, ValueError):
        pass
    return max(1, len(cpus) // threads_per_core)


def effective_threads(n: int | None = None) -> int:
    """The thread count a kernel uses: ``n`` when given (an int >= 1), else
    :func:`physical_cores` (SMT siblings share the SIMD units these kernels saturate)."""
    if n is None:
        return physical_cores()
    try:
        n = operator.index(n)
    except TypeError:
        raise KernelError(f"threads must be an integer >= 1 or None, got {n!r}") from None
    if n < 1:
        raise KernelError(f"threads must be >= 1, got {n}")
    return n


# ---- I2_S codec ------------------------------------------------------------------------------


def _dim(value: object, what: str) -> int:
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise CodecError(f"{what} must be an integer, got {value!r}") from None


def unpack_i2_s(
    data, M: int, K: int, *, threads: int | None = None, isa: str | None = None, name: str | None = None
) -> np.ndarray:
    """Decode canonical I2_S (formats.md §3.1, 128/32 layout) to ternary int8 ``(M, K)``.

    ``data``: 1-D C-contiguous uint8 array (or bytes) of exactly ``M*K/4`` bytes, or
    ``M*K/4 + 32`` (the tensor blob with its scale tail, which is ignored); ``K % 128 == 0``.
    ``name`` (a tensor name) goes into error messages. Raises CodecError on a bad argument or
    an invalid code 3 (count and first position in the message). Numpy twin:
    :func:`bitnet_lab.quant.packing.unpack_i2_s` (bit-identical).
    """
    M, K = _dim(M, "M"), _dim(K, "K")
    if M < 1:
        raise CodecError(f"unpack_i2_s: M must be >= 1, got {M}")
    return _k.unpack_i2_s(data, M, K, _isa_index(isa), effective_threads(threads), name)


def pack_i2_s(
    t: np.ndarray, *, threads: int | None = None, isa: str | None = None, name: str | None = None
) -> np.ndarray:
    """Encode ternary int8 ``(M, K)`` (values in {-1, 0, 1}, C-contiguous, ``K % 128 == 0``) to
    canonical I2_S bytes ``(M*K/4,)`` without the scale tail. Raises CodecError on a bad
    argument or a value outside {-1, 0, 1}. Numpy twin:
    :func:`bitnet_lab.quant.packing.pack_i2_s` (bit-identical)."""
    if isinstance(t, np.ndarray) and t.ndim == 2 and t.shape[0] < 1:
        raise CodecError(f"pack_i2_s: t has no rows, shape {t.shape}")
    return _k.pack_i2_s(t, _isa_index(isa), effective_threads(threads), name)


# ---- TL1 / TL2 LUT kernels -------------------------------------------------------------------
#
# C contract: cython_kernels/src/bl_lut.h; numpy twins: bitnet_lab.quant.lut. The kernels take
# already quantised int8 activations (bitnet_lab's single policy,
# bitnet_lab.quant.quantize_activations — not bitnet.cpp's floor-less TL scale, see the twin
# module's docstring) and return the exact int32 Σ t·q; the epilogue acc / s_x · γ is the
# caller's. Levels: scalar (v0), avx2 (v1; also what avxvnni / avx512vnni run), neon (also
# neon_dotprod) — see lut_kernel_versions().


def _lut_blob_len(data) -> int | None:
    """Length in bytes of a 1-D uint8 array or a bytes-like object; None for anything else
    (the compiled wrapper then raises its own type error)."""
    if isinstance(data, (bytes, bytearray)):
        return len(data)
    if isinstance(data, memoryview):
        return data.nbytes
    if isinstance(data, np.ndarray) and data.ndim == 1:
        return int(data.size)
    return None


def _check_blob(who: str, data, allowed: dict[str, int], M: int, K: int, tiling) -> None:
    n = _lut_blob_len(data)
    if n is not None and n not in allowed.values():
        sizes = ", ".join(f"{v} ({k})" for k, v in allowed.items())
        raise CodecError(f"{who}: a ({M}, {K}) tensor with tiling {tiling} needs one of {sizes} bytes; got {n}")


def tl1_build_lut(q_row: np.ndarray, *, isa: str | None = None) -> np.ndarray:
    """TL1 lookup tables of one int8 activation row ``(K,)`` (K even) in byte-plane form:
    uint8 ``(K/2, 32)``, table j = pair (q[2j], q[2j+1]), 16 low bytes then 16 high bytes of
    the int16 entries ``3·t0 + t1 + 4 → t0·q[2j] + t1·q[2j+1]`` (kernels.md §3.1). Byte-identical
    to :func:`bitnet_lab.quant.lut.tl1_lut_planes`."""
    from bitnet_lab.quant.lut import check_q_row

    check_q_row(q_row, "tl1_build_lut")
    return _k.tl1_build_lut(q_row, _isa_index(isa))


def tl2_build_lut(q_row: np.ndarray, K: int, tiling, *, isa: str | None = None) -> np.ndarray:
    """TL2 lookup tables of one int8 activation row ``(K,)`` under ``tiling`` (only BK matters;
    checked with :func:`bitnet_lab.quant.tiling.validate_tiling`): uint8
    ``(three_k/3 + two_k/2, 32)`` — the triple tables (kernels.md §4.1) then the pair tables of
    the two-weight tail, in byte-plane form. Byte-identical to
    :func:`bitnet_lab.quant.lut.tl2_lut_planes`."""
    from bitnet_lab.quant.lut import check_q_row
    from bitnet_lab.quant.tiling import validate_tiling

    K = _dim(K, "K")
    check_q_row(q_row, "tl2_build_lut")
    if q_row.shape[0] != K:
        raise CodecError(f"tl2_build_lut: q_row has {q_row.shape[0]} entries, K = {K}")
    from bitnet_lab.tensors import TLTiling

    if not isinstance(tiling, TLTiling):
        raise CodecError(f"tl2_build_lut: tiling must be a TLTiling(BM, BK, bm); got {tiling!r}")
    # M plays no part in the tables: check the tiling as for an M = BM tensor.
    validate_tiling("tl2", tiling.BM if tiling.BM > 0 else 32, K, tiling)
    return _k.tl2_build_lut(q_row, int(tiling.BK), _isa_index(isa))


def tl1_gemv(
    data, q: np.ndarray, M: int, K: int, tiling, *, threads: int | None = None, isa: str | None = None,
    name: str | None = None,
) -> np.ndarray:
    """Exact ``Σ_k t[r, k]·q[k]`` (int32 ``(M,)``; ``(N, M)`` for ``q`` of shape ``(N, K)``) of a
    TL1 tensor ``(M, K)`` through its lookup tables.

    ``data``: the packed index bytes, exactly ``packing.tl1_nbytes(M, K)`` or
    ``packing.tl1_ggml_nbytes(M, K)`` (with the 32-byte scale slot, ignored); ``tiling`` the
    TLTiling that wrote them (legal for (M, K)); ``q`` int8, C-contiguous. Raises CodecError
    on a bad argument or an invalid pair index (> 8) in the data (count and first position).
    Bit-identical for every ``threads`` and ISA level. Numpy twin:
    :func:`bitnet_lab.quant.lut.tl1_gemv_ref`."""
    from bitnet_lab.quant import packing
    from bitnet_lab.quant.tiling import validate_tiling

    M, K = _dim(M, "M"), _dim(K, "K")
    validate_tiling("tl1", M, K, tiling)
    who = f"tl1_gemv({name!r})" if name is not None else "tl1_gemv"
    _check_blob(who, data, {"tl1_nbytes": packing.tl1_nbytes(M, K), "with the scale slot": packing.tl1_ggml_nbytes(M, K)}, M, K, tiling)
    return _k.tl1_gemv(data, q, M, K, int(tiling.BM), int(tiling.BK), int(tiling.bm), _isa_index(isa), effective_threads(threads), name)


def tl2_gemv(
    data, q: np.ndarray, M: int, K: int, tiling, *, threads: int | None = None, isa: str | None = None,
    name: str | None = None,
) -> np.ndarray:
    """Exact ``Σ_k t[r, k]·q[k]`` (int32 ``(M,)``; ``(N, M)`` for ``q`` ``(N, K)``) of a TL2
    tensor ``(M, K)``: signed triple-table lookups plus the two-weight tail.

    ``data``: ``packing.tl2_nbytes(M, K, tiling)`` (the real packed bytes),
    ``packing.tl2_padded_nbytes(M, K)`` (what the converter writes) or
    ``packing.tl2_ggml_nbytes(M, K)`` (with the zero padding and the scale slot); only the real
    packed bytes are read. Raises CodecError on a bad argument or an invalid index (triple
    magnitude > 13, tail pair index > 8). Bit-identical for every ``threads`` and ISA level.
    Numpy twin: :func:`bitnet_lab.quant.lut.tl2_gemv_ref`."""
    from bitnet_lab.quant import packing
    from bitnet_lab.quant.tiling import validate_tiling

    M, K = _dim(M, "M"), _dim(K, "K")
    validate_tiling("tl2", M, K, tiling)
    who = f"tl2_gemv({name!r})" if name is not None else "tl2_gemv"
    allowed = {
        "tl2_nbytes": packing.tl2_nbytes(M, K, tiling),
        "tl2_padded_nbytes": packing.tl2_padded_nbytes(M, K),
        "tl2_ggml_nbytes": packing.tl2_ggml_nbytes(M, K),
    }
    _check_blob(who, data, allowed, M, K, tiling)
    return _k.tl2_gemv(data, q, M, K, int(tiling.BM), int(tiling.BK), _isa_index(isa), effective_threads(threads), name)


def lut_kernel_versions() -> list[dict]:
    """The LUT kernels compiled in, one dict per (op, implementation): ``op`` (tl1_build_lut,
    tl2_build_lut, tl1_gemv, tl2_gemv), ``version`` (v0 scalar, v1 AVX2, neon), ``isa`` (the
    level the code needs), ``description``, and ``default_for``: the available levels whose
    dispatch table runs it (read from the C table's function pointers)."""
    out = []
    avail = available_isas()
    for op, version, isa_i, desc in _k.lut_versions():
        default_for = [n for n in avail if _k.lut_default_version(op, _INDEX[n]) == version]
        out.append({"op": op, "version": version, "isa": ISA_ORDER[isa_i], "description": desc,
                    "default_for": default_for})
    return out


# ---- MAD family: quantize_act, I2_S / TQ2_0 / TQ1_0 GEMV and GEMM ----------------------------
# Lives in bitnet_lab.kernels_mad (which uses the ISA helpers above, hence the late import).
from bitnet_lab.kernels_mad import (  # noqa: E402
    X4_MAX_K,
    default_version,
    fault_status,
    i2s_gemm,
    i2s_gemv,
    i2s_x4_gemm,
    i2s_x4_gemv,
    i2s_x4_interleave,
    i2s_x4_native,
    i2s_x4_rowmajor,
    inject_fault,
    kernel_versions,
    microbench,
    quantize_act,
    tq1_gemm,
    tq1_gemv,
    tq2_gemm,
    tq2_gemv,
    tq2_to_i2s,
    tq_uniform_scale,
)
