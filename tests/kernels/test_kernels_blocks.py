"""The per-256-block products (kernels.block_gemm: i2s/tq2/tq1 bgemv and bgemm) and the numpy
statements of the two epilogues that use them (mad_reference.block_epilogue_ref, tq_dot_q8k).

Every compiled version is compared bit for bit with its numpy twin on ragged shapes (K across the
2048-weight chunk boundary, M around the 4- and 8-row unrolls), on 1 and 2 threads; versions for
ISA levels this CPU lacks (AVX-512 VNNI here) are skipped with the reason. The int16 worst case
must be exact, the blocks must add up to the whole-row product, faults must land in out[0].
tq_dot_q8k is pinned to a hand-computed example (Q8_K blocks quantised by hand from the float
row, ggml's formula evaluated by hand).
"""

from __future__ import annotations

import numpy as np
import pytest

from bitnet_lab import kernels
from bitnet_lab.errors import CodecError, KernelError
from bitnet_lab.quant import mad_reference as ref
from bitnet_lab.quant import packing
from bitnet_lab.quant.q8_k import quantize_q8_k

AVAILABLE = set(kernels.available_isas())
ALL_VERSIONS = kernels.kernel_versions(include_unavailable=True)
TWIN = {"i2s": ref.i2s_block_gemm_ref, "tq2": ref.tq2_block_gemm_ref, "tq1": ref.tq1_block_gemm_ref}
WHOLE = {"i2s": ref.i2s_gemm_ref, "tq2": ref.tq2_gemm_ref, "tq1": ref.tq1_gemm_ref}


def params():
    """(fmt, gemv, version) for every compiled per-block version, skipped where the CPU lacks it."""
    out = []
    for fmt, ops in kernels.BLOCK_OPS.items():
        for gemv, op in ((True, ops[0]), (False, ops[1])):
            for name, isa, _ in ALL_VERSIONS[op]:
                marks = [pytest.mark.isa]
                if isa not in AVAILABLE:
                    marks.append(pytest.mark.skip(reason=f"{op} {name} needs ISA level {isa!r}; this CPU/build "
                                                         f"has {sorted(AVAILABLE)}"))
                out.append(pytest.param(fmt, gemv, name, id=f"{op}-{name}", marks=marks))
    return out


def pack(fmt: str, t: np.ndarray, d: np.ndarray | None = None) -> np.ndarray:
    if fmt == "i2s":
        return packing.pack_i2_s(t)
    if d is None:
        d = packing.tq_default_block_scales(t, 0.5)
    return packing.pack_tq2_0(t, d) if fmt == "tq2" else packing.pack_tq1_0(t, d)


@pytest.mark.parametrize("fmt,gemv,version", params())
def test_block_products_match_numpy(fmt, gemv, version):
    rng = np.random.default_rng(11)
    for K in (256, 768, 2304, 4352):  # one block; odd counts; across the 2048-weight chunk
        for M in (1, 3, 4, 5, 13, 37):
            t = rng.integers(-1, 2, size=(M, K), dtype=np.int8)
            data = pack(fmt, t)
            for N in (1, 5):
                Q = rng.integers(-128, 128, size=(N, K), dtype=np.int8)
                want = TWIN[fmt](data, Q, M, K)
                for threads in (1, 2):
                    got = kernels.block_gemm(fmt, data, Q, M, K, gemv=gemv, version=version, threads=threads)
                    np.testing.assert_array_equal(got, want, err_msg=f"{fmt} gemv={gemv} {version} K={K} M={M} "
                                                                     f"N={N} threads={threads}")


@pytest.mark.parametrize("fmt,gemv,version", params())
def test_block_int16_worst_case_is_exact(fmt, gemv, version):
    """All t = +1 against all q = 127 / all q = -128, and t = -1 against -128: every block holds
    ±127·256 or ±128·256 (the largest magnitudes a block can reach)."""
    M, K = 9, 4608
    for tv in (1, -1):
        data = pack(fmt, np.full((M, K), tv, dtype=np.int8))
        for value in (127, -128):
            Q = np.full((3, K), value, np.int8)
            got = kernels.block_gemm(fmt, data, Q, M, K, gemv=gemv, version=version, threads=2)
            np.testing.assert_array_equal(got, np.full((3, M, K // 256), tv * value * 256, np.int32))


@pytest.mark.parametrize("fmt,gemv,version", params())
def test_block_fault_lands_in_out0(fmt, gemv, version):
    rng = np.random.default_rng(5)
    M, K = 70, 512
    data = pack(fmt, rng.integers(-1, 2, size=(M, K), dtype=np.int8))
    Q = rng.integers(-128, 128, size=(1, K), dtype=np.int8)
    op = kernels.BLOCK_OPS[fmt][0 if gemv else 1]
    for threads in (1, 2):
        clean = kernels.block_gemm(fmt, data, Q, M, K, gemv=gemv, version=version, threads=threads)
        kernels.inject_fault(op)
        try:
            broken = kernels.block_gemm(fmt, data, Q, M, K, gemv=gemv, version=version, threads=threads)
        finally:
            kernels.inject_fault(None)
        diff = (broken.astype(np.int64) - clean).reshape(-1)
        assert diff[0] == 1 and not diff[1:].any(), (op, version, threads)


def test_blocks_add_up_to_the_whole_row():
    """The twins agree with the whole-row twins (an error in one cannot hide behind the other)."""
    rng = np.random.default_rng(3)
    M, K = 6, 1536
    t = rng.integers(-1, 2, size=(M, K), dtype=np.int8)
    Q = rng.integers(-128, 128, size=(4, K), dtype=np.int8)
    for fmt in TWIN:
        data = pack(fmt, t)
        np.testing.assert_array_equal(TWIN[fmt](data, Q, M, K).sum(axis=2), WHOLE[fmt](data, Q, M, K))
        assert TWIN[fmt](data, Q, M, K).shape == (4, M, K // 256)


def test_block_products_reject_bad_arguments():
    t = np.zeros((4, 384), dtype=np.int8)
    with pytest.raises(CodecError, match="K % 256"):
        kernels.block_gemm("i2s", packing.pack_i2_s(t), np.zeros((1, 384), np.int8), 4, 384)
    with pytest.raises(KernelError, match="fmt must be one of"):
        kernels.block_gemm("q4", b"", np.zeros((1, 256), np.int8), 1, 256)
    data = pack("tq2", np.zeros((4, 256), dtype=np.int8))
    with pytest.raises(CodecError, match="needs 264 bytes"):
        kernels.block_gemm("tq2", data[:-1], np.zeros((1, 256), np.int8), 4, 256)
    with pytest.raises(KernelError, match="activations must have"):
        kernels.block_gemm("tq2", data, np.zeros((1, 512), np.int8), 4, 256)


def test_block_microbench_checks_and_times():
    r = kernels.microbench("tq2_bgemv", 64, 512, N=2, repeat=2, threads=1)
    assert r["op"] == "tq2_bgemv" and r["seconds"] > 0 and r["N"] == 2


# ---- the epilogues' numpy statements ------------------------------------------------------------


def test_block_epilogue_ref_by_hand():
    """acc_b = [[1000, -3]] with d = [0.5, 2^-14·1.5] (fp16 values), s_x = 3: Σ = 500 −
    0.00018310546875 in float64 (exact), rounded once to f32, divided by 3 in f32."""
    acc_b = np.array([[[1000, -3]]], dtype=np.int32)
    d = np.array([[0.5, 1.5 * 2.0**-14]], dtype=np.float32)
    s = np.array([3.0], dtype=np.float32)
    exact = 500.0 - 3 * 1.5 * 2.0**-14
    want = np.float32(np.float32(exact) / np.float32(3.0))
    got = ref.block_epilogue_ref(acc_b, d, s)
    assert got.dtype == np.float32 and got[0, 0] == want


def test_tq_dot_q8k_pinned_to_hand_computed_q8k_blocks():
    """Two Q8_K blocks quantised by hand, then ggml's TQ dot evaluated by hand.

    Block 0 of x: x[0] = -2, x[1] = 1, x[2] = 0.5, the rest 0. max = -2 (the largest |x|),
    iscale = fl32(-127 / -2) = 63.5, q = nearest_int(63.5·x): -127, 64 (63.5 ties to even),
    32 (31.75); d8 = fl32(1 / 63.5). Block 1: x[256] = 3, x[257] = -3 (a tie in |x|: the FIRST
    one is max = 3), iscale = fl32(-127 / 3), q = -127, 127; d8 = fl32(1 / iscale) (negative).
    Weights: t = +1 at 0, 1, 256; -1 at 2, 257; d_w = [0.25, 0.5].
    sumi_0 = -127 + 64 - 32 = -95; sumi_1 = -127 - 127 = -254.
    """
    K = 512
    x = np.zeros((1, K), np.float32)
    x[0, :3] = [-2.0, 1.0, 0.5]
    x[0, 256:258] = [3.0, -3.0]
    d8, q8 = quantize_q8_k(x)
    is1 = np.float32(np.float32(-127.0) / np.float32(3.0))
    assert list(q8[0, :3]) == [-127, 64, 32] and list(q8[0, 256:258]) == [-127, 127]
    assert not q8[0, 3:256].any() and not q8[0, 258:].any()
    assert d8[0, 0] == np.float32(np.float32(1.0) / np.float32(63.5))
    assert d8[0, 1] == np.float32(np.float32(1.0) / is1) and d8[0, 1] < 0
    t = np.zeros((1, K), np.int8)
    t[0, [0, 1, 256]] = 1
    t[0, [2, 257]] = -1
    d_w = np.array([[0.25, 0.5]], np.float32)
    f32 = np.float32
    want = f32(0.0)
    want = f32(want + f32(f32(-95) * f32(d8[0, 0] * f32(0.25))))
    want = f32(want + f32(f32(-254) * f32(d8[0, 1] * f32(0.5))))
    got = ref.tq_dot_q8k(t, d_w, q8, d8)
    assert got.shape == (1, 1) and got.dtype == np.float32
    assert got[0, 0] == want


def test_tq_dot_q8k_rejects_mismatched_shapes():
    t = np.zeros((2, 512), np.int8)
    with pytest.raises(CodecError, match="d_w"):
        ref.tq_dot_q8k(t, np.ones((2, 1), np.float32), np.zeros((1, 512), np.int8), np.ones((1, 2), np.float32))
    with pytest.raises(CodecError, match="int8"):
        ref.tq_dot_q8k(t.astype(np.int16), np.ones((2, 2), np.float32), np.zeros((1, 512), np.int8),
                       np.ones((1, 2), np.float32))
