"""bitnet_lab.tools.inspect: tensor table, metadata summary and ternary statistics.

Checked on a tiny dummy (written by us) and on the conformance files written by bitnet.cpp and
upstream llama.cpp (tests/data/real-files/README.md), whose ternary codes agree across files.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import bitnet_lab
from bitnet_lab.tools import dummy
from bitnet_lab.errors import FormatError
from bitnet_lab.tools.inspect import inspect_model, ternary_stats

REAL = Path(__file__).resolve().parents[1] / "data" / "real-files"
PROJ = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


def test_tiny_table_matches_the_plan(tiny_gguf):
    r = inspect_model(tiny_gguf, progress=False)
    plan = dummy.plan_tensors("tiny", "i2_s")
    assert r.file_format == "gguf" and r.gguf_version == 3 and r.file_size == tiny_gguf.stat().st_size
    assert [(t.name, t.type_name, t.ggml_shape, t.shape, t.nbytes) for t in r.tensors] == [
        (p.name, p.ggml_type, p.ggml_shape, p.shape, p.nbytes) for p in plan
    ]
    assert r.type_counts() == {"F16": 1, "F32": 17, "I2_S": 28}
    offsets = [t.offset for t in r.tensors]
    assert offsets == sorted(offsets) and all(o % 32 == 0 for o in offsets)
    assert offsets[-1] + r.tensors[-1].nbytes == r.file_size  # last blob ends the file
    assert r.config == bitnet_lab.load(tiny_gguf).config
    assert r.n_params == sum(p.n_elements for p in plan)


def test_tiny_statistics_are_the_decoded_codes(tiny_gguf):
    r = inspect_model(tiny_gguf, progress=False)
    m = bitnet_lab.load(tiny_gguf)
    with_stats = [t for t in r.tensors if t.stats is not None]
    assert {t.name for t in with_stats} == set(m.ternary_weights())
    for row in with_stats:
        s = row.stats
        w = m.tensors[row.name]
        codes = w.ternary()
        assert s.neg + s.zero + s.pos == pytest.approx(1.0, abs=1e-12)
        assert s.n == codes.size
        assert s.zero == float(np.mean(codes == 0)) and s.neg == float(np.mean(codes == -1))
        assert s.scale == s.scale_min == s.scale_max == float(w.scale)
        assert row.layout == "i2_s"
    assert all(t.stats is None for t in r.tensors if t.layout is None)


def test_text_summarises_long_arrays_and_aligns_the_table(tiny_gguf):
    text = inspect_model(tiny_gguf, progress=False).to_text()
    assert "tokenizer.ggml.tokens" in text and "[32000 strings]" in text
    assert "[32000 float32]" in text and "[32000 int32]" in text
    assert "general.description" in text and "… (" in text  # long string cut, length given
    assert "'<unk>'" not in text  # the token list itself is not printed
    lines = text.splitlines()
    head = next(i for i, line in enumerate(lines) if line.strip().startswith("#  name"))
    table = lines[head + 2 : head + 2 + 46]
    assert len(table) == 46 and table[3].split()[1:5] == ["blk.0.attn_q.weight", "I2_S", "[256,", "256]"]
    # right-aligned numeric columns end at the same character
    ends = {len(line) for line in table if "I2_S" in line}
    assert len(ends) == 1


def test_json_parses_and_stats_sum_to_one(tiny_gguf):
    d = json.loads(inspect_model(tiny_gguf, progress=False).to_json())
    assert d["n_tensors"] == 46 and len(d["tensors"]) == 46
    assert d["metadata"]["tokenizer.ggml.tokens"]["length"] == 32000
    assert d["metadata"]["general.architecture"] == "bitnet-b1.58"
    assert d["metadata_types"]["tokenizer.ggml.token_type"] == "ARRAY[INT32]"
    assert d["config"]["hidden"] == 256
    sums = [t["stats"]["neg"] + t["stats"]["zero"] + t["stats"]["pos"] for t in d["tensors"] if t["stats"]]
    assert len(sums) == 28 and all(abs(s - 1) < 1e-12 for s in sums)
    full = json.loads(inspect_model(tiny_gguf, progress=False, stats=False).to_json(full_metadata=True))
    assert len(full["metadata"]["tokenizer.ggml.tokens"]) == 32000
    assert all(t["stats"] is None for t in full["tensors"]) and full["stats_computed"] is False


def test_real_bitnet_i2_s_file():
    r = inspect_model(REAL / "bitnet-i2_s.gguf", progress=False)
    assert len(r.tensors) == 24
    assert r.type_counts() == {"I2_S": 14, "F32": 9, "F16": 1}
    row = r.row("blk.0.ffn_down.weight")
    assert (row.type_name, row.ggml_shape, row.shape, row.nbytes) == ("I2_S", (768, 256), (256, 768), 256 * 768 // 4 + 32)
    assert r.row("token_embd.weight").ggml_shape == (256, 1000)
    assert r.row("blk.1.attn_k.weight").shape == (128, 256)
    assert r.config.arch == "bitnet" and r.config.vocab == 1000
    for t in r.tensors:
        if t.type_name == "I2_S":
            assert t.stats.neg + t.stats.zero + t.stats.pos == pytest.approx(1.0)
            # absmean of Gaussian latent weights zeroes ≈ 31% (docs/numerics.md#1-weight-ternarisation)
            assert 0.28 < t.stats.zero < 0.34 and 0.01 < t.stats.scale < 0.03


def test_real_files_agree_on_statistics():
    """The same ternary codes in the F32, I2_S and TQ2_0/TQ1_0 files give the same shares; the
    F32 file's float projections are recognised as t·γ."""
    i2s = {t.name: t.stats for t in inspect_model(REAL / "bitnet-i2_s.gguf", progress=False).tensors if t.stats}
    assert len(i2s) == 14
    for other in ("bitnet-f32.gguf", "upstream-tq2_0.gguf", "upstream-tq1_0.gguf"):
        st = {t.name: t.stats for t in inspect_model(REAL / other, progress=False).tensors if t.stats}
        assert set(st) == set(i2s), other
        for name, s in st.items():
            ref = i2s[name]
            assert (s.neg, s.zero, s.pos, s.n) == (ref.neg, ref.zero, ref.pos, ref.n), (other, name)
            if other == "bitnet-f32.gguf":
                assert s.scale == ref.scale
            else:  # the fp16 block d of TQ (docs/formats.md#34-tq2_0-type-35)
                assert s.scale_min == s.scale_max == pytest.approx(ref.scale, rel=1e-3)


def test_float_tensor_that_is_not_ternary_gets_no_stats():
    from bitnet_lab.tensors import FloatTensor

    x = np.array([[0.5, -0.25], [0.0, 0.5]], dtype=np.float32)
    assert ternary_stats(FloatTensor("blk.0.attn_q.weight", "F32", (2, 2), x)) is None
    y = np.array([[0.5, -0.5], [0.0, 0.5]], dtype=np.float32)
    s = ternary_stats(FloatTensor("blk.0.attn_q.weight", "F32", (2, 2), y))
    assert (s.neg, s.zero, s.pos, s.scale) == (0.25, 0.25, 0.5, 0.5)


def test_no_stats_and_missing_file(tiny_gguf):
    r = inspect_model(tiny_gguf, stats=False)
    assert not r.stats_computed and all(t.stats is None for t in r.tensors)
    header = next(line for line in r.to_text().splitlines() if line.strip().startswith("#  name"))
    assert "scale" not in header and "+1" not in header  # no statistics columns
    with pytest.raises(FormatError, match="no such file or directory: .*nope.gguf"):
        inspect_model(tiny_gguf.parent / "nope.gguf")


def test_vocab_only_gguf_has_no_tensors_and_no_config():
    from bitnet_lab import paths

    r = inspect_model(paths.LLAMA3_VOCAB, progress=False)
    assert r.tensors == [] and r.config is None and r.config_error
    assert "[280147 strings]" in r.to_text()


def test_hugging_face_folder():
    r = inspect_model(REAL / "hf", progress=False)
    assert r.file_format == "safetensors"
    assert r.config.hidden == 256 and r.config.n_layers == 2
    names = {t.name for t in r.tensors}
    assert "blk.0.ffn_down.weight" in names and "token_embd.weight" in names
    assert all(t.offset is None for t in r.tensors)
    assert r.row("blk.0.ffn_down.weight").ggml_shape == (768, 256)


# ---------------------------------------------------------------------------------------------
# TL tiling: which tiling each shape is read with, and where it came from
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_tl1(tmp_path_factory) -> dict[bool, Path]:
    d = tmp_path_factory.mktemp("tiny-tl1")
    return {key: dummy.generate_dummy("tiny", d / f"tl1-{key}.gguf", outtype="tl1", tl_tiling="128,64,32",
                                      tiling_key=key, progress=False) for key in (True, False)}


def test_tiling_from_the_file_key_and_from_the_flag(tiny_tl1):
    r = inspect_model(tiny_tl1[True], progress=False)
    assert {(row.shape, row.tiling, row.source, row.detail) for row in r.tl_tilings} == {
        (s, (128, 64, 32), "file key", "metadata 'bitnet_lab.tl_tiling'") for s in [(256, 256), (128, 256), (768, 256), (256, 768)]
    }
    assert sum(row.n_tensors for row in r.tl_tilings) == 28 and r.tl_tiling_error is None
    g = inspect_model(tiny_tl1[False], tl_tiling="128,64,32", progress=False)
    assert {(row.tiling, row.source) for row in g.tl_tilings} == {((128, 64, 32), "given")}
    # the same codes either way
    assert [t.stats for t in g.tensors] == [t.stats for t in r.tensors]
    text = g.to_text()
    assert "TL tiling (BM,BK,bm per shape, and where it came from):" in text
    assert "  tl1 (768, 256)  128,64,32  given: tl_tiling (--tl-tiling)  [8 tensors]" in text
    d = json.loads(g.to_json())
    assert {"layout": "tl1", "shape": [768, 256], "tiling": {"BM": 128, "BK": 64, "bm": 32}, "source": "given",
            "detail": "tl_tiling (--tl-tiling)", "n_tensors": 8} in d["tl_tilings"]


def test_tiling_from_a_preset(tmp_path):
    from bitnet_lab.formats.gguf_writer import GGUFWriter
    from bitnet_lab.quant import packing
    from bitnet_lab.quant.tiling import TLTiling

    t = np.random.default_rng(3).integers(-1, 2, size=(1536, 1536), dtype=np.int8)
    w = GGUFWriter(tmp_path / "large-attn.gguf")
    w.add_metadata("general.architecture", "bitnet")
    w.add_tensor("q", "TL2", t.shape, lambda: packing.pack("tl2", t, tiling=TLTiling(128, 192, 32)), tl_scale=0.5)
    r = inspect_model(w.write(), progress=False)
    assert [(row.layout, row.shape, row.tiling, row.source, row.detail) for row in r.tl_tilings] == [
        ("tl2", (1536, 1536), (128, 192, 32), "preset", "bitnet_b1_58-large")]
    assert "  tl2 (1536, 1536)  128,192,32  preset: bitnet_b1_58-large  [1 tensor]" in r.to_text()
    s = r.row("q").stats
    assert s.n == t.size and abs(s.pos - np.mean(t == 1)) < 1e-12


def test_unresolved_tiling_is_reported_and_the_rest_still_shown(tiny_tl1):
    r = inspect_model(tiny_tl1[False], progress=False)
    assert r.tl_tilings == [] and "match no bitnet.cpp preset" in r.tl_tiling_error
    assert all(t.stats is None for t in r.tensors if t.layout == "tl1")  # cannot be decoded
    assert r.row("token_embd.weight").type_name == "F16" and r.config is not None
    assert "  not resolved: " in r.to_text() and "legal for every shape" in r.to_text()
    assert json.loads(r.to_json())["tl_tiling_error"] == r.tl_tiling_error
