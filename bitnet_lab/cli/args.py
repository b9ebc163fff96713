"""Argument types and flags shared by several subcommands."""

from __future__ import annotations

import argparse
from typing import Callable, Sequence

OUTTYPES = ("i2_s", "tl1", "tl2", "tq1_0", "tq2_0", "f16", "f32")
EMBEDDING_TYPES = ("f16", "f32", "q8_0")          # dummy --token-embedding-type
CONVERT_EMBEDDING_TYPES = ("f16", "f32", "bf16")  # convert --token-embedding-type


def tl_tiling_arg(text: str):
    """argparse type for ``--tl-tiling BM,BK,bm`` → `TLTiling` (bad input: exit 2 with usage)."""
    from bitnet_lab.quant.tiling import TLTiling

    parts = text.replace("/", ",").split(",")
    try:
        BM, BK, bm = (int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three integers BM,BK,bm (e.g. 256,128,32), got {text!r}") from None
    if min(BM, BK, bm) <= 0:
        raise argparse.ArgumentTypeError(f"BM, BK, bm must be positive, got {text!r}")
    return TLTiling(BM, BK, bm)


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
