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

# isa: levels, dispatch and threads; codec: I2_S pack/unpack; lut: TL1/TL2; mad: activation
# quantisation and the ternary integer products (I2_S, x4, TQ2_0, TQ1_0).
from bitnet_lab.kernels.codec import (
    pack_i2_s,
    unpack_i2_s,
)
from bitnet_lab.kernels.faults import (
    FAULT_OPS,
    LAYOUT_OPS,
    LUT_OPS,
    MAD_OPS,
)
from bitnet_lab.kernels.isa import (
    ENV_VAR,
    ISA_ORDER,
    KernelError,
    active_isa,
    allowed_cpus,
    available_isas,
    build_info,
    cpu_features,
    effective_threads,
    openmp_enabled,
    physical_cores,
    set_isa,
    usable_threads,
    use_isa,
)
from bitnet_lab.kernels.lut import (
    has_tl_gemm,
    lut_kernel_versions,
    tl1_build_lut,
    tl1_gemm,
    tl1_gemv,
    tl2_build_lut,
    tl2_gemm,
    tl2_gemv,
    tl_ternary,
)
from bitnet_lab.kernels.mad import (
    BLOCK_OPS,
    X4_MAX_K,
    X16_MAX_K,
    block_gemm,
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
    tq1_x16_gemm,
    tq1_x16_gemv,
    tq1_x16_interleave,
    tq1_x16_native,
    tq1_x16_pack,
    tq1_x16_rows,
    tq2_gemm,
    tq2_gemv,
    tq2_to_i2s,
    tq_uniform_scale,
)

__all__ = [
    "BLOCK_OPS",
    "block_gemm",
    "active_isa",
    "allowed_cpus",
    "available_isas",
    "build_info",
    "cpu_features",
    "default_version",
    "effective_threads",
    "ENV_VAR",
    "fault_status",
    "FAULT_OPS",
    "i2s_gemm",
    "i2s_gemv",
    "i2s_x4_gemm",
    "i2s_x4_gemv",
    "i2s_x4_interleave",
    "i2s_x4_native",
    "i2s_x4_rowmajor",
    "inject_fault",
    "ISA_ORDER",
    "kernel_versions",
    "LAYOUT_OPS",
    "LUT_OPS",
    "KernelError",
    "has_tl_gemm",
    "lut_kernel_versions",
    "MAD_OPS",
    "microbench",
    "openmp_enabled",
    "pack_i2_s",
    "physical_cores",
    "quantize_act",
    "set_isa",
    "tl1_build_lut",
    "tl1_gemm",
    "tl1_gemv",
    "tl2_build_lut",
    "tl2_gemm",
    "tl2_gemv",
    "tl_ternary",
    "tq1_gemm",
    "tq1_gemv",
    "tq1_x16_gemm",
    "tq1_x16_gemv",
    "tq1_x16_interleave",
    "tq1_x16_native",
    "tq1_x16_pack",
    "tq1_x16_rows",
    "tq2_gemm",
    "tq2_gemv",
    "tq2_to_i2s",
    "tq_uniform_scale",
    "unpack_i2_s",
    "usable_threads",
    "use_isa",
    "X4_MAX_K",
    "X16_MAX_K",
]
