"""`bitnet-lab run` / `bitnet-lab chat` (bitnet_lab.cli.run).

Most tests run `bitnet_lab.cli.main` in-process on a fake model (bitnet_lab.load patched), so
they check the CLI's behaviour without JAX; a few run the real thing on a tiny dummy GGUF.
"""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import bitnet_lab
from bitnet_lab.cli import main
from fakes_generate import BOS, EOS, EOT, FakeRunner, FakeTokenizer, ScriptRunner, fake_model

ROOT = Path(__file__).resolve().parents[2]


def _b(s: str) -> list[int]:
    return list(s.encode())


def _last_prompt(runner) -> list[int]:
    return [c for c in runner.calls if len(c) > 1][-1]


@pytest.fixture
def fake(monkeypatch):
    """Patch bitnet_lab.load to hand out a fake model; returns a holder to set its runner."""
    holder = SimpleNamespace(runner=ScriptRunner(_b("Hello world") + [EOS]), tokenizer=FakeTokenizer(),
                             context=256, loads=[])

    def load(source, *, backend="reference", threads=None, **kw):
        holder.loads.append((source, backend, threads))
        holder.options = kw
        return fake_model(holder.runner, holder.tokenizer, context=holder.context)

    monkeypatch.setattr(bitnet_lab, "load", load)
    return holder


def test_run_streams_only_the_generated_text_to_stdout(fake, capsys):
    rc = main(["run", "-m", "fake.gguf", "-p", "Hi", "-n", "50", "--temp", "0", "-t", "1", "--backend", "reference",
               "--no-display-prompt"])
    out, err = capsys.readouterr()
    assert rc == 0
    assert out == "Hello world"
    assert fake.runner.calls[0] == [BOS] + _b("Hi")
    assert fake.loads == [("fake.gguf", "reference", 1)]
    # llama.cpp-style timings and the run's settings on stderr
    assert "prompt eval" in err and "ms per token" in err and "tokens per second" in err
    assert "eval " in err and "stopped at an end-of-generation token after 12 tokens" in err
    assert "sampler: greedy" in err and "seed " in err


def test_run_flushes_every_token(fake, monkeypatch):
    log = []

    class Recorder(io.StringIO):
        def write(self, s):
            log.append(("write", s))
            return super().write(s)

        def flush(self):
            log.append(("flush", None))

    monkeypatch.setattr(sys, "stdout", Recorder())
    assert main(["run", "-m", "x", "-p", "q", "-n", "5", "--temp", "0", "--no-display-prompt"]) == 0
    writes = [i for i, (k, _) in enumerate(log) if k == "write"]
    assert len(writes) == 5 and all(log[i + 1][0] == "flush" for i in writes)


def test_prompt_file_escapes_and_stop_strings(fake, tmp_path, capsys):
    f = tmp_path / "prompt.txt"
    f.write_text("from a file\\n", encoding="utf-8")
    assert main(["run", "-m", "x", "-f", str(f), "-n", "3", "--temp", "0"]) == 0
    assert _last_prompt(fake.runner) == [BOS] + _b("from a file\\n")          # files are taken as written
    assert main(["run", "-m", "x", "-p", "a\\nb", "-n", "1", "--temp", "0"]) == 0
    assert _last_prompt(fake.runner) == [BOS] + _b("a\nb")                   # -p escapes, as llama.cpp -e
    assert main(["run", "-m", "x", "-p", "a\\nb", "--no-escape", "-n", "1", "--temp", "0"]) == 0
    assert _last_prompt(fake.runner) == [BOS] + _b("a\\nb")
    capsys.readouterr()
    assert main(["run", "-m", "x", "-p", "q", "-n", "50", "--temp", "0", "-r", "o w", "--no-display-prompt"]) == 0
    out, err = capsys.readouterr()
    assert out == "Hell" and "stopped at a stop string" in err


def test_n_minus_one_runs_to_the_end_of_the_context(fake, capsys):
    fake.runner = ScriptRunner(_b("abc"))                                # never ends
    assert main(["run", "-m", "x", "-p", "q", "-n", "-1", "-c", "10", "--temp", "0", "--no-display-prompt"]) == 0
    out, err = capsys.readouterr()
    assert len(out) == 10 - 2 + 1 and "the context is full" in err


def test_seed_is_printed_and_reproducible(fake, capsys):
    fake.runner = FakeRunner(lambda t: 0, peak=0.0)                      # uniform logits
    args = ["run", "-m", "x", "-p", "q", "-n", "12", "--top-k", "0", "--min-p", "0", "--ignore-eos"]
    main(args + ["-s", "42"])
    a, err = capsys.readouterr()
    assert "seed 42" in err
    main(args + ["-s", "42"])
    b, _ = capsys.readouterr()
    main(args + ["-s", "43"])
    c, _ = capsys.readouterr()
    assert a == b and a != c
    main(args)                                                           # a random seed ...
    d, err = capsys.readouterr()
    seed = int(err.split("seed ")[1].split()[0])                         # ... is shown
    assert 0 <= seed < 2**32
    main(args + ["-s", str(seed)])
    assert capsys.readouterr().out == d                                  # and replays the run


@pytest.mark.parametrize("argv, code, message", [
    (["run", "-m", "x"], 2, "a prompt is required"),
    (["run", "-m", "x", "-p", "a", "-f", "b"], 2, "not both"),
    (["run", "-m", "x", "-p", "a", "--temp", "hot"], 2, "invalid float value"),
    (["run", "-m", "x", "-p", "a", "--no-such-flag"], 2, "unrecognized arguments"),
    (["run", "-m", "x", "-f", "/nonexistent/prompt.txt"], 1, "cannot read the prompt file /nonexistent/prompt.txt"),
    (["run", "-m", "x", "-p", "a", "-n", "-5"], 1, "-n/--n-predict must be >= -1"),
    (["run", "-m", "x", "-p", "a", "-t", "0"], 1, "threads must be positive"),
    (["run", "-m", "x", "-p", "a" * 300, "-c", "100"], 1, "301 tokens but the context holds 100"),
    (["chat", "-m", "x", "--ignore-eos"], 2, "unrecognized arguments: --ignore-eos"),   # not offered
    (["run", "-m", "x", "-cnv", "--ignore-eos"], 1, "--ignore-eos makes no sense in a chat"),
    (["chat", "-m", "x", "--chat-template", "vicuna"], 1, "unknown chat template 'vicuna'"),
])
def test_bad_input_exits_non_zero_with_a_clear_message(fake, capsys, argv, code, message):
    assert main(argv) == code
    out, err = capsys.readouterr()
    assert out == "" and message in err


def test_a_tokenizer_error_during_load_is_reported_cleanly(tmp_path, capsys):
    # the CLI builds the tokenizer on a helper thread beside the backend: its error must still
    # reach the user as the one clear message, not a thread's traceback
    from bitnet_lab.tools import dummy

    path = dummy.generate_dummy("tiny", tmp_path / "t.gguf", progress=False)
    data = path.read_bytes()
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(data.replace(b"tokenizer.ggml.model", b"tokenizer.ggml.xxxxx", 1))
    assert main(["run", "-m", str(bad), "-p", "a", "-n", "1"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and "no tokenizer metadata (tokenizer.ggml.model missing)" in err and "Traceback" not in err


def test_i2s_layout_flag_reaches_the_native_engine(fake, capsys):
    assert main(["run", "-m", "x", "-p", "Hi", "--temp", "0", "--i2s-layout", "file"]) == 0
    assert fake.options["i2s_layout"] == "file" and fake.loads[-1][1] == "native"
    assert main(["run", "-m", "x", "-p", "Hi", "--temp", "0"]) == 0
    assert fake.options["i2s_layout"] == "auto"
    capsys.readouterr()
    assert main(["run", "-m", "x", "-p", "Hi", "--backend", "reference", "--i2s-layout", "x4"]) == 1
    assert "--i2s-layout applies to the native backend only" in capsys.readouterr().err
    assert main(["run", "-m", "x", "-p", "Hi", "--i2s-layout", "rows"]) == 2  # argparse: invalid choice


def test_default_model_is_used_without_m(fake, monkeypatch, capsys):
    import bitnet_lab.tools.default_model as dm

    monkeypatch.setattr(dm, "default_model_path", lambda **kw: Path("/somewhere/default.gguf"))
    assert main(["run", "-p", "q", "-n", "2", "--temp", "0"]) == 0
    assert fake.loads[-1][0] == "/somewhere/default.gguf"
    assert "default model /somewhere/default.gguf" in capsys.readouterr().err


def _chat(monkeypatch, lines: str, argv):
    monkeypatch.setattr(sys, "stdin", io.StringIO(lines))
    return main(argv)


def test_chat_repl_turns_reset_and_exit(fake, monkeypatch, capsys):
    fake.runner = ScriptRunner(_b("Yo") + [EOT], _b("Fine") + [EOT], _b("Again") + [EOT])
    rc = _chat(monkeypatch, "hi\n\nok?\n/reset\nhello\n/exit\nnever sent\n",
               ["chat", "-m", "x", "-sys", "Be brief.", "--temp", "0"])
    out, err = capsys.readouterr()
    assert rc == 0
    assert out == "Yo\nFine\nAgain\n"
    calls = [c for c in fake.runner.calls if len(c) > 1]
    first = [BOS] + _b("System: Be brief.") + [EOT] + _b("User: hi") + [EOT] + _b("Assistant: ")
    assert calls[0] == first
    assert calls[1] == [EOT] + _b("User: ok?") + [EOT] + _b("Assistant: ")   # only the new turn
    assert calls[2] == [BOS] + _b("System: Be brief.") + [EOT] + _b("User: hello") + [EOT] + _b("Assistant: ")
    assert "conversation reset" in err and "chat format: bitnet" in err
    assert len(calls) == 3


def test_run_cnv_uses_p_as_the_system_prompt_and_eof_exits(fake, monkeypatch, capsys):
    fake.runner = ScriptRunner(_b("Yo") + [EOT])
    assert _chat(monkeypatch, "hi\n", ["run", "-m", "x", "-cnv", "-p", "Be kind.", "--temp", "0"]) == 0
    assert fake.runner.calls[0] == ([BOS] + _b("System: Be kind.") + [EOT] + _b("User: hi") + [EOT]
                                    + _b("Assistant: "))
    assert capsys.readouterr().out == "Yo\n"


def test_chat_context_overflow_is_reported_and_the_chat_goes_on(fake, monkeypatch, capsys):
    fake.runner = ScriptRunner(_b("Yo") + [EOT], _b("k") + [EOT])
    rc = _chat(monkeypatch, "hi\n" + "x" * 300 + "\nok\n", ["chat", "-m", "x", "-c", "64", "--temp", "0"])
    out, err = capsys.readouterr()
    assert rc == 0 and out == "Yo\nk\n"
    # a message longer than the context: no shift can make room, and /reset would not help either
    assert "this turn needs" in err and "context holds 64 tokens" in err and "shorten the message" in err
    assert "/reset" not in err.split("this turn needs")[1]
    # without a context shift, a full context is what stops the chat: /reset is the way out
    fake.runner = ScriptRunner(_b("Y" * 100) + [EOT], _b("k") + [EOT])
    rc = _chat(monkeypatch, "hi\nok\n", ["chat", "-m", "x", "-c", "64", "--temp", "0", "-n", "-1",
                                          "--no-context-shift"])
    out, err = capsys.readouterr()
    assert rc == 0 and "no context shift" in err
    assert "[context:" in err and "tokens but the context holds 64" in err and "/reset" in err


def test_chat_shifts_a_full_context_and_goes_on(fake, monkeypatch, capsys):
    """Issue 18 item 3: answers that fill the context do not end the chat; the system prompt
    stays at the start of the context."""
    fake.runner = ScriptRunner(_b("z" * 400))                            # never says its end token
    lines = "".join(f"q{k}\n" for k in range(8))
    rc = _chat(monkeypatch, lines, ["chat", "-m", "x", "-c", "64", "--temp", "0", "-sys", "Be brief."])
    out, err = capsys.readouterr()
    assert rc == 0 and "error" not in err
    assert out == ("z" * 32 + "\n") * 8                                 # -n default: min(256, 64 / 2)
    assert "context 64 tokens, when full it shifts: the first 19 tokens stay" in err
    assert "answers up to 32 tokens" in err and "context shifted" in err
    system = [BOS] + _b("System: Be brief.") + [EOT]
    shifted = [c for c in fake.runner.calls[1:] if len(c) > 1 and c[:len(system)] == system]
    assert shifted                                                       # re-encoded after the kept head
    # run -cnv: the same defaults; --keep and -n as given
    fake.runner = ScriptRunner(_b("z" * 400))
    rc = _chat(monkeypatch, lines, ["run", "-m", "x", "-cnv", "-c", "64", "--temp", "0", "--keep", "2", "-n", "40"])
    out, err = capsys.readouterr()
    assert rc == 0 and out == ("z" * 40 + "\n") * 8 and "the first 3 tokens stay" in err


def test_run_context_shift_flags(fake, capsys):
    fake.runner = ScriptRunner(_b("abcdefgh" * 10))
    argv = ["run", "-m", "x", "-p", "qrst", "-n", "40", "-c", "16", "--temp", "0", "--no-display-prompt"]
    assert main(argv) == 0                                               # llama.cpp's default: no shift
    out, err = capsys.readouterr()
    assert len(out) == 16 - 5 + 1 and "the context is full (-c, or --context-shift to go on)" in err
    fake.runner = ScriptRunner(_b("abcdefgh" * 10))
    assert main(argv + ["--context-shift", "--keep", "2"]) == 0
    out, err = capsys.readouterr()
    assert len(out) == 40 and "stopped after 40 tokens" in err and "the context was full" in err
    first_shift = [c for c in fake.runner.calls if len(c) > 1][1]       # this cache is re-encoded whole
    prompt = [BOS] + _b("qrst")
    assert first_shift[:3] == prompt[:3]                                 # BOS + --keep 2
    assert first_shift[3:] == (prompt + _b("abcdefghabc"))[3 + 6:] + _b("d")   # (16 - 3) // 2 dropped


@pytest.mark.parametrize("argv", [
    ["chat", "-c", "256"],
    ["run", "-cnv", "-c", "256", "-p", "You answer questions about the Python standard library."],
])
def test_twenty_turns_on_the_default_model(monkeypatch, capsys, argv):
    """Issue 18 item 3: a 20-turn scripted chat on the embedded default model in its 256-token
    context never errors and shows an answer at every turn."""
    questions = [f"What does os.path.join do? ({k})" if k % 2 else f"Show me the signature of textwrap.dedent ({k})"
                 for k in range(20)]
    monkeypatch.setattr(sys, "stdin", io.StringIO("".join(q + "\n" for q in questions)))
    assert main([*argv, "--temp", "0", "-s", "0"]) == 0
    out, err = capsys.readouterr()
    assert "error" not in err.lower() and "Traceback" not in err
    turns = [line for line in err.splitlines() if line.startswith("bitnet-lab: [")]
    assert len(turns) == 20
    for line in turns:                                                   # every turn answered
        answered = re.search(r", (\d+) tokens [\d.]+ tokens/s, \d+/256 in context", line)
        assert answered and int(answered.group(1)) > 0, line
    assert any("context shifted" in line for line in turns)
    assert out.count("\n") >= 20 and out.strip()


class _SigintAt(ScriptRunner):
    """Raises SIGINT (as Ctrl-C does) during the given decode steps."""

    def __init__(self, *replies, at=(), **kw):
        super().__init__(*replies, **kw)
        self.at = set(at)

    def forward(self, ids, cache, *, last_only=False):
        out = super().forward(ids, cache, last_only=last_only)
        if len(self.calls) in self.at:
            signal.raise_signal(signal.SIGINT)
        return out


def test_ctrl_c_stops_the_answer_not_the_chat(fake, monkeypatch, capsys):
    fake.runner = _SigintAt(_b("abcdefgh") + [EOT], _b("z") + [EOT], at={3})
    rc = _chat(monkeypatch, "q\nnext\n", ["chat", "-m", "x", "--temp", "0"])
    out, err = capsys.readouterr()
    assert rc == 0
    assert out == "abc\nz\n"                         # first answer cut after the SIGINT, chat went on
    assert "interrupted" in err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler   # handler restored


def test_ctrl_c_in_run_stops_with_timings_and_twice_quits(fake, capsys):
    fake.runner = _SigintAt(_b("abcdefgh"), at={2})
    assert main(["run", "-m", "x", "-p", "q", "-n", "50", "--temp", "0", "--no-display-prompt"]) == 130
    out, err = capsys.readouterr()
    assert out == "ab" and "interrupted (Ctrl-C) after 2 tokens" in err and "prompt eval" in err
    fake.runner = _SigintAt(_b("abcdefgh"), at={2, 3})
    assert main(["run", "-m", "x", "-p", "q", "-n", "50", "--temp", "0"]) == 130
    assert "interrupted" in capsys.readouterr().err


def test_ctrl_c_at_the_chat_prompt_exits_cleanly(fake, monkeypatch):
    class Interrupting(io.StringIO):
        def readline(self, *a):
            raise KeyboardInterrupt

    monkeypatch.setattr(sys, "stdin", Interrupting())
    assert main(["chat", "-m", "x"]) == 0


# =====================================================================================
# End to end on a tiny dummy GGUF (real tokenizer, reference backend)
# =====================================================================================


def _subprocess(args, tmp_path, stdin=None):
    env = dict(os.environ, PYTHONPATH=str(ROOT), BITNET_LAB_CACHE=str(tmp_path / "cache"), JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-m", "bitnet_lab", *args], capture_output=True, text=True,
                          env=env, cwd=tmp_path, input=stdin, timeout=300)


def test_run_end_to_end_stdout_is_the_generated_text(tiny_gguf, tmp_path):
    from bitnet_lab.generate import make_sampler

    model = bitnet_lab.load(tiny_gguf, backend="reference")
    want = list(model.generate("Hello", n=4, sampler=make_sampler(temp=0), n_ctx=64, parse_special=True))[-1]
    r = _subprocess(["run", "-m", str(tiny_gguf), "-p", "Hello", "-n", "4", "--temp", "0", "-c", "64", "--no-display-prompt",
                     "--backend", "reference"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout == want.generated_text
    assert "prompt eval" in r.stderr and "tokens per second" in r.stderr


def test_chat_end_to_end_on_a_base_model(tiny_gguf, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO("Hello\nAgain\n/exit\n"))
    rc = main(["chat", "-m", str(tiny_gguf), "-n", "3", "--temp", "0", "-c", "128", "--backend", "reference"])
    out, err = capsys.readouterr()
    assert rc == 0 and out.count("\n") == 2
    assert "chat format: chatml" in err                     # Llama-2 vocabulary, no template


def test_missing_model_file_exits_1(tmp_path):
    r = _subprocess(["run", "-m", str(tmp_path / "nope.gguf"), "-p", "x"], tmp_path)
    assert r.returncode == 1 and r.stdout == ""
    assert "error" in r.stderr and "nope.gguf" in r.stderr


def test_the_readmes_main_command_runs_on_the_embedded_model(tmp_path):
    """The README's main job, exactly as written there (plus a seed), on the shipped default model
    (no -m, no download): it exits 0 and streams a continuation."""
    import shlex

    readme = (ROOT / "README.md").read_text()
    line = next(x for x in readme.splitlines() if "pip install -e . &&" in x and "bitnet-lab run" in x)
    argv = shlex.split(line.split("&&", 1)[1])
    assert argv[:2] == ["bitnet-lab", "run"] and "-m" not in argv
    r = _subprocess([*argv[1:], "-s", "0"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "default model" in r.stderr or "default-model.gguf" in r.stderr
    n_eval = int(r.stderr.split("eval        =")[1].split("/")[1].split()[0])
    assert n_eval >= 32 and len(r.stdout.strip()) > 40


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_twenty_turns_in_a_terminal(tmp_path):
    """The same 20-turn chat as a person has it: `bitnet-lab chat` in a pseudo-terminal (readline,
    the "> " prompt), each line typed after the prompt shows up."""
    import select
    import time

    master, slave = os.openpty()
    env = dict(os.environ, PYTHONPATH=str(ROOT), BITNET_LAB_CACHE=str(tmp_path / "cache"), TERM="dumb")
    proc = subprocess.Popen([sys.executable, "-m", "bitnet_lab", "chat", "-c", "256", "--temp", "0", "-s", "0"],
                            stdin=slave, stdout=slave, stderr=slave, env=env, cwd=tmp_path, close_fds=True)
    os.close(slave)
    seen = b""

    def read_until(marker: bytes, timeout: float = 60.0) -> None:
        nonlocal seen
        deadline = time.monotonic() + timeout
        while marker not in seen:
            left = deadline - time.monotonic()
            assert left > 0 and proc.poll() is None, seen[-2000:].decode(errors="replace")
            if select.select([master], [], [], min(left, 1.0))[0]:
                try:
                    seen += os.read(master, 65536)
                except OSError:
                    break

    try:
        for k in range(20):
            read_until(b"> ")
            seen = seen[seen.index(b"> ") + 2:]
            os.write(master, f"What does os.path.join do? ({k})\n".encode())
            read_until(b"/256 in context")
            assert b"error" not in seen.lower() and b"Traceback" not in seen
            stats = seen.decode(errors="replace").split("bitnet-lab: [")[-1]
            assert re.match(r"\w+: prompt \d+ tokens [\d.]+ ms, [1-9]\d* tokens", stats), stats
            seen = seen[seen.rindex(b"/256 in context"):]   # the answer may hold "> " itself
        read_until(b"> ")
        os.write(master, b"/exit\n")
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
