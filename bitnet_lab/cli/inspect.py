"""`bitnet-lab inspect`: a model's metadata, tensor table and ternary statistics."""

from __future__ import annotations

import argparse

from bitnet_lab.cli.args import tl_tiling_arg, add_progress_flag


def add_parser(sub) -> None:
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
    p.add_argument("--tl-tiling", type=tl_tiling_arg, metavar="BM,BK,bm|PRESET",
                   help="TL1/TL2 files: the tiling the tensors were written with, or a preset name (default: the "
                        "file's own key, else bitnet.cpp's preset for the model's shapes); the report says "
                        "which tiling each shape got and from where")
    add_progress_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bitnet_lab.tools.inspect import inspect_model

    report = inspect_model(args.file, tl_tiling=args.tl_tiling, stats=args.stats, progress=args.progress)
    print(report.to_json(full_metadata=args.full_metadata) if args.json else report.to_text())
    return 0
