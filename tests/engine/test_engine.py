"""The native engine (bitnet_lab.engine) against the JAX reference, the numpy policy, itself.

- greedy decoding: identical tokens for 64 steps and logits within 1e-4 relative
  (max|Δ| / max|logit|) at every step, for the tiny model of each family (int8 layout: repacked
  to I2_S with K padded 64 -> 128) and for each ternary layout (i2_s, tl1, tl2, tq1_0, tq2_0:
  packed tiny models for 64 steps, and dummy files of the `tiny` layout through the reader for 8).
  The engine's lm_head sums in float32 (canonical order, engine_float.h) where the reference sums
  in float64, so logits are close, not equal (measured max ~1e-7 relative);
- captures: every int8 / int32 intermediate equal to the reference's exactly;
- prefill + decode == one full forward (bit for bit, also across the internal ENGINE_CHUNK-row
  chunks);
- 1 and 2 threads, every ISA level in available_isas(), barrier spin on/off: bit-identical logits
  (F16, F32 and Q8_0 lm_heads, f32 and f16 caches);
- the float kernels' canonical orders: the f32 dot and the softmax equal numpy twins of their
  orders bit for bit on every level; RMSNorm equals the reference's; the softmax exp is within
  one f32 ulp of the correctly rounded e^x; SiLU equals numpy's float64 formula;
- BitLinear: bit-identical to bitnet_lab.quant's numpy policy (quantise, integer product,
  epilogue) for every layout and both rounding modes;
- the reference's options (kv_dtype f16, lm_head f32, half_away rounding), a Q8_0 embedding (the
  lm_head then uses llama.cpp's Q8_0 dot on both sides), the old `bitnet` arch's `.scale` tensors;
- profile_decode: the C timers' classes add up and name where the time goes;
- bad inputs raise the project's errors with the numbers.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import bitnet_lab
from bitnet_lab import kernels
from bitnet_lab.kernels.native import _k
from bitnet_lab.engine import residency
from bitnet_lab.tools.dummy import generate_dummy
from bitnet_lab.engine import ENGINE_CHUNK, PROJECTIONS, NativeEngine, rope_tables
from bitnet_lab.errors import BitnetLabError, CodecError, ConfigError
from bitnet_lab.quant import mad_reference, packing, ternary
from bitnet_lab.tensors import FloatTensor, TernaryWeight
from bitnet_lab.tools.testing import tiny_model

import bitnet_lab.reference as ref_mod
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
    got = _k.engine_f32_to_f16(x)
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
    with jax.enable_x64(True):
        want = np.asarray(jax.jit(layers.rms_norm, static_argnums=2)(jnp.asarray(x), jnp.asarray(w), float(np.float32(1e-5))))
    for isa in kernels.available_isas():  # float64 sums in the canonical 16-lane order, every level
        got = _k.engine_rms_norm(x, w, np.float32(1e-5), kernels.ISA_ORDER.index(isa))
        assert np.array_equal(got, want), isa


def canonical_dot_f32(a: np.ndarray, b: np.ndarray) -> np.float32:
    """numpy twin of the engine's f32 dot order (engine_float.h): 32 lanes, lane k % 32 summed in
    increasing k as lane + fl32(a·b), then the fold w = 16, 8, 4, 2, 1."""
    p = a.astype(np.float32) * b.astype(np.float32)  # fl32 products
    lane = np.zeros(32, np.float32)
    for r in range(0, p.size, 32):
        chunk = p[r : r + 32]
        lane[: chunk.size] = lane[: chunk.size] + chunk
    w = 16
    while w >= 1:
        lane[:w] = lane[:w] + lane[w : 2 * w]
        w //= 2
    return lane[0]


@pytest.mark.parametrize("n", [1, 7, 31, 32, 33, 95, 128, 2560, 2573])
def test_canonical_f32_dot_every_isa(n):
    rng = np.random.default_rng(n)
    a = (rng.standard_normal(n) * rng.uniform(0.1, 10, n)).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    want = canonical_dot_f32(a, b)
    for isa in kernels.available_isas():
        got = np.float32(_k.engine_dot_f32(a, b, kernels.ISA_ORDER.index(isa)))
        assert got.view(np.uint32) == want.view(np.uint32), f"{isa}: {got!r} vs {want!r}"


def test_softmax_exp_within_one_ulp():
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.uniform(-110, 0, 400_000), rng.uniform(-1, 1, 100_000), rng.uniform(0, 88, 1000),
                        [0.0, -0.0, -1e-30, -103.97, -104.0, -110.0, -120.0, -np.inf, 88.7, 89.5]]).astype(np.float32)
    got = _k.engine_expf(x)
    with np.errstate(over="ignore"):
        want = np.exp(x.astype(np.float64)).astype(np.float32)  # the reference's fl32(exp in float64)
    ulps = np.abs(got.view(np.int32).astype(np.int64) - want.view(np.int32).astype(np.int64))
    assert ulps.max() <= 1, f"max {ulps.max()} ulp at x = {x[np.argmax(ulps)]!r}"
    assert np.count_nonzero(ulps) <= 10, f"{np.count_nonzero(ulps)} of {x.size} differ by one ulp"
    assert np.all(np.isnan(_k.engine_expf(np.array([np.nan], np.float32))))


def numpy_softmax(s: np.ndarray, f16: bool) -> np.ndarray:
    """numpy twin of the engine's softmax order: e = fl32(exp(s - max)) (engine_expf), the sum in
    8 float64 lanes folded 4, 2, 1, p = e · fl32(1 / sum)."""
    e = _k.engine_expf(s - s.max())
    lane = np.zeros(8)
    for i in range(0, e.size, 8):
        chunk = e[i : i + 8].astype(np.float64)
        lane[: chunk.size] += chunk
    for w in (4, 2, 1):
        lane[:w] = lane[:w] + lane[w : 2 * w]
    p = e * np.float32(1.0 / lane[0])
    return p.astype(np.float16).astype(np.float32) if f16 else p


@pytest.mark.parametrize("f16", [False, True])
def test_softmax_every_isa(f16):
    rng = np.random.default_rng(4)
    for n in (1, 5, 8, 9, 64, 67, 513):
        s = (rng.standard_normal(n) * rng.choice([0.1, 10.0, 60.0])).astype(np.float32)
        if n > 8:
            s[3] = -np.inf  # a masked-out score: e = 0
            s[5] = s.max() - 200.0  # far below: underflows to 0
        want = numpy_softmax(s, f16)
        for isa in kernels.available_isas():
            got = _k.engine_softmax(s, kernels.ISA_ORDER.index(isa), f16)
            assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), f"{isa} n={n}"


def numpy_qk(q: np.ndarray, K: np.ndarray, kq_scale: float) -> np.ndarray:
    """numpy twin of the engine's q·k (engine_float.h): element k of each exact float64 product
    into lane k % 16 in increasing k, the fold 8, 4, 2, 1, fl32, then · kq_scale in f32."""
    R, d = q.shape
    prod = q.astype(np.float64)[:, None, :] * K.astype(np.float64)[None, :, :]  # (R, n, d), exact
    lane = np.zeros(prod.shape[:2] + (16,))
    for k in range(d):
        lane[:, :, k % 16] += prod[:, :, k]
    for w in (8, 4, 2, 1):
        lane[:, :, :w] = lane[:, :, :w] + lane[:, :, w : 2 * w]
    return lane[:, :, 0].astype(np.float32) * np.float32(kq_scale)


def numpy_pv(p: np.ndarray, V: np.ndarray) -> np.ndarray:
    """numpy twin of the engine's p·v: float64, each output summed in increasing position."""
    o = np.zeros((p.shape[0], V.shape[1]))
    for n in range(V.shape[0]):
        o += p[:, n : n + 1].astype(np.float64) * V[n].astype(np.float64)[None, :]
    return o.astype(np.float32)


@pytest.mark.parametrize("d", [128, 64, 96, 80, 72])
@pytest.mark.parametrize("kv_dtype", [np.float32, np.float16])
def test_attention_dots_of_a_gqa_group_every_isa(d, kv_dtype):
    """The group kernels (up to 4 heads sharing each key / value row's conversion, then single
    heads) give every head exactly its one-head, canonical-order result on every level: group
    sizes 1..6 (4 + 2, 4 + 1 + ...), head sizes kept in registers (128, 64, 96) and not (80, 72:
    a d % 16 tail), with and without the decode's private last row; 300 positions cross the
    256-position chunks in which the AVX-512 group p·v widens its weights."""
    rng = np.random.default_rng(d)
    for R in range(1, 7):
        for n in (1, 2, 7, 66, 300):
            q = rng.standard_normal((R, d)).astype(np.float32)
            K = (rng.standard_normal((n, d)) * 3).astype(kv_dtype)
            V = rng.standard_normal((n, d)).astype(kv_dtype)
            p = rng.uniform(0, 1, (R, n)).astype(np.float32)
            want_s, want_o = numpy_qk(q, K, 0.0883883), numpy_pv(p, V)
            for isa in kernels.available_isas():
                i = kernels.ISA_ORDER.index(isa)
                for last in (False, True):
                    s = _k.engine_qk(q, K, 0.0883883, i, last)
                    o = _k.engine_pv(p, V, i, last)
                    where = f"{isa} R={R} n={n} d={d} {np.dtype(kv_dtype).name} last={last}"
                    assert np.array_equal(s.view(np.uint32), want_s.view(np.uint32)), f"qk {where}"
                    assert np.array_equal(o.view(np.uint32), want_o.view(np.uint32)), f"pv {where}"


def test_silu_every_isa():
    """fl32(g / (1 + e^-g)) in float64 then · u in f32, the reference's formula: every level equal
    to the others bit for bit and to numpy's float64 exp (barring a rare one-ulp near-tie)."""
    rng = np.random.default_rng(6)
    g = np.concatenate([rng.standard_normal(50_000) * 3, rng.uniform(-800, 800, 5_000),
                        [0.0, -0.0, 745.5, -745.5, 709.9, -709.9, 88.0, -88.0, np.inf, -np.inf]]).astype(np.float32)
    u = rng.uniform(-2, 2, g.size).astype(np.float32)
    g64 = g.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):  # -inf / inf = NaN, as in the engine
        want = (g64 / (1.0 + np.exp(-g64))).astype(np.float32) * u
    results = [_k.engine_silu(g, u, kernels.ISA_ORDER.index(isa)) for isa in kernels.available_isas()]
    for got in results[1:]:
        assert np.array_equal(got.view(np.uint32), results[0].view(np.uint32))
    differ = np.count_nonzero(results[0].view(np.uint32) != want.view(np.uint32))
    assert differ <= 5, f"{differ} of {g.size} differ from numpy's float64 formula"


# ---- whole model vs reference ------------------------------------------------------------------


@pytest.mark.parametrize("arch", FAMILIES)
def test_greedy_matches_reference_families(arch):
    config, tensors = tiny_model(arch, seed=11)
    eng = NativeEngine(config, tensors, threads=2)
    ref = ReferenceModel(config, tensors, n_ctx_max=128)
    greedy_against_reference(eng, ref, [1, 17, 42, 99, 7, 3, 200])


@pytest.mark.parametrize("n_heads,n_kv_heads,hidden", [(12, 3, 1536), (6, 2, 384), (10, 2, 640)])
def test_gqa_groups_match_reference_and_every_split(n_heads, n_kv_heads, hidden):
    """Query heads sharing a kv head run as one group (4, 3 or 5 per kv head; head sizes 128 and
    64). With 2 threads the heads split inside a group (12 heads: thread 0 runs heads 0-3 and 4-5,
    thread 1 heads 6-7 and 8-11) in decode and in prefill: still the reference's greedy
    continuation, and bit-identical across thread counts and ISA levels (scalar runs one head at
    a time)."""
    config, tensors = tiny_model("bitnet-b1.58", seed=5, hidden=hidden, n_heads=n_heads, n_kv_heads=n_kv_heads)
    eng = NativeEngine(config, tensors, threads=2)
    ref = ReferenceModel(config, tensors, n_ctx_max=128)
    greedy_against_reference(eng, ref, [1, 17, 42, 99, 7, 3, 200], steps=8)
    for kv_dtype in ("f32", "f16"):
        results = run_isas_threads(config, tensors, [1, 5, 90, 31, 77, 123, 4, 8, 15, 16, 23, 42], kv_dtype=kv_dtype)
        first = next(iter(results.values()))
        for key, val in results.items():
            assert np.array_equal(val, first), f"{n_heads}/{n_kv_heads} {kv_dtype}: {key} differs"


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
        # llama.cpp's Q8_0 dot on both sides: the hidden state quantised to Q8_0 per block of 32
        assert eng.numerics["lm_head"] == ref.numerics["lm_head"] == "q8_0"
        greedy_against_reference(eng, ref, [1, 2, 3], steps=8, n_ctx=64)
        f32 = NativeEngine(m.config, m.tensors, threads=2, lm_head_dtype="f32")  # the dequantised dot
        assert f32.numerics["lm_head"] == "f32"
        ids = [1, 2, 3, 4]
        assert 1e-4 < rel_err(eng.logits(ids), f32.logits(ids)) < 0.05  # quantising h is visible


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


@pytest.mark.parametrize("layout", ["i2_s", "tl1", "tl2"])  # TL: the prefill GEMM (amx) against the per-token GEMV
def test_prefill_plus_decode_equals_full_forward(dummy_models, layout):
    m = dummy_models[layout]
    eng = NativeEngine(m.config, m.tensors, threads=2)
    C = ENGINE_CHUNK
    ids = np.random.default_rng(2).integers(0, m.config.vocab, C + 62)  # calls longer than one chunk
    full = eng.logits(ids)
    cache = eng.new_cache(C + 64)
    parts = [eng.forward(ids[:37], cache), eng.forward(ids[37 : C + 42], cache)]  # the 2nd: C + 5 rows
    parts += [eng.forward(ids[t : t + 1], cache) for t in range(C + 42, C + 62)]
    assert np.array_equal(np.concatenate(parts), full)
    cache = eng.new_cache(C + 64)
    last = eng.forward(ids, cache, last_only=True)
    assert last.shape == (1, m.config.vocab) and np.array_equal(last[0], full[-1])
    cache.reset()
    assert np.array_equal(eng.forward(ids[:5], cache), full[:5])


def run_isas_threads(config, tensors, ids, **opts) -> dict:
    """Logits of a 9-token prefill + 3 decode steps for 1 thread, and for 2 threads on every ISA
    level and with the barrier spin off (sleep at once)."""
    results = {}
    for threads, spin in ((1, None), (2, None), (2, 0.0)):
        eng = NativeEngine(config, tensors, threads=threads, spin_us=spin, **opts)
        for isa in kernels.available_isas() if (threads, spin) == (2, None) else (kernels.active_isa(),):
            with kernels.use_isa(isa):
                cache = eng.new_cache(32)
                out = [eng.forward(ids[:9], cache)] + [eng.forward(ids[t : t + 1], cache) for t in range(9, 12)]
                results[(threads, isa, spin)] = np.concatenate(out)
    return results


@pytest.mark.parametrize("kv_dtype", ["f32", "f16"])
def test_threads_and_isas_bit_identical(dummy_models, kv_dtype):
    ids = [1, 5, 900, 31000, 77, 123, 4, 8, 15, 16, 23, 42]
    for layout, m in dummy_models.items():
        results = run_isas_threads(m.config, m.tensors, ids, kv_dtype=kv_dtype)
        first = next(iter(results.values()))
        for key, val in results.items():
            assert np.array_equal(val, first), f"{layout}: {key} differs from {next(iter(results))}"


@pytest.mark.parametrize("embedding_type,lm_head_dtype", [("q8_0", "auto"), ("f32", "auto"), ("f16", "f32")])
def test_lm_head_types_bit_identical_across_isas(tmp_path, embedding_type, lm_head_dtype):
    """Every lm_head kind (Q8_0 rows, F32 rows, F16 rows against an unrounded hidden state)."""
    path = generate_dummy("tiny", tmp_path / "e.gguf", outtype="i2_s", embedding_type=embedding_type, progress=False)
    with bitnet_lab.load(path) as m:
        results = run_isas_threads(m.config, m.tensors, [1, 5, 900, 31000, 77, 123, 4, 8, 15, 16, 23, 42],
                                   lm_head_dtype=lm_head_dtype)
    first = next(iter(results.values()))
    for key, val in results.items():
        assert np.array_equal(val, first), f"{embedding_type}: {key} differs"


# ---- profile -------------------------------------------------------------------------------------


@pytest.mark.parametrize("threads", [1, 2])
def test_profile_decode_classes(dummy_models, threads):
    from bitnet_lab.engine import PROF_CLASSES

    m = dummy_models["i2_s"]
    eng = NativeEngine(m.config, m.tensors, threads=threads)
    prof = eng.profile_decode(position=8, steps=3)
    assert prof.threads == threads and len(prof.threads_ms) == len(prof.threads_cpu_ms) == threads
    assert tuple(prof.ops_ms) == PROF_CLASSES and "lm_head" in PROF_CLASSES and "sync" in PROF_CLASSES
    for name in ("qkv", "attention", "attn_output", "gate_up", "down", "lm_head", "norm", "quant"):
        assert prof.ops_ms[name] > 0, name  # every stage of a decode step ran and was timed
    assert prof.ops_ms["embed"] > 0 and all(v >= 0 for t in prof.threads_ms for v in t.values())
    assert prof.region_ms == pytest.approx(sum(prof.ops_ms.values()))
    assert prof.region_ms <= prof.step_ms * 1.05 + 0.05  # the C region is inside the Python call
    text = str(prof)
    assert "lm_head" in text and "wall t0" in text and f"position {8}" in text
    assert prof.to_dict()["ops_ms"]["lm_head"] == prof.ops_ms["lm_head"]
    with pytest.raises(BitnetLabError, match="steps >= 1"):
        eng.profile_decode(steps=0)
    # a batched step of several sequences (forward_batch's C path), timed the same way
    batch = eng.profile_decode(position=8, steps=3, sequences=3)
    assert batch.sequences == 3 and batch.to_dict()["sequences"] == 3
    for name in ("qkv", "attention", "gate_up", "down", "lm_head"):
        assert batch.ops_ms[name] > 0, name
    assert batch.region_ms == pytest.approx(sum(batch.ops_ms.values()))
    assert "batched decode step of 3 sequences" in str(batch)
    with pytest.raises(BitnetLabError, match="sequences >= 1"):
        eng.profile_decode(sequences=0)


def test_spin_option(tiny_b158, monkeypatch):
    config, tensors = tiny_b158
    assert NativeEngine(config, tensors, threads=1, spin_us=5).spin_us == 5.0
    monkeypatch.setenv("BITNET_LAB_SPIN_US", "12.5")
    assert NativeEngine(config, tensors, threads=1).spin_us == 12.5
    monkeypatch.setenv("BITNET_LAB_SPIN_US", "fast")
    with pytest.raises(ConfigError, match="BITNET_LAB_SPIN_US='fast' is not a number"):
        NativeEngine(config, tensors, threads=1)
    with pytest.raises(ConfigError, match="spin_us must be >= 0, got -1"):
        NativeEngine(config, tensors, threads=1, spin_us=-1)


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


@pytest.mark.parametrize("embedding_type", ["q8_0", "f16"])
def test_decode_lm_head_row_pairs_agree_on_odd_thread_ranges(tmp_path, embedding_type):
    """Decode reads the lm_head as rows r and r + half of each thread's range in one pass: 3
    threads give ranges of odd length (a last unpaired row); logits must not change by a bit."""
    path = generate_dummy("tiny", tmp_path / "m.gguf", outtype="i2_s", embedding_type=embedding_type, progress=False)
    with bitnet_lab.load(path) as m:
        one, three = NativeEngine(m.config, m.tensors, threads=1), NativeEngine(m.config, m.tensors, threads=3)
        V = m.config.vocab  # the split (engine.c bl_split) really has odd ranges
        assert any((V * (t + 1) // 3 - V * t // 3) % 2 for t in range(3))
        c1, c3 = one.new_cache(8), three.new_cache(8)
        for t in (1, 5, 900, 31000):
            np.testing.assert_array_equal(three.forward([t], c3).view(np.uint32), one.forward([t], c1).view(np.uint32))


@pytest.mark.parametrize("layout", ["i2_s", "tq1_0", "tq2_0", "tl1", "tl2"])
def test_dynamic_decode_shares_never_change_a_bit(dummy_models, layout):
    """Decode shares the projections' tiles and the lm_head's rows out dynamically (engine.c
    work_claim: a thread that runs out takes work from another's run), so which thread computes a
    row differs from step to step and run to run; more threads than cores make the stealing
    frequent. Every step's logits must equal the 1-thread ones bit for bit."""
    m = dummy_models[layout]
    ids = [1, 5, 900, 31000, 77, 123, 4, 8]
    one = NativeEngine(m.config, m.tensors, threads=1)
    c1 = one.new_cache(16)
    want = [one.forward([t], c1).view(np.uint32) for t in ids]
    for threads in (2, 3, 5):
        eng = NativeEngine(m.config, m.tensors, threads=threads)
        for _ in range(3):
            c = eng.new_cache(16)
            for t, w in zip(ids, want):
                assert np.array_equal(eng.forward([t], c).view(np.uint32), w), (layout, threads)


# ---- loading, memory, errors ----------------------------------------------------------------------


def test_weights_are_not_copied(dummy_models):
    for layout, m in dummy_models.items():
        eng = NativeEngine(m.config, m.tensors, threads=1, i2s_layout="file")
        for name in ("blk.2.ffn_up.weight", "blk.0.attn_k.weight"):
            kind, data = eng.packed_weight(name)
            assert kind == layout and np.shares_memory(data, np.asarray(m.tensors[name].data)), (layout, name)
        assert eng.weight_bytes == sum(np.asarray(w.data).nbytes for w in m.ternary_weights().values())
    config, tensors = tiny_model("bitnet", seed=1)  # int8 layout, K = 64: one I2_S repack, K -> 128
    eng = NativeEngine(config, tensors, threads=1, i2s_layout="file")
    kind, data = eng.packed_weight("blk.0.attn_q.weight")
    assert kind == "i2_s" and data.nbytes == 64 * 128 // 4


@pytest.mark.parametrize("layout,i2s_layout", [("i2_s", "x4"), ("i2_s", "auto"), ("i2_s", "file"), ("tq2_0", "x4"),
                                               ("tq2_0", "file"), ("tq1_0", "x4"), ("tq1_0", "auto"), ("tq1_0", "file"),
                                               ("tl1", "x4"), ("tl1", "auto"), ("tl1", "file"), ("tl2", "x4"),
                                               ("tl2", "auto"), ("tl2", "file")])
def test_i2s_x4_layout_is_a_reordered_copy_with_the_same_results(dummy_models, layout, i2s_layout):
    """x4 holds the file's I2_S bytes (TQ2_0: its codes as I2_S, kernels.tq2_to_i2s; TL1: its weights
    as I2_S) re-ordered, x16 the TQ1_0 codes re-ordered (block scales dropped; TL2: its weights as
    TQ1_0 codes); logits are bit-identical to the kernels that read the file's layout (the LUT
    kernels for TL), at every ISA level."""
    m = dummy_models[layout]
    eng = NativeEngine(m.config, m.tensors, threads=2, i2s_layout=i2s_layout)
    native = kernels.i2s_x4_native() if layout in ("i2_s", "tq2_0") else kernels.tq1_x16_native()
    moved = i2s_layout == "x4" or (i2s_layout == "auto" and native)
    assert eng.i2s_layout == eng.numerics["i2s_layout"] == ("x4" if moved else "file")
    shapes = m.config.projection_shapes()
    for name in ("blk.0.attn_k.weight", "blk.3.ffn_down.weight"):
        M, K = shapes[name.split(".")[2]]
        kind, data = eng.packed_weight(name)
        file_bytes = np.asarray(m.tensors[name].data).reshape(-1)
        if layout in ("tl1", "tl2") and moved:  # the weights the file holds, in a MAD layout
            w = m.tensors[name].ternary_matrix()
            if layout == "tl1":
                assert kind == "i2_s_x4" and np.array_equal(data, mad_reference.i2s_x4_from_rowmajor(
                    packing.pack_i2_s(w), M, K))
            else:
                assert kind == "tq1_0_x16" and np.array_equal(data, mad_reference.tq1_x16_from_tq1(
                    packing.pack_tq1_0(w, packing.tq_default_block_scales(w, 1.0)), M, K))
            assert not np.shares_memory(data, file_bytes) and data.__array_interface__["data"][0] % 64 == 0
        elif moved and layout == "tq1_0":
            assert kind == "tq1_0_x16" and not np.shares_memory(data, file_bytes)
            assert np.array_equal(data, mad_reference.tq1_x16_from_tq1(file_bytes, M, K))
            assert data.__array_interface__["data"][0] % 64 == 0
        elif moved:
            codes = mad_reference.tq2_0_to_i2s(file_bytes, M, K) if layout == "tq2_0" else file_bytes[: M * K // 4]
            assert kind == "i2_s_x4" and not np.shares_memory(data, file_bytes)
            assert np.array_equal(data, mad_reference.i2s_x4_from_rowmajor(codes, M, K))
            assert data.__array_interface__["data"][0] % 64 == 0
        else:
            assert kind == layout and np.shares_memory(data, file_bytes)
    ids = [1, 5, 900, 31000, 77, 123]
    want = NativeEngine(m.config, m.tensors, threads=1, i2s_layout="file").logits(ids)
    for isa in kernels.available_isas():  # levels without a native x4 GEMV re-order through their own
        with kernels.use_isa(isa):
            cache = eng.new_cache(8)
            got = np.concatenate([eng.forward(ids[:3], cache)] + [eng.forward([t], cache) for t in ids[3:]])
        assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), isa
    with pytest.raises(ConfigError, match="i2s_layout"):
        NativeEngine(m.config, m.tensors, i2s_layout="rowmajor")


def test_i2s_x4_repack_finds_invalid_codes_without_touching_the_mapping(dummy_files, tmp_path):
    path = tmp_path / "bad.gguf"
    shutil.copy(dummy_files["i2_s"], path)
    with bitnet_lab.load(path) as m:
        pos = residency._file_view(np.asarray(m.tensors["blk.1.ffn_up.weight"].data))[1]
    with open(path, "r+b") as f:  # byte 7 of the tensor: four codes 3
        f.seek(pos + 7)
        f.write(b"\xff")
    with bitnet_lab.load(path) as m:
        with pytest.raises(CodecError, match=r"blk\.1\.ffn_up\.weight: I2_S data holds invalid code.*first at byte 7"):
            NativeEngine(m.config, m.tensors, i2s_layout="x4")


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
    with pytest.raises(ConfigError, match="head_dim 2048 is larger than the native engine's 1024"):
        NativeEngine(config.replace(head_dim=2048), tensors)
    with pytest.raises(ConfigError, match="missing tensors.*blk.1.ffn_up.weight"):
        NativeEngine(config, {k: v for k, v in tensors.items() if k != "blk.1.ffn_up.weight"})
    with pytest.raises(ConfigError, match="does not use.*blk.1.attn_extra.weight"):
        NativeEngine(config, {**tensors, "blk.1.attn_extra.weight": tensors["blk.0.attn_q.weight"]})
    with pytest.raises(ConfigError, match=r"n_layers is 2 but the tensors go up to blk\.9"):  # issue 18 item 14
        NativeEngine(config, {**tensors, "blk.9.attn_q.weight": tensors["blk.0.attn_q.weight"]})
    with pytest.raises(ConfigError, match=r"n_layers is 100000 but the tensors go up to blk\.1"):
        NativeEngine(config.replace(n_layers=100_000), tensors)


def test_bad_weights_name_the_tensor():
    config, tensors = tiny_model("bitnet-b1.58", seed=7, hidden=256, ffn=256, layout="tq2_0")
    name = "blk.1.attn_v.weight"
    w = tensors[name]
    d = np.asarray(w.block_scales, dtype=np.float16).copy()
    d[0, 0] = np.float16(np.nan)  # a block holding non-zero weights (other scales: test_block_scales.py)
    bad = dict(tensors)
    bad[name] = TernaryWeight(name, "tq2_0", w.shape, w.data, block_scales=d)
    with pytest.raises(CodecError, match=r"blk\.1\.attn_v\.weight: tq2_0 block scale of row 0, block 0 is nan"):
        NativeEngine(config, bad, i2s_layout="file")

    config, tensors = tiny_model("bitnet-b1.58", seed=7, hidden=128, ffn=256, layout="i2_s")
    name = "blk.0.ffn_gate.weight"
    w = tensors[name]
    data = np.asarray(w.data).copy().reshape(-1)
    data[77] = 0xFF
    bad = dict(tensors)
    bad[name] = TernaryWeight(name, "i2_s", w.shape, data, scale=w.scale)
    with pytest.raises(CodecError, match=r"blk\.0\.ffn_gate\.weight: I2_S data holds invalid code\(s\) 3 .* first at byte 77"):
        NativeEngine(config, bad)
