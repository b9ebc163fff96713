"""The reference's numerics profiles (docs/numerics.md#12-numerics-profiles): ``numerics="llama.cpp"``
quantises every projection input to Q8_K and sums ggml's per-block products in float32.

The Q8_K quantiser is pinned three ways: to blocks computed by hand here, to the numpy twin
(``bitnet_lab.quant.q8_k``) on random and adversarial rows, and, inside a whole model, to the
twin applied to the model's own captured inputs. The block dot is pinned to a plain float32 loop
written from ggml's ``vec_dot_tq2_0_q8_K`` (scalar version).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

jax = pytest.importorskip("jax")

import jax.numpy as jnp  # noqa: E402

from bitnet_lab.backend import numerics_options  # noqa: E402
from bitnet_lab.errors import ConfigError  # noqa: E402
from bitnet_lab.quant.q8_k import quantize_q8_k  # noqa: E402
from bitnet_lab.reference import ReferenceModel  # noqa: E402
from bitnet_lab.reference import layers as L  # noqa: E402
from bitnet_lab.tools.testing import tiny_model  # noqa: E402

REAL = Path(__file__).resolve().parents[1] / "data" / "real-files"
QUANT_INPUT = {"attn_in": "attn_norm", "attn_output_in": "attn_sub_norm", "ffn_in": "ffn_norm",
               "ffn_down_in": "ffn_sub_norm"}


def _q8k_jax(x: np.ndarray):
    with jax.enable_x64(True):
        q, d = jax.jit(L.quantize_q8_k)(jnp.asarray(x), jnp.asarray(np.float32(-0.0)))
    return np.asarray(q), np.asarray(d)


def _block_dot_jax(q, d8, t, dw):
    with jax.enable_x64(True):
        y, acc = jax.jit(L.q8_k_block_dot)(q, d8, t, dw, jnp.asarray(np.float32(-0.0)))
    return np.asarray(y), np.asarray(acc)


# ---- Q8_K by hand --------------------------------------------------------------------------------


def _hand_blocks() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three blocks whose Q8_K encoding is worked out by hand (expected q and d beside them)."""
    x = np.zeros((1, 768), np.float32)
    q = np.zeros((1, 768), np.int8)
    # block 0: max = -127 (the first largest |x|), so iscale = -127 / -127 = 1 exactly and every
    # code is nearest_int(x): ties go to even (0.5 -> 0, 1.5 -> 2, 2.5 -> 2, 126.5 -> 126, -1.5 -> -2)
    x[0, :8] = [-127.0, 0.5, 1.5, 2.5, -0.5, -1.5, 126.5, 3.25]
    q[0, :8] = [-127, 0, 2, 2, 0, -2, 126, 3]
    # block 1: |3| appears twice; the FIRST (+3) is max, so iscale = -127/3 < 0: codes flip sign and
    # d = 1/iscale is negative (upstream's choice, which the sign of d records)
    x[0, 256:259] = [3.0, -3.0, 1.0]
    q[0, 256:259] = [-127, 127, -42]  # 1 * (-42.333...) -> -42
    # block 2: all zero -> d = 0, codes 0
    d = np.array([[1.0, np.float32(1.0) / np.float32(np.float32(-127.0) / np.float32(3.0)), 0.0]], np.float32)
    return x, q, d


def test_q8_k_hand_computed_blocks():
    x, q_want, d_want = _hand_blocks()
    assert d_want[0, 1] < 0 and abs(d_want[0, 1] + 3 / 127) < 1e-7
    for q, d in (_q8k_jax(x), quantize_q8_k(x)[::-1]):
        np.testing.assert_array_equal(q, q_want)
        np.testing.assert_array_equal(d.view(np.int32), d_want.view(np.int32))


def test_q8_k_jax_equals_numpy_twin_bit_for_bit():
    rng = np.random.default_rng(7)
    rows = [rng.standard_normal((5, 1024)).astype(np.float32) * np.float32(3.0),
            (rng.standard_normal((3, 512)) * 1e-30).astype(np.float32),      # tiny, still finite scales
            np.round(rng.standard_normal((4, 256)) * 40).astype(np.float32) + np.float32(0.5),  # ties
            rng.integers(-3, 4, (2, 768)).astype(np.float32)]                 # repeated maxima
    rows.append(np.concatenate([np.zeros((1, 256), np.float32), rows[0][:1, :256]], axis=1))  # a zero block
    for x in rows:
        qj, dj = _q8k_jax(x)
        dn, qn = quantize_q8_k(x)
        np.testing.assert_array_equal(qj, qn)
        np.testing.assert_array_equal(dj.view(np.int32), dn.view(np.int32))


# ---- ggml's per-block TQ dot ----------------------------------------------------------------------


def _ggml_dot_loop(q, d8, t, dw) -> np.ndarray:
    """``vec_dot_tq2_0_q8_K`` (generic) written out: per block the int sum, then
    ``sumf += (float)sumi * (y.d * x.d)`` in float32, blocks in order."""
    C, K = q.shape
    M = t.shape[0]
    out = np.zeros((C, M), np.float32)
    for c in range(C):
        for m in range(M):
            sumf = np.float32(0.0)
            for b in range(K // 256):
                sumi = int(np.dot(q[c, 256 * b: 256 * (b + 1)].astype(np.int64), t[m, 256 * b: 256 * (b + 1)]))
                d = np.float32(d8[c, b] * dw[m, b])
                sumf = np.float32(sumf + np.float32(np.float32(sumi) * d))
            out[c, m] = sumf
    return out


def test_block_dot_equals_ggml_loop():
    rng = np.random.default_rng(3)
    C, M, K = 3, 9, 1536
    x = rng.standard_normal((C, K)).astype(np.float32)
    d8, q = quantize_q8_k(x)
    t = rng.integers(-1, 2, (M, K)).astype(np.int8)
    dw = (rng.uniform(0.5, 2.0, (M, K // 256))).astype(np.float16).astype(np.float32)
    y, acc = _block_dot_jax(q, d8, t, dw)
    np.testing.assert_array_equal(y.view(np.int32), _ggml_dot_loop(q, d8, t, dw).view(np.int32))
    np.testing.assert_array_equal(acc, q.astype(np.int64) @ t.T.astype(np.int64))
    # a row whose sum is 0 with a negative d8 is +0.0 (ggml: 0.0f + (-0.0f)), even with one block
    one = _block_dot_jax(np.zeros((1, 256), np.int8), np.array([[-0.5]], np.float32), t[:, :256], dw[:, :1])[0]
    assert not np.signbit(one).any()
    # the float32 block order is what the formula is: summing in float64 instead moves some outputs
    f64 = (((q.reshape(C, 1, -1, 256).astype(np.int64) * t.reshape(1, M, -1, 256)).sum(-1))
           * (d8[:, None, :].astype(np.float32) * dw[None]).astype(np.float64)).sum(-1).astype(np.float32)
    assert not np.array_equal(f64, y)


# ---- the profile in the model -----------------------------------------------------------------


@pytest.fixture(scope="module")
def tq_model():
    return tiny_model("bitnet-b1.58", hidden=256, ffn=512, n_heads=4, vocab=300, layout="tq2_0", seed=4)


IDS = np.array([3, 17, 250, 1, 99, 42, 42, 7, 128, 200, 5], dtype=np.int32)


def test_llama_cpp_profile_captures_follow_q8_k_and_the_block_dot(tq_model):
    config, tensors = tq_model
    ref = ReferenceModel(config, tensors, numerics="llama.cpp", buckets=(1, 16))
    logits, caps = ref.logits(IDS, capture=True)
    assert ref.numerics["profile"] == "llama.cpp" and ref.kv_dtype == "f16"
    assert "llama.cpp" in repr(ref) and "Q8_K" in repr(ref)
    weights = {p: tensors[f"blk.1.{p}.weight"] for p in ("attn_q", "ffn_down")}
    d8 = {}
    for tag, src in QUANT_INPUT.items():
        d8[tag], q = quantize_q8_k(caps[f"blk.1.{src}"])
        np.testing.assert_array_equal(caps[f"blk.1.{tag}.q"], q)
        np.testing.assert_array_equal(caps[f"blk.1.{tag}.sum"], q.astype(np.int32).sum(axis=1))
        np.testing.assert_array_equal(caps[f"blk.1.{tag}.scale"], 0)  # per-block scales: not captured
    for p, tag in (("attn_q", "attn_in"), ("ffn_down", "ffn_down_in")):
        w = weights[p]
        t = w.ternary_matrix()
        dw = np.asarray(w.block_scales, np.float16).astype(np.float32).reshape(t.shape[0], -1)
        want = _ggml_dot_loop(caps[f"blk.1.{tag}.q"][:2], d8[tag][:2], t, dw)
        np.testing.assert_array_equal(caps[f"blk.1.{p}.out"][:2].view(np.int32), want.view(np.int32))
    # the bitnet profile computes something else on the same model: the comparison can fail
    other = ReferenceModel(config, tensors, buckets=(1, 16)).logits(IDS)
    assert np.abs(other - logits).max() > 1e-4 * np.abs(logits).max()


def test_llama_cpp_profile_prefill_equals_decode(tq_model):
    config, tensors = tq_model
    ref = ReferenceModel(config, tensors, numerics="llama.cpp", buckets=(1, 16))
    whole = ref.logits(IDS)
    cache = ref.new_cache(64)
    steps = np.concatenate([ref.forward(IDS[i:i + 1], cache) for i in range(len(IDS))])
    np.testing.assert_array_equal(whole, steps)


def test_profile_options_resolve_and_conflicts_are_refused():
    assert numerics_options(None) == {"numerics": "bitnet", "rounding": "half_even", "kv_dtype": "f32",
                                      "lm_head_dtype": "auto"}
    assert numerics_options("llama.cpp")["kv_dtype"] == "f16"
    assert numerics_options("bitnet", kv_dtype="f16")["kv_dtype"] == "f16"  # bitnet: every option free
    assert numerics_options("llama.cpp", kv_dtype="f16")["kv_dtype"] == "f16"  # consistent: accepted
    with pytest.raises(ConfigError, match=r"numerics='llama.cpp' computes with kv_dtype='f16'; kv_dtype='f32'"):
        numerics_options("llama.cpp", kv_dtype="f32")
    with pytest.raises(ConfigError, match="rounding='half_away' contradicts"):
        numerics_options("llama.cpp", rounding="half_away")
    with pytest.raises(ConfigError, match="lm_head_dtype='f32' contradicts"):
        numerics_options("llama.cpp", lm_head_dtype="f32")
    with pytest.raises(ConfigError, match="numerics 'gguf' is not one of 'bitnet', 'llama.cpp'"):
        numerics_options("gguf")


def test_llama_cpp_profile_needs_256_multiples():
    config, tensors = tiny_model("bitnet-b1.58", hidden=64, ffn=128, layout="int8")
    with pytest.raises(ConfigError, match=r"multiple of 256 \(Q8_K blocks\); not so for attn_q \(K=64\)"):
        ReferenceModel(config, tensors, numerics="llama.cpp")


def test_load_passes_the_profile(tmp_path):
    import bitnet_lab as bl

    m = bl.load(REAL / "upstream-tq2_0.gguf", backend="reference", numerics="llama.cpp")
    assert m.backend_options["kv_dtype"] == "f16" and "numerics=llama.cpp" in repr(m)
    assert m.runner.numerics["profile"] == "llama.cpp"
    with pytest.raises(ConfigError, match="contradicts"):
        bl.load(REAL / "upstream-tq2_0.gguf", backend="reference", numerics="llama.cpp", kv_dtype="f32")
    assert "numerics=bitnet" in repr(bl.load(REAL / "upstream-tq2_0.gguf", backend="reference"))
