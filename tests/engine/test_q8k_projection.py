"""The native engine's projection for the ``llama.cpp`` numerics profile (src/engine.h BL_EPI_Q8K,
docs/numerics.md#36-llamacpp-tq-dot-with-q8_k-activations).

The C core is built the way the profile builds it — ``prepare_weights(numerics="llama.cpp")`` and
``dims["act_q8k"] = 1`` — and each BitLinear must equal, bit for bit on every ISA level and for 1
and 2 threads, the numpy statement of upstream's TQ dot: ``mad_reference.tq_dot_q8k`` of the
Q8_K activations of ``quant.q8_k.quantize_q8_k`` (whose blocks, and the dot, are pinned to
hand-computed values in tests/kernels/test_kernels_blocks.py and tests/quant/test_q8_k.py). Layouts:
TQ2_0 with non-uniform scales, TQ1_0, I2_S (γ in every block) and TL1 (repacked to I2_S at load).
"""

from __future__ import annotations

import numpy as np
import pytest

from bitnet_lab import kernels
from bitnet_lab.engine.weights import ROUNDING_CODE, prepare_weights
from bitnet_lab.errors import ConfigError
from bitnet_lab.kernels.native import _k
from bitnet_lab.quant import mad_reference, packing, tiling
from bitnet_lab.quant.q8_k import quantize_q8_k
from bitnet_lab.tensors import TernaryWeight
from bitnet_lab.tools.testing import tiny_model
from block_models import latent_model

PROJ = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


def q8k_core(config, tensors):
    """An EngineCore of the llama.cpp profile's projections (dims as engine/native.py builds them)."""
    w = prepare_weights(config, tensors, x4=True, numerics="llama.cpp")
    c = config
    dims = {
        "hidden": c.hidden, "n_heads": c.n_heads, "n_kv_heads": c.n_kv_heads, "head_dim": c.head_dim,
        "ffn": c.ffn, "vocab": c.vocab, "rot_dim": c.rot_dim, "rope_neox": int(c.rope_style == "neox"),
        "act_relu2": int(c.activation == "relu2"), "sub_norms": int(c.sub_norms),
        "rounding": ROUNDING_CODE["half_even"], "kv_f16": 0, "lm_f16": int(w.lm_f16), "lm_q8": int(w.lm_q8),
        "act_q8k": 1, "eps": float(np.float32(c.norm_eps)), "kq_scale": float(np.float32(1.0)),
    }
    return _k.EngineCore(dims, w.layers, w.embed, w.lm, w.output_norm), w


def block_scales_of(w: TernaryWeight) -> np.ndarray:
    M, K = w.shape
    if w.block_scales is not None:
        return np.asarray(w.block_scales, np.float16).astype(np.float32).reshape(M, K // 256)
    return np.full((M, K // 256), np.float32(w.gamma()), np.float32)


def mixed_model():
    """TQ2_0/TQ1_0 per-block-absmean projections, with one I2_S and one TL1 per-tensor projection."""
    config, tensors = latent_model(("tq2_0", "tq1_0"), ("blk.0.attn_k.weight", "blk.1.ffn_up.weight"))
    w = tensors["blk.1.ffn_up.weight"]
    M, K = w.shape
    til = tiling.default_tiling("tl1", M, K)
    tensors["blk.1.ffn_up.weight"] = TernaryWeight(w.name, "tl1", (M, K), packing.pack("tl1", w.ternary(), tiling=til),
                                                   scale=w.scale, tiling=til)
    return config, tensors


def test_layouts_the_profile_reads():
    config, tensors = mixed_model()
    _, w = q8k_core(config, tensors)
    layouts = {name: lay for name, (lay, _) in w.packed.items()}
    assert layouts["blk.0.attn_q.weight"] == "tq2_0" and layouts["blk.0.attn_v.weight"] == "tq1_0"
    assert layouts["blk.0.attn_k.weight"] == "i2_s"  # never x4: the per-block kernels read row-major
    assert layouts["blk.1.ffn_up.weight"] == "i2_s"  # TL1 repacked
    assert w.i2s_layout == "file"


@pytest.mark.parametrize("threads", [1, 2])
def test_projection_equals_upstream_tq_dot_every_isa(threads):
    config, tensors = mixed_model()
    core, _ = q8k_core(config, tensors)
    rng = np.random.default_rng(6)
    for layer in range(config.n_layers):
        for slot, p in enumerate(PROJ):
            w = tensors[f"blk.{layer}.{p}.weight"]
            M, K = w.shape
            x = (rng.standard_normal((4, K)) * rng.uniform(0.1, 5)).astype(np.float32)
            x[1] = 0.0  # an all-zero Q8_K block row: d8 = 0
            x[2, :256] = np.round(x[2, :256] * 4) / 4  # ties in the rounding
            d8, q8 = quantize_q8_k(x)
            want = mad_reference.tq_dot_q8k(w.ternary_matrix(), block_scales_of(w), q8, d8)
            want_acc = (q8.astype(np.int64) @ w.ternary_matrix().astype(np.int64).T).astype(np.int32)
            for isa in kernels.available_isas():
                y, acc = core.bitlinear(layer, slot, x, kernels.ISA_ORDER.index(isa), threads, True)
                np.testing.assert_array_equal(acc, want_acc)
                assert np.array_equal(y.view(np.uint32), want.view(np.uint32)), f"{p} layer {layer} {isa}"


def test_non_finite_input_row_gives_nan_outputs_only_there():
    config, tensors = mixed_model()
    core, _ = q8k_core(config, tensors)
    K = tensors["blk.0.attn_q.weight"].shape[1]
    x = np.ones((3, K), np.float32)
    x[1, 7] = np.inf
    y, _ = core.bitlinear(0, 0, x, kernels.ISA_ORDER.index(kernels.active_isa()), 1, False)
    assert np.isnan(y[1]).all() and np.isfinite(y[[0, 2]]).all()


def test_profile_needs_k_multiple_of_256():
    config, tensors = tiny_model("llama", seed=4)  # K = 64
    with pytest.raises(ConfigError, match=r"llama\.cpp numerics \(Q8_K activations\) need every K % 256 == 0"):
        prepare_weights(config, tensors, x4=False, numerics="llama.cpp")
    with pytest.raises(ConfigError, match="numerics 'gguf' is not one of"):
        prepare_weights(config, tensors, x4=False, numerics="gguf")


def test_llamacpp_profile_engine_matches_reference():
    """The whole model in the llama.cpp profile (NativeEngine / ReferenceModel numerics="llama.cpp"):
    every integer capture and every projection output bit-identical, logits within the lm_head
    tolerance, and prefill + decode equal to one forward."""
    import bitnet_lab.reference as ref_mod
    from bitnet_lab.engine import NativeEngine

    config, tensors = latent_model(("tq2_0", "tq1_0"), ("blk.0.attn_k.weight",))
    eng = NativeEngine(config, tensors, threads=2, numerics="llama.cpp")
    ref = ref_mod.ReferenceModel(config, tensors, n_ctx_max=64, numerics="llama.cpp")
    ids = [1, 45, 123, 255, 29]
    le, ce = eng.logits(ids, capture=True)
    lr, cr = ref.logits(ids, capture=True)
    n_out = 0
    for name, want in cr.items():
        got = ce[name]
        assert got.shape == want.shape and got.dtype == want.dtype, name
        if np.issubdtype(want.dtype, np.integer) or name.endswith(".out"):
            as_bits = (lambda a: a.view(np.uint32)) if want.dtype == np.float32 else (lambda a: a)
            assert np.array_equal(as_bits(got), as_bits(want)), name
            n_out += name.endswith(".out")
    assert n_out == 7 * config.n_layers
    assert float(np.max(np.abs(le - lr)) / np.max(np.abs(lr))) <= 1e-4
    cache = eng.new_cache(16)
    steps = [eng.forward(ids[:3], cache)] + [eng.forward([t], cache) for t in ids[3:]]
    assert np.array_equal(np.concatenate(steps), le)
