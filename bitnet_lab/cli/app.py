"""`bitnet-lab`: the command line, one subcommand per job, llama.cpp flag names where they exist.

    bitnet-lab inspect FILE [--json] [--no-stats]
    bitnet-lab dummy --layout 2B-4T --outtype i2_s -o FILE [--seed N]
    bitnet-lab convert SRC --outtype i2_s -o OUT [--tl-tiling BM,BK,bm]
    bitnet-lab download REPO_ID [--revision R] [--filename F]
    bitnet-lab serve [-m MODEL] [--host 127.0.0.1] [--port 8080] [-np 4] [-c N] [--api-key KEY]

Adding a subcommand: write a module in this package, list it in ``COMMAND_MODULES``, and define
``add_parser(subparsers) -> None``; it calls ``subparsers.add_parser(name, help=...)``, adds its
flags and ``set_defaults(func=handler)`` where ``handler(args) -> int`` returns the exit code.
Keep heavy imports (jax, the engine) inside the handler so ``bitnet-lab --help`` stays fast.

Exit codes: 0 success; 1 a bitnet_lab error (``BitnetLabError``) or an OS error, printed as one
line ``bitnet-lab: error: …`` on stderr (the traceback only with ``--debug`` or
``BITNET_LAB_DEBUG=1``); 2 bad flags (argparse, with the usage); 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Sequence

from bitnet_lab.errors import BitnetLabError

PROG = "bitnet-lab"

# One module per subcommand (run also adds chat), in the order `--help` lists them; each exposes
# add_parser(subparsers) and keeps its heavy imports inside its handler.
COMMAND_MODULES: tuple[str, ...] = tuple(f"bitnet_lab.cli.{name}" for name in (
    "inspect", "dummy", "convert", "download", "run", "verify", "bench", "perplexity", "train", "serve"))


def command_modules() -> list:
    """The subcommand modules, imported (an ImportError propagates: nothing is skipped)."""
    return [importlib.import_module(name) for name in COMMAND_MODULES]


def build_parser() -> argparse.ArgumentParser:
    from bitnet_lab._version import __version__

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="bitnet_lab: a research workbench for BitNet b1.58 ternary LLM inference on CPU.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
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
            args, extra = parser.parse_known_args(argv)
            if extra:  # reported by the subcommand's parser: its usage, not the top level's
                getattr(args, "_parser", parser).error(f"unrecognized arguments: {' '.join(extra)}")
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
