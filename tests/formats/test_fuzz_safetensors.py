"""Mutation fuzzing of the safetensors reader: whatever the bytes of model.safetensors and
config.json, read_hf_checkpoint either succeeds or raises a BitnetLabError — never another
exception, a hang or an unbounded allocation.

Two small valid checkpoints are mutated (packed uint8 + weight_scale, and latent float32):
raw byte overwrites, truncation, insertion and deletion, a rewritten header-length field,
NaN / inf / extreme float32 values planted in the data,
structured edits of the JSON header (dtype, shape, offsets, extra and missing entries) and of
config.json (wrong types, zeros, huge values, deleted keys). 10,000 cases, derandomised.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from _hf_models import random_model, tiny_config
from bitnet_lab.errors import BitnetLabError
from bitnet_lab.formats.hf import read_hf_checkpoint, write_hf_checkpoint
from bitnet_lab.tensors import TernaryWeight

pytestmark = pytest.mark.fuzz

N_CASES = 10_000


def _base(tmp_path_factory, convention):
    d = tmp_path_factory.mktemp(f"base-{convention}")
    cfg = tiny_config()
    write_hf_checkpoint(d, cfg, random_model(cfg, seed=7), convention=convention)
    return (d / "model.safetensors").read_bytes(), json.loads((d / "config.json").read_text())


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    return [_base(tmp_path_factory, c) for c in ("autobitlinear", "latent")]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A tmpfs folder when the machine has one: 20,000 small rewrites stay off the disk."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        with tempfile.TemporaryDirectory(dir=shm, prefix="bitnet-lab-fuzz-") as d:
            yield Path(d)
    else:
        yield tmp_path_factory.mktemp("fuzz")


# ---- mutations -------------------------------------------------------------------------------------

json_scalar = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, 2, 3, 4, 7, 8, 16, 255, 256, 2**31, 2**63 - 1, -1]),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.sampled_from(["F32", "F16", "BF16", "U8", "I8", "F64", "BOOL", "F4", "Q4", "", "silu", "relu2",
                     "bitlinear", "autobitlinear", "bitnet", "llama"]),
)
json_value = st.recursive(json_scalar, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                              st.dictionaries(st.text(max_size=6), kids, max_size=3)),
                          max_leaves=6)

byte_edits = st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=8)
CONFIG_KEYS = ["hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
               "num_key_value_heads", "vocab_size", "max_position_embeddings", "rms_norm_eps", "rope_theta",
               "hidden_act", "tie_word_embeddings", "architectures", "model_type", "head_dim",
               "quantization_config", "bos_token_id", "eos_token_id"]

mutation = st.one_of(
    st.tuples(st.just("bytes"), byte_edits),
    st.tuples(st.just("truncate"), st.floats(0, 1, exclude_max=True)),
    st.tuples(st.just("insert"), st.floats(0, 1), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("delete"), st.floats(0, 1, exclude_max=True), st.integers(1, 64)),
    st.tuples(st.just("hlen"), st.integers(0, 2**64 - 1)),
    st.tuples(st.just("entry"), st.integers(0, 99), st.sampled_from(["dtype", "shape", "data_offsets", None]),
              json_value),
    st.tuples(st.just("header_key"), st.text(max_size=40), json_value),
    st.tuples(st.just("config"), st.sampled_from(CONFIG_KEYS), json_value),
    st.tuples(st.just("config_del"), st.sampled_from(CONFIG_KEYS)),
    st.tuples(st.just("scale_bytes"), st.binary(min_size=4, max_size=4)),
    st.tuples(st.just("special_float"), st.floats(0, 1, exclude_max=True),
              st.sampled_from([np.nan, np.inf, -np.inf, 3.4e38, -3.4e38, 1e-45, -0.0, 1e-30])),
)


def _split(data: bytes):
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def _join(header: dict, body: bytes) -> bytes:
    hb = json.dumps(header).encode()
    hb += b" " * (-len(hb) % 8)
    return struct.pack("<Q", len(hb)) + hb + body


def apply(mut, data: bytes, cfg: dict) -> tuple[bytes, dict]:
    kind = mut[0]
    cfg = dict(cfg)
    if kind == "bytes":
        b = bytearray(data)
        for pos, val in mut[1]:
            b[int(pos * len(b))] = val
        return bytes(b), cfg
    if kind == "truncate":
        return data[: int(mut[1] * len(data))], cfg
    if kind == "insert":
        i = int(mut[1] * len(data))
        return data[:i] + mut[2] + data[i:], cfg
    if kind == "delete":
        i = int(mut[1] * len(data))
        return data[:i] + data[i + mut[2] :], cfg
    if kind == "hlen":
        return struct.pack("<Q", mut[1]) + data[8:], cfg
    header, body = _split(data)
    if kind == "entry":
        names = sorted(k for k in header if k != "__metadata__")
        name = names[mut[1] % len(names)]
        if mut[2] is None:
            del header[name]
        else:
            header[name] = dict(header[name], **{mut[2]: mut[3]})
        return _join(header, body), cfg
    if kind == "header_key":
        header[mut[1]] = mut[2]
        return _join(header, body), cfg
    if kind == "config":
        cfg[mut[1]] = mut[2]
        return data, cfg
    if kind == "config_del":
        cfg.pop(mut[1], None)
        return data, cfg
    if kind == "special_float":  # a NaN / inf / extreme float32 at an aligned spot of the data
        i = int(mut[1] * (len(body) // 4)) * 4
        return _join(header, body[:i] + np.float32(mut[2]).tobytes() + body[i + 4 :]), cfg
    if kind == "scale_bytes":  # overwrite the first weight_scale (or any F32 scalar) in place
        for name, e in sorted(header.items()):
            if name.endswith("weight_scale"):
                b0 = e["data_offsets"][0]
                return _join(header, body[:b0] + mut[1] + body[b0 + 4 :]), cfg
        return data, cfg
    raise AssertionError(kind)


_last_config: dict = {}


def _touch(tensors) -> None:
    """Decode everything a successful read handed out (memory-mapped views included)."""
    for w in tensors.values():
        if isinstance(w, TernaryWeight):
            t = w.ternary()
            assert t.dtype == np.int8 and t.shape == w.shape
            assert t.size == 0 or (t.min() >= -1 and t.max() <= 1)
            assert np.isfinite(w.scale)
        else:
            assert w.to_numpy().shape == w.shape


@settings(max_examples=N_CASES, deadline=None, database=None, derandomize=True,
          phases=[Phase.generate, Phase.shrink], suppress_health_check=list(HealthCheck))
@given(which=st.integers(0, 1), mut=mutation)
def _fuzz_case(bases, workdir, which, mut):
    data, cfg = bases[which]
    data, cfg = apply(mut, data, cfg)
    (workdir / "model.safetensors").write_bytes(data)
    text = json.dumps(cfg)
    if _last_config.get(workdir) != text:  # config.json is rewritten only when it changes
        (workdir / "config.json").write_text(text)
        _last_config[workdir] = text
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, tensors, _ = read_hf_checkpoint(workdir)
    except BitnetLabError:
        return
    _touch(tensors)


def test_fuzz_safetensors_reader(bases, workdir):
    # Sanity: the unmutated bases read (so the fuzzer starts from valid files).
    for data, cfg in bases:
        (workdir / "model.safetensors").write_bytes(data)
        (workdir / "config.json").write_text(json.dumps(cfg))
        _touch(read_hf_checkpoint(workdir)[1])
    _last_config.clear()
    _fuzz_case(bases, workdir)
