"""The notebook figures as a person reads them (issue 18, item 12): value labels that do not
overlap, error bars that stay on their log axis, hex digits large enough to read, the sampled
token always marked. Each check measures the drawn figure (text sizes and extents from the Agg
renderer), not the code that drew it."""

from __future__ import annotations

import numpy as np
import pytest

from bitnet_lab.notebook import viz

MIN_PT = 8.0          # hex digits and labels a reader has to read
MIN_VALUE_PT = 7.0    # value labels on bars


@pytest.fixture
def plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    yield plt
    plt.close("all")


def _texts(fig):
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    return [(t, t.get_window_extent(r)) for ax in fig.axes for t in ax.texts if t.get_text().strip()]


def test_op_breakdown_value_labels_do_not_overlap(plt):
    """07's per-op profile: 13 ops × 4 series (1 and 2 threads, wall and CPU time), values from
    a µs to a ms, some nearly equal in neighbouring bars."""
    ops = ["embed", "norm", "quant", "qkv", "attention", "attn_output", "gate_up", "activation", "down",
           "residual", "lm_head", "sync", "other"]
    base = dict(zip(ops, [7.7e-4, 0.0146, 0.0122, 0.0114, 0.0106, 0.0074, 0.023, 0.0034, 0.0111, 0.0059,
                          0.0305, 0.0139, 7.3e-4], strict=True))
    profiles = {"1 thread(s): wall time of thread 0": base,
                "1 thread(s): CPU time of thread 0": dict(base),
                "2 thread(s): wall time of thread 0": {**base, "sync": 2.29, "lm_head": 0.0305},
                "2 thread(s): CPU time of thread 0": {**base, "sync": 0.375, "lm_head": 0.0305}}
    fig = viz.op_breakdown(profiles, title="one decode step, per op")
    viz.check_figure(fig)
    labels = [(t, b) for t, b in _texts(fig)]
    assert len(labels) >= 4 * len(ops) - 4, "every op's bars carry their value"
    assert min(t.get_fontsize() for t, _ in labels) >= MIN_VALUE_PT
    for i, (ta, a) in enumerate(labels):
        for tb, b in labels[i + 1:]:
            assert not a.overlaps(b), f"value labels {ta.get_text()!r} and {tb.get_text()!r} overlap"


def test_throughput_error_bars_stay_on_the_log_axis(plt):
    """A standard deviation as large as the mean (a tg of a few µs per token) must not send the
    lower arm to 0 — off a log axis — and the figure says how it drew it."""
    recs = [{"test": "pp64", "backend": "native", "n_threads": 1, "avg_ts": 20320.0, "stddev_ts": 9000.0},
            {"test": "tg16", "backend": "native", "n_threads": 1, "avg_ts": 5414.0, "stddev_ts": 6000.0},
            {"test": "tg16", "backend": "reference", "n_threads": None, "avg_ts": 98.0, "stddev_ts": 15.0}]
    fig = viz.throughput_bars(recs, title="every backend")
    viz.check_figure(fig)
    ax = fig.axes[0]
    lo, hi = ax.get_ylim()
    from matplotlib.collections import LineCollection

    segs = [np.asarray(seg) for coll in ax.collections if isinstance(coll, LineCollection)
            for seg in coll.get_segments()]
    ends = np.concatenate([seg[:, 1] for seg in segs if seg.ndim == 2 and len(seg)])
    assert ends.size and (ends > 0).all() and (ends >= lo).all() and (ends <= hi).all(), (ends, lo, hi)
    assert "clipped" in ax.get_xlabel() or "stop at" in ax.get_xlabel()
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    fig_box = fig.bbox
    for t in [ax.xaxis.label, ax.yaxis.label, ax.title]:
        e = t.get_window_extent(r)
        assert e.x0 >= fig_box.x0 - 1 and e.x1 <= fig_box.x1 + 1, f"{t.get_text()!r} runs off the figure"


def test_byte_planes_hex_digits_are_readable(plt):
    planes = np.random.default_rng(0).integers(0, 256, size=(8, 32), dtype=np.uint8)
    fig = viz.byte_planes(planes, title="TL1 LUT buffer")
    viz.check_figure(fig)
    texts = _texts(fig)
    assert len(texts) == 8 * 32
    assert min(t.get_fontsize() for t, _ in texts) >= MIN_PT
    for i, (ta, a) in enumerate(texts):      # neighbours (same row) never touch
        for tb, b in texts[i + 1:i + 2]:
            assert not a.overlaps(b), (ta.get_text(), tb.get_text())


def test_token_probs_marks_a_sampled_token_outside_the_list(plt):
    labels = [f"{i} 'tok{i}'" for i in range(10)]
    probs = np.linspace(0.2, 0.02, 10)
    fig = viz.token_probs(labels, probs, kept=[True] * 10, chosen=-1,
                          sampled=("840 ' used'", 0.0057, 27, True), title="step 0")
    viz.check_figure(fig)
    ax = fig.axes[0]
    ticks = [t.get_text() for t in ax.get_yticklabels()]
    assert len(ticks) == 11 and "840 ' used'" in ticks[-1] and "rank 27" in ticks[-1]
    outlined = [p for p in ax.patches if not p.get_fill()]
    assert len(outlined) == 1 and np.isclose(outlined[0].get_width(), 0.57)
    assert "sampled token" in [t.get_text() for t in ax.get_legend().get_texts()]
    # inside the list: no extra row
    fig2 = viz.token_probs(labels, probs, kept=[True] * 10, chosen=3, sampled=("3 'tok3'", 0.14, 4, True),
                           title="step 1")
    assert len(fig2.axes[0].get_yticklabels()) == 10


def test_lut_entries_legend_leaves_the_bars_visible(plt):
    """03's 27 patterns of a triple: the legend sits above the tallest bar, not on it."""
    vals = [-74, -72, -70, 23, 25, 27, -24, -22, -20, 45, 47, 49, -2, 0, 2, -49, -47, -45, 20, 22, 24, -27,
            -25, -23, -74, -72, -70]
    kinds = ["entry |v|, negated (sign bit 1)"] * 13 + ["entry v, read as is (sign bit 0)"] * 14
    fig = viz.lut_entries([str(i) for i in range(27)], [-v for v in vals[:13]] + vals[13:], kinds=kinds,
                          title="TL2: the 27 patterns", xlabel="pattern")
    viz.check_figure(fig)
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent(r)
    for bar in ax.patches:
        assert not legend.overlaps(bar.get_window_extent(r)), "the legend hides a bar"
