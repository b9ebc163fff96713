"""convert_hf_to_gguf: every outtype from the real HF checkpoint, against the files bitnet.cpp and
upstream llama.cpp wrote from the same checkpoint."""

from __future__ import annotations

import numpy as np
import pytest

from _hf_models import REAL, REAL_F32, REAL_HF, REAL_I2S, REAL_TQ1, REAL_TQ2, random_model, tiny_config, ulps
from bitnet_lab.config import ModelConfig
from bitnet_lab.tools.convert import FILE_TYPES, OUTTYPES, convert_hf_to_gguf
from bitnet_lab.errors import BitnetLabError, CodecError, ConfigError
from bitnet_lab.formats import names as nm
from bitnet_lab.formats.gguf import GGUFFile
from bitnet_lab.formats.hf import read_hf_checkpoint, write_hf_checkpoint
from bitnet_lab.paths import LLAMA2_VOCAB
from bitnet_lab.tensors import FloatTensor, TernaryWeight
from bitnet_lab.quant import blockquant
from bitnet_lab.quant.tiling import TLTiling


@pytest.fixture(scope="module")
def hf_model():
    return read_hf_checkpoint(REAL_HF)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    d = tmp_path_factory.mktemp("convert")
    return {ot: convert_hf_to_gguf(REAL_HF, d / f"{ot}.gguf", ot, progress=False) for ot in OUTTYPES}


def _tokenizer_keys(md):
    return {k: v for k, v in md.items() if k.startswith("tokenizer.")}


@pytest.mark.parametrize("outtype", list(OUTTYPES))
def test_every_outtype_reads_back(converted, hf_model, outtype):
    mc, src, _ = hf_model
    g = GGUFFile(converted[outtype])
    assert g.metadata["general.file_type"] == FILE_TYPES[outtype]
    assert g.metadata["general.architecture"] == "bitnet"
    cfg = ModelConfig.from_gguf(g.metadata, g.tensor_names)
    assert cfg.replace(name="") == mc.replace(norm_eps=cfg.norm_eps)  # eps stored as float32
    assert _tokenizer_keys(g.metadata) == _tokenizer_keys(GGUFFile(REAL_F32).metadata)
    tensors = g.tensors()
    assert set(tensors) == set(src)
    for name, w in src.items():
        got = tensors[name]
        if isinstance(w, FloatTensor):
            emb = name == "token_embd.weight"
            assert got.ggml_type == ("F32" if not emb or outtype == "f32" else "F16"), name
            x = w.to_numpy()
            np.testing.assert_array_equal(got.to_numpy(), x.astype(np.float16).astype(np.float32) if got.ggml_type == "F16" else x)
            continue
        t, gamma = w.ternary(), w.scale
        if outtype == "f32":  # t·γ stored as floats, exactly
            np.testing.assert_array_equal(got.to_numpy(), t.astype(np.float32) * gamma)
        elif outtype == "f16":
            np.testing.assert_array_equal(got.to_numpy(), (t.astype(np.float32) * gamma).astype(np.float16).astype(np.float32))
        else:
            assert isinstance(got, TernaryWeight) and got.layout == outtype
            np.testing.assert_array_equal(got.ternary(), t, err_msg=name)
            if outtype.startswith("tq"):  # d = fp16(γ) in every block holding a non-zero
                assert got.gamma() == np.float32(np.float16(gamma))
            else:
                assert got.scale == gamma


def test_i2_s_matches_bitnet_cpp_file(converted):
    """Tensor for tensor against bitnet.cpp's own I2_S file (converter --outtype f32, then
    llama-quantize I2_S): same names, types, shapes; identical codes, F16 embedding and F32
    norms. Scales: bitnet.cpp stores fl(1/fl(1/γ_torch)), γ_torch being torch's float32 mean;
    we store the correctly rounded mean γ. They may differ in the last bit because the two means
    are summed in different orders (docs/numerics.md#1-weight-ternarisation); never by more than one ulp."""
    ours, ref = GGUFFile(converted["i2_s"]), GGUFFile(REAL_I2S)
    assert ours.metadata["general.file_type"] == ref.metadata["general.file_type"] == 40
    a, b = ours.tensors(), ref.tensors()
    assert {ti.name: (ti.type_name, ti.shape) for ti in ours.tensor_infos} == {
        ti.name: (ti.type_name, ti.shape) for ti in ref.tensor_infos
    }
    last_bit = 0
    for name in b:
        if isinstance(b[name], FloatTensor):
            np.testing.assert_array_equal(np.asarray(a[name].data), np.asarray(b[name].data), err_msg=name)
            continue
        np.testing.assert_array_equal(np.asarray(a[name].data), np.asarray(b[name].data), err_msg=name)  # packed bytes
        d = ulps(a[name].scale, b[name].scale)
        assert abs(d) <= 1, (name, a[name].scale, b[name].scale)
        # fl(1/fl(1/γ)) is not the cause here: it leaves our γ unchanged in this file
        assert np.float32(1) / (np.float32(1) / a[name].scale) == a[name].scale
        last_bit += d != 0
    assert last_bit < 14  # most agree exactly


@pytest.mark.parametrize("outtype,ref", [("tq1_0", REAL_TQ1), ("tq2_0", REAL_TQ2)])
def test_tq_matches_upstream_bytes(converted, outtype, ref):
    """Upstream llama-quantize's TQ files from the same checkpoint: identical tensor bytes (the
    fp16 block scale absorbs the last-bit difference of γ)."""
    a, b = GGUFFile(converted[outtype]), GGUFFile(ref)
    assert {(t.name, t.type_name, t.shape) for t in a.tensor_infos} == {(t.name, t.type_name, t.shape) for t in b.tensor_infos}
    ta, tb = a.tensors(), b.tensors()
    assert set(ta) == set(tb)
    for name in tb:
        np.testing.assert_array_equal(np.asarray(ta[name].data), np.asarray(tb[name].data), err_msg=name)


@pytest.mark.parametrize("layout", ["tl1", "tl2"])
def test_tl_tiling_recorded_and_honoured(converted, tmp_path, layout):
    from bitnet_lab.quant.tiling import default_tiling

    g = GGUFFile(converted[layout])
    recorded = g.metadata["bitnet_lab.tl_tiling"]
    shapes = {w.shape for w in g.tensors().values() if isinstance(w, TernaryWeight)}
    want = sorted(f"{M},{K},{t.BM},{t.BK},{t.bm}" for (M, K) in shapes for t in [default_tiling(layout, M, K)])
    assert sorted(recorded) == want
    # an explicit tiling for one shape wins and is recorded
    custom = TLTiling(BM=128, BK=64, bm=32) if layout == "tl1" else TLTiling(BM=128, BK=192, bm=32)
    p = convert_hf_to_gguf(REAL_HF, tmp_path / "x.gguf", layout, tl_tiling={(256, 256): custom}, progress=False)
    g2 = GGUFFile(p)
    assert f"256,256,{custom.BM},{custom.BK},{custom.bm}" in g2.metadata["bitnet_lab.tl_tiling"]
    t1, t2 = g.tensors(), g2.tensors()
    for name, w in t2.items():
        if isinstance(w, TernaryWeight):
            np.testing.assert_array_equal(w.ternary(), t1[name].ternary())
            assert w.tiling == (custom if w.shape == (256, 256) else t1[name].tiling)
    # an illegal tiling is the user's request not fitting the tensor: a ConfigError naming it
    with pytest.raises(ConfigError, match=r"blk\.0\.attn_q\.weight.*\(256, 256\)"):
        convert_hf_to_gguf(REAL_HF, tmp_path / "bad.gguf", layout, tl_tiling=TLTiling(BM=100, BK=64, bm=32),
                           progress=False)


@pytest.mark.parametrize("outtype,rule", [("i2_s", r"K % 128"), ("tq2_0", r"K % 256"), ("tq1_0", r"K % 256")])
def test_shapes_a_layout_cannot_hold(tmp_path, outtype, rule):
    cfg = tiny_config(hidden=192, n_heads=3, n_kv_heads=1, ffn=384, vocab=1000)
    write_hf_checkpoint(tmp_path / "m", cfg, random_model(cfg), convention="autobitlinear")
    (tmp_path / "m" / "tokenizer.model").write_bytes((REAL_HF / "tokenizer.model").read_bytes())
    with pytest.raises(CodecError, match=rf"blk\.0\.attn_q\.weight: \(M, K\) = \(192, 192\): .*{rule}"):
        convert_hf_to_gguf(tmp_path / "m", tmp_path / "o.gguf", outtype, progress=False)
    assert not (tmp_path / "o.gguf").exists()


def test_llama_arch_conversion_keeps_permuted_rows(tmp_path):
    """A packed llama-arch checkpoint converts with q/k rows in GGUF (interleaved) order."""
    cfg = tiny_config("llama", hidden=256, n_heads=4, n_kv_heads=2, ffn=256, vocab=1000)
    model = random_model(cfg, seed=3)
    write_hf_checkpoint(tmp_path / "m", cfg, model, convention="bitlinear")
    (tmp_path / "m" / "tokenizer.model").write_bytes((REAL_HF / "tokenizer.model").read_bytes())
    p = convert_hf_to_gguf(tmp_path / "m", tmp_path / "o.gguf", "i2_s", progress=False)
    g = GGUFFile(p)
    assert g.metadata["general.architecture"] == "llama"
    out = g.tensors()
    assert out["output.weight"].ggml_type == "F16"
    for name, w in model.items():
        if isinstance(w, TernaryWeight):
            np.testing.assert_array_equal(out[name].ternary(), w.ternary(), err_msg=name)
    q = out["blk.0.attn_q.weight"].ternary()
    assert not np.array_equal(q, nm.unpermute_qk(q, 4))


def test_vocab_from_gguf_and_errors(tmp_path):
    p = convert_hf_to_gguf(REAL_HF, tmp_path / "o.gguf", "i2_s", vocab=REAL_F32, progress=False)
    assert _tokenizer_keys(GGUFFile(p).metadata) == _tokenizer_keys(GGUFFile(REAL_F32).metadata)
    with pytest.raises(ConfigError, match="32000 tokens, but the model's vocab_size is 1000"):
        convert_hf_to_gguf(REAL_HF, tmp_path / "o.gguf", "i2_s", vocab=LLAMA2_VOCAB, progress=False)
    with pytest.raises(ConfigError, match="outtype 'q4_0'"):
        convert_hf_to_gguf(REAL_HF, tmp_path / "o.gguf", "q4_0")
    with pytest.raises(ConfigError, match="already a GGUF"):
        convert_hf_to_gguf(REAL_I2S, tmp_path / "o.gguf", "i2_s")
    cfg = tiny_config()
    write_hf_checkpoint(tmp_path / "notok", cfg, random_model(cfg), convention="latent")
    with pytest.raises(ConfigError, match="neither tokenizer.json nor tokenizer.model"):
        convert_hf_to_gguf(tmp_path / "notok", tmp_path / "o.gguf", "f32", progress=False)


def test_repo_id_source_goes_through_the_hub(tmp_path, monkeypatch):
    from bitnet_lab.formats import hub

    calls = []

    def fake_resolve(repo_id, **kw):
        calls.append(repo_id)
        return REAL_HF

    monkeypatch.setattr(hub, "resolve", fake_resolve)
    p = convert_hf_to_gguf("someone/bitnet-tiny", tmp_path / "o.gguf", "tq2_0", progress=False)
    assert calls == ["someone/bitnet-tiny"]
    assert GGUFFile(p).metadata["general.name"] == "bitnet-tiny"


def test_bf16_embedding_type(tmp_path, hf_model):
    _, src, _ = hf_model
    p = convert_hf_to_gguf(REAL_HF, tmp_path / "o.gguf", "i2_s", embedding_type="bf16", progress=False)
    emb = GGUFFile(p).tensors()["token_embd.weight"]
    assert emb.ggml_type == "BF16"
    x = src["token_embd.weight"].to_numpy()
    np.testing.assert_allclose(emb.to_numpy(), x, rtol=2**-8)
    with pytest.raises(BitnetLabError, match="embedding_type"):
        convert_hf_to_gguf(REAL_HF, tmp_path / "o.gguf", "i2_s", embedding_type="q4_k")


# I2_S tail: the f32 scale, then 28 bytes bitnet.cpp's llama-quantize leaves uninitialised (its
# two 2026 files, from one build and one source, hold different bytes there): not content.
I2S_TAIL_CONTENT = 4


@pytest.mark.parametrize("emb,ref", [
    ("q6_k", REAL / "bitnetcpp2026-i2_s-embd-q6_k.gguf"),
    ("q8_0", REAL / "bitnetcpp2026-i2_s-embd-q8_0.gguf"),
])
def test_quantised_embedding_matches_bitnet_cpp_2026(tmp_path, emb, ref):
    """bitnet.cpp's 2026 llama-quantize --token-embedding-type Q6_K / Q8_0 … I2_S from the same
    checkpoint (via its F32 GGUF): our converter writes the same tensors, compared tensor by
    tensor (the metadata is each writer's own: ours adds bitnet_lab keys and writes the tokenizer
    from the checkpoint). The token embedding, which is also the tied lm_head, and the norms are
    byte-identical; the I2_S codes are byte-identical and the scales agree to the last bit or
    differ in it as test_i2_s_matches_bitnet_cpp_file explains."""
    p = convert_hf_to_gguf(REAL_HF, tmp_path / f"{emb}.gguf", "i2_s", embedding_type=emb, progress=False)
    ours, theirs = GGUFFile(p), GGUFFile(ref)
    assert ours.metadata["general.file_type"] == theirs.metadata["general.file_type"] == 40
    assert [(t.name, t.type_name, t.shape) for t in sorted(ours.tensor_infos, key=lambda t: t.name)] == [
        (t.name, t.type_name, t.shape) for t in sorted(theirs.tensor_infos, key=lambda t: t.name)
    ]
    assert ours.tensor_info("token_embd.weight").type_name == emb.upper()
    last_bit = 0
    for ti in theirs.tensor_infos:
        mine = ours.tensor_info(ti.name)
        a = np.asarray(ours._blob(mine.offset, mine.nbytes))
        b = np.asarray(theirs._blob(ti.offset, ti.nbytes))
        if ti.type_name != "I2_S":
            assert np.array_equal(a, b), ti.name
            continue
        codes = ti.shape[0] * ti.shape[1] // 4
        assert np.array_equal(a[:codes], b[:codes]), ti.name
        sa, sb = (x[codes : codes + I2S_TAIL_CONTENT].view("<f4")[0] for x in (a, b))
        assert abs(ulps(sa, sb)) <= 1, (ti.name, sa, sb)
        last_bit += sa != sb
    assert last_bit < 14


def test_quantised_embedding_and_output_of_an_untied_model(tmp_path):
    """An untied (llama-arch) checkpoint: token_embd and output both in the asked type, each the
    reference quantiser's bytes of the checkpoint's float32 rows."""
    cfg = tiny_config("llama", hidden=256, n_heads=4, n_kv_heads=2, ffn=256, vocab=1000)
    model = random_model(cfg, seed=5)
    write_hf_checkpoint(tmp_path / "m", cfg, model, convention="bitlinear")
    (tmp_path / "m" / "tokenizer.model").write_bytes((REAL_HF / "tokenizer.model").read_bytes())
    for emb in ("q6_k", "q8_0"):
        p = convert_hf_to_gguf(tmp_path / "m", tmp_path / f"{emb}.gguf", "i2_s", embedding_type=emb, progress=False)
        out = GGUFFile(p).tensors()
        for name in ("token_embd.weight", "output.weight"):
            assert out[name].ggml_type == emb.upper()
            want = blockquant.quantize(emb.upper(), model[name].to_numpy())
            assert np.array_equal(np.asarray(out[name].data).reshape(-1), want), (emb, name)


def test_quantised_embedding_needs_whole_blocks(tmp_path):
    cfg = tiny_config(hidden=192, n_heads=3, n_kv_heads=1, ffn=384, vocab=1000)
    write_hf_checkpoint(tmp_path / "m", cfg, random_model(cfg), convention="autobitlinear")
    (tmp_path / "m" / "tokenizer.model").write_bytes((REAL_HF / "tokenizer.model").read_bytes())
    with pytest.raises(ConfigError, match=r"token_embd\.weight: rows of 192 values cannot be stored as Q6_K, "
                                          r"whose blocks hold 256 values.*q8_0 needs a multiple of 32"):
        convert_hf_to_gguf(tmp_path / "m", tmp_path / "o.gguf", "f16", embedding_type="q6_k", progress=False)
    assert not (tmp_path / "o.gguf").exists()
    p = convert_hf_to_gguf(tmp_path / "m", tmp_path / "o.gguf", "f16", embedding_type="q8_0", progress=False)
    assert GGUFFile(p).tensor_info("token_embd.weight").type_name == "Q8_0"


def test_describe_reads_headers_only():
    from bitnet_lab.tools.convert import describe

    d = describe(REAL_HF)
    assert d["config"].arch == "bitnet" and d["weights"] == "latent" and d["naming"] == "1bitllm"
