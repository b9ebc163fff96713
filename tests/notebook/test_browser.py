"""The notebooks in a real JupyterLab, in a real browser (marker ``browser``).

What a user does: start JupyterLab, open a notebook, Run > Run All Cells, look at the outputs,
move a control. This test does the same through the UI, headless:

- JupyterLab on 127.0.0.1 (a free port, a random token, a temporary root folder holding copies
  of the notebooks, its own settings, workspaces and runtime folders; ``--allow-root`` for CI);
  the kernel is this interpreter's ipykernel with ``bitnet_lab`` from this checkout, widgets on
  (``BITNET_LAB_HEADLESS=0``), the inline matplotlib backend;
- Debian's Chromium driven by Playwright for Python (``executable_path=/usr/bin/chromium``:
  Playwright's own browser download is not needed);
- per notebook: open it, Run > Run All Cells from the menu bar, wait until every code cell has
  an execution count and the kernel is idle, then assert that no output area holds an error
  (a stderr output with a Traceback: what JupyterLab shows for an exception, inside widget
  outputs too), that the last cell printed "all checks passed", and — saved from the UI and
  read back — that no cell holds an ``error`` output;
- for 06 and 08 it then moves the slider of the ``widgets.explore`` cell with the keyboard and
  asserts that the output below it changed and holds no error (08: after Run All, whose Checks
  cell once removed the files the explorer reads).

Skipped, with the reason, only when Chromium or Playwright is missing (``.ci/run`` installs
both). JupyterLab itself comes with the ``[notebook]`` extra; without it the test fails and says
so. Runtime: the notebooks' own run time (~2–4 min on 2 cores) plus ~10 s per notebook.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
# BITNET_LAB_NOTEBOOK_DIR: run other copies of the notebooks (e.g. an older commit's, to see this
# test fail on what it guards against)
NB_DIR = Path(os.environ.get("BITNET_LAB_NOTEBOOK_DIR", ROOT / "notebooks"))
NOTEBOOKS = sorted(NB_DIR.glob("*.ipynb"))
CHROMIUM = os.environ.get("BITNET_LAB_CHROMIUM", "/usr/bin/chromium")
DONE_MARKER = "all checks passed"
RUN_ALL_TIMEOUT_S = 600      # one notebook, all cells (CI runs each in well under a minute)
SERVER_START_TIMEOUT_S = 90
WIDGET_TIMEOUT_S = 60        # a moved control's callback (08 reads a shard and draws a histogram)
STDERR = 'application/vnd.jupyter.stderr'
# notebooks whose widgets.explore slider is moved after Run All (and what it controls)
MOVE_SLIDER = {"06_interactive_inference": "step", "08_weight_distributions": "layer"}

pytestmark = pytest.mark.browser


def _missing() -> str | None:
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        return f"Chromium is not installed at {CHROMIUM} (apt-get install -y chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (pip install playwright)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read().decode())


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A running JupyterLab: (base url, token, root folder). Stopped at the end of the module."""
    why = _missing()
    if why:
        pytest.skip(why)
    if shutil.which("jupyter-lab") is None and subprocess.run(
            [sys.executable, "-c", "import jupyterlab"], check=False, capture_output=True).returncode != 0:
        pytest.fail("JupyterLab is not installed: pip install -e '.[notebook]' (or pip install jupyterlab)")
    base = tmp_path_factory.mktemp("lab")
    root = base / "root"
    root.mkdir()
    for p in NOTEBOOKS:
        shutil.copy2(p, root / p.name)
    settings = base / "settings"
    # every cell in the DOM (no virtual scrolling), no news or update pop-ups
    tracker = settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
    tracker.parent.mkdir(parents=True)
    tracker.write_text(json.dumps({"windowingMode": "none"}))
    notif = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notif.parent.mkdir(parents=True)
    notif.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    env.update({
        "BITNET_LAB_HEADLESS": "0",
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
        "JUPYTERLAB_SETTINGS_DIR": str(settings),
        "JUPYTERLAB_WORKSPACES_DIR": str(base / "workspaces"),
        "JUPYTER_CONFIG_DIR": str(base / "config"),
        "JUPYTER_RUNTIME_DIR": str(base / "runtime"),
        "JUPYTER_DATA_DIR": str(base / "data"),
        "JUPYTER_PLATFORM_DIRS": "1",
    })
    token = secrets.token_hex(16)
    port = _free_port()
    log = open(base / "jupyterlab.log", "wb")  # noqa: SIM115 (open for the server's lifetime)
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
         "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
         "--LabApp.news_url=", "--ServerApp.shutdown_no_activity_timeout=0"],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"JupyterLab exited ({proc.returncode}): {(base / 'jupyterlab.log').read_text()[-2000:]}")
            try:
                _get_json(f"{url}/api/status?token={token}")
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not answer on {url} within {SERVER_START_TIMEOUT_S} s")
                time.sleep(0.5)
        yield url, token, root
    finally:
        with contextlib.suppress(Exception):
            urllib.request.urlopen(urllib.request.Request(f"{url}/api/shutdown?token={token}", method="POST"),
                                   timeout=10)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(timeout=10)
        log.close()


@pytest.fixture(scope="module")
def browser(lab):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                               args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])
        try:
            yield b
        finally:
            b.close()


def _kernel_state(url: str, token: str, name: str) -> str | None:
    for s in _get_json(f"{url}/api/sessions?token={token}"):
        if s.get("path", "").endswith(name):
            return s["kernel"]["execution_state"]
    return None


def _stop_sessions(url: str, token: str) -> None:
    for s in _get_json(f"{url}/api/sessions?token={token}"):
        with contextlib.suppress(Exception):
            urllib.request.urlopen(urllib.request.Request(
                f"{url}/api/sessions/{s['id']}?token={token}", method="DELETE"), timeout=20)


def _errors_in(page, scope: str = "") -> list[str]:
    """Texts of the output areas under ``scope`` that show an exception."""
    texts = page.locator(f'{scope} .jp-OutputArea-output[data-mime-type="{STDERR}"]').all_inner_texts()
    return [t for t in texts if "Traceback" in t or re.search(r"^\w*(Error|Exception)\b", t, re.MULTILINE)]


def _prompts(page) -> list[str]:
    return page.locator(".jp-Notebook .jp-CodeCell .jp-InputArea-prompt").all_inner_texts()


def _run_all(page, name: str, n_code: int, url: str, token: str) -> float:
    """Run > Run All Cells from the menu bar; wait for every code cell's execution count and an
    idle kernel. Returns the seconds it took."""
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
    t0 = time.monotonic()
    deadline = t0 + RUN_ALL_TIMEOUT_S
    while True:
        prompts = [p.strip() for p in _prompts(page)]
        done = len(prompts) == n_code and all(re.fullmatch(r"\[\d+\]:", p) for p in prompts)
        if done and _kernel_state(url, token, name) == "idle":
            time.sleep(1.0)   # idle between two queued cells looks the same: confirm
            prompts = [p.strip() for p in _prompts(page)]
            if all(re.fullmatch(r"\[\d+\]:", p) for p in prompts) and _kernel_state(url, token, name) == "idle":
                return time.monotonic() - t0
        errs = _errors_in(page)
        if errs and not any("[*]" in p for p in prompts):  # stopped on an exception
            return time.monotonic() - t0
        if time.monotonic() > deadline:
            pytest.fail(f"{name}: Run All did not finish in {RUN_ALL_TIMEOUT_S} s; prompts {prompts}")
        time.sleep(0.5)


def _explore_cell_index(nb) -> int:
    return next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and "widgets.explore(" in c.source)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_in_jupyterlab(path: Path, lab, browser, capsys):
    url, token, root = lab
    nb = nbformat.read(path, as_version=4)
    n_code = sum(c.cell_type == "code" for c in nb.cells)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.set_default_timeout(60_000)
        page.goto(f"{url}/lab/tree/{path.name}?reset&token={token}")
        page.locator(".jp-Notebook .jp-CodeCell").first.wait_for(state="attached", timeout=120_000)
        # the kernel has started (the notebook's kernelspec, python3) before we run anything
        deadline = time.monotonic() + 120
        while _kernel_state(url, token, path.name) != "idle":
            if time.monotonic() > deadline:
                pytest.fail(f"{path.name}: no idle kernel within 120 s")
            time.sleep(0.5)
        took = _run_all(page, path.name, n_code, url, token)
        errors = _errors_in(page)
        assert not errors, f"{path.name}: error output after Run All:\n" + "\n---\n".join(e[-1500:] for e in errors)
        # every control shows its label and value whole (a readout or button cut off hides the setting)
        cut = page.evaluate("""() => [...document.querySelectorAll(
                '.jp-Notebook .widget-readout, .jp-Notebook .widget-toggle-button, .jp-Notebook .widget-label,'
                + ' .jp-Notebook .widget-button, .jp-Notebook .widget-dropdown select')]
            .filter(e => e.offsetParent !== null && e.scrollWidth > e.clientWidth + 1)
            .map(e => (e.innerText || e.value || '').trim())""")
        assert not cut, f"{path.name}: controls whose text is cut off: {cut}"
        cells = page.locator(".jp-Notebook .jp-Cell")
        assert cells.count() == len(nb.cells), f"{path.name}: {cells.count()} cells shown, {len(nb.cells)} in the file"
        last_code = max(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
        assert DONE_MARKER in cells.nth(last_code).locator(".jp-Cell-outputArea").inner_text(), (
            f"{path.name}: the last cell did not print {DONE_MARKER!r}")
        moved = ""
        stem = path.stem
        if any(c.cell_type == "code" and "widgets.explore(" in c.source for c in nb.cells):
            with contextlib.suppress(Exception):  # for a person to look at: the controls as drawn
                cells.nth(_explore_cell_index(nb)).locator(".jp-Cell-outputArea").screenshot(
                    path=str(root.parent / f"{stem}-controls.png"), timeout=10_000)
        if stem in MOVE_SLIDER:
            i = _explore_cell_index(nb)
            cell = cells.nth(i)
            out = cell.locator(".jp-Cell-outputArea")
            before = out.inner_text()
            had_figure = out.locator("img").count() > 0
            slider = cell.locator(".widget-slider", has=page.locator(".widget-label", has_text=MOVE_SLIDER[stem])).first
            readout = slider.locator(".widget-readout")
            value0 = readout.inner_text().strip()
            handle = slider.locator(".noUi-handle").first
            handle.scroll_into_view_if_needed()
            handle.focus()
            page.keyboard.press("ArrowRight")
            deadline = time.monotonic() + WIDGET_TIMEOUT_S
            while readout.inner_text().strip() == value0 or out.inner_text() == before:
                if time.monotonic() > deadline:
                    pytest.fail(f"{path.name}: moving the {MOVE_SLIDER[stem]} slider (readout "
                                f"{value0} -> {readout.inner_text().strip()}) did not change the output")
                time.sleep(0.25)
            while had_figure and out.locator("img").count() == 0:  # the callback draws its figure again
                if time.monotonic() > deadline:
                    pytest.fail(f"{path.name}: after moving the {MOVE_SLIDER[stem]} slider no figure came back")
                time.sleep(0.25)
            time.sleep(1.0)  # let the callback finish
            errors = _errors_in(page, ".jp-Notebook")
            assert not errors, f"{path.name}: error after moving the slider:\n" + "\n---\n".join(e[-1500:] for e in errors)
            moved = f"; {MOVE_SLIDER[stem]} slider {value0} -> {readout.inner_text().strip()}, output changed"
        # saved from the UI and read back: no cell holds an error output
        page.locator(".jp-Notebook").first.click(position={"x": 5, "y": 5})
        page.keyboard.press("Control+s")
        deadline = time.monotonic() + 30
        while True:
            saved = nbformat.read(root / path.name, as_version=4)
            if any(c.get("outputs") for c in saved.cells if c.cell_type == "code") or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        bad = [(i, o.get("ename"), o.get("evalue")) for i, c in enumerate(saved.cells) if c.cell_type == "code"
               for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert not bad, f"{path.name}: error outputs in the saved notebook: {bad}"
        with capsys.disabled():
            print(f"\n{path.name}: Run All in JupyterLab/Chromium took {took:.1f} s{moved}")
    finally:
        with contextlib.suppress(Exception):
            page.screenshot(path=str(root.parent / f"{path.stem}.png"), full_page=False)
        page.close()
        _stop_sessions(url, token)
