"""bitnet_lab.bench.batch (parallel_bench) and `bitnet-lab bench --parallel`."""

from __future__ import annotations

import itertools

import bitnet_lab
import pytest
from bitnet_lab.bench.batch import parallel_bench
from bitnet_lab.cli import main
from bitnet_lab.errors import ConfigError


@pytest.fixture(scope="module")
def tiny(tiny_gguf):
    m = bitnet_lab.load(tiny_gguf, threads=1)
    yield m
    m.close()


def test_rows_baseline_and_arithmetic(tiny):
    ticks = itertools.count(0, 1_000_000)       # every clock read is 1 ms after the last
    res = parallel_bench(tiny, parallel=[4, 2], n_gen=3, prompt=2, repeat=2, clock=lambda: next(ticks))
    rows = res.records
    assert [r["n_parallel"] for r in rows] == [1, 2, 4]          # N = 1 added and measured first
    for r in rows:   # each timed run reads the clock twice: 1 ms per run
        assert r["samples_ns"] == [1_000_000, 1_000_000]
        assert r["median_ts"] == pytest.approx(1e3 * r["n_parallel"] * 3)
    assert res.speedup(4) == pytest.approx(4.0) and rows[0]["speedup"] == 1.0
    md = res.table().to_markdown()
    assert "× 1 sequence" in md and "4.00" in md


def test_bad_arguments(tiny):
    with pytest.raises(ConfigError, match="need N >= 1"):
        parallel_bench(tiny, parallel=[0])
    with pytest.raises(ConfigError, match="has no forward_batch"):
        parallel_bench(object())


def test_cli_section(tiny_gguf, capsys):
    rc = main(["bench", "-m", str(tiny_gguf), "--parallel", "1,2", "--parallel-gen", "2", "-r", "1", "-t", "1",
               "--no-progress"])
    out, _ = capsys.readouterr()
    assert rc == 0 and "parallel sequences: aggregate decode t/s" in out
    assert "pp128" not in out   # --parallel alone runs only its section
