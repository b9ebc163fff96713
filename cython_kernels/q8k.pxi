# q8k.pxi — the Q8_K activation quantiser (src/bl_q8k.h), included by _kernels.pyx.

from libc.stdint cimport int16_t
# Validation of shapes and finiteness is done by bitnet_lab.kernels.q8k; this only checks what
# memory safety needs and calls the C row function per row, without the GIL.

cdef extern from "bl_q8k.h" nogil:
    int BL_QK_K
    void bl_quantize_row_q8_k(const float *x, int64_t n, float *d, int8_t *q)
    void bl_q8_k_bsums(const int8_t *q, int64_t n, int16_t *bsums)


def quantize_q8_k_rows(const float[:, ::1] x, float[:, ::1] d, int8_t[:, ::1] q):
    """Q8_K of every row of x (N, K) into d (N, K/256) and q (N, K); K % 256 == 0."""
    cdef Py_ssize_t N = x.shape[0], K = x.shape[1], n
    if K % BL_QK_K or d.shape[0] != N or d.shape[1] != K // BL_QK_K or q.shape[0] != N or q.shape[1] != K:
        raise ValueError(f"quantize_q8_k_rows: shapes x ({N}, {K}), d ({d.shape[0]}, {d.shape[1]}), q ({q.shape[0]}, {q.shape[1]})")
    with nogil:
        for n in range(N):
            bl_quantize_row_q8_k(&x[n, 0], K, &d[n, 0], &q[n, 0])


def q8_k_bsums_rows(const int8_t[:, ::1] q, int16_t[:, ::1] bsums):
    """bsums (N, K/16) of q (N, K); K % 16 == 0."""
    cdef Py_ssize_t N = q.shape[0], K = q.shape[1], n
    if K % 16 or bsums.shape[0] != N or bsums.shape[1] != K // 16:
        raise ValueError(f"q8_k_bsums_rows: shapes q ({N}, {K}), bsums ({bsums.shape[0]}, {bsums.shape[1]})")
    with nogil:
        for n in range(N):
            bl_q8_k_bsums(&q[n, 0], K, &bsums[n, 0])
