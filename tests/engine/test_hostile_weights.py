"""Hostile weights and files (issue 18, items 16 and 18).

Item 16 — NaN / inf in an embedding or a norm. The choice: **refuse** when a backend is built
(the first forward of a loaded model), with the tensor's name, the count and the first bad index;
``bl.load`` itself stays lazy and ``inspect`` still opens the file (a research tool may want to
look at a broken file). Scales were already checked by the readers.

Item 18 — a model file truncated (or rewritten) while it is mapped: the next forward raises a
clear error naming the file instead of dying of SIGBUS; ``load(mmap=False)`` is immune. Checked
in a child process for the five ternary types.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import bitnet_lab as bl
from bitnet_lab.errors import BitnetLabError, FormatError
from bitnet_lab.formats.gguf import GGUFFile
from bitnet_lab.tools.inspect import inspect_model

REAL = Path(__file__).resolve().parents[1] / "data" / "real-files"
I2S = REAL / "bitnet-i2_s.gguf"


def planted(tmp_path: Path, src: Path, name: str, index: int, value: float) -> Path:
    """A copy of ``src`` with element ``index`` of float tensor ``name`` set to ``value``."""
    f = GGUFFile(src)
    ti = f.tensor_info(name)
    dt = {"F32": "<f4", "F16": "<f2"}[ti.type_name]
    data = bytearray(src.read_bytes())
    size = np.dtype(dt).itemsize
    data[ti.offset + index * size : ti.offset + (index + 1) * size] = np.array([value], dt).tobytes()
    out = tmp_path / f"{name}-{value}.gguf"
    out.write_bytes(bytes(data))
    return out


CASES = [
    ("token_embd.weight", 3 * 256 + 5, np.nan, r"token_embd\.weight: 1 non-finite weights \(first nan at index \[3, 5\]\)"),
    ("token_embd.weight", 999 * 256, -np.inf, r"token_embd\.weight: 1 non-finite .*\[999, 0\]"),
    ("blk.1.ffn_norm.weight", 7, np.inf, r"blk\.1\.ffn_norm\.weight: 1 non-finite weights \(first inf at index \[7\]\)"),
    ("blk.0.attn_sub_norm.weight", 0, np.nan, r"blk\.0\.attn_sub_norm\.weight"),
    ("output_norm.weight", 255, np.nan, r"output_norm\.weight"),
]


@pytest.mark.parametrize("backend", ["native", "reference"])
@pytest.mark.parametrize("name, index, value, pattern", CASES, ids=[f"{c[0]}={c[2]}" for c in CASES])
def test_nonfinite_embedding_or_norm_refused_with_its_name(tmp_path, backend, name, index, value, pattern):
    if backend == "reference":
        pytest.importorskip("jax")
    p = planted(tmp_path, I2S, name, index, value)
    with bl.load(p, backend=backend) as m:   # loading stays lazy ...
        with pytest.raises(FormatError, match=pattern):
            m.logits([1, 2, 3])             # ... the backend refuses the file at build
    rep = inspect_model(p, progress=False)  # inspect still opens it
    assert rep.config is not None and rep.row(name).type_name in ("F16", "F32")


def test_clean_file_builds_and_finite_logits():
    with bl.load(I2S) as m:
        assert np.isfinite(m.logits([1, 2, 3])).all()


# ---- item 18: truncated while mapped ---------------------------------------------------------------

CHILD = textwrap.dedent("""
    import os, sys
    import bitnet_lab as bl
    from bitnet_lab.errors import BitnetLabError
    from bitnet_lab.formats.gguf import GGUFFile
    path, mmap = sys.argv[1], sys.argv[2] == "1"
    data_offset = GGUFFile(path).data_offset
    m = bl.load(path, mmap=mmap)
    m.logits([1, 2, 3])
    os.truncate(path, data_offset)          # every tensor's bytes gone from under the mapping
    try:
        m.logits([1, 2, 3])
        print("FORWARD-OK")
    except BitnetLabError as e:
        print("CLEAR-ERROR", e)
""")


@pytest.fixture(scope="module")
def ternary_files(tmp_path_factory):
    """One small model file per ternary type: the real I2_S / TQ1_0 / TQ2_0 files, TL1 / TL2 dummies."""
    from bitnet_lab.tools.dummy import generate_dummy

    d = tmp_path_factory.mktemp("ternary")
    files = {"i2_s": I2S, "tq1_0": REAL / "upstream-tq1_0.gguf", "tq2_0": REAL / "upstream-tq2_0.gguf"}
    for t in ("tl1", "tl2"):
        files[t] = generate_dummy("tiny", d / f"{t}.gguf", outtype=t, progress=False)
    return files


def _run_child(tmp_path: Path, src: Path, mmap: bool) -> subprocess.CompletedProcess:
    p = tmp_path / src.name
    p.write_bytes(src.read_bytes())
    return subprocess.run([sys.executable, "-c", CHILD, str(p), "1" if mmap else "0"],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("layout", ["i2_s", "tl1", "tl2", "tq1_0", "tq2_0"])
def test_file_truncated_while_mapped_gives_a_clear_error_not_sigbus(tmp_path, ternary_files, layout):
    r = _run_child(tmp_path, ternary_files[layout], mmap=True)
    assert r.returncode == 0, f"child died with {r.returncode} (-7 = SIGBUS): {r.stderr[-2000:]}"
    out = r.stdout.strip().splitlines()[-1]
    assert out.startswith("CLEAR-ERROR") and ternary_files[layout].name in out and "truncated" in out, out


@pytest.mark.parametrize("layout", ["i2_s", "tl2"])
def test_no_mmap_is_immune_to_truncation(tmp_path, ternary_files, layout):
    r = _run_child(tmp_path, ternary_files[layout], mmap=False)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "FORWARD-OK"


def test_file_rewritten_in_place_is_refused(tmp_path):
    """Same size, new bytes (a converter writing over the file in place): refused by its mtime."""
    import os

    p = tmp_path / "m.gguf"
    p.write_bytes(I2S.read_bytes())
    with bl.load(p) as m:
        m.logits([1, 2])
        st = os.stat(p)
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        with pytest.raises(BitnetLabError, match=r"m\.gguf: the model file was modified while it was in use"):
            m.logits([1, 2])
