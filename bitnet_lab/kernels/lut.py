"""The TL1 / TL2 lookup-table kernels: LUT build and LUT GEMV, one version per ISA level."""

from __future__ import annotations

import numpy as np

from bitnet_lab.errors import CodecError
from bitnet_lab.kernels.isa import ISA_ORDER, _INDEX, _dim, _isa_index, _k, available_isas, effective_threads

__all__ = ["has_tl_gemm", "lut_kernel_versions", "tl1_build_lut", "tl1_gemm", "tl1_gemv", "tl2_build_lut", "tl2_gemm",
           "tl2_gemv"]

# ---- TL1 / TL2 LUT kernels -------------------------------------------------------------------
#
# C contract: cython_kernels/src/bl_lut.h; numpy twins: bitnet_lab.quant.lut. The kernels take
# already quantised int8 activations (bitnet_lab's single policy,
# bitnet_lab.quant.quantize_activations — not bitnet.cpp's floor-less TL scale, see the twin
# module's docstring) and return the exact int32 Σ t·q; the epilogue acc / s_x · γ is the
# caller's. Levels: scalar (v0), avx2 (v1; also what avxvnni runs), avx512vnni (v2 GEMVs with
# v1's builds; also what amx runs), neon (also neon_dotprod) — see lut_kernel_versions().
# The amx level also has TL GEMMs (prefill: the index nibbles decoded once per call into AMX
# tiles, no LUT), the only level with them; elsewhere the engine runs the GEMV per token.


def _lut_blob_len(data) -> int | None:
    """Length in bytes of a 1-D uint8 array or a bytes-like object; None for anything else
    (the compiled wrapper then raises its own type error)."""
    if isinstance(data, (bytes, bytearray)):
        return len(data)
    if isinstance(data, memoryview):
        return data.nbytes
    if isinstance(data, np.ndarray) and data.ndim == 1:
        return int(data.size)
    return None


def _check_blob(who: str, data, allowed: dict[str, int], M: int, K: int, tiling) -> None:
    n = _lut_blob_len(data)
    if n is not None and n not in allowed.values():
        sizes = ", ".join(f"{v} ({k})" for k, v in allowed.items())
        raise CodecError(f"{who}: a ({M}, {K}) tensor with tiling {tiling} needs one of {sizes} bytes; got {n}")


def _checked_tensor(layout: str, op: str, data, M: int, K: int, tiling, name) -> tuple[int, int]:
    """(M, K) of a TL product's arguments once the tiling is legal for them and ``data`` has one of
    the layout's blob lengths (TL1: the packed bytes, with or without the scale slot; TL2: the real
    packed bytes, the converter's padded blob, or that with the scale slot)."""
    from bitnet_lab.quant import packing
    from bitnet_lab.quant.tiling import validate_tiling

    M, K = _dim(M, "M"), _dim(K, "K")
    validate_tiling(layout, M, K, tiling)
    if layout == "tl1":
        allowed = {"tl1_nbytes": packing.tl1_nbytes(M, K), "with the scale slot": packing.tl1_ggml_nbytes(M, K)}
    else:
        allowed = {"tl2_nbytes": packing.tl2_nbytes(M, K, tiling), "tl2_padded_nbytes": packing.tl2_padded_nbytes(M, K),
                   "tl2_ggml_nbytes": packing.tl2_ggml_nbytes(M, K)}
    _check_blob(f"{op}({name!r})" if name is not None else op, data, allowed, M, K, tiling)
    return M, K


def tl1_build_lut(q_row: np.ndarray, *, isa: str | None = None) -> np.ndarray:
    """TL1 lookup tables of one int8 activation row ``(K,)`` (K even) in byte-plane form:
    uint8 ``(K/2, 32)``, table j = pair (q[2j], q[2j+1]), 16 low bytes then 16 high bytes of
    the int16 entries ``3·t0 + t1 + 4 → t0·q[2j] + t1·q[2j+1]``
    (docs/kernels.md#31-lut-construction-per-activation-row). Byte-identical to
    :func:`bitnet_lab.quant.lut.tl1_lut_planes`."""
    from bitnet_lab.quant.lut import check_q_row

    check_q_row(q_row, "tl1_build_lut")
    return _k.tl1_build_lut(q_row, _isa_index(isa))


def tl2_build_lut(q_row: np.ndarray, K: int, tiling, *, isa: str | None = None) -> np.ndarray:
    """TL2 lookup tables of one int8 activation row ``(K,)`` under ``tiling`` (only BK matters;
    checked with :func:`bitnet_lab.quant.tiling.validate_tiling`): uint8
    ``(three_k/3 + two_k/2, 32)`` — the triple tables (docs/kernels.md#41-lut-construction) then the pair
    tables of the two-weight tail, in byte-plane form. Byte-identical to
    :func:`bitnet_lab.quant.lut.tl2_lut_planes`."""
    from bitnet_lab.quant.lut import check_q_row
    from bitnet_lab.quant.tiling import validate_tiling

    K = _dim(K, "K")
    check_q_row(q_row, "tl2_build_lut")
    if q_row.shape[0] != K:
        raise CodecError(f"tl2_build_lut: q_row has {q_row.shape[0]} entries, K = {K}")
    from bitnet_lab.quant.tiling import TLTiling

    if not isinstance(tiling, TLTiling):
        raise CodecError(f"tl2_build_lut: tiling must be a TLTiling(BM, BK, bm); got {tiling!r}")
    # M plays no part in the tables: check the tiling as for an M = BM tensor.
    validate_tiling("tl2", tiling.BM if tiling.BM > 0 else 32, K, tiling)
    return _k.tl2_build_lut(q_row, int(tiling.BK), _isa_index(isa))


def tl1_gemv(
    data, q: np.ndarray, M: int, K: int, tiling, *, threads: int | None = None, isa: str | None = None,
    name: str | None = None,
) -> np.ndarray:
    """Exact ``Σ_k t[r, k]·q[k]`` (int32 ``(M,)``; ``(N, M)`` for ``q`` of shape ``(N, K)``) of a
    TL1 tensor ``(M, K)`` through its lookup tables.

    ``data``: the packed index bytes, exactly ``packing.tl1_nbytes(M, K)`` or
    ``packing.tl1_ggml_nbytes(M, K)`` (with the 32-byte scale slot, ignored); ``tiling`` the
    TLTiling that wrote them (legal for (M, K)); ``q`` int8, C-contiguous. Raises CodecError
    on a bad argument or an invalid pair index (> 8) in the data (count and first position).
    Bit-identical for every ``threads`` and ISA level. Numpy twin:
    :func:`bitnet_lab.quant.lut.tl1_gemv_ref`."""
    M, K = _checked_tensor("tl1", "tl1_gemv", data, M, K, tiling, name)
    return _k.tl1_gemv(data, q, M, K, int(tiling.BM), int(tiling.BK), int(tiling.bm), _isa_index(isa), effective_threads(threads), name)


def tl2_gemv(
    data, q: np.ndarray, M: int, K: int, tiling, *, threads: int | None = None, isa: str | None = None,
    name: str | None = None,
) -> np.ndarray:
    """Exact ``Σ_k t[r, k]·q[k]`` (int32 ``(M,)``; ``(N, M)`` for ``q`` ``(N, K)``) of a TL2
    tensor ``(M, K)``: signed triple-table lookups plus the two-weight tail.

    ``data``: ``packing.tl2_nbytes(M, K, tiling)`` (the real packed bytes),
    ``packing.tl2_padded_nbytes(M, K)`` (what the converter writes) or
    ``packing.tl2_ggml_nbytes(M, K)`` (with the zero padding and the scale slot); only the real
    packed bytes are read. Raises CodecError on a bad argument or an invalid index (triple
    magnitude > 13, tail pair index > 8). Bit-identical for every ``threads`` and ISA level.
    Numpy twin: :func:`bitnet_lab.quant.lut.tl2_gemv_ref`."""
    M, K = _checked_tensor("tl2", "tl2_gemv", data, M, K, tiling, name)
    return _k.tl2_gemv(data, q, M, K, int(tiling.BM), int(tiling.BK), _isa_index(isa), effective_threads(threads), name)


def has_tl_gemm(isa: str | None = None) -> bool:
    """Whether ISA level ``isa`` (default: the active one) has the TL1 / TL2 GEMMs (only amx)."""
    return _k.lut_default_version("tl1_gemm", _isa_index(isa)) is not None


def _tl_gemm(layout: str, data, Q: np.ndarray, M: int, K: int, tiling, threads, isa, name) -> np.ndarray:
    M, K = _checked_tensor(layout, f"{layout}_gemm", data, M, K, tiling, name)
    if not isinstance(Q, np.ndarray) or Q.ndim != 2:
        who = f"{layout}_gemm({name!r})" if name is not None else f"{layout}_gemm"
        raise CodecError(f"{who}: Q must be a 2-D int8 array (N, K)")
    return _k.tl_gemm(layout, data, Q, M, K, int(tiling.BM), int(tiling.BK), int(tiling.bm), _isa_index(isa),
                      effective_threads(threads), name)


def tl1_gemm(data, Q: np.ndarray, M: int, K: int, tiling, *, threads: int | None = None, isa: str | None = None,
             name: str | None = None) -> np.ndarray:
    """Exact ``Σ_k t[r, k]·Q[n, k]`` (int32 ``(N, M)``) of a TL1 tensor for a block of activation
    rows ``Q`` (int8 ``(N, K)``, K % 64 == 0) by the prefill GEMM: the index nibbles are decoded
    once into AMX tiles for all N rows. Same numbers as :func:`tl1_gemv` row by row (numpy twin:
    :func:`bitnet_lab.quant.lut.tl1_gemv_ref`); same data checks and errors. KernelError on a level
    without the GEMM (:func:`has_tl_gemm`)."""
    return _tl_gemm("tl1", data, Q, M, K, tiling, threads, isa, name)


def tl2_gemm(data, Q: np.ndarray, M: int, K: int, tiling, *, threads: int | None = None, isa: str | None = None,
             name: str | None = None) -> np.ndarray:
    """The TL2 twin of :func:`tl1_gemm` (triples with their sign plane, then the pair tail)."""
    return _tl_gemm("tl2", data, Q, M, K, tiling, threads, isa, name)


def tl_ternary(layout: str, data, M: int, K: int, tiling, *, name: str | None = None) -> np.ndarray:
    """The ternary values of a TL1 / TL2 tensor, int8 ``(M, K)`` in {−1, 0, 1}: how the native
    engine brings TL files into the MAD layouts at load (docs/kernels.md#tl-files-in-the-mad-layouts).
    Same data checks and invalid-index errors as the GEMVs. Numpy twins:
    :func:`bitnet_lab.quant.packing.unpack_tl1`, :func:`~bitnet_lab.quant.packing.unpack_tl2`."""
    if layout not in ("tl1", "tl2"):
        raise CodecError(f"tl_ternary: layout must be 'tl1' or 'tl2', got {layout!r}")
    M, K = _checked_tensor(layout, f"{layout}_ternary", data, M, K, tiling, name)
    return _k.tl_ternary(data, layout, M, K, int(tiling.BM), int(tiling.BK), int(tiling.bm), name)


def lut_kernel_versions() -> list[dict]:
    """The LUT kernels compiled in, one dict per (op, implementation): ``op`` (tl1_build_lut,
    tl2_build_lut, tl1_gemv, tl2_gemv, tl1_gemm, tl2_gemm), ``version`` (v0 scalar, v1 AVX2, v2 AVX-512
    (GEMVs only), amx (GEMMs only), neon), ``isa`` (the
    level the code needs), ``description``, and ``default_for``: the available levels whose
    dispatch table runs it (read from the C table's function pointers)."""
    out = []
    avail = available_isas()
    for op, version, isa_i, desc in _k.lut_versions():
        default_for = [n for n in avail if _k.lut_default_version(op, _INDEX[n]) == version]
        out.append({"op": op, "version": version, "isa": ISA_ORDER[isa_i], "description": desc,
                    "default_for": default_for})
    return out
