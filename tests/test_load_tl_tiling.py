"""bl.load(tl_tiling=...): a "BM,BK,bm" string, a TLTiling, a preset name or a mapping, for TL1/TL2
files that do not record their tiling; bad values are one clear error (bitnet_lab/model.py).

The files are the tiny layout (shapes no preset knows) written with one tiling for every shape,
once with our bitnet_lab.tl_tiling key and once without it (dummy --no-tiling-key).
"""

from __future__ import annotations

import numpy as np
import pytest

import bitnet_lab
from bitnet_lab.errors import ConfigError, GGUFError
from bitnet_lab.quant.tiling import TLTiling
from bitnet_lab.tools.dummy import generate_dummy

# one tiling legal for every tiny shape: (256, 256), (128, 256), (768, 256), (256, 768)
TILING = {"tl1": "128,64,32", "tl2": "128,96,32"}
IDS = [1, 7, 300, 42]


@pytest.fixture(scope="module")
def tiny_tl(tmp_path_factory) -> dict[tuple[str, bool], object]:
    d = tmp_path_factory.mktemp("tiny-tl")
    return {(ot, key): generate_dummy("tiny", d / f"tiny-{ot}-{key}.gguf", outtype=ot, tl_tiling=TILING[ot],
                                      tiling_key=key, progress=False)
            for ot in ("tl1", "tl2") for key in (True, False)}


@pytest.mark.parametrize("layout", ["tl1", "tl2"])
def test_a_string_tiling_reads_a_file_without_the_key(tiny_tl, layout):
    keyed = np.asarray(bitnet_lab.load(tiny_tl[(layout, True)]).runner.logits(IDS))
    text = TILING[layout]
    for spec in (text, " " + text.replace(",", "/") + " ", TLTiling(*(int(v) for v in text.split(",")))):
        m = bitnet_lab.load(tiny_tl[(layout, False)], tl_tiling=spec)
        np.testing.assert_array_equal(np.asarray(m.runner.logits(IDS)), keyed)


@pytest.mark.parametrize("layout", ["tl1", "tl2"])
def test_without_a_tiling_the_file_is_refused_with_candidates(tiny_tl, layout):
    with pytest.raises(GGUFError) as e:
        bitnet_lab.load(tiny_tl[(layout, False)])
    msg = str(e.value)
    assert f"{layout}: the tensor shapes (M, K) (128, 256), (256, 256), (256, 768), (768, 256) match no bitnet.cpp preset" in msg
    assert "--tl-tiling BM,BK,bm / load(tl_tiling='BM,BK,bm')" in msg and "legal for every shape:" in msg


def test_a_legal_but_wrong_tiling_reads_other_weights(tiny_tl):
    """Why unknown shapes are refused rather than guessed: another legal tiling reads the same
    bytes as different weights, without any error."""
    keyed = np.asarray(bitnet_lab.load(tiny_tl[("tl1", True)]).runner.logits(IDS))
    wrong = np.asarray(bitnet_lab.load(tiny_tl[("tl1", False)], tl_tiling="128,128,32").runner.logits(IDS))
    assert not np.array_equal(wrong, keyed)


def test_bad_tiling_values_are_one_clear_error(tiny_tl, tiny_gguf, tmp_path):
    path = tiny_tl[("tl1", False)]
    with pytest.raises(ConfigError, match=r"tl_tiling '256,64' is neither 'BM,BK,bm' \(three positive integers"):
        bitnet_lab.load(path, tl_tiling="256,64")
    with pytest.raises(ConfigError, match=r"tl_tiling must be None, a TLTiling, 'BM,BK,bm'.*got list"):
        bitnet_lab.load(path, tl_tiling=[256, 64, 32])
    with pytest.raises(ConfigError, match="neither"):  # checked before the path is even looked at
        bitnet_lab.load(tmp_path / "missing.gguf", tl_tiling="x")
    # legal as three numbers, illegal for the file's shapes: names the tensor, the source and the rule
    with pytest.raises(GGUFError, match=r"\(128, 256\): tiling from given .*M % BM == 0 fails: 128 % 256"):
        bitnet_lab.load(path, tl_tiling="256,64,32")
    with pytest.raises(ConfigError, match=r"is for TL1/TL2 files; tiny.gguf has no TL1/TL2 tensor"):
        bitnet_lab.load(tiny_gguf, tl_tiling="256,64,32")


def test_a_tiling_for_a_hugging_face_checkpoint_is_refused(tmp_path):
    from _hf_models import random_model, tiny_config
    from bitnet_lab.formats.hf import write_hf_checkpoint

    cfg = tiny_config("bitnet-b1.58")
    write_hf_checkpoint(tmp_path, cfg, random_model(cfg), convention="bitlinear")
    assert bitnet_lab.load(tmp_path, backend="reference").config.hidden == cfg.hidden
    with pytest.raises(ConfigError, match=r"is for TL1/TL2 GGUF files, not the Hugging Face checkpoint"):
        bitnet_lab.load(tmp_path, tl_tiling="256,64,32")
