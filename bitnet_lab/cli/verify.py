"""`bitnet-lab verify`: the reference and the fast path side by side, tier by tier.

    bitnet-lab verify [-m MODEL] [-n 64] [-p PROMPT] [-t N] [--isa LEVELS] [--tolerance 1e-4]
                      [--numerics bitnet|llama.cpp] [--rounding half_even|half_away] [--kv-dtype f32|f16]
                      [--lm-head-dtype auto|f16|f32] [--i2s-layout auto|x4|file] [--layers I,J] [--json]
                      [--no-progress]
    bitnet-lab verify --numerics llama.cpp --against bitnet [-m MODEL] [-p TEXT | -f FILE]
                      [--backend native|reference] [--tie-rel 1e-3] [--json]

Prints the report of :func:`bitnet_lab.verify.verify` — a table per tier (T1 kernel, T2
BitLinear, T3 model) or, with ``--json``, one JSON object — on stdout. Exit status: 0 when every
tier holds; 1 when one does not (the one-line summary also goes to stderr) or on an error (one
line ``bitnet-lab: error: …``). ``BITNET_LAB_FAULT=<kernel>`` in the environment makes one MAD
kernel deliberately wrong (fault injection, for testing that verify notices).

With ``--against B`` it compares two numerics profiles instead (:mod:`bitnet_lab.verify.profiles`):
the model teacher-forced on the text under ``--numerics`` A (default bitnet) and under B on one
backend, per layer and for the logits. That is a measurement: exit status 0 unless it could not run.
"""

from __future__ import annotations

import argparse
import sys

from bitnet_lab.cli.args import (
    NUMERICS_CHOICES,
    add_hub_flags,
    add_numerics_flag,
    add_tl_tiling_flag,
    clamp_threads,
    resolve_model,
    tl_tiling_options,
)
from bitnet_lab.cli.run import add_i2s_layout_flag
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


def _nonneg_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not v >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
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
    add_numerics_flag(p)
    p.add_argument("--rounding", choices=ROUNDING_MODES, default=None,
                   help=f"activation rounding both backends use (default {DEFAULT_ROUNDING})")
    p.add_argument("--kv-dtype", choices=("f32", "f16"), default=None,
                   help="KV cache dtype (default f32; f16 with --numerics llama.cpp)")
    p.add_argument("--lm-head-dtype", choices=("auto", "f16", "f32"), default=None,
                   help="lm_head precision; auto = f16 iff the weight is F16 (default auto)")
    add_i2s_layout_flag(p)
    g = p.add_argument_group("comparing two numerics profiles (--against)")
    g.add_argument("--against", choices=NUMERICS_CHOICES, default=None, metavar="PROFILE",
                   help="compare --numerics (A, default bitnet) against this profile (B) on one backend, "
                        "teacher-forced on the text: per layer max/mean |Δh|, and for the logits max/mean "
                        "|Δlogit|, top-1 agreement (ties apart) and KL(B‖A); choices: " + ", ".join(NUMERICS_CHOICES))
    g.add_argument("-f", "--file", metavar="FILE", default=None, help="with --against: the text, from a UTF-8 file")
    g.add_argument("--backend", choices=("native", "reference"), default="native",
                   help="with --against: the backend both profiles run on (default native)")
    g.add_argument("--tie-rel", type=_nonneg_float, default=None, metavar="REL",
                   help="with --against: a top-2 margin of B below REL·max|logit| is a tie, counted apart "
                        "(default 1e-3)")
    p.add_argument("--layers", type=_int_list, default=None, metavar="I,J",
                   help="layers the kernel and BitLinear tiers check (default: all up to 4 layers, else 4 spread out)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars on stderr")
    p.set_defaults(func=run_verify)


def _profile_only_flags(args: argparse.Namespace) -> list[str]:
    given = [("-f/--file", args.file is not None), ("--backend", args.backend != "native"),
             ("--tie-rel", args.tie_rel is not None)]
    return [flag for flag, on in given if on]


def run_profiles(args: argparse.Namespace, source) -> int:
    """``verify --against``: two numerics profiles side by side (bitnet_lab.verify.profiles)."""
    from bitnet_lab.errors import ConfigError
    from bitnet_lab.verify.profiles import DEFAULT_TIE_REL, compare_profiles, read_text_file

    tier_flags = [f for f, on in (("--rounding", args.rounding), ("--kv-dtype", args.kv_dtype),
                                  ("--lm-head-dtype", args.lm_head_dtype), ("--layers", args.layers),
                                  ("--isa", args.isa)) if on is not None]
    if args.i2s_layout != "auto":
        tier_flags.append("--i2s-layout")
    if tier_flags:
        raise ConfigError(f"{', '.join(tier_flags)} set one backend's options; with --against each profile "
                          "brings its own")
    if args.file is not None and args.prompt is not None:
        raise ConfigError("give the text with -p or -f, not both")
    text = read_text_file(args.file) if args.file is not None else args.prompt
    report = compare_profiles(source, numerics=args.numerics or "bitnet", against=args.against, prompt=text,
                              backend=args.backend, threads=clamp_threads(args.threads),
                              tie_rel=DEFAULT_TIE_REL if args.tie_rel is None else args.tie_rel,
                              **tl_tiling_options(args))
    print(report.to_json() if args.json else report.to_text(), flush=True)
    return 0


def run_verify(args: argparse.Namespace) -> int:
    from bitnet_lab.verify.tiers import verify

    if args.against is None and _profile_only_flags(args):
        from bitnet_lab.errors import ConfigError

        raise ConfigError(f"{', '.join(_profile_only_flags(args))} apply to --against (comparing two profiles)")
    source = resolve_model(args)
    if source is None:
        from bitnet_lab.tools.default_model import default_model_path

        source = default_model_path(progress=args.progress)
    if args.against is not None:
        return run_profiles(args, source)
    report = verify(
        source, n=args.n_predict, prompt=args.prompt, threads=clamp_threads(args.threads), isas=args.isa,
        tolerance=args.tolerance, numerics=args.numerics, rounding=args.rounding, kv_dtype=args.kv_dtype,
        lm_head_dtype=args.lm_head_dtype, layers=args.layers, progress=args.progress, i2s_layout=args.i2s_layout,
        **tl_tiling_options(args),
    )
    print(report.to_json() if args.json else report.to_text(), flush=True)
    if not report.passed:
        print(f"bitnet-lab verify: {report.summary()}", file=sys.stderr)
        return EXIT_FAILED
    return 0
