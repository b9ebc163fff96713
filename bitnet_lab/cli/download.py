"""`bitnet-lab download`: fetch a Hub repo into the Hugging Face cache."""

from __future__ import annotations

import argparse



def add_parser(sub) -> None:
    p = sub.add_parser(
        "download",
        help="fetch a Hub repo into the Hugging Face cache and print its local path",
        description="Download a model repo (its GGUF, or the safetensors checkpoint files) into "
        "the Hugging Face cache and print the local path to pass to -m.",
    )
    p.add_argument("repo_id", metavar="REPO_ID", help="owner/name, e.g. microsoft/bitnet-b1.58-2B-4T-gguf")
    p.add_argument("--revision", help="branch, tag or commit")
    p.add_argument("--filename", "--hf-file", dest="filename", help="the file to fetch (e.g. one of several GGUFs)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bitnet_lab.formats import hub

    print(hub.download(args.repo_id, revision=args.revision, filename=args.filename))
    return 0
