"""`bitnet-lab verify`: the reference and the fast path side by side, tier by tier.

    bitnet-lab verify [-m MODEL] [-n 64] [-p PROMPT] [-t N] [--isa LEVELS] [--tolerance 1e-4]
                      [--rounding half_even|half_away] [--kv-dtype f32|f16]
                      [--lm-head-dtype auto|f16|f32] [--layers I,J] [--json] [--no-progress]

Prints the report of :func:`bitnet_lab.verify.verify` — a table per tier (T1 kernel, T2
BitLinear, T3 model) or, with ``--json``, one JSON object — on stdout. Exit status: 0 when every
tier holds; 1 when one does not (the one-line summary also goes to stderr) or on an error (one
line ``bitnet-lab: error: …``). ``BITNET_LAB_FAULT=<kernel>`` in the environment makes one MAD
kernel deliberately wrong (fault injection, for testing that verify notices).
"""

from __future__ import annotations

import argparse
import sys

from bitnet_lab.cli.args import add_hub_flags, add_tl_tiling_flag, clamp_threads, resolve_model, tl_tiling_options
from bitnet_lab.quant.ternary import DEFAULT_ROUNDING, ROUNDING_MODES

EXIT_FAILED = 1


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, got {text!r}") from None


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return v


def _nonneg_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return v


def add_parser(subparsers) -> None:
    from bitnet_lab.verify.report import DEFAULT_PROMPT, DEFAULT_TOLERANCE

    p = subparsers.add_parser(
        "verify",
        help="check the native CPU path against the reference: kernels, BitLinear, whole model",
        description="Run the JAX reference and the native engine side by side and report, per tier "
        "of 'lossless' (docs/numerics.md#11-what-lossless-means-here): T1 kernel (int32 accumulators "
        "bit-identical to the numpy twins, every ISA level, 1 and N threads), T2 BitLinear (outputs "
        "bit-identical given identical inputs), T3 model (max|Δlogit|/max|logit| per step and identical greedy tokens for N steps; the "
        "first divergence located to layer and op, rounding ties of int8 activations reported as "
        "tie-limited). Exit status 0 only when all hold.",
    )
    p.add_argument("-m", "--model", metavar="MODEL",
                   help="a .gguf file, a Hugging Face checkpoint folder or a Hub repo id "
                        "(default: the embedded default model)")
    add_hub_flags(p)
    add_tl_tiling_flag(p)
    p.add_argument("-n", "--n-predict", type=_nonneg_int, default=64, metavar="N",
                   help="greedy steps after the prompt (default 64)")
    p.add_argument("-p", "--prompt", default=None, help=f"the prompt (default {DEFAULT_PROMPT!r})")
    p.add_argument("-t", "--threads", type=int, metavar="N",
                   help="N of the 1-and-N-thread checks and the model tier (default: physical cores)")
    p.add_argument("--isa", metavar="LEVELS", default=None,
                   help="ISA levels to check, comma-separated (default: every available one)")
    p.add_argument("--tolerance", type=_positive_float, default=DEFAULT_TOLERANCE, metavar="REL",
                   help=f"model tier bound on max|Δlogit|/max|logit| (default {DEFAULT_TOLERANCE:g})")
    p.add_argument("--rounding", choices=ROUNDING_MODES, default=DEFAULT_ROUNDING,
                   help=f"activation rounding both backends use (default {DEFAULT_ROUNDING})")
    p.add_argument("--kv-dtype", choices=("f32", "f16"), default="f32", help="KV cache dtype (default f32)")
    p.add_argument("--lm-head-dtype", choices=("auto", "f16", "f32"), default="auto",
                   help="lm_head precision; auto = f16 iff the weight is F16 (default auto)")
    p.add_argument("--layers", type=_int_list, default=None, metavar="I,J",
                   help="layers the kernel and BitLinear tiers check (default: all up to 4 layers, else 4 spread out)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars on stderr")
    p.set_defaults(func=run_verify)


def run_verify(args: argparse.Namespace) -> int:
    from bitnet_lab.verify.tiers import verify

    source = resolve_model(args)
    if source is None:
        from bitnet_lab.tools.default_model import default_model_path

        source = default_model_path(progress=args.progress)
    report = verify(
        source, n=args.n_predict, prompt=args.prompt, threads=clamp_threads(args.threads), isas=args.isa,
        tolerance=args.tolerance, rounding=args.rounding, kv_dtype=args.kv_dtype,
        lm_head_dtype=args.lm_head_dtype, layers=args.layers, progress=args.progress, **tl_tiling_options(args),
    )
    print(report.to_json() if args.json else report.to_text(), flush=True)
    if not report.passed:
        print(f"bitnet-lab verify: {report.summary()}", file=sys.stderr)
        return EXIT_FAILED
    return 0
