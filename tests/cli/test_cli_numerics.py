"""``--numerics bitnet|llama.cpp`` on run, chat, verify, bench and perplexity (cli.args.add_numerics_flag):
the flag reaches ``bitnet_lab.load`` on every subcommand, the model then runs llama.cpp's arithmetic
(greedy text from the default model differs between the profiles only where llama.cpp's numerics
change a token, so the run is compared with load(numerics=...) itself), and a contradicting option
is one error line."""

from __future__ import annotations

import json

import numpy as np
import pytest

import bitnet_lab
from bitnet_lab.cli import main
from bitnet_lab.tools.default_model import default_model_path


@pytest.mark.parametrize("sub", ["run", "chat", "verify", "bench", "perplexity"])
def test_every_model_subcommand_has_the_flag(sub, capsys):
    assert main([sub, "--help"]) == 0
    out = capsys.readouterr().out
    assert "--numerics {bitnet,llama.cpp}" in out


def test_bad_profile_is_a_usage_error(capsys):
    assert main(["run", "--numerics", "ggml", "-p", "x"]) == 2
    assert "invalid choice: 'ggml'" in capsys.readouterr().err


def test_run_with_llama_cpp_numerics_is_load_with_it(capsys):
    path = default_model_path()
    prompt = "def add(a, b):\n"
    assert main(["run", "-m", str(path), "-p", prompt, "-n", "12", "--temp", "0", "--numerics", "llama.cpp"]) == 0
    out, err = capsys.readouterr()
    assert "numerics=llama.cpp" in err  # the model line names the profile
    m = bitnet_lab.load(path, numerics="llama.cpp")
    want = "".join(ev.text for ev in m.generate(prompt, n=12, temp=0))
    assert out.rstrip("\n").endswith(want.rstrip("\n")[-20:])
    assert m.runner.numerics["activations"].startswith("Q8_K")


def test_perplexity_json_records_the_profile(tmp_path, capsys):
    f = tmp_path / "t.txt"
    f.write_text("import os\nimport sys\n\n\ndef main():\n    return 0\n" * 20)
    res = {}
    for prof in ("bitnet", "llama.cpp"):
        assert main(["perplexity", "-f", str(f), "-c", "64", "--chunks", "2", "--json", "--numerics", prof]) == 0
        res[prof] = json.loads(capsys.readouterr().out)
        assert res[prof]["numerics"] == prof
    # the two arithmetics give close but different perplexities
    a, b = res["bitnet"]["ppl"], res["llama.cpp"]["ppl"]
    assert a != b and abs(a - b) < 0.05 * a


def test_a_contradicting_option_is_one_line(capsys):
    assert main(["verify", "--numerics", "llama.cpp", "--kv-dtype", "f32", "-n", "0", "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == ("bitnet-lab: error: numerics='llama.cpp' computes with kv_dtype='f16'; kv_dtype='f32' "
                       "contradicts it (leave kv_dtype out, or use numerics='bitnet')")


def test_load_refuses_widths_that_are_not_q8_k_blocks(tmp_path):
    from bitnet_lab.errors import ConfigError
    from bitnet_lab.engine.native import NativeEngine
    from bitnet_lab.tools.testing import tiny_model

    config, tensors = tiny_model("bitnet-b1.58", hidden=128, ffn=256, layout="i2_s")
    with pytest.raises(ConfigError, match=r"multiple of 256 \(Q8_K blocks\)"):
        NativeEngine(config, tensors, numerics="llama.cpp")
    eng = NativeEngine(config, tensors)  # the bitnet profile runs it
    assert np.isfinite(eng.logits([1, 2, 3])).all()


def test_bench_says_which_numerics_it_measured(capsys):
    assert main(["bench", "--tests", "-p", "16", "-n", "2", "-t", "1", "-r", "1", "--no-warmup",
                 "--numerics", "llama.cpp", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "numerics profile llama.cpp" in out and "pp16" in out
    assert main(["bench", "--tests", "-p", "16", "-n", "0", "-t", "1", "-r", "1", "--no-warmup", "--no-progress"]) == 0
    assert "numerics profile" not in capsys.readouterr().out
