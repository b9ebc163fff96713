"""The notebooks: paired with their py:percent twins, committed clean, shaped alike, and
runnable top to bottom in a fresh kernel.

Every ``notebooks/*.ipynb`` joins these tests automatically:

- pairing: a ``.py`` twin exists, both declare ``formats: ipynb,py:percent``, and jupytext reads
  the same cells (type, source, tags) from both;
- committed clean: no outputs, no execution counts, no saved widget state;
- shape: a markdown opening with "What you will learn", exactly one ``parameters`` cell with
  ``MODEL = None``, a last code cell that asserts, prerequisites declared in the metadata
  (``bitnet_lab: {requires: [module, ...]}``), a line in ``notebooks/README.md``;
- execution (marker ``notebooks``): nbclient runs the notebook in a fresh kernel of *this*
  interpreter (a temporary kernelspec pointing at ``sys.executable``, so no user-level
  ``python3`` kernelspec is needed), with ``BITNET_LAB_HEADLESS=1`` and ``MPLBACKEND=Agg``; the
  last cell must print "all checks passed". A second run (also marked ``slow``) switches the
  widgets on with the inline backend, as JupyterLab does, and looks for errors inside the
  widgets' output areas. A notebook is skipped only when a module it declares in ``requires``
  is missing, and the skip names it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import jupytext
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
NB_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NB_DIR.glob("*.ipynb"))
PAIRED_FORMATS = "ipynb,py:percent"
CELL_TIMEOUT_S = 300           # one cell; the whole notebook should take well under a minute
DONE_MARKER = "all checks passed"
KERNEL_NAME = "bitnet-lab-test"
JAX_PROBE = "import sys; print('jax imported:', 'jax' in sys.modules)"

ids = [p.stem for p in NOTEBOOKS]


def _cells(nb) -> list[tuple[str, str, tuple[str, ...]]]:
    return [(c.cell_type, c.source.strip(), tuple(c.metadata.get("tags", ()))) for c in nb.cells]


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 2, f"expected the notebooks in {NB_DIR}, found {[p.name for p in NOTEBOOKS]}"


def test_every_py_twin_has_a_notebook():
    """A percent script in notebooks/ without its .ipynb is a notebook someone forgot to pair."""
    for py in sorted(NB_DIR.glob("*.py")):
        if py.read_text(encoding="utf-8").lstrip().startswith("# ---"):
            assert py.with_suffix(".ipynb").exists(), f"{py.name} has no {py.with_suffix('.ipynb').name}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_pair_in_sync(path: Path):
    twin = path.with_suffix(".py")
    assert twin.exists(), f"{path.name} has no py:percent twin {twin.name} (run: jupytext --sync {path})"
    nb, py = jupytext.read(path), jupytext.read(twin)
    for which, n in ((path.name, nb), (twin.name, py)):
        fmts = n.metadata.get("jupytext", {}).get("formats")
        assert fmts == PAIRED_FORMATS, f"{which}: jupytext formats {fmts!r}, expected {PAIRED_FORMATS!r}"
    a, b = _cells(nb), _cells(py)
    assert len(a) == len(b), f"{path.name} has {len(a)} cells, {twin.name} {len(b)} (run: jupytext --sync)"
    for i, (ca, cb) in enumerate(zip(a, b, strict=True)):
        assert ca == cb, f"cell {i} differs between {path.name} and {twin.name} (run: jupytext --sync):\n{ca}\n---\n{cb}"
    assert nb.metadata.get("bitnet_lab") == py.metadata.get("bitnet_lab")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_committed_without_outputs(path: Path):
    raw = json.loads(path.read_text(encoding="utf-8"))
    for i, cell in enumerate(raw["cells"]):
        if cell["cell_type"] != "code":
            continue
        assert cell.get("outputs") == [], f"{path.name} cell {i} has outputs: clear them before committing"
        assert cell.get("execution_count") is None, f"{path.name} cell {i} has an execution count"
    assert "widgets" not in raw["metadata"], f"{path.name} carries saved widget state"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_notebook_shape(path: Path):
    nb = nbformat.read(path, as_version=4)
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# "), f"{path.name}: must open with a title"
    assert "What you will learn" in first.source, f"{path.name}: the opening says what you will learn"
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", ())]
    assert len(params) == 1, f"{path.name}: expected one cell tagged 'parameters', found {len(params)}"
    assert "MODEL = None" in params[0].source, f"{path.name}: the parameters cell must offer MODEL = None"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "assert " in code[-1].source and DONE_MARKER in code[-1].source, (
        f"{path.name}: the last code cell must hold the checks and print {DONE_MARKER!r}")
    req = nb.metadata.get("bitnet_lab", {}).get("requires")
    assert isinstance(req, list) and all(isinstance(m, str) and m for m in req), (
        f"{path.name}: metadata bitnet_lab.requires must list the modules it needs; got {req!r}")


def test_readme_lists_every_notebook():
    readme = (NB_DIR / "README.md").read_text(encoding="utf-8")
    missing = [p.name for p in NOTEBOOKS if p.name not in readme]
    assert not missing, f"notebooks/README.md does not link {missing}"


# ---------------------------------------------------------------------------------------------
# Execution
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kernel_dir(tmp_path_factory) -> Path:
    """A JUPYTER_PATH entry with a kernelspec that runs ipykernel under this interpreter."""
    if importlib.util.find_spec("ipykernel") is None:
        pytest.fail("ipykernel is needed to execute the notebooks: pip install -e '.[dev]'")
    base = tmp_path_factory.mktemp("jupyter")
    spec = base / "kernels" / KERNEL_NAME
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "bitnet_lab test kernel",
        "language": "python",
    }))
    return base


def _text_of(cell) -> str:
    out = []
    for o in cell.get("outputs", []):
        if o.get("output_type") == "stream":
            out.append(o.get("text", ""))
        elif "data" in o:
            out.append(o["data"].get("text/plain", ""))
    return "".join(out)


def _poll_in_slices(client) -> None:
    """Make the kernel client wait for messages in 1-second polls instead of one long poll.

    Seen here (pyzmq 27, jupyter_client 8.10, ipykernel 7.4, nbclient 0.11): a reply already
    sitting in the client's socket is sometimes not woken up by one long ``socket.poll(timeout)``
    and is only picked up when that poll times out, so a cell of 0.1 s "took" the whole cell
    timeout (300 s). Short polls bound the cost of a missed wake-up to one slice; real
    timeouts still fire at the same deadline."""
    from queue import Empty

    for chan in (client.kc.shell_channel, client.kc.iopub_channel):
        orig = chan.get_msg

        async def get_msg(timeout=None, _orig=orig):
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                left = None if deadline is None else deadline - time.monotonic()
                try:
                    return await _orig(timeout=1.0 if left is None else max(0.0, min(1.0, left)))
                except Empty:
                    if left is not None and left <= 1.0:
                        raise

        chan.get_msg = get_msg


def _execute(path: Path, kernel_dir: Path, monkeypatch, *, headless: bool, params: dict | None = None,
             after: list[str] = ()):
    """Run ``path`` top to bottom in a fresh kernel; return the executed notebook and a line
    on how long it took (total, and the slowest cell). ``params``: values set at the end of the
    ``parameters`` cell (papermill-style); ``after``: code cells run after the last one (what a
    user does next, e.g. call a widget's callback after Run All)."""
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    if params:
        cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", ()))
        cell.source += "\n" + "\n".join(f"{k} = {v!r}" for k, v in params.items())
    nb.cells += [nbformat.v4.new_code_cell(src) for src in after]
    missing = [m for m in nb.metadata.get("bitnet_lab", {}).get("requires", [])
               if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"{path.name} declares it needs {missing}, which is not installed")
    monkeypatch.setenv("JUPYTER_PATH", os.pathsep.join([str(kernel_dir), os.environ.get("JUPYTER_PATH", "")]))
    # the kernel imports bitnet_lab from this checkout whether or not it is installed
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    if headless:
        monkeypatch.setenv("BITNET_LAB_HEADLESS", "1")
        monkeypatch.setenv("MPLBACKEND", "Agg")
    else:  # what JupyterLab gives: live widgets, the inline matplotlib backend
        monkeypatch.setenv("BITNET_LAB_HEADLESS", "0")
        monkeypatch.delenv("MPLBACKEND", raising=False)
    starts: dict[int, float] = {}
    took: dict[int, float] = {}
    client = NotebookClient(
        nb, kernel_name=KERNEL_NAME, timeout=CELL_TIMEOUT_S, resources={"metadata": {"path": str(NB_DIR)}},
        on_notebook_start=lambda notebook: _poll_in_slices(client),
        on_cell_start=lambda cell, cell_index: starts.__setitem__(cell_index, time.perf_counter()),
        on_cell_executed=lambda cell, cell_index, execute_reply: took.__setitem__(
            cell_index, time.perf_counter() - starts[cell_index]),
    )
    t0 = time.perf_counter()
    client.execute()  # raises CellExecutionError, naming the cell, on the first failure
    elapsed = time.perf_counter() - t0
    slowest = max(took, key=took.get) if took else None
    timing = f"{elapsed:.1f} s" + (f" (slowest: cell {slowest}, {took[slowest]:.1f} s)" if slowest is not None else "")
    return nb, timing


@pytest.mark.notebooks
@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_notebook_runs(path: Path, kernel_dir: Path, monkeypatch, capsys):
    """Headless, as CI runs it: controls print a few settings, figures are described in text.
    A notebook that names the JAX reference must have run it (JAX imported by the end)."""
    nb, timing = _execute(path, kernel_dir, monkeypatch, headless=True, after=[JAX_PROBE])
    with capsys.disabled():
        print(f"\n{path.name}: ran headless in {timing}")
    *code, probe = [c for c in nb.cells if c.cell_type == "code"]
    assert DONE_MARKER in _text_of(code[-1]), f"{path.name}: the final checks did not report {DONE_MARKER!r}"
    if "JAX reference" in "".join(c.source for c in nb.cells):
        assert "jax imported: True" in _text_of(probe), (
            f"{path.name} speaks of the JAX reference but never imported JAX: what it compares against "
            "is something else (load it with backend='reference', or say what it is)")


@pytest.mark.notebooks
@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_notebook_runs_with_widgets(path: Path, kernel_dir: Path, monkeypatch, capsys):
    """With widgets on and the inline backend: every control builds, the callbacks behind them
    run without error (an error inside an Output widget does not stop nbclient, so we look for
    it in the saved widget state), and figures arrive as PNG images."""
    nb, timing = _execute(path, kernel_dir, monkeypatch, headless=False)
    with capsys.disabled():
        print(f"\n{path.name}: ran with widgets in {timing}")
    state = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    outputs += [o for m in state.values() if m.get("model_name") == "OutputModel"
                for o in m.get("state", {}).get("outputs", [])]
    errors = [o for o in outputs if o.get("output_type") == "error"]
    assert not errors, f"{path.name}: error outputs: {[(e.get('ename'), e.get('evalue')) for e in errors]}"
    controls = [m for m in state.values() if m.get("model_name", "").endswith(("SliderModel", "ButtonsModel", "DropdownModel"))]
    if "widgets.explore(" in "".join(c.source for c in nb.cells):
        assert controls, f"{path.name} calls widgets.explore but no control was built"
    assert any("image/png" in o.get("data", {}) for o in outputs), f"{path.name}: no figure was displayed"
    last = [c for c in nb.cells if c.cell_type == "code"][-1]
    assert DONE_MARKER in _text_of(last)


@pytest.mark.notebooks
@pytest.mark.parametrize("outtype", ["tl2", "tl1"])
def test_verification_notebook_on_a_tl_model(outtype, kernel_dir, monkeypatch, tmp_path, capsys):
    """05 on a TL1 / TL2 file: the fault it injects must be one the engine runs there (a LUT
    kernel, or where the level has the x16 GEMV the MAD kernel the engine decoded the file into),
    so that verify turns red and the notebook's own checks pass (issue 18, item 9)."""
    from bitnet_lab import kernels
    from bitnet_lab.tools.dummy import generate_dummy

    path = NB_DIR / "05_lossless_verification.ipynb"
    model = generate_dummy("tiny", tmp_path / f"tiny_{outtype}.gguf", outtype=outtype, progress=False)
    nb, timing = _execute(path, kernel_dir, monkeypatch, headless=True, params={"MODEL": str(model), "N_STEPS": 4})
    with capsys.disabled():
        print(f"\n{path.name} on a {outtype} model: ran headless in {timing}")
    text = "".join(_text_of(c) for c in nb.cells if c.cell_type == "code")
    op = {"tl1": "i2s_x4_gemv", "tl2": "tq1_x16_gemv"}[outtype] if kernels.tq1_x16_native() else f"{outtype}_gemv"
    assert f"fault injected: {op} is wrong" in text, text[-2000:]
    last = [c for c in nb.cells if c.cell_type == "code"][-1]
    assert DONE_MARKER in _text_of(last)


@pytest.mark.notebooks
def test_latent_explorer_works_after_run_all(kernel_dir, monkeypatch, capsys):
    """08's latent-weight explorer reads its checkpoint whenever a control moves: after Run All
    (the Checks cell included) the callback must still work (issue 18, item 8)."""
    path = NB_DIR / "08_weight_distributions.ipynb"
    probe = "show_latent(L - 1, PROJECTIONS[-1]); print('explorer still works')"
    nb, timing = _execute(path, kernel_dir, monkeypatch, headless=True, after=[probe])
    with capsys.disabled():
        print(f"\n{path.name} + a moved control: ran headless in {timing}")
    assert "explorer still works" in _text_of(nb.cells[-1])
