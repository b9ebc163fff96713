"""Safe by default: every fault gets OpenAI's error object with the right status, and the server
goes on serving — bad key, malformed JSON, bad fields (``param`` names the field), oversize
bodies, a full queue (503 + Retry-After), clients that disconnect (their slot is freed at once),
a step that raises (500 for its requests, the next request is served)."""

from __future__ import annotations

import json
import threading
import time

import httpx
import openai
import pytest

API_KEY = "test-key"   # what tests/serve/conftest.py's servers require
AUTH = {"Authorization": f"Bearer {API_KEY}"}


def wait_until(cond, timeout=20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def error_of(resp: httpx.Response, status: int) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]
    return body["error"]


@pytest.fixture
def raw(server):
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as h:
        yield h


def test_api_key_is_checked_on_every_route_but_health(server):
    with httpx.Client(base_url=server.url, timeout=30) as h:
        assert h.get("/health").json()["status"] == "ok"
        for method, path in (("GET", "/v1/models"), ("GET", "/metrics"), ("POST", "/v1/completions"),
                             ("POST", "/v1/chat/completions"), ("POST", "/tokenize"), ("POST", "/detokenize")):
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {API_KEY}"}):
                err = error_of(h.request(method, path, headers=headers, json={}), 401)
                assert err["code"] == "invalid_api_key"
    bad = openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.completions.create(model="tiny", prompt="x", max_tokens=1)


def test_unknown_paths_are_404_objects_counted_as_other(raw):
    err = error_of(raw.get("/v1/nothing-here-123"), 404)
    assert err["type"] == "not_found_error"
    assert '{endpoint="other",status="404"}' in raw.get("/metrics").text
    assert "nothing-here" not in raw.get("/metrics").text


def test_malformed_json_is_a_400(raw):
    err = error_of(raw.post("/v1/completions", content=b'{"prompt": "x",', headers={"Content-Type": "application/json"}), 400)
    assert err["type"] == "invalid_request_error" and err["code"] == "invalid_json"
    error_of(raw.post("/v1/completions", content=b"[1, 2]", headers={"Content-Type": "application/json"}), 400)
    error_of(raw.post("/v1/chat/completions", content=b"\xff\xfe", headers={"Content-Type": "application/json"}), 400)


@pytest.mark.parametrize("path, body, param", [
    ("/v1/completions", {"prompt": "x", "temperature": -1}, "temperature"),
    ("/v1/completions", {"prompt": "x", "top_p": 1.5}, "top_p"),
    ("/v1/completions", {"prompt": "x", "max_tokens": -3}, "max_tokens"),
    ("/v1/completions", {"prompt": "x", "n": 0}, "n"),
    ("/v1/completions", {"prompt": "x", "n": 99}, "n"),
    ("/v1/completions", {"prompt": "x", "logprobs": 50}, "logprobs"),
    ("/v1/completions", {"prompt": "x", "stop": 7}, "stop"),
    ("/v1/completions", {"prompt": "x", "seed": "abc"}, "seed"),
    ("/v1/completions", {"prompt": "x", "logit_bias": {"5": 1.0}}, "logit_bias"),
    ("/v1/completions", {}, "prompt"),
    ("/v1/completions", {"prompt": []}, "prompt"),
    ("/v1/completions", {"prompt": [1, 99999999]}, "prompt"),
    ("/v1/completions", {"prompt": "word " * 400}, "prompt"),          # longer than the context
    ("/v1/chat/completions", {"messages": []}, "messages"),
    ("/v1/chat/completions", {"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2}, "top_logprobs"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "presence_penalty": 3}, "presence_penalty"),
    ("/detokenize", {"tokens": [-1]}, "tokens"),
    ("/v1/completions", {"prompt": ["a"] * 6, "n": 16}, "n"),            # 96 > 16 slots + 64 queue places
])
def test_a_bad_field_is_a_400_naming_it(raw, path, body, param):
    err = error_of(raw.post(path, json=body), 400)
    assert err["param"] == param, err


def test_oversize_body_is_a_413(start_server):
    with start_server(n_slots=1, n_ctx=64, max_queue=0, max_body_bytes=2000) as s, \
            httpx.Client(base_url=s.url, headers=AUTH, timeout=30) as h:
        big = json.dumps({"prompt": "x" * 5000}).encode()
        error_of(h.post("/v1/completions", content=big, headers={"Content-Type": "application/json"}), 413)

        def chunks():                       # no Content-Length: counted as it streams in
            for i in range(0, len(big), 500):
                yield big[i:i + 500]
        error_of(h.post("/v1/completions", content=chunks(), headers={"Content-Type": "application/json"}), 413)
        ok = h.post("/v1/completions", json={"prompt": "x", "max_tokens": 1})
        assert ok.status_code == 200


def _open_stream(h: httpx.Client, max_tokens: int):
    """A streaming request held open; returns (response, context manager)."""
    cm = h.stream("POST", "/v1/completions", json={"prompt": "hold the slot", "max_tokens": max_tokens,
                                                   "stream": True, "temperature": 0})
    return cm.__enter__(), cm


# Long generations (LONG tokens in a context of 2048) keep a slot busy for seconds whatever the
# machine's speed, so the tests below never race the end of a generation.
LONG = 1500


def test_full_queue_answers_503_with_retry_after(start_server):
    with start_server(n_slots=1, n_ctx=2048, max_queue=1) as s, \
            httpx.Client(base_url=s.url, headers=AUTH, timeout=60) as h1, \
            httpx.Client(base_url=s.url, headers=AUTH, timeout=60) as h2, \
            httpx.Client(base_url=s.url, headers=AUTH, timeout=60) as h3:
        engine = s.app.state.engine
        r1, cm1 = _open_stream(h1, LONG)
        r2, cm2 = _open_stream(h2, LONG)
        assert wait_until(lambda: engine.load == 2)
        resp = h3.post("/v1/completions", json={"prompt": "one more", "max_tokens": 1})
        err = error_of(resp, 503)
        assert resp.headers["Retry-After"] == "1" and err["code"] == "queue_full"
        with pytest.raises(openai.APIStatusError) as e:
            openai.OpenAI(base_url=f"{s.url}/v1", api_key=API_KEY, max_retries=0).chat.completions.create(
                model="tiny", messages=[{"role": "user", "content": "x"}], max_tokens=1)
        assert e.value.status_code == 503
        cm1.__exit__(None, None, None)
        cm2.__exit__(None, None, None)
        assert wait_until(lambda: engine.load == 0)
        assert h3.post("/v1/completions", json={"prompt": "now", "max_tokens": 1}).status_code == 200
        assert "bitnet_lab_rejected_queue_full_total 2" in h3.get("/metrics").text


def test_a_client_that_disconnects_mid_stream_frees_its_slot(start_server):
    with start_server(n_slots=1, n_ctx=2048, max_queue=0) as s, \
            httpx.Client(base_url=s.url, headers=AUTH, timeout=60) as h:
        engine = s.app.state.engine
        resp, cm = _open_stream(h, LONG)
        lines = resp.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))
        assert json.loads(first[6:])["choices"][0]["text"] is not None
        n_before = s.app.state.metrics.generated_tokens
        cm.__exit__(None, None, None)          # the client goes away after one token
        assert wait_until(lambda: engine.load == 0, timeout=10)
        assert s.app.state.metrics.generated_tokens - n_before < LONG // 2   # it did not run to the end
        assert s.app.state.metrics.cancelled >= 1
        assert h.post("/v1/completions", json={"prompt": "next", "max_tokens": 1}).status_code == 200


def test_a_client_that_disconnects_while_waiting_frees_its_slot(start_server):
    with start_server(n_slots=1, n_ctx=2048, max_queue=0) as s:
        engine = s.app.state.engine
        with httpx.Client(base_url=s.url, headers=AUTH, timeout=0.3) as h, pytest.raises(httpx.TimeoutException):
            h.post("/v1/completions", json={"prompt": "a long answer", "max_tokens": LONG, "temperature": 0})
        assert wait_until(lambda: engine.load == 0, timeout=10)
        assert s.app.state.metrics.cancelled >= 1
        assert s.app.state.metrics.generated_tokens < LONG // 2


def test_a_step_that_raises_fails_its_requests_and_the_server_goes_on(start_server, tiny, monkeypatch):
    with start_server(n_slots=2, n_ctx=64, max_queue=2) as s, \
            httpx.Client(base_url=s.url, headers=AUTH, timeout=60) as h:
        real = tiny.runner.forward_batch
        calls = {"n": 0}

        def broken_once(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == 1:
                raise RuntimeError("injected fault")
            return real(*args, **kwargs)

        monkeypatch.setattr(tiny.runner, "forward_batch", broken_once)
        err = error_of(h.post("/v1/completions", json={"prompt": "x", "max_tokens": 2}), 500)
        assert "injected fault" in err["message"] and err["type"] == "server_error"
        stream = h.post("/v1/completions", json={"prompt": "x", "max_tokens": 2, "stream": True})
        assert stream.status_code == 200 and stream.text.rstrip().endswith("data: [DONE]")
        assert s.app.state.engine.load == 0
