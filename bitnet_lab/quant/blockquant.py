"""Non-ternary ggml tensor types that BitNet files use for embeddings / lm_head / norms:
dequantise to float32 and quantise, in vectorised numpy.

Shapes are torch order (rows, ..., cols): the last axis is ggml's contiguous ``ne0``; blocks
run along it and never cross a row, so ``shape[-1]`` must be a multiple of the block size.
Facts: docs/formats.md#22-block-sizes-of-the-non-ternary-types (block sizes and layouts),
docs/formats.md#24-how-q8_0-and-q6_k-are-quantised (the quantisers).

| type | block | bytes | layout of one block |
|---|---|---|---|
| F32 | 1 | 4 | little-endian IEEE binary32 |
| F16 | 1 | 2 | little-endian IEEE binary16 |
| BF16 | 1 | 2 | upper 16 bits of the binary32 |
| Q8_0 | 32 | 34 | fp16 ``d``, then 32 int8 ``q``; ``x = q · d`` |
| Q6_K | 256 | 210 | ``ql[128]``, ``qh[64]``, int8 ``scales[16]``, fp16 ``d`` (see q6_k_parts) |
| TQ1_0 | 256 | 54 | ternary, see packing.py |
| TQ2_0 | 256 | 66 | ternary, see packing.py |

Quantisers, all byte-identical to their references: F32, F16, BF16, TQ1_0, TQ2_0 as gguf-py;
Q8_0 and Q6_K as llama.cpp's reference quantisers (``ggml-org/llama.cpp:ggml/src/ggml-quants.c``
``quantize_row_q8_0_ref``, ``quantize_row_q6_K_ref``), which is what ``llama-quantize
--token-embedding-type q8_0|q6_k`` runs; checked on bitnet.cpp's own Q8_0 / Q6_K files.
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
QUANT_TYPES = DEQUANT_TYPES


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


def q6_k_parts(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Q6_K blocks (nb, 210) uint8 → ``(q int8 (nb, 256), scales int8 (nb, 16), d float32 (nb, 1))``,
    ``q`` the 6-bit codes − 32 in element order. Element e of a 256-block, in half h = e // 128,
    with l = e % 32 and quarter j = (e % 128) // 32: low 4 bits from ``ql[h·64 + (j % 2)·32 + l]``
    (low nibble for j < 2, high nibble for j ≥ 2), high 2 bits from ``qh[h·32 + l]`` at bits
    2j+1:2j. Shared by the dequantiser and the Q6_K lm_head's twin (quant/q6_k.py)."""
    nb = blocks.shape[0]
    ql = blocks[:, :128].reshape(nb, 2, 1, 2, 32)            # (nb, h, ·, j%2, l)
    qh = blocks[:, 128:192].reshape(nb, 2, 1, 32)            # (nb, h, ·, l)
    lo = (ql >> np.array([0, 4], dtype=np.uint8).reshape(1, 1, 2, 1, 1)) & 0x0F  # (nb, h, j//2, j%2, l)
    lo = lo.reshape(nb, 2, 4, 32)                            # quarter j = 2·(j//2) + j%2
    hi = (qh >> np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 1, 4, 1)) & 0x03  # (nb, h, j, l)
    q = ((lo | (hi << 4)).astype(np.int8) - np.int8(32)).reshape(nb, 256)  # (nb, h, j, l) = element order
    scales = np.ascontiguousarray(blocks[:, 192:208]).view(np.int8)         # (nb, 16)
    return q, scales, _fp16(blocks[:, 208:210])


def _dequant_q6_k(blocks: np.ndarray) -> np.ndarray:
    """Q6_K (layout in :func:`q6_k_parts`): ``q − 32`` times ``d · scales[e // 16]`` (the product
    d·scale is formed first, in float32)."""
    nb = blocks.shape[0]
    q, scales, d = q6_k_parts(blocks)
    ds = (d * scales.astype(np.float32)).reshape(nb, 16, 1)  # per 16 elements
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


# ---- Q8_0: llama.cpp quantize_row_q8_0_ref (docs/formats.md#24-how-q8_0-and-q6_k-are-quantised) --------


def _quant_q8_0(x: np.ndarray) -> np.ndarray:
    """Blocks of 32: ``d = amax / 127`` and ``q = roundf(x · (1/d))``, all in float32."""
    blocks = x.reshape(-1, 32)
    d = np.abs(blocks).max(axis=1, keepdims=True) / np.float32(127)  # float32
    _check_fp16_scale("Q8_0", d, blocks)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        inv = np.where(d == 0, np.float32(0), np.float32(1) / d).astype(np.float32)
        # round half away from zero, in float32 (C roundf; gguf-py np_roundf).
        q = round_int(blocks * inv, "half_away")
    # 1/d overflows for d below 2^-128 (amax < ~4e-37): x·inf is not a number an int8 can take.
    # Such a block's fp16 d is 0, so it decodes to zeros whatever q holds; write q = 0, what
    # x86 builds of llama.cpp write there (the float→int conversion of ±inf / NaN gives 0x80000000).
    q = np.where(np.isfinite(q), q, np.float32(0)).astype(np.int8)
    return np.concatenate([d.astype("<f2").view(np.uint8), q.view(np.uint8)], axis=1)


def _check_fp16_scale(type_name: str, d: np.ndarray, blocks: np.ndarray) -> None:
    """A block scale beyond fp16's range would be stored as inf (the reference quantisers do
    so, and the block then decodes to inf / NaN): refuse, naming the block."""
    with np.errstate(over="ignore"):
        big = ~np.isfinite(d.astype(np.float16)).reshape(-1)
    if big.any():
        b = int(np.argmax(big))
        raise CodecError(
            f"{type_name}: block {b} (max |x| = {float(np.abs(blocks[b]).max()):.6g}) needs a scale of "
            f"{float(d.reshape(-1)[b]):.6g}, beyond fp16's 65504: the values are too large for {type_name}"
        )


# ---- Q6_K: llama.cpp quantize_row_q6_K_ref (docs/formats.md#24-how-q8_0-and-q6_k-are-quantised) --------

_F32 = np.float32
# ggml's GROUP_MAX_EPS: a group whose max |value| is below it is all zero.
_GROUP_MAX_EPS = _F32(1e-15)
# make_qx_quants(n=16, nmax=32, rmse_type=1): the first scale tried is -32/max, then
# -(32 + 0.1·is)/max for is = -9..-1, 1..9. 32 + 0.1f·is is the same float32 fused or not.
_QX_NMAX = 32
_QX_STEPS = np.array([0] + list(range(-9, 0)) + list(range(1, 10)), dtype=_F32)
_QX_NUMERATORS = (_F32(_QX_NMAX) + _F32(0.1) * _QX_STEPS).astype(_F32)  # (19,)
# 16-value groups per chunk: keeps the float64 scratch (19 candidate scales × 16 values) cache-sized.
_Q6_K_CHUNK = 512
# float64 bit patterns: the 29 fraction bits float32 drops, and a float32 midpoint among them.
_DROPPED_BITS = np.uint64((1 << 29) - 1)
_MIDPOINT_BITS = np.uint64(1 << 28)
_F32_MIN_NORMAL = 2.0**-126


def _nearest_int(v: np.ndarray) -> np.ndarray:
    """ggml's nearest_int, bit for bit for any float32: add 1.5·2^23 and read the low mantissa
    bits. That is round half to even while |v| < 2^22, as every value here is; int32."""
    t = (v.astype(_F32, copy=False) + _F32(12582912.0)).view(np.int32)
    return (t & np.int32(0x007FFFFF)) - np.int32(0x00400000)


def _fused_add_odd(p: np.ndarray, c: np.ndarray) -> np.ndarray:
    """float32 of ``p + c`` rounded once, for an exact float64 ``p`` and float32 ``c``, in any range.

    The float64 sum is made round-to-odd (its TwoSum error says which neighbour the exact value
    lies towards); rounding a round-to-odd float64 to float32 equals one rounding of the exact
    value, which plain float64 → float32 double rounding does not always give."""
    c64 = c.astype(np.float64)
    s = p + c64
    bp = s - p
    err = (p - (s - bp)) + (c64 - bp)
    even = (s.view(np.uint64) & np.uint64(1)) == 0
    fix = (err != 0) & even & np.isfinite(s)
    if fix.any():
        s = np.where(fix, np.nextafter(s, np.where(err > 0, np.inf, -np.inf)), s)
    return s.astype(_F32)


def _fused_add(p: np.ndarray, c: np.ndarray) -> np.ndarray:
    """As `_fused_add_odd`, for sums that are 0 or float32 normals: the float64 sum rounds to
    float32 correctly unless it lies exactly on a float32 midpoint, and only those few elements
    take the round-to-odd path."""
    s = p + c
    r = s.astype(_F32)
    on_midpoint = (s.view(np.uint64) & _DROPPED_BITS) == _MIDPOINT_BITS
    if on_midpoint.any():
        at = np.flatnonzero(on_midpoint)
        r.flat[at] = _fused_add_odd(p.flat[at], c.flat[at])
    return r


def _fma_f32(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """``a·b + c`` rounded once to float32 (a fused multiply-add), for float32 a, b, c: the
    product is exact in float64 (24 + 24 bits)."""
    return _fused_add_odd(a.astype(np.float64) * b.astype(np.float64), c)


def _make_qx_quants(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ggml ``make_qx_quants(16, 32, x, L, rmse_type=1, NULL)`` on every row of ``x`` (n, 16).

    Returns (scale float32 (n,), L uint8 (n, 16) in [0, 63]). For each candidate scale the codes
    are l = clamp(nearest_int(iscale·x), -32, 31), and the weighted least-squares fit with
    weights w = x² gives sumlx = Σ w·x·l and suml2 = Σ w·l², accumulated left to right in
    float32 with each ``+= product`` fused (one rounding per step), as the reference build
    compiles them; the candidate with the largest sumlx²/suml2 wins, ties to the earlier one.
    """
    n = x.shape[0]
    ax = np.abs(x)
    first = np.argmax(ax, axis=1)  # ties: the first index, as the strict > of the scan
    rows = np.arange(n)
    amax = ax[rows, first]
    zero = amax < _GROUP_MAX_EPS
    top = np.where(zero, _F32(1), x[rows, first])  # signed value of largest magnitude
    iscale = (-_QX_NUMERATORS[:, None] / top[None, :]).astype(_F32)  # (19, n)
    xt = np.ascontiguousarray(x.T)  # (16, n): value i of every group, contiguous
    # codes of every candidate: (16, 19, n), value-major so each step of the sums reads one slab
    l32 = np.clip(_nearest_int(iscale[None] * xt[:, None, :]), -_QX_NMAX, _QX_NMAX - 1).astype(_F32)
    # Overflow (|x| beyond ~1e12) is let through as IEEE inf / NaN, as in the reference, and
    # refused below once it reaches a scale.
    with np.errstate(over="ignore", invalid="ignore"):
        w = xt * xt
        wx = w * xt                                   # float32, then · l inside the fused add
        l64 = l32.astype(np.float64)
        p_lx = wx.astype(np.float64)[:, None, :] * l64  # exact: 24-bit · 6-bit
        p_l2 = (w[:, None, :] * l32).astype(np.float64) * l64  # w·l rounded in float32 first
        # Every term of a sum has the same sign (w·x·l has the sign of -max, w·l² ≥ 0), so the
        # partial sums only grow: when no non-zero term is below float32's normal range, no
        # partial sum is either, and the cheap midpoint test is exact. A term w·x·l or w·l·l
        # (l a non-zero integer) is at least |w·x| or w, so it suffices that those are.
        tiny = any(bool(((q != 0) & (np.abs(q) < _F32_MIN_NORMAL)).any()) for q in (w, wx))
        add = _fused_add_odd if tiny else _fused_add
        sumlx = np.zeros((len(_QX_STEPS), n), _F32)
        suml2 = np.zeros((len(_QX_STEPS), n), _F32)
        for i in range(16):  # sequential: the float32 sums depend on the order
            sumlx = add(p_lx[i], sumlx)
            suml2 = add(p_l2[i], suml2)
        with np.errstate(divide="ignore"):
            scale = np.where(suml2[0] != 0, sumlx[0] / suml2[0], _F32(0)).astype(_F32)
        best = (scale * sumlx[0]).astype(_F32)
        chosen = np.zeros(n, dtype=np.intp)
        for k in range(1, len(_QX_STEPS)):
            a, b = sumlx[k], suml2[k]
            better = (b > 0) & (a * a > best * b)  # strict: a tie keeps the earlier candidate
            with np.errstate(divide="ignore"):
                scale = np.where(better, a / b, scale).astype(_F32)
            best = np.where(better, scale * a, best).astype(_F32)
            chosen = np.where(better, k, chosen)
    L = (l32[:, chosen, rows].T + _QX_NMAX).astype(np.uint8)  # (n, 16)
    L[zero] = 0
    scale[zero] = 0
    bad = ~np.isfinite(scale)
    if bad.any():
        r = int(np.argmax(bad))
        raise CodecError(
            f"Q6_K: a 16-value group with max |x| = {float(amax[r]):.6g} overflows the float32 least-squares "
            f"search of the reference quantiser (x³ beyond float32's range): the values are too large for Q6_K"
        )
    return scale, L


def _quant_q6_k_blocks(blocks: np.ndarray) -> np.ndarray:
    """(nb, 256) float32 → (nb, 210) uint8 Q6_K blocks."""
    nb = blocks.shape[0]
    sub_scale, L = _make_qx_quants(blocks.reshape(-1, 16))
    sub_scale = sub_scale.reshape(nb, 16)
    L = L.reshape(nb, 16, 16)
    rows = np.arange(nb)
    first = np.argmax(np.abs(sub_scale), axis=1)  # ties: the first, as the strict > scan
    max_scale = sub_scale[rows, first]
    zero = np.abs(max_scale) < _GROUP_MAX_EPS
    iscale = (_F32(-128) / np.where(zero, _F32(1), max_scale)).astype(_F32)
    d32 = (_F32(1) / iscale).astype(_F32)
    _check_fp16_scale("Q6_K", d32, blocks)
    d16 = d32.astype("<f2")
    # int8 scales: nearest_int(iscale·scale) capped at 127 (the max group gives -128).
    scales = np.minimum(127, _nearest_int(iscale[:, None] * sub_scale)).astype(np.int8)
    # Requantise every value against its group's final step d·scale (d as stored, fp16). A group
    # whose step is 0 keeps the codes of its own search (0 for an all-zero group).
    step = d16.astype(_F32)[:, None] * scales.astype(_F32)  # (nb, 16)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        requant = np.clip(_nearest_int(blocks.reshape(nb, 16, 16) / step[:, :, None]), -32, 31) + 32
    L = np.where((step != 0)[:, :, None], requant, L).astype(np.uint8).reshape(nb, 256)
    out = np.empty((nb, 210), dtype=np.uint8)
    for h in range(2):  # two halves of 128: quarter j holds elements 32j .. 32j+31 of the half
        q = L[:, 128 * h : 128 * (h + 1)].reshape(nb, 4, 32)
        out[:, 64 * h : 64 * h + 32] = (q[:, 0] & 0x0F) | ((q[:, 2] & 0x0F) << 4)
        out[:, 64 * h + 32 : 64 * h + 64] = (q[:, 1] & 0x0F) | ((q[:, 3] & 0x0F) << 4)
        out[:, 128 + 32 * h : 160 + 32 * h] = (
            (q[:, 0] >> 4) | ((q[:, 1] >> 4) << 2) | ((q[:, 2] >> 4) << 4) | ((q[:, 3] >> 4) << 6)
        )
    out[:, 192:208] = scales.view(np.uint8)
    out[:, 208:210] = d16.reshape(nb, 1).view(np.uint8)
    out[zero] = 0  # an all-zero block is 210 zero bytes
    return out


def _quant_q6_k(x: np.ndarray) -> np.ndarray:
    blocks = x.reshape(-1, 256)
    out = np.empty((blocks.shape[0], 210), dtype=np.uint8)
    step = _Q6_K_CHUNK // 16
    for b0 in range(0, blocks.shape[0], step):
        out[b0 : b0 + step] = _quant_q6_k_blocks(blocks[b0 : b0 + step])
    return out.reshape(-1)


def quantize(type_name: str, x: np.ndarray) -> np.ndarray:
    """Encode float ``x`` (blocks along the last axis) as ``type_name``; flat uint8 bytes."""
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
    if type_name in ("Q8_0", "Q6_K"):
        if not np.isfinite(x).all():
            raise CodecError(f"{type_name}: x has {int((~np.isfinite(x)).sum())} non-finite values")
        quant = _quant_q8_0 if type_name == "Q8_0" else _quant_q6_k
        return quant(np.ascontiguousarray(x)).reshape(-1)
    rows = x.reshape(-1, shape[-1])
    return packing.quantize_tq2_0(rows) if type_name == "TQ2_0" else packing.quantize_tq1_0(rows)
