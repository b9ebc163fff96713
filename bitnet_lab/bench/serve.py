"""`bitnet-lab bench --serve`: the HTTP server under load, over loopback.

* :func:`load_test` — ``clients`` threads, each sending ``requests_per_client`` completions one
  after the other (fixed seeds), against a running server; it stops by itself. Every request is
  accounted for: answered (and how), refused, or failed on the wire — none may be lost.
  Throughput, p50 / p99 latency and the aggregate tokens/s come back in a `LoadResult`.
* :func:`concurrency_sweep` — one in-process server (`LocalServer`) with a slot per client of
  the largest level, a load test at each concurrency level, and, in the same run, the model's
  single-request decode without HTTP (`bitnet_lab.generate.generate`): what batching adds is the
  aggregate tokens/s at N clients over that figure.

The clients use the standard library's ``http.client`` (one keep-alive connection each), so the
benchmark needs nothing the server does not. Nothing here prints: `format_sweep` returns text.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

from bitnet_lab.errors import ConfigError

__all__ = ["LoadResult", "LocalServer", "load_test", "concurrency_sweep", "format_load", "format_sweep",
           "PROMPTS"]

# Short varied prompts: the load test measures the server, not the prefill of long prompts.
PROMPTS = (
    "The quick brown fox", "Once upon a time", "In a distant galaxy", "The recipe calls for",
    "def fibonacci(n):", "Dear colleagues,", "The weather today is", "import numpy as np",
    "Breaking news:", "The meaning of life", "Step one of the plan", "A haiku about the sea",
)


@dataclass
class LoadResult:
    """What a load test saw: one entry per request sent."""

    clients: int
    requests_per_client: int
    wall_s: float
    latencies_s: list = field(default_factory=list)     # answered requests (HTTP 200)
    completion_tokens: int = 0
    statuses: dict = field(default_factory=dict)          # HTTP status -> count
    wire_errors: list = field(default_factory=list)       # (request, message): no HTTP answer at all

    @property
    def sent(self) -> int:
        return self.clients * self.requests_per_client

    @property
    def answered(self) -> int:
        return self.statuses.get(200, 0)

    @property
    def accounted(self) -> int:
        """Requests that got some HTTP answer or a wire error: equals `sent` when none was lost."""
        return sum(self.statuses.values()) + len(self.wire_errors)

    @property
    def requests_per_s(self) -> float:
        return self.answered / self.wall_s if self.wall_s > 0 else float("nan")

    @property
    def tokens_per_s(self) -> float:
        return self.completion_tokens / self.wall_s if self.wall_s > 0 else float("nan")

    def latency(self, q: float) -> float:
        """The ``q`` quantile of the answered requests' latency in seconds (nearest rank)."""
        if not self.latencies_s:
            return float("nan")
        xs = sorted(self.latencies_s)
        return xs[min(len(xs) - 1, max(0, int(round(q * len(xs) + 0.5)) - 1))]


def _post(conn: http.client.HTTPConnection, path: str, body: dict, api_key: Optional[str]) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    conn.request("POST", path, body=json.dumps(body), headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    try:
        return resp.status, json.loads(data)
    except ValueError:
        return resp.status, {}


def load_test(url: str, *, clients: int, requests_per_client: int, max_tokens: int = 16, seed: int = 0,
              temperature: float = 0.8, api_key: Optional[str] = None, prompts: Sequence[str] = PROMPTS,
              timeout_s: float = 600.0) -> LoadResult:
    """``clients`` threads x ``requests_per_client`` completions against ``url`` (``http://host:port``);
    request k gets prompt ``prompts[k % len]`` and seed ``seed + k``. Returns when every request has
    an answer or an error (each connection times out after ``timeout_s``)."""
    if clients < 1 or requests_per_client < 1:
        raise ConfigError(f"a load test needs clients >= 1 and requests >= 1, got {clients} x {requests_per_client}")
    host, port = _host_port(url)
    lock = threading.Lock()
    result = LoadResult(clients, requests_per_client, 0.0)
    start = threading.Barrier(clients + 1)

    def client(i: int) -> None:
        conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
        start.wait()
        for j in range(requests_per_client):
            k = i * requests_per_client + j
            body = {"prompt": prompts[k % len(prompts)], "max_tokens": max_tokens, "temperature": temperature,
                    "seed": seed + k}
            t0 = time.perf_counter()
            try:
                status, data = _post(conn, "/v1/completions", body, api_key)
            except (OSError, http.client.HTTPException) as e:
                with lock:
                    result.wire_errors.append((k, f"{type(e).__name__}: {e}"))
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
                continue
            dt = time.perf_counter() - t0
            ok = status == 200 and data.get("choices") and data["choices"][0].get("finish_reason")
            with lock:
                result.statuses[status] = result.statuses.get(status, 0) + 1
                if ok:
                    result.latencies_s.append(dt)
                    result.completion_tokens += int(data.get("usage", {}).get("completion_tokens", 0))
                elif status == 200:   # a 200 without a finished choice is a broken answer
                    result.statuses[200] -= 1
                    result.wire_errors.append((k, f"malformed answer: {str(data)[:200]}"))
        conn.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    result.wall_s = time.perf_counter() - t0
    return result


def _host_port(url: str) -> tuple[str, int]:
    rest = url.split("://", 1)[-1].split("/", 1)[0]
    host, _, port = rest.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"expected a URL like http://127.0.0.1:8080, got {url!r}")
    return host.strip("[]"), int(port)


class LocalServer:
    """`bitnet_lab.serve` on a free loopback port in a background thread, as a context manager::

        with LocalServer(model, ServeSettings(n_slots=8)) as server:
            load_test(server.url, clients=8, requests_per_client=4)
    """

    def __init__(self, model: Any, settings: Any, *, shutdown_timeout: float = 10.0):
        from bitnet_lab.serve.app import create_app, graceful_server

        self.app = create_app(model, settings)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = graceful_server(self.app, shutdown_timeout=shutdown_timeout, log_level="error")
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._sock]}, daemon=True)

    def __enter__(self) -> "LocalServer":
        self._thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ConfigError("the server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self._thread.join(60)
        self._sock.close()


@dataclass
class SweepRow:
    concurrency: int
    result: LoadResult


@dataclass
class Sweep:
    rows: list
    single_decode_tokens_per_s: float
    single_decode_tokens: int
    max_tokens: int
    n_slots: int


def concurrency_sweep(model: Any, *, levels: Sequence[int] = (1, 2, 4, 8, 16), requests_per_client: int = 2,
                      max_tokens: int = 32, n_ctx: int = 256, seed: int = 0,
                      on_level: Optional[Callable[[str], None]] = None) -> Sweep:
    """Aggregate tokens/s against concurrency on one in-process server with ``max(levels)``
    slots, and the single-request decode without HTTP in the same run (module docstring).
    ``on_level(what)`` is told before each part starts (the CLI shows it as progress)."""
    say = on_level or (lambda what: None)
    from bitnet_lab.generate.loop import DoneEvent, generate
    from bitnet_lab.generate.sampling import make_sampler
    from bitnet_lab.serve.app import ServeSettings

    levels = sorted({int(c) for c in levels})
    if not levels or levels[0] < 1:
        raise ConfigError(f"concurrency levels must be >= 1, got {list(levels)}")
    say(f"single-request decode, {max_tokens} tokens")
    for _ in generate(model, PROMPTS[0], n=2, n_ctx=n_ctx, seed=seed):   # warm-up
        pass
    done = None
    for ev in generate(model, PROMPTS[0], n=max_tokens, sampler=make_sampler(temp=0.8), seed=seed, n_ctx=n_ctx,
                       ignore_eos=True):
        if isinstance(ev, DoneEvent):
            done = ev
    rows = []
    settings = ServeSettings(n_slots=max(levels), n_ctx=n_ctx, max_queue=max(levels) * requests_per_client)
    with LocalServer(model, settings) as server:
        load_test(server.url, clients=1, requests_per_client=1, max_tokens=2, seed=seed)   # warm-up
        for c in levels:
            say(f"{c} clients x {requests_per_client} requests")
            rows.append(SweepRow(c, load_test(server.url, clients=c, requests_per_client=requests_per_client,
                                              max_tokens=max_tokens, seed=seed)))
    return Sweep(rows, done.eval_tokens_per_s, done.n_eval, max_tokens, max(levels))


def format_load(r: LoadResult) -> str:
    """One paragraph: what was sent, what came back, throughput and latency."""
    lost = r.sent - r.accounted
    statuses = ", ".join(f"{n} x HTTP {s}" for s, n in sorted(r.statuses.items())) or "none"
    lines = [f"load test: {r.clients} clients x {r.requests_per_client} requests = {r.sent} sent; "
             f"answered: {statuses}; wire errors: {len(r.wire_errors)}; lost: {lost}",
             f"  {r.wall_s:.2f} s wall, {r.requests_per_s:.2f} requests/s, {r.completion_tokens} tokens "
             f"= {r.tokens_per_s:.1f} tokens/s aggregate; latency p50 {r.latency(0.5) * 1e3:.0f} ms, "
             f"p99 {r.latency(0.99) * 1e3:.0f} ms"]
    for k, msg in r.wire_errors[:5]:
        lines.append(f"  request {k}: {msg}")
    return "\n".join(lines)


def format_sweep(s: Sweep) -> str:
    """A markdown table: aggregate tokens/s vs concurrency, the single-request decode first."""
    out = [f"serve: {s.n_slots} slots, {s.max_tokens} tokens per request, temperature 0.8",
           "",
           "| clients | requests | tokens | wall s | aggregate t/s | x single | p50 ms | p99 ms | not 200 |",
           "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
           f"| single decode (no HTTP) | 1 | {s.single_decode_tokens} | | {s.single_decode_tokens_per_s:.1f} | 1.00 "
           f"| | | |"]
    for row in s.rows:
        r = row.result
        out.append(f"| {row.concurrency} | {r.sent} | {r.completion_tokens} | {r.wall_s:.2f} | {r.tokens_per_s:.1f} "
                   f"| {r.tokens_per_s / s.single_decode_tokens_per_s:.2f} | {r.latency(0.5) * 1e3:.0f} "
                   f"| {r.latency(0.99) * 1e3:.0f} | {r.sent - r.answered} |")
    return "\n".join(out) + "\n"
