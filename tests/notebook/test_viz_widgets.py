"""bitnet_lab.notebook.viz and bitnet_lab.notebook.widgets: the bit-map probe, the figure conventions, and the
widgets' text form (the notebooks use all three; tests/test_notebooks.py runs them end to end)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bitnet_lab.notebook import viz
from bitnet_lab.notebook import widgets
from bitnet_lab.errors import CodecError
from bitnet_lab.quant.tiling import TLTiling

ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------------------------
# The probe (numpy only)
# ---------------------------------------------------------------------------------------------


def test_probe_i2_s_matches_the_documented_layout():
    """docs/formats.md#31-i2_s-type-36: element j of a 128-block is in byte j % 32 at shift 6 − 2·(j //
    32)."""
    bm = viz.probe_bit_map("i2_s", (1, 128))
    for j in range(128):
        b, shift = j % 32, 6 - 2 * (j // 32)
        assert bm.bits_of(j) == [(b, shift), (b, shift + 1)], j
    assert all(own is not None and len(own) == 1 for own in bm.owners.values())


def test_probe_tq2_0_is_lsb_first_and_its_scale_holds_no_weight():
    bm = viz.probe_bit_map("tq2_0", (1, 256))
    for e in range(256):
        h, j, m = e // 128, (e % 128) // 32, e % 32
        assert bm.bits_of(e) == [(32 * h + m, 2 * j), (32 * h + m, 2 * j + 1)], e
    assert all(bm.owners[(b, i)] == () for b in (64, 65) for i in range(8))  # the fp16 d


def test_groups_join_the_bits_of_one_code_word():
    tl1 = viz.probe_bit_map("tl1", (32, 16), tiling=TLTiling(32, 16, 32), byte_ranges=[(0, 4)])
    groups = tl1.groups()
    assert [(hi, lo) for _, hi, lo, _ in groups] == [(7, 4), (3, 0)] * 4
    assert all(len(own) == 2 for *_, own in groups)  # a TL1 nibble holds a pair
    assert tl1.label(groups[0][3]) == "r0 k0–1"
    tq1 = viz.probe_bit_map("tq1_0", (1, 256), byte_ranges=[(0, 1), (48, 49)])
    (_, hi0, lo0, own0), (_, hi48, lo48, own48) = tq1.groups()
    assert (hi0, lo0, own0) == (7, 0, (0, 32, 64, 96, 128))    # five trits, one byte
    assert (hi48, lo48, own48) == (7, 0, (240, 244, 248, 252))  # qh: four trits
    i2 = viz.probe_bit_map("i2_s", (1, 128), byte_ranges=[(0, 1)])
    assert [own for *_, own in i2.groups()] == [(0,), (32,), (64,), (96,)]  # separate 2-bit codes


def test_tl2_sign_bit_holds_a_whole_triple():
    bm = viz.probe_bit_map("tl2", (32, 256), tiling=TLTiling(32, 96, 32), byte_ranges=[(1024, 1026)])
    # sign word 0 is little-endian: its bit 15 (sign of row 0, triple 0) is bit 7 of byte 1025
    assert bm.owners[(1025, 7)] == (0, 1, 2)
    assert all(len(own) == 3 for own in bm.owners.values())


def test_byte_of_weights_and_bad_ranges():
    bm = viz.probe_bit_map("i2_s", (1, 128), byte_ranges=[(0, 2)])
    where = bm.byte_of_weights()
    assert where.shape == (1, 128)
    assert where[0, 0] == 0 and where[0, 33] == 1 and where[0, 2] == -1
    with pytest.raises(CodecError, match="outside"):
        viz.probe_bit_map("i2_s", (1, 128), byte_ranges=[(30, 40)])
    with pytest.raises(CodecError, match="unknown layout"):
        viz.probe_bit_map("q4_0", (1, 128))


# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    yield plt
    plt.close("all")


def test_check_figure_names_what_is_missing(plt):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1], label="a")
    ax.plot([0, 1], [1, 0], label="b")
    with pytest.raises(ValueError) as e:
        viz.check_figure(fig)
    for what in ("no title", "no x label", "no y label", "no legend"):
        assert what in str(e.value)
    ax.set_title("t")
    ax.set_xlabel("x (s)")
    ax.set_ylabel("y (m)")
    ax.legend()
    assert viz.check_figure(fig) is fig


def test_show_renders_describes_saves_and_closes(plt, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(viz.FIGDIR_ENV, str(tmp_path))
    fig = viz.activation_error(np.linspace(-0.5, 0.5, 101), title="err demo")
    viz.show(fig)
    out = capsys.readouterr().out
    assert "'err demo'" in out and "steps of 1/s_x" in out
    assert (tmp_path / "err-demo.png").stat().st_size > 1000
    assert not plt.get_fignums()
    bad, _ = plt.subplots()
    with pytest.raises(ValueError):
        viz.show(bad)


def test_every_drawing_helper_follows_the_conventions(plt):
    rng = np.random.default_rng(0)
    t = rng.integers(-1, 2, size=(64, 128)).astype(np.int8)
    w = rng.standard_normal((64, 128)).astype(np.float32)
    bm = viz.probe_bit_map("tq2_0", (1, 256), byte_ranges=[(0, 2), (64, 66)])
    figs = [
        viz.latent_histogram(w, float(np.abs(w).mean()), title="h"),
        viz.code_shares({"a": [0.3, 0.4, 0.3], "b": [0.2, 0.6, 0.2]}, title="s"),
        viz.output_scatter(w[:, 0], w[:, 1], title="o", xlabel="x (u)", ylabel="y (u)"),
        viz.activation_error(rng.uniform(-0.5, 0.5, 100), title="e"),
        viz.rounding_modes(("half_even", "half_away"), title="r"),
        viz.tensor_overview(t, title="t"),
        viz.zero_shares_by_tensor([(0, "attn_q", 0.3), (1, "attn_q", 0.32), (0, "ffn_up", 0.31)], title="z",
                                  band=(0.2, 0.6)),
        viz.bit_map_figure(bm, title="b", byte_ranges=[(0, 2), (64, 66)], names={(64, 66): "d"}),
        viz.byte_order_image(bm, title="o"),
        viz.bits_per_weight({"I2_S": 2.0, "TL2": 5 / 3}, {"I2_S": 2.0, "TL2": 5 / 3}, title="bpw",
                            in_file={"I2_S": 2.01, "TL2": 1.78}),
    ]
    for fig in figs:
        assert viz.figure_problems(fig) == [], viz.describe_figure(fig)
        fig.canvas.draw()


def test_rounding_modes_differ_only_on_ties():
    from bitnet_lab.quant import round_int

    ties = np.array([-2.5, -0.5, 0.5, 1.5, 2.5], dtype=np.float32)
    assert round_int(ties, "half_even").tolist() == [-2, -0, 0, 2, 2]
    assert round_int(ties, "half_away").tolist() == [-3, -1, 1, 2, 3]


def test_gguf_file_map_and_hexdump(plt, tmp_path):
    from bitnet_lab.formats.gguf import GGUFFile
    from bitnet_lab.formats.gguf_writer import write_gguf
    from bitnet_lab.tools.testing import ternary_weight

    t = np.ones((4, 128), dtype=np.int8)
    p = write_gguf(tmp_path / "m.gguf", {"general.architecture": "bitnet-b1.58"},
                   {"w": ternary_weight("w", t, np.float32(0.5), "i2_s")})
    gf = GGUFFile(p)
    assert viz.figure_problems(viz.gguf_file_map(gf, title="map")) == []
    dump = viz.hexdump(b"GGUF\x03\x00\x00\x00", notes={0: "magic"})
    assert dump.startswith("00000000  47 47 55 46 03 00 00 00") and "|GGUF....|" in dump and "magic" in dump


def test_table_aligns_columns():
    out = viz.table([("a", 1), ("bbb", 22)], ["name", "n"]).splitlines()
    assert out[0] == "name  n "
    assert out[2] == "a     1 "


# ---------------------------------------------------------------------------------------------
# Widgets
# ---------------------------------------------------------------------------------------------


def test_headless_from_the_environment(monkeypatch):
    monkeypatch.setenv(widgets.HEADLESS_ENV, "1")
    assert widgets.is_headless() and widgets.HEADLESS_ENV in widgets.headless_reason()
    monkeypatch.setenv(widgets.HEADLESS_ENV, "0")
    assert widgets.headless_reason() == "not running under IPython"  # pytest is no kernel
    monkeypatch.setenv(widgets.HEADLESS_ENV, "maybe")
    with pytest.raises(ValueError, match="must be 0 or 1"):
        widgets.headless_reason()


def test_explore_headless_runs_a_few_settings(monkeypatch, capsys):
    monkeypatch.setenv(widgets.HEADLESS_ENV, "1")
    seen = []
    widgets.explore(lambda layer, tensor: seen.append((layer, tensor)), layer=range(4),
                    tensor=["attn_q", "ffn_up", "ffn_down"])
    assert seen == [(0, "attn_q"), (3, "ffn_down"), (2, "ffn_up")]
    out = capsys.readouterr().out
    assert "showing 3 of 12 settings of layer × tensor" in out
    assert "── layer=3, tensor='ffn_down' ──" in out

    seen.clear()
    widgets.explore(lambda k: seen.append(k), k={"small": 1, "big": 2}, picks=[{"k": 2}])
    assert seen == [2] and "── k=big ──" in capsys.readouterr().out


def test_explore_rejects_bad_controls_and_picks(monkeypatch):
    monkeypatch.setenv(widgets.HEADLESS_ENV, "1")
    with pytest.raises(ValueError, match="at least one control"):
        widgets.explore(lambda: None)
    with pytest.raises(ValueError, match="no values"):
        widgets.explore(lambda layer: None, layer=[])
    with pytest.raises(ValueError, match="give a range"):
        widgets.explore(lambda layer: None, layer=3)
    with pytest.raises(ValueError, match="not one of"):
        widgets.explore(lambda layer: None, layer=range(2), picks=[{"layer": 5}])
    with pytest.raises(ValueError, match="exactly the controls"):
        widgets.explore(lambda layer: None, layer=range(2), picks=[{"tensor": 0}])


def test_default_picks_do_not_repeat():
    assert widgets.default_picks({"a": [7]}) == [{"a": 7}]
    assert widgets.default_picks({"a": range(2)}) == [{"a": 0}, {"a": 1}]
    with pytest.raises(ValueError):
        widgets.default_picks({"a": range(3)}, max_picks=0)


def test_make_control_picks_the_widget_kind():
    w = pytest.importorskip("ipywidgets", reason="ipywidgets is in the [dev] and [notebook] extras")
    assert isinstance(widgets.make_control("layer", range(0, 8, 2)), w.IntSlider)
    assert isinstance(widgets.make_control("tensor", ["attn_q", "attn_k"]), w.ToggleButtons)
    assert isinstance(widgets.make_control("name", [f"t{i}" for i in range(12)]), w.Dropdown)
    s = widgets.make_control("tiling", {"a": TLTiling(32, 8, 32), "b": TLTiling(64, 8, 32)})
    assert isinstance(s, w.SelectionSlider) and s.value == TLTiling(32, 8, 32)
    assert isinstance(widgets.make_control("x", [1, 2, 4]), w.SelectionSlider)  # not a progression


def test_import_bitnet_lab_stays_light():
    """Neither `import bitnet_lab` nor importing viz/widgets loads matplotlib or ipywidgets."""
    code = (
        "import sys, bitnet_lab, bitnet_lab.notebook.viz, bitnet_lab.notebook.widgets\n"
        "bad = [m for m in ('matplotlib', 'ipywidgets', 'jax') if m in sys.modules]\n"
        "assert not bad, bad\n"
        "bitnet_lab.notebook.viz.probe_bit_map('i2_s', (1, 128), byte_ranges=[(0, 1)])\n"
        "assert 'matplotlib' not in sys.modules\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr


# ---------------------------------------------------------------------------------------------
# The chat box (issue 18 item 11), driven in-process: the widgets are real ipywidgets objects,
# `display` is caught, and Enter is the "submit" message the frontend sends
# ---------------------------------------------------------------------------------------------


def _chat_box(monkeypatch, model, **kw):
    """widgets.chat with a frontend: returns the session and its controls by name."""
    w = pytest.importorskip("ipywidgets", reason="ipywidgets is in the [dev] and [notebook] extras")
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda *objs, **k: shown.extend(objs))
    session = widgets.chat(model, headless=False, seed=0, sampling={"temp": 0.0}, **kw)
    (box,) = shown
    transcript, row, stats, _, length, out = box.children
    message, send, reset = row.children
    assert isinstance(message, w.Text) and isinstance(send, w.Button) and isinstance(length, w.IntSlider)
    return session, dict(transcript=transcript, message=message, send=send, reset=reset, stats=stats,
                         length=length, out=out)


def _answers(transcript_html: str) -> list[tuple[str, str]]:
    import html
    import re

    rows = re.findall(r"<b style='color:[^']+'>(\w+):</b> (.*?)</div>", transcript_html)
    return [(role, html.unescape(text)) for role, text in rows]


def test_chat_box_slider_is_bounded_by_the_context(monkeypatch):
    from fakes_generate import ScriptRunner, fake_model

    _, box = _chat_box(monkeypatch, fake_model(ScriptRunner(list(b"hi")), context=256), n=48)
    assert box["length"].max == 256 and box["length"].value == 48
    _, box = _chat_box(monkeypatch, fake_model(ScriptRunner(list(b"hi")), context=64), n=100)
    assert box["length"].max == 64 and box["length"].value == 64


def test_chat_box_enter_sends(monkeypatch):
    from fakes_generate import EOT, ScriptRunner, fake_model

    session, box = _chat_box(monkeypatch, fake_model(ScriptRunner(list(b"Yo") + [EOT])))
    box["message"].value = "hello there"
    box["message"]._handle_string_msg(None, {"event": "submit"}, None)   # what Enter sends
    assert box["message"].value == ""
    assert _answers(box["transcript"].value) == [("user", "hello there"), ("assistant", "Yo")]
    assert session.messages[-1] == {"role": "assistant", "content": "Yo"}


def test_chat_box_goes_on_when_the_context_fills(monkeypatch):
    from fakes_generate import ScriptRunner, fake_model

    script = [f"question {k}" for k in range(6)]
    session, box = _chat_box(monkeypatch, fake_model(ScriptRunner(list(b"z" * 400)), context=64), n=40,
                             script=script)
    assert box["out"].outputs == ()                       # no traceback in the box
    rows = _answers(box["transcript"].value)
    assert [r for r, _ in rows] == ["user", "assistant"] * 6
    assert all(text == "z" * 40 for role, text in rows if role == "assistant")
    assert session.n_shifts >= 3 and "/64 in context" in box["stats"].value


def test_chat_box_a_message_too_long_is_a_note_not_a_traceback(monkeypatch):
    from fakes_generate import EOT, ScriptRunner, fake_model

    session, box = _chat_box(monkeypatch, fake_model(ScriptRunner(list(b"ok") + [EOT]), context=64))
    box["message"].value = "x" * 200
    box["send"].click()
    rows = _answers(box["transcript"].value)
    assert rows[0] == ("user", "x" * 200)
    assert rows[1][0] == "note" and "not sent" in rows[1][1] and "-c" not in rows[1][1]
    assert len(rows) == 2 and session.messages == []      # no empty assistant turn, nothing changed
    assert box["out"].outputs == ()
    box["message"].value = "short"
    box["send"].click()
    assert _answers(box["transcript"].value)[-1] == ("assistant", "ok")


def test_chat_headless_goes_on_when_the_context_fills(capsys):
    from fakes_generate import ScriptRunner, fake_model

    session = widgets.chat(fake_model(ScriptRunner(list(b"z" * 400)), context=64), headless=True, n=40,
                           script=[f"q{k}" for k in range(5)] + ["x" * 200], sampling={"temp": 0.0})
    out = capsys.readouterr().out
    assert out.count("z" * 40) == 5 and "context shifted" in out and session.n_shifts >= 3
    assert "[not sent: this turn needs" in out and "Traceback" not in out
