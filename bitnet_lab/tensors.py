"""What a reader hands out: float tensors and ternary weights, both over raw (memory-mapped)
bytes, decoded only on request.

Shapes are in torch order everywhere in bitnet_lab: a weight is ``(M, K)`` = (output features,
input features), i.e. GGUF ``[ne0, ne1] = [K, M]`` reversed (docs/formats.md#0-conventions).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from bitnet_lab.errors import CodecError, FormatError
from bitnet_lab.quant import blockquant, packing
from bitnet_lab.quant.tiling import TLTiling

# Layout names of ternary weights (docs/formats.md#3-ternary-byte-layouts).
TERNARY_LAYOUTS = ("i2_s", "tl1", "tl2", "tq1_0", "tq2_0", "hf_packed", "int8")
FLOAT_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q6_K")


@dataclass(eq=False)
class FloatTensor:
    """A non-ternary tensor: embeddings, norms, an untied lm_head.

    ``data`` is the raw payload: float32 / float16 arrays already shaped, ``uint16`` for BF16,
    ``uint8`` blocks for Q8_0 / Q6_K. ``to_numpy()`` returns float32.
    """

    name: str
    ggml_type: str
    shape: tuple[int, ...]
    data: np.ndarray

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes)

    def to_numpy(self) -> np.ndarray:
        t = self.ggml_type
        if t == "F32":
            return np.asarray(self.data, dtype=np.float32).reshape(self.shape)
        if t == "F16":
            return np.asarray(self.data, dtype=np.float16).astype(np.float32).reshape(self.shape)
        if t == "BF16":
            u = np.asarray(self.data).view(np.uint16).astype(np.uint32) << 16
            return u.view(np.float32).reshape(self.shape)
        return blockquant.dequantize(t, self.data, self.shape)

    def __repr__(self) -> str:
        return f"FloatTensor({self.name!r}, {self.ggml_type}, shape={self.shape})"


@dataclass(eq=False)
class TernaryWeight:
    """A ternary projection weight ``W = γ · t`` of shape ``(M, K)`` in one of TERNARY_LAYOUTS.

    - ``data``: the packed bytes exactly as stored (uint8, no scale tail), or for ``int8`` the
      ternary values themselves (int8 (M, K)).
    - ``scale``: the per-tensor γ (float32) for i2_s, tl1, tl2, hf_packed, int8.
    - ``block_scales``: float16 (M, K // 256) for tq1_0 / tq2_0 (the block absmax ``d``).
    - ``tiling``: TL1/TL2 only.
    """

    name: str
    layout: str
    shape: tuple[int, int]
    data: np.ndarray
    scale: Optional[np.float32] = None
    block_scales: Optional[np.ndarray] = None
    tiling: Optional[TLTiling] = None
    _cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.layout not in TERNARY_LAYOUTS:
            raise CodecError(f"{self.name}: unknown ternary layout {self.layout!r}")
        if self.layout.startswith("tq"):
            if self.block_scales is None:
                raise CodecError(f"{self.name}: {self.layout} needs block_scales")
        elif self.scale is None:
            raise CodecError(f"{self.name}: {self.layout} needs a per-tensor scale")
        if self.layout.startswith("tl") and self.tiling is None:
            raise CodecError(f"{self.name}: {self.layout} needs its tiling (BM, BK, bm)")

    @property
    def nbytes(self) -> int:
        """Bytes the weight occupies as stored: the packed data plus where its scale lives
        (I2_S: the 32-byte tail; TL1/TL2: the hidden 32-byte slot; TQ: inside the blocks,
        already counted in ``data``; in-memory layouts: one f32)."""
        n = int(self.data.nbytes)
        if self.layout.startswith("tq"):
            return n
        return n + (32 if self.layout in ("i2_s", "tl1", "tl2") else 4)

    def ternary(self) -> np.ndarray:
        """Decode to int8 values in {-1, 0, 1}, shape (M, K). Cached after the first call."""
        t = self._cache.get("t")
        if t is None:
            M, K = self.shape
            if self.layout == "int8":
                t = np.asarray(self.data, dtype=np.int8).reshape(M, K)
            else:
                t = packing.unpack(self.layout, self.data, M, K, tiling=self.tiling)
            self._cache["t"] = t
        return t

    def ternary_matrix(self) -> np.ndarray:
        """The decoded values as int8 ``(M, K)``, checked to lie in {-1, 0, 1} (an int8 or HF
        tensor can hold anything; the packed layouts' invalid codes are caught by their decoders)."""
        M, K = self.shape
        t = np.asarray(self.ternary(), dtype=np.int8).reshape(M, K)
        if t.size and int(np.abs(t).max()) > 1:
            raise CodecError(f"{self.name}: values outside {{-1, 0, 1}} (max |t| = {int(np.abs(t).max())})")
        return t

    def gamma(self) -> np.float32:
        """The single per-tensor γ. For TQ files (per-block fp16 ``d``) it is the one non-zero
        block value when they all agree, which is what ternary×γ input produces."""
        if self.scale is not None:
            return np.float32(self.scale)
        d = np.asarray(self.block_scales, dtype=np.float16).astype(np.float32)
        nz = np.unique(d[d != 0])
        if nz.size == 0:
            return np.float32(0.0)
        if nz.size > 1:
            raise CodecError(
                f"{self.name}: {self.layout} block scales are not uniform "
                f"({nz.size} distinct values, {nz.min()}..{nz.max()}); use block_scales"
            )
        return np.float32(nz[0])

    def scales_per_element(self) -> np.ndarray:
        """float32 (M, K) scale of each weight (γ broadcast, or the TQ block ``d``)."""
        M, K = self.shape
        if self.block_scales is None:
            return np.full((M, K), np.float32(self.scale), dtype=np.float32)
        d = np.asarray(self.block_scales, dtype=np.float16).astype(np.float32).reshape(M, K // 256)
        return np.repeat(d, 256, axis=1)

    def dequantize(self) -> np.ndarray:
        """float32 (M, K) = t · scale (exactly what the converters store in F32 GGUFs)."""
        return self.ternary().astype(np.float32) * self.scales_per_element()

    def __repr__(self) -> str:
        s = f"γ={float(self.scale):.6g}" if self.scale is not None else "block scales"
        return f"TernaryWeight({self.name!r}, {self.layout}, shape={self.shape}, {s})"


# Exponent bits of the IEEE types: all ones means inf or NaN.
_EXP_MASK = {np.dtype(np.float16): (np.uint16, 0x7C00), np.dtype(np.float32): (np.uint32, 0x7F800000),
             np.dtype(np.float64): (np.uint64, 0x7FF0000000000000)}
_CHUNK = 1 << 22  # elements per pass: the temporaries stay a few MB


def check_finite(name: str, values: np.ndarray, what: str = "values") -> None:
    """Raise a FormatError naming the tensor ``name`` when ``values`` (float16/32/64, any shape)
    holds a NaN or an infinity: the count, the first one's index and value. One pass over the bit
    patterns in chunks (no float work): cheap enough to run on every embedding at load.

    Where it runs: the backends call it at build on what they read as floats (embeddings, norms,
    an untied lm_head, Q8_0 block scales) — a damaged file is refused with the tensor's name
    instead of giving NaN logits; ``inspect`` does not, so it still opens such a file."""
    a = np.asarray(values)
    if a.dtype not in _EXP_MASK:
        raise TypeError(f"check_finite: {a.dtype} is not a float type")
    utype, mask = _EXP_MASK[a.dtype]
    flat = a.reshape(-1) if a.flags.c_contiguous else np.ascontiguousarray(a).reshape(-1)
    bits = flat.view(utype)
    m = utype(mask)
    first, count = -1, 0
    for lo in range(0, bits.size, _CHUNK):
        chunk = bits[lo : lo + _CHUNK]
        bad = np.bitwise_and(chunk, m) == m
        n = int(np.count_nonzero(bad))
        if n:
            if first < 0:
                first = lo + int(np.argmax(bad))
            count += n
    if count:
        where = np.unravel_index(first, a.shape) if a.ndim > 1 else (first,)
        raise FormatError(
            f"{name}: {count} non-finite {what} (first {flat[first]} at index {list(map(int, where))}); "
            "the file is damaged — bitnet-lab inspect still opens it")
