"""Ternary codecs: one pack/unpack pair per on-disk layout, vectorised numpy.

Ternary weights ``t`` are integer arrays in {-1, 0, 1} of shape ``(M, K)`` in torch order
(M output rows, K inputs; GGUF dims ``[K, M]``). Every unpacker returns int8 ``(M, K)``, checks
the length of ``data`` before reading, and raises :class:`CodecError` on impossible codes.
Facts: docs/formats.md#3-ternary-byte-layouts (layouts), docs/formats.md#4-where-per-tensor-scales-live
(scales), docs/formats.md#73-packed-uint8-layout (HF packing).

Byte maps (``c = t + 1`` unless said otherwise; "weight (r, k)" = row r, column k):

I2_S (type 36, x86 128/32 layout, docs/formats.md#31-i2_s-type-36)
    Blocks of 128 weights over the row-major flattened tensor (K % 128 == 0, so a block stays
    in one row). Weight ``n = r·K + k`` lies in byte ``32·(n // 128) + (n % 32)`` at bit shift
    ``6 − 2·((n % 128) // 32)`` (MSB-first: bits 7:6 hold block element b, 5:4 hold 32+b, 3:2
    hold 64+b, 1:0 hold 96+b). ``M·K/4`` bytes, then a 32-byte tail whose first 4 bytes are the
    f32 scale (little endian); the other 28 bytes are not data (garbage in real files).

TQ2_0 (type 35, docs/formats.md#34-tq2_0-type-35)
    Each row is cut into 256-weight blocks of 66 bytes: ``qs[64]`` then fp16 ``d``. Block
    element ``e = h·128 + j·32 + m`` (h ∈ {0,1}, j ∈ 0..3, m ∈ 0..31) is in ``qs[h·32 + m]``
    at bits ``2j+1:2j`` (LSB-first). Blocks are ordered row by row.

TQ1_0 (type 34, docs/formats.md#35-tq1_0-type-34)
    256-weight blocks of 54 bytes: ``qs[48]``, ``qh[4]``, fp16 ``d``. Base 3, first trit most
    significant; a byte stores ``⌈v·256/243⌉`` of its trit value ``v``.
    ``qs[m]`` (m < 32) holds elements ``m + 32n`` (n = 0..4); ``qs[32 + m]`` (m < 16) holds
    ``160 + m + 16n`` (n = 0..4); ``qh[j]`` holds ``240 + j + 4n`` (n = 0..3) and a fifth trit 0.

HF packed (transformers ``pack_weights``, docs/formats.md#73-packed-uint8-layout)
    uint8 ``(P, K)`` with ``P = ⌈M/4⌉``; row ``r = q·P + p`` (quarter q = 0..3) lives in packed
    row p at bits ``2q+1:2q`` (LSB-first). Bits of rows ≥ M in the last quarter are 0.

TL1 (type 38, docs/formats.md#32-tl1-type-38; re-derived from ``BitNet:utils/convert-hf-to-gguf-bitnet.py``
``preprocess_weights_tl1`` / ``process_tl1``)
    Pair index ``u = 3·t[r, 2i] + t[r, 2i+1] + 4`` ∈ 0..8, two per byte (high nibble first).
    With tiling (BM, BK, bm) and ``by = 256 // bm``, write
    ``r = mt·BM + bt·bm + rc·16 + r16`` and pair ``i = kt·BK/2 + yb·by/2 + pq·2 + h``.
    Bytes are ordered by ``(mt, kt, bt, yb, rc, pq, r16)`` (last fastest); the byte of that
    position holds ``u[r, i]`` with h = 0 in the high nibble and h = 1 in the low nibble.
    ``M·K/4`` bytes; the f32 scale sits in the hidden slot after them
    (docs/formats.md#42-tl1-and-tl2-hidden-scale-slot).

TL2 (type 39 in the fork, docs/formats.md#33-tl2-type-39; re-derived from the same converter,
``preprocess_weights_tl2`` / ``preprocess_three_weights_tl2`` / ``preprocess_two_weights_tl2``)
    Columns ``[0, three_k)`` with ``three_k = (K // BK)·BK`` use triples, ``[three_k, K)`` pairs.
    Blob = index nibbles of all triples, then all sign bits, then the pair tail, then zeros up
    to ``tl2_padded_nbytes(M, K)``.

    Triple ``i`` of row r is ``(t[r,3i], t[r,3i+1], t[r,3i+2])``, ``v = 9·t0 + 3·t1 + t2``;
    magnitude ``|v|`` (4 bits), sign bit ``v < 0``. Write ``r = mt·BM + bt·32 + g·8 + i8``
    and ``i = kt·BK/3 + yb·2 + j``.

    * index bytes, ordered ``(mt, kt, bt, yb, p)`` with p = 0..31: byte p holds row-in-sub-tile
      ``8·SWAP[p // 8] + p % 8`` where ``SWAP = [0, 2, 1, 3]``; high nibble = |v| of j = 0,
      low nibble = j = 1. ``M·three_k/6`` bytes.
    * sign words: per (mt, kt, bt) and per unit ``u`` of 8 triples (``i = kt·BK/3 + u·8 + g8``),
      sixteen little-endian uint16 ``w[c]`` (c = 0..15); bit ``15 − s`` of ``w[c]`` is the sign
      of triple g8 = s // 2, row-in-sub-tile ``(s % 2)·16 + c``. Ordered ``(mt, kt, bt, u)``.
      ``M·three_k/24`` bytes.
    * pair tail: pair index u as TL1 on the ``two_k`` columns with BK = 32, bm = 32, by = 4:
      row ``r = mt·BM + bt·32 + g·8 + i8``, pair ``i = kt·16 + yb·2 + h``; bytes ordered
      ``(mt, kt, bt, yb, p)`` with the same SWAP of 8-row groups; ``M·two_k/4`` bytes.
    The f32 scale follows in the hidden slot at ``pad32(tl2_padded_nbytes)``.

Sizes of the TL tensors in a GGUF file (docs/formats.md#33-tl2-type-39,
docs/formats.md#42-tl1-and-tl2-hidden-scale-slot; checked against
``BitNet:utils/convert-hf-to-gguf-bitnet.py``, ``fork:ggml/src/ggml.c`` ``ggml_nbytes`` and
``BitNet:utils/templates/tl2_gen_transform.h`` / ``codegen_tl1.py`` transform code):

* TL1: the converter writes ``tl1_nbytes = M·K/4`` bytes; the fork's writer reserves a 32-byte
  slot after them (at ``pad32(M·K/4) = M·K/4``, where the kernel reads the scale);
  ``ggml_nbytes`` reports ``M·K/4 + 32`` (``tl1_ggml_nbytes``).
* TL2: the converter writes ``tl2_padded_nbytes = (K−256)·M/3·5/8 + 256·M/2·4/8`` bytes (the
  real ``tl2_nbytes`` plus zeros; the excess is ``(256 − two_k)·M/24``); the slot follows at
  ``pad32(tl2_padded_nbytes)``, where ggml-bitnet reads the scale; ``ggml_nbytes`` reports
  ``pad32(tl2_padded_nbytes) + 32`` (``tl2_ggml_nbytes``). So the blob occupies the padded
  converter size, not the real packed size, before the hidden scale slot.
"""

from __future__ import annotations

import operator
from typing import Optional

import numpy as np

from bitnet_lab.errors import CodecError
from bitnet_lab.quant.ternary import round_int
from bitnet_lab.quant.tiling import validate_tiling
from bitnet_lab.quant.tiling import TLTiling

QK_I2_S = 128            # weights per I2_S block (x86 layout)
I2_S_TAIL = 32           # bytes after the packed I2_S codes: f32 scale + 28 unused
QK_K = 256               # TQ block length
TQ2_0_BLOCK = 66         # qs[64] + fp16 d
TQ1_0_BLOCK = 54         # qs[48] + qh[4] + fp16 d
# hidden per-tensor scale slot after TL1/TL2 data (docs/formats.md#42-tl1-and-tl2-hidden-scale-slot)
TL_SCALE_SLOT = 32
TL2_SWAP = np.array([0, 2, 1, 3])  # 8-row group order inside a 32-row TL2 sub-tile (AVX2 lanes)

_POW3 = np.array([81, 27, 9, 3, 1], dtype=np.uint16)
_UNPACK_LAYOUTS = ("i2_s", "tl1", "tl2", "tq1_0", "tq2_0", "hf_packed")


# ----------------------------------------------------------------------------- validation


def _dims(M, K, what: str = "shape") -> tuple[int, int]:
    try:
        M, K = operator.index(M), operator.index(K)
    except TypeError:
        raise CodecError(f"{what} must be integers (M, K); got ({M!r}, {K!r})") from None
    if M <= 0 or K <= 0:
        raise CodecError(f"{what} must be positive; got (M, K) = ({M}, {K})")
    return M, K


def _ternary(t, layout: str) -> np.ndarray:
    """Check ``t`` is a 2-D integer array of {-1, 0, 1}; return it as int8 (M, K)."""
    if not isinstance(t, np.ndarray):
        raise CodecError(f"{layout}: t must be a numpy array of {{-1, 0, 1}}; got {type(t).__name__}")
    if t.ndim != 2:
        raise CodecError(f"{layout}: t must be 2-D (M, K); got shape {t.shape}")
    if t.dtype.kind not in "iu":
        raise CodecError(f"{layout}: t must have an integer dtype with values in {{-1, 0, 1}}; got {t.dtype}")
    if t.size == 0:
        raise CodecError(f"{layout}: t is empty, shape {t.shape}")
    bad = (t < -1) | (t > 1) if t.dtype.kind == "i" else t > 1
    if bad.any():
        r, k = np.argwhere(bad)[0]
        raise CodecError(
            f"{layout}: t has {int(bad.sum())} values outside {{-1, 0, 1}}; first t[{r}, {k}] = {t[r, k]}"
        )
    return t.astype(np.int8, copy=False)


def _bytes(data, need: int, layout: str, M: int, K: int) -> np.ndarray:
    """``data`` as a flat uint8 array of at least ``need`` bytes; return exactly the first ``need``."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        arr = np.frombuffer(data, dtype=np.uint8)
    elif isinstance(data, np.ndarray):
        if data.dtype not in (np.uint8, np.int8):
            raise CodecError(f"{layout}: data must be uint8 bytes; got dtype {data.dtype}")
        arr = np.ascontiguousarray(data).view(np.uint8).reshape(-1)
    else:
        raise CodecError(f"{layout}: data must be a uint8 array or bytes; got {type(data).__name__}")
    if arr.size < need:
        raise CodecError(
            f"{layout}: short data for (M, K) = ({M}, {K}): need {need} bytes, got {arr.size}"
        )
    return arr[:need]


def _raise_code3(layout: str, codes: np.ndarray) -> None:
    """CodecError if the 2-bit codes (M, K) contain the invalid value 3."""
    bad = codes == 3
    if bad.any():
        r, k = np.argwhere(bad)[0]
        raise CodecError(
            f"{layout}: {int(bad.sum())} invalid 2-bit codes (3) in the data; first at weight ({r}, {k})"
        )


def _check_multiple(layout: str, K: int, q: int, what: str = "K") -> None:
    if K % q:
        raise CodecError(f"{layout}: {what} = {K} is not a multiple of {q}")


# ----------------------------------------------------------------------------- I2_S


def pack_i2_s(t: np.ndarray) -> np.ndarray:
    """Pack ternary (M, K) into I2_S codes, uint8 (M·K/4,) — no scale tail (see i2_s_blob)."""
    t = _ternary(t, "i2_s")
    M, K = t.shape
    _check_multiple("i2_s", K, QK_I2_S)
    # (blocks, 4 groups of 32, 32): group g of a 128-block goes to bits 7-2g : 6-2g.
    c = (t + 1).astype(np.uint8).reshape(-1, 4, 32)
    out = (c[:, 0] << 6) | (c[:, 1] << 4) | (c[:, 2] << 2) | c[:, 3]
    return out.reshape(-1)


def i2_s_blob(t: np.ndarray, scale) -> np.ndarray:
    """The full I2_S tensor blob: packed codes + 32-byte tail (f32 LE scale, then 28 zeros)."""
    s = np.float32(scale)
    if not np.isfinite(s):
        raise CodecError(f"i2_s: scale must be finite; got {scale!r}")
    packed = pack_i2_s(t)
    tail = np.zeros(I2_S_TAIL, dtype=np.uint8)
    tail[:4] = np.array([s], dtype="<f4").view(np.uint8)
    return np.concatenate([packed, tail])


def unpack_i2_s(data, M: int, K: int) -> np.ndarray:
    """Decode I2_S codes to int8 (M, K). ``data`` may be longer (the tail is ignored)."""
    M, K = _dims(M, K)
    _check_multiple("i2_s", K, QK_I2_S)
    b = _bytes(data, M * K // 4, "i2_s", M, K).reshape(-1, 1, 32)
    # (blocks, 4, 32): group g read from shift 6 - 2g.
    codes = (b >> np.array([6, 4, 2, 0], dtype=np.uint8).reshape(1, 4, 1)) & 3
    codes = codes.reshape(M, K)
    _raise_code3("i2_s", codes)
    return codes.astype(np.int8) - 1


def read_i2_s_scale(data, M: int, K: int) -> np.float32:
    """The f32 scale in the first 4 bytes of the I2_S tail (byte offset M·K/4)."""
    M, K = _dims(M, K)
    _check_multiple("i2_s", K, QK_I2_S)
    b = _bytes(data, M * K // 4 + 4, "i2_s", M, K)
    return np.float32(b[-4:].view("<f4")[0])


# ----------------------------------------------------------------------------- TQ2_0 / TQ1_0


def _tq_check(layout: str, M: int, K: int) -> int:
    if K % QK_K:
        raise CodecError(f"{layout}: rows of K = {K} weights are not a multiple of {QK_K}")
    return M * (K // QK_K)


def _block_scales(d, M: int, K: int, layout: str) -> np.ndarray:
    """Check block scales: float16 (M, K // 256); return them as a little-endian (nb, 2) byte view."""
    if not isinstance(d, np.ndarray) or d.dtype != np.float16:
        raise CodecError(
            f"{layout}: block scales must be a float16 array (M, K//256); got "
            f"{getattr(d, 'dtype', type(d).__name__)} (convert explicitly with .astype(np.float16))"
        )
    if d.shape != (M, K // QK_K):
        raise CodecError(f"{layout}: block scales must have shape ({M}, {K // QK_K}); got {d.shape}")
    return d.astype("<f2").reshape(-1, 1).view(np.uint8)


def _tq2_pack_codes(c: np.ndarray, d_bytes: np.ndarray) -> np.ndarray:
    """codes uint8 (nb, 256) in {0,1,2} + d bytes (nb, 2) → TQ2_0 blocks, flat."""
    nb = c.shape[0]
    # (nb, half h, group j, m): group j goes to bits 2j+1:2j of qs[h·32 + m].
    c = c.reshape(nb, 2, 4, 32)
    qs = c[:, :, 0] | (c[:, :, 1] << 2) | (c[:, :, 2] << 4) | (c[:, :, 3] << 6)
    return np.concatenate([qs.reshape(nb, 64), d_bytes], axis=1).reshape(-1)


def _tq1_pack_codes(c: np.ndarray, d_bytes: np.ndarray) -> np.ndarray:
    """codes uint8 (nb, 256) in {0,1,2} + d bytes (nb, 2) → TQ1_0 blocks, flat."""
    nb = c.shape[0]
    c = c.astype(np.uint16)
    # v = Σ c_n·3^(4−n) over n (axis 1); element m + 32n / 160 + m + 16n / 240 + j + 4n.
    v0 = (c[:, :160].reshape(nb, 5, 32) * _POW3[:, None]).sum(axis=1, dtype=np.uint16)
    v1 = (c[:, 160:240].reshape(nb, 5, 16) * _POW3[:, None]).sum(axis=1, dtype=np.uint16)
    # qh: four trits weighted 3^(3−n)·3 = 81, 27, 9, 3 (a fifth, zero trit in the last place).
    vh = (c[:, 240:].reshape(nb, 4, 4) * _POW3[:4, None]).sum(axis=1, dtype=np.uint16)
    v = np.concatenate([v0, v1, vh], axis=1)
    # ⌈v·256/243⌉ in 16-bit integer arithmetic, as ggml and gguf-py do.
    q = ((v * 256 + 242) // 243).astype(np.uint8)
    return np.concatenate([q, d_bytes], axis=1).reshape(-1)


def pack_tq2_0(t: np.ndarray, d: np.ndarray) -> np.ndarray:
    """TQ2_0 blocks of ternary (M, K) with float16 block scales d (M, K//256); flat uint8."""
    t = _ternary(t, "tq2_0")
    M, K = t.shape
    nb = _tq_check("tq2_0", M, K)
    db = _block_scales(d, M, K, "tq2_0")
    return _tq2_pack_codes((t + 1).astype(np.uint8).reshape(nb, QK_K), db)


def pack_tq1_0(t: np.ndarray, d: np.ndarray) -> np.ndarray:
    """TQ1_0 blocks of ternary (M, K) with float16 block scales d (M, K//256); flat uint8."""
    t = _ternary(t, "tq1_0")
    M, K = t.shape
    nb = _tq_check("tq1_0", M, K)
    db = _block_scales(d, M, K, "tq1_0")
    return _tq1_pack_codes((t + 1).astype(np.uint8).reshape(nb, QK_K), db)


def _tq_d(blocks: np.ndarray, M: int, K: int) -> np.ndarray:
    """The fp16 d at the end of each block (nb, B) → float16 (M, K//256)."""
    return blocks[:, -2:].copy().view("<f2").astype(np.float16).reshape(M, K // QK_K)


def unpack_tq2_0(data, M: int, K: int) -> tuple[np.ndarray, np.ndarray]:
    """Decode TQ2_0 to (t int8 (M, K), d float16 (M, K//256))."""
    M, K = _dims(M, K)
    nb = _tq_check("tq2_0", M, K)
    blocks = _bytes(data, nb * TQ2_0_BLOCK, "tq2_0", M, K).reshape(nb, TQ2_0_BLOCK)
    qs = blocks[:, :64].reshape(nb, 2, 1, 32)
    codes = (qs >> np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 1, 4, 1)) & 3  # (nb, h, j, m)
    codes = codes.reshape(M, K)
    _raise_code3("tq2_0", codes)
    return codes.astype(np.int8) - 1, _tq_d(blocks, M, K)


def unpack_tq1_0(data, M: int, K: int) -> tuple[np.ndarray, np.ndarray]:
    """Decode TQ1_0 to (t int8 (M, K), d float16 (M, K//256))."""
    M, K = _dims(M, K)
    nb = _tq_check("tq1_0", M, K)
    blocks = _bytes(data, nb * TQ1_0_BLOCK, "tq1_0", M, K).reshape(nb, TQ1_0_BLOCK)
    pow3 = np.array([1, 3, 9, 27, 81], dtype=np.uint8)

    def trits(b: np.ndarray, n: int) -> np.ndarray:
        # trit n of byte b: (b·3ⁿ mod 256)·3 >> 8, with the uint8 multiply wrapping (ggml).
        q8 = b[:, None, :] * pow3[:n].reshape(1, n, 1)  # (nb, n, bytes), uint8 wrap-around
        return ((q8.astype(np.uint16) * 3) >> 8).astype(np.uint8).reshape(b.shape[0], -1)

    codes = np.concatenate(
        [trits(blocks[:, :32], 5), trits(blocks[:, 32:48], 5), trits(blocks[:, 48:52], 4)], axis=1
    )
    # (q8·3) >> 8 ≤ 2 for every byte, so TQ1_0 has no invalid code to reject.
    return codes.reshape(M, K).astype(np.int8) - 1, _tq_d(blocks, M, K)


def _float_rows(x, layout: str) -> np.ndarray:
    if not isinstance(x, np.ndarray) or x.ndim != 2 or x.dtype.kind != "f":
        raise CodecError(
            f"{layout}: x must be a 2-D float array (M, K); got "
            f"{getattr(x, 'dtype', type(x).__name__)} {getattr(x, 'shape', '')}"
        )
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise CodecError(f"{layout}: x has {int((~np.isfinite(x)).sum())} non-finite values")
    return x


def _tq_quantize_codes(x: np.ndarray, layout: str) -> tuple[np.ndarray, np.ndarray]:
    """Block absmax quantisation (docs/formats.md#34-tq2_0-type-35): codes uint8 (nb, 256) and d bytes
    (nb, 2)."""
    x = _float_rows(x, layout)
    M, K = x.shape
    nb = _tq_check(layout, M, K)
    blocks = x.reshape(nb, QK_K)
    d = np.abs(blocks).max(axis=1, keepdims=True)  # absmax, float32
    with np.errstate(divide="ignore"):
        inv = np.where(d == 0, np.float32(0), np.float32(1) / d).astype(np.float32)
    # x·(1/d) in float32, then round half away from zero (ggml lroundf, gguf-py np_roundf).
    q = round_int(blocks * inv, "half_away")
    c = (q.astype(np.int8) + 1).astype(np.uint8)
    return c, d.astype("<f2").view(np.uint8)


def quantize_tq2_0(x: np.ndarray) -> np.ndarray:
    """TQ2_0 of float rows x (M, K), byte-identical to gguf.quants.quantize; flat uint8."""
    c, db = _tq_quantize_codes(x, "tq2_0")
    return _tq2_pack_codes(c, db)


def quantize_tq1_0(x: np.ndarray) -> np.ndarray:
    """TQ1_0 of float rows x (M, K), byte-identical to gguf.quants.quantize; flat uint8."""
    c, db = _tq_quantize_codes(x, "tq1_0")
    return _tq1_pack_codes(c, db)


def tq_default_block_scales(t: np.ndarray, scale) -> np.ndarray:
    """fp16(scale) for every 256-block of ``t`` holding a non-zero, 0 for all-zero blocks: the d
    that quantize_tq* gives for the input ``t·scale``."""
    t = _ternary(t, "tq")
    M, K = t.shape
    _tq_check("tq", M, K)
    s = np.float32(scale)
    if not np.isfinite(s) or s < 0:
        raise CodecError(f"tq: the scale must be finite and >= 0; got {scale!r}")
    nz = (t.reshape(M, K // QK_K, QK_K) != 0).any(axis=2)
    return np.where(nz, np.float16(s), np.float16(0)).astype(np.float16)


# ----------------------------------------------------------------------------- HF packed


def pack_hf(t: np.ndarray) -> np.ndarray:
    """transformers layout: ternary (R, C) → uint8 (⌈R/4⌉, C), quarters along dim 0, LSB-first."""
    t = _ternary(t, "hf_packed")
    R, C = t.shape
    P = -(-R // 4)
    c = np.zeros((4 * P, C), dtype=np.uint8)  # rows past R stay 0 bits, as transformers leaves them
    c[:R] = t + 1
    c = c.reshape(4, P, C)  # quarter q holds rows q·P .. q·P+P−1
    return c[0] | (c[1] << 2) | (c[2] << 4) | (c[3] << 6)


def unpack_hf(packed, R: int) -> np.ndarray:
    """transformers layout: uint8 (⌈R/4⌉, C) → ternary int8 (R, C)."""
    if not isinstance(packed, np.ndarray) or packed.ndim != 2 or packed.dtype not in (np.uint8, np.int8):
        raise CodecError(
            f"hf_packed: packed must be a 2-D uint8 array (⌈R/4⌉, C); got "
            f"{getattr(packed, 'dtype', type(packed).__name__)} {getattr(packed, 'shape', '')}"
        )
    try:
        R = operator.index(R)
    except TypeError:
        raise CodecError(f"hf_packed: R must be an integer; got {R!r}") from None
    P, C = packed.shape
    if R <= 0 or -(-R // 4) != P:
        raise CodecError(f"hf_packed: {P} packed rows cannot hold R = {R} rows (need ⌈R/4⌉ = {-(-R // 4)})")
    b = packed.view(np.uint8)[None, :, :]
    codes = ((b >> np.array([0, 2, 4, 6], dtype=np.uint8).reshape(4, 1, 1)) & 3).reshape(4 * P, C)[:R]
    _raise_code3("hf_packed", codes)
    return codes.astype(np.int8) - 1


# ----------------------------------------------------------------------------- TL1 / TL2 common


def _tl_tiling(layout: str, M: int, K: int, tiling) -> tuple[int, int, int]:
    if tiling is None:
        raise CodecError(
            f"{layout}: a tiling (BM, BK, bm) is required; TL files do not record it "
            f"(see bitnet_lab.quant.tiling.default_tiling)"
        )
    validate_tiling(layout, M, K, tiling)
    return int(tiling.BM), int(tiling.BK), int(tiling.bm)


def _pad32(n: int) -> int:
    return -(-n // 32) * 32


# ----------------------------------------------------------------------------- TL1


def tl1_nbytes(M: int, K: int) -> int:
    """Index bytes of a TL1 tensor as the converter writes them: M·K/4 (2 bits per weight)."""
    M, K = _dims(M, K)
    return M * K // 4


def tl1_ggml_nbytes(M: int, K: int) -> int:
    """What the fork's ``ggml_nbytes`` reports for a TL1 tensor: M·K/4 + 32 (index bytes + slot)."""
    return tl1_nbytes(M, K) + TL_SCALE_SLOT


def _pair_index(t: np.ndarray) -> np.ndarray:
    """(M, K) ternary → (M, K/2) uint8 index 3·t[:, 2i] + t[:, 2i+1] + 4 ∈ 0..8."""
    return (3 * t[:, 0::2] + t[:, 1::2] + 4).astype(np.uint8)


def _pair_values(u: np.ndarray, layout: str, where: str) -> np.ndarray:
    """(M, K/2) pair indices → ternary int8 (M, K); reject indices > 8."""
    bad = u > 8
    if bad.any():
        r, i = np.argwhere(bad)[0]
        raise CodecError(
            f"{layout}: {int(bad.sum())} invalid pair indices (> 8) in the {where}; "
            f"first {int(u[r, i])} for weights ({r}, {2 * i}..{2 * i + 1})"
        )
    t = np.empty((u.shape[0], 2 * u.shape[1]), dtype=np.int8)
    t[:, 0::2] = u // 3
    t[:, 1::2] = u % 3
    return t - 1


def _nibbles(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    return ((hi << 4) | lo).astype(np.uint8)


def _split_nibbles(b: np.ndarray) -> np.ndarray:
    """uint8 (...) → (..., 2): [..., 0] = high nibble, [..., 1] = low nibble."""
    return np.stack([b >> 4, b & 0x0F], axis=-1)


def pack_tl1(t: np.ndarray, tiling: TLTiling) -> np.ndarray:
    """TL1 index bytes (M·K/4,) of ternary (M, K) under ``tiling`` (no scale slot)."""
    t = _ternary(t, "tl1")
    M, K = t.shape
    BM, BK, bm = _tl_tiling("tl1", M, K, tiling)
    by = 256 // bm
    u = _pair_index(t)
    # Axes of u[r, i]: r = (mt, bt, rc, r16), i = (kt, yb, pq, h)  — see the module docstring.
    u = u.reshape(M // BM, BM // bm, bm // 16, 16, K // BK, BK // by, by // 4, 2)
    # → (mt, kt, bt, yb, rc, pq, r16, h)
    u = u.transpose(0, 4, 1, 5, 2, 6, 3, 7)
    return _nibbles(u[..., 0], u[..., 1]).reshape(-1)


def unpack_tl1(data, M: int, K: int, tiling: TLTiling) -> np.ndarray:
    """Decode TL1 index bytes to ternary int8 (M, K); ``data`` may be longer (slot ignored)."""
    M, K = _dims(M, K)
    BM, BK, bm = _tl_tiling("tl1", M, K, tiling)
    by = 256 // bm
    b = _bytes(data, M * K // 4, "tl1", M, K)
    # bytes in (mt, kt, bt, yb, rc, pq, r16) order; nibbles add h last.
    u = _split_nibbles(b.reshape(M // BM, K // BK, BM // bm, BK // by, bm // 16, by // 4, 16))
    # (mt, kt, bt, yb, rc, pq, r16, h) → (mt, bt, rc, r16, kt, yb, pq, h) = (r, i)
    u = u.transpose(0, 2, 4, 6, 1, 3, 5, 7).reshape(M, K // 2)
    return _pair_values(u, "tl1", "index bytes")


# ----------------------------------------------------------------------------- TL2


def _tl2_split(K: int, BK: int) -> tuple[int, int]:
    three_k = (K // BK) * BK
    return three_k, K - three_k


def tl2_nbytes(M: int, K: int, tiling: TLTiling) -> int:
    """Real packed bytes of a TL2 tensor: M·three_k/6 + M·three_k/24 + M·two_k/4."""
    M, K = _dims(M, K)
    _, BK, _ = _tl_tiling("tl2", M, K, tiling)
    three_k, two_k = _tl2_split(K, BK)
    return M * three_k // 6 + M * three_k // 24 + M * two_k // 4


def tl2_padded_nbytes(M: int, K: int) -> int:
    """Bytes the converter writes for a TL2 tensor (the real packed bytes, zero-padded):
    ``(K−256)·M/3·5/8 + 256·M/2·4/8`` with left-to-right integer division, as in
    ``BitNet:utils/convert-hf-to-gguf-bitnet.py`` ``preprocess_weights_tl2`` (the numpy array it
    hands to the writer) and ``fork:ggml/src/ggml.c`` ``ggml_nbytes``. Requires K ≥ 256."""
    M, K = _dims(M, K)
    if K < 256:
        raise CodecError(f"tl2: the TL2 size formula needs K >= 256; got K = {K}")
    return (K - 256) * M // 3 * 5 // 8 + 256 * M // 2 * 4 // 8


def tl2_ggml_nbytes(M: int, K: int) -> int:
    """What the fork's ``ggml_nbytes`` reports for a TL2 tensor: ``pad32(tl2_padded_nbytes) + 32``,
    i.e. the converter's padded data, zeros to a 32-byte boundary, and the 32-byte hidden scale
    slot. In the file the blob occupies ``tl2_padded_nbytes`` data bytes (padded to 32 by the
    writer) and the slot follows at ``pad32(tl2_padded_nbytes)``, where ``ggml-bitnet`` reads the
    scale (``BitNet:utils/templates/tl2_gen_transform.h``)."""
    return _pad32(tl2_padded_nbytes(M, K)) + TL_SCALE_SLOT


def tl_scale_offset(layout: str, M: int, K: int) -> int:
    """Byte offset, from the start of a TL tensor's data, of its hidden f32 scale:
    ``pad32(data bytes)`` (docs/formats.md#42-tl1-and-tl2-hidden-scale-slot). For TL1 the kernel reads at
    M·K/4, which equals pad32(M·K/4) for every legal tiling (M % 32 == 0 and K % 4 == 0)."""
    if layout == "tl1":
        return _pad32(tl1_nbytes(M, K))
    if layout == "tl2":
        return _pad32(tl2_padded_nbytes(M, K))
    raise CodecError(f"tl_scale_offset: layout must be 'tl1' or 'tl2'; got {layout!r}")


def _tl2_three_pack(t3: np.ndarray, BM: int, BK: int) -> tuple[np.ndarray, np.ndarray]:
    """(M, three_k) → (index bytes (M·three_k/6,), sign bytes (M·three_k/24,))."""
    M, K3 = t3.shape
    tt = t3.astype(np.int16).reshape(M, K3 // 3, 3)
    v = 9 * tt[..., 0] + 3 * tt[..., 1] + tt[..., 2]  # (M, K3/3) ∈ −13..13
    mag = np.abs(v).astype(np.uint8)
    neg = (v < 0).astype(np.uint16)

    # Index nibbles. r = (mt, bt, g, i8), i = (kt, yb, j); position g of a sub-tile holds
    # row group TL2_SWAP[g] (the swap is its own inverse).
    m = mag.reshape(M // BM, BM // 32, 4, 8, K3 // BK, BK // 6, 2)[:, :, TL2_SWAP]
    m = m.transpose(0, 4, 1, 5, 2, 3, 6)  # (mt, kt, bt, yb, g, i8, j)
    idx = _nibbles(m[..., 0], m[..., 1]).reshape(-1)

    # Sign words. r = (mt, bt, r32), i = (kt, u, g8); per (mt, kt, bt, u) the 8×32 signs in
    # (g8, r32) order are read as 16 rows s of 16 columns c: word c, bit 15 − s.
    s = neg.reshape(M // BM, BM // 32, 32, K3 // BK, BK // 24, 8)
    s = s.transpose(0, 3, 1, 4, 5, 2).reshape(M // BM, K3 // BK, BM // 32, BK // 24, 16, 16)
    shifts = (15 - np.arange(16, dtype=np.uint16)).reshape(16, 1)
    words = (s << shifts).sum(axis=-2, dtype=np.uint16)  # (mt, kt, bt, u, c); bits are disjoint
    sign = words.astype("<u2").view(np.uint8).reshape(-1)
    return idx, sign


def _tl2_three_unpack(idx: np.ndarray, sign: np.ndarray, M: int, K3: int, BM: int, BK: int) -> np.ndarray:
    m = _split_nibbles(idx.reshape(M // BM, K3 // BK, BM // 32, BK // 6, 4, 8))  # (mt,kt,bt,yb,g,i8,j)
    m = m.transpose(0, 2, 4, 5, 1, 3, 6)[:, :, TL2_SWAP]  # (mt, bt, g→row group, i8, kt, yb, j)
    mag = m.reshape(M, K3 // 3).astype(np.int16)
    bad = mag > 13
    if bad.any():
        r, i = np.argwhere(bad)[0]
        raise CodecError(
            f"tl2: {int(bad.sum())} invalid triple magnitudes (> 13); first {int(mag[r, i])} "
            f"for weights ({r}, {3 * i}..{3 * i + 2})"
        )
    words = sign.view("<u2").astype(np.uint16).reshape(M // BM, K3 // BK, BM // 32, BK // 24, 1, 16)
    shifts = (15 - np.arange(16, dtype=np.uint16)).reshape(16, 1)
    s = (words >> shifts) & 1  # (mt, kt, bt, u, s, c) = (mt, kt, bt, u, g8, r32) after reshape
    s = s.reshape(M // BM, K3 // BK, BM // 32, BK // 24, 8, 32)
    s = s.transpose(0, 2, 5, 1, 3, 4).reshape(M, K3 // 3)  # (mt, bt, r32, kt, u, g8)
    v = np.where(s == 1, -mag, mag)  # v = 9·t0 + 3·t1 + t2 ∈ −13..13
    # v's three balanced-ternary digits are (t0, t1, t2); peel them off lowest first.
    t = np.empty((M, K3 // 3, 3), dtype=np.int8)
    for pos in (2, 1, 0):
        digit = ((v + 1) % 3) - 1  # the digit in −1..1 congruent to v mod 3
        t[..., pos] = digit
        v = (v - digit) // 3
    return t.reshape(M, K3)


def _tl2_tail_pack(t2: np.ndarray, BM: int) -> np.ndarray:
    M, K2 = t2.shape
    u = _pair_index(t2)  # (M, K2/2); r = (mt, bt, g, i8), i = (kt, yb, h) with 16 pairs per kt
    u = u.reshape(M // BM, BM // 32, 4, 8, K2 // 32, 8, 2)[:, :, TL2_SWAP]
    u = u.transpose(0, 4, 1, 5, 2, 3, 6)  # (mt, kt, bt, yb, g, i8, h)
    return _nibbles(u[..., 0], u[..., 1]).reshape(-1)


def _tl2_tail_unpack(b: np.ndarray, M: int, K2: int, BM: int) -> np.ndarray:
    u = _split_nibbles(b.reshape(M // BM, K2 // 32, BM // 32, 8, 4, 8))  # (mt, kt, bt, yb, g, i8, h)
    u = u.transpose(0, 2, 4, 5, 1, 3, 6)[:, :, TL2_SWAP]  # (mt, bt, g, i8, kt, yb, h)
    return _pair_values(u.reshape(M, K2 // 2), "tl2", "two-weight tail")


def pack_tl2(t: np.ndarray, tiling: TLTiling, pad: bool = True) -> np.ndarray:
    """TL2 bytes of ternary (M, K) under ``tiling``: index nibbles, sign plane, pair tail, and
    (``pad=True``) zeros up to ``tl2_padded_nbytes(M, K)`` — exactly what the converter writes
    before the hidden scale slot."""
    t = _ternary(t, "tl2")
    M, K = t.shape
    BM, BK, _ = _tl_tiling("tl2", M, K, tiling)
    three_k, two_k = _tl2_split(K, BK)
    idx, sign = _tl2_three_pack(t[:, :three_k], BM, BK)
    parts = [idx, sign]
    if two_k:
        parts.append(_tl2_tail_pack(t[:, three_k:], BM))
    out = np.concatenate(parts)
    if pad:
        out = np.concatenate([out, np.zeros(tl2_padded_nbytes(M, K) - out.size, dtype=np.uint8)])
    return out


def unpack_tl2(data, M: int, K: int, tiling: TLTiling) -> np.ndarray:
    """Decode TL2 bytes to ternary int8 (M, K). Reads only the real packed bytes
    (``tl2_nbytes``); the zero padding and the scale slot after them are ignored."""
    M, K = _dims(M, K)
    BM, BK, _ = _tl_tiling("tl2", M, K, tiling)
    three_k, two_k = _tl2_split(K, BK)
    b = _bytes(data, tl2_nbytes(M, K, tiling), "tl2", M, K)
    n_idx, n_sign = M * three_k // 6, M * three_k // 24
    t = np.empty((M, K), dtype=np.int8)
    t[:, :three_k] = _tl2_three_unpack(b[:n_idx], b[n_idx : n_idx + n_sign], M, three_k, BM, BK)
    if two_k:
        t[:, three_k:] = _tl2_tail_unpack(b[n_idx + n_sign :], M, two_k, BM)
    return t


# ----------------------------------------------------------------------------- dispatch


def ternary_blob_nbytes(layout: str, M: int, K: int, tiling: Optional[TLTiling] = None) -> int:
    """Size of a ternary tensor's own data in a GGUF file, excluding the TL hidden scale slot:
    i2_s ``M·K/4 + 32`` (codes + tail), tq2_0/tq1_0 ``blocks × 66/54``, tl1 ``M·K/4``, tl2
    ``tl2_padded_nbytes`` (what the converter writes), hf_packed ``⌈M/4⌉·K``. A tiling, when
    given for tl1/tl2, is validated against the shape."""
    M, K = _dims(M, K)
    if layout == "i2_s":
        _check_multiple("i2_s", K, QK_I2_S)
        return M * K // 4 + I2_S_TAIL
    if layout in ("tq2_0", "tq1_0"):
        nb = _tq_check(layout, M, K)
        return nb * (TQ2_0_BLOCK if layout == "tq2_0" else TQ1_0_BLOCK)
    if layout == "tl1":
        if tiling is not None:
            _tl_tiling(layout, M, K, tiling)
        return tl1_nbytes(M, K)
    if layout == "tl2":
        if tiling is not None:
            _tl_tiling(layout, M, K, tiling)
        return tl2_padded_nbytes(M, K)
    if layout == "hf_packed":
        return -(-M // 4) * K
    raise CodecError(f"unknown ternary layout {layout!r}; expected one of {_UNPACK_LAYOUTS}")


def unpack(layout: str, data, M: int, K: int, tiling: Optional[TLTiling] = None) -> np.ndarray:
    """Decode ``data`` in ``layout`` to ternary int8 (M, K) (TQ: the codes only, not d)."""
    if layout == "i2_s":
        return unpack_i2_s(data, M, K)
    if layout == "tq2_0":
        return unpack_tq2_0(data, M, K)[0]
    if layout == "tq1_0":
        return unpack_tq1_0(data, M, K)[0]
    if layout == "tl1":
        return unpack_tl1(data, M, K, tiling)
    if layout == "tl2":
        return unpack_tl2(data, M, K, tiling)
    if layout == "hf_packed":
        M, K = _dims(M, K)
        if isinstance(data, np.ndarray) and data.ndim == 2:
            packed = data
        else:
            packed = _bytes(data, -(-M // 4) * K, "hf_packed", M, K).reshape(-1, K)
        if packed.shape != (-(-M // 4), K):
            raise CodecError(f"hf_packed: packed shape {packed.shape} does not match (⌈{M}/4⌉, {K})")
        return unpack_hf(packed, M)
    raise CodecError(f"unknown ternary layout {layout!r}; expected one of {_UNPACK_LAYOUTS}")


def pack(
    layout: str,
    t: np.ndarray,
    *,
    scale=None,
    block_scales: Optional[np.ndarray] = None,
    tiling: Optional[TLTiling] = None,
) -> np.ndarray:
    """The bytes a GGUF (or safetensors, for hf_packed) blob of ``t`` in ``layout`` holds.

    - i2_s: codes + tail with ``scale`` (required);
    - tq2_0 / tq1_0: blocks with ``block_scales`` (float16 (M, K//256)) or, if absent,
      :func:`tq_default_block_scales` of ``scale``;
    - tl1 / tl2: packed data under ``tiling`` (required), without the hidden scale slot;
    - hf_packed: uint8 (⌈M/4⌉, K).
    """
    if layout == "i2_s":
        if scale is None:
            raise CodecError("i2_s: pack needs the per-tensor scale")
        return i2_s_blob(t, scale)
    if layout in ("tq2_0", "tq1_0"):
        t = _ternary(t, layout)
        M, K = t.shape
        _tq_check(layout, M, K)
        if block_scales is None:
            if scale is None:
                raise CodecError(f"{layout}: pack needs block_scales or a scale")
            block_scales = tq_default_block_scales(t, scale)
        return (pack_tq2_0 if layout == "tq2_0" else pack_tq1_0)(t, block_scales)
    if layout == "tl1":
        return pack_tl1(t, tiling)
    if layout == "tl2":
        return pack_tl2(t, tiling)
    if layout == "hf_packed":
        return pack_hf(t)
    raise CodecError(f"unknown ternary layout {layout!r}; expected one of {_UNPACK_LAYOUTS}")
