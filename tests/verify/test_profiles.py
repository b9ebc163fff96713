"""`bitnet-lab verify --numerics A --against B` (bitnet_lab.verify.profiles): one model under two
numerics profiles, per layer and for the logits.

- ``logit_agreement`` on hand-made logits: the top-1 agreement counts ties apart, the KL and the
  differences are the textbook values;
- the default model under llama.cpp against bitnet on the reference and the native backend: every
  layer moves, the logits move, and the same profile against itself is refused; the per-layer
  figures are the captures' own differences;
- the CLI: text and JSON output, exit status 0 (a measurement), -f FILE, flags that only apply
  to one mode are refused with one line.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from bitnet_lab import cli
from bitnet_lab.errors import ConfigError
from bitnet_lab.tools.default_model import default_model_path

pytest.importorskip("jax")
from bitnet_lab.verify.profiles import compare_profiles, logit_agreement  # noqa: E402

TEXT = "def main():\n    return 0\n"


def test_logit_agreement_by_hand():
    b = np.array([[4.0, 1.0, 0.0],      # clear winner 0
                  [2.0, 2.0005, 0.0],   # a tie: margin 5e-4 < 1e-3 * 2.0005
                  [0.0, 3.0, 1.0]], np.float32)
    a = b.copy()
    a[0] = [1.0, 4.0, 0.0]              # row 0: top-1 moves -> disagreement
    a[1] = [2.001, 2.0, 0.0]            # the tie flips: counted apart
    g = logit_agreement(a, b, tie_rel=1e-3)
    assert (g.rows, g.decided, g.ties, g.top1_agree, g.ties_agree) == (3, 2, 1, 1, 0)
    assert g.top1_rate == 0.5
    assert g.max_abs == pytest.approx(3.0) and g.max_rel == pytest.approx(3.0 / 4.0)
    lb = b[0] - np.log(np.exp(b[0].astype(np.float64)).sum())
    la = a[0] - np.log(np.exp(a[0].astype(np.float64)).sum())
    assert g.per_row["kl"][0] == pytest.approx(float((np.exp(lb) * (lb - la)).sum()), rel=1e-9)
    assert g.per_row["kl"][2] == 0.0
    assert logit_agreement(b, b).kl_mean == 0.0 and logit_agreement(b, b).max_abs == 0.0
    with pytest.raises(ConfigError, match="one shape"):
        logit_agreement(a[:2], b)


@pytest.fixture(scope="module")
def default_path():
    return default_model_path()


@pytest.mark.parametrize("backend", ["reference", "native"])
def test_llama_cpp_against_bitnet_on_the_default_model(default_path, backend):
    r = compare_profiles(default_path, numerics="llama.cpp", against="bitnet", prompt=TEXT, backend=backend)
    assert r.tokens > 5 and len(r.layers) == 6
    # llama.cpp's arithmetic moves every layer of the model, and the logits
    assert all(x.max_abs > 0 and x.mean_abs > 0 and x.rel < 1 for x in r.layers)
    assert 0 < r.logits.mean_abs <= r.logits.max_abs and r.logits.kl_mean > 0
    assert r.logits.decided + r.logits.ties == r.tokens
    assert r.settings["llama.cpp"]["activations"].startswith("Q8_K")
    assert r.settings["bitnet"]["activations"].startswith("per-token")
    text = r.to_text()
    assert "layer 5" in text and "logits" in text and "top-1 agreement" in text
    d = json.loads(r.to_json())
    assert d["numerics"] == "llama.cpp" and len(d["logits"]["per_row"]["kl"]) == r.tokens
    assert "<table>" in r._repr_html_()


def test_profile_against_itself_is_refused(default_path):
    with pytest.raises(ConfigError, match="both 'bitnet': nothing to compare"):
        compare_profiles(default_path, numerics="bitnet", against="bitnet")
    with pytest.raises(ConfigError, match="numerics 'ggml' is not one of"):
        compare_profiles(default_path, numerics="ggml", against="bitnet")


def test_cli_against(default_path, tmp_path, capsys):
    f = tmp_path / "text.txt"
    f.write_text(TEXT)
    rc = cli.main(["verify", "-m", str(default_path), "--numerics", "llama.cpp", "--against", "bitnet",
                   "-f", str(f), "--json", "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0
    d = json.loads(out)
    assert d["against"] == "bitnet" and d["backend"] == "native" and len(d["layers"]) == 6
    rc = cli.main(["verify", "-m", str(default_path), "--numerics", "llama.cpp", "--against", "bitnet",
                   "-p", TEXT, "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0 and "residual stream after each layer" in out and "KL(B‖A)" in out


def test_cli_against_flag_errors(default_path, capsys):
    assert cli.main(["verify", "-m", str(default_path), "--against", "bitnet", "--kv-dtype", "f16"]) == 1
    assert "--kv-dtype set one backend's options" in capsys.readouterr().err
    assert cli.main(["verify", "-m", str(default_path), "-f", "x.txt"]) == 1
    assert "-f/--file apply to --against" in capsys.readouterr().err
    assert cli.main(["verify", "--against", "gguf"]) == 2
    assert cli.main(["verify", "-m", str(default_path), "--against", "llama.cpp", "-f", "/nonexistent.txt"]) == 1
    assert "no such file: /nonexistent.txt" in capsys.readouterr().err


def test_verify_tiers_under_the_llama_cpp_profile(default_path):
    """``verify --numerics llama.cpp``: both backends compute llama.cpp's arithmetic and every tier
    holds; T1 then checks the Q8_K quantiser and the per-block products the engine runs."""
    from bitnet_lab.verify import verify

    r = verify(default_path, n=2, numerics="llama.cpp", layers=[0], progress=False)
    assert r.passed, r.summary()
    ops = {c.op for c in r.kernel.checks}
    assert "quantize_q8_k" in ops and any(op.endswith("_bgemv") for op in ops) and any(op.endswith("_bgemm") for op in ops)
    assert "Q8_K" in r.bitlinear.claim
    assert "profile llama.cpp" in r.to_text() and r.numerics["kv_dtype"] == "f16"
