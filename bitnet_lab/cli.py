"""`bitnet-lab`: the command line, one subcommand per job, llama.cpp flag names where they exist.

    bitnet-lab inspect FILE [--json] [--no-stats]
    bitnet-lab dummy --layout 2B-4T --outtype i2_s -o FILE [--seed N]
    bitnet-lab convert SRC --outtype i2_s -o OUT [--tl-tiling BM,BK,bm]
    bitnet-lab download REPO_ID [--revision R] [--filename F]

Adding a subcommand (run, chat, verify, bench, perplexity, …): write a module listed in
``COMMAND_MODULES`` that defines ``add_parser(subparsers) -> None``; it calls
``subparsers.add_parser(name, help=...)``, adds its flags and ``set_defaults(func=handler)``
where ``handler(args) -> int`` returns the exit code. Keep heavy imports (jax, the engine)
inside the handler so ``bitnet-lab --help`` stays fast. A listed module that does not exist
yet is skipped; one that exists but fails to import is a real error and is raised.

Exit codes: 0 success; 1 a bitnet_lab error (``BitnetLabError``) or an OS error, printed as one
line ``bitnet-lab: error: …`` on stderr (the traceback only with ``--debug`` or
``BITNET_LAB_DEBUG=1``); 2 bad flags (argparse, with the usage); 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from typing import Callable, Sequence

from bitnet_lab.errors import BitnetLabError

PROG = "bitnet-lab"

# Subcommand modules written by later issues; each exposes add_parser(subparsers).
COMMAND_MODULES: tuple[str, ...] = (
    "bitnet_lab.cli_run",
    "bitnet_lab.cli_chat",
    "bitnet_lab.cli_verify",
    "bitnet_lab.cli_bench",
    "bitnet_lab.cli_perplexity",
    "bitnet_lab.cli_train",
)

OUTTYPES = ("i2_s", "tl1", "tl2", "tq1_0", "tq2_0", "f16", "f32")
EMBEDDING_TYPES = ("f16", "f32", "q8_0")          # dummy --token-embedding-type
CONVERT_EMBEDDING_TYPES = ("f16", "f32", "bf16")  # convert --token-embedding-type


# ---------------------------------------------------------------------------------------------
# Shared argument types
# ---------------------------------------------------------------------------------------------


def tl_tiling_arg(text: str):
    """argparse type for ``--tl-tiling BM,BK,bm`` → `TLTiling` (bad input: exit 2 with usage)."""
    from bitnet_lab.tensors import TLTiling

    parts = text.replace("/", ",").split(",")
    try:
        BM, BK, bm = (int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three integers BM,BK,bm (e.g. 256,128,32), got {text!r}") from None
    if min(BM, BK, bm) <= 0:
        raise argparse.ArgumentTypeError(f"BM, BK, bm must be positive, got {text!r}")
    return TLTiling(BM, BK, bm)


def _lower_choice(choices: Sequence[str]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        v = text.lower()
        if v not in choices:
            raise argparse.ArgumentTypeError(f"invalid choice {text!r} (choose from {', '.join(choices)})")
        return v

    parse.__name__ = "choice"
    return parse


def add_progress_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars on stderr")


# ---------------------------------------------------------------------------------------------
# inspect
# ---------------------------------------------------------------------------------------------


def _add_inspect(sub) -> None:
    p = sub.add_parser(
        "inspect",
        help="show a model's metadata, tensor table and ternary statistics",
        description="Read a GGUF file or a Hugging Face checkpoint folder and print its metadata, "
        "its tensors (type, ggml and torch shapes, bytes, offset) and, per ternary tensor, the "
        "share of -1/0/+1 codes and the scale.",
    )
    p.add_argument("file", metavar="FILE", help="a .gguf file or a Hugging Face checkpoint folder")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("--full-metadata", action="store_true", help="with --json: keep long arrays (token lists) whole")
    p.add_argument("--no-stats", dest="stats", action="store_false", help="skip decoding ternary tensors (fast)")
    p.add_argument("--tl-tiling", type=tl_tiling_arg, metavar="BM,BK,bm",
                   help="TL1/TL2 tiling, when the file does not record it")
    add_progress_flag(p)
    p.set_defaults(func=_run_inspect)


def _run_inspect(args: argparse.Namespace) -> int:
    from bitnet_lab.inspect import inspect_model

    report = inspect_model(args.file, tl_tiling=args.tl_tiling, stats=args.stats, progress=args.progress)
    print(report.to_json(full_metadata=args.full_metadata) if args.json else report.to_text())
    return 0


# ---------------------------------------------------------------------------------------------
# dummy
# ---------------------------------------------------------------------------------------------


def _add_dummy(sub) -> None:
    p = sub.add_parser(
        "dummy",
        help="write a random model of a named layout (bitnet.cpp sizes, 2B-4T, Falcon3, …)",
        description="Write a complete GGUF model with random weights that have trained-model "
        "statistics and a real tokenizer. Deterministic: the same seed gives the same bytes.",
    )
    p.add_argument("--layout", help="layout name (case-insensitive); --list shows them")
    p.add_argument("--list", action="store_true", help="list the layouts and exit")
    p.add_argument("--outtype", type=_lower_choice(OUTTYPES), default="i2_s",
                   help=f"projection type: {', '.join(OUTTYPES)} (default i2_s)")
    p.add_argument("-o", "--outfile", help="output .gguf path")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--token-embedding-type", type=_lower_choice(EMBEDDING_TYPES), default=None,
                   help="token_embd (and output) type: f16, f32, q8_0 (default f16; f32 for --outtype f32)")
    p.add_argument("--tl-tiling", type=tl_tiling_arg, metavar="BM,BK,bm",
                   help="TL1/TL2 tiling for every shape (default: per-shape presets/search)")
    p.add_argument("--arch-name", metavar="NAME",
                   help="general.architecture to write instead of the layout's, e.g. bitnet: the name "
                   "llama.cpp and bitnet.cpp read the 2B-4T graph under (for bench --llama-cpp)")
    add_progress_flag(p)
    p.set_defaults(func=_run_dummy)


def _run_dummy(args: argparse.Namespace) -> int:
    if args.list:
        from bitnet_lab.layouts import layouts_table

        print(layouts_table())
        return 0
    missing = [flag for flag, v in (("--layout", args.layout), ("-o/--outfile", args.outfile)) if not v]
    if missing:
        args._parser.error(f"the following arguments are required: {', '.join(missing)}")
    from bitnet_lab.dummy import generate_dummy

    path = generate_dummy(
        args.layout, args.outfile, outtype=args.outtype, seed=args.seed,
        embedding_type=args.token_embedding_type, tl_tiling=args.tl_tiling, arch_name=args.arch_name,
        progress=args.progress,
    )
    print(path)
    return 0


# ---------------------------------------------------------------------------------------------
# convert
# ---------------------------------------------------------------------------------------------


def _add_convert(sub) -> None:
    p = sub.add_parser(
        "convert",
        help="convert a Hugging Face checkpoint (folder or repo id) to GGUF",
        description="Convert a Hugging Face BitNet checkpoint (2B-4T packed or bf16, 1bitLLM, "
        "Llama3-8B-1.58, Falcon3/Falcon-E) to GGUF.",
    )
    p.add_argument("src", metavar="SRC", help="checkpoint folder or Hub repo id (owner/name)")
    p.add_argument("--outtype", type=_lower_choice(OUTTYPES), default="i2_s",
                   help=f"projection type: {', '.join(OUTTYPES)} (default i2_s)")
    p.add_argument("-o", "--outfile", required=True, help="output .gguf path")
    p.add_argument("--token-embedding-type", type=_lower_choice(CONVERT_EMBEDDING_TYPES), default=None,
                   help="token_embd (and output) type: f16, f32, bf16 (default f16; f32 for --outtype f32)")
    p.add_argument("--tl-tiling", type=tl_tiling_arg, metavar="BM,BK,bm",
                   help="TL1/TL2 tiling for every shape (default: per-shape presets/search)")
    p.add_argument("--revision", help="Hub revision (branch, tag or commit) when SRC is a repo id")
    add_progress_flag(p)
    p.set_defaults(func=_run_convert)


def _run_convert(args: argparse.Namespace) -> int:
    from bitnet_lab.convert import convert_hf_to_gguf
    from bitnet_lab.errors import FormatError
    from bitnet_lab.formats import hub

    if not os.path.exists(args.src) and not hub.is_repo_id(args.src):
        raise FormatError(f"no such file or directory: {args.src}")
    path = convert_hf_to_gguf(
        args.src, args.outfile, args.outtype, tl_tiling=args.tl_tiling,
        embedding_type=args.token_embedding_type, revision=args.revision, progress=args.progress,
    )
    print(path)
    return 0


# ---------------------------------------------------------------------------------------------
# download
# ---------------------------------------------------------------------------------------------


def _add_download(sub) -> None:
    p = sub.add_parser(
        "download",
        help="fetch a Hub repo into the Hugging Face cache and print its local path",
        description="Download a model repo (its GGUF, or the safetensors checkpoint files) into "
        "the Hugging Face cache and print the local path to pass to -m.",
    )
    p.add_argument("repo_id", metavar="REPO_ID", help="owner/name, e.g. microsoft/bitnet-b1.58-2B-4T-gguf")
    p.add_argument("--revision", help="branch, tag or commit")
    p.add_argument("--filename", "--hf-file", dest="filename", help="the file to fetch (e.g. one of several GGUFs)")
    p.set_defaults(func=_run_download)


def _run_download(args: argparse.Namespace) -> int:
    from bitnet_lab.formats import hub

    print(hub.download(args.repo_id, revision=args.revision, filename=args.filename))
    return 0


# ---------------------------------------------------------------------------------------------
# The parser and main
# ---------------------------------------------------------------------------------------------

FOUNDATION_COMMANDS = (_add_inspect, _add_dummy, _add_convert, _add_download)


def command_modules() -> list:
    """The COMMAND_MODULES that exist, imported (an existing module's ImportError propagates)."""
    mods = []
    for name in COMMAND_MODULES:
        if importlib.util.find_spec(name) is None:
            continue  # not written yet
        mods.append(importlib.import_module(name))
    return mods


def build_parser() -> argparse.ArgumentParser:
    from bitnet_lab import __version__

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="bitnet_lab: a research workbench for BitNet b1.58 ternary LLM inference on CPU.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in FOUNDATION_COMMANDS:
        add(sub)
    for mod in command_modules():
        mod.add_parser(sub)
    # Let handlers report usage errors on their own subparser (exit 2, with its usage line).
    for name, p in sub.choices.items():
        p.set_defaults(_parser=p)
    return parser


def _one_line(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        msg = f"{e.strerror}: {e.filename}" if e.filename else e.strerror
    else:
        msg = str(e) or type(e).__name__
    return " ".join(msg.split())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (the console script passes it to sys.exit)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("BITNET_LAB_DEBUG", "") not in ("", "0")
    try:
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as e:  # --help / --version (0) and bad flags (2)
            return int(e.code or 0) if not isinstance(e.code, str) else 2
        func = args.func
        return int(func(args) or 0)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # stdout closed early (e.g. `bitnet-lab inspect f | head`): not an error.
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
    except SystemExit as e:  # a handler's parser.error()
        return int(e.code or 0) if not isinstance(e.code, str) else 2
    except (BitnetLabError, OSError) as e:
        if debug:
            raise
        print(f"{PROG}: error: {_one_line(e)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
