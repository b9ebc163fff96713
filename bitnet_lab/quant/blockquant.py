"""Non-ternary ggml tensor types that BitNet files use for embeddings / lm_head / norms:
dequantise to float32 and (where gguf-py can check us) quantise, in vectorised numpy.

Shapes are torch order (rows, ..., cols): the last axis is ggml's contiguous ``ne0``; blocks
run along it and never cross a row, so ``shape[-1]`` must be a multiple of the block size.
Facts: docs/formats.md#22-block-sizes-of-the-non-ternary-types (block sizes), ggml ``ggml-quants.c`` reference
(de)quantisers as mirrored by gguf-py 0.19.0 ``gguf/quants.py``; the byte layouts are written out below.

| type | block | bytes | layout of one block |
|---|---|---|---|
| F32 | 1 | 4 | little-endian IEEE binary32 |
| F16 | 1 | 2 | little-endian IEEE binary16 |
| BF16 | 1 | 2 | upper 16 bits of the binary32 |
| Q8_0 | 32 | 34 | fp16 ``d``, then 32 int8 ``q``; ``x = q · d`` |
| Q6_K | 256 | 210 | ``ql[128]``, ``qh[64]``, int8 ``scales[16]``, fp16 ``d`` (see _dequant_q6_k) |
| TQ1_0 | 256 | 54 | ternary, see packing.py |
| TQ2_0 | 256 | 66 | ternary, see packing.py |

Quantisers: F32, F16, BF16, Q8_0, TQ1_0, TQ2_0 (byte-identical to gguf-py). Q6_K is dequantise
only: its quantiser (ggml ``make_qx_quants`` search) is not implemented.
"""

from __future__ import annotations

import operator
from typing import Sequence

import numpy as np

from bitnet_lab.errors import CodecError
from bitnet_lab.quant import packing
from bitnet_lab.quant.ternary import round_int

# type name → (elements per block, bytes per block); docs/formats.md#22-block-sizes-of-the-non-ternary-types /
# gguf GGML_QUANT_SIZES.
BLOCK_SIZES: dict[str, tuple[int, int]] = {
    "F32": (1, 4),
    "F16": (1, 2),
    "BF16": (1, 2),
    "Q8_0": (32, 34),
    "Q6_K": (256, 210),
    "TQ1_0": (256, 54),
    "TQ2_0": (256, 66),
}
DEQUANT_TYPES = tuple(BLOCK_SIZES)
QUANT_TYPES = ("F32", "F16", "BF16", "Q8_0", "TQ1_0", "TQ2_0")


def _type(type_name: str) -> tuple[int, int]:
    try:
        return BLOCK_SIZES[type_name]
    except (KeyError, TypeError):
        raise CodecError(f"unknown block type {type_name!r}; expected one of {DEQUANT_TYPES}") from None


def _shape(type_name: str, shape: Sequence[int]) -> tuple[int, ...]:
    try:
        shape = tuple(operator.index(s) for s in shape)
    except TypeError:
        raise CodecError(f"{type_name}: shape must be a tuple of integers; got {shape!r}") from None
    if not shape or any(s <= 0 for s in shape):
        raise CodecError(f"{type_name}: shape must be non-empty and positive; got {shape}")
    blk, _ = _type(type_name)
    if shape[-1] % blk:
        raise CodecError(
            f"{type_name}: the last dimension ({shape[-1]}) is not a multiple of the block size {blk}"
        )
    return shape


def block_nbytes(type_name: str, n_elements: int) -> int:
    """Bytes of ``n_elements`` values of ``type_name`` (a whole number of blocks)."""
    blk, size = _type(type_name)
    n = operator.index(n_elements)
    if n < 0 or n % blk:
        raise CodecError(f"{type_name}: {n} elements is not a whole number of {blk}-element blocks")
    return n // blk * size


def _raw(type_name: str, data, need: int) -> np.ndarray:
    """``data`` as flat uint8 of exactly ``need`` bytes (typed arrays are viewed, not converted)."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        arr = np.frombuffer(data, dtype=np.uint8)
    elif isinstance(data, np.ndarray):
        arr = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    else:
        raise CodecError(f"{type_name}: data must be a numpy array or bytes; got {type(data).__name__}")
    if arr.size != need:
        raise CodecError(f"{type_name}: expected {need} bytes of data, got {arr.size}")
    return arr


def _fp16(b: np.ndarray) -> np.ndarray:
    """(n, 2) little-endian fp16 bytes → float32 (n, 1)."""
    return np.ascontiguousarray(b).view("<f2").astype(np.float32)


def _dequant_q8_0(blocks: np.ndarray) -> np.ndarray:
    d = _fp16(blocks[:, :2])                          # (nb, 1)
    q = blocks[:, 2:].view(np.int8).astype(np.float32)  # (nb, 32)
    return q * d                                       # float32 product, as ggml


def _dequant_q6_k(blocks: np.ndarray) -> np.ndarray:
    """Q6_K: element e of a 256-block, in half h = e // 128, with l = e % 32 and quarter
    j = (e % 128) // 32: low 4 bits from ``ql[h·64 + (j % 2)·32 + l]`` (low nibble for j < 2,
    high nibble for j ≥ 2), high 2 bits from ``qh[h·32 + l]`` at bits 2j+1:2j; ``q − 32`` times
    ``d · scales[e // 16]`` (the product d·scale is formed first, in float32)."""
    nb = blocks.shape[0]
    ql = blocks[:, :128].reshape(nb, 2, 1, 2, 32)            # (nb, h, ·, j%2, l)
    qh = blocks[:, 128:192].reshape(nb, 2, 1, 32)            # (nb, h, ·, l)
    sc = blocks[:, 192:208].view(np.int8).astype(np.float32)  # (nb, 16)
    d = _fp16(blocks[:, 208:210])                            # (nb, 1)
    lo = (ql >> np.array([0, 4], dtype=np.uint8).reshape(1, 1, 2, 1, 1)) & 0x0F  # (nb, h, j//2, j%2, l)
    lo = lo.reshape(nb, 2, 4, 32)                            # quarter j = 2·(j//2) + j%2
    hi = (qh >> np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 1, 4, 1)) & 0x03  # (nb, h, j, l)
    q = (lo | (hi << 4)).astype(np.int8) - np.int8(32)       # (nb, h, j, l) = element order
    ds = (d * sc).reshape(nb, 16, 1)                         # per 16 elements
    return (ds * q.reshape(nb, 16, 16).astype(np.float32)).reshape(nb, 256)


def dequantize(type_name: str, data, shape: Sequence[int]) -> np.ndarray:
    """Decode ``data`` (the raw tensor bytes, or an array of them) to float32 of ``shape``."""
    shape = _shape(type_name, shape)
    n = int(np.prod(shape))
    blk, size = _type(type_name)
    raw = _raw(type_name, data, n // blk * size)
    if type_name == "F32":
        out = raw.view("<f4").astype(np.float32)
    elif type_name == "F16":
        out = raw.view("<f2").astype(np.float32)
    elif type_name == "BF16":
        # bf16 is the top half of an f32: shift into place, reinterpret (exact, NaNs kept).
        out = (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)
    elif type_name == "Q8_0":
        out = _dequant_q8_0(raw.reshape(-1, size))
    elif type_name == "Q6_K":
        out = _dequant_q6_k(raw.reshape(-1, size))
    else:  # TQ1_0 / TQ2_0: codes × per-block d, rows of shape[-1]
        rows = n // shape[-1]
        unpack = packing.unpack_tq2_0 if type_name == "TQ2_0" else packing.unpack_tq1_0
        t, d = unpack(raw, rows, shape[-1])
        out = t.astype(np.float32) * np.repeat(d.astype(np.float32), packing.QK_K, axis=1)
    return out.reshape(shape)


def _bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 → bf16 bits (uint16), round to nearest even, NaN forced quiet (ggml fp32_to_bf16)."""
    u = x.view(np.uint32)
    is_nan = (u & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    u = np.where(is_nan, (u & np.uint32(0xFFFF0000)) | np.uint32(0x00400000), u)
    rounded = (u.astype(np.uint64) + (np.uint64(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1)))) >> np.uint64(16)
    return rounded.astype(np.uint16)


def _quant_q8_0(x: np.ndarray) -> np.ndarray:
    blocks = x.reshape(-1, 32)
    d = np.abs(blocks).max(axis=1, keepdims=True) / np.float32(127)  # float32
    with np.errstate(divide="ignore"):
        inv = np.where(d == 0, np.float32(0), np.float32(1) / d).astype(np.float32)
    # round half away from zero of x·(1/d), in float32 (ggml roundf, gguf-py np_roundf).
    q = round_int(blocks * inv, "half_away").astype(np.int8)
    return np.concatenate([d.astype("<f2").view(np.uint8), q.view(np.uint8)], axis=1)


def quantize(type_name: str, x: np.ndarray) -> np.ndarray:
    """Encode float ``x`` (blocks along the last axis) as ``type_name``; flat uint8 bytes."""
    if type_name == "Q6_K":
        raise CodecError("Q6_K: quantisation is not implemented (dequantise only)")
    if type_name not in QUANT_TYPES:
        raise CodecError(f"cannot quantise to {type_name!r}; supported: {QUANT_TYPES}")
    if not isinstance(x, np.ndarray) or x.dtype.kind != "f":
        raise CodecError(f"{type_name}: x must be a float numpy array; got {getattr(x, 'dtype', type(x).__name__)}")
    shape = _shape(type_name, x.shape)
    x = x.astype(np.float32, copy=False)
    if type_name == "F32":
        return x.astype("<f4").reshape(-1).view(np.uint8)
    if type_name == "F16":
        with np.errstate(over="ignore"):  # |x| > 65504 becomes ±inf, the IEEE (and gguf-py) result
            return x.astype("<f2").reshape(-1).view(np.uint8)
    if type_name == "BF16":
        return _bf16_bits(np.ascontiguousarray(x).reshape(-1)).astype("<u2").view(np.uint8)
    if type_name == "Q8_0":
        if not np.isfinite(x).all():
            raise CodecError(f"Q8_0: x has {int((~np.isfinite(x)).sum())} non-finite values")
        return _quant_q8_0(np.ascontiguousarray(x)).reshape(-1)
    rows = x.reshape(-1, shape[-1])
    return packing.quantize_tq2_0(rows) if type_name == "TQ2_0" else packing.quantize_tq1_0(rows)
