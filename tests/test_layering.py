"""The package's shape (docs/design.md#the-layering-rule): sub-packages by stage of the data flow,
lower layers never importing higher ones, no import cycles, a small top level.

The rules themselves are import-linter contracts in pyproject.toml; this test runs them, so an
upward or circular import fails the suite with import-linter's report of the offending chain.
"""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import bitnet_lab

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(bitnet_lab.__file__).parent
MAX_TOP_LEVEL_MODULES = 12


def test_import_linter_contracts_hold():
    # A subprocess: import-linter builds its graph from the source files, and its own cache is
    # kept out of the checkout.
    r = subprocess.run([sys.executable, "-c", "import sys; from importlinter.cli import lint_imports; "
                        "sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True, no_logo=True))"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 broken" in r.stdout and "kept" in r.stdout, r.stdout


def test_the_contracts_name_every_sub_package():
    """A new sub-package must be placed in the layers (an unlisted one would be unchecked)."""
    import tomllib

    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = next(c for c in cfg["contracts"] if c["type"] == "layers")["layers"]
    listed = {name.strip() for layer in layers for name in layer.split("|")}
    subpackages = {f"bitnet_lab.{m.name}" for m in pkgutil.iter_modules([str(PACKAGE)]) if m.ispkg}
    assert subpackages <= listed, f"sub-packages missing from the layers contract: {sorted(subpackages - listed)}"


def test_top_level_is_small():
    modules = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(modules) <= MAX_TOP_LEVEL_MODULES, modules


@pytest.mark.parametrize("name", sorted(
    m.name for m in pkgutil.walk_packages([str(PACKAGE)], prefix="bitnet_lab.")
    if not m.name.endswith("__main__")))
def test_every_module_imports_on_its_own(name):
    """No module depends on another having been imported first (the old late-import cycles did)."""
    r = subprocess.run([sys.executable, "-c", f"import {name}"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]


def test_import_bitnet_lab_stays_light():
    r = subprocess.run([sys.executable, "-c", "import sys, bitnet_lab; heavy = {'jax', 'matplotlib', 'ipywidgets', "
                        "'tokenizers', 'bitnet_lab._kernels'} & set(sys.modules); print(sorted(heavy))"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr
    assert importlib.import_module("bitnet_lab").load is not None
