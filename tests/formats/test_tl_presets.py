"""TL1/TL2 files without our bitnet_lab.tl_tiling key, as bitnet.cpp writes them: the reader
takes bitnet.cpp's preset of the model the file's shapes identify (GGUFFile.tl_tilings, quant
tiling.match_presets), says where each tiling came from, and refuses unknown or ambiguous shapes
naming the candidates (docs/kernels.md#56-presets-per-model).

The end-to-end files are the 2B-4T's shapes (hidden 2560, ffn 6912, k/v 640: the shapes that key
its preset) cut to one layer and Llama-2's 32000-token vocabulary, written by the dummy generator
with ``tiling_key=False`` (``bitnet-lab dummy --no-tiling-key``).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import bitnet_lab
from bitnet_lab.errors import GGUFError
from bitnet_lab.formats.gguf import TILING_FILE_KEY, TILING_GIVEN, TILING_PRESET, GGUFFile
from bitnet_lab.formats.gguf_writer import GGUFWriter
from bitnet_lab.quant import packing
from bitnet_lab.quant import tiling as TL
from bitnet_lab.quant.tiling import TLTiling
from bitnet_lab.tools import dummy, layouts

PROJECTIONS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


def small_2b4t() -> layouts.Layout:
    lay = layouts.get_layout("2B-4T")
    cfg = lay.config.replace(n_layers=1, vocab=32000, bos_id=1, eos_id=2, eot_id=None)
    return dataclasses.replace(lay, name="2B-4T-1L", config=cfg, vocab_source=layouts.VOCAB_LLAMA2, chat_template=None)


@pytest.fixture(scope="module")
def keyless_2b4t(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("keyless")
    return {ot: dummy.generate_dummy(small_2b4t(), d / f"2b4t-1l-{ot}.gguf", outtype=ot, tiling_key=False, progress=False)
            for ot in ("tl1", "tl2")}


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["tl1", "tl2"])
def test_2b4t_file_without_the_key_reads_by_preset_and_runs_natively(keyless_2b4t, layout):
    path = keyless_2b4t[layout]
    f = GGUFFile(path)
    assert "bitnet_lab.tl_tiling" not in f.metadata
    choices = f.tl_tilings()
    assert len(choices) == len(PROJECTIONS)
    want = TL.named_preset(layout, "BitNet-b1.58-2B-4T").tilings
    for name, c in choices.items():
        assert (c.source, c.detail) == (TILING_PRESET, "BitNet-b1.58-2B-4T")
        assert c.tiling == want[f.tensor_info(name).shape]
    # the bytes decode to the very codes the generator drew: a wrong tiling would scramble them
    lay = small_2b4t()
    for p in PROJECTIONS:
        name = f"blk.0.{p}.weight"
        M, K = f.tensor_info(name).shape
        rng = dummy.tensor_rng(0, name)
        dummy.random_gamma(rng, lay.gamma_range)  # the first draw of the tensor's stream
        np.testing.assert_array_equal(f.tensor(name).ternary(), dummy.random_ternary(rng, M, K))
    f.close()
    m = bitnet_lab.load(path)  # the native engine, the preset tilings (BM 288 for ffn_gate/up included)
    assert m.backend == "native"
    logits = np.asarray(m.runner.logits([1, 5, 9]))
    assert logits.shape == (3, 32000) and np.isfinite(logits).all()


def _one_tensor_file(tmp_path, name: str, layout: str, M: int, K: int, tiling: TLTiling, *, key: bool):
    t = np.random.default_rng(M * 7 + K).integers(-1, 2, size=(M, K), dtype=np.int8)
    w = GGUFWriter(tmp_path / f"{name}-{layout}-{M}x{K}-{key}.gguf")
    w.add_metadata("general.architecture", "bitnet")
    w.add_tensor(name, layout.upper(), (M, K), lambda: packing.pack(layout, t, tiling=tiling), tl_scale=0.5,
                 tiling=tiling if key else None)
    return w.write(), t


def test_tl_tilings_say_where_each_tiling_came_from(tmp_path):
    large_attn = TLTiling(128, 64, 64)  # bitnet_b1_58-large's (1536, 1536) TL1 preset
    path, t = _one_tensor_file(tmp_path, "q", "tl1", 1536, 1536, large_attn, key=False)
    c = GGUFFile(path).tl_tilings()["q"]
    assert (c.tiling, c.source, c.detail) == (large_attn, TILING_PRESET, "bitnet_b1_58-large")
    assert c.describe() == "128,64,64 (preset: bitnet_b1_58-large)"
    c = GGUFFile(path, tl_tiling="128,64,64").tl_tilings()["q"]
    assert (c.source, c.detail) == (TILING_GIVEN, "tl_tiling (--tl-tiling)")
    c = GGUFFile(path, tl_tiling="bitnet_b1_58-large").tl_tilings()["q"]
    assert (c.tiling, c.source, c.detail) == (large_attn, TILING_GIVEN, "preset bitnet_b1_58-large (--tl-tiling)")
    keyed, _ = _one_tensor_file(tmp_path, "q", "tl1", 1536, 1536, TLTiling(256, 128, 32), key=True)
    f = GGUFFile(keyed)
    c = f.tl_tilings()["q"]  # the file's key wins over the preset of its shape
    assert (c.tiling, c.source) == (TLTiling(256, 128, 32), TILING_FILE_KEY)
    np.testing.assert_array_equal(f.tensor("q").ternary(), t)
    # what the caller gives wins over the key, a preset name too
    c = GGUFFile(keyed, tl_tiling="bitnet_b1_58-large").tl_tilings()["q"]
    assert (c.tiling, c.source) == (large_attn, TILING_GIVEN)
    assert GGUFFile(keyed, tl_tiling=large_attn).tl_tilings()["q"].source == TILING_GIVEN


def test_a_named_preset_without_the_shape_and_a_bad_request_are_refused(tmp_path):
    path, _ = _one_tensor_file(tmp_path, "q", "tl1", 1536, 1536, TLTiling(128, 64, 64), key=False)
    with pytest.raises(GGUFError, match=r"preset 'bitnet_b1_58-3B' has no tl1 tiling for the shapes \(M, K\) \[\(1536, 1536\)\]"):
        GGUFFile(path, tl_tiling="bitnet_b1_58-3B").tensors()
    with pytest.raises(GGUFError, match=r"tensor 'q' \(1536, 1536\): tiling from given .*illegal.*M % BM == 0 fails"):
        GGUFFile(path, tl_tiling="1024,64,64").tensors()
    with pytest.raises(bitnet_lab.errors.ConfigError, match="neither 'BM,BK,bm'"):
        GGUFFile(path, tl_tiling="128x64x64")


def test_ambiguous_shapes_in_a_file_are_refused_and_a_preset_name_resolves_them(tmp_path):
    # Llama3-8B's attention q/o shape, TL1: gen_code says 128,64,64, the pretuned kernels 128,64,32
    pretuned = TL.named_preset("tl1", "Llama3-8B-1.58-100B-tokens:pretuned").tilings[(4096, 4096)]
    path, t = _one_tensor_file(tmp_path, "blk.0.attn_q.weight", "tl1", 4096, 4096, pretuned, key=False)
    with pytest.raises(GGUFError) as e:
        GGUFFile(path).tensors()
    msg = str(e.value)
    assert str(path) in msg and "tile them differently" in msg and "\n" not in msg
    assert "Llama3-8B-1.58-100B-tokens ((4096, 4096) 128,64,64)" in msg
    assert "Llama3-8B-1.58-100B-tokens:pretuned ((4096, 4096) 128,64,32)" in msg
    f = GGUFFile(path, tl_tiling="Llama3-8B-1.58-100B-tokens:pretuned")
    np.testing.assert_array_equal(f.tensor("blk.0.attn_q.weight").ternary(), t)


def test_the_issue_example_string_reads_a_file_written_with_it(tmp_path):
    """tl_tiling="256,64,32" (the issue's example) for a shape no preset lists."""
    path, t = _one_tensor_file(tmp_path, "w", "tl1", 512, 256, TLTiling(256, 64, 32), key=False)
    with pytest.raises(GGUFError, match="match no bitnet.cpp preset"):
        GGUFFile(path).tensors()
    f = GGUFFile(path, tl_tiling="256,64,32")
    assert f.tl_tilings()["w"].tiling == TLTiling(256, 64, 32)
    np.testing.assert_array_equal(f.tensor("w").ternary(), t)
