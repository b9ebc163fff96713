"""The drawing helpers and the chat box that notebooks 03–08 added to bitnet_lab.notebook.viz and
bitnet_lab.notebook.widgets: every figure follows the conventions (titles, labelled axes, legends), the
helpers refuse inconsistent input, and the chat box plays its script as text when headless
(tests/test_notebooks.py runs the notebooks themselves end to end)."""

from __future__ import annotations

import numpy as np
import pytest

from bitnet_lab.notebook import viz
from bitnet_lab.notebook import widgets


@pytest.fixture
def plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    yield plt
    plt.close("all")


def test_every_new_drawing_helper_follows_the_conventions(plt):
    rng = np.random.default_rng(0)
    kernel_recs = [{"op": "i2s_gemv", "version": v, "isa": isa, "threads": t, "gop_s": g}
                   for (v, isa, g) in (("v0", "scalar", 14.0), ("v3", "avx512vnni", 270.0)) for t in (1, 2)]
    bench_recs = [{"test": test, "backend": b, "n_threads": t, "avg_ts": ts, "stddev_ts": 1.0}
                  for test, b, t, ts in (("pp64", "native", 1, 4000.0), ("tg16", "native", 1, 400.0),
                                         ("pp64", "reference", None, 600.0), ("tg16", "reference", None, 25.0))]
    figs = [
        viz.lut_entries(["0", "1", "2"], [-3, 0, 3], kinds=["stored", "stored", "padding"], title="t", xlabel="u"),
        viz.byte_planes(rng.integers(0, 256, (4, 32), dtype=np.uint8), title="planes"),
        viz.stacked_bars({"I2_S": {"w": 2.0, "a": 0.01}, "TL2": {"w": 1.67, "a": 0.1}}, title="s",
                         xlabel="layout", ylabel="bits (per weight)"),
        viz.throughput_by_version(kernel_recs, title="k"),
        viz.agreement_grid(np.zeros((2, 3), int), total=np.full((2, 3), 10), projections=["a", "b", "c"], title="g"),
        viz.step_agreement([1e-7, 2e-7], [0.1, 0.05], [1e-6, 2e-6], tolerance=1e-4, title="steps"),
        viz.token_probs(["'a'", "'b'", "'c'"], [0.5, 0.3, 0.1], kept=[True, True, False], chosen=1, title="p"),
        viz.token_timeline([10.0, 3.0, 3.2, 2.9], title="tl", n_prompt=5),
        viz.op_breakdown({"1 thread": {"lm_head": 0.5, "qkv": 0.01}, "2 threads": {"lm_head": 0.3, "sync": 2.0}},
                         title="ops"),
        viz.roofline({"DRAM": 20.0, "hot": 45.0}, 350.0, {"decode": (1.3, 24.0), "prefill": (80.0, 100.0)},
                     title="roof"),
        viz.throughput_bars(bench_recs, title="bars"),
        viz.weight_dashboard(rng.uniform(0.3, 0.35, (3, 7)), rng.uniform(1, 2, (3, 7)), rng.uniform(-0.01, 0.01, (3, 7)),
                             projections=[f"p{i}" for i in range(7)],
                             activations={"attn_in": np.array([4.0, 4.1, 4.2]), "ffn_down_in": np.array([15.0, 20, 18])},
                             title="dash"),
    ]
    for fig in figs:
        assert viz.figure_problems(fig) == [], viz.describe_figure(fig)
        fig.canvas.draw()


def test_helpers_refuse_inconsistent_input(plt):
    with pytest.raises(ValueError, match="labels"):
        viz.lut_entries(["0"], [1, 2], kinds=["a"], title="t", xlabel="x")
    with pytest.raises(ValueError, match="uint8"):
        viz.byte_planes(np.zeros((2, 16), np.uint8), title="p")
    with pytest.raises(ValueError, match="no record"):
        viz.throughput_by_version([{"op": "x", "version": "v0", "isa": "scalar", "threads": 1}], title="k")
    with pytest.raises(ValueError, match="layers"):
        viz.agreement_grid(np.zeros((2, 3), int), total=np.zeros((2, 2), int), projections=["a", "b", "c"], title="g")
    with pytest.raises(ValueError, match="positive"):
        viz.roofline({"DRAM": 0.0}, 100.0, {}, title="r")
    with pytest.raises(ValueError, match="must all be"):
        viz.weight_dashboard(np.zeros((2, 3)), np.zeros((2, 2)), np.zeros((2, 3)), projections=["a", "b", "c"],
                             activations={}, title="d")


def test_unverified_kernel_rows_are_left_out_of_the_plot(plt):
    recs = [{"op": "i2s_gemv", "version": "v0", "isa": "scalar", "threads": 1, "gop_s": 10.0},
            {"op": "i2s_gemv", "version": "v9", "isa": "scalar", "threads": 1, "verified": False}]
    fig = viz.throughput_by_version(recs, title="k")
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["i2s_gemv\nv0 (scalar)"]


def test_safe_label_escapes_what_the_font_lacks():
    assert viz.safe_label("' the'") == "' the'"
    assert viz.safe_label("жизни") == "жизни"                        # Cyrillic is drawn
    assert viz.safe_label("語\x01") == "\\u8a9e\\u0001"
    assert viz.safe_label("\U0001d4dd") == "\\U0001d4dd"


def test_show_report_prints_the_text_form_outside_jupyter(capsys):
    class Report:
        def __str__(self):
            return "RESULT: PASS"

        def _repr_html_(self):
            return "<b>PASS</b>"

    viz.show_report(Report())
    assert capsys.readouterr().out.strip() == "RESULT: PASS"


def test_chat_headless_plays_the_script_and_keeps_one_cache(monkeypatch, capsys):
    import bitnet_lab
    from bitnet_lab.tools.default_model import default_model_path

    monkeypatch.setenv(widgets.HEADLESS_ENV, "1")
    model = bitnet_lab.load(default_model_path())
    session = widgets.chat(model, script=["Hello!", "And then?"], n=4, seed=7, sampling={"temp": 0.0})
    out = capsys.readouterr().out
    assert "scripted chat of 2 turn(s)" in out and "greedy" in out
    assert out.count("user: ") == 2 and out.count("assistant: ") == 2 and out.count("stopped: length;") == 2
    assert [m["role"] for m in session.messages] == ["user", "assistant"] * 2
    assert session.n_past == len(session.tokens)
    # greedy is deterministic: the same script gives the same answers
    again = widgets.chat(model, script=["Hello!", "And then?"], n=4, seed=99, sampling={"temp": 0.0})
    assert [m["content"] for m in again.messages] == [m["content"] for m in session.messages]
    with pytest.raises(ValueError, match="unknown sampling"):
        widgets.chat(model, script=[], sampling={"temperature": 1.0})
