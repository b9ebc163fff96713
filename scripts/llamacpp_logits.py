#!/usr/bin/env python3
"""Record llama.cpp's own logits for TQ1_0/TQ2_0 files: the conformance data of numerics="llama.cpp".

What: upstream llama.cpp (through llama-cpp-python, the project's ``llamacpp`` extra) runs each
model teacher-forced on a fixed text — every position's logits (``logits_all``), one batch, flash
attention OFF (the path docs/numerics.md#121-the-two-profiles-rule-by-rule describes: F16 K/V cache, q and
the softmax output rounded to fp16 for their mat-muls), K and V cache F16 — and the logits are saved
with the token ids, the versions and the command, under ``tests/data/llamacpp-logits/``. The
logits are written by llama.cpp's code, not ours (like ``tests/data/real-files/``): the test
``tests/verify/test_llamacpp_conformance.py`` holds our ``llama.cpp`` profile against them.

Models:

* ``tests/data/real-files/upstream-tq1_0.gguf``, ``upstream-tq2_0.gguf`` (files written by
  llama.cpp's own ``llama-quantize``; vocabulary 1000): every logit is stored;
* a TQ2_0 dummy of 3 layers with the Llama-2 vocabulary (32002 tokens), written by
  ``bitnet_lab.tools.dummy.generate_dummy`` from the layout and seed in ``dummy.json`` (the test
  regenerates it and checks its sha256): only the top ``--top`` logits of each position are stored
  (ids and values) with each position's ``max|logit|``: what top-1 agreement, the top-2 margin, the
  tie bound and ``max|Δlogit|`` over them need, in a file small enough to commit.

Usage (from the repository root, llama-cpp-python installed: ``pip install '.[llamacpp]'``)::

    python3 scripts/llamacpp_logits.py [--out tests/data/llamacpp-logits] [--threads 2]

(Its package from a source tree also works: ``PYTHONPATH=<sdist> LLAMA_CPP_LIB_PATH=<dir of
libllama.so>``, llama-cpp-python's own override of where its library is found.)

Determinism: llama.cpp's CPU logits do not depend on the thread count for these models (each
output of a mat-mul is one dot product); they do depend on the build (the SIMD level changes ggml's
float summation order), which is why the build's system info is recorded.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import json
import shlex
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT / "tests" / "data" / "real-files"
OUT = ROOT / "tests" / "data" / "llamacpp-logits"

# The text every model is teacher-forced on (public-domain prose: the opening of "A Tale of Two Cities").
TEXT = ("It was the best of times, it was the worst of times, it was the age of wisdom, it was the age "
        "of foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season of "
        "Light, it was the season of Darkness, it was the spring of hope, it was the winter of despair.")

# The dummy: bitnet.cpp's "125M" dummy layout (arch `bitnet`, SiLU, sub-norms, MHA, tied, the Llama-2
# vocabulary: the graph upstream llama.cpp builds for `bitnet`, docs/numerics.md#104-upstream-llamacpp-bitnet-graph)
# cut to 3 layers of width 256 so the test can regenerate it in seconds.
DUMMY = {"base_layout": "125M", "name": "llamacpp-conformance", "hidden": 256, "n_layers": 3, "n_heads": 4,
         "n_kv_heads": 4, "head_dim": 64, "ffn": 768, "outtype": "tq2_0", "seed": 19}


def dummy_layout(spec: dict):
    """The conformance dummy's Layout (also used by the test to regenerate the file)."""
    from bitnet_lab.tools.layouts import get_layout

    base = get_layout(spec["base_layout"])
    cfg = dataclasses.replace(base.config, hidden=spec["hidden"], n_layers=spec["n_layers"],
                              n_heads=spec["n_heads"], n_kv_heads=spec["n_kv_heads"],
                              head_dim=spec["head_dim"], ffn=spec["ffn"], name=spec["name"])
    return dataclasses.replace(base, name=spec["name"], config=cfg)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def llama_logits(path: Path, text: str, threads: int) -> tuple[list[int], np.ndarray, dict]:
    """(token ids, logits (T, vocab) float32, settings) of llama.cpp teacher-forced on ``text``."""
    import llama_cpp

    # flash_attn=False: llama-cpp-python sets LLAMA_FLASH_ATTN_TYPE_DISABLED (llama.cpp's default
    # is "auto", which would take the flash-attention path on CPU)
    llm_kwargs = dict(model_path=str(path), n_ctx=512, n_batch=512, n_ubatch=512, n_threads=threads,
                      n_threads_batch=threads, logits_all=True, verbose=False, seed=0, flash_attn=False,
                      type_k=llama_cpp.GGML_TYPE_F16, type_v=llama_cpp.GGML_TYPE_F16)
    llm = llama_cpp.Llama(**llm_kwargs)
    if llm.context_params.flash_attn_type != llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED:
        raise SystemExit(f"{path}: flash attention is not off (flash_attn_type {llm.context_params.flash_attn_type})")
    ids = llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)
    llm.reset()
    llm.eval(ids)
    logits = np.array(llm.scores[: len(ids)], dtype=np.float32)
    settings = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in llm_kwargs.items()
                if k != "model_path"}
    del llm
    return [int(i) for i in ids], logits, settings


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--top", type=int, default=64, help="logits kept per position for the dummy (default 64)")
    args = ap.parse_args(argv)
    import llama_cpp

    sys.path.insert(0, str(ROOT))
    args.out.mkdir(parents=True, exist_ok=True)
    info = {
        "written_by": "upstream llama.cpp through llama-cpp-python",
        "llama_cpp_python": getattr(llama_cpp, "__version__", "?"),
        "system_info": llama_cpp.llama_print_system_info().decode(errors="replace").strip(),
        "command": "python3 " + " ".join(shlex.quote(a) for a in [f"scripts/{Path(__file__).name}", *(argv or sys.argv[1:])]),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "text": TEXT,
        "models": {},
    }
    for name in ("upstream-tq1_0", "upstream-tq2_0"):
        path = REAL / f"{name}.gguf"
        ids, logits, settings = llama_logits(path, TEXT, args.threads)
        np.savez_compressed(args.out / f"{name}.npz", ids=np.array(ids, np.int32), logits=logits)
        info["models"][name] = {"file": f"tests/data/real-files/{name}.gguf", "sha256": sha256(path),
                                "tokens": len(ids), "vocab": int(logits.shape[1]), "stored": "every logit",
                                "settings": settings}
        print(f"{name}: {len(ids)} tokens x {logits.shape[1]} logits", file=sys.stderr)

    from bitnet_lab.tools.dummy import generate_dummy

    with tempfile.TemporaryDirectory() as tmp:
        path = generate_dummy(dummy_layout(DUMMY), Path(tmp) / "dummy.gguf", outtype=DUMMY["outtype"],
                              seed=DUMMY["seed"], progress=False)
        ids, logits, settings = llama_logits(path, TEXT, args.threads)
        top = np.argsort(-logits, axis=1, kind="stable")[:, : args.top].astype(np.int32)
        np.savez_compressed(args.out / "dummy-tq2_0.npz", ids=np.array(ids, np.int32), top_ids=top,
                            top_logits=np.take_along_axis(logits, top, axis=1),
                            absmax=np.abs(logits).max(axis=1))  # each row's max|logit|: the tie bound's scale
        info["models"]["dummy-tq2_0"] = {"file": "generated: bitnet_lab.tools.dummy.generate_dummy (dummy spec)",
                                         "dummy": DUMMY, "sha256": sha256(path), "tokens": len(ids),
                                         "vocab": int(logits.shape[1]),
                                         "stored": f"the top {args.top} logits of each position (ids, values)",
                                         "settings": settings}
        print(f"dummy-tq2_0: {len(ids)} tokens x {logits.shape[1]} logits (top {args.top} kept)", file=sys.stderr)
    (args.out / "llamacpp.json").write_text(json.dumps(info, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
