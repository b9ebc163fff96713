"""Fault injection: make one native kernel deliberately wrong, to prove ``verify`` notices.

``inject_fault(op)`` or ``BITNET_LAB_FAULT=<op>`` in the environment; the C kernels read the switch
once per call. Off by default; :func:`fault_status` and ``build_info()["fault"]`` show it.

Every kernel the native engine runs can be made wrong (:data:`FAULT_OPS`):

* the MAD ops (:data:`MAD_OPS`: quantize_act, the I2_S / x4 / TQ2_0 / TQ1_0 / x16 GEMVs and GEMMs, the
  AMX tile GEMMs included, and the per-block ``*_bgemv`` / ``*_bgemm``): a product adds 1 to
  ``out[0]`` (row 0, token 0; a per-block op: block 0), quantize_act adds 1 to ``sum_q[0]``;
* the TL1 / TL2 LUT ops (:data:`LUT_OPS`): a build adds 1 to every entry of its first table (so
  every row's sum moves by ±1), a GEMV or a GEMM (the prefill GEMMs, amx level only) adds 1 to
  ``out[0]``.

Only in the call whose range starts at row 0, so the wrong value is the same for every thread
split. :data:`LAYOUT_OPS` says which ops the engine runs on each weight layout
(``runner.packed_weight(name)[0]``), so a caller can break one the loaded model actually uses.
"""

from __future__ import annotations

import os

from bitnet_lab.errors import KernelError
from bitnet_lab.kernels.native import _k

__all__ = ["BLOCK_LAYOUT_OPS", "FAULT_ENV_VAR", "FAULT_OPS", "LAYOUT_OPS", "LUT_OPS", "MAD_OPS", "fault_status",
           "inject_fault"]

FAULT_ENV_VAR = "BITNET_LAB_FAULT"
MAD_OPS: tuple[str, ...] = _k.mad_op_names()
_OP_ID = {name: i for i, name in enumerate(MAD_OPS)}  # MAD op -> its id in the C enum (bl_mad_op)
_LUT_BITS = dict(_k.lut_fault_bits())
LUT_OPS: tuple[str, ...] = tuple(_LUT_BITS)
FAULT_OPS: tuple[str, ...] = MAD_OPS + LUT_OPS
_FAULT_BIT = {**_OP_ID, **_LUT_BITS}

# The ops the native engine runs on a projection of each layout (engine.weights.LAYOUT_CODE names):
# the GEMV first (decode), then what else it calls. TL layouts prefill with their GEMM on the amx
# level (kernels.has_tl_gemm) and row by row through the LUT GEMV elsewhere.
# quantize_act runs before every layout's product.
LAYOUT_OPS: dict[str, tuple[str, ...]] = {
    "i2_s": ("i2s_gemv", "i2s_gemm"),
    "i2_s_x4": ("i2s_x4_gemv", "i2s_x4_gemm"),
    "tq2_0": ("tq2_gemv", "tq2_gemm"),
    "tq1_0": ("tq1_gemv", "tq1_gemm"),
    "tq1_0_x16": ("tq1_x16_gemv", "tq1_x16_gemm"),
    "tl1": ("tl1_gemv", "tl1_build_lut", "tl1_gemm"),
    "tl2": ("tl2_gemv", "tl2_build_lut", "tl2_gemm"),
}

# The ops a projection runs instead when it needs per-256-block products: a TQ tensor whose block
# scales differ (the engine's numerics["epilogue"] then names the block sum) and every projection
# of the llama.cpp numerics profile (Q8_K activations; TL layouts are repacked to i2_s there).
BLOCK_LAYOUT_OPS: dict[str, tuple[str, ...]] = {
    "i2_s": ("i2s_bgemv", "i2s_bgemm"),
    "tq2_0": ("tq2_bgemv", "tq2_bgemm"),
    "tq1_0": ("tq1_bgemv", "tq1_bgemm"),
}


def inject_fault(kernel: str | None) -> None:
    """Make one kernel deliberately wrong (``kernel`` in :data:`FAULT_OPS`), or switch faults off
    (None). For testing that ``verify`` notices a broken kernel; never on by default."""
    if kernel is None:
        _k.set_fault(0)
        return
    if kernel not in _FAULT_BIT:
        raise KernelError(f"inject_fault: unknown kernel {kernel!r}; known: {', '.join(FAULT_OPS)}")
    _k.set_fault(1 << _FAULT_BIT[kernel])


def fault_status() -> str | None:
    """The op currently made wrong by fault injection, or None."""
    mask = _k.get_fault()
    names = [op for op, bit in _FAULT_BIT.items() if (mask >> bit) & 1]
    return names[0] if names else None


def _fault_from_env() -> None:
    value = os.environ.get(FAULT_ENV_VAR, "").strip()
    if value:
        try:
            inject_fault(value)
        except KernelError as exc:
            raise KernelError(f"{FAULT_ENV_VAR}={value!r}: {exc}") from None


_fault_from_env()
