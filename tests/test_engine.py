"""The native engine (bitnet_lab.engine) against the JAX reference, the numpy policy, itself.

- greedy decoding: identical tokens for 64 steps and logits within 1e-4 relative
  (max|Δ| / max|logit|) at every step, for the tiny model of each family (int8 layout: repacked
  to I2_S with K padded 64 -> 128) and for each ternary layout (i2_s, tl1, tl2, tq1_0, tq2_0:
  packed tiny models for 64 steps, and dummy files of the `tiny` layout through the reader for 8);
- prefill + decode == one full forward (bit for bit, also across the 64-row internal chunks);
- 1 and 2 threads, and every ISA level in available_isas(): bit-identical logits;
- captures: every int8 / int32 intermediate equal to the reference's exactly;
- BitLinear: bit-identical to bitnet_lab.quant's numpy policy (quantise, integer product,
  epilogue) for every layout and both rounding modes;
- the reference's options (kv_dtype f16, lm_head f32, half_away rounding), a Q8_0 embedding, the
  old `bitnet` arch's `.scale` tensors;
- bad inputs raise the project's errors with the numbers.
"""

from __future__ import annotations

import numpy as np
import pytest

import bitnet_lab
from bitnet_lab import kernels
from bitnet_lab.dummy import generate_dummy
from bitnet_lab.engine import PROJECTIONS, NativeEngine, rope_tables
from bitnet_lab.errors import BitnetLabError, CodecError, ConfigError
from bitnet_lab.quant import ternary
from bitnet_lab.tensors import FloatTensor, TernaryWeight
from bitnet_lab.testing import tiny_model

ref_mod = pytest.importorskip("bitnet_lab.reference")
ReferenceModel = ref_mod.ReferenceModel

FAMILIES = ("bitnet-b1.58", "bitnet", "llama")
FILE_LAYOUTS = ("i2_s", "tl1", "tl2", "tq1_0", "tq2_0")
STEPS = 64
TOL = 1e-4


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a.astype(np.float64) - b)) / np.max(np.abs(b)))


def greedy_against_reference(eng, ref, prompt, steps=STEPS, n_ctx=128):
    """Prefill ``prompt`` then decode greedily ``steps`` tokens on both; check every step."""
    ce, cr = eng.new_cache(n_ctx), ref.new_cache(n_ctx)
    le, lr = eng.forward(prompt, ce), ref.forward(prompt, cr)
    assert le.shape == lr.shape == (len(prompt), eng.vocab_size)
    assert rel_err(le, lr) <= TOL, f"prefill: rel err {rel_err(le, lr):.3g}"
    toks = []
    for step in range(steps):
        te, tr = int(np.argmax(le[-1])), int(np.argmax(lr[-1]))
        assert te == tr, f"step {step}: engine picks {te}, reference {tr} (after {toks})"
        toks.append(te)
        le, lr = eng.forward([te], ce), ref.forward([tr], cr)
        err = rel_err(le, lr)
        assert err <= TOL, f"step {step}: rel err {err:.3g}"
    assert ce.pos == cr.pos == len(prompt) + steps
    return toks


@pytest.fixture(scope="module")
def dummy_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("engine_dummies")
    return {lay: generate_dummy("tiny", d / f"tiny_{lay}.gguf", outtype=lay, progress=False) for lay in FILE_LAYOUTS}


@pytest.fixture(scope="module")
def dummy_models(dummy_files):
    models = {lay: bitnet_lab.load(p) for lay, p in dummy_files.items()}
    yield models
    for m in models.values():
        m.close()


@pytest.fixture(scope="module")
def tiny_b158():
    return tiny_model("bitnet-b1.58", seed=3)


# ---- pieces shared with the reference ----------------------------------------------------------


@pytest.mark.parametrize("n_dims,base", [(64, 10000.0), (128, 500000.0), (16, 1000042.0), (96, 10000.0)])
def test_rope_tables_equal_reference(n_dims, base):
    from bitnet_lab.reference import rope

    cos, sin = rope_tables(4096, n_dims, base)
    rc, rs = rope.cos_sin_tables(4096, n_dims, base)
    assert np.array_equal(cos, rc) and np.array_equal(sin, rs)


def test_f16_rounding_matches_numpy():
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2**32, 2_000_000, dtype=np.uint64).astype(np.uint32)
    x = bits.view(np.float32)
    # plus the fp16 boundaries: subnormals, ties at every binade edge, overflow, inf, NaN
    edges = np.array([0.0, -0.0, 2**-25, 2**-24, 1.5 * 2**-24, 2**-14, 65504.0, 65519.99, 65520.0,
                      1e30, np.inf, -np.inf, 1 + 2**-11, 1 + 3 * 2**-11], dtype=np.float32)
    x = np.concatenate([x, edges, -edges])
    got = kernels._k.engine_f32_to_f16(x)
    with np.errstate(over="ignore"):  # values beyond 65504 round to inf, as intended
        want = x.astype(np.float16).view(np.uint16)
    nan = np.isnan(x)
    assert np.array_equal(got[~nan], want[~nan])
    assert np.all((got[nan] & 0x7C00) == 0x7C00) and np.all((got[nan] & 0x3FF) != 0)


def test_rms_norm_equals_reference():
    import jax
    import jax.numpy as jnp

    from bitnet_lab.reference import layers

    rng = np.random.default_rng(1)
    x = (rng.standard_normal((16, 2560)) * rng.uniform(0.01, 100, (16, 1))).astype(np.float32)
    w = (1 + 0.1 * rng.standard_normal(2560)).astype(np.float32)
    got = kernels._k.engine_rms_norm(x, w, np.float32(1e-5))
    with jax.enable_x64(True):
        want = np.asarray(jax.jit(layers.rms_norm, static_argnums=2)(jnp.asarray(x), jnp.asarray(w), float(np.float32(1e-5))))
    assert np.array_equal(got, want)


# ---- whole model vs reference ------------------------------------------------------------------


@pytest.mark.parametrize("arch", FAMILIES)
def test_greedy_matches_reference_families(arch):
    config, tensors = tiny_model(arch, seed=11)
    eng = NativeEngine(config, tensors, threads=2)
    ref = ReferenceModel(config, tensors, n_ctx_max=128)
    greedy_against_reference(eng, ref, [1, 17, 42, 99, 7, 3, 200])


def packed_tiny(layout: str, seed: int = 21):
    """A tiny bitnet-b1.58 model (H 256, I 512, vocab 256) with every projection in ``layout``
    (TL1/TL2 packed with bitnet_lab.quant.tiling's default tiling for each shape)."""
    from bitnet_lab.quant import packing, tiling

    tl = layout in ("tl1", "tl2")
    config, tensors = tiny_model("bitnet-b1.58", seed=seed, hidden=256, ffn=512, layout="int8" if tl else layout)
    if tl:
        for name, w in list(tensors.items()):
            if isinstance(w, TernaryWeight):
                M, K = w.shape
                til = tiling.default_tiling(layout, M, K)
                data = packing.pack(layout, w.ternary(), tiling=til)
                tensors[name] = TernaryWeight(name, layout, (M, K), data, scale=w.scale, tiling=til)
    return config, tensors


@pytest.mark.parametrize("layout", FILE_LAYOUTS)
def test_greedy_matches_reference_packed_layouts(layout):
    config, tensors = packed_tiny(layout)
    assert tensors["blk.0.ffn_down.weight"].layout == layout
    eng = NativeEngine(config, tensors, threads=2)
    ref = ReferenceModel(config, tensors, n_ctx_max=128)
    greedy_against_reference(eng, ref, [1, 45, 123, 255, 29])


@pytest.mark.parametrize("layout", FILE_LAYOUTS)
def test_greedy_matches_reference_dummy_files(layout, dummy_models):
    """The reader's tensors of each layout (vocab 32000: fewer steps, the reference is slow)."""
    m = dummy_models[layout]
    assert m.tensors["blk.0.attn_q.weight"].layout == layout
    eng = NativeEngine(m.config, m.tensors, threads=2)
    ref = ReferenceModel(m.config, m.tensors, n_ctx_max=64)
    greedy_against_reference(eng, ref, [1, 450, 1234, 31999, 29871], steps=8, n_ctx=64)


def test_options_match_reference(tiny_b158):
    config, tensors = tiny_b158
    for opts in ({"kv_dtype": "f16", "rounding": "half_away"}, {"lm_head_dtype": "f32"}):
        eng = NativeEngine(config, tensors, threads=2, **opts)
        ref = ReferenceModel(config, tensors, n_ctx_max=64, **opts)
        assert eng.numerics["kv_dtype"] == ref.numerics["kv_dtype"]
        assert eng.numerics["lm_head"] == ref.numerics["lm_head"]
        greedy_against_reference(eng, ref, [5, 6, 7, 8], steps=8, n_ctx=64)


def test_f16_lm_head_over_f32_embedding():
    """lm_head_dtype="f16" on an F32 embedding: the engine keeps an fp16 copy of the lm_head
    (as the reference rounds it) and rounds the hidden state; the embedding stays F32."""
    config, tensors = tiny_model("bitnet-b1.58", seed=12, embed_dtype="F32")
    eng = NativeEngine(config, tensors, threads=2, lm_head_dtype="f16")
    ref = ReferenceModel(config, tensors, n_ctx_max=128, lm_head_dtype="f16")
    assert eng.numerics["lm_head"] == ref.numerics["lm_head"] == "f16"
    greedy_against_reference(eng, ref, [3, 1, 4, 1, 5], steps=8)


def test_q8_0_embedding_matches_reference(tmp_path):
    path = generate_dummy("tiny", tmp_path / "q8.gguf", outtype="i2_s", embedding_type="q8_0", progress=False)
    with bitnet_lab.load(path) as m:
        assert m.tensors["token_embd.weight"].ggml_type == "Q8_0"
        eng = NativeEngine(m.config, m.tensors, threads=2)
        ref = ReferenceModel(m.config, m.tensors, n_ctx_max=64)
        assert eng.numerics["lm_head"] == ref.numerics["lm_head"] == "f32"
        greedy_against_reference(eng, ref, [1, 2, 3], steps=8, n_ctx=64)


def test_out_scale_tensors_match_reference():
    config, tensors = tiny_model("bitnet", seed=5)
    rng = np.random.default_rng(5)
    tensors = dict(tensors)
    for i in range(config.n_layers):
        for p in ("attn_q", "attn_output", "ffn_down"):
            n = f"blk.{i}.{p}.scale"
            tensors[n] = FloatTensor(n, "F32", (1,), np.array([rng.uniform(0.5, 2.0)], dtype=np.float32))
    eng = NativeEngine(config, tensors, threads=2)
    ref = ReferenceModel(config, tensors, n_ctx_max=64)
    greedy_against_reference(eng, ref, [9, 8, 7], steps=8, n_ctx=64)


def test_captures_match_reference(dummy_models):
    m = dummy_models["i2_s"]
    eng = NativeEngine(m.config, m.tensors, threads=2)
    ref = ReferenceModel(m.config, m.tensors, n_ctx_max=64)
    ids = [1, 306, 4966, 263, 12, 99]
    le, ce = eng.logits(ids, capture=True)
    lr, cr = ref.logits(ids, capture=True)
    assert set(cr) <= set(ce), f"captures missing in the engine: {sorted(set(cr) - set(ce))}"
    assert {f"blk.0.{n}.acc" for n in PROJECTIONS} <= set(ce)
    n_int = 0
    for name, want in cr.items():
        got = ce[name]
        assert got.shape == want.shape and got.dtype == want.dtype, f"{name}: {got.shape} {got.dtype} vs {want.shape} {want.dtype}"
        if np.issubdtype(want.dtype, np.integer):
            bad = np.argwhere(got != want)
            assert bad.size == 0, f"{name}: {len(bad)} integer entries differ, first at {tuple(bad[0])}"
            n_int += 1
        else:
            scale = max(float(np.max(np.abs(want))), 1e-30)
            assert float(np.max(np.abs(got - want))) / scale <= 1e-5, name
    assert n_int == m.config.n_layers * (4 * 2 + 7)  # q and sum of 4 quantisations, 7 accumulators
    assert np.array_equal(ce["logits"], le) and rel_err(le, lr) <= TOL


# ---- self-consistency --------------------------------------------------------------------------


def test_prefill_plus_decode_equals_full_forward(dummy_models):
    m = dummy_models["i2_s"]
    eng = NativeEngine(m.config, m.tensors, threads=2)
    ids = np.random.default_rng(2).integers(0, m.config.vocab, 100)  # > one 64-row chunk
    full = eng.logits(ids)
    cache = eng.new_cache(128)
    parts = [eng.forward(ids[:37], cache), eng.forward(ids[37:80], cache)]
    parts += [eng.forward(ids[t : t + 1], cache) for t in range(80, 100)]
    assert np.array_equal(np.concatenate(parts), full)
    cache = eng.new_cache(128)
    last = eng.forward(ids, cache, last_only=True)
    assert last.shape == (1, m.config.vocab) and np.array_equal(last[0], full[-1])
    cache.reset()
    assert np.array_equal(eng.forward(ids[:5], cache), full[:5])


@pytest.mark.parametrize("kv_dtype", ["f32", "f16"])
def test_threads_and_isas_bit_identical(dummy_models, kv_dtype):
    ids = [1, 5, 900, 31000, 77, 123, 4, 8, 15, 16, 23, 42]
    for layout, m in dummy_models.items():
        results = {}
        for threads in (1, 2):
            eng = NativeEngine(m.config, m.tensors, threads=threads, kv_dtype=kv_dtype)
            for isa in kernels.available_isas() if threads == 2 else (kernels.active_isa(),):
                with kernels.use_isa(isa):
                    cache = eng.new_cache(32)
                    out = [eng.forward(ids[:9], cache)] + [eng.forward(ids[t : t + 1], cache) for t in range(9, 12)]
                    results[(threads, isa)] = np.concatenate(out)
        first = next(iter(results.values()))
        for key, val in results.items():
            assert np.array_equal(val, first), f"{layout}: {key} differs from {next(iter(results))}"


# ---- BitLinear tier ------------------------------------------------------------------------------


def numpy_bitlinear(x, t, gamma, rounding):
    q, s, _ = ternary.quantize_activations(x, rounding)
    acc = (q.astype(np.int64) @ t.astype(np.int64).T).astype(np.int32)
    return ternary.bitlinear_epilogue(acc, s, gamma), acc


def bitlinear_inputs(K, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((5, K)).astype(np.float32) * np.float32(3.0)
    x[1] = 0.0  # all-zero row: the 1e-5 floor
    x[2] *= np.float32(1e-3)
    x[3] = np.round(x[3] * 2) / 2  # many exact halves after scaling
    return x


@pytest.mark.parametrize("rounding", ternary.ROUNDING_MODES)
def test_bitlinear_bit_identical_to_numpy_policy(dummy_models, rounding):
    cases = [(lay, m.config, m.tensors) for lay, m in dummy_models.items()]
    config, tensors = tiny_model("llama", seed=4)  # int8 layout, K = 64: repacked with padding
    cases.append(("int8", config, tensors))
    for lay, config, tensors in cases:
        eng = NativeEngine(config, tensors, threads=2, rounding=rounding)
        for name in ("blk.0.attn_q", "blk.1.attn_k", "blk.0.ffn_down"):
            w = tensors[name + ".weight"]
            x = bitlinear_inputs(w.shape[1], seed=len(name))
            want_y, want_acc = numpy_bitlinear(x, w.ternary(), w.gamma(), rounding)
            for isa in kernels.available_isas():
                with kernels.use_isa(isa):
                    y, acc = eng.bitlinear(name, x, return_acc=True)
                assert np.array_equal(acc, want_acc), f"{lay} {name} {isa}: accumulators differ"
                assert np.array_equal(y.view(np.uint32), want_y.view(np.uint32)), f"{lay} {name} {isa}: outputs differ"
            assert np.array_equal(eng.bitlinear(name + ".weight", x[0]), want_y[0])


# ---- loading, memory, errors ----------------------------------------------------------------------


def test_weights_are_not_copied(dummy_models):
    for layout, m in dummy_models.items():
        eng = NativeEngine(m.config, m.tensors, threads=1)
        for name in ("blk.2.ffn_up.weight", "blk.0.attn_k.weight"):
            kind, data = eng.packed_weight(name)
            assert kind == layout and np.shares_memory(data, np.asarray(m.tensors[name].data)), (layout, name)
        assert eng.weight_bytes == sum(np.asarray(w.data).nbytes for w in m.ternary_weights().values())
    config, tensors = tiny_model("bitnet", seed=1)  # int8 layout, K = 64: one I2_S repack, K -> 128
    eng = NativeEngine(config, tensors, threads=1)
    kind, data = eng.packed_weight("blk.0.attn_q.weight")
    assert kind == "i2_s" and data.nbytes == 64 * 128 // 4


def test_load_backend_native(dummy_files):
    ids = [1, 2, 3, 4]
    with bitnet_lab.load(dummy_files["tq2_0"], backend="native", threads=1) as m:
        got = m.logits(ids)
        want = NativeEngine(m.config, m.tensors, threads=2).logits(ids)
    assert np.array_equal(got, want)


def test_bad_inputs_raise(tiny_b158):
    config, tensors = tiny_b158
    eng = NativeEngine(config, tensors, threads=1)
    cache = eng.new_cache(8)
    with pytest.raises(BitnetLabError, match=r"token id 256 is outside the vocabulary 0\.\.255"):
        eng.forward([1, 256], cache)
    with pytest.raises(BitnetLabError, match="token id -1"):
        eng.forward([-1], cache)
    with pytest.raises(BitnetLabError, match="integers"):
        eng.forward([1.5], cache)
    with pytest.raises(BitnetLabError, match="1-D"):
        eng.forward([[1, 2]], cache)
    eng.forward([1, 2, 3, 4, 5], cache)
    with pytest.raises(BitnetLabError, match=r"context overflow: 5 cached \+ 4 new tokens > n_ctx 8"):
        eng.forward([1, 2, 3, 4], cache)
    assert cache.pos == 5  # a refused call changes nothing
    other = NativeEngine(config, tensors, threads=1)
    with pytest.raises(BitnetLabError, match="new_cache"):
        other.forward([1], cache)
    with pytest.raises(BitnetLabError, match="n_ctx must be positive"):
        eng.new_cache(0)
    with pytest.raises(BitnetLabError, match="not 'blk"):
        eng.bitlinear("attn_q", np.zeros(64, np.float32))
    with pytest.raises(BitnetLabError, match="K = 64"):
        eng.bitlinear("blk.0.attn_q", np.zeros(65, np.float32))
    with pytest.raises(ConfigError, match="kv_dtype"):
        NativeEngine(config, tensors, kv_dtype="bf16")
    with pytest.raises(ConfigError, match="missing tensors.*blk.1.ffn_up.weight"):
        NativeEngine(config, {k: v for k, v in tensors.items() if k != "blk.1.ffn_up.weight"})
    with pytest.raises(ConfigError, match="does not use.*blk.9.attn_q.weight"):
        NativeEngine(config, {**tensors, "blk.9.attn_q.weight": tensors["blk.0.attn_q.weight"]})


def test_bad_weights_name_the_tensor():
    config, tensors = tiny_model("bitnet-b1.58", seed=7, hidden=256, ffn=256, layout="tq2_0")
    name = "blk.1.attn_v.weight"
    w = tensors[name]
    d = np.asarray(w.block_scales, dtype=np.float16).copy()
    d[0, 0] = np.float16(d[0, 0] * 2)  # a block (holding non-zero weights) with another scale
    bad = dict(tensors)
    bad[name] = TernaryWeight(name, "tq2_0", w.shape, w.data, block_scales=d)
    with pytest.raises(ConfigError, match=r"blk\.1\.attn_v\.weight: tq2_0 block scales are not uniform \(2 distinct"):
        NativeEngine(config, bad)

    config, tensors = tiny_model("bitnet-b1.58", seed=7, hidden=128, ffn=256, layout="i2_s")
    name = "blk.0.ffn_gate.weight"
    w = tensors[name]
    data = np.asarray(w.data).copy().reshape(-1)
    data[77] = 0xFF
    bad = dict(tensors)
    bad[name] = TernaryWeight(name, "i2_s", w.shape, data, scale=w.scale)
    with pytest.raises(CodecError, match=r"blk\.0\.ffn_gate\.weight: I2_S data holds invalid code\(s\) 3 .* first at byte 77"):
        NativeEngine(config, bad)
