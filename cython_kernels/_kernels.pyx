"""bitnet_lab._kernels — the compiled kernels (Cython over the C files in src/).

Private module: use :mod:`bitnet_lab.kernels`, which resolves ISA names and thread counts and
documents the public functions. This module owns what must happen in compiled code:

* validation of every array at the Python boundary (dtype, shape, contiguity, lengths),
  raising :class:`bitnet_lab.errors.CodecError` with the numbers;
* releasing the GIL around the C calls and splitting the rows across OpenMP threads
  (``prange``). Rows are independent, so results are bit-identical for any thread count;
* turning the C kernels' ``bl_status`` (count and first index of bad elements) into errors.

Compiler directives (boundscheck, wraparound, ...) are set once, in setup.py.
"""

from libc.stdint cimport int8_t, int64_t, uint8_t
from cython.parallel cimport prange

cimport bl_kernels as C

import json

import numpy as np

from bitnet_lab.errors import CodecError


cdef extern from "bl_build_info.h":
    # JSON written by setup.py's build_ext: compiler command, flags per C file, OpenMP.
    const char *BL_BUILD_INFO_JSON


cdef extern from *:
    """
    /* The truth about OpenMP is whether this very file was compiled with it. */
    #ifdef _OPENMP
    static int bl_openmp_compiled(void) { return 1; }
    #else
    static int bl_openmp_compiled(void) { return 0; }
    #endif
    """
    int bl_openmp_compiled()


C.bl_dispatch_init()


# ---- introspection (used by bitnet_lab.kernels) -------------------------------------------

def isa_names():
    """All ISA level names, in the C enum's order (index = the ``isa`` argument below)."""
    return tuple(C.bl_isa_name(i).decode() for i in range(C.BL_ISA_COUNT))


def isa_built(int isa):
    """True when this build contains the level's kernels."""
    return bool(C.bl_isa_built(isa))


def isa_supported(int isa):
    """True when this CPU has every feature the level's compile flags allow."""
    return bool(C.bl_isa_supported(isa))


def cpu_features():
    """{feature: True/False} as the dispatcher saw them; features the compiler cannot test
    are left out."""
    out = {}
    for i in range(C.bl_cpu_feature_count()):
        v = C.bl_cpu_feature_value(i)
        if v >= 0:
            out[C.bl_cpu_feature_name(i).decode()] = bool(v)
    return out


def openmp_enabled():
    """True when the kernels were compiled with OpenMP (threads > 1 then really run in parallel)."""
    return bool(bl_openmp_compiled())


def build_info():
    """What the build did: compiler, flags per C file, OpenMP, target architecture."""
    info = json.loads(BL_BUILD_INFO_JSON.decode())
    info["compiler_version"] = C.bl_compiler_version().decode()
    info["target_arch"] = C.bl_target_arch().decode()
    info["openmp_compiled"] = bool(bl_openmp_compiled())
    return info


# ---- helpers -------------------------------------------------------------------------------

cdef const C.bl_isa_kernels *_table(int isa) except NULL:
    cdef const C.bl_isa_kernels *tab = C.bl_isa_table(isa)
    if tab == NULL:
        # bitnet_lab.kernels resolves names first; reaching this is a programming error.
        raise ValueError(f"ISA index {isa} is not available in this build on this CPU")
    return tab


cdef str _who(name, str func):
    return f"{func}({name!r})" if name is not None else func


cdef _as_1d_uint8(data, str who):
    """data as a 1-D C-contiguous uint8 ndarray (bytes-like objects are viewed, not copied)."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        data = np.frombuffer(data, dtype=np.uint8)
    if not isinstance(data, np.ndarray):
        raise CodecError(f"{who}: data must be a numpy uint8 array or bytes, got {type(data).__name__}")
    if data.dtype != np.uint8:
        raise CodecError(f"{who}: data must have dtype uint8, got {data.dtype}")
    if data.ndim != 1:
        raise CodecError(f"{who}: data must be 1-D, got shape {data.shape}")
    if not data.flags.c_contiguous:
        raise CodecError(f"{who}: data must be C-contiguous (stride 1), got strides {data.strides}")
    return data


cdef int _chunks(Py_ssize_t M, int threads, Py_ssize_t *rows_per_chunk):
    """Split M rows into at most `threads` runs of whole rows; returns how many runs."""
    if M == 0:
        rows_per_chunk[0] = 0
        return 0
    cdef Py_ssize_t n = min(M, <Py_ssize_t>threads)
    rows_per_chunk[0] = (M + n - 1) // n
    return <int>((M + rows_per_chunk[0] - 1) // rows_per_chunk[0])


cdef int _check_threads(int threads) except -1:
    if threads < 1:
        raise CodecError(f"threads must be >= 1, got {threads}")
    return 0


cdef tuple _first_bad(int64_t[:, ::1] status, Py_ssize_t rows_per_chunk, Py_ssize_t K):
    """(total bad, flat index of the first bad element) over the per-run statuses."""
    cdef Py_ssize_t c
    cdef int64_t total = 0, first = -1
    for c in range(status.shape[0]):
        if status[c, 0] > 0:
            if first < 0:
                first = status[c, 1] + c * rows_per_chunk * K  # runs are in row order
            total += status[c, 0]
    return total, first


# ---- I2_S codec -----------------------------------------------------------------------------

cdef inline void _unpack_run(C.bl_unpack_i2_s_fn fn, const uint8_t *src, int8_t *dst,
                             Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t K,
                             int64_t *status) noexcept nogil:
    # rows [r0, r1): K/4 packed bytes and K outputs per row; K/128 blocks per row
    cdef C.bl_status st = fn(src + r0 * (K // 4), dst + r0 * K, (r1 - r0) * (K // 128))
    status[0] = st.n_bad
    status[1] = st.first_bad


def unpack_i2_s(data, Py_ssize_t M, Py_ssize_t K, int isa, int threads, name=None):
    """Packed I2_S bytes (M*K/4, optionally + the 32-byte scale tail) -> int8 (M, K) ternary.

    ``isa``: index into :func:`isa_names`; ``threads``: >= 1. Raises CodecError on bad
    arguments or when a code 3 occurs (count and first position in the message).
    """
    who = _who(name, "unpack_i2_s")
    cdef const C.bl_isa_kernels *tab = _table(isa)
    _check_threads(threads)
    if M < 0 or K <= 0 or K % 128 != 0:
        raise CodecError(f"{who}: I2_S needs M >= 0 and K a positive multiple of 128 "
                         f"(128-weight blocks must not straddle rows), got M={M}, K={K}")
    arr = _as_1d_uint8(data, who)
    cdef Py_ssize_t nbytes = M * (K // 4)
    if arr.shape[0] != nbytes and arr.shape[0] != nbytes + 32:
        raise CodecError(f"{who}: a ({M}, {K}) I2_S tensor needs M*K/4 = {nbytes} bytes "
                         f"(or {nbytes + 32} with the scale tail), got {arr.shape[0]}")

    out = np.empty((M, K), dtype=np.int8)
    if M == 0:
        return out
    cdef const uint8_t[::1] src = arr
    cdef int8_t[:, ::1] dst = out
    cdef Py_ssize_t rows_per_chunk
    cdef int n_chunks = _chunks(M, threads, &rows_per_chunk)
    status_arr = np.zeros((n_chunks, 2), dtype=np.int64)
    cdef int64_t[:, ::1] status = status_arr
    cdef C.bl_unpack_i2_s_fn fn = tab.unpack_i2_s
    cdef int c
    with nogil:
        for c in prange(n_chunks, num_threads=threads, schedule="static", chunksize=1):
            _unpack_run(fn, &src[0], &dst[0, 0], c * rows_per_chunk,
                        min(M, (c + 1) * rows_per_chunk), K, &status[c, 0])

    total, first = _first_bad(status, rows_per_chunk, K)
    if total:
        row, col = divmod(first, K)
        j = first % 128
        byte = 32 * (first // 128) + j % 32
        shift = 6 - 2 * (j // 32)
        raise CodecError(
            f"{who}: I2_S data for a ({M}, {K}) tensor holds {total} invalid code(s) 3 "
            f"(codes are t + 1 in {{0, 1, 2}}); first at row {row}, column {col} "
            f"(byte {byte}, bits {shift + 1}:{shift})")
    return out


cdef inline void _pack_run(C.bl_pack_i2_s_fn fn, const int8_t *src, uint8_t *dst,
                           Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t K,
                           int64_t *status) noexcept nogil:
    cdef C.bl_status st = fn(src + r0 * K, dst + r0 * (K // 4), (r1 - r0) * (K // 128))
    status[0] = st.n_bad
    status[1] = st.first_bad


def pack_i2_s(t, int isa, int threads, name=None):
    """int8 (M, K) ternary -> packed I2_S bytes (M*K/4,), without the scale tail.

    Raises CodecError on bad arguments or when a value is outside {-1, 0, 1}.
    """
    who = _who(name, "pack_i2_s")
    cdef const C.bl_isa_kernels *tab = _table(isa)
    _check_threads(threads)
    if not isinstance(t, np.ndarray):
        raise CodecError(f"{who}: t must be a numpy int8 array, got {type(t).__name__}")
    if t.dtype != np.int8:
        raise CodecError(f"{who}: t must have dtype int8, got {t.dtype}")
    if t.ndim != 2:
        raise CodecError(f"{who}: t must be 2-D (M, K), got shape {t.shape}")
    if not t.flags.c_contiguous:
        raise CodecError(f"{who}: t must be C-contiguous, got strides {t.strides}")
    cdef Py_ssize_t M = t.shape[0], K = t.shape[1]
    if K <= 0 or K % 128 != 0:
        raise CodecError(f"{who}: I2_S needs K a positive multiple of 128, got shape ({M}, {K})")

    out = np.empty(M * (K // 4), dtype=np.uint8)
    if M == 0:
        return out
    cdef const int8_t[:, ::1] src = t
    cdef uint8_t[::1] dst = out
    cdef Py_ssize_t rows_per_chunk
    cdef int n_chunks = _chunks(M, threads, &rows_per_chunk)
    status_arr = np.zeros((n_chunks, 2), dtype=np.int64)
    cdef int64_t[:, ::1] status = status_arr
    cdef C.bl_pack_i2_s_fn fn = tab.pack_i2_s
    cdef int c
    with nogil:
        for c in prange(n_chunks, num_threads=threads, schedule="static", chunksize=1):
            _pack_run(fn, &src[0, 0], &dst[0], c * rows_per_chunk,
                      min(M, (c + 1) * rows_per_chunk), K, &status[c, 0])

    total, first = _first_bad(status, rows_per_chunk, K)
    if total:
        row, col = divmod(first, K)
        raise CodecError(
            f"{who}: a ({M}, {K}) ternary tensor holds {total} value(s) outside {{-1, 0, 1}}; "
            f"first at row {row}, column {col} (value {int(t[row, col])})")
    return out


include "ceilings.pxi"  # machine-ceiling microkernels for bitnet_lab.bench
include "lut.pxi"  # TL1 / TL2 LUT kernels (src/bl_lut.h)


include "mad.pxi"  # MAD family: quantize_act, I2_S / TQ2_0 / TQ1_0 GEMV and GEMM (src/bl_mad.h)
include "engine.pxi"  # native engine: the whole forward pass in one call (src/engine.h)
include "gguf.pxi"  # the GGUF reader's string-array loop (bitnet_lab.formats.gguf)
include "q8k.pxi"  # Q8_K activation quantiser (src/bl_q8k.h)
include "lmhead.pxi"  # quantised lm_head kernels as standalone calls (src/engine_float.h)
