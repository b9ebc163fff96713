#!/usr/bin/env python3
"""Gather the training corpus of the embedded default model from the running Python: no download.

What: the CPython standard library of *this* interpreter — its pure-Python module sources (code,
comments and docstrings as written), optionally each module's docstrings again as a prose
document (``--docstrings``), and the documentation topics of ``pydoc_data.topics`` (the prose the
``help()`` system shows: the language reference sections). Every machine with Python has it.

Licence: the CPython standard library and its documentation are distributed under the Python
Software Foundation License Version 2 (PSF-2.0), an open, permissive licence that allows copying,
modification and redistribution, including of derived works, provided the PSF copyright notice
and licence are retained. The interpreter's own ``LICENSE.txt`` is copied next to the output
(``LICENSE-PSF.txt``) and ``PROVENANCE.md`` says what was taken from where.

Output (``--out``, default ``~/.cache/bitnet_lab/corpus``):

- ``train.jsonl``, ``valid.jsonl``: one document per line, ``{"source": ..., "text": ...}``;
- ``valid.txt``: the held-out documents as plain text, separated by blank lines (for
  ``bitnet-lab perplexity -f``);
- ``manifest.json`` (counts, bytes, sha256 of each output file, the options, the Python version),
  ``PROVENANCE.md``, ``LICENSE-PSF.txt``.

Determinism: files are walked in sorted order of their path relative to the standard library;
the held-out split is by document, decided by a hash of its source name (``sha1(source) mod
1000 < --valid-permille``), so the split of a file never depends on which other files exist.
The same Python version gives byte-identical output (the manifest's sha256 say so).

Usage::

    python scripts/gather_corpus.py [--out DIR] [--max-bytes N] [--max-file-bytes N]
                                    [--valid-permille 30] [--docstrings] [--no-topics]
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import shutil
import sys
import sysconfig
from pathlib import Path
from typing import Iterator

CORPUS_VERSION = 1
# Directories left out by default: tests (huge, repetitive, deliberately odd encodings), installed
# third-party packages, generated codec tables (encodings/), bytecode caches, and pydoc_data (its
# topics are read as text through the module instead of as a Python source file).
EXCLUDED_DIRS = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__",
                 "encodings", "pydoc_data"}
EXCLUDED_PREFIXES = ("config-", "_sysconfigdata")  # build configuration, machine specific
LICENSE_NAME = "LICENSE-PSF.txt"


def stdlib_dir() -> Path:
    """The running interpreter's pure-Python standard library folder."""
    return Path(sysconfig.get_paths()["stdlib"])


def _excluded(rel: Path, include_tests: bool) -> bool:
    for part in rel.parts[:-1]:
        if part in EXCLUDED_DIRS and not (include_tests and part in ("test", "tests", "idle_test")):
            return True
        if part.startswith(EXCLUDED_PREFIXES):
            return True
    return rel.name.startswith(EXCLUDED_PREFIXES)


def source_files(root: Path, *, include_tests: bool = False) -> list[Path]:
    """Relative paths of the ``.py`` files under ``root``, sorted (POSIX string order)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in filenames:
            if name.endswith(".py"):
                rel = Path(dirpath, name).relative_to(root)
                if not _excluded(rel, include_tests):
                    out.append(rel)
    return sorted(out, key=lambda p: p.as_posix())


def module_docstrings(text: str) -> str | None:
    """The module, class and function docstrings of a source, in file order, as one prose text."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return None
    docs = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=True)
            if doc:
                docs.append((getattr(node, "lineno", 0), doc))
    docs.sort(key=lambda d: d[0])
    return "\n\n".join(d for _, d in docs) or None


def documents(*, max_file_bytes: int, include_tests: bool, docstrings: bool, topics: bool,
              stats: dict) -> Iterator[tuple[str, str]]:
    """``(source, text)`` of every document, in the deterministic order described above."""
    root = stdlib_dir()
    for rel in source_files(root, include_tests=include_tests):
        path = root / rel
        size = path.stat().st_size
        if size > max_file_bytes:
            stats["skipped_too_large"] += 1
            continue
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            stats["skipped_not_utf8"] += 1
            continue
        if not text.strip():
            continue
        yield f"stdlib/{rel.as_posix()}", text
        if docstrings:
            doc = module_docstrings(text)
            if doc:
                yield f"docstrings/{rel.as_posix()}", doc
    if topics:
        try:
            from pydoc_data.topics import topics as pydoc_topics
        except ImportError:  # a stripped-down Python without pydoc_data: say so, do not hide it
            stats["pydoc_topics_missing"] = True
            return
        for key in sorted(pydoc_topics):
            text = pydoc_topics[key]
            if text.strip():
                yield f"pydoc_data.topics/{key}", text


def is_valid(source: str, permille: int) -> bool:
    """The held-out split: decided by the source name alone."""
    return int(hashlib.sha1(source.encode("utf-8")).hexdigest(), 16) % 1000 < permille


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def gather(out: str | os.PathLike, *, max_bytes: int | None = None, max_file_bytes: int = 512 * 1024,
           valid_permille: int = 30, include_tests: bool = False, docstrings: bool = False,
           topics: bool = True, quiet: bool = False) -> dict:
    """Write the corpus to ``out`` and return its manifest (see the module docstring).

    ``max_bytes`` caps the training split (UTF-8 bytes; documents are taken in order until the
    next one would pass it); the held-out split is never capped.
    """
    if not 0 <= valid_permille <= 1000:
        raise ValueError(f"valid_permille must be in [0, 1000], got {valid_permille}")
    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    stats = {"skipped_too_large": 0, "skipped_not_utf8": 0, "skipped_over_max_bytes": 0}
    counts = {"train": [0, 0], "valid": [0, 0]}  # documents, bytes
    tmp = {s: out / f".{s}.jsonl.tmp" for s in ("train", "valid")}
    valid_txt_tmp = out / ".valid.txt.tmp"
    with open(tmp["train"], "w", encoding="utf-8") as ftr, open(tmp["valid"], "w", encoding="utf-8") as fva, \
            open(valid_txt_tmp, "w", encoding="utf-8") as fvt:
        for source, text in documents(max_file_bytes=max_file_bytes, include_tests=include_tests,
                                      docstrings=docstrings, topics=topics, stats=stats):
            n = len(text.encode("utf-8"))
            split = "valid" if is_valid(source, valid_permille) else "train"
            if split == "train" and max_bytes is not None and counts["train"][1] + n > max_bytes:
                stats["skipped_over_max_bytes"] += 1
                continue
            line = json.dumps({"source": source, "text": text}, ensure_ascii=False)
            (fva if split == "valid" else ftr).write(line + "\n")
            if split == "valid":
                if counts["valid"][0]:
                    fvt.write("\n\n")
                fvt.write(text.rstrip("\n"))
            counts[split][0] += 1
            counts[split][1] += n
        fvt.write("\n")
    for s in ("train", "valid"):
        os.replace(tmp[s], out / f"{s}.jsonl")
    os.replace(valid_txt_tmp, out / "valid.txt")

    license_src = stdlib_dir() / "LICENSE.txt"
    if license_src.is_file():
        shutil.copyfile(license_src, out / LICENSE_NAME)
    else:
        (out / LICENSE_NAME).write_text(
            "This interpreter ships no LICENSE.txt. The CPython standard library is distributed under\n"
            "the Python Software Foundation License Version 2: https://docs.python.org/3/license.html\n")
    files = {name: _sha256(out / name) for name in ("train.jsonl", "valid.jsonl", "valid.txt", LICENSE_NAME)}
    manifest = {
        "corpus_version": CORPUS_VERSION,
        "python": sys.version.split()[0],
        "implementation": sys.implementation.name,
        "stdlib": str(stdlib_dir()),
        "licence": "PSF-2.0 (Python Software Foundation License Version 2)",
        "options": {"max_bytes": max_bytes, "max_file_bytes": max_file_bytes, "valid_permille": valid_permille,
                    "include_tests": include_tests, "docstrings": docstrings, "topics": topics},
        "train": {"documents": counts["train"][0], "bytes": counts["train"][1]},
        "valid": {"documents": counts["valid"][0], "bytes": counts["valid"][1]},
        "skipped": stats,
        "sha256": files,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    (out / "PROVENANCE.md").write_text(_provenance(manifest))
    if not quiet:
        print(f"corpus: {out}  train {counts['train'][0]} documents, {counts['train'][1] / 1e6:.2f} MB; "
              f"valid {counts['valid'][0]} documents, {counts['valid'][1] / 1e6:.2f} MB "
              f"(Python {manifest['python']})", file=sys.stderr)
    return manifest


def _provenance(m: dict) -> str:
    o = m["options"]
    excluded = ", ".join(sorted(EXCLUDED_DIRS - ({"test", "tests", "idle_test"} if o["include_tests"] else set())))
    parts = [f"- every pure-Python module source (`.py`) of the standard library, as written (code, "
             f"comments, docstrings), except the folders {excluded} and files over {o['max_file_bytes']} bytes"]
    if o["docstrings"]:
        parts.append("- each module's docstrings again, as one prose document per module")
    if o["topics"]:
        parts.append("- the documentation topics of `pydoc_data.topics` (the text `help()` shows)")
    cap = f" (training split capped at {o['max_bytes']} bytes)" if o["max_bytes"] is not None else ""
    return f"""# Provenance of this corpus

Gathered by `scripts/gather_corpus.py` (bitnet_lab, corpus version {m['corpus_version']}) from the
standard library of {m['implementation']} {m['python']} at `{m['stdlib']}`. Nothing was downloaded.

Contents, in this order:
{chr(10).join(parts)}

Split: a document is held out (`valid.*`) when sha1(its source name) mod 1000 < {o['valid_permille']}.
Training split{cap}: {m['train']['documents']} documents, {m['train']['bytes']} bytes; held out:
{m['valid']['documents']} documents, {m['valid']['bytes']} bytes.

Licence: the CPython standard library and its documentation are (c) Python Software Foundation
and distributed under the Python Software Foundation License Version 2 (PSF-2.0), which permits
copying, modification and redistribution provided the copyright notice and licence are kept. The
full licence text of this interpreter is in `{LICENSE_NAME}` next to this file. A model trained on
this text is a derived work distributed under the same notice.
"""


def main(argv: list[str] | None = None) -> int:
    from_env = os.environ.get("BITNET_LAB_CACHE")
    default_out = Path(from_env) / "corpus" if from_env else Path.home() / ".cache" / "bitnet_lab" / "corpus"
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(default_out), help=f"output folder (default {default_out})")
    p.add_argument("--max-bytes", type=int, default=None, help="cap the training split at N bytes (default: no cap)")
    p.add_argument("--max-file-bytes", type=int, default=512 * 1024,
                   help="skip source files larger than this (default 524288)")
    p.add_argument("--valid-permille", type=int, default=30, help="held-out share in 1/1000 (default 30)")
    p.add_argument("--include-tests", action="store_true", help="also take the test packages")
    p.add_argument("--docstrings", action="store_true", help="add each module's docstrings as a prose document")
    p.add_argument("--no-topics", dest="topics", action="store_false", help="leave out pydoc_data.topics")
    a = p.parse_args(argv)
    gather(a.out, max_bytes=a.max_bytes, max_file_bytes=a.max_file_bytes, valid_permille=a.valid_permille,
           include_tests=a.include_tests, docstrings=a.docstrings, topics=a.topics)
    return 0


if __name__ == "__main__":
    sys.exit(main())
