"""Packaging: the data the wheel ships, the per-ISA flags table, the package list, the sdist.

No wheel is built here (.ci/run builds one, installs it into a fresh environment and runs the
README's main command from outside the checkout). These tests check the rules that make that
work: data/ is the package ``bitnet_lab.data``, found through importlib.resources; the one
flags table (cython_kernels/isa_flags.txt) is what setup.py, the built module and the C test
scripts use; every package under bitnet_lab/ is found by the build; the sdist carries data/.
"""

from __future__ import annotations

import ast
import fnmatch
import os
import re
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import pytest

import bitnet_lab
from bitnet_lab import paths

try:
    import tomllib
except ImportError:  # Python 3.10: pytest's own dependency
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
SETUP_PY = ROOT / "setup.py"
FLAGS_TABLE = ROOT / "cython_kernels" / "isa_flags.txt"
C_TEST_DIR = ROOT / "cython_kernels" / "tests"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SETUPTOOLS_CFG = PYPROJECT["tool"]["setuptools"]


# ---- data/ as the package bitnet_lab.data ---------------------------------------------------------


def test_data_is_found_through_importlib_resources():
    root = resources.files("bitnet_lab.data")
    assert isinstance(root, Path), root  # on disk: the model and vocabularies are memory-mapped
    # the checkout's data/ (editable install) or the installed package's data/ (wheel)
    assert root.resolve() in {ROOT / "data", Path(bitnet_lab.__file__).resolve().parent / "data"}, root
    if not os.environ.get("BITNET_LAB_DATA"):
        assert paths.DATA_DIR == root
    assert paths.VOCAB_DIR == paths.DATA_DIR / "vocab"
    for f in (paths.DATA_DIR / "default-model.gguf", paths.LLAMA3_VOCAB, paths.LLAMA2_VOCAB):
        assert f.is_file(), f
        with f.open("rb") as fh:
            assert fh.read(4) == b"GGUF", f


def test_data_env_override(tmp_path):
    """BITNET_LAB_DATA replaces the shipped directory (and the cache has its own override)."""
    code = "from bitnet_lab import paths; print(paths.DATA_DIR); print(paths.LLAMA3_VOCAB); print(paths.CACHE_DIR)"
    env = {**os.environ, "BITNET_LAB_DATA": str(tmp_path / "d"), "BITNET_LAB_CACHE": str(tmp_path / "c")}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [
        str(tmp_path / "d"), str(tmp_path / "d" / "vocab" / "ggml-vocab-llama-bpe.gguf"), str(tmp_path / "c")
    ]


def _data_files() -> list[str]:
    """Every file under data/ (relative, '/'-separated), build and cache leftovers aside."""
    out = []
    for p in sorted((ROOT / "data").rglob("*")):
        rel = p.relative_to(ROOT / "data").as_posix()
        if p.is_file() and "__pycache__" not in p.parts and not rel.endswith((".pyc", ".pyo")):
            out.append(rel)
    return out


def test_package_data_ships_every_data_file():
    """pyproject.toml maps bitnet_lab.data onto data/ and its package-data patterns cover every
    file there: a new file in data/ must be listed (or this test is where to decide it stays out)."""
    assert SETUPTOOLS_CFG["package-dir"] == {"bitnet_lab.data": "data"}
    assert SETUPTOOLS_CFG["include-package-data"] is False  # only what package-data names ships
    patterns = SETUPTOOLS_CFG["package-data"]["bitnet_lab.data"]
    files = _data_files()
    for pat in patterns:
        assert fnmatch.filter(files, pat), f"package-data pattern {pat!r} matches no file in data/"
    shipped = {f for f in files if any(fnmatch.fnmatch(f, pat) for pat in patterns)}
    assert set(files) - shipped == {"__init__.py"}  # the package's module ships as a module
    assert {"default-model.gguf", "vocab/ggml-vocab-llama-bpe.gguf", "vocab/ggml-vocab-llama-spm.gguf"} <= shipped
    size = sum((ROOT / "data" / f).stat().st_size for f in shipped)
    assert size < 16 << 20, f"data/ ships {size / 2**20:.1f} MiB in every wheel"


def test_license_is_an_spdx_string_with_its_files():
    project = PYPROJECT["project"]
    assert project["license"] == "MIT"
    for f in project["license-files"]:
        assert (ROOT / f).is_file(), f
    assert "license-files" not in SETUPTOOLS_CFG  # deprecated spelling
    assert any(re.fullmatch(r"setuptools>=(7[7-9]|[89]\d)(\.\d+)*", r) for r in PYPROJECT["build-system"]["requires"])


# ---- the package list -------------------------------------------------------------------------


def _setup_py_tree() -> ast.Module:
    return ast.parse(SETUP_PY.read_text(), filename=str(SETUP_PY))


def test_every_subpackage_is_found_by_the_build():
    """setup.py ships every *regular* package under bitnet_lab/ (find_packages): a directory of
    modules without __init__.py would be left out of the wheel without a word."""
    from setuptools import find_packages

    src = SETUP_PY.read_text()
    assert 'find_packages(include=["bitnet_lab", "bitnet_lab.*"])' in src and '"bitnet_lab.data"' in src
    assert "packages" not in SETUPTOOLS_CFG  # it would replace setup.py's list
    found = set(find_packages(str(ROOT), include=["bitnet_lab", "bitnet_lab.*"]))
    with_modules = {
        ".".join(d.relative_to(ROOT).parts)
        for d in (ROOT / "bitnet_lab").rglob("*")
        if d.is_dir() and "__pycache__" not in d.parts and not d.name.startswith(".") and any(d.glob("*.py"))
    } | {"bitnet_lab"}
    assert with_modules <= found, f"directories of modules without __init__.py: {sorted(with_modules - found)}"


# ---- the per-ISA flags table ------------------------------------------------------------------


@dataclass(frozen=True)
class Level:
    arch: str
    flags: tuple[str, ...]


def _table() -> dict[str, Level]:
    levels = {}
    for line in FLAGS_TABLE.read_text().splitlines():
        fields = line.split()
        if fields and not fields[0].startswith("#"):
            assert fields[0] not in levels, line
            levels[fields[0]] = Level(fields[1], tuple(fields[2:]))
    return levels


def _isa_sources() -> list[tuple[str, str]]:
    """(level, path expression) of every IsaSource(...) in setup.py's ISA_SOURCES."""
    out = []
    for node in ast.walk(_setup_py_tree()):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "IsaSource":
            out.append((node.args[0].value, ast.unparse(node.args[1])))
    return out


def test_flags_table_shape():
    table = _table()
    assert table["common"] == Level("any", ("-O3", "-fno-strict-aliasing", "-ffp-contract=off"))
    assert table["scalar"] == Level("any", ())
    for name, level in table.items():
        assert level.arch in ("any", "x86_64", "aarch64"), name
        assert not any("native" in f for f in level.flags), name  # never the build host's CPU
    # the x86 levels build on one another, as bl_dispatch.c assumes
    assert set(table["avx512vnni"].flags) < set(table["amx"].flags)
    assert set(table["avx2"].flags) < set(table["avxvnni"].flags)


def test_setup_py_reads_the_table():
    """setup.py's own reader (run here, out of setup.py) gives the table's levels, every level it
    compiles a file for is in the table and every table level is compiled; no ISA flag is
    spelled out in setup.py (only two per-file extras of the float kernels)."""
    tree = _setup_py_tree()
    wanted = {"IsaLevel", "read_isa_flags"}
    mod = ast.Module(
        body=[
            n for n in tree.body
            if isinstance(n, ast.ImportFrom) and n.module == "__future__"
            or isinstance(n, (ast.ClassDef, ast.FunctionDef)) and n.name in wanted
            or isinstance(n, ast.Assign) and {getattr(t, "id", None) for t in n.targets} & {"KERNEL_DIR", "ISA_FLAGS_TABLE"}
        ],
        type_ignores=[],
    )
    ns = {"dataclass": dataclass, "Path": Path, "__name__": __name__}
    exec(compile(mod, str(SETUP_PY), "exec"), ns)
    got = ns["read_isa_flags"](str(FLAGS_TABLE))
    table = _table()
    assert {k: (v.arch or "any", v.flags) for k, v in got.items()} == {k: (v.arch, v.flags) for k, v in table.items()}
    src = SETUP_PY.read_text()
    assert 'ISA_FLAGS_TABLE = f"{KERNEL_DIR}/isa_flags.txt"' in src and "read_isa_flags()" in src

    used = {level for level, _ in _isa_sources()}
    assert used and used <= set(table), used - set(table)
    assert used == set(table) - {"common"}, set(table) - {"common"} - used
    flag_literals = {
        n.value for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and re.fullmatch(r"-(m|O|march|ff|fno)\S*", n.value)
    }
    assert flag_literals <= {"-mf16c", "-mfma"}, flag_literals


def test_built_module_used_the_table():
    """The build record of the extension in use: each file's flags are common + its level's (+ extras)."""
    from bitnet_lab import kernels

    info = kernels.build_info()
    table = _table()
    assert info["common_flags"] == list(table["common"].flags)
    assert info["isa_files"]
    for name, rec in info["isa_files"].items():
        level = table[rec["isa"]]  # every level the build compiled has an entry
        want = [*table["common"].flags, *level.flags]
        assert rec["flags"][: len(want)] == want, name
        assert level.arch in ("any", info["target_arch"]), name


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_c_test_scripts_read_the_table():
    """build_c_objects.sh's bl_isa_flags returns the table's flags for every level, and no C test
    script spells an ISA flag out itself."""
    table = _table()
    script = f'source "{C_TEST_DIR / "build_c_objects.sh"}"\n'
    for name in table:
        script += f'bl_isa_flags {name} f; echo "{name}:${{f[*]}}"\n'
    script += "bl_isa_flags no_such_level f\n"
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "no level 'no_such_level'" in proc.stderr, proc.stderr
    got = dict(line.split(":", 1) for line in proc.stdout.splitlines())
    assert got == {name: " ".join(level.flags) for name, level in table.items()}
    for sh in sorted(C_TEST_DIR.glob("*.sh")):
        text = sh.read_text()
        assert "bl_isa_flags common common" in text or sh.name == "build_c_objects.sh", sh.name
        code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
        spelled = re.findall(r"(?<![\w-])(-mavx\S*|-mamx\S*|-mfma|-mf16c|-march=\S+|-O3|-ffp-contract=\S+)", code)
        assert not spelled, f"{sh.name} spells out {spelled}: read them from isa_flags.txt"


# ---- the sdist ----------------------------------------------------------------------------------


def _manifest_files() -> set[str]:
    """The files MANIFEST.in selects from the checkout, by setuptools' own rules."""
    from setuptools.command.egg_info import FileList

    fl = FileList()
    fl.findall(str(ROOT))
    for line in (ROOT / "MANIFEST.in").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            fl.process_template_line(line)
    return {os.path.relpath(f, ROOT).replace(os.sep, "/") for f in fl.files}


def test_manifest_includes_data_and_build_inputs():
    files = _manifest_files()
    want = {f"data/{f}" for f in _data_files()}
    want |= {"setup.py", "LICENSE", "cython_kernels/isa_flags.txt", "cython_kernels/tests/build_c_objects.sh"}
    assert want <= files, sorted(want - files)
    assert not any("__pycache__" in f or f.endswith(".pyc") for f in files)
    assert "cython_kernels/_kernels.c" not in files  # Cython output: regenerated by the build


def test_sdist_carries_data(tmp_path):
    """`python -m build --sdist` (the dev extra's `build`; ~10 s: an isolated build environment
    from the index or pip's cache), no deprecation warning, and data/ inside."""
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "-o", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert not re.search(r"(?i)deprecat", proc.stdout + proc.stderr), proc.stdout + proc.stderr
    (sdist,) = tmp_path.glob("*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    want = {f"data/{f}" for f in _data_files()} | {"LICENSE", "cython_kernels/isa_flags.txt", "setup.py"}
    assert want <= names, sorted(want - names)
