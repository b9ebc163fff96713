"""--tl-tiling on every subcommand that loads a model (run, chat, bench, verify, perplexity,
inspect), end to end on a TL1 file that does not record its tiling (issue 19).

The file is the tiny layout written with one tiling (128,64,32) for every shape and without our
bitnet_lab.tl_tiling key (dummy --no-tiling-key); its shapes match no bitnet.cpp preset, so
without the flag every subcommand must stop with one line naming the shapes and the candidates.
"""

from __future__ import annotations

import io
import json
import sys

import pytest

from bitnet_lab.cli import main

TILING = "128,64,32"


@pytest.fixture(scope="module")
def tl1_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli-tl")
    assert main(["dummy", "--layout", "tiny", "--outtype", "tl1", "--tl-tiling", TILING, "--no-tiling-key",
                 "-o", str(d / "keyless.gguf"), "--no-progress"]) == 0
    assert main(["dummy", "--layout", "tiny", "--outtype", "tl1", "--tl-tiling", TILING,
                 "-o", str(d / "keyed.gguf"), "--no-progress"]) == 0
    (d / "text.txt").write_text("the quick brown fox jumps over the lazy dog " * 20, encoding="utf-8")
    return d


def _commands(d, model):
    return {
        "run": ["run", "-m", model, "-p", "Hello", "-n", "3", "--temp", "0", "-t", "1", "--no-display-prompt"],
        "chat": ["chat", "-m", model, "-n", "2", "--temp", "0", "-c", "128", "-t", "1"],
        "bench": ["bench", "--tests", "-m", model, "-p", "4", "-n", "2", "-r", "1", "-t", "1", "-o", "json", "--no-progress"],
        "verify": ["verify", "-m", model, "-n", "2", "-t", "1", "--json", "--no-progress"],
        "perplexity": ["perplexity", "-m", model, "-f", str(d / "text.txt"), "-c", "32", "--chunks", "1", "-t", "1"],
        "inspect": ["inspect", model, "--no-stats", "--json"],
    }


COMMANDS = ["run", "chat", "bench", "verify", "perplexity", "inspect"]


def _main(args, monkeypatch):
    if args[0] == "chat":
        monkeypatch.setattr(sys, "stdin", io.StringIO("hello\n/exit\n"))
    return main(args)


@pytest.mark.parametrize("command", COMMANDS)
def test_without_the_flag_the_keyless_file_is_refused_in_one_line(tl1_files, command, monkeypatch, capsys):
    args = _commands(tl1_files, str(tl1_files / "keyless.gguf"))[command]
    rc = _main(args, monkeypatch)
    out, err = capsys.readouterr()
    if command == "inspect":  # inspect shows what it can and says why the TL tensors are not decoded
        assert rc == 0
        assert "match no bitnet.cpp preset" in json.loads(out)["tl_tiling_error"]
        return
    assert rc == 1
    lines = [ln for ln in err.splitlines() if "match no bitnet.cpp preset" in ln]
    assert len(lines) == 1 and "--tl-tiling BM,BK,bm" in lines[0] and "Traceback" not in err


@pytest.mark.parametrize("command", [pytest.param(c, marks=pytest.mark.slow) if c == "verify" else c for c in COMMANDS])
def test_the_flag_reads_the_keyless_file_as_the_keyed_one(tl1_files, command, monkeypatch, capsys):
    keyless = _commands(tl1_files, str(tl1_files / "keyless.gguf"))[command] + ["--tl-tiling", TILING]
    assert _main(keyless, monkeypatch) == 0, capsys.readouterr().err
    out, _ = capsys.readouterr()
    if command == "inspect":
        rows = json.loads(out)["tl_tilings"]
        assert {(r["source"], r["tiling"]["BM"], r["tiling"]["BK"], r["tiling"]["bm"]) for r in rows} == {("given", 128, 64, 32)}
        return
    if command in ("run", "chat"):  # greedy text: the same weights give the same tokens
        keyed = _commands(tl1_files, str(tl1_files / "keyed.gguf"))[command]
        assert _main(keyed, monkeypatch) == 0
        assert capsys.readouterr().out == out


def test_a_preset_name_is_accepted_and_a_bad_value_is_a_usage_error(tl1_files, monkeypatch, capsys):
    model = str(tl1_files / "keyless.gguf")
    # a preset whose shapes are not the file's: one line naming the preset and the shapes
    assert main(["run", "-m", model, "-p", "a", "-n", "1", "--tl-tiling", "bitnet-b1.58-2b-4t"]) == 1
    err = capsys.readouterr().err
    assert "preset 'BitNet-b1.58-2B-4T' has no tl1 tiling for the shapes (M, K) [(128, 256)" in err
    for bad in ("128,64", "fast"):
        assert main(["run", "-m", model, "-p", "a", "--tl-tiling", bad]) == 2
        assert "neither 'BM,BK,bm'" in capsys.readouterr().err
