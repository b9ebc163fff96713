"""TL1 / TL2 lookup tables and LUT mat-vec products in numpy: the twins of the native LUT
kernels (cython_kernels/src/lut_*.c, :mod:`bitnet_lab.kernels` ``tl1_*`` / ``tl2_*``).

Facts: docs/kernels.md#3-tl1-arm-neon-lut (TL1), docs/kernels.md#4-tl2-x86-avx2-lut (TL2),
docs/kernels.md#5-tiling-parameters-and-code-generation (tiling); docs/numerics.md#22-tl1-and-tl2-lut-path,
docs/numerics.md#33-tl1-and-tl2-epilogue; docs/formats.md#32-tl1-type-38, docs/formats.md#33-tl2-type-39 (byte
layouts, also in the docstring of :mod:`bitnet_lab.quant.packing`).

Activations
    The LUT kernels take an already quantised int8 activation row ``q`` (K,). bitnet.cpp's TL
    path quantises with ``s = 127 / max|b|`` and no 1e-5 floor (docs/numerics.md#22-tl1-and-tl2-lut-path);
    bitnet_lab uses its single policy :func:`bitnet_lab.quant.quantize_activations` for every kernel
    family instead. It gives the same ``q`` and ``s_x`` for every row with a non-zero entry
    (absmax ≥ 1e-5 for any real activation) and ``q = 0`` instead of an ``inf`` scale for an
    all-zero row. ``s_x`` is not an input of the kernels: the epilogue ``acc / s_x · γ``
    (docs/numerics.md#33-tl1-and-tl2-epilogue, :func:`bitnet_lab.quant.bitlinear_epilogue`) is the caller's,
    and the integer result needs no ``sum_q`` correction because LUT entries are already signed.

Tables (one per group of activations; int16 entries; ``b`` are the int8 activations)
    TL1 pair table (docs/kernels.md#31-lut-construction-per-activation-row), pair ``j`` =
    ``(b0, b1) = (q[2j], q[2j+1])``: entry ``u = 3·t0 + t1 + 4`` (u = 0..8) is ``t0·b0 + t1·b1``; entries
    9..15 are 0. The TL2
    two-weight tail uses the same tables.
    TL2 triple table (docs/kernels.md#41-lut-construction), triple ``j`` = ``q[3j : 3j+3]``: entry ``m``
    (0..13) is ``t0·b0 + t1·b1 + t2·b2`` for the triple with ``9·t0 + 3·t1 + t2 = +m`` (leading non-zero
    digit positive); entries 14, 15 are 0. A weight triple with ``v < 0`` reads entry ``|v|``
    and negates it (its sign bit).
    A TL2 row's tables: the ``three_k/3`` triple tables of columns ``[0, three_k)``
    (``three_k = (K // BK)·BK``), then the ``two_k/2`` pair tables of the tail ``[three_k, K)``.
    Range: |entry| ≤ 2·128 (TL1) and 3·128 (TL2) for any int8 row (−128 included).

Byte-plane form (what the native kernels build and read; uint8 ``(n_tables, 32)``)
    Table ``j`` occupies bytes ``[32·j, 32·j + 32)`` of the LUT buffer: bytes 0..15 are the
    low bytes of entries 0..15, bytes 16..31 their high bytes (two's complement), so
    ``entry[e] = int16(plane[16 + e] << 8 | plane[e])``. A 16-byte plane is exactly one
    ``pshufb`` / ``vqtbl1q`` table: the kernels look a 4-bit index up in the low plane and in
    the high plane and interleave the two results into int16 (``unpacklo/hi_epi8``,
    ``vzip1q/vzip2q``). Tables are in activation order, so a kernel working on the pairs /
    triples ``j0 .. j1`` of a row reads the bytes ``[32·j0, 32·j1)``; AVX2 loads each plane as
    a 16-byte half (broadcast to both lanes, or two planes of different tables combined), NEON
    loads it as one q register. bitnet.cpp interleaves its tables differently (an 8×8
    transpose, docs/kernels.md#31-lut-construction-per-activation-row); LUTs never leave memory, so only the
    packed weights have to match its layout.

GEMV twins
    :func:`tl1_gemv_ref` / :func:`tl2_gemv_ref` decode the packed index nibbles (and the TL2
    sign plane) of the file's bytes under a tiling and sum the looked-up entries per output
    row: the exact int32 ``Σ_k t[r, k]·q[k]``. An index outside the table (TL1 / TL2-tail pair
    index > 8, TL2 magnitude > 13) raises :class:`CodecError` — a table lookup would silently
    read a padding 0 there.
"""

from __future__ import annotations

import numpy as np

from bitnet_lab.errors import CodecError
from bitnet_lab.quant.tiling import validate_tiling
from bitnet_lab.quant.tiling import TLTiling

LUT_ENTRIES = 16        # entries per table (a 4-bit index)
LUT_TABLE_BYTES = 32    # bytes per table in byte-plane form: 16 low bytes + 16 high bytes
TL1_MAX_INDEX = 8       # pair index u = 3·t0 + t1 + 4 ∈ 0..8
TL2_MAX_MAGNITUDE = 13  # triple magnitude |9·t0 + 3·t1 + t2| ∈ 0..13
TL2_TAIL_BK = 32        # the TL2 pair tail is tiled in 32-column blocks
_SWAP = np.array([0, 2, 1, 3])  # 8-row group order in a 32-row TL2 sub-tile (packing.TL2_SWAP)


def _balanced_digits(values: np.ndarray, n: int) -> np.ndarray:
    """Balanced-ternary digits (most significant first) of ``values``: (len, n) int16 in −1..1."""
    v = values.astype(np.int16).copy()
    out = np.zeros((v.size, n), dtype=np.int16)
    for pos in range(n - 1, -1, -1):
        digit = ((v + 1) % 3) - 1  # the digit in −1..1 congruent to v mod 3
        out[:, pos] = digit
        v = (v - digit) // 3
    return out


# Weight digits behind every table entry; rows past the valid indices are 0 (padding entries).
# TL1_DIGITS[u] = (t0, t1) with u = 3·t0 + t1 + 4; TL2_DIGITS[m] = (t0, t1, t2) with 9·t0+3·t1+t2 = m.
TL1_DIGITS = np.zeros((LUT_ENTRIES, 2), dtype=np.int16)
TL1_DIGITS[: TL1_MAX_INDEX + 1] = _balanced_digits(np.arange(TL1_MAX_INDEX + 1) - 4, 2)
TL2_DIGITS = np.zeros((LUT_ENTRIES, 3), dtype=np.int16)
TL2_DIGITS[: TL2_MAX_MAGNITUDE + 1] = _balanced_digits(np.arange(TL2_MAX_MAGNITUDE + 1), 3)


# ----------------------------------------------------------------------------- validation


def check_q_row(q_row, who: str) -> np.ndarray:
    """``q_row`` as a 1-D int8 array (no copy when it already is one)."""
    if not isinstance(q_row, np.ndarray):
        raise CodecError(f"{who}: q_row must be a numpy int8 array, got {type(q_row).__name__}")
    if q_row.dtype != np.int8:
        raise CodecError(f"{who}: q_row must have dtype int8 (quantised activations), got {q_row.dtype}")
    if q_row.ndim != 1:
        raise CodecError(f"{who}: q_row must be 1-D (K,), got shape {q_row.shape}")
    return q_row


def _tiling(layout: str, M: int, K: int, tiling) -> tuple[int, int, int]:
    validate_tiling(layout, M, K, tiling)
    return int(tiling.BM), int(tiling.BK), int(tiling.bm)


def tl2_split(K: int, BK: int) -> tuple[int, int]:
    """(three_k, two_k): columns coded in triples and in the pair tail (docs/formats.md#33-tl2-type-39)."""
    three_k = (K // BK) * BK
    return three_k, K - three_k


def _data(data, need: int, who: str) -> np.ndarray:
    """The first ``need`` bytes of ``data`` (uint8 array or bytes-like)."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        data = np.frombuffer(data, dtype=np.uint8)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 1:
        raise CodecError(f"{who}: data must be a 1-D uint8 array or bytes")
    if data.size < need:
        raise CodecError(f"{who}: needs {need} packed bytes, got {data.size}")
    return data[:need]


# ----------------------------------------------------------------------------- tables


def build_tl1_lut(q_row: np.ndarray) -> np.ndarray:
    """TL1 pair tables of an int8 activation row (K,), K even: int16 ``(K/2, 16)``.

    ``lut[j, 3·t0 + t1 + 4] = t0·q[2j] + t1·q[2j+1]``; entries 9..15 are 0
    (docs/kernels.md#31-lut-construction-per-activation-row).
    """
    q = check_q_row(q_row, "build_tl1_lut")
    if q.size == 0 or q.size % 2:
        raise CodecError(f"build_tl1_lut: K must be a positive even number, got {q.size}")
    b = q.astype(np.int16).reshape(-1, 2)  # (K/2, 2) = (b0, b1) per pair
    # (K/2, 2) @ (2, 16): each entry is t0·b0 + t1·b1, |.| ≤ 256, exact in int16.
    return b @ TL1_DIGITS.T


def build_tl2_lut(q_row: np.ndarray, K: int, tiling: TLTiling) -> np.ndarray:
    """TL2 tables of an int8 activation row: int16 ``(three_k/3 + two_k/2, 16)``.

    Rows ``[0, three_k/3)``: triple tables, ``lut[j, m] = t·q[3j : 3j+3]`` for the triple of
    value +m (entries 14, 15 are 0; docs/kernels.md#41-lut-construction); then the TL1-style pair
    tables of the tail columns ``[three_k, K)``. Only ``tiling.BK`` matters here; it is checked for legality
    at this K (as for an M = BM tensor).
    """
    q = check_q_row(q_row, "build_tl2_lut")
    if q.size != K:
        raise CodecError(f"build_tl2_lut: q_row has {q.size} entries, K = {K}")
    if not isinstance(tiling, TLTiling):
        raise CodecError(f"build_tl2_lut: tiling must be a TLTiling(BM, BK, bm); got {tiling!r}")
    # M plays no part in the tables: check the tiling as for an M = BM tensor.
    _, BK, _ = _tiling("tl2", tiling.BM if tiling.BM > 0 else 32, K, tiling)
    three_k, _ = tl2_split(K, BK)
    b = q[:three_k].astype(np.int16).reshape(-1, 3)  # (three_k/3, 3) = (b0, b1, b2)
    tables = b @ TL2_DIGITS.T  # |entry| ≤ 384, exact in int16
    if three_k == K:
        return tables
    return np.concatenate([tables, build_tl1_lut(q[three_k:])])


def lut_byte_planes(tables: np.ndarray) -> np.ndarray:
    """int16 tables ``(n, 16)`` → byte-plane form uint8 ``(n, 32)``: per table the 16 low
    bytes of its entries, then the 16 high bytes (the layout of the native LUT buffer)."""
    tables = np.asarray(tables)
    if tables.dtype != np.int16 or tables.ndim != 2 or tables.shape[1] != LUT_ENTRIES:
        raise CodecError(f"lut_byte_planes: tables must be int16 (n, 16), got {tables.dtype} {tables.shape}")
    b = np.ascontiguousarray(tables, dtype="<i2").view(np.uint8).reshape(-1, LUT_ENTRIES, 2)
    return np.concatenate([b[:, :, 0], b[:, :, 1]], axis=1)


def lut_from_byte_planes(planes: np.ndarray) -> np.ndarray:
    """Inverse of :func:`lut_byte_planes`: uint8 ``(n, 32)`` (or flat ``(32·n,)``) → int16 ``(n, 16)``."""
    planes = np.asarray(planes)
    if planes.dtype != np.uint8 or planes.size % LUT_TABLE_BYTES:
        raise CodecError(f"lut_from_byte_planes: need uint8 with a multiple of 32 bytes, got {planes.dtype} {planes.shape}")
    p = planes.reshape(-1, 2, LUT_ENTRIES).astype(np.uint16)
    return (p[:, 0] | (p[:, 1] << 8)).view(np.int16)


def tl1_lut_planes(q_row: np.ndarray) -> np.ndarray:
    """The TL1 LUT of ``q_row`` in byte-plane form, uint8 ``(K/2, 32)``."""
    return lut_byte_planes(build_tl1_lut(q_row))


def tl2_lut_planes(q_row: np.ndarray, K: int, tiling: TLTiling) -> np.ndarray:
    """The TL2 LUT of ``q_row`` in byte-plane form, uint8 ``(three_k/3 + two_k/2, 32)``."""
    return lut_byte_planes(build_tl2_lut(q_row, K, tiling))


# ----------------------------------------------------------------------------- index decoding


def _tl1_order(M: int, K: int, BM: int, BK: int, bm: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Shape of the TL1 byte order (mt, kt, bt, yb, rc, pq, r16) and the transpose to
    (mt, bt, rc, r16, kt, yb, pq) = (row, byte-pair) order (packing module docstring)."""
    by = 256 // bm
    return (M // BM, K // BK, BM // bm, BK // by, bm // 16, by // 4, 16), (0, 2, 4, 6, 1, 3, 5)


def _nibbles(b: np.ndarray) -> np.ndarray:
    """uint8 (...) → (..., 2): [..., 0] = high nibble, [..., 1] = low nibble."""
    return np.stack([b >> 4, b & 0x0F], axis=-1)


def _reject(idx: np.ndarray, limit: int, what: str, cols: int, who: str) -> None:
    """CodecError when an (M, groups) index array holds a value > limit."""
    bad = idx > limit
    if bad.any():
        r, i = np.argwhere(bad)[0]
        raise CodecError(
            f"{who}: {int(bad.sum())} invalid {what} (> {limit}); first {int(idx[r, i])} for "
            f"weights ({r}, {cols * i}..{cols * i + cols - 1})"
        )


def tl1_indices(data, M: int, K: int, tiling: TLTiling) -> np.ndarray:
    """Pair indices of TL1 data, uint8 ``(M, K/2)``; CodecError on an index > 8."""
    BM, BK, bm = _tiling("tl1", M, K, tiling)
    shape, axes = _tl1_order(M, K, BM, BK, bm)
    b = _data(data, M * K // 4, "tl1").reshape(shape)
    u = _nibbles(b).transpose(*axes, 7).reshape(M, K // 2)
    _reject(u, TL1_MAX_INDEX, "pair indices", 2, "tl1")
    return u


def _tl2_tail_indices(b: np.ndarray, M: int, K2: int, BM: int) -> np.ndarray:
    """Tail bytes (mt, kt, bt, yb, g, i8) → pair indices (M, K2/2) (packing module docstring)."""
    u = _nibbles(b.reshape(M // BM, K2 // TL2_TAIL_BK, BM // 32, 8, 4, 8))
    u = u.transpose(0, 2, 4, 5, 1, 3, 6)[:, :, _SWAP]  # (mt, bt, g → row group, i8, kt, yb, h)
    u = u.reshape(M, K2 // 2)
    _reject(u, TL1_MAX_INDEX, "pair indices in the two-weight tail", 2, "tl2")
    return u


def tl2_indices(data, M: int, K: int, tiling: TLTiling) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TL2 data → (magnitudes uint8 (M, three_k/3), negative bool (M, three_k/3),
    tail pair indices uint8 (M, two_k/2)); CodecError on a magnitude > 13 or a pair index > 8."""
    BM, BK, _ = _tiling("tl2", M, K, tiling)
    K3, K2 = tl2_split(K, BK)
    n_idx, n_sign = M * K3 // 6, M * K3 // 24
    b = _data(data, n_idx + n_sign + M * K2 // 4, "tl2")
    # index bytes (mt, kt, bt, yb, g, i8) with nibbles j; g = position of row group SWAP[g]
    m = _nibbles(b[:n_idx].reshape(M // BM, K3 // BK, BM // 32, BK // 6, 4, 8))
    mag = m.transpose(0, 2, 4, 5, 1, 3, 6)[:, :, _SWAP].reshape(M, K3 // 3)
    _reject(mag, TL2_MAX_MAGNITUDE, "triple magnitudes", 3, "tl2")
    # sign words (mt, kt, bt, u, c), bit 15 − s ↔ (triple g8 = s // 2, row (s % 2)·16 + c)
    words = b[n_idx : n_idx + n_sign].view("<u2").reshape(M // BM, K3 // BK, BM // 32, BK // 24, 1, 16)
    shifts = (15 - np.arange(16, dtype=np.uint16)).reshape(16, 1)
    s = ((words >> shifts) & 1).reshape(M // BM, K3 // BK, BM // 32, BK // 24, 8, 32)
    neg = s.transpose(0, 2, 5, 1, 3, 4).reshape(M, K3 // 3).astype(bool)  # (mt, bt, r32, kt, u, g8)
    tail = _tl2_tail_indices(b[n_idx + n_sign :], M, K2, BM) if K2 else np.zeros((M, 0), np.uint8)
    return mag, neg, tail


# ----------------------------------------------------------------------------- GEMV twins


def _lookup_sum(lut: np.ndarray, idx: np.ndarray, neg: np.ndarray | None = None) -> np.ndarray:
    """Σ_j ±lut[j, idx[r, j]] per row r as int32 (rows in chunks to bound the temporaries)."""
    M, G = idx.shape
    out = np.empty(M, dtype=np.int32)
    cols = np.arange(G)
    step = max(1, (1 << 20) // max(G, 1))
    for r0 in range(0, M, step):
        e = lut[cols, idx[r0 : r0 + step]].astype(np.int32)  # (rows, G): the looked-up entries
        if neg is not None:
            e = np.where(neg[r0 : r0 + step], -e, e)
        out[r0 : r0 + step] = e.sum(axis=1, dtype=np.int32)  # exact: |Σ| ≤ 128·K < 2³¹
    return out


def _check_lut(lut, n: int, who: str) -> np.ndarray:
    lut = np.asarray(lut)
    if lut.dtype != np.int16 or lut.shape != (n, LUT_ENTRIES):
        raise CodecError(f"{who}: lut must be int16 ({n}, 16), got {lut.dtype} {lut.shape}")
    return lut


def tl1_gemv_ref(data, lut: np.ndarray, M: int, K: int, tiling: TLTiling) -> np.ndarray:
    """Exact ``Σ_k t[r, k]·q[k]`` (int32 (M,)) of TL1 ``data`` (M·K/4 bytes or more) under
    ``tiling``, by looking the pair indices up in ``lut`` = :func:`build_tl1_lut` ``(q)``."""
    lut = _check_lut(lut, K // 2, "tl1_gemv_ref")
    return _lookup_sum(lut, tl1_indices(data, M, K, tiling))


def tl2_gemv_ref(data, lut: np.ndarray, M: int, K: int, tiling: TLTiling) -> np.ndarray:
    """Exact ``Σ_k t[r, k]·q[k]`` (int32 (M,)) of TL2 ``data`` (``packing.tl2_nbytes`` bytes or
    more) under ``tiling``: signed triple-table lookups plus the pair tail, with
    ``lut`` = :func:`build_tl2_lut` ``(q, K, tiling)``."""
    BM, BK, _ = _tiling("tl2", M, K, tiling)
    K3, K2 = tl2_split(K, BK)
    lut = _check_lut(lut, K3 // 3 + K2 // 2, "tl2_gemv_ref")
    mag, neg, tail = tl2_indices(data, M, K, tiling)
    acc = _lookup_sum(lut[: K3 // 3], mag, neg)
    if K2:
        acc += _lookup_sum(lut[K3 // 3 :], tail)
    return acc


# ----------------------------------------------------------------------------- byte locations


def tl1_byte_location(offset: int, M: int, K: int, tiling: TLTiling) -> tuple[int, int]:
    """(row, first column) of the 4 weights held by byte ``offset`` of TL1 data (for messages)."""
    BM, BK, bm = _tiling("tl1", M, K, tiling)
    shape, _ = _tl1_order(M, K, BM, BK, bm)
    mt, kt, bt, yb, rc, pq, r16 = (int(v) for v in np.unravel_index(offset, shape))
    by = 256 // bm
    return mt * BM + bt * bm + rc * 16 + r16, kt * BK + yb * by + pq * 4


def tl2_byte_location(offset: int, M: int, K: int, tiling: TLTiling) -> tuple[str, int, int]:
    """(part, row, first column) of the weights behind byte ``offset`` of TL2 data; part is
    'triples' (6 weights), 'signs' (the byte's 8 sign bits span rows; first one given) or
    'tail' (4 weights)."""
    BM, BK, _ = _tiling("tl2", M, K, tiling)
    K3, K2 = tl2_split(K, BK)
    n_idx, n_sign = M * K3 // 6, M * K3 // 24
    if offset < n_idx:
        mt, kt, bt, yb, g, i8 = (int(v) for v in np.unravel_index(offset, (M // BM, K3 // BK, BM // 32, BK // 6, 4, 8)))
        return "triples", mt * BM + bt * 32 + 8 * int(_SWAP[g]) + i8, kt * BK + yb * 6
    if offset < n_idx + n_sign:
        mt, kt, bt, u, c2 = (int(v) for v in np.unravel_index(offset - n_idx, (M // BM, K3 // BK, BM // 32, BK // 24, 32)))
        return "signs", mt * BM + bt * 32 + c2 // 2, kt * BK + u * 24
    mt, kt, bt, yb, g, i8 = (int(v) for v in np.unravel_index(offset - n_idx - n_sign, (M // BM, K2 // 32, BM // 32, 8, 4, 8)))
    return "tail", mt * BM + bt * 32 + 8 * int(_SWAP[g]) + i8, K3 + kt * 32 + yb * 4
