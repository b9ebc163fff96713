"""bitnet_lab.bench.speculative and `bitnet-lab bench --spec`: the verification-cost table, the
drafter table on the shipped workload, and the workload itself."""

from __future__ import annotations

import itertools

import pytest

import bitnet_lab as bl
from bitnet_lab.bench.speculative import drafter_comparison, edit_workload, verification_cost
from bitnet_lab.errors import ConfigError
from bitnet_lab.generate.speculative import PromptLookup


def test_the_workload_ships_and_fits_the_default_model():
    from bitnet_lab.tools.default_model import default_model_path

    tok = bl.load(default_model_path()).tokenizer
    edit, free = edit_workload("edit"), edit_workload("free")
    assert len(edit) >= 20 and len(free) >= 5
    assert {e["task"] for e in edit} == {"reproduce", "rename"}
    for item in edit + free:
        n = len(tok.encode(item["prompt"]))
        assert n + n // 2 + 8 < 256, item["name"]      # the prompt and its answer fit the 256-token context
    with pytest.raises(ConfigError, match="'edit' or 'free'"):
        edit_workload("poems")


def test_verification_cost_times_a_step_and_a_pass_back_to_back(tiny_gguf):
    m = bl.load(tiny_gguf, threads=1)
    ticks = itertools.count(0, 1_000_000)      # every clock read 1 ms later: each timed call takes 1 ms
    t = verification_cost(m.runner, [1, 3], repeat=3, position=8, clock=lambda: next(ticks))
    assert [r["k"] for r in t.records] == [1, 3] and [r["positions"] for r in t.records] == [2, 4]
    for r in t.records:
        assert r["steps_ms"] == [1.0] * 3 and r["passes_ms"] == [1.0] * 3 and r["ratio"] == 1.0
    real = verification_cost(m.runner, [2], repeat=2, position=8)
    assert real.records[0]["pass_ms"] > 0 and "pass / step" in real.to_markdown()
    with pytest.raises(ConfigError, match="need k >= 1"):
        verification_cost(m.runner, [0])


def test_drafter_comparison_checks_the_tokens_against_plain_decode():
    from bitnet_lab.tools.default_model import default_model_path

    m = bl.load(default_model_path(), threads=1)
    t = drafter_comparison(m, [("lookup:3", lambda: PromptLookup(3))], workloads=("free",), n=12, repeat=1)
    rows = {r["drafter"]: r for r in t.records}
    assert set(rows) == {"plain", "lookup:3"}
    assert rows["plain"]["vs_plain"] == 1.0 and rows["plain"]["acceptance"] is None
    assert all(r["identical"] for r in t.records) and rows["lookup:3"]["tokens"] == rows["plain"]["tokens"]
    assert "greedy tokens = plain" in t.to_markdown()


@pytest.mark.slow
def test_bench_spec_section(tiny_gguf, tmp_path, monkeypatch, capsys):
    from bitnet_lab import paths
    from bitnet_lab.cli import main

    monkeypatch.setattr(paths, "CACHE_DIR", tmp_path)
    assert main(["bench", "-m", str(tiny_gguf), "--spec", "--layout", "tiny", "-r", "1", "-t", "1",
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "verification pass cost — tiny layout" in out and "| 16 |" in out
    assert "drafters on" in out and "lookup:3" in out and "self:2" in out and "| NO" not in out
    assert (tmp_path / "dummies" / "tiny-i2_s-seed0.gguf").exists()
