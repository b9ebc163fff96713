"""`bitnet-lab bench`: llama-bench's tests plus the instruments around them, in one command.

    bitnet-lab bench [-m MODEL] [-p 128,512] [-n 64,128] [-t 1,2] [-r 5] [-o md|csv|json]
                     [--backend auto|native|reference[,...]] [--no-warmup] [--i2s-layout auto|x4|file]
                     [--tests] [--ceilings] [--load] [--breakdown] [--kernels] [--all]
                     [--layout 2B-4T] [--no-bracket] [--compare PATH] [--compare-args ARGS] [--llama-cpp]

Sections (each flag selects one; with none of them: tests, ceilings, load and breakdown; --all:
every section, and llama.cpp through llama-cpp-python when it is installed):

  --tests      pp / tg throughput, llama-bench's protocol and table (bitnet_lab.bench.bench)
  --ceilings   memory read bandwidth and int8 dot peak at 1 and N threads; with --tests the tg
               rows then show their decode roofline (% of bandwidth / bytes per token), the
               bandwidth measured again between each tg row's runs (--no-bracket: the
               ceilings' figure instead)
  --load       load time and peak RSS of the model, in a fresh process
  --breakdown  where one decode step's time goes
  --kernels    kernel microbenchmarks on the real shapes of --layout (default 2B-4T)
  --spec       speculative decoding: a verification pass of k+1 positions against one decode step
               (k = 1..16) on --layout's I2_S dummy, and each drafter's acceptance, tokens per pass
               and effective tokens/s against plain decode on the shipped edit workload
               (bitnet_lab.bench.speculative)
  --parallel N,..  aggregate decode t/s of N parallel sequences, one forward_batch per step
               (bitnet_lab.bench.batch; N = 1, the baseline, always measured first)

``--compare PATH`` runs an external llama-bench (llama.cpp's, or bitnet.cpp's for I2_S files)
with the same -p/-n/-t/-r and adds its rows; ``--llama-cpp`` does the same through
llama-cpp-python. The report starts with the CPU model, its SIMD flags, the load average, the
date and the git commit: every figure depends on them. A section that cannot run here (no
native engine, kernels missing, llama.cpp cannot read the file) prints one line saying why;
nothing is estimated in its place. Progress bars go to stderr.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import shlex
import sys
from collections.abc import Callable
from typing import Any

from bitnet_lab.cli.args import (
    add_hub_flags,
    add_numerics_flag,
    add_tl_tiling_flag,
    clamp_thread_list,
    numerics_options,
    resolve_model,
    tl_tiling_options,
)
from bitnet_lab.cli.run import add_i2s_layout_flag, i2s_layout_options
from bitnet_lab.errors import BitnetLabError, ConfigError

PROG = "bitnet-lab"
SECTIONS = ("tests", "ceilings", "load", "breakdown", "kernels", "spec")
DEFAULT_SECTIONS = ("tests", "ceilings", "load", "breakdown")
FORMATS = ("md", "csv", "json")


# =============================================================================================
# Flags
# =============================================================================================


def mmap_list(text: str) -> list[bool]:
    """llama-bench's ``-mmp`` values: ``1``, ``0`` or ``0,1``."""
    values = int_list(text)
    if not values or any(v not in (0, 1) for v in values):
        raise argparse.ArgumentTypeError(f"expected 0, 1 or 0,1, got {text!r}")
    return [bool(v) for v in values]


def int_list(text: str) -> list[int]:
    """llama-bench's list syntax: ``128,512``, ranges ``128-512`` (step 1), ``128-512+128``,
    ``1-16*2``. Zeros are allowed (``-p 0``: no pp tests)."""
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)(?:-(\d+)(?:([+*])(\d+))?)?", part)
        if not m:
            raise argparse.ArgumentTypeError(f"expected integers like 128,512 or 1-16*2, got {text!r}")
        first, last = int(m[1]), int(m[2]) if m[2] else int(m[1])
        op, step = m[3] or "+", int(m[4]) if m[4] else 1
        i = first
        while i <= last:
            out.append(i)
            nxt = i + step if op == "+" else i * step
            if nxt <= i:
                raise argparse.ArgumentTypeError(f"range {part!r} does not advance")
            i = nxt
    return out


def add_parser(sub: Any) -> None:
    """Register ``bench`` (bitnet_lab.cli's subcommand mechanism)."""
    p = sub.add_parser(
        "bench",
        help="benchmark a model: pp/tg tokens/s, machine ceilings and roofline, load, breakdown, kernels",
        description="Measure a model the way llama-bench does (pp N: a prompt in one batch; tg N: tokens "
                    "one at a time; warm-up excluded; mean ± sd tokens/s) and put the machine's ceilings, "
                    "the decode roofline, load time and RSS, a decode breakdown, kernel microbenchmarks "
                    "and llama.cpp baselines next to it. With no section flag: tests, ceilings, load, "
                    "breakdown.",
    )
    g = p.add_argument_group("tests (llama-bench's flags)")
    g.add_argument("-m", "--model", metavar="MODEL",
                   help="a .gguf file, a Hugging Face checkpoint folder or a Hub repo id (default: the default model)")
    add_hub_flags(g)
    g.add_argument("-p", "--n-prompt", type=int_list, default=[128, 512], metavar="N,..",
                   help="prompt sizes, one batch each (default 128,512; 0 = none)")
    g.add_argument("-n", "--n-gen", type=int_list, default=[64, 128], metavar="N,..",
                   help="generated tokens, one at a time (default 64,128; 0 = none)")
    g.add_argument("-t", "--threads", type=int_list, default=None, metavar="N,..",
                   help="thread counts (default 1 and the physical cores)")
    g.add_argument("-r", "--repetitions", type=int, default=5, metavar="N", help="timed runs per test (default 5)")
    g.add_argument("-o", "--output", choices=FORMATS, default="md", help="output format (default md)")
    g.add_argument("--backend", default="auto", metavar="NAMES",
                   help="auto, native, reference, or a comma list (default auto = native when built, else reference)")
    g.add_argument("--no-warmup", dest="warmup", action="store_false", help="no untimed warm-up run per test")
    g.add_argument("-s", "--seed", type=int, default=0, help="seed of the random token ids (default 0)")
    add_i2s_layout_flag(g)
    add_tl_tiling_flag(g)
    add_numerics_flag(g)
    g.add_argument("-mmp", "--mmap", type=mmap_list, default=[True], metavar="0|1",
                   help="1: weights used in place from the file's memory map; 0: read into anonymous huge "
                        "pages (run's --no-mmap); 0,1 measures both (default 1)")
    s = p.add_argument_group("sections (none given: tests, ceilings, load, breakdown)")
    for name, text in (("tests", "pp / tg throughput"), ("ceilings", "memory bandwidth and int8 peak (+ roofline)"),
                       ("load", "load time and peak RSS (fresh process)"), ("breakdown", "decode-step breakdown"),
                       ("kernels", "kernel microbenchmarks on --layout's shapes"),
                       ("spec", "speculative decoding: verification-pass cost on --layout's dummy (k = 1..16), "
                                "drafters' acceptance and speed on the edit workload")):
        s.add_argument(f"--{name}", action="store_true", help=text)
    s.add_argument("--all", action="store_true", help="every section, and --llama-cpp when it is installed")
    s.add_argument("--parallel", type=int_list, default=None, metavar="N,..",
                   help="aggregate decode t/s of N parallel sequences, e.g. 1,2,4,8,16 (N = 1: the baseline)")
    s.add_argument("--parallel-gen", type=int, default=16, metavar="N",
                   help="--parallel: timed decode steps per run (default 16)")
    s.add_argument("--layout", default="2B-4T", help="layout whose shapes --kernels uses (default 2B-4T)")
    s.add_argument("--kernels-cold", action="store_true",
                   help="--kernels: evict the caches before every call (weights from DRAM, as in decode)")
    s.add_argument("--no-bracket", dest="bracket", action="store_false",
                   help="tg roofline from the ceilings section, not from the bandwidth measured between each tg row's runs")
    s.add_argument("--ceiling-mib", type=int, default=1024, metavar="MIB",
                   help="bandwidth buffer in MiB, much larger than the last-level cache (default 1024)")
    v = p.add_argument_group("the HTTP server (bitnet_lab.bench.serve)")
    v.add_argument("--serve", action="store_true",
                   help="instead of the sections: aggregate tokens/s of `bitnet-lab serve` vs concurrency, next to the "
                        "single-request decode, then a bounded load test (-n's first value: tokens per request)")
    v.add_argument("--concurrency", type=int_list, default=[1, 2, 4, 8, 16], metavar="N,..",
                   help="--serve: concurrent clients per level; the server gets a slot for each (default 1,2,4,8,16)")
    v.add_argument("--serve-requests", type=int, default=2, metavar="N",
                   help="--serve: requests per client at each level (default 2)")
    v.add_argument("--load-clients", type=int, default=32, metavar="N",
                   help="--serve: clients of the load test (default 32; 0 = no load test)")
    v.add_argument("--load-requests", type=int, default=8, metavar="N",
                   help="--serve: requests per client of the load test (default 8)")
    c = p.add_argument_group("baselines on the same file")
    c.add_argument("--compare", metavar="PATH", help="an external llama-bench binary (llama.cpp or bitnet.cpp)")
    c.add_argument("--compare-args", default="", metavar="ARGS", help="extra arguments for that binary, one string")
    c.add_argument("--llama-cpp", action="store_true", help="llama.cpp through llama-cpp-python (optional extra)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars on stderr")
    p.set_defaults(func=bench_command)


# =============================================================================================
# Running
# =============================================================================================


def _err(msg: str) -> None:
    print(f"{PROG}: {msg}", file=sys.stderr, flush=True)


def _backends(text: str) -> list[str]:
    from bitnet_lab.bench.protocol import resolve_backends

    if text.strip() == "auto":
        if importlib.util.find_spec("bitnet_lab.engine") is not None:
            return ["native"]
        _err("backend auto: the native engine is not built in this version; measuring the JAX reference")
        return ["reference"]
    return resolve_backends(text)


def _sections(args: argparse.Namespace) -> list[str]:
    chosen = [s for s in SECTIONS if getattr(args, s)]
    if args.all:
        return list(SECTIONS) + (["parallel"] if args.parallel else [])
    if args.parallel:
        return chosen + ["parallel"]
    return chosen or list(DEFAULT_SECTIONS)


class _Report:
    """Collects the sections in order and prints them in the chosen format."""

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt
        self.parts: list[tuple[str, Any]] = []  # (key, object with .table() / a BenchTable / a str)
        self.missing: list[tuple[str, str]] = []

    def add(self, key: str, obj: Any) -> None:
        self.parts.append((key, obj))

    def skip(self, key: str, why: str) -> None:
        self.missing.append((key, why))
        _err(f"{key}: not measured: {why}")

    def render(self, header: dict[str, Any]) -> str:
        from bitnet_lab.bench.machine import machine_header

        # The tests stay a BenchTable (its JSON is llama-bench's array); the rest become Tables.
        tables = [(k, o if k == "tests" else o.table()) for k, o in self.parts]
        if self.fmt == "json":
            doc: dict[str, Any] = {"machine": header["machine"], "model": header["model"],
                                   "backends": header["backends"]}
            for k, t in tables:
                doc[k] = json.loads(t.to_json()) if k == "tests" else t.to_dict()
            doc["not_measured"] = {k: why for k, why in self.missing}
            return json.dumps(doc, indent=2, default=str)
        if self.fmt == "csv":
            out = [f"# {line}" for line in machine_header(header["machine"]).splitlines()]
            out.append(f"# model: {header['model']}")
            for k, t in tables:
                out.append(f"# {k}")
                out.append(t.to_csv().rstrip("\n"))
            out.extend(f"# {k}: not measured: {why}" for k, why in self.missing)
            return "\n".join(out) + "\n"
        out = ["## bitnet-lab bench", "", machine_header(header["machine"]),
               f"model: {header['model']}", f"backends: {', '.join(header['backends'])}"]
        for k, t in tables:
            out.append("")
            if k == "tests":
                out.append(f"### {t.title}")
                out.append("")
                out.append(t.to_markdown())
            else:
                out.append(t.to_markdown())
        if self.missing:
            out.append("")
            out.extend(f"- {k}: not measured: {why}" for k, why in self.missing)
        return "\n".join(out) + "\n"


def _try(report: _Report, key: str, fn: Callable[[], Any], *, show: bool = True) -> Any:
    """Run an optional part; a bitnet_lab, import or OS error becomes a 'not measured' line.
    ``show``: add the result as its own section (False: the caller merges it somewhere)."""
    try:
        out = fn()
    except (BitnetLabError, ImportError, OSError) as e:
        report.skip(key, " ".join(str(e).split()) or type(e).__name__)
        return None
    if show:
        report.add(key, out)
    return out


def bench_command(args: argparse.Namespace) -> int:
    from bitnet_lab import bench as B
    from bitnet_lab.kernels.isa import effective_threads
    from bitnet_lab.model import load

    pp = [n for n in args.n_prompt if n > 0]
    tg = [n for n in args.n_gen if n > 0]
    if args.repetitions < 1:
        raise ConfigError(f"-r/--repetitions must be >= 1, got {args.repetitions}")
    threads = args.threads if args.threads is not None else sorted({1, effective_threads(None)})
    threads = clamp_thread_list(threads)
    if args.ceiling_mib < 1:
        raise ConfigError(f"--ceiling-mib must be >= 1, got {args.ceiling_mib}")
    sections = _sections(args)
    if "tests" in sections and not (pp or tg):
        raise ConfigError("nothing to measure: -p and -n are both 0")
    backends = _backends(args.backend)
    if (args.compare or args.llama_cpp) and "tests" not in sections:
        raise ConfigError("--compare and --llama-cpp add rows to the tests section: add --tests")

    source = resolve_model(args)
    if not source:
        from bitnet_lab.tools.default_model import default_model_path

        source = str(default_model_path())
        _err(f"no -m given: using the default model {source}")
    options = {**i2s_layout_options(args.i2s_layout, backends), **tl_tiling_options(args), **numerics_options(args)}
    model = load(source, backend=backends[0], threads=max(threads), **options)
    path = str(model.source)
    if args.serve:
        return _serve_bench(args, model, path, tg)
    report = _Report(args.output)
    machine = B.machine_info()
    _err(f"model {path}; backends {', '.join(backends)}; threads {threads}; sections {', '.join(sections)}")

    ceilings = None
    if "ceilings" in sections:
        ceilings = _try(report, "ceilings", lambda: B.machine_ceilings(
            threads=threads, nbytes=args.ceiling_mib << 20, repeat=args.repetitions, progress=args.progress))
    if "load" in sections:
        _try(report, "load", lambda: B.load_profile(path, backend=backends[0], threads=max(threads), **options))
    if "tests" in sections:
        table = B.bench(model, pp=pp, tg=tg, threads=threads, repeat=args.repetitions, backend=backends,
                        warmup=args.warmup, seed=args.seed, ceilings=ceilings, mmap=args.mmap,
                        bracket_bandwidth=ceilings is not None and args.bracket, progress=args.progress)
        if args.llama_cpp or (args.all and _llama_cpp_installed()):
            extra = _try(report, "llama.cpp", lambda: B.compare_llama_cpp(
                path, pp=pp, tg=tg, threads=threads, repeat=args.repetitions, seed=args.seed,
                warmup=args.warmup, progress=args.progress), show=False)
            table = table + extra if extra is not None else table
        if args.compare:
            extra = _try(report, "compare", lambda: B.compare_external(
                args.compare, path, pp=pp, tg=tg, threads=threads, repeat=args.repetitions,
                extra_args=shlex.split(args.compare_args)), show=False)
            table = table + extra if extra is not None else table
        report.parts.insert(0, ("tests", table))
    if ceilings is not None:
        report.add("roofline", B.decode_roofline(model, ceilings.bandwidth(max(threads))))
    if "breakdown" in sections:
        _try(report, "breakdown", lambda: B.decode_breakdown(model, repeat=max(3, args.repetitions)))
    if "kernels" in sections:
        _try(report, "kernels", lambda: B.kernel_bench(
            args.layout, threads=threads, cold=args.kernels_cold, progress=args.progress))
    if "spec" in sections:
        from bitnet_lab.bench.speculative import spec_tables

        tables = _try(report, "spec", lambda: spec_tables(model, layout=args.layout, threads=max(threads),
                                                           repeat=args.repetitions, progress=args.progress), show=False)
        for i, t in enumerate(tables or ()):
            report.add(f"spec-{i}", t)
    if "parallel" in sections:
        from bitnet_lab.bench.batch import parallel_bench

        _try(report, "parallel", lambda: parallel_bench(
            model, parallel=args.parallel, n_gen=args.parallel_gen, repeat=args.repetitions, warmup=args.warmup,
            seed=args.seed, progress=args.progress))
    sys.stdout.write(report.render({"machine": machine, "model": path, "backends": backends}))
    sys.stdout.flush()
    return 0


def _serve_bench(args: argparse.Namespace, model: Any, path: str, tg: list[int]) -> int:
    """``bench --serve``: the concurrency sweep and the load test (bitnet_lab.bench.serve)."""
    from bitnet_lab.bench import machine_header, machine_info
    from bitnet_lab.bench import serve as S
    from bitnet_lab.serve.app import ServeSettings

    if min(args.concurrency) < 1 or args.serve_requests < 1 or args.load_clients < 0 or args.load_requests < 1:
        raise ConfigError("--concurrency, --serve-requests and --load-requests must be >= 1, --load-clients >= 0")
    n = tg[0] if tg else 16
    n_ctx = min(model.config.context, 512)
    _err(f"serve benchmark on {path}: concurrency {args.concurrency}, {n} tokens per request, "
         f"{args.serve_requests} requests per client")
    out = [machine_header(machine_info()), f"model: {path}", ""]
    sweep = S.concurrency_sweep(model, levels=args.concurrency, requests_per_client=args.serve_requests,
                                max_tokens=n, n_ctx=n_ctx, seed=args.seed,
                                on_level=lambda what: _err(f"serve: {what}") if args.progress else None)
    out.append(S.format_sweep(sweep))
    if args.load_clients:
        _err(f"load test: {args.load_clients} clients x {args.load_requests} requests")
        settings = ServeSettings(n_slots=max(args.concurrency), n_ctx=n_ctx,
                                 max_queue=args.load_clients * args.load_requests)
        with S.LocalServer(model, settings) as server:
            result = S.load_test(server.url, clients=args.load_clients, requests_per_client=args.load_requests,
                                 max_tokens=min(n, 16), seed=args.seed)
        out.append(f"(server: {settings.n_slots} slots, queue {settings.max_queue})")
        out.append(S.format_load(result))
    sys.stdout.write("\n".join(out) + "\n")
    sys.stdout.flush()
    return 0


def _llama_cpp_installed() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None
