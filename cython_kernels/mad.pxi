# mad.pxi — Cython wrappers of the MAD kernel family (src/bl_mad.h), included by _kernels.pyx.
#
# Public entry points are in bitnet_lab.kernels.mad (re-exported by bitnet_lab.kernels); this
# file owns what must happen in compiled code: validation of every array at the boundary
# (dtype, shape, contiguity, byte counts — KernelError/CodecError with the numbers), choosing
# the C function of one registered version, releasing the GIL and splitting weight rows (or
# activation rows for quantize_act) across OpenMP threads with a static schedule. The kernels
# are integer-exact and rows are independent, so results do not depend on the split.

from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t

from bitnet_lab.errors import KernelError


cdef extern from "bl_mad.h" nogil:
    ctypedef C.bl_status (*bl_quantize_act_fn)(const float *x, int8_t *q, float *s_x, int32_t *sum_q,
                                               int64_t K, int64_t r0, int64_t r1, int rounding)
    ctypedef void (*bl_gemv_fn)(const uint8_t *w, const int8_t *q, int32_t sum_q, int32_t *out,
                                int64_t K, int64_t r0, int64_t r1)
    ctypedef void (*bl_gemm_fn)(const uint8_t *w, const int8_t *Q, const int32_t *sum_q, int32_t *out,
                                int64_t N, int64_t K, int64_t ld_out, int64_t r0, int64_t r1)
    ctypedef void (*bl_bgemv_fn)(const uint8_t *w, const int8_t *q, const int32_t *sum_qb, int32_t *out,
                                 int64_t K, int64_t r0, int64_t r1)
    ctypedef void (*bl_bgemm_fn)(const uint8_t *w, const int8_t *Q, const int32_t *sum_qb, int32_t *out,
                                 int64_t N, int64_t K, int64_t ld_out, int64_t r0, int64_t r1)

    ctypedef struct bl_mad_kernels:
        bl_quantize_act_fn quantize_act
        bl_gemv_fn i2s_gemv
        bl_gemm_fn i2s_gemm
        bl_gemv_fn tq2_gemv
        bl_gemv_fn tq1_gemv
        bl_gemm_fn tq2_gemm
        bl_gemm_fn tq1_gemm
        bl_gemv_fn i2s_x4_gemv
        bl_gemm_fn i2s_x4_gemm
        bl_bgemv_fn i2s_bgemv
        bl_bgemm_fn i2s_bgemm
        bl_bgemv_fn tq2_bgemv
        bl_bgemm_fn tq2_bgemm
        bl_bgemv_fn tq1_bgemv
        bl_bgemm_fn tq1_bgemm
        bl_gemv_fn tq1_x16_gemv
        bl_gemm_fn tq1_x16_gemm

    ctypedef union bl_mad_fn_union:
        bl_quantize_act_fn act
        bl_gemv_fn gemv
        bl_gemm_fn gemm
        bl_bgemv_fn bgemv
        bl_bgemm_fn bgemm

    ctypedef struct bl_mad_version:
        const char *name
        int op
        int isa
        const char *description
        bl_mad_fn_union fn

    int BL_OP_QUANTIZE_ACT, BL_OP_I2S_GEMV, BL_OP_I2S_GEMM, BL_OP_TQ2_GEMV, BL_OP_TQ1_GEMV
    int BL_OP_TQ2_GEMM, BL_OP_TQ1_GEMM, BL_OP_I2S_X4_GEMV, BL_OP_I2S_X4_GEMM, BL_OP_COUNT
    int BL_OP_I2S_BGEMV, BL_OP_I2S_BGEMM, BL_OP_TQ2_BGEMV, BL_OP_TQ2_BGEMM, BL_OP_TQ1_BGEMV, BL_OP_TQ1_BGEMM
    int BL_OP_TQ1_X16_GEMV, BL_OP_TQ1_X16_GEMM
    int BL_X4_MAX_K, BL_X16_MAX_K
    int BL_ROUND_HALF_EVEN, BL_ROUND_HALF_AWAY

    const char *bl_mad_op_name(int op)
    int bl_mad_version_count()
    const bl_mad_version *bl_mad_version_at(int i)
    const bl_mad_kernels *bl_mad_defaults(int isa)
    void bl_mad_set_fault(int mask)
    int bl_mad_get_fault()
    int32_t bl_sum_i8(const int8_t *q, int64_t K)
    void bl_block_sums_i8(const int8_t *q, int64_t K, int32_t *sums)
    void bl_i2s_x4_interleave(const uint8_t *src, uint8_t *dst, int64_t M, int64_t K)
    void bl_i2s_x4_rows(const uint8_t *w, uint8_t *dst, int64_t K, int64_t r0, int64_t r1)
    void bl_tq2_to_i2s(const uint8_t *src, uint8_t *dst, int64_t M, int64_t K)
    void bl_tq1_x16_interleave(const uint8_t *src, uint8_t *dst, int64_t M, int64_t K)
    void bl_tq1_x16_pack(const int8_t *t, uint8_t *dst, int64_t M, int64_t K)
    void bl_tq1_x16_rows(const uint8_t *w, uint8_t *dst, int64_t M, int64_t K, int64_t r0, int64_t r1)


# ---- registry ------------------------------------------------------------------------------

def mad_op_names():
    """Op names in the C enum's order (index = op id)."""
    return tuple(bl_mad_op_name(i).decode() for i in range(BL_OP_COUNT))


def mad_versions():
    """Every version compiled in: tuples (index, name, op name, isa index, description)."""
    out = []
    cdef const bl_mad_version *v
    for i in range(bl_mad_version_count()):
        v = bl_mad_version_at(i)
        out.append((i, v.name.decode(), bl_mad_op_name(v.op).decode(), v.isa, v.description.decode()))
    return out


cdef const void *_default_fn(int op, int isa):
    cdef const bl_mad_kernels *d = bl_mad_defaults(isa)
    if d == NULL:
        return NULL
    if op == BL_OP_QUANTIZE_ACT: return <const void *>d.quantize_act
    if op == BL_OP_I2S_GEMV: return <const void *>d.i2s_gemv
    if op == BL_OP_I2S_GEMM: return <const void *>d.i2s_gemm
    if op == BL_OP_TQ2_GEMV: return <const void *>d.tq2_gemv
    if op == BL_OP_TQ1_GEMV: return <const void *>d.tq1_gemv
    if op == BL_OP_TQ2_GEMM: return <const void *>d.tq2_gemm
    if op == BL_OP_TQ1_GEMM: return <const void *>d.tq1_gemm
    if op == BL_OP_I2S_X4_GEMV: return <const void *>d.i2s_x4_gemv
    if op == BL_OP_I2S_X4_GEMM: return <const void *>d.i2s_x4_gemm
    if op == BL_OP_I2S_BGEMV: return <const void *>d.i2s_bgemv
    if op == BL_OP_I2S_BGEMM: return <const void *>d.i2s_bgemm
    if op == BL_OP_TQ2_BGEMV: return <const void *>d.tq2_bgemv
    if op == BL_OP_TQ2_BGEMM: return <const void *>d.tq2_bgemm
    if op == BL_OP_TQ1_BGEMV: return <const void *>d.tq1_bgemv
    if op == BL_OP_TQ1_BGEMM: return <const void *>d.tq1_bgemm
    if op == BL_OP_TQ1_X16_GEMV: return <const void *>d.tq1_x16_gemv
    if op == BL_OP_TQ1_X16_GEMM: return <const void *>d.tq1_x16_gemm
    return NULL


cdef const void *_version_fn(const bl_mad_version *v):
    if v.op == BL_OP_QUANTIZE_ACT: return <const void *>v.fn.act
    if (v.op == BL_OP_I2S_GEMV or v.op == BL_OP_TQ2_GEMV or v.op == BL_OP_TQ1_GEMV or v.op == BL_OP_I2S_X4_GEMV
            or v.op == BL_OP_TQ1_X16_GEMV):
        return <const void *>v.fn.gemv
    if v.op == BL_OP_I2S_BGEMV or v.op == BL_OP_TQ2_BGEMV or v.op == BL_OP_TQ1_BGEMV:
        return <const void *>v.fn.bgemv
    if v.op == BL_OP_I2S_BGEMM or v.op == BL_OP_TQ2_BGEMM or v.op == BL_OP_TQ1_BGEMM:
        return <const void *>v.fn.bgemm
    return <const void *>v.fn.gemm


def mad_default_version(int op, int isa):
    """Index of the version the level's default table (bl_isa_table(isa)->mad) uses for op."""
    cdef const void *f = _default_fn(op, isa)
    cdef const bl_mad_version *v
    for i in range(bl_mad_version_count()):
        v = bl_mad_version_at(i)
        if v.op == op and _version_fn(v) == f:
            return i
    raise KernelError(f"no registered version implements the default {bl_mad_op_name(op).decode()} "
                      f"of ISA level {isa}")


def set_fault(int mask):
    """Fault-injection mask: bit op set -> that op deliberately wrong (bl_mad.h)."""
    bl_mad_set_fault(mask)


def get_fault():
    return bl_mad_get_fault()


cdef const bl_mad_version *_version(int vi, int op) except NULL:
    cdef const bl_mad_version *v = bl_mad_version_at(vi)
    if v == NULL or v.op != op:
        raise KernelError(f"version index {vi} is not a {bl_mad_op_name(op).decode()} kernel")
    if not (C.bl_isa_built(v.isa) and C.bl_isa_supported(v.isa)):
        raise KernelError(f"{bl_mad_op_name(op).decode()} version {v.name.decode()!r} needs ISA level "
                          f"{C.bl_isa_name(v.isa).decode()!r}, which this CPU/build cannot run")
    return v


# ---- shared argument checks ----------------------------------------------------------------

cdef int _threads_ok(int threads) except -1:
    if threads < 1:
        raise KernelError(f"threads must be >= 1, got {threads}")
    return 0


cdef Py_ssize_t _run_length(Py_ssize_t n, int threads, Py_ssize_t align):
    """Rows per thread run: ceil(n / threads) rounded up to a multiple of `align` (the kernels'
    row unroll), so runs do not split an unrolled group needlessly."""
    cdef Py_ssize_t per = (n + threads - 1) // threads
    return ((per + align - 1) // align) * align


cdef _packed(w, Py_ssize_t need, Py_ssize_t alt, str who, str what):
    """w as 1-D C-contiguous uint8 of exactly `need` bytes (or `alt` when alt >= 0)."""
    if isinstance(w, (bytes, bytearray, memoryview)):
        w = np.frombuffer(w, dtype=np.uint8)
    if not isinstance(w, np.ndarray):
        raise CodecError(f"{who}: packed weights must be a numpy uint8 array or bytes, got {type(w).__name__}")
    if w.dtype != np.uint8:
        raise CodecError(f"{who}: packed weights must have dtype uint8, got {w.dtype}")
    if w.ndim != 1:
        raise CodecError(f"{who}: packed weights must be 1-D, got shape {w.shape}")
    if not w.flags.c_contiguous:
        raise CodecError(f"{who}: packed weights must be C-contiguous, got strides {w.strides}")
    if w.shape[0] != need and not (alt >= 0 and w.shape[0] == alt):
        extra = f" (or {alt} with the 32-byte scale tail)" if alt >= 0 else ""
        raise CodecError(f"{who}: {what} needs {need} bytes{extra}, got {w.shape[0]}")
    return w


cdef tuple _layout(int op, Py_ssize_t M, Py_ssize_t K, str who):
    """(bytes needed, alternative byte count or -1, description) of the weights of `op`."""
    if M < 1 or K < 1:
        raise CodecError(f"{who}: M and K must be >= 1, got M={M}, K={K}")
    if K > (1 << 22):  # int32 accumulators: |Σ c·q| ≤ 256·K must stay below 2^31 (bl_mad.h)
        raise KernelError(f"{who}: K = {K} exceeds the kernels' limit of 2^22 = {1 << 22}")
    if op == BL_OP_I2S_BGEMV or op == BL_OP_I2S_BGEMM:
        if K % 256:
            raise CodecError(f"{who}: per-block products need K % 256 == 0 (256-weight blocks), got K={K}")
        return M * (K // 4), M * (K // 4) + 32, f"a ({M}, {K}) I2_S tensor (M*K/4)"
    if op == BL_OP_I2S_GEMV or op == BL_OP_I2S_GEMM:
        if K % 128:
            raise CodecError(f"{who}: I2_S needs K % 128 == 0 (128-weight blocks per row), got K={K}")
        return M * (K // 4), M * (K // 4) + 32, f"a ({M}, {K}) I2_S tensor (M*K/4)"
    if op == BL_OP_I2S_X4_GEMV or op == BL_OP_I2S_X4_GEMM:
        if K % 128 or K > BL_X4_MAX_K:
            raise CodecError(f"{who}: the I2_S x4 layout needs K % 128 == 0 and K <= {BL_X4_MAX_K}, got K={K}")
        return M * (K // 4), -1, f"a ({M}, {K}) I2_S x4 tensor (M*K/4)"
    if op == BL_OP_TQ1_X16_GEMV or op == BL_OP_TQ1_X16_GEMM:
        if K % 256 or K > BL_X16_MAX_K:
            raise CodecError(f"{who}: the TQ1_0 x16 layout needs K % 256 == 0 and K <= {BL_X16_MAX_K}, got K={K}")
        return M * (K // 256) * 52, -1, f"a ({M}, {K}) TQ1_0 x16 tensor (52 bytes per 256 weights)"
    if K % 256:
        raise CodecError(f"{who}: TQ1_0/TQ2_0 need K % 256 == 0 (256-weight blocks per row), got K={K}")
    if op == BL_OP_TQ2_GEMV or op == BL_OP_TQ2_GEMM or op == BL_OP_TQ2_BGEMV or op == BL_OP_TQ2_BGEMM:
        return M * (K // 256) * 66, -1, f"a ({M}, {K}) TQ2_0 tensor (66 bytes per 256 weights)"
    return M * (K // 256) * 54, -1, f"a ({M}, {K}) TQ1_0 tensor (54 bytes per 256 weights)"


cdef _act_array(q, int ndim, Py_ssize_t K, str who):
    shape = "(K,)" if ndim == 1 else "(N, K)"
    if not isinstance(q, np.ndarray):
        raise KernelError(f"{who}: activations must be a numpy int8 array {shape}, got {type(q).__name__}")
    if q.dtype != np.int8:
        raise KernelError(f"{who}: activations must have dtype int8, got {q.dtype}")
    if q.ndim != ndim or q.shape[ndim - 1] != K:
        raise KernelError(f"{who}: activations must have shape {shape} with K = {K}, got {q.shape}")
    if ndim == 2 and q.shape[0] < 1:
        raise KernelError(f"{who}: activations have no rows, shape {q.shape}")
    if not q.flags.c_contiguous:
        raise KernelError(f"{who}: activations must be C-contiguous, got strides {q.strides}")
    return q


# ---- quantize_act ----------------------------------------------------------------------------

def quantize_act(x, int rounding, int vi, int threads):
    """float32 (N, K) -> (q int8 (N, K), s_x float32 (N,), sum_q int32 (N,)). See bl_mad.h."""
    who = "quantize_act"
    cdef const bl_mad_version *v = _version(vi, BL_OP_QUANTIZE_ACT)
    _threads_ok(threads)
    if rounding != BL_ROUND_HALF_EVEN and rounding != BL_ROUND_HALF_AWAY:
        raise KernelError(f"{who}: unknown rounding code {rounding}")
    if not isinstance(x, np.ndarray):
        raise KernelError(f"{who}: x must be a numpy float32 array (N, K), got {type(x).__name__}")
    if x.dtype != np.float32:
        raise KernelError(f"{who}: x must have dtype float32, got {x.dtype} (convert explicitly)")
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise KernelError(f"{who}: x must be 2-D (N, K) with N, K >= 1, got shape {x.shape}")
    if not x.flags.c_contiguous:
        raise KernelError(f"{who}: x must be C-contiguous, got strides {x.strides}")
    cdef Py_ssize_t N = x.shape[0], K = x.shape[1]
    q_arr = np.empty((N, K), dtype=np.int8)
    s_arr = np.empty(N, dtype=np.float32)
    sum_arr = np.empty(N, dtype=np.int32)
    cdef const float[:, ::1] xv = x
    cdef int8_t[:, ::1] qv = q_arr
    cdef float[::1] sv = s_arr
    cdef int32_t[::1] sumv = sum_arr
    cdef Py_ssize_t per = _run_length(N, threads, 1)
    cdef Py_ssize_t n_runs = (N + per - 1) // per
    bad_arr = np.zeros((n_runs, 2), dtype=np.int64)
    cdef int64_t[:, ::1] bad = bad_arr
    cdef bl_quantize_act_fn fn = v.fn.act
    cdef Py_ssize_t c
    cdef C.bl_status st
    with nogil:
        for c in prange(n_runs, num_threads=threads, schedule="static", chunksize=1):
            st = fn(&xv[0, 0], &qv[0, 0], &sv[0], &sumv[0], K, c * per, min(N, (c + 1) * per), rounding)
            bad[c, 0] = st.n_bad
            bad[c, 1] = st.first_bad
    n_bad = int(bad_arr[:, 0].sum())
    if n_bad:
        first = int(bad_arr[bad_arr[:, 0] > 0, 1][0])  # runs are in row order
        raise KernelError(f"{who}: {n_bad} of {N} activation rows hold NaN or inf (first: row {first}); "
                          f"per-token absmax quantisation is undefined for them")
    return q_arr, s_arr, sum_arr


# ---- GEMV / GEMM -----------------------------------------------------------------------------

def gemv(int vi, w, q, Py_ssize_t M, Py_ssize_t K, int threads):
    """int32 (M,) = Σ_k t[r, k]·q[k] for the packed tensor w (format = the version's op)."""
    cdef const bl_mad_version *v = bl_mad_version_at(vi)
    if v == NULL or not (v.op == BL_OP_I2S_GEMV or v.op == BL_OP_TQ2_GEMV or v.op == BL_OP_TQ1_GEMV
                         or v.op == BL_OP_I2S_X4_GEMV or v.op == BL_OP_TQ1_X16_GEMV):
        raise KernelError(f"version index {vi} is not a GEMV kernel")
    v = _version(vi, v.op)
    who = bl_mad_op_name(v.op).decode()
    _threads_ok(threads)
    need, alt, what = _layout(v.op, M, K, who)
    w = _packed(w, need, alt, who, what)
    q = _act_array(q, 1, K, who)
    out = np.empty(M, dtype=np.int32)
    cdef const uint8_t[::1] wv = w
    cdef const int8_t[::1] qv = q
    cdef int32_t[::1] ov = out
    cdef int32_t sum_q = bl_sum_i8(&qv[0], K)
    cdef Py_ssize_t per = _run_length(M, threads, 16)  # x4 / x16: ranges start on a group (bl_mad.h)
    cdef Py_ssize_t n_runs = (M + per - 1) // per
    cdef bl_gemv_fn fn = v.fn.gemv
    cdef Py_ssize_t c
    with nogil:
        for c in prange(n_runs, num_threads=threads, schedule="static", chunksize=1):
            fn(&wv[0], &qv[0], sum_q, &ov[0], K, c * per, min(M, (c + 1) * per))
    return out


def gemm(int vi, w, Q, Py_ssize_t M, Py_ssize_t K, int threads):
    """int32 (N, M) = Σ_k t[r, k]·Q[n, k] for the packed tensor w (format = the version's op)."""
    cdef const bl_mad_version *v = bl_mad_version_at(vi)
    if v == NULL or not (v.op == BL_OP_I2S_GEMM or v.op == BL_OP_TQ2_GEMM or v.op == BL_OP_TQ1_GEMM
                         or v.op == BL_OP_I2S_X4_GEMM or v.op == BL_OP_TQ1_X16_GEMM):
        raise KernelError(f"version index {vi} is not a GEMM kernel")
    v = _version(vi, v.op)
    who = bl_mad_op_name(v.op).decode()
    _threads_ok(threads)
    need, alt, what = _layout(v.op, M, K, who)
    w = _packed(w, need, alt, who, what)
    Q = _act_array(Q, 2, K, who)
    cdef Py_ssize_t N = Q.shape[0]
    out = np.empty((N, M), dtype=np.int32)
    sums = np.empty(N, dtype=np.int32)
    cdef const uint8_t[::1] wv = w
    cdef const int8_t[:, ::1] Qv = Q
    cdef int32_t[:, ::1] ov = out
    cdef int32_t[::1] sv = sums
    cdef Py_ssize_t n
    for n in range(N):
        sv[n] = bl_sum_i8(&Qv[n, 0], K)
    # BL_GEMM_PANEL rows per decoded panel; x16: ranges start on a group
    cdef Py_ssize_t per = _run_length(M, threads, 16 if v.op == BL_OP_TQ1_X16_GEMM else 8)
    cdef Py_ssize_t n_runs = (M + per - 1) // per
    cdef bl_gemm_fn fn = v.fn.gemm
    cdef Py_ssize_t c
    with nogil:
        for c in prange(n_runs, num_threads=threads, schedule="static", chunksize=1):
            fn(&wv[0], &Qv[0, 0], &sv[0], &ov[0, 0], N, K, M, c * per, min(M, (c + 1) * per))
    return out


# ---- per-block GEMV / GEMM (bl_mad.h "per-block products") --------------------------------------

def block_sums(q):
    """int32 (N, K/256): Σ of each 256-block of each row of int8 q (N, K) (the kernels' sum_qb)."""
    q = _act_array(q, 2, q.shape[1] if isinstance(q, np.ndarray) and q.ndim == 2 else -1, "block_sums")
    cdef Py_ssize_t N = q.shape[0], K = q.shape[1], n
    if K % 256:
        raise KernelError(f"block_sums: K % 256 must be 0, got K={K}")
    out = np.empty((N, K // 256), dtype=np.int32)
    cdef const int8_t[:, ::1] qv = q
    cdef int32_t[:, ::1] ov = out
    for n in range(N):
        bl_block_sums_i8(&qv[n, 0], K, &ov[n, 0])
    return out


def block_gemm(int vi, w, Q, Py_ssize_t M, Py_ssize_t K, int threads):
    """int32 (N, M, K/256): per-block Σ t·q of every weight row and activation row of int8 Q
    (N, K) (a GEMV version runs each row of Q on its own; a GEMM version all rows at once)."""
    cdef const bl_mad_version *v = bl_mad_version_at(vi)
    if v == NULL or not (v.op == BL_OP_I2S_BGEMV or v.op == BL_OP_TQ2_BGEMV or v.op == BL_OP_TQ1_BGEMV
                         or v.op == BL_OP_I2S_BGEMM or v.op == BL_OP_TQ2_BGEMM or v.op == BL_OP_TQ1_BGEMM):
        raise KernelError(f"version index {vi} is not a per-block kernel")
    v = _version(vi, v.op)
    who = bl_mad_op_name(v.op).decode()
    _threads_ok(threads)
    need, alt, what = _layout(v.op, M, K, who)
    w = _packed(w, need, alt, who, what)
    Q = _act_array(Q, 2, K, who)
    cdef bint is_gemv = v.op == BL_OP_I2S_BGEMV or v.op == BL_OP_TQ2_BGEMV or v.op == BL_OP_TQ1_BGEMV
    cdef Py_ssize_t N = Q.shape[0], nb = K // 256
    sums = block_sums(Q)
    out = np.empty((N, M, nb), dtype=np.int32)
    cdef const uint8_t[::1] wv = w
    cdef const int8_t[:, ::1] Qv = Q
    cdef const int32_t[:, ::1] sv = sums
    cdef int32_t[:, :, ::1] ov = out
    cdef Py_ssize_t per = _run_length(M, threads, 8)  # BL_GEMM_PANEL rows per decoded panel
    cdef Py_ssize_t n_runs = (M + per - 1) // per
    cdef bl_bgemv_fn fv = v.fn.bgemv
    cdef bl_bgemm_fn fm = v.fn.bgemm
    cdef Py_ssize_t c, n, r0
    with nogil:
        for c in prange(n_runs, num_threads=threads, schedule="static", chunksize=1):
            r0 = c * per
            if is_gemv:
                for n in range(N):
                    fv(&wv[0], &Qv[n, 0], &sv[n, 0], &ov[n, r0, 0], K, r0, min(M, r0 + per))
            else:
                fm(&wv[0], &Qv[0, 0], &sv[0, 0], &ov[0, r0, 0], N, K, M * nb, r0, min(M, r0 + per))
    return out


# ---- the I2_S x4 layout ----------------------------------------------------------------------

def i2s_x4_interleave(src, Py_ssize_t M, Py_ssize_t K, out=None):
    """Row-major I2_S bytes (M*K/4, or + 32 with the scale tail, ignored) -> the x4 order (bl_mad.h,
    "The I2_S x4 layout"), into ``out`` (1-D uint8 of M*K/4 bytes, not overlapping src) or a new
    array."""
    who = "i2s_x4_interleave"
    need, alt, what = _layout(BL_OP_I2S_GEMV, M, K, who)
    if K > BL_X4_MAX_K:
        raise CodecError(f"{who}: the I2_S x4 layout needs K <= {BL_X4_MAX_K}, got K={K}")
    src = _packed(src, need, alt, who, what)
    if out is None:
        out = np.empty(need, dtype=np.uint8)
    elif not (isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.ndim == 1 and out.shape[0] == need
              and out.flags.c_contiguous and out.flags.writeable):
        raise CodecError(f"{who}: out must be a writeable contiguous 1-D uint8 array of {need} bytes")
    elif np.shares_memory(out, src):
        raise CodecError(f"{who}: out must not overlap the source")
    cdef const uint8_t[::1] sv = src
    cdef uint8_t[::1] ov = out
    with nogil:
        bl_i2s_x4_interleave(&sv[0], &ov[0], M, K)
    return out


def i2s_x4_rowmajor(w, Py_ssize_t M, Py_ssize_t K):
    """The inverse of i2s_x4_interleave: x4 bytes -> a new row-major I2_S uint8 array."""
    who = "i2s_x4_rowmajor"
    need, alt, what = _layout(BL_OP_I2S_X4_GEMV, M, K, who)
    w = _packed(w, need, alt, who, what)
    out = np.empty(need, dtype=np.uint8)
    cdef const uint8_t[::1] wv = w
    cdef uint8_t[::1] ov = out
    with nogil:
        bl_i2s_x4_rows(&wv[0], &ov[0], K, 0, M)
    return out


def tq2_to_i2s(src, Py_ssize_t M, Py_ssize_t K):
    """The 2-bit codes of an (M, K) TQ2_0 tensor as a new row-major I2_S uint8 array (M*K/4 bytes;
    block scales dropped)."""
    who = "tq2_to_i2s"
    need, alt, what = _layout(BL_OP_TQ2_GEMV, M, K, who)
    src = _packed(src, need, alt, who, what)
    out = np.empty(M * (K // 4), dtype=np.uint8)
    cdef const uint8_t[::1] sv = src
    cdef uint8_t[::1] ov = out
    with nogil:
        bl_tq2_to_i2s(&sv[0], &ov[0], M, K)
    return out


# ---- the TQ1_0 x16 layout --------------------------------------------------------------------

def tq1_x16_interleave(src, Py_ssize_t M, Py_ssize_t K, out=None):
    """An (M, K) TQ1_0 tensor (54-byte blocks) -> its code bytes in the x16 order (bl_mad.h, "The
    TQ1_0 x16 layout"; block scales dropped), into ``out`` (1-D uint8 of M*K/256*52 bytes, not
    overlapping src) or a new array."""
    who = "tq1_x16_interleave"
    need, alt, what = _layout(BL_OP_TQ1_GEMV, M, K, who)
    n_out, _, _ = _layout(BL_OP_TQ1_X16_GEMV, M, K, who)
    src = _packed(src, need, alt, who, what)
    if out is None:
        out = np.empty(n_out, dtype=np.uint8)
    elif not (isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.ndim == 1 and out.shape[0] == n_out
              and out.flags.c_contiguous and out.flags.writeable):
        raise CodecError(f"{who}: out must be a writeable contiguous 1-D uint8 array of {n_out} bytes")
    elif np.shares_memory(out, src):
        raise CodecError(f"{who}: out must not overlap the source")
    cdef const uint8_t[::1] sv = src
    cdef uint8_t[::1] ov = out
    with nogil:
        bl_tq1_x16_interleave(&sv[0], &ov[0], M, K)
    return out


def tq1_x16_rows(w, Py_ssize_t M, Py_ssize_t K):
    """The inverse of tq1_x16_interleave: x16 bytes -> a new TQ1_0 uint8 array whose block scales
    are 0 (the x16 layout does not hold them)."""
    who = "tq1_x16_rows"
    need, alt, what = _layout(BL_OP_TQ1_X16_GEMV, M, K, who)
    w = _packed(w, need, alt, who, what)
    out = np.empty(M * (K // 256) * 54, dtype=np.uint8)
    cdef const uint8_t[::1] wv = w
    cdef uint8_t[::1] ov = out
    with nogil:
        bl_tq1_x16_rows(&wv[0], &ov[0], M, K, 0, M)
    return out


def tq1_x16_pack(t, out=None):
    """int8 ternary values (M, K) -> their TQ1_0 codes in the x16 order (M*K/256*52 bytes), into
    ``out`` or a new array: TQ1_0's encoding (bl_mad.h) without the block scales."""
    who = "tq1_x16_pack"
    if not (isinstance(t, np.ndarray) and t.dtype == np.int8 and t.ndim == 2 and t.flags.c_contiguous):
        raise CodecError(f"{who}: t must be a C-contiguous int8 array (M, K)")
    cdef Py_ssize_t M = t.shape[0], K = t.shape[1]
    n_out, _, _ = _layout(BL_OP_TQ1_X16_GEMV, M, K, who)
    if t.size and (t.min() < -1 or t.max() > 1):
        raise CodecError(f"{who}: t holds values outside {{-1, 0, 1}} (min {t.min()}, max {t.max()})")
    if out is None:
        out = np.empty(n_out, dtype=np.uint8)
    elif not (isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.ndim == 1 and out.shape[0] == n_out
              and out.flags.c_contiguous and out.flags.writeable):
        raise CodecError(f"{who}: out must be a writeable contiguous 1-D uint8 array of {n_out} bytes")
    cdef const int8_t[:, ::1] tv = t
    cdef uint8_t[::1] ov = out
    with nogil:
        bl_tq1_x16_pack(&tv[0, 0], &ov[0], M, K)
    return out
