"""The server under load (bitnet_lab.bench.serve): a bounded load test on loopback — 32
concurrent clients x 8 requests with fixed seeds, every request answered and none lost — and
`bitnet-lab bench --serve`'s report (aggregate tokens/s vs concurrency next to the single-request
decode, then the load test's throughput and p50/p99 latency)."""

from __future__ import annotations

import re

from bitnet_lab.bench.serve import LocalServer, format_load, load_test
from bitnet_lab.cli import main
from bitnet_lab.serve.app import ServeSettings


def test_32_clients_x_8_requests_are_all_answered(tiny_gguf):
    import bitnet_lab

    model = bitnet_lab.load(tiny_gguf)
    with LocalServer(model, ServeSettings(n_slots=8, n_ctx=64, max_queue=32)) as server:
        r = load_test(server.url, clients=32, requests_per_client=8, max_tokens=2, seed=0)
        metrics = server.app.state.metrics
    assert r.sent == 256 and r.accounted == 256 and r.wire_errors == []
    assert r.statuses == {200: 256}
    assert r.completion_tokens == 512 == metrics.generated_tokens
    assert len(r.latencies_s) == 256 and 0 < r.latency(0.5) <= r.latency(0.99) <= r.wall_s
    assert max(metrics.last_batch_size, metrics.batch_rows // metrics.steps) >= 2
    text = format_load(r)
    assert "256 sent; answered: 256 x HTTP 200; wire errors: 0; lost: 0" in text
    assert re.search(r"latency p50 \d+ ms, p99 \d+ ms", text)


def test_bench_serve_reports_tokens_per_s_vs_concurrency(tiny_gguf, capsys):
    assert main(["bench", "--serve", "-m", str(tiny_gguf), "-n", "4", "--concurrency", "1,4",
                 "--serve-requests", "1", "--load-clients", "4", "--load-requests", "2", "-t", "1"]) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert "serve: 4 clients x 1 requests" in captured.err          # progress, on stderr only
    assert "| single decode (no HTTP) | 1 |" in out
    rows = re.findall(r"^\| (\d+) \| (\d+) \| (\d+) \| [\d.]+ \| ([\d.]+) \|", out, re.M)
    assert [(int(c), int(n), int(t)) for c, n, t, _ in rows] == [(1, 1, 4), (4, 4, 16)]
    assert all(float(tps) > 0 for *_, tps in rows)
    assert "8 sent; answered: 8 x HTTP 200; wire errors: 0; lost: 0" in out
    assert "load average" in out          # the machine header: the figures depend on it
