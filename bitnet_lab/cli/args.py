"""Argument types and flags shared by several subcommands."""

from __future__ import annotations

import argparse
from typing import Any, Callable, Sequence

OUTTYPES = ("i2_s", "tl1", "tl2", "tq1_0", "tq2_0", "f16", "f32")
EMBEDDING_TYPES = ("f16", "f32", "bf16", "q8_0", "q6_k")          # dummy --token-embedding-type
CONVERT_EMBEDDING_TYPES = ("f16", "f32", "bf16", "q8_0", "q6_k")  # convert --token-embedding-type


def tl_tiling_arg(text: str):
    """argparse type for ``--tl-tiling BM,BK,bm`` → `TLTiling`, or ``--tl-tiling NAME`` → that
    preset's name (``bitnet_lab.quant.tiling.preset_names()``); bad input: exit 2 with usage."""
    from bitnet_lab.errors import BitnetLabError
    from bitnet_lab.quant.tiling import parse_tl_tiling

    try:
        return parse_tl_tiling(text)
    except BitnetLabError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_tl_tiling_flag(g: Any) -> None:
    """``--tl-tiling BM,BK,bm`` on every subcommand that loads a model: the tiling of a TL1/TL2
    file's tensors, for a file that records none and matches no preset (docs/formats.md#32-tl1-type-38)."""
    g.add_argument("--tl-tiling", type=tl_tiling_arg, metavar="BM,BK,bm|PRESET",
                   help="TL1/TL2 files: the tiling the tensors were written with, or a preset name such as "
                        "BitNet-b1.58-2B-4T (default: the file's own key, else bitnet.cpp's preset for the "
                        "model's shapes)")


def tl_tiling_options(args: Any) -> dict[str, Any]:
    """The load option for ``--tl-tiling``, as the string form ``load()`` accepts (it also crosses
    a process boundary as JSON in ``bench --load``); empty when the flag is absent."""
    t = getattr(args, "tl_tiling", None)
    if t is None:
        return {}
    return {"tl_tiling": t if isinstance(t, str) else f"{t.BM},{t.BK},{t.bm}"}  # a preset name is a string already


NUMERICS_CHOICES = ("bitnet", "llama.cpp")  # bitnet_lab.backend.NUMERICS (kept light: no import at parse time)


def add_numerics_flag(g: Any) -> None:
    """``--numerics bitnet|llama.cpp`` on every subcommand that runs a model: whose arithmetic the
    backend computes (docs/numerics.md#12-numerics-profiles)."""
    g.add_argument("--numerics", choices=NUMERICS_CHOICES, default=None,
                   help="bitnet: the model's training numerics (per-token int8 activations; default); "
                        "llama.cpp: what upstream llama.cpp computes for the file (Q8_K activations per "
                        "256-block, its per-block float sums, F16 KV cache)")


def numerics_options(args: Any) -> dict[str, str]:
    """The load option for ``--numerics``; empty when the flag is absent (the backend's default)."""
    n = getattr(args, "numerics", None)
    return {} if n is None else {"numerics": n}


def lower_choice(choices: Sequence[str]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        v = text.lower()
        if v not in choices:
            raise argparse.ArgumentTypeError(f"invalid choice {text!r} (choose from {', '.join(choices)})")
        return v

    parse.__name__ = "choice"
    return parse


def add_progress_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars on stderr")


# ---- threads -------------------------------------------------------------------------------------


def _warn(msg: str) -> None:
    import sys

    print(f"bitnet-lab: warning: {msg}", file=sys.stderr, flush=True)


def clamp_threads(threads: int | None, flag: str = "-t/--threads") -> int | None:
    """A ``-t`` value checked and clamped by `bitnet_lab.kernels.usable_threads`, saying so in
    one warning line."""
    return None if threads is None else clamp_thread_list([threads], flag)[0]


def clamp_thread_list(threads: Sequence[int], flag: str = "-t/--threads") -> list[int]:
    """`clamp_threads` for a list of counts (bench): one warning for all, duplicates dropped."""
    from bitnet_lab.kernels import allowed_cpus, usable_threads

    checked = [usable_threads(t, flag) for t in threads]
    over = [t for t, (_, clamped) in zip(threads, checked) if clamped]
    if over:
        _warn(f"{flag} {','.join(map(str, over))} is more than the {len(allowed_cpus())} CPUs this process may "
              f"use; using {checked[threads.index(over[0])][0]}")
    out: list[int] = []
    for n, _ in checked:
        if n not in out:
            out.append(n)
    return out


# ---- the model to load: -m, --hf-file, --revision ------------------------------------------------


def add_hub_flags(g: Any) -> None:
    """``--hf-file`` / ``--revision`` (run, chat, bench, verify): which file and which revision of a
    Hub repo given with -m (llama.cpp's -hf / -hff idiom)."""
    g.add_argument("-hff", "--hf-file", metavar="FILE", default=None,
                   help="with -m REPO_ID: the file of the Hub repo to use (e.g. one of several GGUFs)")
    g.add_argument("--revision", metavar="REV", default=None,
                   help="with -m REPO_ID: the Hub revision (branch, tag or commit)")


def hub_options(args: Any) -> dict[str, str]:
    """``filename=`` / ``revision=`` for `bitnet_lab.load` from --hf-file / --revision; a
    ConfigError when they are given without a Hub repo id in -m."""
    opts = {k: v for k, v in (("filename", getattr(args, "hf_file", None)),
                              ("revision", getattr(args, "revision", None))) if v}
    if not opts:
        return {}
    from bitnet_lab.errors import ConfigError
    from bitnet_lab.formats import hub

    flags = " and ".join(f for f, k in (("--hf-file", "filename"), ("--revision", "revision")) if k in opts)
    if not args.model:
        raise ConfigError(f"{flags} need -m REPO_ID (a Hugging Face Hub repo)")
    if not hub.is_repo_id(args.model):
        raise ConfigError(f"{flags} apply to a Hub repo id (owner/name), not to the local path {args.model}")
    return opts


def resolve_model(args: Any) -> str | None:
    """-m resolved through the Hub when --hf-file / --revision are given (bench, verify load by
    path); else -m as given (None: the caller's default model)."""
    opts = hub_options(args)
    if not opts:
        return args.model
    from bitnet_lab.formats import hub

    return str(hub.resolve(args.model, **opts))
