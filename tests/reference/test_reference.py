"""The JAX reference model (bitnet_lab/reference) against an independent numpy twin and against
explicit constructions of each piece of docs/numerics.md.

Measured on jax 0.10.2 / XLA CPU (the tolerances the asserts hold are looser only where noted):
- every int8 code, scale, code sum and int32 accumulator of every layer equals the plain model's
  exactly, for the three families, both KV dtypes, both rounding modes, block-scaled TQ weights;
- every float intermediate is bit-identical to the plain model (asserted), and so are the logits
  (asserted ≤ 1e-5 relative, as the float64-accumulated lm_head dot may round differently in a
  near-midpoint case; measured 0);
- prefill, token-by-token decode, mixed chunks and other cache sizes: bit-identical (asserted);
- real files: I2_S and the F32 GGUF (embedding rounded to fp16, as llama-quantize stores it)
  bit-identical; TQ2_0 = TQ1_0 = I2_S with γ rounded to fp16, bit-identical; raw TQ vs I2_S
  differ by ≈ 2.3 % of the logit range (γ's fp16 rounding, amplified by the random model).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest

jax = pytest.importorskip("jax")

from bitnet_lab.config import ModelConfig  # noqa: E402
from bitnet_lab.errors import BitnetLabError, ConfigError  # noqa: E402
from bitnet_lab.quant import ternary  # noqa: E402
from bitnet_lab.reference import ReferenceModel  # noqa: E402
from bitnet_lab.reference import layers as L  # noqa: E402
from bitnet_lab.reference import rope as R  # noqa: E402
from bitnet_lab.tensors import FloatTensor, TernaryWeight  # noqa: E402
from bitnet_lab.tools.testing import ternary_weight, tiny_model  # noqa: E402

from plain_model import PlainModel, rms_norm as plain_rms_norm, rope_cos_sin  # noqa: E402

ARCHS = ("bitnet-b1.58", "bitnet", "llama")
REAL = Path(__file__).resolve().parents[1] / "data" / "real-files"
BUCKETS = (1, 8)  # few distinct shapes: few compilations
IDS = np.array([3, 17, 250, 1, 99, 42, 42, 7, 128, 200, 5, 64], dtype=np.int32)


@functools.lru_cache(maxsize=None)
def family(arch: str, seed: int = 0):
    return tiny_model(arch, seed=seed)


def ref(config, tensors, **kw) -> ReferenceModel:
    kw.setdefault("buckets", BUCKETS)
    return ReferenceModel(config, tensors, **kw)


def rel(a: np.ndarray, b: np.ndarray) -> float:
    """max|a − b| / max|b| (0 when both are all zero)."""
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = np.abs(b64).max()
    return float(np.abs(a64 - b64).max() / scale) if scale else float(np.abs(a64).max())


def x64_jit(f):
    jf = jax.jit(f)

    def run(*a):
        with jax.enable_x64(True):
            return jax.tree_util.tree_map(np.asarray, jf(*a))

    return run


NZ = np.float32(-0.0)


def assert_matches_plain(caps: dict, logits: np.ndarray, plain_caps: dict, plain_logits: np.ndarray):
    assert set(plain_caps) <= set(caps), sorted(set(plain_caps) - set(caps))
    for name, want in plain_caps.items():
        got = caps[name]
        assert got.shape == want.shape and got.dtype == want.dtype, (name, got.shape, want.shape, got.dtype)
        if name == "logits":
            continue
        # bit for bit, floats included: both sides follow the same recipe, so any difference is a
        # real divergence (an epilogue order, a fused multiply-add, a rewritten division)
        bad = np.argwhere(got != want)
        assert bad.size == 0, (f"{name}: {len(bad)} of {want.size} values differ, first at "
                               f"{bad[0].tolist()}; max rel {rel(got, want):.3g}")
    assert rel(logits, plain_logits) <= 1e-5


# ---- building blocks ------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ternary.ROUNDING_MODES)
def test_activation_quantisation_equals_policy(mode):
    rng = np.random.default_rng(0)
    rows = [rng.standard_normal((40, 64)).astype(np.float32) * rng.uniform(1e-3, 1e3, (40, 1)).astype(np.float32)]
    ties = (rng.integers(-126, 126, (8, 64)) + 0.5).astype(np.float32)  # amax 127 -> s_x = 1: exact .5 ties
    ties[:, 0] = 127.0
    ties[::2] *= np.float32(-1)
    rows.append(ties)
    rows.append(ties * np.float32(2))  # amax 254 -> s_x = 0.5 -> the same ties
    rows.append(np.zeros((2, 64), np.float32))  # the 1e-5 floor: q = 0, no NaN
    rows.append(np.full((2, 64), 3e-6, np.float32))
    x = np.concatenate(rows)
    q, s, sq = x64_jit(lambda v, nz: L.quantize_activations(v, mode, nz))(x, NZ)
    wq, ws, wsq = ternary.quantize_activations(x, mode)
    np.testing.assert_array_equal(q, wq)
    np.testing.assert_array_equal(s, ws)
    np.testing.assert_array_equal(sq, wsq)
    assert q.dtype == np.int8 and sq.dtype == np.int32
    other = ternary.quantize_activations(ties, "half_away" if mode == "half_even" else "half_even")[0]
    assert np.any(other != wq[40:48]), "the tie rows must separate the two rounding modes"


def test_int_matmul_is_exact_at_the_extremes():
    rng = np.random.default_rng(1)
    K = 4096
    q = np.concatenate([np.full((1, K), 127, np.int8), np.full((1, K), -128, np.int8),
                        rng.integers(-128, 128, (6, K)).astype(np.int8)])
    t = np.concatenate([np.ones((1, K), np.int8), -np.ones((1, K), np.int8),
                        rng.integers(-1, 2, (5, K)).astype(np.int8)])
    acc = x64_jit(L.int_matmul)(q, t)
    np.testing.assert_array_equal(acc, (q.astype(np.int64) @ t.T.astype(np.int64)).astype(np.int32))
    assert acc[1, 1] == 128 * K


def test_rms_norm_and_epilogue_bitwise():
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((64, 96)) * rng.uniform(1e-3, 1e3, (64, 1))).astype(np.float32)
    w = np.abs(1 + 0.1 * rng.standard_normal(96)).astype(np.float32)
    got = x64_jit(lambda a, b: L.rms_norm(a, b, 1e-5))(x, w)
    np.testing.assert_array_equal(got, np.stack([plain_rms_norm(r, w, 1e-5) for r in x]))
    acc = rng.integers(-50000, 50000, (64, 96)).astype(np.int32)
    s = ternary.activation_scale(np.abs(x).max(axis=1))
    gamma = np.float32(0.0123)
    got = x64_jit(L.epilogue)(acc, s, gamma)
    np.testing.assert_array_equal(got, ternary.bitlinear_epilogue(acc, s, gamma))


@pytest.mark.parametrize("f16", [False, True])
def test_lm_head_is_a_float64_accumulated_dot(f16):
    rng = np.random.default_rng(5)
    h = rng.standard_normal((3, 40)).astype(np.float32)
    w = rng.standard_normal((48, 40)).astype(np.float16 if f16 else np.float32)
    hv = h.astype(np.float16) if f16 else h
    want = (hv.astype(np.float64) @ w.astype(np.float64).T).astype(np.float32)
    for chunk in (48, 16):
        got = x64_jit(lambda a, b: L.lm_head(a, b, f16=f16, chunk=chunk))(h, w)
        np.testing.assert_array_equal(got, want)


def test_rope_tables_follow_ggml_recurrence():
    cos, sin = R.cos_sin_tables(300, 64, 500000.0)
    for p in (0, 1, 7, 299):
        c, s = rope_cos_sin(p, 64, 500000.0)
        np.testing.assert_array_equal(cos[p], c)
        np.testing.assert_array_equal(sin[p], s)
    # the recurrence is not the direct power: some angle at a large position must differ
    direct = np.float32(299) * (R.theta_scale(500000.0, 64) ** np.arange(32, dtype=np.float64)).astype(np.float32)
    assert np.any(direct != R.angle_table(300, 64, 500000.0)[299])


@pytest.mark.parametrize("style", ["neox", "norm"])
def test_rope_pairing_matches_explicit_forms(style):
    """neox = HF ``q·cos + rotate_half(q)·sin`` (cos/sin duplicated over halves); norm = the
    interleaved (GPT-J) form on pairs (2i, 2i+1); partial rotation leaves the tail alone."""
    rng = np.random.default_rng(3)
    C, n, d, rot = 5, 3, 16, 12
    x = rng.standard_normal((C, n, d)).astype(np.float32)
    cos, sin = R.cos_sin_tables(C, rot, 10000.0)
    got = x64_jit(lambda a, c, s, nz: L.apply_rope(a, c, s, style, rot, nz))(x, cos, sin, NZ)
    xr, tail = x[..., :rot], x[..., rot:]
    if style == "neox":
        c2 = np.concatenate([cos, cos], -1)[:, None, :]
        s2 = np.concatenate([sin, sin], -1)[:, None, :]
        rotate_half = np.concatenate([-xr[..., rot // 2:], xr[..., : rot // 2]], -1)
        want = xr * c2 + rotate_half * s2
    else:
        c2 = np.repeat(cos, 2, -1)[:, None, :]
        s2 = np.repeat(sin, 2, -1)[:, None, :]
        rotate_pairs = np.stack([-xr[..., 1::2], xr[..., 0::2]], -1).reshape(xr.shape)
        want = xr * c2 + rotate_pairs * s2
    np.testing.assert_array_equal(got, np.concatenate([want, tail], -1))


# ---- the whole model against the plain numpy twin ----------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_reference_equals_plain_model(arch):
    cfg, ts = family(arch)
    logits, caps = ref(cfg, ts).logits(IDS, capture=True)
    p_logits, p_caps = PlainModel(cfg, ts).run(IDS)
    assert logits.shape == (len(IDS), cfg.vocab) and logits.dtype == np.float32
    assert_matches_plain(caps, logits, p_caps, p_logits)
    np.testing.assert_array_equal(caps["logits"], logits)


def test_reference_equals_plain_with_f16_cache_half_away_and_scale_tensors():
    cfg, ts = family("bitnet", seed=1)
    ts = dict(ts)
    for name, v in (("blk.0.attn_q.scale", 1.75), ("blk.1.ffn_down.scale", 0.5)):
        ts[name] = FloatTensor(name, "F32", (1,), np.array([v], np.float32))
    m = ref(cfg, ts, kv_dtype="f16", rounding="half_away")
    logits, caps = m.logits(IDS, capture=True)
    p_logits, p_caps = PlainModel(cfg, ts, kv_dtype="f16", rounding="half_away").run(IDS)
    assert_matches_plain(caps, logits, p_caps, p_logits)
    assert m.numerics["kv_dtype"] == "f16" and m.numerics["rounding"] == "half_away"
    # the .scale multiplies the projection output after the epilogue
    base = ternary.bitlinear_epilogue(caps["blk.0.attn_q.acc"], caps["blk.0.attn_in.scale"],
                                      ts["blk.0.attn_q.weight"].gamma())
    np.testing.assert_array_equal(caps["blk.0.attn_q.out"], base * np.float32(1.75))


def test_lm_head_dtype_f32_skips_the_fp16_rounding():
    cfg, ts = family("llama")
    m16, m32 = ref(cfg, ts), ref(cfg, ts, lm_head_dtype="f32")
    assert (m16.numerics["lm_head"], m32.numerics["lm_head"]) == ("f16", "f32")
    l16, l32 = m16.logits(IDS), m32.logits(IDS)
    p32, _ = PlainModel(cfg, ts, lm_head_dtype="f32").run(IDS)
    assert rel(l32, p32) <= 1e-5
    assert not np.array_equal(l16, l32)  # rounding the hidden state to fp16 is visible
    assert rel(l16, l32) < 1e-2


def test_block_scaled_tq_weights_use_the_block_epilogue():
    from bitnet_lab.quant import packing

    cfg, ts = tiny_model("bitnet-b1.58", seed=4, hidden=256, n_layers=1, n_heads=4, ffn=256, vocab=64)
    rng = np.random.default_rng(4)
    ts = dict(ts)
    for name, w in list(ts.items()):
        if isinstance(w, TernaryWeight):
            t = w.ternary()
            M, K = t.shape
            d = (w.gamma() * (1 + 0.2 * rng.standard_normal((M, K // 256)))).astype(np.float16)
            ts[name] = TernaryWeight(name, "tq2_0", (M, K), packing.pack("tq2_0", t, block_scales=d),
                                     block_scales=d)
    ids = IDS[:9] % cfg.vocab
    m = ref(cfg, ts)
    assert "sum_b" in m.numerics["epilogue"]
    logits, caps = m.logits(ids, capture=True)
    p_logits, p_caps = PlainModel(cfg, ts).run(ids)
    assert_matches_plain(caps, logits, p_caps, p_logits)


def test_uniform_tq_equals_per_tensor_weights_with_fp16_gamma():
    cfg, ts = tiny_model("bitnet-b1.58", seed=5, hidden=256, n_layers=1, n_heads=4, ffn=256, vocab=64)
    _, tq = tiny_model("bitnet-b1.58", seed=5, hidden=256, n_layers=1, n_heads=4, ffn=256, vocab=64,
                       layout="tq1_0")
    g16 = {k: (ternary_weight(k, w.ternary(), np.float32(np.float16(w.gamma())))
               if isinstance(w, TernaryWeight) else w) for k, w in ts.items()}
    ids = IDS[:9] % cfg.vocab
    m = ref(cfg, tq)
    assert m.numerics["epilogue"] == "(acc / s_x) * gamma"
    np.testing.assert_array_equal(m.logits(ids), ref(cfg, g16).logits(ids))


# ---- caching: prefill, decode and any chunking give the same bits ---------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_prefill_decode_and_chunks_are_bit_identical(arch):
    cfg, ts = family(arch)
    m = ref(cfg, ts)
    full = m.logits(IDS)
    cache = m.new_cache(64)
    step = np.concatenate([m.forward([int(t)], cache) for t in IDS])
    assert cache.pos == len(IDS)
    np.testing.assert_array_equal(step, full)
    cache.reset()
    assert cache.pos == 0
    parts, at = [], 0
    for n in (5, 1, 3, 1, 2):
        parts.append(m.forward(IDS[at:at + n], cache))
        at += n
    np.testing.assert_array_equal(np.concatenate(parts), full)
    assert m.forward([], cache).shape == (0, cfg.vocab) and cache.pos == len(IDS)


def test_cache_size_and_kv_f16_decode():
    cfg, ts = family("bitnet-b1.58")
    m = ref(cfg, ts, kv_dtype="f16")
    full = m.logits(IDS)  # cache of 64
    c = m.new_cache(24)
    np.testing.assert_array_equal(np.concatenate([m.forward(IDS[:7], c), m.forward(IDS[7:], c)]), full)
    p_logits, _ = PlainModel(cfg, ts, kv_dtype="f16").run(IDS)
    assert rel(full, p_logits) <= 1e-5
    assert not np.array_equal(full, ref(cfg, ts).logits(IDS))  # fp16 K/V/q/p roundings are visible


# ---- structure: GQA, RoPE pairing with permuted rows, sub-norms, activation ------------------
def _with(config: ModelConfig, tensors: dict, **replace):
    new = dict(tensors)
    new.update(replace)
    return config, new


def test_gqa_equals_mha_with_repeated_kv_heads():
    cfg, ts = family("bitnet-b1.58")
    n_rep, d = cfg.n_rep, cfg.head_dim
    assert n_rep == 2

    def repeat(name, order):
        w = ts[name]
        t = w.ternary().reshape(cfg.n_kv_heads, d, cfg.hidden)
        return ternary_weight(name, t[order].reshape(cfg.n_heads * d, cfg.hidden), w.gamma())

    hf_order = np.repeat(np.arange(cfg.n_kv_heads), n_rep)  # HF repeat_kv: kv g -> heads g*n_rep + r
    wrong_order = np.tile(np.arange(cfg.n_kv_heads), n_rep)  # j % n_kv: not the GQA mapping
    mha = cfg.replace(n_kv_heads=cfg.n_heads)
    out = {}
    for tag, order in (("hf", hf_order), ("wrong", wrong_order)):
        reps = {f"blk.{i}.attn_{x}.weight": repeat(f"blk.{i}.attn_{x}.weight", order)
                for i in range(cfg.n_layers) for x in "kv"}
        out[tag] = ref(*_with(mha, ts, **reps)).logits(IDS)
    gqa = ref(cfg, ts).logits(IDS)
    np.testing.assert_array_equal(gqa, out["hf"])
    assert rel(gqa, out["wrong"]) > 1e-3


def test_norm_rope_on_permuted_rows_equals_neox_on_hf_rows():
    """docs/formats.md#76-qk-permutation-for-llama-arch-ggufs: llama-arch GGUF rows are permuted for
    interleaved RoPE; un-permuting them and using NEOX (HF rotate_half) performs the same float operations."""
    try:
        from bitnet_lab.formats.names import unpermute_qk
    except ImportError:  # the local form of the permutation (inverse of the converter's permute)
        def unpermute_qk(rows, n_head):
            m = rows.shape[0]
            return rows.reshape(n_head, m // n_head // 2, 2, -1).swapaxes(1, 2).reshape(rows.shape)
    cfg, ts = family("llama")
    assert cfg.rope_style == "norm"
    hf_rows = {}
    for i in range(cfg.n_layers):
        for x, n in (("q", cfg.n_heads), ("k", cfg.n_kv_heads)):
            name = f"blk.{i}.attn_{x}.weight"
            hf_rows[name] = ternary_weight(name, unpermute_qk(ts[name].ternary(), n), ts[name].gamma())
    gguf_norm = ref(cfg, ts).logits(IDS)
    hf_neox = ref(*_with(cfg.replace(rope_style="neox"), ts, **hf_rows)).logits(IDS)
    np.testing.assert_array_equal(gguf_norm, hf_neox)
    wrong = ref(cfg.replace(rope_style="neox"), ts).logits(IDS)  # neox on permuted rows: wrong
    assert rel(wrong, gguf_norm) > 1e-3


def test_sub_norms_sit_before_o_and_down():
    cfg, ts = family("bitnet-b1.58")
    zero = lambda n: FloatTensor(n, "F32", ts[n].shape, np.zeros(ts[n].shape, np.float32))  # noqa: E731
    names = {"blk.0.attn_sub_norm.weight": zero("blk.0.attn_sub_norm.weight"),
             "blk.1.ffn_sub_norm.weight": zero("blk.1.ffn_sub_norm.weight")}
    _, caps = ref(*_with(cfg, ts, **names)).logits(IDS, capture=True)
    assert not np.any(caps["blk.0.attn_out"] == 0)  # attention itself still ran
    assert not np.any(caps["blk.0.attn_output_in.q"])
    np.testing.assert_array_equal(caps["blk.0.attn_output.out"], 0)
    np.testing.assert_array_equal(caps["blk.0.attn_resid"], caps["embd"])
    np.testing.assert_array_equal(caps["blk.1.ffn_resid"], caps["blk.1.attn_resid"])
    _, base = ref(cfg, ts).logits(IDS, capture=True)  # untouched weights: both blocks contribute
    assert not np.array_equal(base["blk.0.attn_resid"], base["embd"])
    assert not np.array_equal(base["blk.1.ffn_resid"], base["blk.1.attn_resid"])


def test_ffn_activation_follows_the_config():
    cfg, ts = family("bitnet-b1.58")
    assert cfg.activation == "relu2"
    out = {}
    for act in ("relu2", "silu"):
        logits, caps = ref(cfg.replace(activation=act), ts).logits(IDS, capture=True)
        g, u = caps["blk.0.ffn_gate.out"], caps["blk.0.ffn_up.out"]
        if act == "relu2":
            r = np.where(g > 0, g, np.float32(0))
            want = (r * r) * u
        else:
            g64 = g.astype(np.float64)
            want = (g64 / (1 + np.exp(-g64))).astype(np.float32) * u
        np.testing.assert_array_equal(caps["blk.0.ffn_act"], want)
        out[act] = logits
    assert rel(out["relu2"], out["silu"]) > 1e-3


def test_capture_names():
    cfg, ts = family("llama")
    _, caps = ref(cfg, ts).logits(IDS[:3], capture=True)
    per_layer = {"attn_norm", "attn_in.q", "attn_in.scale", "attn_in.sum", "q_rope", "k_rope",
                 "attn_out", "attn_output_in.q", "attn_output_in.scale", "attn_output_in.sum",
                 "attn_resid", "ffn_norm", "ffn_in.q", "ffn_in.scale", "ffn_in.sum", "ffn_act",
                 "ffn_down_in.q", "ffn_down_in.scale", "ffn_down_in.sum", "ffn_resid"}
    per_layer |= {f"{p}.{k}" for p in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate",
                                       "ffn_up", "ffn_down") for k in ("acc", "out")}
    want = {"embd", "output_norm", "logits"} | {f"blk.{i}.{n}" for i in range(cfg.n_layers) for n in per_layer}
    assert set(caps) == want  # llama: no sub-norm captures
    assert all(v.shape[0] == 3 for v in caps.values())
    assert not jax.config.jax_enable_x64  # float64 is enabled only inside the model's calls
    assert caps["blk.1.q_rope"].shape == (3, cfg.n_heads, cfg.head_dim)


# ---- real files ------------------------------------------------------------------------------
def _real(name):
    import bitnet_lab.formats.gguf as gg
    path = REAL / name
    if not path.exists():
        pytest.skip(f"{path} is missing")
    f = gg.GGUFFile(path)
    ts = dict(f.tensors())
    return ModelConfig.from_gguf(f.metadata, ts.keys()), ts


REAL_IDS = np.array([1, 5, 9, 100, 200, 300, 17, 3, 999, 42], dtype=np.int32)


def test_real_i2_s_equals_f32_gguf():
    c32, t32 = _real("bitnet-f32.gguf")
    ci, ti = _real("bitnet-i2_s.gguf")
    li, caps = ref(ci, ti).logits(REAL_IDS, capture=True)
    # llama-quantize stores the token embedding as F16: round the F32 file's the same way
    e16 = t32["token_embd.weight"].to_numpy().astype(np.float16)
    np.testing.assert_array_equal(e16, ti["token_embd.weight"].to_numpy().astype(np.float16))
    t32e = _with(c32, t32, **{"token_embd.weight": FloatTensor("token_embd.weight", "F16", e16.shape, e16)})[1]
    np.testing.assert_array_equal(ref(c32, t32e).logits(REAL_IDS), li)
    raw = ref(c32, t32).logits(REAL_IDS)  # f32 embedding and lm_head: close, not equal
    assert 0 < rel(raw, li) < 0.1
    p_logits, p_caps = PlainModel(ci, ti).run(REAL_IDS)
    assert_matches_plain(caps, li, p_caps, p_logits)


def test_real_tq_files_equal_i2_s_with_fp16_gamma():
    ci, ti = _real("bitnet-i2_s.gguf")
    c2, t2 = _real("upstream-tq2_0.gguf")
    c1, t1 = _real("upstream-tq1_0.gguf")
    l2 = ref(c2, t2).logits(REAL_IDS)
    np.testing.assert_array_equal(ref(c1, t1).logits(REAL_IDS), l2)
    g16 = {k: (ternary_weight(k, w.ternary(), np.float32(np.float16(w.gamma())))
               if isinstance(w, TernaryWeight) else w) for k, w in ti.items()}
    np.testing.assert_array_equal(ref(ci, g16).logits(REAL_IDS), l2)
    assert 0 < rel(l2, ref(ci, ti).logits(REAL_IDS)) < 0.1  # γ rounded to fp16: nearly equal


# ---- HF checkpoints: both weight_scale conventions --------------------------------------------
def _roundtrip_gamma(g: np.float32) -> np.float32:
    """The nearest γ' ≥ γ with fl32(1/fl32(1/γ')) == γ' (so 'bitlinear' stores it losslessly)."""
    g = np.float32(g)
    while np.float32(1) / (np.float32(1) / g) != g:
        g = np.nextafter(g, np.float32(np.inf))
    return g


@pytest.mark.parametrize("arch", ["bitnet-b1.58", "llama"])
def test_hf_weight_scale_conventions_give_the_same_model(arch, tmp_path):
    from bitnet_lab.formats import hf
    cfg, ts = family(arch)
    ts = {k: (ternary_weight(k, w.ternary(), _roundtrip_gamma(w.gamma())) if isinstance(w, TernaryWeight) else w)
          for k, w in ts.items()}
    want = ref(cfg, ts).logits(IDS)
    for conv in ("autobitlinear", "bitlinear", "latent"):
        hf.write_hf_checkpoint(tmp_path / conv, cfg, ts, convention=conv)
        c2, t2, _ = hf.read_hf_checkpoint(tmp_path / conv)
        np.testing.assert_array_equal(ref(c2, t2).logits(IDS), want, err_msg=conv)


# ---- errors ----------------------------------------------------------------------------------
def test_bad_inputs_raise_project_errors():
    cfg, ts = family("bitnet-b1.58")
    missing = dict(ts)
    del missing["blk.1.ffn_up.weight"]
    with pytest.raises(ConfigError, match="blk.1.ffn_up.weight"):
        ReferenceModel(cfg, missing)
    latent = dict(ts)
    w = ts["blk.0.attn_q.weight"]
    latent[w.name] = FloatTensor(w.name, "F32", w.shape, w.dequantize() * np.float32(1.5) ** w.ternary())
    with pytest.raises(ConfigError, match="not ternary"):
        ReferenceModel(cfg, latent)
    with pytest.raises(ConfigError, match="unused|does not use"):
        ReferenceModel(cfg, {**ts, "rope_freqs.weight": ts["output_norm.weight"]})
    with pytest.raises(ConfigError, match="kv_dtype"):
        ReferenceModel(cfg, ts, kv_dtype="bf16")
    m = ref(cfg, ts)
    cache = m.new_cache(4)
    with pytest.raises(BitnetLabError, match="context overflow"):
        m.forward(IDS[:5], cache)
    assert cache.pos == 0
    with pytest.raises(BitnetLabError, match="outside the vocabulary"):
        m.forward([cfg.vocab], cache)
    with pytest.raises(BitnetLabError, match="KVCache"):
        ref(cfg, ts).forward([1], cache)
