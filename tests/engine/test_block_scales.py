"""TQ1_0/TQ2_0 files whose block scales differ, on the native engine (issue 19).

The model is like a file llama.cpp quantises from a latent checkpoint: every 256-weight block of every
row ternarised with its own scale (here its absmean: t = clamp(round(w / γ_b), −1, 1), d_b = fp16(γ_b)).
The engine must run it with the reference's block epilogue (docs/numerics.md#35-block-scaled-tq-epilogue):

- every integer capture and every projection output equal to the reference's bit for bit, logits
  within the engine's lm_head tolerance; the per-tensor projections of such a model (an I2_S tensor
  among TQ ones) take the block epilogue too, as in the reference;
- one BitLinear bit-identical to its numpy statement (mad_reference.block_epilogue_ref of the
  per-block product) on every ISA level;
- identical logits for 1 and 2 threads and every ISA level, prefill and decode;
- uniform-scale files keep the per-tensor fast path (x4 re-order, one scale); a non-uniform TQ2_0
  file stays TQ2_0 for the per-block kernels; a non-finite scale in a used block is refused with
  the tensor's name.
"""

from __future__ import annotations

import numpy as np
import pytest

from bitnet_lab import kernels
from bitnet_lab.engine import NativeEngine
from bitnet_lab.errors import CodecError
from bitnet_lab.quant import mad_reference, ternary
from bitnet_lab.tensors import TernaryWeight
from bitnet_lab.tools.testing import tiny_model
from block_models import latent_model

import bitnet_lab.reference as ref_mod

TOL = 1e-4


def test_latent_quantisation_gives_non_uniform_scales():
    _, tensors = latent_model()
    d = np.asarray(tensors["blk.0.ffn_up.weight"].block_scales, np.float32)
    assert np.unique(d).size > 100  # one scale per (row, block): nothing uniform about it


@pytest.mark.parametrize("layouts,i2s", [(("tq2_0",), ()), (("tq1_0",), ()),
                                         (("tq2_0", "tq1_0"), ("blk.0.attn_k.weight", "blk.1.ffn_down.weight"))])
def test_captures_and_logits_match_reference(layouts, i2s):
    config, tensors = latent_model(layouts, i2s)
    eng = NativeEngine(config, tensors, threads=2)
    ref = ref_mod.ReferenceModel(config, tensors, n_ctx_max=64)
    assert eng.numerics["epilogue"] == ref.numerics["epilogue"] == "fl32(sum_b acc_b*d_b) / s_x"
    ids = [1, 45, 123, 255, 29, 7, 200]
    le, ce = eng.logits(ids, capture=True)
    lr, cr = ref.logits(ids, capture=True)
    n_out = 0
    for name, want in cr.items():
        got = ce[name]
        assert got.shape == want.shape and got.dtype == want.dtype, name
        if np.issubdtype(want.dtype, np.integer) or name.endswith(".out"):
            bad = np.argwhere(got.view(np.uint32 if got.dtype == np.float32 else got.dtype) !=
                              want.view(np.uint32 if want.dtype == np.float32 else want.dtype))
            assert bad.size == 0, f"{name}: {len(bad)} entries differ, first at {tuple(bad[0])}"
            n_out += name.endswith(".out")
    assert n_out == config.n_layers * 7  # every projection output bit-identical
    assert float(np.max(np.abs(le - lr)) / np.max(np.abs(lr))) <= TOL


def test_bitlinear_equals_the_numpy_statement_every_isa():
    config, tensors = latent_model(("tq2_0", "tq1_0"), ("blk.0.attn_k.weight",))
    eng = NativeEngine(config, tensors, threads=2)
    rng = np.random.default_rng(1)
    for name in ("blk.0.attn_q", "blk.0.attn_v", "blk.1.ffn_down", "blk.0.attn_k"):
        w = tensors[name + ".weight"]
        M, K = w.shape
        x = rng.standard_normal((5, K)).astype(np.float32)
        x[1] = 0.0
        q, s, _ = ternary.quantize_activations(x, "half_even")
        t = w.ternary_matrix()
        acc_b = mad_reference._block_product(t, q)
        if w.block_scales is not None:
            d = np.asarray(w.block_scales, np.float16).astype(np.float32).reshape(M, K // 256)
        else:  # the per-tensor projection of a block-scaled model: γ in every block
            d = np.full((M, K // 256), np.float32(w.gamma()), np.float32)
        want = mad_reference.block_epilogue_ref(acc_b, d, s)
        for isa in kernels.available_isas():
            with kernels.use_isa(isa):
                y, acc = eng.bitlinear(name, x, return_acc=True)
            np.testing.assert_array_equal(acc, acc_b.sum(axis=2))
            assert np.array_equal(y.view(np.uint32), want.view(np.uint32)), f"{name} {isa}"


def test_threads_isas_prefill_and_decode_bit_identical():
    config, tensors = latent_model(("tq2_0", "tq1_0"))
    ids = [1, 5, 90, 31, 77, 123, 4, 8, 15, 16, 23, 42]
    results = {}
    for threads in (1, 2):
        eng = NativeEngine(config, tensors, threads=threads)
        for isa in kernels.available_isas():
            with kernels.use_isa(isa):
                cache = eng.new_cache(32)
                out = [eng.forward(ids[:9], cache)] + [eng.forward(ids[t : t + 1], cache) for t in range(9, 12)]
                results[(threads, isa)] = np.concatenate(out)
        full = eng.logits(ids)
        assert np.array_equal(full, results[(threads, kernels.active_isa())])
    first = next(iter(results.values()))
    for key, val in results.items():
        assert np.array_equal(val, first), key


def test_uniform_files_keep_the_fast_path_and_non_uniform_ones_stay_tq2():
    config, uniform = tiny_model("bitnet-b1.58", seed=8, hidden=256, ffn=512, layout="tq2_0")
    eng = NativeEngine(config, uniform, threads=1, i2s_layout="x4")
    assert eng.numerics["epilogue"] == "(acc / s_x) * gamma"
    assert {eng.packed_weight(f"blk.0.{p}.weight")[0] for p in ("attn_q", "ffn_down")} == {"i2_s_x4"}
    config, tensors = latent_model(("tq2_0",))
    eng = NativeEngine(config, tensors, threads=1, i2s_layout="x4")
    assert eng.packed_weight("blk.0.attn_q.weight")[0] == "tq2_0"


def test_non_finite_scale_of_a_used_block_is_refused():
    config, tensors = latent_model(("tq1_0",))
    name = "blk.1.attn_v.weight"
    w = tensors[name]
    d = np.asarray(w.block_scales, dtype=np.float16).copy()
    d[2, 0] = np.float16(np.inf)
    bad = dict(tensors)
    bad[name] = TernaryWeight(name, "tq1_0", w.shape, w.data, block_scales=d)
    with pytest.raises(CodecError, match=r"blk\.1\.attn_v\.weight: tq1_0 block scale of row 2, block 0 is inf"):
        NativeEngine(config, bad)


def test_fault_in_the_block_kernels_reaches_the_logits():
    """verify's fault tests break the op a layout runs (kernels.faults.BLOCK_LAYOUT_OPS for a
    block-scaled TQ tensor): the logits must move, and come back when the fault is off."""
    from bitnet_lab.kernels.faults import BLOCK_LAYOUT_OPS

    config, tensors = latent_model(("tq2_0",))
    eng = NativeEngine(config, tensors, threads=2)
    ids = [1, 45, 123]
    clean = eng.logits(ids)
    for op in BLOCK_LAYOUT_OPS["tq2_0"]:  # the GEMM (prefill) and the GEMV (one token)
        kernels.inject_fault(op)
        try:
            broken = eng.logits(ids) if op.endswith("gemm") else eng.logits(ids[:1])
        finally:
            kernels.inject_fault(None)
        assert not np.array_equal(broken, clean if op.endswith("gemm") else clean[:1]), op
    assert np.array_equal(eng.logits(ids), clean)
