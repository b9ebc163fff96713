"""Hugging Face checkpoints: the real 1bitLLM-style checkpoint against bitnet.cpp's own GGUFs,
the three weight conventions, llama q/k permutation, sharding, and malformed files."""

from __future__ import annotations

import dataclasses
import json
import shutil
import struct

import numpy as np
import pytest

from _hf_models import REAL_F32, REAL_HF, REAL_I2S, REAL_TQ1, REAL_TQ2, random_model, tiny_config, ulps
from bitnet_lab.config import ModelConfig
from bitnet_lab.errors import BitnetLabError, ConfigError, SafetensorsError
from bitnet_lab.formats import names as nm
from bitnet_lab.formats.gguf import GGUFFile
from bitnet_lab.formats.hf import (
    bf16_bits,
    latent_from_ternary,
    read_hf_checkpoint,
    read_safetensors_header,
    write_hf_checkpoint,
    write_safetensors,
)
from bitnet_lab.quant import absmean_ternarize
from bitnet_lab.tensors import FloatTensor, TernaryWeight


@pytest.fixture(scope="module")
def real_hf():
    return read_hf_checkpoint(REAL_HF)


@pytest.fixture(scope="module")
def real_i2s():
    g = GGUFFile(REAL_I2S)
    return ModelConfig.from_gguf(g.metadata, g.tensor_names), g.tensors()


# ---- the real checkpoint against the real GGUFs ------------------------------------------------


def test_real_checkpoint_layout(real_hf):
    mc, tensors, info = real_hf
    assert info["weights"] == "latent" and info["naming"] == "1bitllm"
    assert info["permuted_qk"] is False and info["linear_class"] is None
    assert info["dtypes"] == {"F32": 24} and info["warnings"] == []
    assert set(tensors) == set(mc.tensor_shapes())
    assert "output.weight" not in tensors  # tied
    for g, w in tensors.items():
        assert isinstance(w, TernaryWeight) == (nm.projection_of(g) is not None)


def test_real_checkpoint_same_codes_as_bitnet_cpp(real_hf, real_i2s):
    """Absmean on the fp32 latent weights gives bitnet.cpp's I2_S codes (and upstream's TQ
    codes) exactly. The scales agree to within one float32 ulp, not always exactly: the file's
    scale is fl(1/fl(1/γ_torch)) with γ_torch torch's float32 mean (its own reduction order),
    ours is the correctly rounded mean (float64 accumulation). fl(1/fl(1/γ)) itself does not
    move our γ here; the reduction order does (docs/numerics.md#1-weight-ternarisation: read γ, do not
    recompute it)."""
    _, tensors, _ = real_hf
    _, ref = real_i2s
    tq = {p: GGUFFile(p).tensors() for p in (REAL_TQ1, REAL_TQ2)}
    assert set(tensors) == set(ref)
    n_proj = 0
    for g, w in tensors.items():
        if not isinstance(w, TernaryWeight):
            continue
        n_proj += 1
        np.testing.assert_array_equal(w.ternary(), ref[g].ternary(), err_msg=g)
        for other in tq.values():
            np.testing.assert_array_equal(w.ternary(), other[g].ternary(), err_msg=g)
        assert abs(ulps(w.scale, ref[g].scale)) <= 1, (g, w.scale, ref[g].scale)
    assert n_proj == 14


def test_real_checkpoint_floats_match_gguf(real_hf):
    _, tensors, _ = real_hf
    f32 = GGUFFile(REAL_F32).tensors()
    for g, w in tensors.items():
        if isinstance(w, FloatTensor):
            assert w.ggml_type == "F32" and w.shape == f32[g].shape
            np.testing.assert_array_equal(w.to_numpy(), f32[g].to_numpy(), err_msg=g)


def test_real_config_matches_gguf_config(real_hf, real_i2s):
    hf_cfg, _, _ = real_hf
    gguf_cfg, _ = real_i2s
    a, b = dataclasses.asdict(hf_cfg), dataclasses.asdict(gguf_cfg)
    assert b["name"] == "bitnet-tiny" and a["name"] == ""  # config.json carries no name
    for k in a:
        if k == "name":
            continue
        if k in ("norm_eps", "rope_theta"):  # GGUF stores them as float32
            assert np.float32(a[k]) == np.float32(b[k]), k
        else:
            assert a[k] == b[k], k


# ---- the three conventions ------------------------------------------------------------------------


@pytest.mark.parametrize("convention", ["autobitlinear", "bitlinear", "latent"])
def test_conventions_read_back_like_the_gguf(tmp_path, real_i2s, convention):
    """A model from bitnet.cpp's I2_S file, written in each convention, reads back to the same
    codes and scales: exactly for autobitlinear (W = t·weight_scale) and latent (absmean of the
    constructed weights); for bitlinear (W = t/weight_scale, weight_scale = fl32(1/γ)) the γ
    read back is fl32(1/fl32(1/γ)), never more than one ulp from γ."""
    cfg, ref = real_i2s
    write_hf_checkpoint(tmp_path, cfg, ref, convention=convention)
    raw = json.loads((tmp_path / "config.json").read_text())
    mc, tensors, info = read_hf_checkpoint(tmp_path)
    assert mc == cfg  # the name travels as _name_or_path
    assert info["naming"] == "1bitllm"
    if convention == "latent":
        assert "quantization_config" not in raw
        assert info["weights"] == "latent" and info["dtypes"]["F32"] > 0
    else:
        assert raw["quantization_config"]["linear_class"] == convention
        assert info["weights"] == "packed" and info["linear_class"] == convention
        assert info["dtypes"]["U8"] == 14
        assert ("multiply" if convention == "autobitlinear" else "divide") in info["scale_rule"]
    for g, w in ref.items():
        got = tensors[g]
        if isinstance(w, FloatTensor):
            assert got.ggml_type == w.ggml_type
            np.testing.assert_array_equal(np.asarray(got.data), np.asarray(w.data), err_msg=g)
            continue
        np.testing.assert_array_equal(got.ternary(), w.ternary(), err_msg=g)
        if convention == "bitlinear":
            expect = np.float32(1) / (np.float32(1) / w.scale)
            assert got.scale == expect, g
            assert abs(ulps(got.scale, w.scale)) <= 1, g
        else:
            assert got.scale == w.scale, g


def test_bitlinear_reciprocal_is_within_one_ulp():
    """fl(1/fl(1/γ)) is γ or a neighbour, for any normal float32 γ (the bitlinear round trip)."""
    rng = np.random.default_rng(1)
    g = np.exp(rng.uniform(-20, 20, 200_000)).astype(np.float32)
    back = np.float32(1) / (np.float32(1) / g)
    d = back.view(np.int32).astype(np.int64) - g.view(np.int32)
    assert np.abs(d).max() == 1  # the bound is reached, and never exceeded
    assert (d == 0).mean() > 0.5


@pytest.mark.parametrize("scale_dtype", ["BF16", "F16"])
def test_bitlinear_low_precision_scale(tmp_path, scale_dtype):
    """A bf16/fp16 weight_scale (as real checkpoints store it) is widened exactly, then inverted."""
    cfg = tiny_config()
    model = random_model(cfg)
    write_hf_checkpoint(tmp_path, cfg, model, convention="bitlinear", scale_dtype=scale_dtype)
    _, tensors, _ = read_hf_checkpoint(tmp_path)
    for g, w in model.items():
        if isinstance(w, TernaryWeight):
            ws32 = np.float32(1) / np.float32(w.scale)
            if scale_dtype == "F16":
                ws = np.float32(np.float16(ws32))
            else:
                ws = (bf16_bits(np.array([ws32])).astype(np.uint32) << 16).view(np.float32)[0]
            assert tensors[g].scale == np.float32(1) / ws
            np.testing.assert_array_equal(tensors[g].ternary(), w.ternary())


def test_missing_quantization_config_means_bitlinear(tmp_path):
    """transformers' default linear_class is bitlinear: without a quantization_config the
    weight_scale divides (docs/formats.md#74-weight_scale-multiply-or-divide)."""
    cfg = tiny_config()
    model = random_model(cfg)
    write_hf_checkpoint(tmp_path, cfg, model, convention="autobitlinear")
    raw = json.loads((tmp_path / "config.json").read_text())
    del raw["quantization_config"]
    (tmp_path / "config.json").write_text(json.dumps(raw))
    _, tensors, info = read_hf_checkpoint(tmp_path)
    assert info["linear_class"] == "bitlinear"
    for g, w in model.items():
        if isinstance(w, TernaryWeight):
            assert tensors[g].scale == np.float32(1) / np.float32(w.scale)


def test_latent_construction_is_exact():
    """latent_from_ternary: absmean gives back exactly (t, γ), over many shapes, sparsities, γ."""
    rng = np.random.default_rng(2)
    for trial in range(200):
        M, K = (int(x) for x in rng.integers(1, 48, 2))
        p0 = rng.uniform(0.0, 0.9)
        t = rng.choice(np.array([-1, 0, 1], np.int8), size=(M, K), p=[(1 - p0) / 2, p0, (1 - p0) / 2])
        if not t.any():
            t[0, 0] = 1
        g = np.float32(np.exp(rng.uniform(np.log(1e-5), 5)))
        w = latent_from_ternary(t, g)
        assert w.dtype == np.float32
        t2, g2 = absmean_ternarize(w)
        np.testing.assert_array_equal(t2, t)
        assert g2 == g, (trial, M, K, g, g2)


def test_latent_construction_refuses_what_it_cannot_carry():
    with pytest.raises(BitnetLabError, match="all-zero"):
        latent_from_ternary(np.zeros((4, 4), np.int8), 0.5)
    with pytest.raises(BitnetLabError, match="1e-05"):
        latent_from_ternary(np.ones((4, 4), np.int8), 1e-7)
    # 7 weights, one non-zero: 7 = 0b111 needs 3 powers of two, and 6 zeros carry only 1 unit
    with pytest.raises(BitnetLabError, match="too few non-zero"):
        latent_from_ternary(np.array([[1, 0, 0, 0, 0, 0, 0]], np.int8), 0.5)


@pytest.mark.parametrize("dtype", ["BF16", "F16"])
def test_low_precision_latent_checkpoint(tmp_path, dtype):
    """bf16/fp16 latent checkpoints: floats stay in their dtype (bf16 as uint16 bits), the
    projections are absmean-ternarised from the exactly widened values."""
    shutil.copy(REAL_HF / "config.json", tmp_path / "config.json")
    hdr = read_safetensors_header(REAL_HF / "model.safetensors")
    mm = np.memmap(REAL_HF / "model.safetensors", dtype=np.uint8, mode="r")
    arrays, widened = {}, {}
    for name in hdr.entries:
        x = hdr.array(name, mm)
        if dtype == "BF16":
            bits = bf16_bits(x)
            arrays[name] = ("BF16", bits)
            widened[name] = (bits.astype(np.uint32) << 16).view(np.float32)
        else:
            arrays[name] = ("F16", x.astype(np.float16))
            widened[name] = x.astype(np.float16).astype(np.float32)
    write_safetensors(tmp_path / "model.safetensors", arrays)
    mc, tensors, info = read_hf_checkpoint(tmp_path)
    assert info["dtypes"] == {dtype: 24} and info["weights"] == "latent"
    emb = tensors["token_embd.weight"]
    assert emb.ggml_type == dtype
    np.testing.assert_array_equal(emb.to_numpy(), widened["model.embed_tokens.weight"])
    t, g = absmean_ternarize(widened["model.layers.1.mlp.down_proj.weight"])
    np.testing.assert_array_equal(tensors["blk.1.ffn_down.weight"].ternary(), t)
    assert tensors["blk.1.ffn_down.weight"].scale == g


def test_fake_quantised_float_weights_warn(tmp_path):
    """Float projections that are already ternary × scale are ternarised again (codes kept,
    γ shrinks by the non-zero fraction), with a warning in info and a Python warning."""
    cfg = tiny_config()
    model = random_model(cfg)
    write_hf_checkpoint(tmp_path, cfg, model, convention="latent")
    arrays = {}
    hdr = read_safetensors_header(tmp_path / "model.safetensors")
    mm = np.memmap(tmp_path / "model.safetensors", dtype=np.uint8, mode="r")
    for name in hdr.entries:
        arrays[name] = ("F32", np.array(hdr.array(name, mm)))
    q = model["blk.0.attn_q.weight"]
    arrays["model.layers.0.self_attn.q_proj.weight"] = ("F32", q.ternary().astype(np.float32) * q.scale)
    del mm
    write_safetensors(tmp_path / "model.safetensors", arrays)
    with pytest.warns(UserWarning, match="already ternary"):
        _, tensors, info = read_hf_checkpoint(tmp_path)
    assert len(info["warnings"]) == 1
    np.testing.assert_array_equal(tensors["blk.0.attn_q.weight"].ternary(), q.ternary())
    nz = np.count_nonzero(q.ternary()) / q.ternary().size
    assert tensors["blk.0.attn_q.weight"].scale == pytest.approx(q.scale * nz, rel=1e-6)


def test_2b4t_names_and_untied_output(tmp_path):
    """bitnet-b1.58 configs use the 2B-4T sub-norm names; an untied lm_head becomes output."""
    cfg = tiny_config("bitnet-b1.58", tied=False)
    model = random_model(cfg)
    write_hf_checkpoint(tmp_path, cfg, model, convention="autobitlinear")
    hdr = read_safetensors_header(tmp_path / "model.safetensors")
    assert "model.layers.0.self_attn.attn_sub_norm.weight" in hdr.entries
    assert "model.layers.0.mlp.ffn_sub_norm.weight" in hdr.entries
    assert "lm_head.weight" in hdr.entries
    mc, tensors, info = read_hf_checkpoint(tmp_path)
    assert mc == cfg and info["naming"] == "bitnet2b"
    np.testing.assert_array_equal(tensors["output.weight"].to_numpy(), model["output.weight"].to_numpy())


# ---- llama q/k permutation ----------------------------------------------------------------------


def test_permutation_formula():
    """GGUF row h·d + 2i + j = HF row h·d + j·(d/2) + i
    (docs/formats.md#76-qk-permutation-for-llama-arch-ggufs), checked index by index."""
    n_head, d, K = 3, 8, 5
    hf = np.arange(n_head * d * K).reshape(n_head * d, K)
    gg = nm.permute_qk(hf, n_head)
    for h in range(n_head):
        for i in range(d // 2):
            for j in range(2):
                np.testing.assert_array_equal(gg[h * d + 2 * i + j], hf[h * d + j * (d // 2) + i])
    np.testing.assert_array_equal(nm.unpermute_qk(gg, n_head), hf)
    with pytest.raises(ConfigError, match="odd"):
        nm.permute_qk(np.zeros((6, 2)), 2)


@pytest.mark.parametrize("convention", ["autobitlinear", "bitlinear", "latent"])
def test_llama_checkpoint_permutes_qk(tmp_path, convention):
    """A llama-arch model (GGUF row order) written as HF has its q/k rows un-permuted in the file,
    and reading permutes them back, so both paths hold identical tensors; v/o stay as they are."""
    cfg = tiny_config("llama", hidden=32, n_heads=4, n_kv_heads=2, ffn=32, vocab=24)
    model = random_model(cfg, seed=5)
    write_hf_checkpoint(tmp_path, cfg, model, convention=convention)
    mc, tensors, info = read_hf_checkpoint(tmp_path)
    assert mc == cfg and mc.rope_style == "norm" and info["permuted_qk"] is True
    assert info["naming"] == "llama"
    for g, w in model.items():
        if isinstance(w, TernaryWeight):
            np.testing.assert_array_equal(tensors[g].ternary(), w.ternary(), err_msg=g)
    # the file itself holds HF order
    hdr = read_safetensors_header(tmp_path / "model.safetensors")
    mm = np.memmap(tmp_path / "model.safetensors", dtype=np.uint8, mode="r")
    raw_q = hdr.array("model.layers.0.self_attn.q_proj.weight", mm)
    from bitnet_lab.quant.packing import unpack_hf

    file_q = unpack_hf(np.asarray(raw_q), 32) if convention != "latent" else absmean_ternarize(raw_q)[0]
    q = model["blk.0.attn_q.weight"].ternary()
    np.testing.assert_array_equal(file_q, nm.unpermute_qk(q, 4))
    assert not np.array_equal(file_q, q)


# ---- sharding -------------------------------------------------------------------------------------


def test_sharded_checkpoint_reads_like_single(tmp_path, real_i2s):
    cfg, ref = real_i2s
    write_hf_checkpoint(tmp_path / "one", cfg, ref, convention="autobitlinear")
    write_hf_checkpoint(tmp_path / "many", cfg, ref, convention="autobitlinear", shard_size=200_000)
    shards = sorted((tmp_path / "many").glob("model-*.safetensors"))
    assert len(shards) >= 3
    _, a, _ = read_hf_checkpoint(tmp_path / "one")
    _, b, info = read_hf_checkpoint(tmp_path / "many")
    assert info["shards"] == len(shards)
    for g in a:
        if isinstance(a[g], TernaryWeight):
            np.testing.assert_array_equal(a[g].ternary(), b[g].ternary())
            assert a[g].scale == b[g].scale
        else:
            np.testing.assert_array_equal(a[g].to_numpy(), b[g].to_numpy())


def _sharded(tmp_path):
    cfg = tiny_config()
    write_hf_checkpoint(tmp_path, cfg, random_model(cfg), convention="autobitlinear", shard_size=600)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    return index


def test_index_missing_shard(tmp_path):
    index = _sharded(tmp_path)
    victim = sorted(set(index["weight_map"].values()))[1]
    (tmp_path / victim).unlink()
    with pytest.raises(SafetensorsError, match=f"do not exist: {victim}"):
        read_hf_checkpoint(tmp_path)


def test_index_wrong_shard(tmp_path):
    index = _sharded(tmp_path)
    shards = sorted(set(index["weight_map"].values()))
    name = next(k for k, v in index["weight_map"].items() if v == shards[0])
    index["weight_map"][name] = shards[1]
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(SafetensorsError, match=f"{name}.*listed in {shards[1]} but is in {shards[0]}"):
        read_hf_checkpoint(tmp_path)


def test_index_unlisted_and_phantom_tensors(tmp_path):
    index = _sharded(tmp_path)
    name = sorted(index["weight_map"])[0]
    shard = index["weight_map"].pop(name)
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(SafetensorsError, match="not in the index"):
        read_hf_checkpoint(tmp_path)
    index["weight_map"][name] = shard
    index["weight_map"]["model.layers.9.mlp.up_proj.weight"] = shard
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(SafetensorsError, match="no shard holds it"):
        read_hf_checkpoint(tmp_path)


def test_tensor_in_two_shards(tmp_path):
    index = _sharded(tmp_path)
    shards = sorted(set(index["weight_map"].values()))
    a, b = (read_safetensors_header(tmp_path / s) for s in shards[:2])
    mm = np.memmap(tmp_path / shards[1], dtype=np.uint8, mode="r")
    arrays = {n: (e.dtype, np.array(b.array(n, mm))) for n, e in b.entries.items()}
    dup = next(iter(a.entries))
    mma = np.memmap(tmp_path / shards[0], dtype=np.uint8, mode="r")
    arrays[dup] = (a.entries[dup].dtype, np.array(a.array(dup, mma)))
    del mm
    write_safetensors(tmp_path / shards[1], arrays)
    with pytest.raises(SafetensorsError, match=f"{dup}.*in two shards"):
        read_hf_checkpoint(tmp_path)


# ---- malformed files ---------------------------------------------------------------------------------


def _small(tmp_path, convention="autobitlinear"):
    cfg = tiny_config()
    model = random_model(cfg)
    write_hf_checkpoint(tmp_path, cfg, model, convention=convention)
    return tmp_path / "model.safetensors"


def _rewrite_header(path, mutate):
    data = path.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + n])
    mutate(header)
    hb = json.dumps(header).encode()
    hb += b" " * (-len(hb) % 8)
    path.write_bytes(struct.pack("<Q", len(hb)) + hb + data[8 + n :])


def test_truncated_file_and_header(tmp_path):
    p = _small(tmp_path)
    data = p.read_bytes()
    p.write_bytes(data[:5])
    with pytest.raises(SafetensorsError, match="shorter than the 8-byte header length"):
        read_hf_checkpoint(tmp_path)
    p.write_bytes(data[:40])
    with pytest.raises(SafetensorsError, match=r"header length \d+ does not fit the file \(32 bytes"):
        read_hf_checkpoint(tmp_path)
    p.write_bytes(data[:-7])  # data section short by 7 bytes
    with pytest.raises(SafetensorsError, match="outside the data section|tensors end at byte"):
        read_hf_checkpoint(tmp_path)


def test_header_not_json(tmp_path):
    p = _small(tmp_path)
    data = bytearray(p.read_bytes())
    data[8] = ord("[")
    p.write_bytes(bytes(data))
    with pytest.raises(SafetensorsError, match="not valid UTF-8 JSON"):
        read_hf_checkpoint(tmp_path)


def test_lying_offsets(tmp_path):
    p = _small(tmp_path)
    name = "model.layers.0.mlp.down_proj.weight"
    _rewrite_header(p, lambda h: h[name].__setitem__("data_offsets", [10**9, 10**9 + 32]))
    with pytest.raises(SafetensorsError, match=rf"{name}.*data_offsets \[1000000000, 1000000032\] outside"):
        read_hf_checkpoint(tmp_path)


def test_overlapping_offsets(tmp_path):
    p = _small(tmp_path)
    hdr = read_safetensors_header(p)
    (n1, e1), (n2, e2) = sorted(hdr.entries.items(), key=lambda kv: kv[1].begin)[:2]
    size = e2.end - e2.begin
    _rewrite_header(p, lambda h: h[n2].__setitem__("data_offsets", [e1.begin, e1.begin + size]))
    with pytest.raises(SafetensorsError, match="overlaps|leaves a gap"):
        read_hf_checkpoint(tmp_path)


def test_bad_dtype(tmp_path):
    p = _small(tmp_path)
    _rewrite_header(p, lambda h: h["model.norm.weight"].__setitem__("dtype", "Q4"))
    with pytest.raises(SafetensorsError, match="'model.norm.weight': unknown dtype 'Q4'"):
        read_hf_checkpoint(tmp_path)


def test_shape_bytes_mismatch(tmp_path):
    p = _small(tmp_path)
    _rewrite_header(p, lambda h: h["model.norm.weight"].__setitem__("shape", [9]))
    with pytest.raises(SafetensorsError, match=r"'model.norm.weight': shape \[9\] × F32 .* = 36 bytes.*span 32 bytes"):
        read_hf_checkpoint(tmp_path)


def test_unusable_dtype_for_role(tmp_path):
    p = _small(tmp_path)
    _rewrite_header(p, lambda h: h["model.norm.weight"].__setitem__("dtype", "I32"))
    with pytest.raises(SafetensorsError, match="model.norm.weight.*dtype I32"):
        read_hf_checkpoint(tmp_path)


def _drop_tensor(path, name):
    hdr = read_safetensors_header(path)
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    arrays = {n: (e.dtype, np.array(hdr.array(n, mm))) for n, e in hdr.entries.items() if n != name}
    del mm
    write_safetensors(path, arrays)


def test_missing_tensor(tmp_path):
    p = _small(tmp_path)
    _drop_tensor(p, "model.layers.0.mlp.down_proj.weight")
    with pytest.raises(SafetensorsError, match=r"lacks 1 tensor.*model.layers.0.mlp.down_proj.weight \(blk.0.ffn_down.weight\)"):
        read_hf_checkpoint(tmp_path)


def test_missing_weight_scale(tmp_path):
    p = _small(tmp_path)
    _drop_tensor(p, "model.layers.0.self_attn.k_proj.weight_scale")
    with pytest.raises(SafetensorsError, match="k_proj.weight.*without its .*weight_scale"):
        read_hf_checkpoint(tmp_path)


def test_packed_rows_mismatch(tmp_path):
    p = _small(tmp_path)
    name = "model.layers.0.mlp.up_proj.weight"  # 16 rows -> 4 packed rows
    hdr = read_safetensors_header(p)
    mm = np.memmap(p, dtype=np.uint8, mode="r")
    arrays = {n: (e.dtype, np.array(hdr.array(n, mm))) for n, e in hdr.entries.items()}
    arrays[name] = ("U8", arrays[name][1][:3])
    del mm
    write_safetensors(p, arrays)
    with pytest.raises(SafetensorsError, match=r"up_proj.*rows × 4 = 12 must equal out_features 16"):
        read_hf_checkpoint(tmp_path)


def test_shape_against_config(tmp_path):
    _small(tmp_path, "latent")
    raw = json.loads((tmp_path / "config.json").read_text())
    raw["intermediate_size"] = 24
    (tmp_path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(SafetensorsError, match=r"shape \[16\], but config.json implies \[24\]"):
        read_hf_checkpoint(tmp_path)


def test_invalid_code_in_packed_weight(tmp_path):
    p = _small(tmp_path)
    name = "model.layers.0.self_attn.o_proj.weight"
    hdr = read_safetensors_header(p)
    mm = np.memmap(p, dtype=np.uint8, mode="r")
    arrays = {n: (e.dtype, np.array(hdr.array(n, mm))) for n, e in hdr.entries.items()}
    # code 3 never appears in HF-packed data (docs/formats.md#3-ternary-byte-layouts)
    arrays[name][1][0, 0] |= 0b11
    del mm
    write_safetensors(p, arrays)
    with pytest.raises(SafetensorsError, match="o_proj.weight"):
        read_hf_checkpoint(tmp_path)


def test_bad_weight_scale_value(tmp_path):
    p = _small(tmp_path)
    name = "model.layers.0.self_attn.q_proj.weight_scale"
    hdr = read_safetensors_header(p)
    mm = np.memmap(p, dtype=np.uint8, mode="r")
    arrays = {n: (e.dtype, np.array(hdr.array(n, mm))) for n, e in hdr.entries.items()}
    arrays[name] = ("F32", np.array([0.0], np.float32))
    del mm
    write_safetensors(p, arrays)
    with pytest.raises(SafetensorsError, match="q_proj.weight_scale.*finite and > 0"):
        read_hf_checkpoint(tmp_path)


def test_unknown_tensor_name_and_bad_linear_class(tmp_path):
    p = _small(tmp_path)
    hdr = read_safetensors_header(p)
    mm = np.memmap(p, dtype=np.uint8, mode="r")
    arrays = {n: (e.dtype, np.array(hdr.array(n, mm))) for n, e in hdr.entries.items()}
    del mm
    write_safetensors(p, {**arrays, "model.layers.0.mlp.bias": ("F32", np.zeros(4, np.float32))})
    with pytest.raises(SafetensorsError, match="does not map to GGUF.*model.layers.0.mlp.bias"):
        read_hf_checkpoint(tmp_path)
    write_safetensors(p, arrays)
    raw = json.loads((tmp_path / "config.json").read_text())
    raw["quantization_config"]["linear_class"] = "fancylinear"
    (tmp_path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match="linear_class is 'fancylinear'"):
        read_hf_checkpoint(tmp_path)


def test_bad_config_values_are_config_errors(tmp_path):
    _small(tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    for key, value in (("num_attention_heads", 0), ("hidden_size", "wide"), ("rope_theta", [1])):
        bad = {**raw, key: value}
        (tmp_path / "config.json").write_text(json.dumps(bad))
        with pytest.raises(ConfigError):
            read_hf_checkpoint(tmp_path)


def test_library_agrees_with_our_header_parser(tmp_path):
    """Files we accept, the safetensors library accepts with the same tensors."""
    from safetensors import safe_open

    p = _small(tmp_path)
    hdr = read_safetensors_header(p)
    with safe_open(str(p), framework="numpy") as f:
        assert set(f.keys()) == set(hdr.entries)
        mm = np.memmap(p, dtype=np.uint8, mode="r")
        for k in f.keys():
            np.testing.assert_array_equal(f.get_tensor(k), hdr.array(k, mm))
