# Cython declarations of the C kernels and the dispatch table (src/bl_kernels.h).
# cimport this from every .pyx that calls a native kernel; the C side documents each item.

from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t


cdef extern from "bl_kernels.h" nogil:
    int BL_I2S_BLOCK
    int BL_I2S_BLOCK_BYTES
    int BL_ISA_COUNT

    ctypedef struct bl_status:
        int64_t n_bad
        int64_t first_bad

    ctypedef bl_status (*bl_unpack_i2_s_fn)(const uint8_t *packed, int8_t *out, int64_t n_blocks)
    ctypedef bl_status (*bl_pack_i2_s_fn)(const int8_t *t, uint8_t *packed, int64_t n_blocks)

    # LUT family (src/bl_lut.h, included by bl_kernels.h)
    int BL_LUT_TABLE_BYTES
    ctypedef struct bl_lut_status:
        int64_t n_bad
        int64_t first_bad_byte
    ctypedef void (*bl_tl1_build_lut_fn)(const int8_t *q, int64_t K, uint8_t *lut)
    ctypedef void (*bl_tl2_build_lut_fn)(const int8_t *q, int64_t K, int64_t BK, uint8_t *lut)
    ctypedef bl_lut_status (*bl_tl1_gemv_fn)(const uint8_t *data, const uint8_t *lut, int64_t M,
                                             int64_t K, int64_t BM, int64_t BK, int64_t bm,
                                             int64_t r0, int64_t r1, int32_t *out)
    ctypedef bl_lut_status (*bl_tl2_gemv_fn)(const uint8_t *data, const uint8_t *lut, int64_t M,
                                             int64_t K, int64_t BM, int64_t BK, int64_t r0,
                                             int64_t r1, int32_t *out)

    ctypedef bl_lut_status (*bl_tl1_gemm_fn)(const uint8_t *data, const int8_t *Q, const int32_t *sum_q,
                                             int64_t N, int64_t M, int64_t K, int64_t BM, int64_t BK,
                                             int64_t bm, int64_t r0, int64_t r1, int64_t ld_out, int32_t *out)
    ctypedef bl_lut_status (*bl_tl2_gemm_fn)(const uint8_t *data, const int8_t *Q, const int32_t *sum_q,
                                             int64_t N, int64_t M, int64_t K, int64_t BM, int64_t BK,
                                             int64_t r0, int64_t r1, int64_t ld_out, int32_t *out)
    ctypedef struct bl_isa_kernels:
        const char *name
        bl_unpack_i2_s_fn unpack_i2_s
        bl_pack_i2_s_fn pack_i2_s
        bl_tl1_build_lut_fn tl1_build_lut
        bl_tl2_build_lut_fn tl2_build_lut
        bl_tl1_gemv_fn tl1_gemv
        bl_tl2_gemv_fn tl2_gemv
        bl_tl1_gemm_fn tl1_gemm
        bl_tl2_gemm_fn tl2_gemm

    void bl_dispatch_init()
    const char *bl_isa_name(int isa)
    int bl_isa_built(int isa)
    int bl_isa_supported(int isa)
    const bl_isa_kernels *bl_isa_table(int isa)
    int bl_cpu_feature_count()
    const char *bl_cpu_feature_name(int i)
    int bl_cpu_feature_value(int i)
    const char *bl_target_arch()
    const char *bl_compiler_version()
