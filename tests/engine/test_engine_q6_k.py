"""A Q6_K lm_head / embedding in the native engine: read in place from the file (no F32 widening),
llama.cpp's Q6_K × Q8_K dot, bit-identical to the reference and across ISA levels and threads.

The file is bitnet.cpp's own (tests/data/real-files/bitnetcpp2026-i2_s-embd-q6_k.gguf: its 2026
quantiser with ``--token-embedding-type Q6_K``, the token embedding tied to the output head)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import bitnet_lab
from bitnet_lab import kernels
from bitnet_lab.engine import NativeEngine
from bitnet_lab.errors import FormatError
from bitnet_lab.quant import blockquant
from bitnet_lab.quant.q6_k import q6_k_dot_q8_k
from bitnet_lab.quant.q8_k import quantize_q8_k
from bitnet_lab.reference import ReferenceModel
from bitnet_lab.tensors import FloatTensor

REAL_Q6_K = Path(__file__).resolve().parents[1] / "data" / "real-files" / "bitnetcpp2026-i2_s-embd-q6_k.gguf"
PROMPT = [1, 17, 400, 3, 999, 2]


@pytest.fixture(scope="module")
def q6_model():
    with bitnet_lab.load(REAL_Q6_K) as m:
        assert m.tensors["token_embd.weight"].ggml_type == "Q6_K" and m.config.tied_output
        yield m


def decode(model, ids, steps=4):
    """Logits of a prefill of ``ids`` then ``steps`` greedy decode steps (one array)."""
    cache = model.new_cache(32)
    out = [np.asarray(model.forward(ids, cache))]
    for _ in range(steps):
        out.append(np.asarray(model.forward([int(np.argmax(out[-1][-1]))], cache)))
    return np.concatenate(out)


def test_real_file_engine_equals_reference_bit_for_bit(q6_model):
    m = q6_model
    eng = NativeEngine(m.config, m.tensors, threads=2)
    ref = ReferenceModel(m.config, m.tensors, n_ctx_max=32)
    assert eng.numerics["lm_head"] == ref.numerics["lm_head"] == "q6_k"
    assert "lm_head=q6_k" in repr(eng)
    got, want = decode(eng, PROMPT), decode(ref, PROMPT)
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


def test_lm_head_is_the_files_blocks_not_a_widened_copy(q6_model):
    m = q6_model
    eng = NativeEngine(m.config, m.tensors, threads=1)
    V, H = m.config.vocab, m.config.hidden
    rows = eng.lm_head_rows
    assert rows.dtype == np.uint8 and rows.shape == (V, H // 256 * 210)
    assert np.array_equal(rows.reshape(-1), np.asarray(m.tensors["token_embd.weight"].data).reshape(-1).view(np.uint8))


def test_engine_logits_are_the_q6_k_twin_of_its_hidden_state(q6_model):
    """The logits are the numpy twin (quant/q6_k.py) of the engine's own final hidden state; the
    embedding rows are the file's Q6_K rows dequantised (blockquant)."""
    m = q6_model
    eng = NativeEngine(m.config, m.tensors, threads=2)
    logits, caps = eng.logits(PROMPT, capture=True)
    d8, q8 = quantize_q8_k(caps["output_norm"])
    rows = np.asarray(m.tensors["token_embd.weight"].data).reshape(m.config.vocab, -1).view(np.uint8)
    want = q6_k_dot_q8_k(rows, m.config.hidden, d8, q8)
    np.testing.assert_array_equal(logits.view(np.uint32), want.view(np.uint32))
    table = blockquant.dequantize("Q6_K", rows.reshape(-1), (m.config.vocab, m.config.hidden))
    np.testing.assert_array_equal(caps["embd"], table[PROMPT])


def test_isas_and_threads_bit_identical(q6_model):
    m = q6_model
    results = {}
    for threads in (1, 2):
        eng = NativeEngine(m.config, m.tensors, threads=threads)
        for isa in kernels.available_isas():
            with kernels.use_isa(isa):
                results[(threads, isa)] = decode(eng, PROMPT, steps=2)
    first_key, first = next(iter(results.items()))
    for key, val in results.items():
        assert np.array_equal(val.view(np.uint32), first.view(np.uint32)), f"{key} differs from {first_key}"


def test_f32_lm_head_dtype_widens_and_differs(q6_model):
    """lm_head_dtype="f32" asks for the dequantised float dot (the old path): F32 rows, logits
    close to the Q8_K dot's but not equal (quantising the hidden state is visible)."""
    m = q6_model
    q6 = NativeEngine(m.config, m.tensors, threads=2)
    f32 = NativeEngine(m.config, m.tensors, threads=2, lm_head_dtype="f32")
    assert f32.numerics["lm_head"] == "f32" and f32.lm_head_rows.dtype == np.float32
    a, b = q6.logits(PROMPT), f32.logits(PROMPT)
    rel = float(np.max(np.abs(a.astype(np.float64) - b)) / np.max(np.abs(b)))
    assert 1e-6 < rel < 0.05


@pytest.mark.parametrize("backend", [NativeEngine, ReferenceModel])
def test_non_finite_q6_k_block_scale_is_refused(q6_model, backend):
    """A Q6_K block whose fp16 scale is NaN: one FormatError naming the tensor, row and block."""
    m = q6_model
    t = m.tensors["token_embd.weight"]
    data = np.array(np.asarray(t.data).reshape(-1).view(np.uint8))
    row, block = 7, 0
    at = (row * (m.config.hidden // 256) + block) * 210 + 208
    data[at:at + 2] = np.array([np.nan], np.float16).view(np.uint8)
    tensors = dict(m.tensors)
    tensors["token_embd.weight"] = FloatTensor(t.name, t.ggml_type, t.shape, data)
    with pytest.raises(FormatError, match=r"token_embd\.weight.*Q6_K block scales.*\[7, 0\]"):
        backend(m.config, tensors)
