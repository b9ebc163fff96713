"""bitnet.cpp's TL tiling presets per model (quant/tiling.py, docs/kernels.md#56-presets-per-model):
chosen by the whole set of a file's shapes, refused with the candidates when unknown or ambiguous,
and the parsing of a user's tiling request.

The expected tables are transcribed here from microsoft/BitNet:setup_env.py ``gen_code`` (the
--BM/--BK/--bm lists, one entry per shape of codegen's ModelShapeDict) independently of the
role tables in tiling.py, so a slip in either shows.
"""

from __future__ import annotations

import re

import pytest

from bitnet_lab.errors import CodecError, ConfigError
from bitnet_lab.quant import tiling as TL
from bitnet_lab.quant.tiling import TLTiling


def T(s: str) -> TLTiling:
    return TLTiling(*(int(v) for v in s.split("/")))


# model -> layout -> {(M, K): "BM/BK/bm"}; (M, K) torch order = ModelShapeDict's [m, k].
EXPECTED = {
    # ModelShapeDict[bitnet_b1_58-large] = [1536, 4096], [1536, 1536], [4096, 1536]
    "bitnet_b1_58-large": {
        "tl1": {(1536, 4096): "256/128/32", (1536, 1536): "128/64/64", (4096, 1536): "256/128/32"},
        "tl2": {(1536, 4096): "256/96/32", (1536, 1536): "128/192/32", (4096, 1536): "256/96/32"},
    },
    # ModelShapeDict[bitnet_b1_58-3B] = [3200, 8640], [3200, 3200], [8640, 3200]
    "bitnet_b1_58-3B": {
        "tl1": {(3200, 8640): "160/64/32", (3200, 3200): "320/128/64", (8640, 3200): "320/64/32"},
        "tl2": {(3200, 8640): "160/96/32", (3200, 3200): "320/96/32", (8640, 3200): "320/96/32"},
    },
    # ModelShapeDict[Llama3-8B-1.58-100B-tokens] = [14336, 4096], [4096, 14336], [1024, 4096], [4096, 4096]
    "Llama3-8B-1.58-100B-tokens": {
        "tl1": {(14336, 4096): "256/128/32", (4096, 14336): "128/64/64", (1024, 4096): "256/128/32", (4096, 4096): "128/64/64"},
        "tl2": {(14336, 4096): "256/96/32", (4096, 14336): "128/96/32", (1024, 4096): "256/96/32", (4096, 4096): "128/96/32"},
    },
    # the 3B lists by role: ffn_down (H, I), attention (H, H) also for k/v, ffn_gate/up (I, H) with
    # BM 320 -> 288 because 6912 % 320 != 0
    "BitNet-b1.58-2B-4T": {
        "tl1": {(2560, 6912): "160/64/32", (2560, 2560): "320/128/64", (640, 2560): "320/128/64", (6912, 2560): "288/64/32"},
        "tl2": {(2560, 6912): "160/96/32", (2560, 2560): "320/96/32", (640, 2560): "320/96/32", (6912, 2560): "288/96/32"},
    },
    # the Llama3-8B lists by role: ffn_gate/up (I, H), ffn_down (H, I), k/v (KV, H), q/o (H, H)
    "Falcon3-1B-1.58bit": {
        "tl1": {(8192, 2048): "256/128/32", (2048, 8192): "128/64/64", (1024, 2048): "256/128/32", (2048, 2048): "128/64/64"},
        "tl2": {(8192, 2048): "256/96/32", (2048, 8192): "128/96/32", (1024, 2048): "256/96/32", (2048, 2048): "128/96/32"},
    },
    "Falcon3-3B-1.58bit": {
        "tl1": {(9216, 3072): "256/128/32", (3072, 9216): "128/64/64", (1024, 3072): "256/128/32", (3072, 3072): "128/64/64"},
        "tl2": {(9216, 3072): "256/96/32", (3072, 9216): "128/96/32", (1024, 3072): "256/96/32", (3072, 3072): "128/96/32"},
    },
    "Falcon3-7B-1.58bit": {
        "tl1": {(23040, 3072): "256/128/32", (3072, 23040): "128/64/64", (1024, 3072): "256/128/32", (3072, 3072): "128/64/64"},
        "tl2": {(23040, 3072): "256/96/32", (3072, 23040): "128/96/32", (1024, 3072): "256/96/32", (3072, 3072): "128/96/32"},
    },
}
EXPECTED["Falcon3-10B-1.58bit"] = EXPECTED["Falcon3-7B-1.58bit"]  # same shapes, same lists

CASES = [(model, layout) for model in EXPECTED for layout in ("tl1", "tl2")]


@pytest.mark.parametrize("model, layout", CASES)
def test_each_supported_model_is_recognised_by_its_shapes(model, layout):
    want = {shape: T(t) for shape, t in EXPECTED[model][layout].items()}
    if (model, layout) == ("Llama3-8B-1.58-100B-tokens", "tl1"):
        # gen_code and the pretuned kernel_config_tl1.ini tile these shapes differently
        with pytest.raises(CodecError, match="tile them differently"):
            TL.match_presets(layout, want)
        assert dict(TL.named_preset(layout, model).tilings) == want
        return
    m = TL.match_presets(layout, want)
    assert dict(m.tilings) == want
    assert model in [p.name for p in m.presets]
    for (M, K), t in want.items():
        TL.validate_tiling(layout, M, K, t)
        assert TL.default_tiling(layout, M, K) == t  # what our writers use for the shape


def test_same_shapes_same_tilings_is_not_ambiguous():
    m = TL.match_presets("tl2", EXPECTED["Falcon3-10B-1.58bit"]["tl2"])
    assert m.label == "Falcon3-7B-1.58bit = Falcon3-10B-1.58bit"
    # a file with only attention tensors of the 3072-wide Falcons: three models, one tiling
    m = TL.match_presets("tl1", [(3072, 3072), (1024, 3072)])
    assert {p.name for p in m.presets} == {"Falcon3-3B-1.58bit", "Falcon3-7B-1.58bit", "Falcon3-10B-1.58bit"}
    # a subset of one model's shapes is that model (a file need not hold every projection)
    assert TL.match_presets("tl1", [(1536, 1536)]).label == "bitnet_b1_58-large"


def test_every_preset_is_legal_and_its_adaptations_are_said():
    for p in TL.MODEL_PRESETS:
        for (M, K), t in p.tilings.items():
            TL.validate_tiling(p.layout, M, K, t)
        assert p.source.startswith("microsoft/BitNet:")
    two_b = TL.named_preset("tl1", "BitNet-b1.58-2B-4T")
    assert any("BM 320 -> 288" in n and "6912 % 320 = 192" in n for n in two_b.notes)
    assert any("attn_k/v (640, 2560)" in n for n in two_b.notes)
    assert TL.named_preset("tl2", "bitnet_b1_58-3b").notes == ()  # names are case-insensitive
    assert "preset_kernels/Llama3-8B-1.58-100B-tokens/kernel_config_tl1.ini" in TL.named_preset(
        "tl1", "Llama3-8B-1.58-100B-tokens:pretuned").source


def test_ambiguous_shapes_are_refused_naming_each_candidate_and_its_tiling():
    with pytest.raises(CodecError) as e:
        TL.match_presets("tl1", [(4096, 4096), (1024, 4096)])
    msg = str(e.value)
    assert "Llama3-8B-1.58-100B-tokens ((1024, 4096) 256,128,32; (4096, 4096) 128,64,64)" in msg
    assert "Llama3-8B-1.58-100B-tokens:pretuned ((1024, 4096) 128,64,64; (4096, 4096) 128,64,32)" in msg
    assert "--tl-tiling NAME" in msg and "\n" not in msg
    # TL2 has no pretuned variant that differs: the same shapes are not ambiguous there
    assert TL.match_presets("tl2", [(4096, 4096), (1024, 4096)]).label == "Llama3-8B-1.58-100B-tokens"


def test_unknown_shapes_are_refused_with_tilings_legal_for_all_of_them():
    shapes = [(256, 256), (128, 256), (768, 256), (256, 768)]  # the tiny layout
    for layout in ("tl1", "tl2"):
        with pytest.raises(CodecError) as e:
            TL.match_presets(layout, shapes)
        msg = str(e.value)
        assert "(128, 256), (256, 256), (256, 768), (768, 256) match no bitnet.cpp preset" in msg
        assert "Falcon-E-1B" in msg and "--tl-tiling BM,BK,bm" in msg
        listed = re.search(r"legal for every shape: ([\d,; ]+)\)", msg).group(1).split("; ")
        assert len(listed) == 3
        for text in listed:
            t = TLTiling(*(int(v) for v in text.split(",")))
            for M, K in shapes:
                TL.validate_tiling(layout, M, K, t)  # every candidate listed really fits every shape
    # part of the shapes known: the message says whose presets they are in
    with pytest.raises(CodecError, match=r"some shapes are in the presets of bitnet_b1_58-large.*no single tiling"):
        TL.match_presets("tl1", [(1536, 1536), (100, 1536)])


def test_parse_tl_tiling():
    assert TL.parse_tl_tiling(None) is None
    assert TL.parse_tl_tiling("256,64,32") == TLTiling(256, 64, 32)
    assert TL.parse_tl_tiling(" 256/64/32 ") == TLTiling(256, 64, 32)
    assert TL.parse_tl_tiling(TLTiling(1, 2, 3)) == TLTiling(1, 2, 3)  # legality is checked per shape, later
    assert TL.parse_tl_tiling("bitnet-b1.58-2b-4t") == "BitNet-b1.58-2B-4T"
    assert TL.parse_tl_tiling({(32, 256): "32,96,32", "blk.0.attn_q.weight": TLTiling(32, 96, 32)}) == {
        (32, 256): TLTiling(32, 96, 32), "blk.0.attn_q.weight": TLTiling(32, 96, 32)}
    for bad, words in (
        ("256,64", r"'256,64' is neither 'BM,BK,bm' \(three positive integers.*nor a preset name \(bitnet_b1_58-large"),
        ("256,64,x", r"neither 'BM,BK,bm'"),
        ("0,64,32", r"BM, BK, bm must be positive"),
        (256, r"got int 256"),
        ({(1, 2): 5}, r"tl_tiling\[\(1, 2\)\] must be a TLTiling or 'BM,BK,bm', got 5"),
        ({3: "1,2,3"}, r"keys are \(M, K\) shapes or tensor names, got 3"),
    ):
        with pytest.raises(ConfigError, match=words):
            TL.parse_tl_tiling(bad)
    with pytest.raises(ConfigError, match=r"no tl2 preset named 'nope'; known: bitnet_b1_58-large"):
        TL.named_preset("tl2", "nope")


# ---- the writers' request (convert, dummy) ------------------------------------------------------


def test_writer_tiling_takes_each_request_form():
    M, K = 6912, 2560  # the 2B-4T ffn_gate/up shape
    preset = TL.named_preset("tl2", "BitNet-b1.58-2B-4T").tilings[(M, K)]
    assert TL.writer_tiling("tl2", M, K, "bitnet-b1.58-2b-4t", "blk.0.ffn_up.weight") == preset
    assert TL.writer_tiling("tl2", M, K, None) == TL.default_tiling("tl2", M, K)
    assert TL.writer_tiling("tl2", M, K, "288,96,32") == TLTiling(288, 96, 32)
    by_name = {"blk.0.ffn_up.weight": "288,96,32", (M, K): TLTiling(96, 96, 32)}
    assert TL.writer_tiling("tl2", M, K, by_name, "blk.0.ffn_up.weight") == TLTiling(288, 96, 32)
    assert TL.writer_tiling("tl2", M, K, by_name, "blk.1.ffn_up.weight") == TLTiling(96, 96, 32)


def test_writer_tiling_refusals_name_the_tensor_and_the_rule():
    with pytest.raises(ConfigError, match=r"blk\.0\.ffn_up\.weight \(M, K\) = \(768, 256\): the tl2 preset "
                                          r"BitNet-b1\.58-2B-4T has no tiling for this shape"):
        TL.writer_tiling("tl2", 768, 256, "BitNet-b1.58-2B-4T", "blk.0.ffn_up.weight")
    with pytest.raises(ConfigError, match=r"\(M, K\) = \(6912, 2560\): .*6912 % 320"):
        TL.writer_tiling("tl2", 6912, 2560, "320,96,32")  # 6912 % 320 != 0
    with pytest.raises(ConfigError, match="neither 'BM,BK,bm'"):
        TL.writer_tiling("tl2", 6912, 2560, "no-such-model")
