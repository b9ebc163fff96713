"""Dummy models (bitnet_lab.tools.dummy), the layout table (bitnet_lab.tools.layouts) and the default model.

The tiny layout is written in every outtype and read back with ``bitnet_lab.load``; the big
layouts are checked through the same planning function the generator uses
(docs/formats.md#63-2b-4t-gguf-tensors: the 332 tensors of the 2B-4T) without writing them, except in one
slow test.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import bitnet_lab
from bitnet_lab.tools import dummy
from bitnet_lab.tools import layouts
from bitnet_lab.config import ModelConfig
from bitnet_lab.errors import ConfigError
from bitnet_lab.tensors import FloatTensor, TernaryWeight

ROOT = Path(__file__).resolve().parents[2]
TERNARY = dummy.TERNARY_OUTTYPES
ALL_OUTTYPES = dummy.OUTTYPES


def as_stored(c: ModelConfig) -> ModelConfig:
    """The config after a GGUF round trip: float hyper-parameters are stored as FLOAT32."""
    return c.replace(norm_eps=float(np.float32(c.norm_eps)), rope_theta=float(np.float32(c.rope_theta)))


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory) -> dict[str, Path]:
    """The tiny layout in every outtype, seed 0 (≈ 0.2 s each)."""
    d = tmp_path_factory.mktemp("tiny")
    return {ot: dummy.generate_dummy("tiny", d / f"tiny-{ot}.gguf", outtype=ot, progress=False) for ot in ALL_OUTTYPES}


# ---------------------------------------------------------------------------------------------
# Layouts
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", layouts.LAYOUT_NAMES)
def test_every_layout_yields_a_valid_config(name):
    c = layouts.layout_config(name)
    assert isinstance(c, ModelConfig)
    assert layouts.layout_config(name.lower()) is c and layouts.layout_config(name.upper()) is c
    assert c.name == f"bitnet_lab dummy {name}"
    if name != "3B":  # every layout but the 3B (K = 3200, 8640) can be written as I2_S
        assert len(dummy.plan_tensors(name, "i2_s")) > 0
    lay = layouts.get_layout(name)
    assert lay.gamma_range[0] < lay.gamma_range[1] and 0.01 <= lay.embed_sigma <= 0.05
    assert lay.n_extra_tokens >= 0


def test_unknown_layout_names_the_known_ones():
    with pytest.raises(ConfigError) as e:
        layouts.layout_config("7b-turbo")
    msg = str(e.value)
    assert "'7b-turbo'" in msg and "2B-4T" in msg and "125M" in msg and "tiny" in msg


# docs/formats.md#9-dummy-model-layouts: size, H, I, layers, heads and the derived ternary parameter count
# (billions).
BITNET_CPP_DUMMIES = [
    ("125M", 768, 3072, 11, 12, 0.104), ("350M", 1024, 3072, 24, 16, 0.327),
    ("1B", 2048, 3584, 24, 32, 0.931), ("1.5B", 1536, 9216, 28, 32, 1.453),
    ("2.7B", 3072, 7680, 24, 32, 2.605), ("3.8B", 3840, 8192, 24, 32, 3.681),
    ("7B", 4096, 12032, 32, 32, 6.879), ("13B", 5120, 13824, 40, 40, 12.688),
    ("30B", 6656, 16384, 60, 52, 30.262), ("70B", 8192, 24576, 80, 64, 69.793),
    ("100B", 8192, 45568, 72, 64, 99.959),
]


@pytest.mark.parametrize("size, H, I, L, heads, tern_b", BITNET_CPP_DUMMIES)
def test_bitnet_cpp_dummy_sizes_match_formats_section_9(size, H, I, L, heads, tern_b):
    lay = layouts.get_layout(size)
    c = lay.config
    assert (c.arch, c.hidden, c.ffn, c.n_layers, c.n_heads, c.n_kv_heads) == ("bitnet", H, I, L, heads, heads)
    assert (c.vocab, c.activation, c.tied_output, c.sub_norms) == (32002, "silu", True, True)
    assert round(lay.ternary_params() / 1e9, 3) == tern_b


def test_real_family_hyperparameters():
    t = layouts.layout_config("2B-4T")
    assert (t.arch, t.hidden, t.n_layers, t.n_heads, t.n_kv_heads, t.ffn, t.vocab) == (
        "bitnet-b1.58", 2560, 30, 20, 5, 6912, 128256)
    assert (t.activation, t.rope_theta, t.tied_output, t.bos_id, t.eos_id, t.eot_id) == (
        "relu2", 500000.0, True, 128000, 128001, 128009)
    ll = layouts.layout_config("Llama3-8B-1.58")
    assert (ll.arch, ll.tied_output, ll.sub_norms, ll.n_kv_heads, ll.rope_style) == ("llama", False, False, 8, "norm")
    for name in ("Falcon3-1B", "Falcon3-3B"):
        f = layouts.layout_config(name)
        assert (f.arch, f.vocab, f.head_dim, f.norm_eps, f.rope_theta) == ("llama", 131072, 256, 1e-6, 1000042.0)
    large = layouts.layout_config("large")
    assert (large.hidden, large.n_layers, large.head_dim, large.vocab, large.activation) == (1536, 24, 96, 32002, "silu")


# ---------------------------------------------------------------------------------------------
# Plans (no bytes written)
# ---------------------------------------------------------------------------------------------

# docs/formats.md#63-2b-4t-gguf-tensors: per-layer tensors of the 2B-4T with ggml shapes and types
# (I2_S file).
LAYER_2B4T = [
    ("attn_norm", "F32", (2560,)),
    ("attn_q", "I2_S", (2560, 2560)),
    ("attn_k", "I2_S", (2560, 640)),
    ("attn_v", "I2_S", (2560, 640)),
    ("attn_output", "I2_S", (2560, 2560)),
    ("attn_sub_norm", "F32", (2560,)),
    ("ffn_norm", "F32", (2560,)),
    ("ffn_gate", "I2_S", (2560, 6912)),
    ("ffn_up", "I2_S", (2560, 6912)),
    ("ffn_down", "I2_S", (6912, 2560)),
    ("ffn_sub_norm", "F32", (6912,)),
]


def test_2b4t_plan_is_the_332_tensors_of_the_official_file():
    plan = dummy.plan_tensors("2B-4T", "i2_s")
    expected = [("token_embd.weight", "F16", (2560, 128256)), ("output_norm.weight", "F32", (2560,))]
    for i in range(30):
        expected += [(f"blk.{i}.{n}.weight", t, s) for n, t, s in LAYER_2B4T]
    assert [(p.name, p.ggml_type, p.ggml_shape) for p in plan] == expected
    assert len(plan) == 332
    assert Counter(p.ggml_type for p in plan) == {"I2_S": 210, "F32": 121, "F16": 1}
    # I2_S blob sizes M·K/4 + 32 (docs/formats.md#63-2b-4t-gguf-tensors)
    sizes = {p.name.split(".")[2]: p.nbytes for p in plan if p.name.startswith("blk.0.") and p.ggml_type == "I2_S"}
    assert sizes == {"attn_q": 1_638_432, "attn_output": 1_638_432, "attn_k": 409_632, "attn_v": 409_632,
                     "ffn_gate": 4_423_712, "ffn_up": 4_423_712, "ffn_down": 4_423_712}
    # parameter count of the 2B-4T (docs/formats.md#75-per-repo-tensor-lists) and ≈ 1.18 GB on disk
    # (docs/formats.md#53-the-official-2b-4t-gguf)
    assert sum(p.n_elements for p in plan) == 2_412_820_480
    assert 1.17e9 < sum(p.nbytes for p in plan) < 1.19e9


@pytest.mark.parametrize(
    "name, outtype, count",
    [("large", "i2_s", 266), ("3B", "tl1", 288), ("Llama3-8B-1.58", "i2_s", 291),
     ("Falcon3-1B", "i2_s", 165), ("Falcon3-3B", "i2_s", 201), ("125M", "tq2_0", 123)],
)
def test_family_tensor_counts(name, outtype, count):
    # docs/formats.md#64-1bitllm-large-and-3b-gguf-tensors, docs/formats.md#65-llama-architecture-families
    # (tensor counts), docs/formats.md#9-dummy-model-layouts (11 layers × 11 + 2 for the 125M dummy)
    plan = dummy.plan_tensors(name, outtype)
    assert len(plan) == count
    c = layouts.layout_config(name)
    names = {p.name for p in plan}
    assert ("output.weight" in names) == (not c.tied_output)
    assert ("blk.0.attn_sub_norm.weight" in names) == c.sub_norms
    emb = [p for p in plan if p.kind in ("embedding", "output")]
    assert all(p.ggml_type == "F16" and p.shape == (c.vocab, c.hidden) for p in emb)


def test_plan_types_per_outtype_and_embedding_type():
    f32 = dummy.plan_tensors("tiny", "f32")
    assert {p.ggml_type for p in f32} == {"F32"}  # an all-F32 file by default
    q8 = dummy.plan_tensors("tiny", "tq1_0", embedding_type="q8_0")
    assert q8[0].ggml_type == "Q8_0" and q8[0].nbytes == 32000 * 256 // 32 * 34
    q6 = dummy.plan_tensors("tiny", "i2_s", embedding_type="Q6_K")
    assert q6[0].ggml_type == "Q6_K" and q6[0].nbytes == 32000 * 256 // 256 * 210
    bf = dummy.plan_tensors("tiny", "i2_s", embedding_type="bf16")
    assert bf[0].ggml_type == "BF16" and bf[0].nbytes == 32000 * 256 * 2
    tl2 = dummy.plan_tensors("tiny", "tl2", tl_tiling={(768, 256): "256,96,32"})
    assert {p.tiling for p in tl2 if p.shape == (768, 256)} == {bitnet_lab.tensors.TLTiling(256, 96, 32)}


def test_impossible_shapes_are_refused_with_the_tensor_and_rule():
    with pytest.raises(ConfigError, match=r"blk\.0\.ffn_down\.weight has K = 8640.*K % 128"):
        dummy.plan_tensors("3B", "i2_s")
    with pytest.raises(ConfigError, match=r"TQ2_0.*K = 3200"):
        dummy.plan_tensors("3B", "tq2_0")
    with pytest.raises(ConfigError, match=r"blk\.0\.attn_k\.weight.*\(128, 256\)"):
        dummy.plan_tensors("tiny", "tl1", tl_tiling="256,256,32")  # BM 256 does not divide M = 128
    with pytest.raises(ConfigError, match="outtype"):
        dummy.plan_tensors("tiny", "q4_0")
    with pytest.raises(ConfigError, match="embedding type"):
        dummy.plan_tensors("tiny", "i2_s", embedding_type="q4_k")
    with pytest.raises(ConfigError, match=r"Q6_K embedding needs hidden % 256 == 0.*hidden = 3200"):
        dummy.plan_tensors("3B", "f16", embedding_type="q6_k")


# ---------------------------------------------------------------------------------------------
# The tiny layout in every outtype
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("outtype", ALL_OUTTYPES)
def test_tiny_loads_back_with_its_config_tensors_and_tokenizer(tiny_files, outtype):
    lay = layouts.get_layout("tiny")
    m = bitnet_lab.load(tiny_files[outtype])
    assert m.config == as_stored(lay.config)
    plan = dummy.plan_tensors("tiny", outtype)
    assert list(m.tensors) == [p.name for p in plan]
    for p in plan:
        t = m.tensors[p.name]
        assert t.shape == p.shape
    md = m.metadata
    assert md["general.file_type"] == dummy.FILE_TYPE[outtype]
    assert md["general.quantization_version"] == 2
    assert md["general.name"] == "bitnet_lab dummy tiny"
    assert "SentencePiece" in md["general.description"]
    assert md["bitnet_lab.hidden_act"] == "relu2"
    assert md["tokenizer.ggml.model"] == "llama" and len(md["tokenizer.ggml.tokens"]) == 32000
    assert len(md["tokenizer.ggml.scores"]) == len(md["tokenizer.ggml.token_type"]) == 32000
    assert md["tokenizer.ggml.add_bos_token"] is True
    assert (md["tokenizer.ggml.bos_token_id"], md["tokenizer.ggml.eos_token_id"]) == (1, 2)
    if outtype in ("tl1", "tl2"):
        assert len(md["bitnet_lab.tl_tiling"]) == 4  # one entry per distinct (M, K)
    else:
        assert "bitnet_lab.tl_tiling" not in md


@pytest.mark.parametrize("outtype", TERNARY)
def test_tiny_ternary_statistics(tiny_files, outtype):
    lay = layouts.get_layout("tiny")
    m = bitnet_lab.load(tiny_files[outtype])
    tw = m.ternary_weights()
    assert len(tw) == 4 * 7
    lo, hi = lay.gamma_range
    zeros, n = 0, 0
    for name, w in tw.items():
        assert isinstance(w, TernaryWeight) and w.layout == outtype
        t = w.ternary()
        share0 = float(np.mean(t == 0))
        neg, pos = float(np.mean(t == -1)), float(np.mean(t == 1))
        assert 0.25 < share0 < 0.42, (name, share0)
        assert abs(neg - pos) < 0.03, (name, neg, pos)  # ±1 balanced
        g = float(w.gamma())
        assert lo * 0.999 <= g <= hi * 1.001, (name, g)  # TQ: γ rounded to fp16
        zeros += int(np.count_nonzero(t == 0))
        n += t.size
    assert 0.30 <= zeros / n <= 0.36  # about a third zeros overall
    gammas = {float(w.gamma()) for w in tw.values()}
    assert len(gammas) > 20  # the scale varies per tensor


def test_the_same_codes_and_scales_in_every_outtype(tiny_files):
    """Per-tensor generators depend on (seed, name) only: every outtype stores the same t and γ."""
    ref = bitnet_lab.load(tiny_files["i2_s"]).ternary_weights()
    for outtype in ALL_OUTTYPES[1:]:
        m = bitnet_lab.load(tiny_files[outtype])
        for name, w in ref.items():
            other = m.tensors[name]
            # f16 / f32: W = t·γ folded (docs/formats.md#4-where-per-tensor-scales-live)
            if isinstance(other, FloatTensor):
                x = other.to_numpy()
                np.testing.assert_array_equal(np.sign(x).astype(np.int8), w.ternary(), err_msg=f"{outtype} {name}")
                g = np.float16(w.scale) if outtype == "f16" else w.scale
                assert set(np.unique(np.abs(x))) == {0.0, np.float32(g)}
            else:
                np.testing.assert_array_equal(other.ternary(), w.ternary(), err_msg=f"{outtype} {name}")
                if outtype.startswith("tq"):
                    assert other.gamma() == np.float32(np.float16(w.scale))
                else:
                    assert other.scale == w.scale


def test_tiny_norms_and_embedding_look_trained(tiny_files):
    m = bitnet_lab.load(tiny_files["i2_s"])
    lay = layouts.get_layout("tiny")
    emb = m.tensors["token_embd.weight"]
    assert emb.ggml_type == "F16"
    e = emb.to_numpy()
    assert abs(float(e.mean())) < 1e-3 and abs(float(e.std()) / lay.embed_sigma - 1) < 0.02
    norms = np.concatenate([t.to_numpy().ravel() for n, t in m.tensors.items() if "norm" in n])
    assert norms.dtype == np.float32
    assert abs(float(norms.mean()) - 1) < 0.02 and 0.08 < float(norms.std()) < 0.12
    assert not np.allclose(m.tensors["blk.0.attn_norm.weight"].to_numpy(), m.tensors["blk.1.attn_norm.weight"].to_numpy())


def test_q8_0_embedding_is_the_same_draw(tiny_files, tmp_path):
    p = dummy.generate_dummy("tiny", tmp_path / "q8.gguf", outtype="i2_s", embedding_type="q8_0", progress=False)
    q8 = bitnet_lab.load(p).tensors["token_embd.weight"]
    f16 = bitnet_lab.load(tiny_files["i2_s"]).tensors["token_embd.weight"]
    assert q8.ggml_type == "Q8_0"
    a, b = q8.to_numpy(), f16.to_numpy()
    # Q8_0 error is at most half a step of absmax/127 per 32-block (plus fp16 of d); σ = 0.03
    assert np.max(np.abs(a - b)) < 0.2 / 127 and not np.array_equal(a, b)


@pytest.mark.parametrize("emb", ["bf16", "q8_0", "q6_k"])
def test_encoded_embedding_is_the_f32_draw_encoded(tiny_files, tmp_path, emb):
    """--token-embedding-type bf16 / q8_0 / q6_k: the same random rows as the F32 file, encoded
    by blockquant (BF16 round to nearest even; Q8_0 / Q6_K llama.cpp's reference quantisers), and
    the file loads and runs."""
    from bitnet_lab.formats.gguf import GGUFFile
    from bitnet_lab.quant import blockquant

    p = dummy.generate_dummy("tiny", tmp_path / f"{emb}.gguf", outtype="i2_s", embedding_type=emb, progress=False)
    got = GGUFFile(p).tensor("token_embd.weight")
    assert got.ggml_type == emb.upper()
    rows = 64  # rows are encoded independently; the first 64 keep the test short
    f32 = np.asarray(GGUFFile(tiny_files["f32"]).tensor("token_embd.weight").data)[:rows]
    want = blockquant.quantize(emb.upper(), f32)
    assert np.array_equal(np.ascontiguousarray(got.data).reshape(-1).view(np.uint8)[: want.size], want)
    logits = bitnet_lab.load(p).logits([1, 2, 3])
    assert logits.shape[-1] == 32000 and np.isfinite(logits).all()


@pytest.mark.parametrize("outtype", ["tl1", "tl2"])
def test_no_tiling_key_writes_the_same_tensors_without_our_key(tiny_files, tmp_path, outtype):
    """tiling_key=False (--no-tiling-key) leaves bitnet_lab.tl_tiling out, as bitnet.cpp's files
    do; read with the tilings the keyed file records, every tensor is byte-identical."""
    from bitnet_lab.formats.gguf import GGUFFile
    from bitnet_lab.formats.ggml_types import parse_tiling_key

    p = dummy.generate_dummy("tiny", tmp_path / f"nokey-{outtype}.gguf", outtype=outtype, tiling_key=False,
                             progress=False)
    keyed = GGUFFile(tiny_files[outtype])
    tilings = parse_tiling_key(keyed.metadata["bitnet_lab.tl_tiling"])
    bare = GGUFFile(p, tl_tiling=tilings)
    assert "bitnet_lab.tl_tiling" not in bare.metadata
    assert bare.tensor_names == keyed.tensor_names
    for name, t in keyed.tensors().items():
        u = bare.tensor(name)
        np.testing.assert_array_equal(np.asarray(u.data), np.asarray(t.data))


def test_arch_name_relabels_the_same_graph(tiny_files, tmp_path):
    """--arch-name bitnet: the name llama.cpp reads the 2B-4T graph under; same tensors, same
    logits, the activation still relu² through our key."""
    p = dummy.generate_dummy("tiny", tmp_path / "bitnet.gguf", outtype="tq2_0", arch_name="bitnet", progress=False)
    relabelled, own = bitnet_lab.load(p), bitnet_lab.load(tiny_files["tq2_0"])
    assert relabelled.metadata["general.architecture"] == "bitnet" and own.config.arch == "bitnet-b1.58"
    assert "bitnet.block_count" in relabelled.metadata and "bitnet-b1.58.block_count" not in relabelled.metadata
    assert relabelled.config.activation == own.config.activation == "relu2"
    assert relabelled.config.replace(arch=own.config.arch, name=own.config.name) == own.config.replace(name=own.config.name)
    ids = [1, 5, 9, 200]
    np.testing.assert_array_equal(relabelled.runner.logits(ids), own.runner.logits(ids))


def test_arch_name_refuses_a_family_that_cannot_carry_the_graph(tmp_path):
    with pytest.raises(ConfigError, match="cannot carry.*sub-norms.*bitnet"):
        dummy.generate_dummy("tiny", tmp_path / "x.gguf", arch_name="llama", progress=False)
    assert not (tmp_path / "x.gguf").exists()


# ---------------------------------------------------------------------------------------------
# Determinism
# ---------------------------------------------------------------------------------------------


def test_same_seed_same_bytes_other_seed_other_bytes(tiny_files, tmp_path):
    again = dummy.generate_dummy("tiny", tmp_path / "again.gguf", outtype="i2_s", seed=0, progress=False)
    assert sha(again) == sha(tiny_files["i2_s"])
    other = dummy.generate_dummy("tiny", tmp_path / "seed1.gguf", outtype="i2_s", seed=1, progress=False)
    assert other.stat().st_size == again.stat().st_size  # same layout, same sizes
    assert sha(other) != sha(again)
    a, b = bitnet_lab.load(again), bitnet_lab.load(other)
    assert b.metadata["bitnet_lab.tools.dummy.seed"] == 1
    for name in ("token_embd.weight", "blk.0.attn_norm.weight", "blk.3.ffn_down.weight"):
        assert not np.array_equal(np.asarray(a.tensors[name].data), np.asarray(b.tensors[name].data)), name


@pytest.mark.parametrize("outtype", ["i2_s", "tl2", "tq1_0"])
def test_any_tensor_regenerates_alone(tiny_files, outtype):
    from bitnet_lab.formats.gguf import GGUFFile

    f = GGUFFile(tiny_files[outtype])
    raw = np.memmap(tiny_files[outtype], dtype=np.uint8, mode="r")
    for name in ("blk.2.ffn_up.weight", "blk.0.attn_k.weight", "output_norm.weight"):
        ti = f.tensor_info(name)
        blob, tl_scale = dummy.regenerate_tensor("tiny", name, outtype=outtype, seed=0)
        np.testing.assert_array_equal(np.frombuffer(memoryview(blob), np.uint8), raw[ti.offset : ti.offset + ti.nbytes])
        if outtype == "tl2" and name != "output_norm.weight":
            assert tl_scale == f.tensor(name).scale


def test_tensor_rng_depends_on_seed_and_name_only():
    a = dummy.tensor_rng(0, "blk.0.attn_q.weight").integers(0, 2**32, 4)
    assert np.array_equal(a, dummy.tensor_rng(0, "blk.0.attn_q.weight").integers(0, 2**32, 4))
    assert not np.array_equal(a, dummy.tensor_rng(1, "blk.0.attn_q.weight").integers(0, 2**32, 4))
    assert not np.array_equal(a, dummy.tensor_rng(0, "blk.0.attn_k.weight").integers(0, 2**32, 4))


# ---------------------------------------------------------------------------------------------
# Tokenizer metadata of the other vocabularies
# ---------------------------------------------------------------------------------------------


def test_32002_vocab_adds_pad_and_unused_tokens():
    lay = layouts.get_layout("large")
    md = dummy.tokenizer_metadata(lay)
    toks, types = md["tokenizer.ggml.tokens"], md["tokenizer.ggml.token_type"]
    assert len(toks) == len(types) == len(md["tokenizer.ggml.scores"]) == 32002
    assert toks[:3] == ["<unk>", "<s>", "</s>"]
    assert (toks[32000], int(types[32000])) == ("<pad>", dummy.TOKEN_CONTROL)
    assert (toks[32001], int(types[32001])) == ("<bitnet_lab_unused_32001>", dummy.TOKEN_UNUSED)
    assert md["tokenizer.ggml.padding_token_id"] == 32000
    desc = dummy.describe_dummy(lay, 0)
    assert "extended to 32002" in desc and "<pad> (CONTROL)" in desc


def test_falcon3_vocab_is_llama3_padded_to_131072():
    lay = layouts.get_layout("Falcon3-1B")
    md = dummy.tokenizer_metadata(lay)
    toks, types = md["tokenizer.ggml.tokens"], np.asarray(md["tokenizer.ggml.token_type"])
    assert len(toks) == len(types) == 131072
    assert toks[128000] == "<|begin_of_text|>" and toks[128256] == "<bitnet_lab_unused_128256>"
    assert (types[128256:] == dummy.TOKEN_UNUSED).all() and len(md["tokenizer.ggml.merges"]) == 280147
    assert "131072" in dummy.describe_dummy(lay, 0)


def test_2b4t_tokenizer_and_chat_template_render_the_training_format():
    jinja2 = pytest.importorskip("jinja2")
    md = dummy.tokenizer_metadata(layouts.get_layout("2B-4T"))
    assert md["tokenizer.ggml.model"] == "gpt2" and md["tokenizer.ggml.pre"] == "llama-bpe"
    assert (md["tokenizer.ggml.bos_token_id"], md["tokenizer.ggml.eos_token_id"], md["tokenizer.ggml.eot_token_id"]) == (
        128000, 128001, 128009)
    assert md["tokenizer.ggml.add_bos_token"] is True
    tpl = jinja2.Environment().from_string(md["tokenizer.chat_template"])
    msgs = [{"role": "system", "content": " Be brief. "}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Why?\n"}]
    text = tpl.render(messages=msgs, add_generation_prompt=True, bos_token="<|begin_of_text|>")
    # docs/formats.md#85-chat-templates
    assert text == ("<|begin_of_text|>System: Be brief.<|eot_id|>User: Hi<|eot_id|>Assistant: Hello<|eot_id|>"
                    "User: Why?<|eot_id|>Assistant: ")


# ---------------------------------------------------------------------------------------------
# The default model
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def isolated_paths(tmp_path, monkeypatch):
    from bitnet_lab import paths

    monkeypatch.setattr(paths, "DATA_DIR", tmp_path / "data")
    monkeypatch.setattr(paths, "CACHE_DIR", tmp_path / "cache")
    return tmp_path


def test_default_model_is_generated_once_and_reused(isolated_paths, tiny_files):
    from bitnet_lab.tools.default_model import default_model_path

    p = default_model_path()
    assert p.parent == isolated_paths / "cache" and p.is_file()
    assert sha(p) == sha(tiny_files["i2_s"])  # tiny, seed 0, I2_S
    assert [q.name for q in p.parent.iterdir()] == [p.name]  # no temporary file left behind
    mtime = p.stat().st_mtime_ns
    assert default_model_path() == p and p.stat().st_mtime_ns == mtime  # not regenerated
    m = bitnet_lab.load(p)
    assert m.config == as_stored(layouts.layout_config("tiny"))


def test_default_model_regenerates_a_broken_or_outdated_file(isolated_paths, monkeypatch):
    from bitnet_lab.tools.default_model import default_model_path

    p = default_model_path()
    good = sha(p)
    p.write_bytes(p.read_bytes()[:1000])  # truncated
    assert sha(default_model_path()) == good
    monkeypatch.setattr(dummy, "GENERATOR_VERSION", "999-test")
    default_model_path()
    from bitnet_lab.formats.gguf import read_metadata

    assert read_metadata(p)[dummy.DUMMY_VERSION_KEY] == "999-test"


def test_default_model_prefers_the_shipped_file(isolated_paths):
    from bitnet_lab.tools.default_model import default_model_path

    shipped = isolated_paths / "data" / "default-model.gguf"
    shipped.parent.mkdir(parents=True)
    dummy.generate_dummy("tiny", shipped, seed=7, progress=False)
    assert default_model_path() == shipped
    assert not (isolated_paths / "cache").exists()


# ---------------------------------------------------------------------------------------------
# The real 2B-4T layout (slow: writes 1.18 GB)
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_2b4t_i2_s_file_streams_with_one_tensor_in_memory(tmp_path):
    """Measured once on the 2-core dev box: ~15 s to write, peak RSS ~750 MiB (the F16
    embedding blob alone is 626 MiB), inspect with statistics ~3 s."""
    out = tmp_path / "2b4t.gguf"
    script = textwrap.dedent(
        f"""
        import time
        from bitnet_lab.bench.profile import _peak_rss
        from bitnet_lab.tools.dummy import generate_dummy
        t = time.time()
        generate_dummy("2B-4T", {str(out)!r}, outtype="i2_s", progress=False)
        print(time.time() - t, _peak_rss())
        """
    )
    # The child's own high-water mark (VmHWM), not ru_maxrss: the kernel carries the parent's
    # peak across fork + exec, so after a big test in this pytest process ru_maxrss read ~1.2 GB.
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    seconds, peak_bytes = res.stdout.split()
    peak = int(peak_bytes)
    embedding = 128256 * 2560 * 2
    print(f"2B-4T I2_S dummy: {float(seconds):.1f} s, peak RSS {peak / 2**20:.0f} MiB")
    assert peak < embedding + 400 * 2**20  # the largest tensor plus interpreter, vocab, one layer

    from bitnet_lab.tools.inspect import inspect_model

    r = inspect_model(out, progress=False)
    assert len(r.tensors) == 332 and r.type_counts() == {"I2_S": 210, "F32": 121, "F16": 1}
    assert r.config == as_stored(layouts.layout_config("2B-4T"))
    assert out.stat().st_size == r.file_size and 1.17e9 < r.file_size < 1.2e9
    stats = [row.stats for row in r.tensors if row.stats is not None]
    assert len(stats) == 210 and all(1.0 <= s.scale <= 2.0 and 0.25 < s.zero < 0.42 for s in stats)


def test_cli_dummy_tl_tiling_takes_a_preset_name_and_refuses_a_shape_it_lacks(tmp_path, capsys):
    """--tl-tiling NAME on dummy: the preset's per-shape tilings; the tiny layout's shapes are
    not the 2B-4T's, so the refusal names the tensor, its shape and the preset (exit 1, one line)."""
    from bitnet_lab.cli import main

    rc = main(["dummy", "--layout", "tiny", "--outtype", "tl2", "--tl-tiling", "BitNet-b1.58-2B-4T",
               "-o", str(tmp_path / "x.gguf"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1
    assert "the tl2 preset BitNet-b1.58-2B-4T has no tiling for this shape" in err[0]
    assert not (tmp_path / "x.gguf").exists()
