"""`bitnet-lab serve` as a process: it starts, answers, and stops cleanly on SIGTERM (requests in
flight finish, or end with a clean error when the shutdown timeout runs out; the port is
released); bad flags and a busy port are one error line."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from bitnet_lab.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _start(model: Path | None, *extra: str) -> tuple[subprocess.Popen, int, list]:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    chosen = ["-m", str(model)] if model is not None else []
    proc = subprocess.Popen([sys.executable, "-m", "bitnet_lab", "serve", *chosen, "--port", "0",
                             "-c", "128", "-np", "2", "--api-key", "k", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    lines: list = []
    for line in proc.stderr:
        lines.append(line)
        m = re.search(r"at http://127\.0\.0\.1:(\d+)/v1", line)
        if m:
            port = int(m.group(1))
            threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True).start()
            return proc, port, lines
    proc.wait(30)
    pytest.fail("the server did not start:\n" + "".join(lines))


def _stream(port: int, max_tokens: int, out: list, first: threading.Event) -> None:
    with httpx.Client(timeout=120, headers={"Authorization": "Bearer k"}) as h, h.stream(
            "POST", f"http://127.0.0.1:{port}/v1/completions",
            json={"prompt": "tell a long story", "max_tokens": max_tokens, "stream": True, "temperature": 0}) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                out.append(line[6:])
                first.set()
    first.set()


def _port_is_free(port: int) -> bool:
    """A new server could listen there (as `serve` binds: SO_REUSEADDR, so the closed connections'
    TIME_WAIT does not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            s.listen(1)
            return True
        except OSError:
            return False


def test_with_no_model_it_serves_the_default_model_to_the_official_client():
    import openai

    proc, port, lines = _start(None)
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="k", max_retries=0)
        assert [m.id for m in client.models.list().data] == ["default-model"]
        r = client.chat.completions.create(model="default-model", max_tokens=24, temperature=0,
                                           messages=[{"role": "user", "content": "What does len do?"}])
        assert r.choices[0].message.content.strip() and r.choices[0].finish_reason in ("stop", "length")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        proc.kill()
    assert "using the default model" in "".join(lines)


def test_sigterm_lets_the_request_in_flight_finish_and_releases_the_port(tiny_gguf):
    proc, port, lines = _start(tiny_gguf)
    try:
        assert httpx.get(f"http://127.0.0.1:{port}/health").json()["status"] == "ok"
        out, first = [], threading.Event()
        t = threading.Thread(target=_stream, args=(port, 40, out, first))
        t.start()
        assert first.wait(60)
        proc.send_signal(signal.SIGTERM)
        t.join(120)
        assert proc.wait(60) == 0, "".join(lines)
    finally:
        proc.kill()
    assert out[-1] == "[DONE]"
    finals = [json.loads(d)["choices"][0]["finish_reason"] for d in out[:-1] if d.startswith('{"id"')]
    assert finals[-1] == "length"
    assert sum(1 for d in out[:-1] if json.loads(d)["choices"][0]["text"]) >= 30   # every token arrived
    assert "server stopped" in "".join(lines)
    assert _port_is_free(port)


def test_sigterm_past_the_shutdown_timeout_ends_the_request_with_a_clean_error(tiny_gguf):
    # a context of 2048: the answer runs for seconds, past the 0.8 s the shutdown leaves it
    proc, port, lines = _start(tiny_gguf, "--shutdown-timeout", "1", "-c", "2048")
    try:
        out, first = [], threading.Event()
        t = threading.Thread(target=_stream, args=(port, 10_000, out, first))   # until the context is full
        t.start()
        assert first.wait(60)
        proc.send_signal(signal.SIGTERM)
        t.join(120)
        assert proc.wait(60) == 0, "".join(lines)
    finally:
        proc.kill()
    last = json.loads(out[-1])
    assert last["error"]["message"] == "the server is shutting down" and last["error"]["type"] == "unavailable_error"
    assert _port_is_free(port)


def test_bad_flags_and_a_busy_port_are_one_error_line(tiny_gguf, capsys):
    assert main(["serve", "-m", str(tiny_gguf), "-np", "0"]) == 1
    assert capsys.readouterr().err.strip() == "bitnet-lab: error: -np/--parallel must be >= 1, got 0"
    assert main(["serve", "-m", str(tiny_gguf), "--api-key", " "]) == 1
    assert "--api-key is empty" in capsys.readouterr().err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        assert main(["serve", "-m", str(tiny_gguf), "--port", str(port)]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"bitnet-lab: error: cannot listen on 127.0.0.1:{port}: ")
