"""`bitnet-lab run` / `chat` with speculative decoding: --lookup N, -md/--model-draft PATH|self:N,
--draft-max, --draft-min (llama.cpp's names). The text is the text without them; bad flags are one
line each."""

from __future__ import annotations

import io
import sys

import pytest

from bitnet_lab.cli import main

PROMPT = "Hello world, hello world, hello"


def _run(capsys, *flags, model):
    rc = main(["run", "-m", str(model), "-p", PROMPT, "-n", "24", "--temp", "0", "-t", "1", "-c", "128",
               "--no-display-prompt", *flags])
    out, err = capsys.readouterr()
    assert rc == 0, err
    return out, err


def test_run_with_a_drafter_prints_the_same_text(tiny_gguf, capsys):
    plain, _ = _run(capsys, model=tiny_gguf)
    for flags in (["--lookup", "3"], ["--spec-ngram-size-n", "2", "--draft-max", "4"],
                  ["-md", "self:2", "--draft-max", "3", "--draft-min", "2"], ["--model-draft", str(tiny_gguf)]):
        out, err = _run(capsys, *flags, model=tiny_gguf)
        assert out == plain, flags
        assert "speculative decoding: " in err and " drafted, " in err and " per pass)" in err


def test_chat_with_lookup(tiny_gguf, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"hello hello hello\n/exit\n")))
    answers = []
    for flags in ([], ["--lookup", "2"]):
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"hello hello hello\nagain\n/exit\n")))
        rc = main(["chat", "-m", str(tiny_gguf), "--temp", "0", "-n", "12", "-t", "1", "-c", "256", *flags])
        out, err = capsys.readouterr()
        assert rc == 0, err
        answers.append(out)
    assert answers[0] == answers[1]
    assert "speculative decoding: lookup(n=1..2)" in err


@pytest.mark.parametrize("flags,message", [
    (["--lookup", "0"], "--lookup takes an n-gram size >= 1, got 0"),
    (["--lookup", "3", "-md", "self:1"], "give --lookup or -md/--model-draft, not both"),
    (["--draft-max", "4"], "--draft-max/--draft-min set the draft length of --lookup or -md/--model-draft"),
    (["--lookup", "2", "--draft-max", "0"], "--draft-max must be >= 1, got 0"),
    (["--lookup", "2", "--draft-max", "3", "--draft-min", "5"], "--draft-min must be in 0..--draft-max (3), got 5"),
    (["-md", "/nonexistent/draft.gguf"], "draft model '/nonexistent/draft.gguf': no such file"),
    (["-md", "self:4"], "N must be in 1..3, got 4"),
    (["-md", "self:x"], "expected self:N with N a positive integer"),
])
def test_bad_draft_flags_are_one_line_errors(tiny_gguf, capsys, flags, message):
    rc = main(["run", "-m", str(tiny_gguf), "-p", "a", "-n", "2", *flags])
    out, err = capsys.readouterr()
    assert rc == 1 and out == ""
    assert message in err and "Traceback" not in err
    assert len([line for line in err.splitlines() if "error" in line]) == 1


def test_a_draft_model_with_another_vocabulary_is_refused_naming_the_difference(tiny_gguf, capsys):
    from bitnet_lab.tools.default_model import default_model_path

    rc = main(["run", "-m", str(tiny_gguf), "-p", "a", "-n", "2", "-md", str(default_model_path())])
    out, err = capsys.readouterr()
    assert rc == 1 and "the draft model's vocabulary has 4096 tokens, the target's 32000" in err
