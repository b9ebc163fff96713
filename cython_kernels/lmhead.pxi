# lmhead.pxi — the lm_head kernels of the engine (src/engine_float.h lm_rows, lm_q8, lm_q6k) as
# standalone calls, for their tests and for `bitnet-lab bench --kernels` (included by _kernels.pyx).
# The engine runs the same functions inside bl_forward; here the vocabulary rows are split into
# `threads` contiguous runs (prange), as the engine splits them, so any count gives the same bits.
# Shapes are checked by bitnet_lab.kernels.lmhead; this file checks what memory safety needs.

cdef extern from "engine_float.h" nogil:
    ctypedef void (*bl_lm_q8_fn)(const uint8_t *W, int64_t row_bytes, int64_t K, int64_t r0, int64_t r1,
                                 const int8_t *qx, const float *dx, const int32_t *qsum4, int64_t N, float *out,
                                 int64_t ldo, int alone)
    ctypedef void (*bl_lm_q6k_fn)(const uint8_t *W, int64_t row_bytes, int64_t K, int64_t r0, int64_t r1,
                                  const int8_t *q8, const float *d8, const int16_t *bsums, int64_t N, float *out,
                                  int64_t ldo)
    ctypedef void (*bl_lm_rows_fn)(int type, const uint8_t *W, int64_t row_bytes, int64_t K, int64_t r0,
                                   int64_t r1, const float *h, int64_t N, float *out, int64_t ldo)
    ctypedef struct bl_float_kernels:
        const char *name
        bl_lm_rows_fn lm_rows
        bl_lm_q8_fn lm_q8
        bl_lm_q6k_fn lm_q6k
    const bl_float_kernels *bl_float_table(int isa)


cdef const bl_float_kernels *_float_table(int isa) except NULL:
    cdef const bl_float_kernels *fk = bl_float_table(isa)
    if fk == NULL:
        raise CodecError(f"no float kernels for ISA level {isa} in this build / on this CPU")
    return fk


def lm_q6k_rows(const uint8_t[:, ::1] W, Py_ssize_t K, const int8_t[:, ::1] q8, const float[:, ::1] d8,
                const int16_t[:, ::1] bsums, float[:, ::1] out, int isa, int threads):
    """out (N, V) = the Q6_K lm_head of W (V, K/256·210 bytes) against Q8_K rows q8 (N, K),
    d8 (N, K/256), bsums (N, K/16)."""
    cdef Py_ssize_t V = W.shape[0], N = q8.shape[0], rows_per_chunk
    if (K % 256 or W.shape[1] != K // 256 * 210 or q8.shape[1] != K or d8.shape[0] != N or d8.shape[1] != K // 256
            or bsums.shape[0] != N or bsums.shape[1] != K // 16 or out.shape[0] != N or out.shape[1] != V):
        raise ValueError("lm_q6k_rows: inconsistent shapes")
    _check_threads(threads)
    cdef bl_lm_q6k_fn fn = _float_table(isa).lm_q6k
    cdef int n_chunks = _chunks(V, threads, &rows_per_chunk)
    cdef int c
    if N == 0 or V == 0:
        return
    for c in prange(n_chunks, nogil=True, num_threads=threads, schedule="static", chunksize=1):
        fn(&W[0, 0], W.shape[1], K, c * rows_per_chunk, min(V, (c + 1) * rows_per_chunk), &q8[0, 0], &d8[0, 0],
           &bsums[0, 0], N, &out[0, 0], V)


def lm_q8_0_rows(const uint8_t[:, ::1] W, Py_ssize_t K, const int8_t[:, ::1] qx, const float[:, ::1] dx,
                 const int32_t[:, ::1] qsum4, float[:, ::1] out, int isa, int threads):
    """out (N, V) = the Q8_0 lm_head of W (V, K/32·34 bytes) against Q8_0 rows qx (N, K),
    dx (N, K/32) (fp16 values), qsum4 (N, K/4) = 128·Σ of each quad of qx."""
    cdef Py_ssize_t V = W.shape[0], N = qx.shape[0], rows_per_chunk
    if (K % 32 or W.shape[1] != K // 32 * 34 or qx.shape[1] != K or dx.shape[0] != N or dx.shape[1] != K // 32
            or qsum4.shape[0] != N or qsum4.shape[1] != K // 4 or out.shape[0] != N or out.shape[1] != V):
        raise ValueError("lm_q8_0_rows: inconsistent shapes")
    _check_threads(threads)
    cdef bl_lm_q8_fn fn = _float_table(isa).lm_q8
    cdef int n_chunks = _chunks(V, threads, &rows_per_chunk)
    cdef int c
    cdef int alone = threads == 1
    if N == 0 or V == 0:
        return
    for c in prange(n_chunks, nogil=True, num_threads=threads, schedule="static", chunksize=1):
        fn(&W[0, 0], W.shape[1], K, c * rows_per_chunk, min(V, (c + 1) * rows_per_chunk), &qx[0, 0], &dx[0, 0],
           &qsum4[0, 0], N, &out[0, 0], V, alone)


def lm_float_rows(int ftype, const uint8_t[:, ::1] W, Py_ssize_t K, const float[:, ::1] h, float[:, ::1] out, int isa,
                  int threads):
    """out (N, V) = the F32 (ftype 0) / F16 (1) / Q8_0 (2, exact q·d values) lm_head rows of W (V, row bytes)
    against f32 hidden rows h (N, K), in the canonical 32-lane f32 order (engine_float.h). ftype 4: F16 rows
    against hidden rows of fp16 values (the caller guarantees it; the kernels may fuse the exact products)."""
    cdef Py_ssize_t V = W.shape[0], N = h.shape[0], rows_per_chunk
    cdef Py_ssize_t row_bytes = 4 * K if ftype == 0 else 2 * K if ftype in (1, 4) else K // 32 * 34
    if (ftype < 0 or ftype > 4 or ftype == 3 or (ftype == 2 and K % 32) or W.shape[1] != row_bytes or h.shape[1] != K
            or out.shape[0] != N or out.shape[1] != V):
        raise ValueError("lm_float_rows: inconsistent shapes or type")
    _check_threads(threads)
    cdef bl_lm_rows_fn fn = _float_table(isa).lm_rows
    cdef int n_chunks = _chunks(V, threads, &rows_per_chunk)
    cdef int c
    if N == 0 or V == 0:
        return
    for c in prange(n_chunks, nogil=True, num_threads=threads, schedule="static", chunksize=1):
        fn(ftype, &W[0, 0], row_bytes, K, c * rows_per_chunk, min(V, (c + 1) * rows_per_chunk), &h[0, 0], N,
           &out[0, 0], V)
