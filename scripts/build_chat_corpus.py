#!/usr/bin/env python3
"""Build the chat fine-tuning corpus of the default model: question/answer turns from the standard library.

What: for every public function, class, method and module of *this* interpreter's pure-Python
standard library (the files ``scripts/gather_corpus.py`` takes, parsed with ``ast``: nothing is
imported), question/answer exchanges built from the source itself —

- ``doc``: "What does `textwrap.dedent` do?" → the first paragraph of its docstring (whitespace
  collapsed to single spaces); modules: "What does the `textwrap` module do?";
- ``sig``: "Show me the signature of `os.path.join`." → ``os.path.join(a, *p)`` (the ``def``
  line's parameters as ``ast.unparse`` writes them; a class's is its ``__init__``'s without
  ``self``; ``posixpath`` is named ``os.path``, as users call it)

— each rendered in the default model's chat template (:data:`CHAT_TEMPLATE`, which this script
also writes as ``chat_template.jinja``: ``<|user|>`` / ``<|assistant|>`` blocks, and an
assistant turn ends with the model's end token ``<|endoftext|>``, so a chat stops on it). One
exchange is one document; ``bitnet-lab train`` appends ``<|endoftext|>`` after every document,
so the document is the rendering without that last token, and consecutive exchanges in the token
file read as a multi-turn chat. A quarter of the exchanges open with a system message.

With ``--copy-exercises``, also copy exercises (the default model's third fine-tune stage, which
teaches it to copy code — what makes prompt-lookup speculative decoding pay on edit-style prompts):
a function or method of the same sources, docstring and comments removed, then a request to write it
again unchanged or renamed, then the copy, in exactly the form of ``bitnet-lab bench --spec``'s edit
workload (``data/spec-edit-workload.json``), whose own functions are never exercises.

Output (``--out``, default ``~/.cache/bitnet_lab/chat-corpus``), a corpus folder for ``bitnet-lab
train --corpus``:

- ``train.jsonl``: the original corpus's training documents (``--corpus``, from
  ``gather_corpus.py``) and the training exchanges, shuffled together (seeded);
- ``valid.jsonl``, ``valid.txt``: the original corpus's held-out documents, copied unchanged
  (the trainer's held-out loss and ``bitnet-lab perplexity`` stay comparable with the base model);
- ``chat_train.jsonl``, ``chat_valid.jsonl``: the exchanges as ``{"module", "name", "kind",
  "system", "question", "answer", "text"}`` (held-out ones for measuring the chat);
- ``copy_train.jsonl``, ``copy_valid.jsonl`` (with ``--copy-exercises``): the exercises as
  ``{"module", "name", "task", "prompt", "answer", "text", "tokens"}`` (``text`` = prompt + answer,
  ``tokens`` its length without the end token);
- ``chat_template.jinja``, ``manifest.json`` (counts, tokens, sha256 of each file, options),
  ``PROVENANCE.md``, ``LICENSE-PSF.txt``.

Held-out split, by module (a module's exchanges are all on one side): a module is held out when its
source document is in the original corpus's held-out split (so no held-out text is seen as
answers either) or when ``sha1("chat/" + module) mod 100 < --heldout-percent``.

Determinism: files in sorted order, one ``random.Random(--seed)`` for every choice; the same
Python version and options give byte-identical output (the manifest's sha256 say so).

Usage::

    python scripts/gather_corpus.py                      # the original corpus, once
    python scripts/build_chat_corpus.py [--corpus DIR] [--out DIR] [--model GGUF] [--seed 0]
                                        [--heldout-percent 10] [--copies 2] [--max-answer-tokens 96]
                                        [--copy-exercises N] [--max-copy-tokens 200]
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import io
import random
import shutil
import sys
import textwrap
import tokenize
from pathlib import Path
from typing import Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gather_corpus  # noqa: E402  (the same file walk and held-out rule as the original corpus)

CHAT_CORPUS_VERSION = 1
EOT = "<|endoftext|>"
# The default model's chat template (Jinja, as the Hub renders it: trim_blocks, lstrip_blocks).
# User and system turns end with a newline; an assistant turn ends with eos_token (<|endoftext|>,
# the model's one special token: BOS = EOS = EOT), which is what stops generation.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|assistant|>\\n' + message['content'] + eos_token }}"
    "{% else %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + '\\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)

DOC_QUESTIONS = (
    "What does `{name}` do?",
    "What does {name} do?",
    "What is `{name}` for?",
    "Explain `{name}`.",
    "Tell me about `{name}`.",
    "What does the {kind} `{name}` do?",
)
MODULE_QUESTIONS = (
    "What does the `{name}` module do?",
    "What is the `{name}` module for?",
    "Tell me about the {name} module.",
    "What is in the `{name}` module?",
)
SIG_QUESTIONS = (
    "Show me the signature of `{name}`.",
    "What is the signature of `{name}`?",
    "What arguments does `{name}` take?",
    "How do I call `{name}`?",
    "Show me the signature of {name}.",
)
SYSTEM_PROMPTS = (
    "You are a helpful assistant.",
    "You are a helpful assistant. Answer briefly.",
    "You are an expert on the Python standard library.",
    "Answer questions about Python.",
)
SYSTEM_SHARE = 0.25
MODULE_ALIASES = {"posixpath": "os.path"}   # what users call it
SKIP_DECORATORS = {"property", "setter", "getter", "deleter", "overload", "cached_property"}


# =============================================================================================
# Items: (module, qualified name, kind, first docstring paragraph, signature) from the sources
# =============================================================================================


def module_name(rel: Path) -> str | None:
    """``json/decoder.py`` → ``json.decoder``; None for private or ``__main__`` modules."""
    parts = list(rel.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    if not parts or any(p.startswith("_") for p in parts):
        return None
    return ".".join(parts)


def first_paragraph(doc: str | None, short_name: str) -> str | None:
    """The first paragraph of a (cleaned) docstring as one line; a leading C-style signature
    paragraph (``dedent(text) -> str``) is skipped. None when there is no usable paragraph."""
    if not doc:
        return None
    paras = [" ".join(p.split()) for p in doc.strip().split("\n\n") if p.strip()]
    while paras and (paras[0].startswith(short_name + "(") or "->" in paras[0][:60] and "(" in paras[0][:30]):
        paras.pop(0)
    if not paras:
        return None
    p = paras[0]
    if len(p) < 20 or not any(c.isalpha() for c in p):
        return None
    return p


def _decorator_names(node) -> set[str]:
    out = set()
    for d in node.decorator_list:
        d = d.func if isinstance(d, ast.Call) else d
        if isinstance(d, ast.Attribute):
            out.add(d.attr)
        elif isinstance(d, ast.Name):
            out.add(d.id)
    return out


def _signature(fn, drop_first: bool) -> str:
    args = fn.args
    if drop_first and (args.posonlyargs or args.args):
        pos = list(args.posonlyargs) + list(args.args)
        defaults = list(args.defaults)
        if len(defaults) == len(pos):   # the dropped parameter had a default itself
            defaults.pop(0)
        args = ast.arguments(posonlyargs=list(args.posonlyargs[1:]),
                             args=list(args.args if args.posonlyargs else args.args[1:]),
                             vararg=args.vararg, kwonlyargs=args.kwonlyargs, kw_defaults=args.kw_defaults,
                             kwarg=args.kwarg, defaults=defaults)
    s = f"({ast.unparse(args)})"
    if fn.returns is not None:
        s += f" -> {ast.unparse(fn.returns)}"
    return s


def items_of_module(module: str, tree: ast.Module) -> Iterator[dict]:
    """Public module-level functions and classes, and the public methods of public classes (the
    last definition of a name wins, as at run time)."""
    shown = MODULE_ALIASES.get(module, module)
    doc = first_paragraph(ast.get_docstring(tree, clean=True), module.rsplit(".", 1)[-1])
    if doc:
        yield {"name": shown, "kind": "module", "doc": doc, "sig": None}
    defs: dict[str, ast.AST] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
            defs[node.name] = node
    for name, node in defs.items():
        qual = f"{shown}.{name}"
        if isinstance(node, ast.ClassDef):
            methods: dict[str, ast.AST] = {}
            for m in node.body:
                if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef)) and not _decorator_names(m) & SKIP_DECORATORS:
                    methods[m.name] = m
            init = methods.get("__init__")
            sig = _signature(init, drop_first=True) if init is not None else None
            if sig is not None and " -> " in sig:
                sig = sig.split(" -> ")[0]
            yield {"name": qual, "kind": "class", "doc": first_paragraph(ast.get_docstring(node, clean=True), name),
                   "sig": sig}
            for mname, m in methods.items():
                if mname.startswith("_"):
                    continue
                yield {"name": f"{qual}.{mname}", "kind": "method",
                       "doc": first_paragraph(ast.get_docstring(m, clean=True), mname),
                       "sig": _signature(m, drop_first=False)}
        else:
            if _decorator_names(node) & SKIP_DECORATORS:
                continue
            yield {"name": qual, "kind": "function", "doc": first_paragraph(ast.get_docstring(node, clean=True), name),
                   "sig": _signature(node, drop_first=False)}


def stdlib_modules() -> Iterator[tuple[str, str, str, ast.Module]]:
    """``(module, corpus source name, text, tree)`` of every public module that parses, in sorted
    file order (the chat exchanges and the copy exercises are both built from these)."""
    root = gather_corpus.stdlib_dir()
    for rel in gather_corpus.source_files(root):
        module = module_name(rel)
        if module is None:
            continue
        try:
            text = (root / rel).read_bytes().decode("utf-8")
            tree = ast.parse(text)
        except (SyntaxError, ValueError, UnicodeDecodeError):
            continue
        yield module, f"stdlib/{rel.as_posix()}", text, tree


def stdlib_items() -> Iterator[tuple[str, str, dict]]:
    """``(module, corpus source name, item)`` for every item, in sorted file order."""
    for module, source, _, tree in stdlib_modules():
        for item in items_of_module(module, tree):
            yield module, source, item


def is_heldout(module: str, source: str, percent: int, valid_permille: int) -> bool:
    if gather_corpus.is_valid(source, valid_permille):
        return True
    return int(hashlib.sha1(f"chat/{module}".encode("utf-8")).hexdigest(), 16) % 100 < percent


# =============================================================================================
# Copy exercises: a function, then the request to write it again (unchanged or renamed), then the copy
# =============================================================================================

# The markers of the edit workload (data/spec-edit-workload.json), so an exercise reads like its prompts.
COPY_MARKERS = {"reproduce": "# the same function again, unchanged\n",
                "rename": "# the same function, renamed to {new}\n"}


def function_code(lines: list[str], node) -> str | None:
    """The source of a ``def`` (decorators left out), dedented, without its docstring, comment lines
    and blank lines (a comment after code stays) — the form of the edit workload's functions. None
    when nothing but a docstring is left or the text does not tokenize."""
    body = node.body
    skip = set()
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
            and isinstance(body[0].value.value, str):
        skip = set(range(body[0].lineno, body[0].end_lineno + 1))
        if len(body) == 1:
            return None
    text = textwrap.dedent("".join(lines[i - 1] for i in range(node.lineno, node.end_lineno + 1) if i not in skip))
    try:
        comments = [t.start for t in tokenize.generate_tokens(io.StringIO(text).readline) if t.type == tokenize.COMMENT]
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return None
    out = text.splitlines()
    for row, col in comments:
        if not out[row - 1][:col].strip():
            out[row - 1] = ""
    code = "\n".join(line for line in out if line.strip())
    return code if code.startswith(("def ", "async def ")) else None


def functions_of_module(module: str, text: str, tree: ast.Module) -> Iterator[tuple[str, str, str]]:
    """``(qualified name, short name, code)`` of the module-level functions and the methods of
    module-level classes, in file order (the workload names them so: ``queue.Queue.qsize``)."""
    shown = MODULE_ALIASES.get(module, module)
    lines = text.splitlines(keepends=True)
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            pairs = [(f"{shown}.{node.name}", node)]
        elif isinstance(node, ast.ClassDef):
            pairs = [(f"{shown}.{node.name}.{m.name}", m) for m in node.body
                     if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef))]
        else:
            continue
        for qual, fn in pairs:
            code = function_code(lines, fn)
            if code is not None:
                yield qual, fn.name, code


def copy_exercise(name: str, short: str, code: str, task: str) -> tuple[str, str]:
    """``(prompt, answer)`` of one exercise: the prompt ends with the copy's first line, as the edit
    workload's do; the answer is the rest of the copy."""
    new = f"{short}_copy" if task == "rename" else short
    copy = code.replace(f"def {short}(", f"def {new}(", 1)
    first, _, rest = copy.partition("\n")
    prompt = f"# {name}\n{code}\n\n\n{COPY_MARKERS[task].format(new=new)}{first}\n"
    return prompt, rest


def copy_exercises(tok, rng: random.Random, heldout_percent: int, valid_permille: int, exclude: set[str],
                   max_tokens: int) -> dict[str, list[dict]]:
    """One exercise per function of the sources (reproduce or rename, drawn), split by module as the
    chat exchanges are; functions named in ``exclude`` (the edit workload's) and exercises over
    ``max_tokens`` tokens are left out."""
    out: dict[str, list[dict]] = {"train": [], "valid": []}
    for module, source, text, tree in stdlib_modules():
        split = "valid" if is_heldout(module, source, heldout_percent, valid_permille) else "train"
        for qual, short, code in functions_of_module(module, text, tree):
            task = rng.choice(("reproduce", "rename"))   # drawn for every function: exclusions shift no draw
            if qual in exclude:
                continue
            prompt, answer = copy_exercise(qual, short, code, task)
            n_tokens = len(tok.encode(prompt + answer, add_bos=False))
            if n_tokens > max_tokens:
                continue
            out[split].append({"module": module, "name": qual, "task": task, "prompt": prompt, "answer": answer,
                               "text": prompt + answer, "tokens": n_tokens})
    return out


# =============================================================================================
# Exchanges
# =============================================================================================


def render(messages: list[dict]) -> str:
    """The chat template's rendering of a finished exchange, without its final end token."""
    from bitnet_lab.generate.chat import compile_template

    text = _template(compile_template).render(messages=messages, add_generation_prompt=False,
                                              bos_token=EOT, eos_token=EOT)
    if not text.endswith(EOT) or EOT in text[: -len(EOT)]:
        raise ValueError(f"unexpected rendering {text!r}")
    return text[: -len(EOT)]


_COMPILED = {}


def _template(compile_template):
    if "t" not in _COMPILED:
        _COMPILED["t"] = compile_template(CHAT_TEMPLATE)
    return _COMPILED["t"]


def exchanges_for(item: dict, rng: random.Random, copies: int) -> Iterator[dict]:
    """Up to ``copies`` question phrasings for each kind of question the item can answer."""
    kinds = []
    if item["doc"]:
        pool = MODULE_QUESTIONS if item["kind"] == "module" else DOC_QUESTIONS
        kinds.append(("doc", pool, item["doc"]))
    if item["sig"] is not None:
        kinds.append(("sig", SIG_QUESTIONS, f"{item['name']}{item['sig']}"))
    for kind, pool, answer in kinds:
        for q in rng.sample(pool, min(copies, len(pool))):
            system = rng.choice(SYSTEM_PROMPTS) if rng.random() < SYSTEM_SHARE else None
            yield {"kind": kind, "system": system, "answer": answer,
                   "question": q.format(name=item["name"], kind=item["kind"])}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def build(corpus: str | os.PathLike, out: str | os.PathLike, *, model: str | os.PathLike | None = None,
          seed: int = 0, heldout_percent: int = 10, copies: int = 2, max_answer_tokens: int = 96,
          copy_repeats: int = 0, max_copy_tokens: int = 200, quiet: bool = False) -> dict:
    from bitnet_lab.formats.gguf import read_metadata
    from bitnet_lab.tokenizer import Tokenizer
    from bitnet_lab.tools.default_model import shipped_model_path

    corpus, out = Path(corpus).expanduser(), Path(out).expanduser()
    src_manifest = json.loads((corpus / "manifest.json").read_text())
    valid_permille = int(src_manifest["options"]["valid_permille"])
    model = Path(model) if model else shipped_model_path()
    tok = Tokenizer.from_metadata(read_metadata(model), source=str(model))
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)

    chat = {"train": [], "valid": []}
    stats = {"items": 0, "too_long": 0, "modules": {"train": set(), "valid": set()}}
    for module, source, item in stdlib_items():
        stats["items"] += 1
        split = "valid" if is_heldout(module, source, heldout_percent, valid_permille) else "train"
        for ex in exchanges_for(item, rng, copies if split == "train" else 1):
            if len(tok.encode(ex["answer"], add_bos=False)) > max_answer_tokens:
                stats["too_long"] += 1
                continue
            msgs = ([{"role": "system", "content": ex["system"]}] if ex["system"] else []) + [
                {"role": "user", "content": ex["question"]}, {"role": "assistant", "content": ex["answer"]}]
            chat[split].append({"module": module, "name": item["name"], **ex, "text": render(msgs)})
            stats["modules"][split].add(module)

    copies_of = {"train": [], "valid": []}
    if copy_repeats:
        from bitnet_lab.bench.speculative import edit_workload

        # its own generator: the chat exchanges stay those of a corpus built without exercises
        copies_of = copy_exercises(tok, random.Random(f"copy-exercises/{seed}"), heldout_percent, valid_permille,
                                   {item["name"] for item in edit_workload("edit")}, max_copy_tokens)

    docs = [json.loads(line) for line in open(corpus / "train.jsonl", encoding="utf-8")]
    n_code_tokens = sum(len(tok.encode(d["text"], add_bos=False)) + 1 for d in docs)
    n_chat_tokens = sum(len(tok.encode(e["text"], add_bos=False)) + 1 for e in chat["train"])
    n_copy_tokens = copy_repeats * sum(e["tokens"] + 1 for e in copies_of["train"])
    mixed = docs + [{"source": f"chat/{e['kind']}/{e['name']}", "text": e["text"]} for e in chat["train"]]
    mixed += [{"source": f"copy/{e['task']}/{e['name']}", "text": e["text"]}
              for _ in range(copy_repeats) for e in copies_of["train"]]
    rng.shuffle(mixed)
    with open(out / "train.jsonl", "w", encoding="utf-8") as f:
        for d in mixed:
            f.write(json.dumps(d, ensure_ascii=False) + "\n")
    for split in ("train", "valid"):
        with open(out / f"chat_{split}.jsonl", "w", encoding="utf-8") as f:
            for e in chat[split]:
                f.write(json.dumps(e, ensure_ascii=False) + "\n")
    if copy_repeats:
        for split in ("train", "valid"):
            with open(out / f"copy_{split}.jsonl", "w", encoding="utf-8") as f:
                for e in copies_of[split]:
                    f.write(json.dumps(e, ensure_ascii=False) + "\n")
    for name in ("valid.jsonl", "valid.txt", gather_corpus.LICENSE_NAME):
        shutil.copyfile(corpus / name, out / name)
    (out / "chat_template.jinja").write_text(CHAT_TEMPLATE, encoding="utf-8")
    files = {name: _sha256(out / name) for name in ("train.jsonl", "valid.jsonl", "valid.txt", "chat_train.jsonl",
                                                     "chat_valid.jsonl", "chat_template.jinja")
             + (("copy_train.jsonl", "copy_valid.jsonl") if copy_repeats else ())}
    manifest = {
        "chat_corpus_version": CHAT_CORPUS_VERSION,
        "python": sys.version.split()[0],
        "base_corpus": {"path": str(corpus), "sha256": src_manifest.get("sha256", {})},
        "tokenizer": {"model": str(model), "sha256": _sha256(model)},
        "options": {"seed": seed, "heldout_percent": heldout_percent, "copies": copies,
                    "max_answer_tokens": max_answer_tokens, "valid_permille": valid_permille,
                    "system_share": SYSTEM_SHARE,
                    **({"copy_repeats": copy_repeats, "max_copy_tokens": max_copy_tokens} if copy_repeats else {})},
        "items": stats["items"], "answers_over_max_tokens": stats["too_long"],
        "chat_train": {"exchanges": len(chat["train"]), "modules": len(stats["modules"]["train"]),
                       "tokens": n_chat_tokens},
        "chat_valid": {"exchanges": len(chat["valid"]), "modules": len(stats["modules"]["valid"]),
                       "module_names": sorted(stats["modules"]["valid"])},
        "train": {"documents": len(mixed), "code_tokens": n_code_tokens, "chat_tokens": n_chat_tokens,
                  "chat_share": round(n_chat_tokens / (n_chat_tokens + n_code_tokens + n_copy_tokens), 4),
                  **({"copy_tokens": n_copy_tokens,
                      "copy_share": round(n_copy_tokens / (n_chat_tokens + n_code_tokens + n_copy_tokens), 4)}
                     if copy_repeats else {})},
        **({"copy_train": {"exercises": len(copies_of["train"])}, "copy_valid": {"exercises": len(copies_of["valid"])}}
           if copy_repeats else {}),
        "sha256": files,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    (out / "PROVENANCE.md").write_text(
        "# Provenance of this corpus\n\n"
        f"Built by `scripts/build_chat_corpus.py` (chat corpus version {CHAT_CORPUS_VERSION}) from the standard "
        f"library of CPython {manifest['python']} (parsed, not imported) and the corpus of "
        f"`scripts/gather_corpus.py` at `{corpus}` (its training documents mixed in, its held-out documents "
        "copied unchanged). Nothing was downloaded. Licence: PSF-2.0, as the standard library "
        f"(`{gather_corpus.LICENSE_NAME}`); a model trained on it is a derived work under the same notice.\n")
    if not quiet:
        print(f"chat corpus: {out}  {len(chat['train'])} training exchanges ({n_chat_tokens:,} tokens, "
              f"{manifest['train']['chat_share']:.0%} of {n_chat_tokens + n_code_tokens + n_copy_tokens:,}) from "
              f"{len(stats['modules']['train'])} modules; {len(chat['valid'])} held-out exchanges from "
              f"{len(stats['modules']['valid'])} modules", file=sys.stderr)
        if copy_repeats:
            print(f"copy exercises: {len(copies_of['train'])} training × {copy_repeats} ({n_copy_tokens:,} tokens, "
                  f"{manifest['train']['copy_share']:.0%}); {len(copies_of['valid'])} held out", file=sys.stderr)
    return manifest


# =============================================================================================
# Measuring a model on the held-out exchanges
# =============================================================================================


def _words(s: str) -> list[str]:
    return "".join(c.lower() if c.isalnum() else " " for c in s).split()


def _f1(pred: str, ref: str) -> float:
    from collections import Counter

    p, r = Counter(_words(pred)), Counter(_words(ref))
    common = sum((p & r).values())
    if not common:
        return 0.0
    prec, rec = common / sum(p.values()), common / sum(r.values())
    return 2 * prec * rec / (prec + rec)


def evaluate(model_path: str | os.PathLike, chat_valid: str | os.PathLike, *, n: int = 200, max_tokens: int = 128,
             seed: int = 0, template: str | None = CHAT_TEMPLATE, samples: int = 0, sampled: bool = False,
             quiet: bool = False) -> dict:
    """Greedy answers of a model to ``n`` held-out questions (a seeded sample of ``chat_valid.jsonl``)
    in a fresh chat each: the share that ends with the end token within ``max_tokens``, exact
    signatures, and the word-overlap F1 of docstring answers. ``template``: the chat template to
    use (default this corpus's, so a model without one is measured on the same prompts); None:
    what ``chat_format_for`` picks for the file. ``sampled``: the chat's default sampler (llama.cpp's
    defaults, temperature 0.8) with seed ``seed + i`` for question ``i``, instead of greedy."""
    import bitnet_lab
    from bitnet_lab.generate.chat import ChatSession, JinjaChatFormat, chat_format_for
    from bitnet_lab.generate.loop import DoneEvent
    from bitnet_lab.generate.sampling import make_sampler

    rows = [json.loads(line) for line in open(chat_valid, encoding="utf-8")]
    picked = random.Random(seed).sample(rows, min(n, len(rows)))
    model = bitnet_lab.load(model_path)
    fmt = JinjaChatFormat(model.tokenizer, template) if template else chat_format_for(model.tokenizer, model.config)
    stopped, sig_ok, n_sig, f1s, out = 0, 0, 0, [], []
    for i, row in enumerate(picked):
        sampler = make_sampler() if sampled else make_sampler(temp=0)
        sess = ChatSession(model, system=row["system"], chat_format=fmt, sampler=sampler, seed=seed + i)
        done = [ev for ev in sess.send(row["question"], n=max_tokens) if isinstance(ev, DoneEvent)][0]
        answer = done.generated_text.strip()
        ok = done.reason == "eos" and done.n_generated <= max_tokens
        stopped += ok
        if row["kind"] == "sig":
            n_sig += 1
            sig_ok += answer == row["answer"]
        else:
            f1s.append(_f1(answer, row["answer"]))
        out.append({"question": row["question"], "system": row["system"], "reference": row["answer"],
                    "answer": answer, "reason": done.reason, "n_generated": done.n_generated})
    res = {"model": str(model_path), "format": fmt.name, "n": len(picked), "max_tokens": max_tokens,
           "sampling": "default sampler, seed + i" if sampled else "greedy",
           "ended_with_eot": stopped / len(picked), "sig_exact": sig_ok / max(n_sig, 1), "n_sig": n_sig,
           "doc_f1": sum(f1s) / max(len(f1s), 1), "n_doc": len(f1s), "answers": out}
    if not quiet:
        print(f"{model_path}: {stopped}/{len(picked)} answers end with the end token within {max_tokens} tokens "
              f"({res['ended_with_eot']:.1%}); signatures exact {sig_ok}/{n_sig}; docstring answers word F1 "
              f"{res['doc_f1']:.3f} over {len(f1s)}", file=sys.stderr)
        for a in out[:samples]:
            print(json.dumps(a, ensure_ascii=False), file=sys.stderr)
    return res


def evaluate_copies(model_path: str | os.PathLike, copy_valid: str | os.PathLike, *, n: int = 200, seed: int = 0,
                    quiet: bool = False) -> dict:
    """Greedy copies of ``n`` held-out exercises (a seeded sample of ``copy_valid.jsonl``): the share
    written exactly (the generation starts with the whole answer), and the mean share of the
    answer's characters written before the first wrong one — what prompt lookup's drafts meet."""
    import bitnet_lab
    from bitnet_lab.generate.loop import DoneEvent

    rows = [json.loads(line) for line in open(copy_valid, encoding="utf-8")]
    picked = random.Random(seed).sample(rows, min(n, len(rows)))
    model = bitnet_lab.load(model_path)
    exact, shares, out = 0, [], []
    for row in picked:
        budget = len(model.tokenizer.encode(row["answer"], add_bos=False)) + 2
        done = [ev for ev in model.generate(row["prompt"], n=budget, temp=0) if isinstance(ev, DoneEvent)][0]
        got, want = done.generated_text, row["answer"]
        same = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
        whole = got.startswith(want)
        exact += whole
        shares.append(same / max(len(want), 1))
        out.append({"name": row["name"], "task": row["task"], "exact": whole, "share": shares[-1], "answer": got})
    res = {"model": str(model_path), "n": len(picked), "exact": exact / len(picked),
           "mean_share_before_first_error": sum(shares) / len(shares), "copies": out}
    if not quiet:
        print(f"{model_path}: {exact}/{len(picked)} held-out functions copied exactly ({res['exact']:.1%}); "
              f"{res['mean_share_before_first_error']:.1%} of an answer's characters right before the first "
              "wrong one, on average", file=sys.stderr)
    return res


def main(argv: list[str] | None = None) -> int:
    from_env = os.environ.get("BITNET_LAB_CACHE")
    cache = Path(from_env) if from_env else Path.home() / ".cache" / "bitnet_lab"
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", default=str(cache / "corpus"), help="the gather_corpus.py output (default %(default)s)")
    p.add_argument("--out", default=str(cache / "chat-corpus"), help="output folder (default %(default)s)")
    p.add_argument("--model", default=None, help="GGUF whose tokenizer measures answers (default: the shipped model)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--heldout-percent", type=int, default=10, help="modules held out besides the corpus's (default 10)")
    p.add_argument("--copies", type=int, default=2, help="question phrasings per training item and kind (default 2)")
    p.add_argument("--max-answer-tokens", type=int, default=96, help="drop longer answers (default 96)")
    p.add_argument("--copy-exercises", type=int, default=0, metavar="N", help="add each training function's copy "
                   "exercise N times (default 0: none; the default model's stage 3 used 6)")
    p.add_argument("--max-copy-tokens", type=int, default=200, help="drop longer copy exercises (default 200)")
    p.add_argument("--eval", metavar="MODEL", help="instead of building: measure MODEL on --out's chat_valid.jsonl")
    p.add_argument("--eval-copies", metavar="MODEL", help="instead of building: measure MODEL's greedy copies of "
                   "--out's copy_valid.jsonl")
    p.add_argument("--eval-n", type=int, default=200,
                   help="held-out questions (or copy exercises) to ask (default 200)")
    p.add_argument("--eval-json", metavar="FILE", help="write the measurement and every answer here")
    p.add_argument("--eval-sampled", action="store_true", help="--eval with the chat's default sampler "
                   "(temperature 0.8, seed --seed + i) instead of greedy")
    p.add_argument("--file-template", action="store_true", help="--eval with the model's own chat format "
                   "(chat_format_for) instead of this corpus's template")
    a = p.parse_args(argv)
    if a.eval_copies:
        res = evaluate_copies(a.eval_copies, Path(a.out).expanduser() / "copy_valid.jsonl", n=a.eval_n, seed=a.seed)
        if a.eval_json:
            Path(a.eval_json).write_text(json.dumps(res, indent=1, ensure_ascii=False) + "\n")
        return 0
    if a.eval:
        res = evaluate(a.eval, Path(a.out).expanduser() / "chat_valid.jsonl", n=a.eval_n, seed=a.seed,
                       template=None if a.file_template else CHAT_TEMPLATE, samples=5, sampled=a.eval_sampled)
        if a.eval_json:
            Path(a.eval_json).write_text(json.dumps(res, indent=1, ensure_ascii=False) + "\n")
        return 0
    build(a.corpus, a.out, model=a.model, seed=a.seed, heldout_percent=a.heldout_percent, copies=a.copies,
          max_answer_tokens=a.max_answer_tokens, copy_repeats=a.copy_exercises, max_copy_tokens=a.max_copy_tokens)
    return 0


if __name__ == "__main__":
    sys.exit(main())
