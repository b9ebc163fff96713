# ceilings.pxi — machine-ceiling microkernels (src/ceiling.h), included from _kernels.pyx.
#
# Measurement instruments for bitnet_lab.bench.machine_ceilings: a memory read-bandwidth loop
# (also while computing: the busy loop) and an int8 dot-product peak loop per ISA level. This file only validates arguments and
# splits the work over OpenMP threads; the caller times the calls (they release the GIL) and
# verifies the checksums against numpy.

from libc.stdint cimport uint64_t

cdef extern from "ceiling.h" nogil:
    int BL_CEILING_READ_ALIGN
    ctypedef uint64_t (*bl_ceiling_read_fn)(const uint8_t *buf, int64_t nbytes)
    ctypedef int64_t (*bl_ceiling_dot_fn)(const uint8_t *a, const int8_t *b, int64_t iters)
    ctypedef uint64_t (*bl_ceiling_busy_fn)(const uint8_t *buf, int64_t nbytes, int fmas, float *sink)
    ctypedef struct bl_ceiling_kernels:
        const char *name
        const char *read_insn
        const char *dot_insn
        int chains
        int a_vectors
        int vec_bytes
        int group
        int lane_bits
        int tile_cols
        bl_ceiling_read_fn read
        bl_ceiling_dot_fn dot
        const char *busy_insn
        bl_ceiling_busy_fn busy
    const bl_ceiling_kernels *bl_ceiling_for(int isa)


cdef const bl_ceiling_kernels *_ceiling_table(int isa) except NULL:
    if isa < 0 or isa >= C.BL_ISA_COUNT:
        raise ValueError(f"ISA index {isa} is out of range 0..{C.BL_ISA_COUNT - 1}")
    cdef const bl_ceiling_kernels *tab = bl_ceiling_for(isa)
    if tab == NULL or not C.bl_isa_supported(isa):
        raise ValueError(f"no ceiling kernels for ISA {C.bl_isa_name(isa).decode()!r} "
                         f"in this build on this CPU")
    return tab


def ceiling_info(int isa):
    """The ceiling kernels of level ``isa`` as a dict (see src/ceiling.h), or None when this
    build has none for it or this CPU cannot run it."""
    if isa < 0 or isa >= C.BL_ISA_COUNT:
        return None
    cdef const bl_ceiling_kernels *tab = bl_ceiling_for(isa)
    if tab == NULL or not C.bl_isa_supported(isa):
        return None
    return {
        "isa": tab.name.decode(),
        "read_insn": tab.read_insn.decode(),
        "dot_insn": tab.dot_insn.decode(),
        "chains": tab.chains,
        "a_vectors": tab.a_vectors,
        "vec_bytes": tab.vec_bytes,
        "group": tab.group,
        "lane_bits": tab.lane_bits,
        "tile_cols": tab.tile_cols,
        "busy_insn": tab.busy_insn.decode() if tab.busy_insn != NULL else None,
        "read_align": BL_CEILING_READ_ALIGN,
    }


cdef object _stream(const bl_ceiling_kernels *tab, data, int threads, int fmas, str what):
    """Stream ``data`` (1-D C-contiguous uint8, length a multiple of 256) once with ``threads``
    OpenMP threads, each through one contiguous slice of whole 256-byte units (the last thread
    takes the remainder): the read loop when ``fmas`` < 0, else the busy loop with ``fmas``.
    Returns the sum of all bytes (uint64, as a Python int)."""
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    arr = _as_1d_uint8(data, what)
    cdef Py_ssize_t n = arr.shape[0]
    cdef Py_ssize_t align = BL_CEILING_READ_ALIGN
    if n == 0 or n % align:
        raise ValueError(f"{what}: the buffer length must be a positive multiple of {align}, got {n}")
    cdef Py_ssize_t units = n // align
    cdef int nt = <int>min(<Py_ssize_t>threads, units)
    cdef Py_ssize_t per = units // nt
    sums_arr = np.zeros(nt, dtype=np.uint64)
    sinks_arr = np.zeros(nt, dtype=np.float32)   # where the busy loop's arithmetic ends up
    cdef uint64_t[::1] sums = sums_arr
    cdef float[::1] sinks = sinks_arr
    cdef const uint8_t[::1] buf = arr
    cdef bl_ceiling_read_fn read = tab.read
    cdef bl_ceiling_busy_fn busy = tab.busy
    cdef int t
    cdef Py_ssize_t start, stop
    with nogil:
        for t in prange(nt, num_threads=nt, schedule="static", chunksize=1):
            start = t * per * align
            stop = n if t == nt - 1 else (t + 1) * per * align
            if fmas < 0:
                sums[t] = read(&buf[start], stop - start)
            else:
                sums[t] = busy(&buf[start], stop - start, fmas, &sinks[t])
    return int(sums_arr.sum(dtype=np.uint64))


def ceiling_read(data, int isa, int threads):
    """Stream ``data`` (1-D C-contiguous uint8, length a multiple of 256) once with ``threads``
    OpenMP threads, each reading one contiguous slice; returns the sum of all bytes (uint64,
    as a Python int)."""
    return _stream(_ceiling_table(isa), data, threads, -1, "ceiling_read")


def ceiling_busy(data, int fmas, int isa, int threads):
    """``ceiling_read`` with ``fmas`` vector multiply-adds per 64 bytes read (a multiple of 4, 0..4096) on
    every thread; returns the sum of all bytes (uint64, as a Python int)."""
    cdef const bl_ceiling_kernels *tab = _ceiling_table(isa)
    if tab.busy == NULL:
        raise ValueError(f"ceiling_busy: level {tab.name.decode()!r} has no busy loop in this build")
    if fmas < 0 or fmas > 4096 or fmas % 4:
        raise ValueError(f"ceiling_busy: fmas must be a multiple of 4 in 0..4096, got {fmas}")
    return _stream(tab, data, threads, fmas, "ceiling_busy")


def ceiling_dot(a, b, int64_t iters, int isa, int threads):
    """Run the dot-peak loop for ``iters`` iterations on ``threads`` OpenMP threads at once
    (every thread the same operands); returns the per-thread results (int64 array).

    ``a``: uint8 array of a_vectors * vec_bytes codes (0..2), ``b``: int8 array of vec_bytes
    values (ceiling_info gives both sizes)."""
    cdef const bl_ceiling_kernels *tab = _ceiling_table(isa)
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    if iters < 0:
        raise ValueError(f"iters must be >= 0, got {iters}")
    a_arr = _as_1d_uint8(a, "ceiling_dot(a)")
    if not isinstance(b, np.ndarray) or b.dtype != np.int8 or b.ndim != 1 or not b.flags.c_contiguous:
        raise ValueError("ceiling_dot: b must be a 1-D C-contiguous int8 array")
    if a_arr.shape[0] != tab.a_vectors * tab.vec_bytes or b.shape[0] != tab.vec_bytes:
        raise ValueError(f"ceiling_dot({tab.name.decode()}): a needs {tab.a_vectors * tab.vec_bytes} "
                         f"bytes and b {tab.vec_bytes}, got {a_arr.shape[0]} and {b.shape[0]}")
    if int(a_arr.max()) > 2:
        raise ValueError("ceiling_dot: the codes in a must be 0..2 (no product may saturate)")
    out_arr = np.zeros(threads, dtype=np.int64)
    cdef int64_t[::1] out = out_arr
    cdef const uint8_t[::1] av = a_arr
    cdef const int8_t[::1] bv = b
    cdef bl_ceiling_dot_fn fn = tab.dot
    cdef int t
    with nogil:
        for t in prange(threads, num_threads=threads, schedule="static", chunksize=1):
            out[t] = fn(&av[0], &bv[0], iters)
    return out_arr
