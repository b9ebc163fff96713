"""Hostile metadata (issue 18, items 14 and 15): counts that lie about the tensors, values of the
wrong type or out of range, and context lengths no cache can hold. Each is refused at load with
one line naming the key and the value it got — never a hang in the first forward, an
OverflowError / ValueError / OSError from deep inside, or a silently wrapped size — and
``inspect`` does not print such a file as a valid model.

The files are the real bitnet.cpp I2_S file (tests/data/real-files, arch ``bitnet``: 2 layers,
vocab 1000) rewritten with one metadata value changed.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

import bitnet_lab as bl
from bitnet_lab.config import ModelConfig
from bitnet_lab.errors import BitnetLabError, ConfigError
from bitnet_lab.formats.ggml_types import VT
from bitnet_lab.formats.gguf import GGUFFile
from bitnet_lab.formats.gguf_writer import write_gguf
from bitnet_lab.tools.inspect import inspect_model

REAL = Path(__file__).resolve().parents[1] / "data" / "real-files"
I2S = REAL / "bitnet-i2_s.gguf"


def rewrite(dst: Path, changes: dict) -> Path:
    """The real I2_S file with metadata ``changes`` (key -> (value, GGUF type))."""
    f = GGUFFile(I2S)
    md, types = dict(f.metadata), dict(f.metadata_types)
    for k, (v, t) in changes.items():
        md[k], types[k] = v, t
    return write_gguf(dst, md, f.tensors(), metadata_types=types)


def refused(path: Path, key: str) -> str:
    """Load must refuse with one line naming ``key``; inspect opens the file but shows no config."""
    with pytest.raises(BitnetLabError) as ei:
        bl.load(path)
    msg = str(ei.value)
    assert key in msg and "\n" not in msg, msg
    rep = inspect_model(path, stats=False, progress=False)
    assert rep.config is None and key in rep.config_error
    assert "not a model bitnet_lab runs" in rep.to_text()
    return msg


# ---- item 14: counts against the tensors present ------------------------------------------------


@pytest.mark.parametrize("value, vtype, shown", [
    (100_000, VT.UINT32, "100000"), (4_000_000_000, VT.UINT32, "4000000000"),
    (3.4e38, VT.FLOAT32, "3.3999999521443642e+38"), (1, VT.UINT32, "1"),
])
def test_block_count_checked_against_the_tensors(tmp_path, value, vtype, shown):
    msg = refused(rewrite(tmp_path / "m.gguf", {"bitnet.block_count": (value, vtype)}), "bitnet.block_count")
    assert shown in msg


def test_dimensions_checked_against_the_tensors(tmp_path):
    msg = refused(rewrite(tmp_path / "m.gguf", {"bitnet.vocab_size": (500, VT.UINT32)}), "token_embd.weight")
    assert "bitnet.vocab_size" in msg and "(500, 256)" in msg
    msg = refused(rewrite(tmp_path / "m2.gguf", {"bitnet.feed_forward_length": (1024, VT.UINT32)}), "ffn_")


def test_the_unchanged_file_still_loads_and_inspects():
    with bl.load(I2S) as m:
        assert m.config.n_layers == 2 and m.logits([1, 2]).shape == (2, 1000)
    assert inspect_model(I2S, stats=False, progress=False).config is not None


# ---- item 15: wrong types and values -----------------------------------------------------------

ARR = (VT.ARRAY, VT.INT32)
BAD_VALUES = [
    ("bitnet.context_length", [4096, 1], ARR, "a list of 2 item(s)"),
    ("bitnet.feed_forward_length", "gelu", VT.STRING, "'gelu'"),
    ("bitnet.rope.freq_base", math.inf, VT.FLOAT32, "inf"),
    ("bitnet.rope.freq_base", math.nan, VT.FLOAT32, "nan"),
    ("bitnet.rope.freq_base", "fast", VT.STRING, "'fast'"),
    ("bitnet.attention.layer_norm_rms_epsilon", math.nan, VT.FLOAT32, "nan"),
    ("bitnet.attention.layer_norm_rms_epsilon", 0.0, VT.FLOAT32, "0.0"),
    ("bitnet.attention.head_count", -4, VT.INT32, "-4"),
    ("bitnet.attention.head_count_kv", [2], ARR, "a list of 1 item(s)"),
    ("bitnet.embedding_length", 0, VT.UINT32, "0"),
    ("bitnet.embedding_length", math.inf, VT.FLOAT32, "inf"),
    ("bitnet.context_length", 2**31, VT.UINT64, "2147483648"),
    ("bitnet.context_length", 2**64 - 1, VT.UINT64, "18446744073709551615"),
    ("bitnet.context_length", 3.4e38, VT.FLOAT32, "3.3999999521443642e+38"),
    ("bitnet.context_length", -1, VT.INT32, "-1"),
    ("bitnet.rope.dimension_count", 0, VT.UINT32, "0"),
    ("bitnet.rope.dimension_count", -2, VT.INT32, "-2"),
    ("bitnet.vocab_size", 2.5, VT.FLOAT32, "2.5"),
    ("tokenizer.ggml.eos_token_id", math.inf, VT.FLOAT32, "inf"),
    ("tokenizer.ggml.bos_token_id", "one", VT.STRING, "'one'"),
]


@pytest.mark.parametrize("key, value, vtype, shown", BAD_VALUES, ids=[f"{k}={s}" for k, _, _, s in BAD_VALUES])
def test_metadata_of_the_wrong_type_or_value_names_key_and_value(tmp_path, key, value, vtype, shown):
    msg = refused(rewrite(tmp_path / "m.gguf", {key: (value, vtype)}), key)
    assert shown in msg, msg
    assert isinstance(ConfigError(msg), BitnetLabError)


HF_BAD = [
    ("max_position_embeddings", 2**31, "2147483648"),
    ("max_position_embeddings", 2**64, "18446744073709551616"),
    ("max_position_embeddings", 3.4e38, "3.4e+38"),
    ("max_position_embeddings", "4096", "'4096'"),
    ("max_position_embeddings", [4096], "a list of 1 item(s)"),
    ("num_hidden_layers", 1e300, "1e+300"),
    ("hidden_size", math.inf, "inf"),
    ("rope_theta", math.nan, "nan"),
    ("rms_norm_eps", -1.0, "-1.0"),
    ("head_dim", -64, "-64"),
    ("num_key_value_heads", "two", "'two'"),
    ("hidden_act", ["silu"], "a list of 1 item(s)"),
]


@pytest.mark.parametrize("key, value, shown", HF_BAD, ids=[f"{k}={s}" for k, _, s in HF_BAD])
def test_config_json_of_the_wrong_type_or_value_names_key_and_value(key, value, shown):
    cfg = json.loads((REAL / "hf" / "config.json").read_text())
    cfg[key] = value
    with pytest.raises(ConfigError) as ei:
        ModelConfig.from_hf(cfg)
    msg = str(ei.value)
    assert key in msg and shown in msg and "\n" not in msg, msg


def test_config_json_huge_context_refused_at_load(tmp_path):
    d = tmp_path / "hf"
    shutil.copytree(REAL / "hf", d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["max_position_embeddings"] = 2**63
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match=r"'max_position_embeddings' is 9223372036854775808; expected an integer"):
        bl.load(d)


# ---- item 15: a context no KV cache can hold -----------------------------------------------------


@pytest.mark.parametrize("backend", ["native", "reference"])
def test_huge_context_length_is_refused_clearly_before_the_kv_cache(tmp_path, backend):
    """2^31 - 1 is a valid count, but its KV cache (2 KiB a position here) fits no machine: the
    default cache of generate() is refused with the numbers and the way out, not an OSError (nor,
    on the reference, RoPE tables for 2^31 positions built at load)."""
    p = rewrite(tmp_path / "m.gguf", {"bitnet.context_length": (2**31 - 1, VT.UINT32)})
    with bl.load(p, backend=backend) as m:
        assert m.config.context == 2**31 - 1
        with pytest.raises(ConfigError, match=r"KV cache of n_ctx 2147483647 positions needs 4096 GiB.*-c\)"):
            list(m.generate("hello", n=2, seed=0))
        with pytest.raises(ConfigError, match="n_ctx 4294967296"):  # beyond any position index
            m.runner.new_cache(2**32)
        ev = list(m.generate("hello", n=2, seed=0, n_ctx=64))  # a context that fits: fine
        assert ev


def test_large_context_that_fits_costs_nothing_until_used(tmp_path):
    """A 2^20-position cache (2 GiB reserved) is committed page by page and its RoPE rows are
    built as positions fill up: generating a few tokens does not touch the whole cache."""
    import resource

    p = rewrite(tmp_path / "m.gguf", {"bitnet.context_length": (2**20, VT.UINT32)})
    with bl.load(p) as m:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out = [e for e in m.generate("hello", n=3, seed=0, ignore_eos=True) if getattr(e, "token_id", None) is not None]
        grew_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        assert len(out) == 3 and grew_kib < 200_000, grew_kib


@pytest.mark.parametrize("key, value, vtype", [
    ("tokenizer.ggml.tokens", 4_000_000_000, VT.UINT32), ("tokenizer.ggml.tokens", False, VT.BOOL),
    ("tokenizer.ggml.tokens", math.nan, VT.FLOAT32),
])
def test_tokenizer_arrays_of_the_wrong_type_name_the_key(tmp_path, key, value, vtype):
    """Found by scripts/fuzz_models.py: a scalar where the vocabulary's array belongs was a bare
    TypeError ("'int' object is not iterable") at the first generate."""
    p = rewrite(tmp_path / "m.gguf", {key: (value, vtype)})
    with bl.load(p) as m:
        with pytest.raises(ConfigError, match=rf"{key} is \w+ .*; expected an array of strings"):
            list(m.generate("hello", n=1))
