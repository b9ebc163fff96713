"""`bitnet-lab perplexity`: llama-perplexity on any backend (bitnet_lab.generate.perplexity has the method).

    bitnet-lab perplexity [-m MODEL] -f FILE [-c CTX] [--chunks N] [--backend auto|native|reference]
                          [-t N] [--numerics bitnet|llama.cpp] [--json]

Prints the running estimate after every chunk (``[1]12.3456,[2]…``) and then
``Final estimate: PPL = X +/- Y`` on stdout; the model, backend and timings go to stderr. With
``--json`` stdout holds one JSON object instead (the running estimates then go to stderr).
``MODEL`` is anything ``bitnet_lab.load`` reads, or a training run folder / ``ckpt.npz``
(``bitnet_lab.train``): then the trainer's own forward is measured (fake-quant, or full
precision for a baseline run), which is how the model card compares the two. Without ``-m`` the
embedded default model is used.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any

from bitnet_lab.cli.args import add_numerics_flag, add_tl_tiling_flag, numerics_options, tl_tiling_options
from bitnet_lab.errors import ConfigError

PROG = "bitnet-lab"
BACKEND_CHOICES = ("auto", "native", "reference")
DEFAULT_MAX_CTX = 512  # llama-perplexity's classic -c 512


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "perplexity", help="perplexity of a model on a text file (llama-perplexity style)",
        description="Perplexity over non-overlapping chunks of -c tokens, scoring the second half of each "
                    "chunk, with llama.cpp's running estimate and final value ± its standard error.")
    p.add_argument("-m", "--model", metavar="MODEL",
                   help="a .gguf file, a Hugging Face checkpoint folder, a Hub repo id, or a training run "
                        "folder / ckpt.npz (default: the embedded default model)")
    p.add_argument("-f", "--file", required=True, metavar="FILE", help="the text file to measure on (UTF-8)")
    p.add_argument("-c", "--ctx-size", type=int, default=0, metavar="N",
                   help=f"chunk length in tokens; 0 = the model's training context, at most {DEFAULT_MAX_CTX} "
                        "(default 0)")
    p.add_argument("--chunks", type=int, default=None, metavar="N", help="evaluate at most N chunks (default all)")
    p.add_argument("--backend", choices=BACKEND_CHOICES, default="auto",
                   help="native engine or the JAX reference; auto = native when it is built (default auto)")
    p.add_argument("-t", "--threads", type=int, metavar="N", help="CPU threads for the native engine")
    add_tl_tiling_flag(p)
    add_numerics_flag(p)
    p.add_argument("--json", action="store_true", help="print the result as one JSON object on stdout")
    p.set_defaults(func=perplexity_command)


def _err(msg: str) -> None:
    print(f"{PROG}: {msg}", file=sys.stderr, flush=True)


def _resolve_backend(name: str) -> str:
    if name != "auto":
        return name
    return "native" if importlib.util.find_spec("bitnet_lab.engine") is not None else "reference"


def _load(args: argparse.Namespace) -> tuple[Any, str]:
    source = args.model
    if not source:
        from bitnet_lab.tools.default_model import default_model_path

        source = str(default_model_path())
        _err(f"no -m given: using the default model {source}")
    from bitnet_lab.train.export import is_checkpoint

    if is_checkpoint(source):
        from bitnet_lab.train.export import CheckpointModel

        if args.numerics is not None:
            raise ConfigError("--numerics applies to a model file; a training checkpoint runs the trainer's own forward")
        return CheckpointModel(source), "training checkpoint (the trainer's f32 forward)"
    import bitnet_lab

    from bitnet_lab.cli.args import clamp_threads

    args.threads = clamp_threads(args.threads)
    backend = _resolve_backend(args.backend)
    model = bitnet_lab.load(source, backend=backend, threads=args.threads, **tl_tiling_options(args),
                            **numerics_options(args))
    return model, backend + (" (auto)" if args.backend == "auto" else "")


def perplexity_command(args: argparse.Namespace) -> int:
    from bitnet_lab.generate.perplexity import perplexity, text_tokens

    if args.ctx_size < 0:
        raise ConfigError(f"-c/--ctx-size must be >= 0, got {args.ctx_size}")
    path = Path(args.file)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    t0 = time.perf_counter()
    model, backend = _load(args)
    _err(f"model: {model!r}")
    _err(f"backend: {backend}")
    n_ctx = args.ctx_size or min(model.config.context, DEFAULT_MAX_CTX)
    if n_ctx > model.config.context:
        _err(f"warning: -c {n_ctx} is longer than the model's training context ({model.config.context})")
    _err(f"perplexity: tokenizing {path} ({len(text):,} characters) ...")
    ids, bos = text_tokens(model.tokenizer, text)
    running_out = sys.stderr if args.json else sys.stdout
    state = {"t": time.perf_counter()}

    def on_chunk(i: int, n: int, ppl: float) -> None:
        if i == 1:
            dt = time.perf_counter() - state["t"]
            _err(f"perplexity: {dt:.2f} seconds per pass - ETA {dt * n / 60:.2f} minutes")
        print(f"[{i}]{ppl:.4f},", end="", file=running_out, flush=True)

    getattr(model, "runner", None)  # build the backend now: its set-up is load time, not the first pass
    _err(f"perplexity: {len(ids):,} tokens; calculating perplexity with n_ctx={n_ctx} "
         f"(load {time.perf_counter() - t0:.1f} s)")
    state["t"] = time.perf_counter()
    res = perplexity(model.logits, ids, n_ctx, bos_id=bos, n_chunks=args.chunks, on_chunk=on_chunk)
    print(file=running_out, flush=True)
    _err(f"perplexity: {res.n_chunks} chunks of {res.n_ctx} tokens ({res.count:,} scored of {res.n_tokens:,}) "
         f"in {res.seconds:.1f} s")
    if args.json:
        out = res.to_dict()
        out.update({"model": str(getattr(model, "source", args.model)), "file": str(path), "backend": backend,
                    "numerics": args.numerics or "bitnet"})
        print(json.dumps(out))
    else:
        print(f"Final estimate: {res}")
    return 0
