"""bitnet_lab.bench and `bitnet-lab bench`: the protocol, the statistics, the tables, the
ceilings, the roofline arithmetic, the profiles, the baselines' parsing and the CLI.

No test asserts a speed: figures must only exist, be positive and finite, and be computed the
documented way from the samples. Timings of the protocol tests come from an injected clock.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import statistics
import sys
from pathlib import Path

import numpy as np
import pytest

from bitnet_lab import bench as B
from bitnet_lab.bench import machine as bench_machine
from bitnet_lab.bench import profile as bench_profile
from bitnet_lab.bench.table import (
    BenchRow,
    BenchTable,
    mean_sd,
    rows_from_llama_bench_json,
)
from bitnet_lab.errors import BitnetLabError, ConfigError, KernelError
from bitnet_lab.model import Model
from bitnet_lab.tensors import FloatTensor, TernaryWeight
from bitnet_lab.tools.testing import tiny_model

from bitnet_lab import kernels
from bitnet_lab.kernels.native import _k
HAVE_ENGINE = True
try:
    import bitnet_lab.engine  # noqa: F401
except ImportError:  # pragma: no cover - before the engine is built
    HAVE_ENGINE = False
needs_engine = pytest.mark.skipif(not HAVE_ENGINE, reason="the native engine is not built")


# =============================================================================================
# The protocol, on a fake runner and a fake clock
# =============================================================================================


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000
        self.reads = 0

    def __call__(self) -> int:
        self.reads += 1
        return self.now


class FakeCache:
    def __init__(self, n_ctx: int) -> None:
        self.n_ctx, self.pos = n_ctx, 0


class FakeRunner:
    """Each token costs `per_token` ns on the fake clock; the very first call also costs
    `first_call` ns (a JIT compile); records every call."""

    def __init__(self, clock: FakeClock, *, per_token=1_000, first_call=10**9, vocab=50):
        self.clock, self.per_token, self.first_call, self.vocab_size = clock, per_token, first_call, vocab
        self.calls: list[tuple[list[int], FakeCache, dict]] = []
        self.caches: list[FakeCache] = []

    def new_cache(self, n_ctx):
        c = FakeCache(n_ctx)
        self.caches.append(c)
        return c

    def forward(self, ids, cache, *, last_only=False):
        return self._step(ids, cache, {"last_only": last_only})

    def _step(self, ids, cache, kw):
        ids = [int(i) for i in ids]
        assert cache.pos + len(ids) <= cache.n_ctx
        self.clock.now += self.per_token * len(ids) + (self.first_call if not self.calls else 0)
        self.calls.append((ids, cache, kw))
        cache.pos += len(ids)
        rows = 1 if kw.get("last_only") else len(ids)
        return np.zeros((rows, self.vocab_size), np.float32)


def test_pp_protocol_samples_warmup_and_fresh_caches():
    clock = FakeClock()
    r = FakeRunner(clock)
    samples = B.run_test(r, "pp", 8, repeat=3, n_ctx=16, rng=np.random.default_rng(0), bos_id=1, clock=clock)
    assert samples == (8_000, 8_000, 8_000)          # the warm-up's 1 s compile is not in any sample
    assert len(r.calls) == 1 + 3                      # warm-up + timed runs, one batch each
    assert all(len(ids) == 8 and ids[0] == 1 for ids, _, _ in r.calls)
    assert all(kw == {"last_only": True} for _, _, kw in r.calls)
    assert len({id(c) for _, c, _ in r.calls}) == 4   # a fresh cache every run
    assert clock.reads == 2 * 3                       # the clock is read only around timed runs


def test_tg_protocol_one_token_at_a_time():
    clock = FakeClock()
    r = FakeRunner(clock)
    samples = B.run_test(r, "tg", 5, repeat=2, n_ctx=5, rng=np.random.default_rng(0), bos_id=7, clock=clock)
    assert samples == (5_000, 5_000)
    assert [len(ids) for ids, _, _ in r.calls] == [1] * (1 + 2 * 5)   # warm-up: one token
    assert all(kw == {"last_only": False} for _, _, kw in r.calls)    # tg never asks for last_only
    timed = r.calls[1:]
    assert [ids[0] for ids, _, _ in timed[::5]] == [7, 7]             # BOS first in every run
    assert [c.pos for c in r.caches[1:]] == [5, 5]


def test_no_warmup_puts_the_first_call_in_the_samples():
    clock = FakeClock()
    r = FakeRunner(clock)
    samples = B.run_test(r, "pp", 4, repeat=2, n_ctx=4, rng=np.random.default_rng(0), warmup=False, clock=clock)
    assert samples == (10**9 + 4_000, 4_000)


def test_protocol_rejects_bad_arguments():
    clock = FakeClock()
    r = FakeRunner(clock)
    rng = np.random.default_rng(0)
    with pytest.raises(ConfigError, match="n_ctx"):
        B.run_test(r, "tg", 9, repeat=1, n_ctx=8, rng=rng, clock=clock)
    with pytest.raises(ConfigError):
        B.run_test(r, "xx", 4, repeat=1, n_ctx=8, rng=rng, clock=clock)
    with pytest.raises(ConfigError):
        B.run_test(r, "pp", 4, repeat=0, n_ctx=8, rng=rng, clock=clock)
    r.per_token, r.first_call = 0, 0
    with pytest.raises(BitnetLabError, match="clock did not advance"):
        B.run_test(r, "pp", 4, repeat=1, n_ctx=8, rng=rng, clock=clock)


# =============================================================================================
# Statistics (llama-bench's formulas) on injected samples
# =============================================================================================


def test_statistics_are_over_per_run_rates():
    row = BenchRow("m", 1, 1, "native", "avx2", 1, 0, 8, samples_ns=(10**9, 2 * 10**9, 4 * 10**9))
    assert row.samples_ts == (8.0, 4.0, 2.0)
    assert row.avg_ts == pytest.approx(14 / 3)                          # not 8 / mean(t) = 3.43
    assert row.stddev_ts == pytest.approx(statistics.stdev([8.0, 4.0, 2.0]))
    assert row.avg_ns == pytest.approx(7e9 / 3)
    assert row.test == "tg8"
    one = BenchRow("m", 1, 1, "native", "avx2", 1, 512, 0, samples_ns=(5 * 10**8,))
    assert (one.avg_ts, one.stddev_ts, one.test) == (1024.0, 0.0, "pp512")
    assert BenchRow("m", 1, 1, "x", "-", 1, 4, 2, samples_ns=(10**9,)).test == "pp4+tg2"
    assert mean_sd([]) == (pytest.approx(math.nan, nan_ok=True), 0.0)


def test_llama_bench_stdev_formula_agrees():
    ts = [31.2, 29.8, 30.5, 33.1, 28.9]
    n, mean = len(ts), sum(ts) / len(ts)
    llama = math.sqrt(sum(t * t for t in ts) / (n - 1) - mean * mean * n / (n - 1))
    assert mean_sd(ts)[1] == pytest.approx(llama, rel=1e-9)


# =============================================================================================
# bench() on a tiny model and the table formats
# =============================================================================================


def _tiny(layout="i2_s", **kw) -> Model:
    cfg, tensors = tiny_model(layout=layout, hidden=128, ffn=256, n_heads=4, vocab=96, **kw)
    return Model(cfg, tensors, {}, Path("tiny.gguf"), "gguf", backend="native")


@pytest.fixture(scope="module")
def tiny_table() -> BenchTable:
    if not HAVE_ENGINE:
        pytest.skip("the native engine is not built")
    return B.bench(_tiny(), pp=(8,), tg=(4,), threads=(1, 2), repeat=2)


@needs_engine
def test_bench_rows_samples_and_labels(tiny_table):
    rows = tiny_table.rows
    assert [(r.test, r.threads) for r in rows] == [("pp8", 1), ("tg4", 1), ("pp8", 2), ("tg4", 2)]
    for r in rows:
        assert len(r.samples_ns) == 2 and all(s > 0 for s in r.samples_ns)
        assert r.backend == "native" and r.isa == kernels.active_isa()
        assert r.model.startswith("bitnet-b1.58") and r.model.endswith("I2_S")
        assert math.isfinite(r.avg_ts) and r.avg_ts > 0
    assert tiny_table.machine["cpu"]


@needs_engine
def test_markdown_table_parses(tiny_table):
    lines = tiny_table.to_markdown().splitlines()
    table = [ln for ln in lines if ln.startswith("|")]
    header = [c.strip() for c in table[0].strip("|").split("|")]
    assert header == ["model", "size", "params", "backend", "isa", "threads", "test", "t/s"]
    body = table[2:]
    assert len(body) == 4
    for ln, row in zip(body, tiny_table.rows):
        cells = [c.strip() for c in ln.strip("|").split("|")]
        assert len(cells) == len(header)
        mean, sd = (float(x) for x in cells[-1].split(" ± "))
        assert mean == pytest.approx(row.avg_ts, abs=0.006) and sd == pytest.approx(row.stddev_ts, abs=0.006)
        assert cells[6] == row.test


@needs_engine
def test_csv_and_json_round_trip(tiny_table):
    recs = list(csv.DictReader(io.StringIO(tiny_table.to_csv())))
    assert len(recs) == 4
    assert [int(x) for x in recs[0]["samples_ns"].split(";")] == list(tiny_table.rows[0].samples_ns)
    assert float(recs[1]["avg_ts"]) == pytest.approx(tiny_table.rows[1].avg_ts)
    doc = json.loads(tiny_table.to_json())
    assert isinstance(doc, list) and len(doc) == 4
    assert {"n_prompt", "n_gen", "n_threads", "samples_ns", "avg_ts", "stddev_ts", "cpu_info"} <= set(doc[0])
    back = rows_from_llama_bench_json(tiny_table.to_json())
    assert [(r.test, r.threads, r.samples_ns, r.backend, r.isa) for r in back] == \
           [(r.test, r.threads, r.samples_ns, r.backend, r.isa) for r in tiny_table.rows]


@needs_engine
def test_html_repr(tiny_table):
    h = tiny_table._repr_html_()
    assert h.count("<tr>") == 1 + 4 and "t/s" in h


def test_bench_rejects_nothing_to_do():
    with pytest.raises(ConfigError):
        B.bench(_tiny(), pp=(), tg=(), threads=(1,))
    with pytest.raises(ConfigError, match="backend"):
        B.bench(_tiny(), pp=(4,), tg=(), threads=(1,), backend="gpu")


# =============================================================================================
# Machine ceilings
# =============================================================================================


@pytest.mark.parametrize("isa", kernels.available_isas())
def test_dot_kernel_matches_its_contract(isa):
    i = kernels.ISA_ORDER.index(isa)
    info = _k.ceiling_info(i)
    assert info is not None
    rng = np.random.default_rng(1)
    a = rng.integers(0, 3, info["a_vectors"] * info["vec_bytes"], dtype=np.uint8)
    b = rng.integers(-128, 128, info["vec_bytes"], dtype=np.int8)
    for iters in (0, 1, 5, 70_001):                     # 70k wraps every 16-bit lane
        got = _k.ceiling_dot(a, b, iters, i, 2)
        assert list(got) == [bench_machine.dot_expected(info, a, b, iters)] * 2


@pytest.mark.parametrize("isa", kernels.available_isas())
def test_read_kernel_sums_every_byte(isa):
    i = kernels.ISA_ORDER.index(isa)
    buf = np.random.default_rng(2).integers(0, 256, 256 * 37, dtype=np.uint8)  # odd number of units
    for t in (1, 2, 3):
        assert _k.ceiling_read(buf, i, t) == int(buf.sum(dtype=np.uint64))
    with pytest.raises(ValueError, match="multiple of 256"):
        _k.ceiling_read(buf[:-1], i, 1)


@pytest.mark.parametrize("isa", kernels.available_isas())
def test_busy_read_kernel_sums_every_byte_whatever_the_arithmetic(isa):
    i = kernels.ISA_ORDER.index(isa)
    if _k.ceiling_info(i)["busy_insn"] is None:
        with pytest.raises(ValueError, match="no busy loop"):
            _k.ceiling_busy(np.zeros(256, np.uint8), 4, i, 1)
        return
    buf = np.random.default_rng(3).integers(0, 256, 256 * 37, dtype=np.uint8)
    for fmas in (0, 4, 16, 4096):
        for t in (1, 2, 3):
            assert _k.ceiling_busy(buf, fmas, i, t) == int(buf.sum(dtype=np.uint64))
    for bad in (-4, 6, 4100):
        with pytest.raises(ValueError, match="multiple of 4"):
            _k.ceiling_busy(buf, bad, i, 1)
    with pytest.raises(ValueError, match="multiple of 256"):
        _k.ceiling_busy(buf[:-1], 4, i, 1)


def test_busy_ceiling_reports_what_it_measured(monkeypatch):
    x = B.busy_bandwidth(1, 16, nbytes=1 << 16, repeat=2)
    assert x.what == "read + 16 FMA/64 B" and x.unit == "GB/s" and len(x.samples) == 2
    assert all(math.isfinite(s) and s > 0 for s in x.samples) and "16 ×" in x.detail
    monkeypatch.setattr(_k, "ceiling_busy", lambda buf, f, i, t: 12345)
    with pytest.raises(KernelError, match="no bandwidth reported"):
        B.busy_bandwidth(1, 16, nbytes=1 << 16, repeat=1)
    monkeypatch.setattr(_k, "ceiling_info", lambda i: {"busy_insn": None})
    with pytest.raises(KernelError, match="no busy read loop"):
        B.busy_bandwidth(1, 16, nbytes=1 << 16, repeat=1)


def test_ceilings_are_positive_and_finite():
    c = B.machine_ceilings(threads=(1, 2), nbytes=1 << 20, repeat=2, dot_seconds=0.002)
    busy = {(f"read + {f} FMA/64 B", t) for f in bench_machine.BUSY_FMAS for t in (1, 2)}
    assert {(x.what, x.threads) for x in c.ceilings} == {("memory read", 1), ("memory read", 2),
                                                          ("int8 dot", 1), ("int8 dot", 2)} | busy
    for x in c.ceilings:
        assert len(x.samples) == 2 and all(math.isfinite(s) and s > 0 for s in x.samples)
    assert c.bandwidth(2) == max(x.best for x in c.ceilings if x.what == "memory read")
    assert "Machine ceilings" in c.to_markdown()


def test_wrong_checksum_is_an_error_not_a_figure(monkeypatch):
    monkeypatch.setattr(_k, "ceiling_read", lambda buf, i, t: 12345)
    with pytest.raises(KernelError, match="no bandwidth reported"):
        B.memory_bandwidth(1, nbytes=1 << 16, repeat=1)


def test_bandwidth_bound_uses_the_best_of_fewer_threads():
    C = B.Ceiling
    c = B.MachineCeilings([C("memory read", "x", 1, "GB/s", (10.0, 9.0), ""),
                           C("memory read", "x", 4, "GB/s", (8.0,), ""),
                           C("int8 dot", "x", 4, "GOP/s", (100.0,), "")])
    assert c.bandwidth(1) == 10.0 and c.bandwidth(2) == 10.0 and c.bandwidth(4) == 10.0
    assert c.bandwidth(None) == 10.0
    assert c.int8_peak(1) == 100.0          # nothing measured at <= 1 thread: the nearest count
    assert B.MachineCeilings([]).bandwidth(1) is None


# =============================================================================================
# Roofline arithmetic on hand-built models
# =============================================================================================


def _handmade(tied: bool) -> Model:
    cfg, _ = tiny_model(layout="int8", hidden=64, ffn=128, n_heads=4, vocab=100)
    cfg = cfg.replace(tied_output=tied, n_layers=1)
    t = {}
    for name in ("blk.0.attn_q.weight", "blk.0.ffn_down.weight"):
        t[name] = TernaryWeight(name, "i2_s", (64, 128), np.zeros(64 * 128 // 4, np.uint8), scale=np.float32(1))
    t["token_embd.weight"] = FloatTensor("token_embd.weight", "F16", (100, 64), np.zeros((100, 64), np.float16))
    t["blk.0.attn_norm.weight"] = FloatTensor("blk.0.attn_norm.weight", "F32", (64,), np.zeros(64, np.float32))
    t["output_norm.weight"] = FloatTensor("output_norm.weight", "F32", (64,), np.zeros(64, np.float32))
    if not tied:
        t["output.weight"] = FloatTensor("output.weight", "F32", (100, 64), np.zeros((100, 64), np.float32))
    return Model(cfg, t, {}, Path("hand.gguf"), "gguf")


def test_roofline_arithmetic_tied():
    m = _handmade(tied=True)
    r = B.decode_roofline(m, 10.0)
    ternary = 2 * (64 * 128 // 4 + 32)                 # packed bytes + the 32-byte I2_S tail, two tensors
    assert r.parts["ternary projections"] == ternary
    assert r.parts["lm_head"] == 100 * 64 * 2          # tied: token_embd (F16) is the lm_head
    assert r.parts["embedding row"] == 64 * 2          # one gathered row
    assert r.parts["norms and scales"] == 2 * 64 * 4
    assert r.bytes_per_token == ternary + 12800 + 128 + 512
    assert r.tokens_per_s() == pytest.approx(10e9 / r.bytes_per_token)
    assert r.kv_bytes_per_position == 2 * 1 * m.config.kv_dim * 4
    assert r.tokens_per_s(positions=3) == pytest.approx(10e9 / (r.bytes_per_token + 3 * r.kv_bytes_per_position))


def test_roofline_arithmetic_untied_and_none():
    m = _handmade(tied=False)
    r = B.decode_roofline(m, None)
    assert r.parts["lm_head"] == 100 * 64 * 4          # output.weight, F32
    assert r.parts["embedding row"] == 64 * 2
    assert r.tokens_per_s() is None and r.tokens_per_s(5.0) == pytest.approx(5e9 / r.bytes_per_token)
    assert B.decode_bytes(m, kv_dtype="f16").kv_bytes_per_position == 2 * m.config.kv_dim * 2


def test_roofline_counts_tq_block_scales_once():
    cfg, tensors = tiny_model(layout="tq2_0", hidden=256, ffn=256, n_heads=4, vocab=64, n_layers=1)
    m = Model(cfg, tensors, {}, Path("tq.gguf"), "gguf")
    packed = sum(t.data.nbytes for t in tensors.values() if isinstance(t, TernaryWeight))
    assert B.decode_bytes(m).parts["ternary projections"] == packed   # 66-byte blocks hold d already
    assert packed == sum(t.shape[0] * t.shape[1] // 256 * 66 for t in tensors.values() if isinstance(t, TernaryWeight))


def test_attach_roofline_marks_only_tg_rows():
    m = _handmade(tied=True)
    rows = [BenchRow("m", 1, 1, "native", "x", t, n_prompt, n_gen, samples_ns=(10**9,))
            for t in (1, 2) for n_prompt, n_gen in ((8, 0), (0, 4))]
    c = B.MachineCeilings([B.Ceiling("memory read", "x", 1, "GB/s", (1.0,), ""),
                           B.Ceiling("memory read", "x", 2, "GB/s", (3.0,), "")])
    out = B.attach_roofline(BenchTable(rows, {}), m, c)
    roof = B.decode_bytes(m)
    per_tok = roof.bytes_per_token + 2.5 * roof.kv_bytes_per_position  # tg4 attends over 1..4 positions
    assert roof.kv_bytes_per_position > 0 and B.tg_mean_positions(4) == 2.5
    assert [r.roofline_ts for r in out.rows] == [None, pytest.approx(1e9 / per_tok), None,
                                                 pytest.approx(3e9 / per_tok)]
    assert out.rows[1].roofline_pct == pytest.approx(100 * 4 / (1e9 / per_tok))
    assert "roofline" in out.to_markdown()


def test_attach_roofline_prefers_the_bandwidth_measured_around_the_row():
    m = _handmade(tied=True)
    rows = [BenchRow("m", 1, 1, "native", "x", 1, 0, 4, samples_ns=(10**9,), bandwidth_gbs=bw) for bw in (2.0, None)]
    c = B.MachineCeilings([B.Ceiling("memory read", "x", 1, "GB/s", (1.0,), "")])
    out = B.attach_roofline(BenchTable(rows, {}), m, c)
    roof = B.decode_bytes(m)
    per_tok = roof.bytes_per_token + 2.5 * roof.kv_bytes_per_position
    assert [r.roofline_ts for r in out.rows] == [pytest.approx(2e9 / per_tok), pytest.approx(1e9 / per_tok)]
    assert "measured between the row's runs" in out.to_markdown()
    assert B.attach_roofline(BenchTable(rows[:1], {}), m, None).rows[0].roofline_ts == pytest.approx(2e9 / per_tok)


def test_bench_brackets_tg_rows_with_measured_bandwidth():
    table = B.bench(_tiny(), pp=(8,), tg=(4,), threads=(1,), repeat=2, bracket_bandwidth=True)
    pp, tg = table.rows
    assert pp.bandwidth_gbs is None and pp.roofline_ts is None
    assert tg.bandwidth_gbs is not None and tg.bandwidth_gbs > 0.1  # GB/s, a real measurement
    assert tg.roofline_ts == pytest.approx(B.decode_bytes(_tiny()).tokens_per_s(tg.bandwidth_gbs, positions=2.5))
    assert len(tg.bandwidth_bracket) == 3 and min(tg.bandwidth_bracket) > 0.1  # before run 1, after runs 1 and 2
    assert tg.bandwidth_gbs == pytest.approx(B.bracketed_bandwidth(tg.bandwidth_bracket))
    rec = json.loads(table.to_json())[1]
    assert rec["bandwidth_gbs"] == tg.bandwidth_gbs and rec["bandwidth_bracket"] == list(tg.bandwidth_bracket)


def test_bench_brackets_every_run_outside_the_clock(monkeypatch):
    """The brackets interleave with the timed runs (before run 1, after each run), never inside one."""
    events: list[str] = []
    figures = iter([10.0, 30.0, 10.0, 10.0])

    def fake_bandwidth(runner, buffer):
        events.append("bw")
        return next(figures)

    def clock():
        events.append("clock")
        return len(events) * 1000

    monkeypatch.setattr(B.protocol, "_bandwidth_near", fake_bandwidth)
    monkeypatch.setattr(B.protocol, "read_buffer", lambda nbytes: None)
    table = B.bench(_tiny(), pp=(), tg=(2,), threads=(1,), repeat=3, bracket_bandwidth=True, clock=clock)
    assert events == ["bw"] + ["clock", "clock", "bw"] * 3
    (tg,) = table.rows
    assert tg.bandwidth_bracket == (10.0, 30.0, 10.0, 10.0)
    assert tg.bandwidth_gbs == pytest.approx((30.0 + 30.0 + 10.0) / 3)  # each run's higher side, averaged


def test_bracketed_bandwidth_takes_each_runs_higher_side():
    assert B.bracketed_bandwidth([20.0, 30.0]) == 30.0  # one run: the higher of before / after
    assert B.bracketed_bandwidth([40.0, 20.0, 20.0, 30.0]) == pytest.approx((40 + 20 + 30) / 3)
    with pytest.raises(ConfigError, match="before and after"):
        B.bracketed_bandwidth([25.0])


# =============================================================================================
# Load profile, decode breakdown, kernel microbenchmarks
# =============================================================================================


@needs_engine
def test_load_profile_in_a_fresh_process():
    from bitnet_lab.tools.default_model import default_model_path

    p = B.load_profile(default_model_path(), backend="native", threads=1)
    assert [ph["phase"] for ph in p.phases][1:4] == ["load (open, metadata, map tensors)", "build the native backend",
                                                    "tokenizer (from the file's metadata)"]
    assert all(ph["seconds"] > 0 for ph in p.phases)
    peaks = [ph["peak_rss"] for ph in p.phases]
    assert all(x > 0 for x in peaks) and peaks == sorted(peaks)   # a high-water mark never falls
    assert p.file_bytes == os.path.getsize(default_model_path())
    assert "Load time" in p.to_markdown()


def test_load_profile_reports_the_childs_error(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf")
    with pytest.raises(BitnetLabError, match="child process failed"):
        B.load_profile(bad, backend="native")


@needs_engine
def test_decode_breakdown_parts():
    m = _tiny()
    m = Model(m.config, m.tensors, {}, m.source, "gguf", backend="native", threads=1)
    d = B.decode_breakdown(m, position=4, repeat=3, method="differences")
    assert d.step_ns > 0 and d.n_layers == m.config.n_layers
    assert set(d.projection_ns) == set(bench_profile.PROJECTIONS)
    assert all(v > 0 for v in d.projection_ns.values())
    assert d.layer_ns is not None and d.fixed_ns is not None
    assert d.fixed_ns + d.n_layers * d.layer_ns == pytest.approx(d.step_ns)
    assert "Decode step breakdown" in d.to_markdown()


@needs_engine
def test_decode_breakdown_from_the_engine_timers():
    from bitnet_lab.engine import PROF_CLASSES

    m = _tiny()
    m = Model(m.config, m.tensors, {}, m.source, "gguf", backend="native", threads=2)
    d = B.decode_breakdown(m, position=4, repeat=3)  # auto: the native engine has timers
    assert d.ops_ns and set(d.ops_ns) <= set(PROF_CLASSES) and all(v >= 0 for v in d.ops_ns.values())
    assert d.layer_ns is None and not d.projection_ns and d.threads == 2
    parts = dict(d.parts())
    assert parts and all(v > 0 for v in parts.values()) and "lm_head" in parts
    assert 0 < sum(d.ops_ns.values()) <= d.step_ns  # the C region sits inside the timed call
    assert "sum of the ops" in d.to_markdown()
    with pytest.raises(BitnetLabError, match="method"):
        B.decode_breakdown(m, method="guess")


def test_kernel_bench_verifies_then_times():
    from bitnet_lab.bench.kernels import KernelShape

    shapes = [KernelShape("small", 256, 512), KernelShape("lm_head", 384, 256)]
    t = B.kernel_bench("", shapes=shapes, ops=("quantize_act", "i2s_gemv", "tl1_gemv", "i2s_gemm"),
                       threads=(1, 2), repeat=3, budget_s=0.01, gemm_n=4)
    recs = t.records
    assert recs and all(r["verified"] for r in recs)
    assert all(r["gop_s"] > 0 and r["gb_s"] > 0 and r["calls"] >= 3 for r in recs)
    ops = {(r["op"], r["shape"]) for r in recs}
    assert ("i2s_gemv", "lm_head") in ops and ("tl1_gemv", "lm_head") not in ops
    cold = B.kernel_bench("", shapes=shapes[:1], ops=("i2s_gemv",), threads=(1,), repeat=3, cold=True)
    assert all(r["verified"] and r["us"] > 0 for r in cold.records) and any("cold" in n for n in cold.notes)
    versions = {r["version"] for r in recs if r["op"] == "i2s_gemv" and r["shape"] == "small"}
    assert versions == {v for v, _, _ in kernels.kernel_versions()["i2s_gemv"]}
    # the TL prefill GEMMs sit beside the GEMVs where the level has them (amx), checked and timed
    tl = B.kernel_bench("", shapes=shapes[:1], ops=("tl2_gemv", "tl2_gemm"), threads=(1,), repeat=3, budget_s=0.01,
                        gemm_n=20)
    got = {(r["op"], r["version"], r["isa"], r["N"]) for r in tl.records if r["verified"]}
    assert ("tl2_gemm", "amx", "amx", 20) in got if "amx" in kernels.available_isas() else \
        not any(r["op"] == "tl2_gemm" for r in tl.records)
    assert any(op == "tl2_gemv" for op, *_ in got)


def test_kernel_bench_never_times_a_wrong_kernel(monkeypatch):
    from bitnet_lab.bench.kernels import KernelShape

    real = kernels.i2s_gemv
    monkeypatch.setattr(kernels, "i2s_gemv", lambda *a, **k: real(*a, **k) + 1)
    t = B.kernel_bench("", shapes=[KernelShape("s", 128, 256)], ops=("i2s_gemv",), threads=(1,), repeat=3)
    assert t.records and not any(r["verified"] for r in t.records)
    assert all("us" not in r for r in t.records)
    assert "FAILED" in t.to_markdown()


def test_kernel_bench_lm_head_kernels_checked_against_their_twins(monkeypatch):
    """The engine's lm_head kernels run on the lm_head shape only, one version per float level,
    and a wrong one is reported, not timed."""
    from bitnet_lab.bench.kernels import LM_FLOAT_OPS, KernelShape
    from bitnet_lab.kernels import lmhead

    shapes = [KernelShape("small", 256, 512), KernelShape("lm_head", 96, 512)]
    t = B.kernel_bench("", shapes=shapes, ops=("i2s_gemv",), threads=(1, 2), repeat=3, budget_s=0.01)
    lm = [r for r in t.records if r["op"] in LM_FLOAT_OPS]
    assert {r["op"] for r in lm} == set(LM_FLOAT_OPS) and all(r["shape"] == "lm_head" for r in lm)
    assert all(r["verified"] and r["gb_s"] > 0 for r in lm)
    assert {r["isa"] for r in lm} >= {"scalar"} and {r["threads"] for r in lm} == {1, 2}
    real = lmhead.lm_head_q6_k
    monkeypatch.setattr(lmhead, "lm_head_q6_k", lambda *a, **k: real(*a, **k) * 1.0001)
    bad = B.kernel_bench("", shapes=shapes[1:], ops=(), threads=(1,), repeat=3, budget_s=0.01)
    q6 = [r for r in bad.records if r["op"] == "q6_k_lm_gemv"]
    assert q6 and not any(r["verified"] for r in q6)


def test_layout_shapes_of_2b4t():
    shapes = {(s.M, s.K): s.name for s in B.layout_shapes("2B-4T")}
    assert shapes == {(2560, 2560): "q/output", (640, 2560): "k/v", (6912, 2560): "gate/up",
                      (2560, 6912): "down", (128256, 2560): "lm_head"}


# =============================================================================================
# Baselines: llama-bench JSON, external binaries, llama-cpp-python
# =============================================================================================

LLAMA_BENCH_JSON = """[
  {
    "build_commit": "abc1234", "build_number": 1, "cpu_info": "AMD EPYC", "gpu_info": "",
    "backends": "CPU", "model_filename": "m.gguf", "model_type": "bitnet 2B TQ2_0 - 2.06 bpw ternary",
    "model_size": 1100000000, "model_n_params": 2400000000, "n_batch": 2048, "n_ubatch": 512,
    "n_threads": 2, "n_prompt": 128, "n_gen": 0, "test_time": "2025-01-01T00:00:00Z",
    "avg_ns": 1500000000, "stddev_ns": 500000000, "avg_ts": 91.4, "stddev_ts": 30.0,
    "samples_ns": [ 1000000000, 2000000000 ], "samples_ts": [ 128, 64 ]
  },
  {
    "cpu_info": "AMD EPYC", "model_type": "bitnet 2B TQ2_0", "model_size": 1, "model_n_params": 2,
    "n_threads": 2, "n_prompt": 0, "n_gen": 64, "avg_ts": 20.5, "stddev_ts": 0.5
  }
]"""


def test_parse_llama_bench_json_recomputes_from_samples():
    rows = rows_from_llama_bench_json(LLAMA_BENCH_JSON)
    assert [r.test for r in rows] == ["pp128", "tg64"]
    assert rows[0].samples_ns == (10**9, 2 * 10**9)
    assert rows[0].avg_ts == pytest.approx(96.0)       # from the samples (128 and 64 t/s)
    assert rows[1].samples_ns == () and (rows[1].avg_ts, rows[1].stddev_ts) == (20.5, 0.5)
    assert rows[0].backend == "llama-bench" and rows[0].threads == 2
    jsonl = "\n".join(json.dumps(o) for o in json.loads(LLAMA_BENCH_JSON))
    assert [r.test for r in rows_from_llama_bench_json(jsonl)] == ["pp128", "tg64"]


@pytest.mark.parametrize("text, msg", [
    ("", "empty"), ("{oops", "not JSON"), ('[{"n_prompt": 1}]', "n_gen"),
    ('[{"n_prompt": 1, "n_gen": 0, "n_threads": 1}]', "neither samples_ns nor avg_ts"),
    ('[{"n_prompt": 1, "n_gen": 0, "n_threads": 1, "samples_ns": [0]}]', "positive"),
    ('"text"', "expected an object"), ('{"n_gen": 1}', "n_prompt"),
])
def test_parse_llama_bench_json_errors(text, msg):
    with pytest.raises(BitnetLabError, match=msg):
        rows_from_llama_bench_json(text)


def _fake_llama_bench(tmp_path: Path, body: str) -> Path:
    exe = tmp_path / "llama-bench"
    exe.write_text(f"#!{sys.executable}\nimport json, sys\nargv = sys.argv[1:]\n{body}\n")
    exe.chmod(0o755)
    return exe


def test_compare_external_runs_the_binary_with_our_flags(tmp_path):
    body = (
        "a = dict(zip(argv[::2], argv[1:][::2]))\n"
        "assert a['-o'] == 'json' and a['-r'] == '3', argv\n"
        "rows = []\n"
        "for t in a['-t'].split(','):\n"
        "    for p in a['-p'].split(','):\n"
        "        rows.append(dict(model_type='fake', model_size=1, model_n_params=1, n_threads=int(t),\n"
        "                         n_prompt=int(p), n_gen=0, samples_ns=[10**6] * 3))\n"
        "print('llama-bench: some log line')\n"
        "print(json.dumps(rows))\n"
    )
    exe = _fake_llama_bench(tmp_path, body)
    t = B.compare_external(exe, "m.gguf", pp=(16, 32), tg=(), threads=(1, 2), repeat=3)
    assert [(r.test, r.threads) for r in t.rows] == [("pp16", 1), ("pp32", 1), ("pp16", 2), ("pp32", 2)]
    assert all(r.backend == "llama-bench" and r.samples_ns == (10**6,) * 3 for r in t.rows)
    assert t.rows[0].avg_ts == pytest.approx(16_000.0)


def test_compare_external_failures(tmp_path):
    exe = _fake_llama_bench(tmp_path, "sys.stderr.write('error: unknown model type\\n'); sys.exit(3)")
    with pytest.raises(BitnetLabError, match="exited with 3: error: unknown model type"):
        B.compare_external(exe, "m.gguf", pp=(8,), tg=(4,), threads=(1,), repeat=1)
    with pytest.raises(BitnetLabError, match="not an executable"):
        B.compare_external(tmp_path / "missing", "m.gguf")


REAL = Path(__file__).resolve().parents[1] / "data" / "real-files"


def test_compare_llama_cpp_on_real_files():
    """llama.cpp itself (llama-cpp-python, optional) on the upstream TQ2_0 file; I2_S refused."""
    pytest.importorskip("llama_cpp")
    t = B.compare_llama_cpp(REAL / "upstream-tq2_0.gguf", pp=(8,), tg=(4,), threads=(1,), repeat=2)
    assert [(r.test, r.backend, r.threads, len(r.samples_ns)) for r in t.rows] == \
           [("pp8", "llama.cpp", 1, 2), ("tg4", "llama.cpp", 1, 2)]
    assert all(r.avg_ts > 0 and r.params > 0 for r in t.rows)
    with pytest.raises(BitnetLabError, match="cannot load"):
        B.compare_llama_cpp(REAL / "bitnet-i2_s.gguf", pp=(8,), tg=(), threads=(1,), repeat=1)



def test_compare_llama_cpp_reads_the_2b4t_graph_under_the_name_bitnet(tmp_path):
    """llama.cpp refuses arch `bitnet-b1.58` (the message says which name it wants) and runs the
    same TQ2_0 dummy written with --arch-name bitnet."""
    pytest.importorskip("llama_cpp")
    from bitnet_lab.tools import dummy

    own = dummy.generate_dummy("tiny", tmp_path / "own.gguf", outtype="tq2_0", progress=False)
    with pytest.raises(BitnetLabError, match="arch-name bitnet"):
        B.compare_llama_cpp(own, pp=(8,), tg=(), threads=(1,), repeat=1)
    renamed = dummy.generate_dummy("tiny", tmp_path / "bitnet.gguf", outtype="tq2_0", arch_name="bitnet", progress=False)
    t = B.compare_llama_cpp(renamed, pp=(8,), tg=(4,), threads=(1,), repeat=1)
    assert [(r.test, r.backend) for r in t.rows] == [("pp8", "llama.cpp"), ("tg4", "llama.cpp")]

def test_compare_llama_cpp_needs_the_package():
    from bitnet_lab.bench.compare import llama_cpp_available

    if llama_cpp_available():
        pytest.skip("llama-cpp-python is installed")
    with pytest.raises(BitnetLabError, match="llama-cpp-python"):
        B.compare_llama_cpp("m.gguf", pp=(8,), tg=(4,), threads=(1,))


# =============================================================================================
# The CLI
# =============================================================================================


def test_int_list_flags():
    from bitnet_lab.cli.bench import int_list

    assert int_list("128,512") == [128, 512]
    assert int_list("1-4") == [1, 2, 3, 4]
    assert int_list("128-512*2") == [128, 256, 512]
    assert int_list("0") == [0]
    import argparse

    with pytest.raises(argparse.ArgumentTypeError):
        int_list("12a")


@needs_engine
def test_cli_end_to_end_on_the_default_model(capsys):
    from bitnet_lab.cli import main

    rc = main(["bench", "-p", "8", "-n", "4", "-r", "2", "-t", "1", "--ceiling-mib", "4", "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0
    for needle in ("## bitnet-lab bench", "CPU: ", "flags: ", "pp8", "tg4", "Machine ceilings",
                   "Load time and memory", "Decode roofline", "Decode step breakdown", "roofline"):
        assert needle in out, needle


@needs_engine
def test_cli_json_and_csv(capsys):
    from bitnet_lab.cli import main

    assert main(["bench", "--tests", "-p", "8", "-n", "4", "-r", "2", "-t", "1", "-o", "json", "--no-progress"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["test"] for r in doc["tests"]] == ["pp8", "tg4"]
    assert doc["machine"]["cpu"] and len(doc["tests"][0]["samples_ns"]) == 2
    assert main(["bench", "--tests", "-p", "8", "-n", "0", "-r", "1", "-t", "1", "-o", "csv", "--no-progress"]) == 0
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if not ln.startswith("#")]
    assert next(iter(csv.DictReader(io.StringIO("\n".join(lines)))))["test"] == "pp8"


@needs_engine
def test_cli_i2s_layout_reaches_the_engine(capsys, monkeypatch):
    from bitnet_lab import engine
    from bitnet_lab.cli import main

    seen = []
    init = engine.NativeEngine.__init__

    def spy(self, *args, **kw):
        seen.append(kw.get("i2s_layout"))
        init(self, *args, **kw)

    from bitnet_lab.cli.run import I2S_LAYOUT_CHOICES

    assert I2S_LAYOUT_CHOICES == engine.I2S_LAYOUTS  # the flag's choices are the engine's own
    monkeypatch.setattr(engine.NativeEngine, "__init__", spy)
    assert main(["bench", "--tests", "-p", "0", "-n", "2", "-r", "1", "-t", "1", "--i2s-layout", "file",
                 "--no-progress"]) == 0
    assert seen and set(seen) == {"file"}
    capsys.readouterr()
    assert main(["bench", "--tests", "-p", "0", "-n", "2", "--backend", "native,reference", "--i2s-layout", "x4"]) == 1
    assert "native backend only" in capsys.readouterr().err


def test_cli_kernels_section(capsys):
    from bitnet_lab.cli import main

    assert main(["bench", "--kernels", "--layout", "tiny", "-t", "1", "-r", "3", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "Kernel microbenchmarks (tiny shapes)" in out and "i2s_gemv" in out and "pp / tg" not in out


def test_cli_rejects_bad_flags(capsys):
    from bitnet_lab.cli import main

    assert main(["bench", "-p", "x"]) == 2
    assert main(["bench", "-p", "0", "-n", "0", "--tests"]) == 1
    assert "nothing to measure" in capsys.readouterr().err
    assert main(["bench", "--ceilings", "--compare", "llama-bench"]) == 1
    assert "add --tests" in capsys.readouterr().err
