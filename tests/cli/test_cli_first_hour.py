"""The command line in a new user's first hour (issue 18 items 2, 4, 5, 7, 17): every path works,
says clearly why not in one line, or never hangs.

In-process tests run `bitnet_lab.cli.main` on a fake model (bitnet_lab.load patched, as in
test_cli_run.py); a few run the real command in a subprocess, as a user's terminal would."""

from __future__ import annotations

import builtins
import io
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import bitnet_lab
from bitnet_lab.cli import main
from fakes_generate import EOS, FakeTokenizer, ScriptRunner, fake_model

ROOT = Path(__file__).resolve().parents[2]
REAL_REPO = "microsoft/bitnet-b1.58-2B-4T-gguf"


def _b(s: str) -> list[int]:
    return list(s.encode())


@pytest.fixture
def fake(monkeypatch):
    holder = SimpleNamespace(runner=ScriptRunner(_b("Hello world") + [EOS]), tokenizer=FakeTokenizer(),
                             context=256, loads=[], options={})

    def load(source, *, backend="reference", threads=None, **kw):
        holder.loads.append((source, backend, threads))
        holder.options = kw
        return fake_model(holder.runner, holder.tokenizer, context=holder.context)

    monkeypatch.setattr(bitnet_lab, "load", load)
    return holder


def _env(tmp_path, **extra):
    env = dict(os.environ, PYTHONPATH=str(ROOT), BITNET_LAB_CACHE=str(tmp_path / "cache"), JAX_PLATFORMS="cpu")
    env.update(extra)
    return env


def _cli(args, tmp_path, *, stdin=None, timeout=300, **env):
    """The real command in a subprocess; ``args`` may hold bytes (a terminal's raw argv)."""
    return subprocess.run([sys.executable, "-m", "bitnet_lab", *args], capture_output=True, env=_env(tmp_path, **env),
                          cwd=tmp_path, input=stdin, timeout=timeout)


def _lines(err: bytes | str) -> list[str]:
    text = err.decode("utf-8", "replace") if isinstance(err, bytes) else err
    return [ln for ln in text.splitlines() if ln.strip()]


# =====================================================================================
# item 2: the JAX reference is installed with the package; what needs an extra says so
# =====================================================================================


def test_jax_is_a_core_dependency():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = [d.replace(" ", "") for d in project["dependencies"]]
    assert any(d.startswith("jax[cpu]") for d in core), core
    for extra, deps in project["optional-dependencies"].items():   # no extra repeats the core
        assert not any(d.replace(" ", "").startswith("jax[cpu]") for d in deps), extra


def test_reference_backend_runs_with_the_core_dependencies_only(tiny_gguf, tmp_path):
    """optax, matplotlib, ipywidgets, llama_cpp hidden: run --backend reference still works."""
    code = ("import sys\n"
            "for m in ('optax', 'matplotlib', 'ipywidgets', 'llama_cpp'): sys.modules[m] = None\n"
            "from bitnet_lab.cli import main\n"
            f"sys.exit(main(['run', '-m', {str(tiny_gguf)!r}, '-p', 'Hi', '-n', '3', '--temp', '0',"
            " '--backend', 'reference', '--no-display-prompt']))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(tmp_path), cwd=tmp_path,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]


@pytest.mark.parametrize("hidden, code, extra", [
    ("matplotlib", "from bitnet_lab.notebook import viz; viz._plt()", "bitnet_lab[notebook]"),
    ("llama_cpp", "from bitnet_lab.bench.compare import compare_llama_cpp as f; f('x.gguf')",
     "bitnet_lab[llamacpp]"),
])
def test_a_feature_that_needs_an_extra_names_it_in_one_line(tmp_path, hidden, code, extra):
    src = (f"import sys; sys.modules[{hidden!r}] = None\n"
           "try:\n"
           f"    {code}\n"
           "except Exception as e:\n"
           "    print(type(e).__name__, str(e)); sys.exit(3)\n")
    r = subprocess.run([sys.executable, "-c", src], capture_output=True, text=True, env=_env(tmp_path), cwd=tmp_path,
                       timeout=120)
    assert r.returncode == 3, r.stdout + r.stderr
    assert extra in r.stdout and len(_lines(r.stdout)) == 1, r.stdout


def test_train_without_optax_names_its_extra(tmp_path):
    src = ("import sys; sys.modules['optax'] = None\n"
           "from bitnet_lab.cli import main\n"
           "sys.exit(main(['train', '-o', 'run']))\n")
    r = subprocess.run([sys.executable, "-c", src], capture_output=True, text=True, env=_env(tmp_path), cwd=tmp_path,
                       timeout=120)
    assert r.returncode == 1 and "[train]" in r.stderr and len(_lines(r.stderr)) == 1, r.stderr


# =====================================================================================
# item 4: non-UTF-8 bytes in -p, -f and chat input: one clear line naming the byte offset
# =====================================================================================


def test_a_non_utf8_byte_in_p_names_its_offset(fake, capsys):
    assert main(["run", "-m", "x", "-p", "ab\udcffc"]) == 1     # what Python makes of the byte 0xff in argv
    out, err = capsys.readouterr()
    assert out == "" and len(_lines(err)) == 1
    assert "-p" in err and "not UTF-8" in err and "byte 0xff at offset 2" in err


def test_p_and_f_report_bad_bytes_the_same_way(fake, tmp_path, capsys):
    f = tmp_path / "p.txt"
    f.write_bytes(b"ab\xffc")
    assert main(["run", "-m", "x", "-f", str(f)]) == 1
    err = capsys.readouterr().err
    assert len(_lines(err)) == 1 and "not UTF-8" in err and "byte 0xff at offset 2" in err


def test_non_utf8_argv_end_to_end(tiny_gguf, tmp_path):
    r = _cli(["run", "-m", str(tiny_gguf), "-p", b"caf\xe9 au lait", "-n", "2"], tmp_path)
    err = r.stderr.decode("utf-8", "replace")
    assert r.returncode == 1 and r.stdout == b"", err
    assert "Traceback" not in err and "byte 0xe9 at offset 3" in err
    assert len([ln for ln in _lines(err) if "error" in ln]) == 1


def test_non_utf8_chat_input_is_refused_and_the_chat_goes_on(fake, monkeypatch, capsys):
    fake.runner = ScriptRunner(_b("ok") + [EOS], _b("ok") + [EOS])
    monkeypatch.setattr(sys, "stdin", io.StringIO("h\udce9llo\nhello\n/exit\n"))
    assert main(["chat", "-m", "x", "--temp", "0"]) == 0
    out, err = capsys.readouterr()
    assert "byte 0xe9 at offset 1" in err and "Traceback" not in err
    assert out == "ok\n"                                         # the second line was answered


def test_non_utf8_chat_input_end_to_end(tiny_gguf, tmp_path):
    r = _cli(["chat", "-m", str(tiny_gguf), "-n", "2", "--temp", "0", "-c", "128"], tmp_path,
             stdin=b"caf\xe9\nhello\n/exit\n")
    err = r.stderr.decode("utf-8", "replace")
    assert r.returncode == 0, err
    assert "byte 0xe9 at offset 3" in err and "Traceback" not in err
    assert r.stdout.count(b"\n") == 1                            # one answer: to "hello"


# =====================================================================================
# item 5: a mistyped local folder, the Hub, --hf-file / --revision
# =====================================================================================


def test_a_missing_local_folder_says_so_in_one_line(tmp_path):
    # no retries of the network: tests/formats/test_hub.py counts the probes (no clock here)
    hub_cache = tmp_path / "hf"
    r = _cli(["run", "-m", "models/bitnet", "-p", "x", "-n", "1"], tmp_path, timeout=120,
             HF_HUB_CACHE=str(hub_cache), HF_HOME=str(tmp_path / "hfhome"))
    err = r.stderr.decode()
    assert r.returncode == 1 and r.stdout == b""
    lines = [ln for ln in _lines(err) if not ln.startswith("bitnet-lab: no -m")]
    assert len(lines) == 1, err
    assert "no such local file or folder" in err and "models/bitnet" in err
    assert "Hub" in err
    assert "Warning" not in err and "Retry" not in err and "Traceback" not in err
    assert err.count("bitnet-lab download") <= 1


def test_offline_mode_miss_says_both_in_one_line(tmp_path):
    r = _cli(["run", "-m", "models/bitnet", "-p", "x"], tmp_path, timeout=60, HF_HUB_OFFLINE="1",
             HF_HUB_CACHE=str(tmp_path / "hf"))
    err = r.stderr.decode()
    assert r.returncode == 1 and len(_lines(err)) == 1, err
    assert "no such local file or folder" in err and "not in the Hugging Face cache" in err
    assert "HF_HUB_OFFLINE" in err


def test_repo_ids_have_one_spelling_the_real_one():
    from bitnet_lab.cli.app import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert REAL_REPO in sub.choices["download"].format_help()
    wrong = REAL_REPO.replace("bitnet-b1.58", "BitNet-b1.58")
    for path in [*(ROOT / "bitnet_lab").rglob("*.py"), ROOT / "README.md"]:
        assert wrong not in path.read_text(encoding="utf-8"), path


@pytest.mark.parametrize("command", ["run", "chat", "bench", "verify"])
def test_hf_file_and_revision_flags(command, capsys):
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "--hf-file" in out and "--revision" in out


def test_hf_file_and_revision_reach_load(fake, capsys):
    assert main(["run", "-m", "o/n", "--hf-file", "m-tl2.gguf", "--revision", "v1", "-p", "a", "-n", "1"]) == 0
    assert fake.options["filename"] == "m-tl2.gguf" and fake.options["revision"] == "v1"


# =====================================================================================
# items 7 and 17: threads, help, usage, convert / dummy paths, wording, prompt echo, Ctrl-D
# =====================================================================================


def test_threads_above_the_cpus_are_clamped_with_one_warning(fake, capsys):
    from bitnet_lab.kernels import allowed_cpus

    n = len(allowed_cpus())
    assert main(["run", "-m", "x", "-p", "a", "-n", "1", "-t", "100000"]) == 0
    err = capsys.readouterr().err
    assert fake.loads[-1][2] == n
    warns = [ln for ln in _lines(err) if "warning" in ln and "thread" in ln]
    assert len(warns) == 1 and "100000" in warns[0] and str(n) in warns[0], err
    assert "UserWarning" not in err


@pytest.mark.parametrize("value", ["0", "-3"])
def test_non_positive_threads_are_refused(fake, capsys, value):
    assert main(["run", "-m", "x", "-p", "a", "-t", value]) == 1
    assert "threads must be positive" in capsys.readouterr().err


def test_threads_clamped_end_to_end(tiny_gguf, tmp_path):
    r = _cli(["run", "-m", str(tiny_gguf), "-p", "a", "-n", "2", "-t", "100000"], tmp_path, timeout=120)
    err = r.stderr.decode()
    assert r.returncode == 0, err
    assert len([ln for ln in _lines(err) if "warning" in ln.lower() and "thread" in ln]) == 1, err


def test_chat_help_does_not_offer_ignore_eos(capsys):
    assert main(["chat", "--help"]) == 0
    assert "--ignore-eos" not in capsys.readouterr().out
    assert main(["run", "--help"]) == 0
    assert "--ignore-eos" in capsys.readouterr().out


@pytest.mark.parametrize("argv, usage", [
    (["inspect", "x.gguf", "--bogus"], "usage: bitnet-lab inspect"),
    (["run", "-p", "a", "--bogus"], "usage: bitnet-lab run"),
    (["chat", "--bogus"], "usage: bitnet-lab chat"),
])
def test_an_unknown_flag_shows_the_subcommands_usage(capsys, argv, usage):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(usage) and "unrecognized arguments: --bogus" in err


def test_convert_to_an_existing_folder_names_the_folder(tmp_path, capsys):
    from _hf_models import REAL_HF

    out_dir = tmp_path / "out"
    out_dir.mkdir()
    assert main(["convert", str(REAL_HF), "-o", str(out_dir), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert str(out_dir) in err and ".tmp" not in err and "folder" in err
    assert list(out_dir.iterdir()) == []


def test_convert_of_a_gguf_names_no_internal_function(tmp_path, capsys, tiny_gguf):
    assert main(["convert", str(tiny_gguf), "-o", str(tmp_path / "o.gguf")]) == 1
    err = capsys.readouterr().err
    assert "already a GGUF" in err and "convert_hf_to_gguf" not in err and "()" not in err


def test_dummy_into_a_missing_folder_is_an_error(tmp_path, capsys):
    target = tmp_path / "nonexistent" / "dir" / "x.gguf"
    assert main(["dummy", "--layout", "tiny", "-o", str(target), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "does not exist" in err and str(target.parent) in err
    assert not (tmp_path / "nonexistent").exists()


@pytest.mark.parametrize("script, argv, reason", [
    (_b("Hello") + [EOS], ["-n", "50"], "end-of-generation token"),
    (_b("Hello world"), ["-n", "3"], "-n 3"),
    (_b("Hello world"), ["-n", "50", "-r", "lo w"], "stop string"),
])
def test_the_stop_line_reads_as_english(fake, capsys, script, argv, reason):
    fake.runner = ScriptRunner(script)
    assert main(["run", "-m", "x", "-p", "a", "--temp", "0", *argv]) == 0
    err = capsys.readouterr().err
    assert "stopped by" not in err and reason in err


def test_interrupted_is_not_stopped_by_interrupted(fake, capsys, monkeypatch):
    from bitnet_lab.cli import run as R

    monkeypatch.setattr(R._Interrupt, "__call__", lambda self: True)
    fake.runner = ScriptRunner(_b("abcdef"))
    assert main(["run", "-m", "x", "-p", "q", "-n", "10", "--temp", "0"]) == 130
    err = capsys.readouterr().err
    assert "stopped by interrupted" not in err and "interrupted (Ctrl-C)" in err


def test_run_echoes_the_prompt_as_llama_cli_does(fake, capsys):
    assert main(["run", "-m", "x", "-p", "Hi\\n", "--temp", "0"]) == 0
    assert capsys.readouterr().out == "Hi\nHello world"
    assert main(["run", "-m", "x", "-p", "Hi", "--temp", "0", "--no-display-prompt"]) == 0
    assert capsys.readouterr().out == "Hello world"


def test_ctrl_d_at_the_chat_prompt_ends_the_line(fake, monkeypatch, capsys):
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)

    def eof(prompt=""):
        sys.stdout.write(prompt)
        raise EOFError

    monkeypatch.setattr(builtins, "input", eof)
    monkeypatch.setattr("bitnet_lab.cli.run._setup_readline", lambda: None)
    assert main(["chat", "-m", "x"]) == 0
    assert capsys.readouterr().out == "> \n"
