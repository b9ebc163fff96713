"""The I2_S codec kernels: native pack and unpack of canonical I2_S bytes.

Numpy twins: :func:`bitnet_lab.quant.packing.pack_i2_s` / ``unpack_i2_s`` (bit-identical).
"""

from __future__ import annotations

import numpy as np

from bitnet_lab.errors import CodecError
from bitnet_lab.kernels.isa import _dim, _isa_index, _k, effective_threads

__all__ = ["pack_i2_s", "unpack_i2_s"]

def unpack_i2_s(
    data, M: int, K: int, *, threads: int | None = None, isa: str | None = None, name: str | None = None
) -> np.ndarray:
    """Decode canonical I2_S (docs/formats.md#31-i2_s-type-36, 128/32 layout) to ternary int8 ``(M, K)``.

    ``data``: 1-D C-contiguous uint8 array (or bytes) of exactly ``M*K/4`` bytes, or
    ``M*K/4 + 32`` (the tensor blob with its scale tail, which is ignored); ``K % 128 == 0``.
    ``name`` (a tensor name) goes into error messages. Raises CodecError on a bad argument or
    an invalid code 3 (count and first position in the message). Numpy twin:
    :func:`bitnet_lab.quant.packing.unpack_i2_s` (bit-identical).
    """
    M, K = _dim(M, "M"), _dim(K, "K")
    if M < 1:
        raise CodecError(f"unpack_i2_s: M must be >= 1, got {M}")
    return _k.unpack_i2_s(data, M, K, _isa_index(isa), effective_threads(threads), name)


def pack_i2_s(
    t: np.ndarray, *, threads: int | None = None, isa: str | None = None, name: str | None = None
) -> np.ndarray:
    """Encode ternary int8 ``(M, K)`` (values in {-1, 0, 1}, C-contiguous, ``K % 128 == 0``) to
    canonical I2_S bytes ``(M*K/4,)`` without the scale tail. Raises CodecError on a bad
    argument or a value outside {-1, 0, 1}. Numpy twin:
    :func:`bitnet_lab.quant.packing.pack_i2_s` (bit-identical)."""
    if isinstance(t, np.ndarray) and t.ndim == 2 and t.shape[0] < 1:
        raise CodecError(f"pack_i2_s: t has no rows, shape {t.shape}")
    return _k.pack_i2_s(t, _isa_index(isa), effective_threads(threads), name)
