# lut.pxi — TL1 / TL2 LUT kernels (src/bl_lut.h), included by _kernels.pyx.
#
# Private: bitnet_lab.kernels (tl1_build_lut, tl2_build_lut, tl1_gemv, tl2_gemv) validates the
# tiling with bitnet_lab.quant.tiling.validate_tiling and the blob length with
# bitnet_lab.quant.packing before calling these. What is checked here is what memory safety
# needs — dtypes, contiguity, the tiling invariants the C loops rely on, enough bytes — so a
# direct call with bad arguments raises CodecError instead of reading out of bounds.
#
# Threads: the M rows are cut into runs of whole sub-tiles (bm rows for TL1, 32 for TL2), one
# run per thread (prange); each row's sum is computed by one thread in a fixed order, so the
# result is identical for every thread count. LUTs are built first (one per activation row,
# rows in parallel), then shared read-only by all threads.

from libc.stdint cimport int32_t

from bitnet_lab.errors import KernelError
from bitnet_lab.quant import lut as _lut_twin
from bitnet_lab.tensors import TLTiling as _TLTiling


cdef extern from *:
    """
    /* Every LUT implementation compiled in (BL_BUILD_LUT_* come from setup.py, as for
     * bl_dispatch.c), for bitnet_lab.kernels.lut_kernel_versions(). */
    #include "bl_lut.h"
    typedef struct {
        const char *name;
        int isa;
        const char *desc;
        bl_tl1_build_lut_fn tl1_build_lut;
        bl_tl2_build_lut_fn tl2_build_lut;
        bl_tl1_gemv_fn tl1_gemv;
        bl_tl2_gemv_fn tl2_gemv;
        bl_tl1_gemm_fn tl1_gemm;
        bl_tl2_gemm_fn tl2_gemm;
    } bl_lut_impl;
    static const bl_lut_impl bl_lut_impls[] = {
        {"v0", 0, "scalar: byte-plane lookups straight into int32",
         bl_tl1_build_lut_scalar, bl_tl2_build_lut_scalar, bl_tl1_gemv_scalar, bl_tl2_gemv_scalar, NULL, NULL},
    #if defined(BL_BUILD_LUT_AVX2)
        {"v1", 1, "AVX2: pshufb on 16-byte planes, unpack to int16, sign (x+s)^s, int16 acc per K-tile",
         bl_tl1_build_lut_avx2, bl_tl2_build_lut_avx2, bl_tl1_gemv_avx2, bl_tl2_gemv_avx2, NULL, NULL},
    #endif
    #if defined(BL_BUILD_LUT_AVX512)
        /* GEMVs only (NULL: the level's build is v1's) */
        {"v2", 3, "AVX-512: vpshufb on four 16-byte planes per register, 64 index bytes per step, vptestmw sign masks",
         NULL, NULL, bl_tl1_gemv_avx512, bl_tl2_gemv_avx512, NULL, NULL},
    #endif
    #if defined(BL_BUILD_AMX) && defined(BL_BUILD_AVX512VNNI)
        /* GEMMs only: prefill on AMX tiles (mad_amx.c) */
        {"amx", 4, "AMX: index nibbles decoded once per call into tile codes (TL1 straight per 16 rows, TL2 via a weight-major buffer), TDPBSUD over all tokens",
         NULL, NULL, NULL, NULL, bl_tl1_gemm_amx, bl_tl2_gemm_amx},
    #endif
    #if defined(BL_BUILD_LUT_NEON)
        {"neon", 5, "NEON: vqtbl1q_u8 on 16-byte planes, vzip to int16, int16 acc per K-tile",
         bl_tl1_build_lut_neon, bl_tl2_build_lut_neon, bl_tl1_gemv_neon, bl_tl2_gemv_neon, NULL, NULL},
    #endif
    };
    static int bl_lut_impl_count(void) { return (int)(sizeof bl_lut_impls / sizeof bl_lut_impls[0]); }
    /* Function pointer of op (0..5: tl1_build_lut, tl2_build_lut, tl1_gemv, tl2_gemv, tl1_gemm,
     * tl2_gemm), as void*; NULL where the implementation (or level) has none. */
    static const void *bl_lut_impl_fn(int i, int op) {
        const bl_lut_impl *v = &bl_lut_impls[i];
        return op == 0 ? (const void *)v->tl1_build_lut : op == 1 ? (const void *)v->tl2_build_lut
             : op == 2 ? (const void *)v->tl1_gemv : op == 3 ? (const void *)v->tl2_gemv
             : op == 4 ? (const void *)v->tl1_gemm : (const void *)v->tl2_gemm;
    }
    static const void *bl_lut_table_fn(const bl_isa_kernels *t, int op) {
        return op == 0 ? (const void *)t->tl1_build_lut : op == 1 ? (const void *)t->tl2_build_lut
             : op == 2 ? (const void *)t->tl1_gemv : op == 3 ? (const void *)t->tl2_gemv
             : op == 4 ? (const void *)t->tl1_gemm : (const void *)t->tl2_gemm;
    }
    """
    ctypedef struct bl_lut_impl:
        const char *name
        int isa
        const char *desc
    const bl_lut_impl bl_lut_impls[]
    int bl_lut_impl_count()
    const void *bl_lut_impl_fn(int i, int op)
    const void *bl_lut_table_fn(const C.bl_isa_kernels *t, int op)


cdef extern from "bl_lut.h" nogil:
    int BL_FAULT_TL1_BUILD_LUT, BL_FAULT_TL2_BUILD_LUT, BL_FAULT_TL1_GEMV, BL_FAULT_TL2_GEMV
    int BL_FAULT_TL1_GEMM, BL_FAULT_TL2_GEMM
    C.bl_lut_status bl_tl1_ternary(const uint8_t *data, int64_t M, int64_t K, int64_t BM, int64_t BK, int64_t bm,
                                   int64_t r0, int64_t r1, int8_t *t)
    C.bl_lut_status bl_tl2_ternary(const uint8_t *data, int64_t M, int64_t K, int64_t BM, int64_t BK, int64_t r0,
                                   int64_t r1, int8_t *t)


_LUT_OPS = ("tl1_build_lut", "tl2_build_lut", "tl1_gemv", "tl2_gemv", "tl1_gemm", "tl2_gemm")


def lut_fault_bits():
    """(op, bit) of each LUT op in the shared fault-injection mask (bl_lut.h), in _LUT_OPS order."""
    return (("tl1_build_lut", BL_FAULT_TL1_BUILD_LUT), ("tl2_build_lut", BL_FAULT_TL2_BUILD_LUT),
            ("tl1_gemv", BL_FAULT_TL1_GEMV), ("tl2_gemv", BL_FAULT_TL2_GEMV),
            ("tl1_gemm", BL_FAULT_TL1_GEMM), ("tl2_gemm", BL_FAULT_TL2_GEMM))


def lut_versions():
    """Every LUT implementation compiled in, per op: tuples (op, version, isa index, description);
    a version without its own kernel for an op (v2's builds) is not listed for it."""
    out = []
    for o, op in enumerate(_LUT_OPS):
        for i in range(bl_lut_impl_count()):
            if bl_lut_impl_fn(i, o) == NULL:
                continue
            out.append((op, bl_lut_impls[i].name.decode(), bl_lut_impls[i].isa, bl_lut_impls[i].desc.decode()))
    return out


def lut_default_version(op, int isa):
    """Version name of the implementation the level's dispatch table holds for op (None: the level
    has no such kernel, as every level but amx for the GEMMs)."""
    cdef int o = _LUT_OPS.index(op)
    cdef const void *f = bl_lut_table_fn(_table(isa), o)
    if f == NULL:
        return None
    for i in range(bl_lut_impl_count()):
        if bl_lut_impl_fn(i, o) == f:
            return bl_lut_impls[i].name.decode()
    raise KernelError(f"the {op} kernel of ISA index {isa} is not a registered LUT version")


cdef _q_rows(q, Py_ssize_t K, str who):
    """q as a C-contiguous int8 (N, K) array; a 1-D (K,) row becomes (1, K)."""
    if not isinstance(q, np.ndarray):
        raise CodecError(f"{who}: q must be a numpy int8 array, got {type(q).__name__}")
    if q.dtype != np.int8:
        raise CodecError(f"{who}: q must have dtype int8 (quantised activations), got {q.dtype}")
    if q.ndim not in (1, 2) or q.shape[q.ndim - 1] != K:
        raise CodecError(f"{who}: q must have shape ({K},) or (N, {K}), got {q.shape}")
    if not q.flags.c_contiguous:
        raise CodecError(f"{who}: q must be C-contiguous, got strides {q.strides}")
    return q.reshape(1, K) if q.ndim == 1 else q


cdef int _tl1_check(Py_ssize_t M, Py_ssize_t K, Py_ssize_t BM, Py_ssize_t BK,
                    Py_ssize_t bm, str who) except -1:
    if bm != 32 and bm != 64:
        raise CodecError(f"{who}: TL1 bm must be 32 or 64, got {bm}")
    if (M <= 0 or K <= 0 or BM <= 0 or BK <= 0 or M % BM or BM % bm or K % BK
            or BK % (256 // bm) or BK > 256):
        raise CodecError(f"{who}: illegal TL1 tiling BM={BM} BK={BK} bm={bm} for (M, K) = ({M}, {K})")
    return 0


cdef int _tl2_check(Py_ssize_t M, Py_ssize_t K, Py_ssize_t BM, Py_ssize_t BK, str who) except -1:
    if (M <= 0 or K < 256 or BM <= 0 or BK <= 0 or M % BM or BM % 32 or BK % 24 or BK > 256
            or (K % BK) % 32):
        raise CodecError(f"{who}: illegal TL2 tiling BM={BM} BK={BK} bm=32 for (M, K) = ({M}, {K})")
    return 0


def tl1_build_lut(q_row, int isa):
    """TL1 LUT of one int8 row (K,), K even -> uint8 (K/2, 32) in byte-plane form."""
    who = "tl1_build_lut"
    cdef const C.bl_isa_kernels *tab = _table(isa)
    if not isinstance(q_row, np.ndarray) or q_row.ndim != 1:
        raise CodecError(f"{who}: q_row must be a 1-D numpy int8 array")
    cdef Py_ssize_t K = q_row.shape[0]
    if K <= 0 or K % 2:
        raise CodecError(f"{who}: K must be a positive even number, got {K}")
    cdef const int8_t[:, ::1] q = _q_rows(q_row, K, who)
    out = np.empty((K // 2, C.BL_LUT_TABLE_BYTES), dtype=np.uint8)
    cdef uint8_t[:, ::1] dst = out
    with nogil:
        tab.tl1_build_lut(&q[0, 0], K, &dst[0, 0])
    return out


def tl2_build_lut(q_row, Py_ssize_t BK, int isa):
    """TL2 LUT of one int8 row (K,) under K-tile BK -> uint8 (three_k/3 + two_k/2, 32)."""
    who = "tl2_build_lut"
    cdef const C.bl_isa_kernels *tab = _table(isa)
    if not isinstance(q_row, np.ndarray) or q_row.ndim != 1:
        raise CodecError(f"{who}: q_row must be a 1-D numpy int8 array")
    cdef Py_ssize_t K = q_row.shape[0]
    _tl2_check(32, K, 32, BK, who)
    cdef const int8_t[:, ::1] q = _q_rows(q_row, K, who)
    cdef Py_ssize_t three_k = (K // BK) * BK
    out = np.empty((three_k // 3 + (K - three_k) // 2, C.BL_LUT_TABLE_BYTES), dtype=np.uint8)
    cdef uint8_t[:, ::1] dst = out
    with nogil:
        tab.tl2_build_lut(&q[0, 0], K, BK, &dst[0, 0])
    return out


cdef inline void _tl1_run(C.bl_tl1_gemv_fn fn, const uint8_t *data, const uint8_t *lut,
                          Py_ssize_t lut_bytes, Py_ssize_t N, Py_ssize_t M, Py_ssize_t K,
                          Py_ssize_t BM, Py_ssize_t BK, Py_ssize_t bm, Py_ssize_t r0,
                          Py_ssize_t r1, int32_t *out, int64_t *status) noexcept nogil:
    cdef Py_ssize_t n
    cdef C.bl_lut_status st
    for n in range(N):
        st = fn(data, lut + n * lut_bytes, M, K, BM, BK, bm, r0, r1, out + n * M)
        if n == 0:  # every row reads the same bytes: report the first row's scan
            status[0] = st.n_bad
            status[1] = st.first_bad_byte


cdef inline void _tl2_run(C.bl_tl2_gemv_fn fn, const uint8_t *data, const uint8_t *lut,
                          Py_ssize_t lut_bytes, Py_ssize_t N, Py_ssize_t M, Py_ssize_t K,
                          Py_ssize_t BM, Py_ssize_t BK, Py_ssize_t r0, Py_ssize_t r1,
                          int32_t *out, int64_t *status) noexcept nogil:
    cdef Py_ssize_t n
    cdef C.bl_lut_status st
    for n in range(N):
        st = fn(data, lut + n * lut_bytes, M, K, BM, BK, r0, r1, out + n * M)
        if n == 0:
            status[0] = st.n_bad
            status[1] = st.first_bad_byte


cdef tuple _lut_status(int64_t[:, ::1] status):
    """(total invalid indices, smallest first byte offset) over the runs' statuses."""
    cdef Py_ssize_t c
    cdef int64_t total = 0, first = -1
    for c in range(status.shape[0]):
        if status[c, 0] > 0:
            total += status[c, 0]
            if first < 0 or status[c, 1] < first:
                first = status[c, 1]
    return total, first


def _tl_blob(data, layout, Py_ssize_t M, Py_ssize_t K, Py_ssize_t BK, who):
    """data as a 1-D uint8 array holding at least the bytes a TL1 / TL2 kernel reads (memory safety
    for direct calls; the public wrappers check the exact blob lengths first)."""
    arr = _as_1d_uint8(data, who)
    if layout == "tl1":
        if arr.shape[0] < M * K // 4:
            raise CodecError(f"{who}: a ({M}, {K}) TL1 tensor needs M*K/4 = {M * K // 4} bytes, got {arr.shape[0]}")
        return arr
    cdef Py_ssize_t three_k = (K // BK) * BK
    cdef Py_ssize_t need = M * three_k // 6 + M * three_k // 24 + M * (K - three_k) // 4
    if arr.shape[0] < need:
        raise CodecError(f"{who}: a ({M}, {K}) TL2 tensor with BK={BK} needs {need} bytes, got {arr.shape[0]}")
    return arr


def _tl_raise_invalid(who, layout, status, Py_ssize_t M, Py_ssize_t K, Py_ssize_t BM, Py_ssize_t BK, Py_ssize_t bm):
    """CodecError naming the count and first position of invalid indices (status: (count, first
    byte) from _lut_status); nothing when there are none."""
    total, first = status
    if not total:
        return
    if layout == "tl1":
        r, k = _lut_twin.tl1_byte_location(first, M, K, _TLTiling(BM, BK, bm))
        raise CodecError(
            f"{who}: TL1 data for a ({M}, {K}) tensor (tiling BM={BM} BK={BK} bm={bm}) holds "
            f"{total} invalid pair index nibble(s) (> 8); first in byte {first} "
            f"(weights of row {r}, columns {k}..{k + 3})")
    part, r, k = _lut_twin.tl2_byte_location(first, M, K, _TLTiling(BM, BK, 32))
    what = ("triple magnitude nibble(s) (> 13) or tail pair index nibble(s) (> 8)")
    span = 6 if part == "triples" else 4
    raise CodecError(
        f"{who}: TL2 data for a ({M}, {K}) tensor (tiling BM={BM} BK={BK} bm=32) holds "
        f"{total} invalid {what}; first in byte {first}, in the {part} part "
        f"(weights of row {r}, columns {k}..{k + span - 1})")


def tl1_gemv(data, q, Py_ssize_t M, Py_ssize_t K, Py_ssize_t BM, Py_ssize_t BK, Py_ssize_t bm,
             int isa, int threads, name=None):
    """Exact int32 sum_k t[r, k] q[n, k] of TL1 data: (M,) for q (K,), (N, M) for q (N, K)."""
    who = _who(name, "tl1_gemv")
    cdef const C.bl_isa_kernels *tab = _table(isa)
    _check_threads(threads)
    _tl1_check(M, K, BM, BK, bm, who)
    arr = _tl_blob(data, "tl1", M, K, BK, who)
    rows = _q_rows(q, K, who)
    cdef Py_ssize_t N = rows.shape[0]
    cdef Py_ssize_t lut_bytes = (K // 2) * C.BL_LUT_TABLE_BYTES
    out = np.empty((N, M), dtype=np.int32)
    if N == 0:
        return out if q.ndim == 2 else out.reshape(M)
    luts = np.empty((N, lut_bytes), dtype=np.uint8)
    cdef const int8_t[:, ::1] qv = rows
    cdef uint8_t[:, ::1] lv = luts
    cdef const uint8_t[::1] src = arr
    cdef int32_t[:, ::1] dst = out
    cdef Py_ssize_t per
    cdef int n_chunks = _chunks(M // bm, threads, &per)
    status_arr = np.zeros((n_chunks, 2), dtype=np.int64)
    cdef int64_t[:, ::1] status = status_arr
    cdef C.bl_tl1_build_lut_fn build = tab.tl1_build_lut
    cdef C.bl_tl1_gemv_fn fn = tab.tl1_gemv
    cdef Py_ssize_t n
    cdef int c
    with nogil:
        for n in prange(N, num_threads=threads, schedule="static"):
            build(&qv[n, 0], K, &lv[n, 0])
        for c in prange(n_chunks, num_threads=threads, schedule="static", chunksize=1):
            _tl1_run(fn, &src[0], &lv[0, 0], lut_bytes, N, M, K, BM, BK, bm,
                     c * per * bm, min(M, (c + 1) * per * bm), &dst[0, 0], &status[c, 0])
    _tl_raise_invalid(who, "tl1", _lut_status(status), M, K, BM, BK, bm)
    return out if q.ndim == 2 else out.reshape(M)


def tl2_gemv(data, q, Py_ssize_t M, Py_ssize_t K, Py_ssize_t BM, Py_ssize_t BK,
             int isa, int threads, name=None):
    """Exact int32 sum_k t[r, k] q[n, k] of TL2 data: (M,) for q (K,), (N, M) for q (N, K)."""
    who = _who(name, "tl2_gemv")
    cdef const C.bl_isa_kernels *tab = _table(isa)
    _check_threads(threads)
    _tl2_check(M, K, BM, BK, who)
    arr = _tl_blob(data, "tl2", M, K, BK, who)
    cdef Py_ssize_t three_k = (K // BK) * BK, two_k = K - three_k
    rows = _q_rows(q, K, who)
    cdef Py_ssize_t N = rows.shape[0]
    cdef Py_ssize_t lut_bytes = (three_k // 3 + two_k // 2) * C.BL_LUT_TABLE_BYTES
    out = np.empty((N, M), dtype=np.int32)
    if N == 0:
        return out if q.ndim == 2 else out.reshape(M)
    luts = np.empty((N, lut_bytes), dtype=np.uint8)
    cdef const int8_t[:, ::1] qv = rows
    cdef uint8_t[:, ::1] lv = luts
    cdef const uint8_t[::1] src = arr
    cdef int32_t[:, ::1] dst = out
    cdef Py_ssize_t per
    cdef int n_chunks = _chunks(M // 32, threads, &per)
    status_arr = np.zeros((n_chunks, 2), dtype=np.int64)
    cdef int64_t[:, ::1] status = status_arr
    cdef C.bl_tl2_build_lut_fn build = tab.tl2_build_lut
    cdef C.bl_tl2_gemv_fn fn = tab.tl2_gemv
    cdef Py_ssize_t n
    cdef int c
    with nogil:
        for n in prange(N, num_threads=threads, schedule="static"):
            build(&qv[n, 0], K, BK, &lv[n, 0])
        for c in prange(n_chunks, num_threads=threads, schedule="static", chunksize=1):
            _tl2_run(fn, &src[0], &lv[0, 0], lut_bytes, N, M, K, BM, BK,
                     c * per * 32, min(M, (c + 1) * per * 32), &dst[0, 0], &status[c, 0])
    _tl_raise_invalid(who, "tl2", _lut_status(status), M, K, BM, BK, 32)
    return out if q.ndim == 2 else out.reshape(M)


def tl_gemm(layout, data, q, Py_ssize_t M, Py_ssize_t K, Py_ssize_t BM, Py_ssize_t BK, Py_ssize_t bm,
            int isa, int threads, name=None):
    """Exact int32 (N, M) sum_k t[r, k] q[n, k] of TL1 / TL2 data for q (N, K) by the level's GEMM
    (bl_lut.h); KernelError where the level has none."""
    who = _who(name, f"{layout}_gemm")
    cdef const C.bl_isa_kernels *tab = _table(isa)
    _check_threads(threads)
    if layout == "tl1":
        _tl1_check(M, K, BM, BK, bm, who)
    else:
        _tl2_check(M, K, BM, BK, who)
        bm = 32
    if K % 64:
        raise CodecError(f"{who}: the TL GEMMs need K % 64 == 0, got K = {K}")
    cdef C.bl_tl1_gemm_fn g1 = tab.tl1_gemm
    cdef C.bl_tl2_gemm_fn g2 = tab.tl2_gemm
    if (layout == "tl1" and g1 == NULL) or (layout == "tl2" and g2 == NULL):
        raise KernelError(f"{who}: ISA level {C.bl_isa_name(isa).decode()} has no {layout.upper()} GEMM "
                          f"(only amx has one; the engine runs the GEMV per token there)")
    arr = _tl_blob(data, layout, M, K, BK, who)
    rows = _q_rows(q, K, who)
    cdef Py_ssize_t N = rows.shape[0]
    out = np.zeros((N, M), dtype=np.int32)
    if N == 0:
        return out
    sums = rows.sum(axis=1, dtype=np.int32)
    cdef const int8_t[:, ::1] qv = rows
    cdef const int32_t[::1] sv = sums
    cdef const uint8_t[::1] src = arr
    cdef int32_t[:, ::1] dst = out
    cdef Py_ssize_t per
    cdef int n_chunks = _chunks(M // bm, threads, &per)
    status_arr = np.zeros((n_chunks, 2), dtype=np.int64)
    cdef int64_t[:, ::1] status = status_arr
    cdef int c
    cdef C.bl_lut_status st
    cdef int is_tl1 = layout == "tl1"
    with nogil:
        for c in prange(n_chunks, num_threads=threads, schedule="static", chunksize=1):
            if is_tl1:
                st = g1(&src[0], &qv[0, 0], &sv[0], N, M, K, BM, BK, bm, c * per * bm,
                        min(M, (c + 1) * per * bm), M, &dst[0, 0])
            else:
                st = g2(&src[0], &qv[0, 0], &sv[0], N, M, K, BM, BK, c * per * 32,
                        min(M, (c + 1) * per * 32), M, &dst[0, 0])
            status[c, 0] = st.n_bad
            status[c, 1] = st.first_bad_byte
    _tl_raise_invalid(who, layout, _lut_status(status), M, K, BM, BK, bm)
    return out


def tl_ternary(data, layout, Py_ssize_t M, Py_ssize_t K, Py_ssize_t BM, Py_ssize_t BK, Py_ssize_t bm, name=None):
    """The ternary values of a TL1 / TL2 tensor: int8 (M, K). CodecError on invalid indices (the
    GEMVs' message). The tiling is checked by the Python wrapper."""
    who = _who(name, f"{layout}_ternary")
    arr = _tl_blob(data, layout, M, K, BK, who)
    out = np.empty((M, K), dtype=np.int8)
    cdef const uint8_t[::1] dv = arr
    cdef int8_t[:, ::1] ov = out
    cdef C.bl_lut_status st
    cdef bint tl1 = layout == "tl1"
    with nogil:
        if tl1:
            st = bl_tl1_ternary(&dv[0], M, K, BM, BK, bm, 0, M, &ov[0, 0])
        else:
            st = bl_tl2_ternary(&dv[0], M, K, BM, BK, 0, M, &ov[0, 0])
    _tl_raise_invalid(who, layout, (st.n_bad, st.first_bad_byte), M, K, BM, BK, bm)
    return out
