"""llama-perplexity semantics (bitnet_lab.generate.perplexity) and `bitnet-lab perplexity`."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from bitnet_lab.errors import ConfigError
from bitnet_lab.generate.perplexity import model_perplexity, perplexity, text_tokens, token_nll

TEXT = ("The quick brown fox jumps over the lazy dog. " * 3 + "Pack my box with five dozen liquor jugs. ") * 4


def _nll_rows(logits: np.ndarray, targets) -> np.ndarray:
    """Independent float64 log-softmax NLL (no shared code with the module)."""
    z = logits.astype(np.float64)
    logp = z - np.log(np.sum(np.exp(z - z.max(-1, keepdims=True)), -1, keepdims=True)) - z.max(-1, keepdims=True)
    return -logp[np.arange(len(z)), targets]


class FakeLM:
    """Deterministic logits that depend on the whole prefix; records every call."""

    V = 11

    def __init__(self) -> None:
        self.calls: list[np.ndarray] = []

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids)
        self.calls.append(ids.copy())
        prefix = np.cumsum(ids)  # logits at position p see tokens 0..p
        k = np.arange(self.V)
        return np.sin(0.7 * prefix[:, None] + 1.3 * k[None, :]).astype(np.float32) * 3


def test_token_nll_matches_an_independent_log_softmax():
    rng = np.random.default_rng(0)
    z = (rng.standard_normal((9, 50)) * 5).astype(np.float32)
    t = rng.integers(0, 50, 9)
    np.testing.assert_allclose(token_nll(z, t), _nll_rows(z, t), rtol=1e-12)


def test_chunks_bos_second_half_and_error_estimate():
    lm = FakeLM()
    toks = np.random.default_rng(1).integers(1, FakeLM.V, 70)  # 70 // 16 = 4 chunks, 6 tokens left over
    res = perplexity(lm, toks, 16, bos_id=0)
    assert res.n_chunks == 4 and len(lm.calls) == 4 and res.count == 4 * 7 and len(res.running) == 4
    nll = []
    for i, call in enumerate(list(lm.calls)):
        want = toks[i * 16:(i + 1) * 16].copy()
        assert call[0] == 0 and np.array_equal(call[1:], want[1:])  # BOS replaces the first token
        logits = FakeLM()(call)
        nll.append(_nll_rows(logits[8:15], want[9:16]))  # logits 8..14 predict tokens 9..15
    nll = np.concatenate(nll)
    assert math.isclose(res.ppl, math.exp(nll.mean()), rel_tol=1e-12)
    sd = math.sqrt(np.var(nll) / (len(nll) - 1))  # llama.cpp: sqrt((<v²> - <v>²) / (count - 1))
    assert math.isclose(res.nll_sd, sd, rel_tol=1e-9) and math.isclose(res.ppl_sd, res.ppl * sd, rel_tol=1e-9)
    assert math.isclose(res.running[-1], res.ppl) and str(res).startswith(f"PPL = {res.ppl:.4f} +/- ")
    # running estimate after chunk 1 = perplexity of chunk 1 alone
    assert math.isclose(res.running[0], perplexity(FakeLM(), toks[:32], 16, bos_id=0, n_chunks=1).ppl)


def test_chunk_cap_and_no_bos():
    lm = FakeLM()
    toks = np.arange(1, 65) % FakeLM.V
    res = perplexity(lm, toks, 8, n_chunks=3)
    assert res.n_chunks == 3 and len(lm.calls) == 3
    assert np.array_equal(lm.calls[1], toks[8:16])  # the text's own first token is kept
    with pytest.raises(ConfigError, match="positive"):
        perplexity(lm, toks, 8, n_chunks=0)


def test_too_short_a_text_is_refused_with_the_numbers():
    with pytest.raises(ConfigError, match=r"only 31 tokens.*context of 16 needs at least 32"):
        perplexity(FakeLM(), np.ones(31, int), 16)
    with pytest.raises(ConfigError, match="too short"):
        perplexity(FakeLM(), np.ones(31, int), 2)


def test_model_perplexity_is_exp_of_the_mean_nll_of_model_logits(tiny_gguf):
    import bitnet_lab

    m = bitnet_lab.load(tiny_gguf, backend="reference")
    res = model_perplexity(m, TEXT, 16, n_chunks=3)
    ids, bos = text_tokens(m.tokenizer, TEXT)
    assert bos == m.tokenizer.bos_id and ids[0] == bos  # llama-perplexity tokenises with BOS
    nll = []
    for i in range(3):
        chunk = np.array(ids[i * 16:(i + 1) * 16])
        chunk[0] = bos
        logits = m.logits(chunk)
        nll.append(_nll_rows(logits[8:15], np.array(ids[i * 16 + 9:(i + 1) * 16])))
    nll = np.concatenate(nll)
    assert res.count == 21 and math.isclose(res.ppl, math.exp(nll.mean()), rel_tol=1e-9)


def test_cli_perplexity(tiny_gguf, tmp_path, capsys):
    from bitnet_lab.cli import main

    f = tmp_path / "t.txt"
    f.write_text(TEXT)
    args = ["perplexity", "-m", str(tiny_gguf), "-f", str(f), "-c", "16", "--chunks", "2", "--backend", "reference"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("[1]") and ",[2]" in out and "Final estimate: PPL = " in out
    assert main(args + ["--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n_chunks"] == 2 and res["n_ctx"] == 16 and res["count"] == 14 and len(res["running"]) == 2
    assert f"PPL = {res['ppl']:.4f}" in out
    f.write_text("too short")
    assert main(args) == 1
    assert "needs at least 32" in capsys.readouterr().err
