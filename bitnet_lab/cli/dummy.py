"""`bitnet-lab dummy`: write a random model of a named layout."""

from __future__ import annotations

import argparse

from bitnet_lab.cli.args import tl_tiling_arg, lower_choice, add_progress_flag, OUTTYPES, EMBEDDING_TYPES


def add_parser(sub) -> None:
    p = sub.add_parser(
        "dummy",
        help="write a random model of a named layout (bitnet.cpp sizes, 2B-4T, Falcon3, …)",
        description="Write a complete GGUF model with random weights that have trained-model "
        "statistics and a real tokenizer. Deterministic: the same seed gives the same bytes.",
    )
    p.add_argument("--layout", help="layout name (case-insensitive); --list shows them")
    p.add_argument("--list", action="store_true", help="list the layouts and exit")
    p.add_argument("--outtype", type=lower_choice(OUTTYPES), default="i2_s",
                   help=f"projection type: {', '.join(OUTTYPES)} (default i2_s)")
    p.add_argument("-o", "--outfile", help="output .gguf path")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--token-embedding-type", type=lower_choice(EMBEDDING_TYPES), default=None,
                   help="token_embd (and output) type: f16, f32, bf16, q8_0, q6_k (default f16; f32 for --outtype f32)")
    p.add_argument("--tl-tiling", type=tl_tiling_arg, metavar="BM,BK,bm",
                   help="TL1/TL2 tiling: BM,BK,bm for every shape, or a preset name (e.g. BitNet-b1.58-2B-4T) "
                        "for its per-shape tilings (default: per-shape presets/search)")
    p.add_argument("--no-tiling-key", dest="tiling_key", action="store_false",
                   help="TL1/TL2: do not record the tiling in the file (bitnet_lab.tl_tiling), as "
                   "bitnet.cpp's own files do; readers then fall back on the presets or --tl-tiling")
    p.add_argument("--arch-name", metavar="NAME",
                   help="general.architecture to write instead of the layout's, e.g. bitnet: the name "
                   "llama.cpp and bitnet.cpp read the 2B-4T graph under (for bench --llama-cpp)")
    add_progress_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.list:
        from bitnet_lab.tools.layouts import layouts_table

        print(layouts_table())
        return 0
    missing = [flag for flag, v in (("--layout", args.layout), ("-o/--outfile", args.outfile)) if not v]
    if missing:
        args._parser.error(f"the following arguments are required: {', '.join(missing)}")
    from bitnet_lab.tools.convert import check_output_path
    from bitnet_lab.tools.dummy import generate_dummy

    check_output_path(args.outfile)   # before any work; and no folders created behind the user's back
    path = generate_dummy(
        args.layout, args.outfile, outtype=args.outtype, seed=args.seed,
        embedding_type=args.token_embedding_type, tl_tiling=args.tl_tiling, arch_name=args.arch_name,
        tiling_key=args.tiling_key, progress=args.progress,
    )
    print(path)
    return 0
