"""The repository's references hold (docs/design.md#conventions, "Citations").

- No tracked file names a path outside the repository (the specifications once lived beside it).
- Every ``docs/<page>.md`` and ``docs/<page>.md#<anchor>`` reference in any tracked text file
  (code, notebooks, README) names an existing page and, with an anchor, one of its headings.
- Every relative Markdown link in a tracked .md file resolves to a file (and heading).
- No bare section citation ("numerics §2.1", "formats.md §3") is left: sections are cited by
  anchor, or as a Markdown link whose target the checks above resolve.

Anchors follow GitHub's rule: lowercase; drop every character that is not a letter, digit, space,
hyphen or underscore; spaces become hyphens; a repeated heading gets ``-1``, ``-2``, … An explicit
``<a id="...">`` (or ``name=``) is accepted too.

The file list is ``git ls-files``: outside a git checkout (an sdist) the tests skip.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SELF = Path(__file__).resolve()

# The patterns are assembled from pieces so that this file does not match itself; it is skipped
# by every scan anyway.
_SHARED = "sha" + "red"
OUTSIDE = re.compile(r"\.\./" + _SHARED + r"\b|\b" + _SHARED + r"/(?:reference|design)")
# ``owner/repo:docs/x.md`` cites an upstream file, not ours: a ``:`` before ``docs/`` excludes it.
DOC_REF = re.compile(r"(?<![\w./:-])(?:\.\./)*docs/([\w.-]+?\.md)(?:#([\w-]+))?")
MD_LINK = re.compile(r"!?\[(?:[^\]\n]|\][^(\n])*?\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
CODE_SPAN = re.compile(r"`[^`\n]*`")
SECTION = "\u00a7"  # the section sign
BARE_NAMED = re.compile(r"\b(?:numerics|formats|kernels|design)(?:\.md)?`?\s*" + SECTION)
BARE_ANY = re.compile(SECTION + r"\s*\d")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
EXPLICIT_ANCHOR = re.compile(r"<a\s+(?:id|name)=\"([^\"]+)\"")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading text."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


@lru_cache(maxsize=None)
def anchors(path: Path) -> frozenset[str]:
    """Every anchor a Markdown file offers: its headings (outside code fences) and explicit ids."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    fence = None
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.lstrip()
        if stripped.startswith(("```", "~~~")):
            marker = stripped[:3]
            fence = None if fence == marker else (fence or marker)
            continue
        found.update(EXPLICIT_ANCHOR.findall(line))
        if fence:
            continue
        m = HEADING.match(line)
        if m:
            s = slug(m.group(2))
            n = seen.get(s, 0)
            seen[s] = n + 1
            found.add(s if n == 0 else f"{s}-{n}")
    return frozenset(found)


@lru_cache(maxsize=1)
def _tracked() -> tuple[tuple[str, str], ...]:
    """(path relative to the root, text) of every tracked text file but this one."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed: the tracked files cannot be listed")
    r = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True)
    if r.returncode != 0:
        pytest.skip("not a git checkout (e.g. an sdist): the tracked files cannot be listed")
    out = []
    for name in r.stdout.decode("utf-8", "surrogateescape").split("\0"):
        path = ROOT / name
        if not name or not path.is_file() or path.resolve() == SELF:
            continue
        data = path.read_bytes()
        if b"\0" in data[:8192]:
            continue  # binary
        try:
            out.append((name, data.decode("utf-8")))
        except UnicodeDecodeError:
            continue  # not text
    if not out:
        pytest.skip("git lists no files here")
    return tuple(out)


@pytest.fixture(scope="module")
def tracked() -> tuple[tuple[str, str], ...]:
    return _tracked()


def _lines(text: str):
    return enumerate(text.splitlines(), 1)


def _markdown_links(text: str):
    """(line number, target) of every Markdown link outside code fences and code spans."""
    fence = None
    for no, line in _lines(text):
        stripped = line.lstrip()
        if stripped.startswith(("```", "~~~")):
            marker = stripped[:3]
            fence = None if fence == marker else (fence or marker)
            continue
        if fence:
            continue
        for m in MD_LINK.finditer(CODE_SPAN.sub("", line)):
            yield no, m.group(1)


def check_outside_paths(files) -> list[str]:
    return [f"{name}:{no}: {line.strip()}" for name, text in files for no, line in _lines(text)
            if OUTSIDE.search(line)]


def check_doc_refs(files) -> list[str]:
    bad = []
    for name, text in files:
        for no, line in _lines(text):
            for m in DOC_REF.finditer(line):
                page, anchor = m.group(1), m.group(2)
                target = ROOT / "docs" / page
                if not target.is_file():
                    bad.append(f"{name}:{no}: {m.group(0)}: no such page")
                elif anchor and anchor not in anchors(target):
                    bad.append(f"{name}:{no}: {m.group(0)}: no heading with that anchor in docs/{page}")
    return bad


def check_markdown_links(files) -> list[str]:
    bad = []
    for name, text in files:
        if not name.endswith(".md"):
            continue
        here = (ROOT / name).parent
        for no, target in _markdown_links(text):
            if re.match(r"^[a-zA-Z][\w+.-]*:", target):
                continue  # http:, https:, mailto:, ...
            path_part, _, anchor = target.partition("#")
            dest = (here / path_part).resolve() if path_part else (ROOT / name).resolve()
            try:
                dest.relative_to(ROOT)
            except ValueError:
                bad.append(f"{name}:{no}: ({target}): outside the repository")
                continue
            if not dest.exists():
                bad.append(f"{name}:{no}: ({target}): no such file")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                bad.append(f"{name}:{no}: ({target}): no heading with that anchor")
    return bad


def check_bare_sections(files) -> list[str]:
    bad = []
    for name, text in files:
        for no, line in _lines(text):
            if SECTION not in line:
                continue
            rest = MD_LINK.sub("", line)  # a link's text may say "§2.1": its target is checked
            if BARE_NAMED.search(rest) or BARE_ANY.search(rest):
                bad.append(f"{name}:{no}: {line.strip()}")
    return bad


def _report(what: str, bad: list[str]) -> str:
    return f"{len(bad)} {what}:\n" + "\n".join(bad[:50])


def test_no_path_outside_the_repository(tracked):
    bad = check_outside_paths(tracked)
    assert not bad, _report("references to a path outside the repository (cite docs/ instead)", bad)


def test_docs_references_resolve(tracked):
    bad = check_doc_refs(tracked)
    assert not bad, _report("docs/ references that do not resolve", bad)


def test_markdown_links_resolve(tracked):
    bad = check_markdown_links(tracked)
    assert not bad, _report("relative Markdown links that do not resolve", bad)


def test_no_bare_section_citations(tracked):
    bad = check_bare_sections(tracked)
    assert not bad, _report("bare section citations (cite docs/<page>.md#<anchor>)", bad)


def test_the_checks_can_fail():
    """Each check fires on a bad reference (so a passing suite means something)."""
    s = SECTION
    anchor_ok = next(iter(anchors(ROOT / "docs" / "numerics.md")))
    fake = [
        ("a.py", "# see ../" + _SHARED + "/reference/numerics.md"),
        ("b.py", f"# docs/numerics.md#{anchor_ok} and docs/numerics.md#no-such-heading, docs/nope.md;"
                 " upstream's owner/repo:docs/gguf.md is not ours"),
        ("docs/c.md", f"[ok](numerics.md#{anchor_ok}) [bad](numerics.md#nope) [gone](missing.md)"),
        ("d.c", f"/* numerics {s}2.1, and a bare {s}3 */"),
    ]
    assert len(check_outside_paths(fake)) == 1
    assert len(check_doc_refs(fake)) == 2
    assert len(check_markdown_links(fake)) == 2
    assert len(check_bare_sections(fake)) == 1
    clean = [("e.md", f"[numerics.md {s}2.1](docs/numerics.md#{anchor_ok})")]
    assert not check_bare_sections(clean) and not check_markdown_links(clean)


def test_slug_rule():
    assert slug("2.1 bitnet.cpp I2_S path") == "21-bitnetcpp-i2_s-path"
    assert slug("7. FFN activation ReLU squared vs SiLU") == "7-ffn-activation-relu-squared-vs-silu"
    assert slug("Decode: memory layout and streaming") == "decode-memory-layout-and-streaming"
