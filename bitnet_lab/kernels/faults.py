"""Fault injection: make one native kernel deliberately wrong, to prove ``verify`` notices.

``inject_fault(op)`` or ``BITNET_LAB_FAULT=<op>`` in the environment; the C kernels read the switch
once per call. Off by default; :func:`fault_status` and ``build_info()["fault"]`` show it.
"""

from __future__ import annotations

import os

from bitnet_lab.errors import KernelError
from bitnet_lab.kernels.native import _k

__all__ = ["FAULT_ENV_VAR", "MAD_OPS", "fault_status", "inject_fault"]

FAULT_ENV_VAR = "BITNET_LAB_FAULT"
MAD_OPS: tuple[str, ...] = _k.mad_op_names()
_OP_ID = {name: i for i, name in enumerate(MAD_OPS)}


def inject_fault(kernel: str | None) -> None:
    """Make one MAD op deliberately wrong (``kernel`` in :data:`MAD_OPS`), or switch faults off
    (None). For testing that ``verify`` notices a broken kernel; never on by default."""
    if kernel is None:
        _k.set_fault(0)
        return
    if kernel not in _OP_ID:
        raise KernelError(f"inject_fault: unknown kernel {kernel!r}; known: {', '.join(MAD_OPS)}")
    _k.set_fault(1 << _OP_ID[kernel])


def fault_status() -> str | None:
    """The op currently made wrong by fault injection, or None."""
    mask = _k.get_fault()
    names = [op for i, op in enumerate(MAD_OPS) if (mask >> i) & 1]
    return names[0] if names else None


def _fault_from_env() -> None:
    value = os.environ.get(FAULT_ENV_VAR, "").strip()
    if value:
        try:
            inject_fault(value)
        except KernelError as exc:
            raise KernelError(f"{FAULT_ENV_VAR}={value!r}: {exc}") from None


_fault_from_env()
