"""The serve tests' servers: the tiny dummy model behind uvicorn on a free loopback port, in a
background thread of the test process (`bitnet_lab.bench.serve.LocalServer`), so the tests can
also look at the scheduler (``server.app.state.engine``)."""

from __future__ import annotations

from typing import Any, Callable

import pytest

API_KEY = "test-key"   # test_faults.py spells it again (a conftest is not imported by name)


@pytest.fixture(scope="session")
def tiny(tiny_gguf):
    import bitnet_lab

    return bitnet_lab.load(tiny_gguf)


@pytest.fixture(scope="session")
def start_server(tiny) -> Callable[..., Any]:
    """``start_server(**settings)`` -> a running LocalServer (a context manager)."""
    from bitnet_lab.bench.serve import LocalServer
    from bitnet_lab.serve.app import ServeSettings

    def start(**kw: Any) -> Any:
        kw.setdefault("api_key", API_KEY)
        kw.setdefault("model_name", "tiny")
        return LocalServer(tiny, ServeSettings(**kw))

    return start


@pytest.fixture(scope="module")
def server(start_server):
    """16 slots of 128 tokens, the API key `API_KEY`: what most tests share."""
    with start_server(n_slots=16, n_ctx=128, max_queue=64, prefill_chunk=16) as s:
        yield s


@pytest.fixture
def client(server):
    import openai

    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0, timeout=120)

