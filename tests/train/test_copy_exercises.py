"""The copy exercises of scripts/build_chat_corpus.py (the default model's third fine-tune stage):
the same form as the edit workload of `bitnet-lab bench --spec`, none of the workload's own
functions, split by module as the chat exchanges are."""

from __future__ import annotations

import ast
import importlib.util
import random
import sys
from pathlib import Path

import pytest

from bitnet_lab.bench.speculative import edit_workload

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def builder():
    sys.path.insert(0, str(ROOT / "scripts"))   # build_chat_corpus imports gather_corpus from beside it
    try:
        spec = importlib.util.spec_from_file_location("build_chat_corpus", ROOT / "scripts" / "build_chat_corpus.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    return mod


def _source_functions(builder, names):
    """(qualified name, short name, code) of the named functions in this interpreter's stdlib."""
    found = {}
    for module, _, text, tree in builder.stdlib_modules():
        for qual, short, code in builder.functions_of_module(module, text, tree):
            if qual in names:
                found[qual] = (short, code)
    return found


@pytest.mark.skipif(sys.version_info[:2] != (3, 11), reason="the workload was cut from CPython 3.11's sources")
def test_an_exercise_is_written_as_the_edit_workload_prompts_are(builder):
    """Every prompt of the shipped edit workload comes out of copy_exercise for its function."""
    work = edit_workload("edit")
    found = _source_functions(builder, {item["name"] for item in work})
    for item in work:
        short, code = found[item["name"]]
        prompt, answer = builder.copy_exercise(item["name"], short, code, item["task"])
        assert prompt == item["prompt"], item["name"]
        first = prompt.rstrip("\n").rsplit("\n", 1)[-1]
        new = f"{short}_copy" if item["task"] == "rename" else short
        assert f"{first}\n{answer}" == code.replace(f"def {short}(", f"def {new}(", 1)


def test_docstrings_comment_lines_and_blank_lines_go_and_code_stays(builder):
    text = ('class K:\n'
            '    def m(self, x):\n'
            '        """Doc.\n\n        More."""\n'
            '        # a comment line\n'
            '\n'
            '        s = "# not a comment"\n'
            '        return s  # kept: after code\n'
            '    def only_doc(self):\n'
            '        """Nothing else."""\n')
    got = list(builder.functions_of_module("mod", text, ast.parse(text)))
    assert got == [("mod.K.m", "m", 'def m(self, x):\n    s = "# not a comment"\n    return s  # kept: after code')]


def test_the_workload_functions_are_never_exercises_and_the_split_is_by_module(builder):
    from bitnet_lab.formats.gguf import read_metadata
    from bitnet_lab.tokenizer import Tokenizer
    from bitnet_lab.tools.default_model import shipped_model_path

    path = shipped_model_path()
    tok = Tokenizer.from_metadata(read_metadata(path), source=str(path))
    exclude = {item["name"] for item in edit_workload("edit")}
    ex = builder.copy_exercises(tok, random.Random(0), 10, 30, exclude, 200)
    assert len(ex["train"]) > 1000 and len(ex["valid"]) > 100
    names = [e["name"] for split in ex.values() for e in split]
    assert not exclude & set(names)
    assert not {e["module"] for e in ex["train"]} & {e["module"] for e in ex["valid"]}
    for e in ex["train"][:300] + ex["valid"][:100]:
        assert e["text"] == e["prompt"] + e["answer"]
        assert e["tokens"] == len(tok.encode(e["text"], add_bos=False))
        assert e["prompt"].startswith(f"# {e['name']}\n") and e["task"] in ("reproduce", "rename")
        assert e["tokens"] <= 200
