"""The quantised lm_head kernels (src/lm_q6k_*.c, the lm_q8 of src/float_*.c) against their numpy
twins (bitnet_lab/quant/q6_k.py, q8_0_dot.py), bit for bit, on every ISA level this CPU has and
1 / 2 threads (levels it lacks are skipped with the reason: the AVX-512 ones on an AVX2 host)."""

from __future__ import annotations

import numpy as np
import pytest

from bitnet_lab import kernels
from bitnet_lab.errors import CodecError
from bitnet_lab.kernels import lmhead
from bitnet_lab.quant import blockquant as BQ
from bitnet_lab.quant.f32_dot import f32_dot_canonical
from bitnet_lab.quant.q6_k import Q6_K_BYTES, decode_q6_k, q6_k_dot_q8_k
from bitnet_lab.quant.q8_0_dot import q8_0_dot_q8_0, quantize_q8_0_act
from bitnet_lab.quant.q8_k import quantize_q8_k

AVAILABLE = set(kernels.available_isas())
LEVELS = [pytest.param(i, marks=pytest.mark.skipif(i not in AVAILABLE, reason=f"{i} not available on this CPU"))
          for i in kernels.ISA_ORDER if i not in ("neon", "neon_dotprod")]


def q6_k_rows(V: int, K: int, rng: np.random.Generator, *, extreme: bool = False) -> np.ndarray:
    """Random Q6_K rows: every code and scale byte random (so -128 scales and codes 0 / 63
    occur), finite fp16 block scales."""
    rows = rng.integers(0, 256, (V, K // 256, Q6_K_BYTES), dtype=np.uint8)
    d = rng.uniform(1e-4, 2e-2, (V, K // 256)).astype(np.float16)
    if extreme:  # the largest integer per block: all codes 0 (u - 32 = -32), scales -128
        rows[0, :, :192] = 0
        rows[0, :, 192:208] = 0x80
        d[0] = np.float16(65504.0)
    rows[:, :, 208:210] = d.view(np.uint8).reshape(V, K // 256, 2)
    return rows.reshape(V, -1)


def test_decode_matches_blockquant_dequantize():
    rng = np.random.default_rng(1)
    rows = q6_k_rows(5, 512, rng)
    w, sc, d = decode_q6_k(rows, 512)
    ds = np.repeat((np.repeat(d, 16, axis=1) * sc.astype(np.float32)).astype(np.float32), 16, axis=1)
    np.testing.assert_array_equal((ds * w.astype(np.float32)).astype(np.float32),
                                  BQ.dequantize("Q6_K", rows.reshape(-1), (5, 512)))


def test_twin_is_the_dot_of_the_dequantised_operands():
    """The twin's integer/float split computes Σ w·x of the dequantised rows (up to rounding)."""
    rng = np.random.default_rng(2)
    K = 1024
    rows = q6_k_rows(64, K, rng)
    x = rng.standard_normal((3, K)).astype(np.float32)
    d8, q8 = quantize_q8_k(x)
    got = q6_k_dot_q8_k(rows, K, d8, q8)
    xd = (np.repeat(d8, 256, axis=1) * q8.astype(np.float32)).astype(np.float64)
    want = xd @ BQ.dequantize("Q6_K", rows.reshape(-1), (64, K)).astype(np.float64).T
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


@pytest.mark.parametrize("isa", LEVELS)
def test_q6_k_kernel_matches_twin(isa):
    rng = np.random.default_rng(3)
    for V, K, N in ((37, 256, 1), (130, 2560, 1), (19, 768, 3)):
        rows = q6_k_rows(V, K, rng, extreme=True)
        x = (rng.standard_normal((N, K)) * rng.uniform(0.01, 100, (N, 1))).astype(np.float32)
        x[0, :256] = 0.0  # an all-zero Q8_K block (d8 = 0)
        d8, q8 = quantize_q8_k(x)
        want = q6_k_dot_q8_k(rows, K, d8, q8)
        for threads in (1, 2):
            got = lmhead.lm_head_q6_k(rows, K, x, isa=isa, threads=threads)
            np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32),
                                          err_msg=f"{isa} V={V} K={K} N={N} threads={threads}")


@pytest.mark.parametrize("isa", LEVELS)
def test_q8_0_kernel_matches_twin(isa):
    rng = np.random.default_rng(4)
    for V, K, N in ((41, 64, 1), (130, 2560, 1), (17, 320, 2)):
        blocks = rng.integers(0, 256, (V, K // 32, 34), dtype=np.uint8)
        blocks[:, :, :2] = rng.uniform(-0.05, 0.05, (V, K // 32)).astype(np.float16).view(np.uint8).reshape(V, -1, 2)
        rows = blocks.reshape(V, -1)
        x = rng.standard_normal((N, K)).astype(np.float32)
        qx, dx, _ = quantize_q8_0_act(x)
        want = q8_0_dot_q8_0(rows, K, dx, qx)
        for threads in (1, 2):
            got = lmhead.lm_head_q8_0(rows, K, x, isa=isa, threads=threads)
            np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32),
                                          err_msg=f"{isa} V={V} K={K} N={N} threads={threads}")


@pytest.mark.parametrize("isa", LEVELS)
def test_float_kernel_matches_twin(isa):
    """F32 and F16 rows (the old path of a Q6_K lm_head, widened at load; the 2B-4T's F16 lm_head)."""
    rng = np.random.default_rng(6)
    # N > 1: the multi-row F16 kernels (each weight row converted once for several hidden rows;
    # groups of 8 on AVX-512, 3 on AVX2) with every group remainder, K with a tail, and enough
    # rows per thread for several blocks (the next block's prefetch) and a partial last block
    for V, K, N in ((33, 64, 1), (70, 2560, 2), (9, 100, 1), (21, 100, 3), (17, 2560, 8), (13, 160, 11),
                    (70, 2560, 5), (45, 300, 6), (38, 96, 7), (50, 352, 16), (35, 544, 4)):
        x = rng.standard_normal((N, K)).astype(np.float32)
        for dtype in (np.float32, np.float16):
            rows = (0.1 * rng.standard_normal((V, K))).astype(dtype)
            want = f32_dot_canonical(rows, x)
            for threads in (1, 2):
                got = lmhead.lm_head_float(rows, K, x, isa=isa, threads=threads)
                np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32),
                                              err_msg=f"{isa} {np.dtype(dtype)} V={V} K={K} threads={threads}")
            # the engine's F16 lm_head: fp16-valued hidden rows (fused exact products: the same bits)
            if dtype == np.float16:
                x16 = x.astype(np.float16).astype(np.float32)
                want16 = f32_dot_canonical(rows, x16)
                got = lmhead.lm_head_float(rows, K, x16, isa=isa, threads=2, hidden_f16=True)
                np.testing.assert_array_equal(got.view(np.uint32), want16.view(np.uint32),
                                              err_msg=f"{isa} hidden_f16 V={V} K={K} N={N}")


def test_bad_shapes_are_one_line_errors():
    with pytest.raises(CodecError, match="multiple of 256"):
        lmhead.lm_head_q6_k(np.zeros((2, 210), np.uint8), 200, np.zeros((1, 200), np.float32))
    with pytest.raises(CodecError, match=r"hidden rows \(N, 256\)"):
        lmhead.lm_head_q6_k(np.zeros((2, 210), np.uint8), 256, np.zeros((1, 512), np.float32))
