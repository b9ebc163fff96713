"""`bitnet-lab` foundation subcommands (inspect, dummy, convert, download), exit codes and the
subcommand-module registry of bitnet_lab.cli."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import bitnet_lab
from bitnet_lab import cli
from bitnet_lab.cli import app as cli_app

ROOT = Path(__file__).resolve().parents[2]
REAL = ROOT / "tests" / "data" / "real-files"


def run_module(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    e = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), **(env or {})}
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, env=e, cwd=ROOT)


# ---------------------------------------------------------------------------------------------
# Subcommands
# ---------------------------------------------------------------------------------------------


def test_inspect_prints_the_table(tiny_gguf, capsys):
    assert cli.main(["inspect", str(tiny_gguf), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "blk.3.ffn_down.weight" in out and "[32000 strings]" in out and "I2_S" in out


def test_inspect_json_parses(tiny_gguf, capsys):
    assert cli.main(["inspect", str(tiny_gguf), "--json", "--no-stats"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["n_tensors"] == 46 and d["stats_computed"] is False
    assert d["tensors"][0]["name"] == "token_embd.weight" and d["tensors"][0]["ggml_shape"] == [256, 32000]


def test_python_dash_m_runs_the_cli(tiny_gguf):
    r = run_module("bitnet_lab", "inspect", str(tiny_gguf), "--json", "--no-progress")
    assert r.returncode == 0, r.stderr
    stats = [t["stats"] for t in json.loads(r.stdout)["tensors"] if t["stats"]]
    assert len(stats) == 28
    v = run_module("bitnet_lab", "--version")
    assert v.returncode == 0 and v.stdout.strip() == f"bitnet-lab {bitnet_lab.__version__}"


def test_dummy_writes_the_same_bytes_as_generate_dummy(tiny_gguf, tmp_path, capsys):
    out = tmp_path / "d.gguf"
    assert cli.main(["dummy", "--layout", "TINY", "--outtype", "i2_s", "-o", str(out), "--seed", "0",
                     "--no-progress"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert out.read_bytes() == tiny_gguf.read_bytes()


def test_dummy_tl1_with_tiling_flag(tmp_path):
    out = tmp_path / "tl1.gguf"
    assert cli.main(["dummy", "--layout", "tiny", "--outtype", "TL1", "-o", str(out), "--tl-tiling", "128,256,32",
                     "--no-progress"]) == 0
    m = bitnet_lab.load(out)
    assert {w.tiling for w in m.ternary_weights().values()} == {bitnet_lab.tensors.TLTiling(128, 256, 32)}


def test_dummy_list_and_missing_arguments(capsys):
    assert cli.main(["dummy", "--list"]) == 0
    out = capsys.readouterr().out
    assert "2B-4T" in out and "Falcon3-3B" in out and "100B" in out
    assert cli.main(["dummy", "-o", "x.gguf"]) == 2
    err = capsys.readouterr().err
    assert "usage: bitnet-lab dummy" in err and "--layout" in err


def test_dummy_impossible_layout_is_one_line_exit_1(tmp_path, capsys):
    assert cli.main(["dummy", "--layout", "3B", "--outtype", "i2_s", "-o", str(tmp_path / "x.gguf")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bitnet-lab: error: ") and "8640" in err[0]
    assert not (tmp_path / "x.gguf").exists()


def test_convert_tiny_checkpoint(tmp_path, capsys):
    out = tmp_path / "conv.gguf"
    assert cli.main(["convert", str(REAL / "hf"), "--outtype", "i2_s", "-o", str(out), "--no-progress"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    m = bitnet_lab.load(out)
    assert m.config.hidden == 256 and len(m.ternary_weights()) == 14
    # the codes are those of bitnet.cpp's own I2_S file of the same checkpoint
    ref = bitnet_lab.load(REAL / "bitnet-i2_s.gguf")
    for name, w in ref.ternary_weights().items():
        assert (m.tensors[name].ternary() == w.ternary()).all(), name


@pytest.mark.parametrize("emb", ["Q6_K", "q8_0"])
def test_convert_token_embedding_type_writes_llama_quantize_bytes(tmp_path, capsys, emb):
    """--token-embedding-type q6_k / q8_0: the token embedding is byte for byte what bitnet.cpp's
    2026 llama-quantize wrote from the same checkpoint (tests/tools/test_convert.py compares
    every tensor)."""
    from bitnet_lab.formats.gguf import GGUFFile

    out = tmp_path / "conv.gguf"
    assert cli.main(["convert", str(REAL / "hf"), "--outtype", "i2_s", "--token-embedding-type", emb,
                     "-o", str(out), "--no-progress"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    ours = GGUFFile(out).tensor("token_embd.weight")
    ref = GGUFFile(REAL / f"bitnetcpp2026-i2_s-embd-{emb.lower()}.gguf").tensor("token_embd.weight")
    assert ours.ggml_type == ref.ggml_type == emb.upper()
    assert ours.data.tobytes() == ref.data.tobytes()
    assert cli.main(["convert", str(REAL / "hf"), "--token-embedding-type", "q4_k", "-o", str(out)]) == 2
    assert "invalid choice 'q4_k'" in capsys.readouterr().err


def test_dummy_bf16_embedding(tmp_path, capsys):
    out = tmp_path / "bf16.gguf"
    assert cli.main(["dummy", "--layout", "tiny", "--token-embedding-type", "BF16", "-o", str(out), "--no-progress"]) == 0
    assert bitnet_lab.load(out).tensors["token_embd.weight"].ggml_type == "BF16"


def test_convert_missing_source_names_it(tmp_path, capsys):
    assert cli.main(["convert", str(tmp_path / "no-such-dir"), "-o", str(tmp_path / "o.gguf")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"bitnet-lab: error: no such file or directory: {tmp_path / 'no-such-dir'}"]


def test_download_offline_fake_repo_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert cli.main(["download", "bitnet-lab-tests/no-such-repo"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bitnet-lab: error: ")
    assert "bitnet-lab-tests/no-such-repo" in err[0] and "HF_HUB_OFFLINE" in err[0]
    assert "Traceback" not in err[0]


# ---------------------------------------------------------------------------------------------
# Exit codes
# ---------------------------------------------------------------------------------------------


def test_bad_flag_exits_2_with_usage(tiny_gguf, capsys):
    assert cli.main(["inspect", str(tiny_gguf), "--no-such-flag"]) == 2
    err = capsys.readouterr().err
    assert "usage: bitnet-lab" in err and "--no-such-flag" in err
    assert cli.main(["dummy", "--layout", "tiny", "-o", "x.gguf", "--outtype", "q4_k"]) == 2
    assert "invalid choice 'q4_k'" in capsys.readouterr().err
    assert cli.main(["inspect", str(tiny_gguf), "--tl-tiling", "256,x"]) == 2
    assert "BM,BK,bm" in capsys.readouterr().err
    assert cli.main([]) == 2  # a subcommand is required


def test_missing_file_is_one_clear_line_exit_1(tmp_path, capsys):
    missing = tmp_path / "missing-model.gguf"
    assert cli.main(["inspect", str(missing)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(missing) in err and err.startswith("bitnet-lab: error: ")
    assert "Traceback" not in err


def test_malformed_file_is_one_line_exit_1(tmp_path, capsys):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\x07" * 40)
    assert cli.main(["inspect", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.gguf" in err


def test_debug_shows_the_traceback(tmp_path):
    from bitnet_lab.errors import FormatError

    with pytest.raises(FormatError):
        cli.main(["--debug", "inspect", str(tmp_path / "nope.gguf")])


def test_keyboard_interrupt_exits_130(tiny_gguf, monkeypatch, capsys):
    import bitnet_lab.tools.inspect

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(bitnet_lab.tools.inspect, "inspect_model", interrupted)
    assert cli.main(["inspect", str(tiny_gguf)]) == 130
    assert "interrupted" in capsys.readouterr().err


def test_help_and_version_exit_0(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"bitnet-lab {bitnet_lab.__version__}"
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for sub in ("inspect", "dummy", "convert", "download"):
        assert sub in out


# ---------------------------------------------------------------------------------------------
# The subcommand registry
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in ("bl_test_hello_cmd", "bl_test_broken_cmd"):
        sys.modules.pop(name, None)


def test_registered_module_adds_a_subcommand(plugin_dir, monkeypatch, capsys):
    (plugin_dir / "bl_test_hello_cmd.py").write_text(
        "def add_parser(sub):\n"
        "    p = sub.add_parser('hello', help='say hello')\n"
        "    p.add_argument('--name', default='world')\n"
        "    p.set_defaults(func=lambda a: print('hello', a.name) or 3)\n"
    )
    monkeypatch.setattr(cli_app, "COMMAND_MODULES", ("bl_test_hello_cmd",))
    assert cli.main(["hello", "--name", "bitnet"]) == 3
    assert capsys.readouterr().out.strip() == "hello bitnet"


def test_an_existing_module_that_fails_to_import_is_not_swallowed(plugin_dir, monkeypatch):
    (plugin_dir / "bl_test_broken_cmd.py").write_text("import bl_test_dependency_that_does_not_exist\n")
    monkeypatch.setattr(cli_app, "COMMAND_MODULES", ("bl_test_broken_cmd",))
    with pytest.raises(ModuleNotFoundError, match="bl_test_dependency_that_does_not_exist"):
        cli.main(["--version"])
