"""`bitnet-lab convert`: a Hugging Face checkpoint (folder or repo id) to GGUF."""

from __future__ import annotations

import argparse
import os

from bitnet_lab.cli.args import tl_tiling_arg, lower_choice, add_progress_flag, OUTTYPES, CONVERT_EMBEDDING_TYPES


def add_parser(sub) -> None:
    p = sub.add_parser(
        "convert",
        help="convert a Hugging Face checkpoint (folder or repo id) to GGUF",
        description="Convert a Hugging Face BitNet checkpoint (2B-4T packed or bf16, 1bitLLM, "
        "Llama3-8B-1.58, Falcon3/Falcon-E) to GGUF.",
    )
    p.add_argument("src", metavar="SRC", help="checkpoint folder or Hub repo id (owner/name)")
    p.add_argument("--outtype", type=lower_choice(OUTTYPES), default="i2_s",
                   help=f"projection type: {', '.join(OUTTYPES)} (default i2_s)")
    p.add_argument("-o", "--outfile", required=True, help="output .gguf path")
    p.add_argument("--token-embedding-type", type=lower_choice(CONVERT_EMBEDDING_TYPES), default=None,
                   help="token_embd (and output) type: f16, f32, bf16, q8_0, q6_k (q8_0 / q6_k byte for byte "
                   "as llama-quantize writes them; default f16; f32 for --outtype f32)")
    p.add_argument("--tl-tiling", type=tl_tiling_arg, metavar="BM,BK,bm",
                   help="TL1/TL2 tiling: BM,BK,bm for every shape, or a preset name (e.g. BitNet-b1.58-2B-4T) "
                        "for its per-shape tilings (default: per-shape presets/search)")
    p.add_argument("--revision", help="Hub revision (branch, tag or commit) when SRC is a repo id")
    add_progress_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bitnet_lab.tools.convert import convert_hf_to_gguf
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
