"""The compiled kernels module, ``bitnet_lab._kernels``, imported once with a clear error."""

from __future__ import annotations

import os

# OpenMP threads waiting at a barrier sleep instead of spinning, unless the user chose otherwise.
# The native engine passes ~5 barriers per layer; on a shared or busy machine spinning waiters
# steal the CPU from the thread they wait for (docs/benchmarks.md#threads-and-barriers). The
# OpenMP runtime reads this when it is loaded
# (with _kernels, below); it has no effect if another library loaded an OpenMP runtime first.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

try:
    from bitnet_lab import _kernels as _k
except ImportError as exc:  # no silent fallback: the native build is part of the package
    raise ImportError(
        "bitnet_lab._kernels (the compiled kernels) is not importable: build it with "
        "`pip install -e .` (or `python setup.py build_ext --inplace`) in the checkout"
    ) from exc

__all__ = ["_k"]
