"""`bitnet-lab run` and `bitnet-lab chat`: text generation and an interactive chat, llama.cpp flags.

    bitnet-lab run  -m MODEL -p PROMPT [-n 128] [-c N] [-t N] [--temp 0.8] [--top-k 40]
                    [--top-p 0.95] [--min-p 0.05] [--repeat-penalty 1.0] [--repeat-last-n 64]
                    [-s SEED] [--backend native|reference] [-f FILE] [-cnv] [-sys TEXT]
                    [--lookup N | -md DRAFT.gguf | -md self:N] [--draft-max K] [--draft-min K]
    bitnet-lab run  -m MODEL -np N -f PROMPTS [sampling flags]   (several prompts, N at a time)
    bitnet-lab chat -m MODEL [-sys TEXT] [--chat-template NAME] [sampling flags]

Streams: the generated text goes to stdout as it is produced (flushed per token) and nothing
else does; the model path, sampler, seed and llama.cpp-style timings go to stderr. Without
``-m`` both use the embedded default model (`bitnet_lab.tools.default_model`).

Chat (``chat``, or ``run -cnv`` where ``-p`` is the system prompt as in llama.cpp): ``/reset``
forgets the conversation, ``/exit`` (or Ctrl-D, or Ctrl-C at the prompt) quits; Ctrl-C while
the model answers stops that answer only (a second Ctrl-C quits). Each turn feeds only its own
tokens: the KV cache is kept across turns (`bitnet_lab.generate.chat.ChatSession`). When the
context is full a chat shifts it and goes on (llama.cpp's ``--context-shift``, on in a chat, off
in ``run``; ``--keep N``; `bitnet_lab.generate.loop.context_shift`), and an answer is at most
``min(256, n_ctx / 2)`` tokens unless ``-n`` says otherwise.

Speculative decoding (``--lookup N``, ``-md/--model-draft PATH|self:N``, ``--draft-max``,
``--draft-min``: llama.cpp's names; `bitnet_lab.generate.speculative`): the same tokens as without
it (greedy), or drawn from the same distribution, several per forward pass when drafts are right;
stderr says how many drafts were accepted.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from bitnet_lab.cli.args import (
    add_hub_flags,
    add_numerics_flag,
    add_tl_tiling_flag,
    clamp_threads,
    hub_options,
    numerics_options,
    tl_tiling_options,
)
from bitnet_lab.errors import ConfigError

PROG = "bitnet-lab"
BACKEND_CHOICES = ("native", "reference")
# engine.I2S_LAYOUTS, spelled here: importing the engine would load the native extension just to
# build the argument parser (a test keeps the two equal)
I2S_LAYOUT_CHOICES = ("auto", "x4", "file")
CHAT_COMMANDS = {"/reset": "forget the conversation (the system prompt stays)", "/exit": "quit", "/quit": "quit",
                 "/help": "show these commands"}


# =============================================================================================
# Flags
# =============================================================================================


def _add_model_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("-m", "--model", metavar="MODEL",
                   help="a .gguf file, a Hugging Face checkpoint folder or a Hub repo id "
                        "(default: the embedded default model)")
    add_hub_flags(g)
    g.add_argument("--backend", choices=BACKEND_CHOICES, default="native",
                   help="forward pass: the native engine (default) or the JAX reference (slow)")
    g.add_argument("-t", "--threads", type=int, metavar="N", help="CPU threads for the native engine")
    g.add_argument("-c", "--ctx-size", type=int, default=None, metavar="N",
                   help="KV cache size in tokens; 0 = the model's training context (default: the "
                   "training context, at most 2048)")
    g.add_argument("--no-mmap", dest="mmap", action="store_false",
                   help="read the weights into anonymous huge pages instead of using the file's memory map "
                        "in place (faster decode where the page cache holds 4 KiB pages; loads the whole file)")
    add_i2s_layout_flag(g)
    add_tl_tiling_flag(g)
    add_numerics_flag(g)


def add_i2s_layout_flag(g: Any) -> None:
    """``--i2s-layout`` (run, chat, bench): the native engine's ``i2s_layout`` load option."""
    g.add_argument("--i2s-layout", choices=I2S_LAYOUT_CHOICES, default="auto",
                   help="native engine: I2_S/TQ2_0 projections re-ordered at load into the x4 layout and TQ1_0 "
                        "ones into the x16 layout, TL1/TL2 ones decoded into x4/x16 (x4), used as stored (file: "
                        "TL on the LUT kernels), or each where the CPU has a native GEMV for it (auto, default)")


def i2s_layout_options(layout: str, backends: Sequence[str]) -> dict[str, str]:
    """The load options for ``--i2s-layout``: passed on when every backend is the native engine;
    a layout other than auto with any other backend is an error, not ignored."""
    if any(b != "native" for b in backends):
        if layout != "auto":
            raise ConfigError("--i2s-layout applies to the native backend only")
        return {}
    return {"i2s_layout": layout}


# -n when none is given: run generates this many tokens; a chat answer min(256, n_ctx / 2)
# (bitnet_lab.generate.chat.ChatSession.default_n)
RUN_N_DEFAULT = 128
CHAT_N_HELP = "min(256, context/2)"


def _add_sampling_flags(p: argparse.ArgumentParser, n_help: str, *, ignore_eos: bool = True) -> None:
    g = p.add_argument_group("sampling (llama.cpp order: penalties -> top-k -> top-p -> min-p -> temp)")
    g.add_argument("-n", "--n-predict", type=int, default=None, metavar="N", help=n_help)
    g.add_argument("--temp", type=float, default=0.8, help="temperature; 0 = greedy (default 0.8)")
    g.add_argument("--top-k", type=int, default=40, help="top-k, 0 = off (default 40)")
    g.add_argument("--top-p", type=float, default=0.95, help="top-p, 1.0 = off (default 0.95)")
    g.add_argument("--min-p", type=float, default=0.05, help="min-p, 0.0 = off (default 0.05)")
    g.add_argument("--repeat-penalty", type=float, default=1.0, help="repetition penalty, 1.0 = off (default 1.0)")
    g.add_argument("--repeat-last-n", type=int, default=64,
                   help="tokens the penalties look back at; 0 = off, -1 = whole context (default 64)")
    g.add_argument("--presence-penalty", type=float, default=0.0, help="presence penalty (default 0.0)")
    g.add_argument("--frequency-penalty", type=float, default=0.0, help="frequency penalty (default 0.0)")
    g.add_argument("-s", "--seed", type=int, default=-1, help="random seed; -1 = random, printed (default -1)")
    g.add_argument("-r", "--reverse-prompt", "--stop", dest="stop", action="append", default=[], metavar="TEXT",
                   help="stop when this text is generated (repeatable; never printed)")
    if ignore_eos:   # not in chat, which refuses it (answers would never end)
        g.add_argument("--ignore-eos", action="store_true", help="do not stop at end-of-generation tokens")


def _add_chat_flags(p: argparse.ArgumentParser, *, with_cnv: bool) -> None:
    g = p.add_argument_group("chat")
    if with_cnv:
        g.add_argument("-cnv", "--conversation", action="store_true",
                       help="interactive chat; -p (or -sys) is then the system prompt")
    g.add_argument("-sys", "--system-prompt", metavar="TEXT", help="system prompt of the chat")
    g.add_argument("--chat-template", metavar="NAME",
                   help="bitnet | llama3 | falcon3 | template (the file's own) | a Jinja source "
                        "(default: chosen from the model, see bitnet_lab.generate.chat)")


def _add_context_flags(p: argparse.ArgumentParser, *, chat: bool) -> None:
    """llama.cpp's ``--context-shift`` / ``--no-context-shift`` and ``--keep N``."""
    g = p.add_argument_group("context shift (when the context is full)")
    default = "on" if chat else "off; on with -cnv"
    g.add_argument("--context-shift", dest="ctx_shift", action="store_true", default=None,
                   help="when the context is full, keep its first --keep tokens, drop the oldest half of the "
                        f"rest, re-encode what is kept and go on (default: {default})")
    g.add_argument("--no-context-shift", dest="ctx_shift", action="store_false",
                   help="stop when the context is full instead" + ("" if chat else " (the default without -cnv)"))
    keep = ("tokens a context shift keeps at the start of the conversation, after the BOS; -1 = the "
            "system prompt (default -1)" if chat else
            "tokens of the prompt a context shift keeps, after the BOS; -1 = the whole prompt (default 0; "
            "with -cnv, -1 = the system prompt)")
    g.add_argument("--keep", type=int, default=None, metavar="N", help=keep)


# llama.cpp's --draft-max default (bitnet_lab.generate.speculative.DRAFT_MAX_DEFAULT, spelled here so
# that building the parser imports no generation code)
DRAFT_MAX_DEFAULT = 16


def _add_draft_flags(p: argparse.ArgumentParser) -> None:
    """Speculative decoding: a drafter (prompt lookup or a draft model) and the draft lengths."""
    g = p.add_argument_group("speculative decoding (the same tokens as without it, several per pass)")
    g.add_argument("--lookup", "--spec-ngram-size-n", dest="lookup", type=int, default=None, metavar="N",
                   help="prompt lookup: draft the tokens that followed the latest earlier match of the last N "
                        "(down to 1) tokens of the prompt and the text so far")
    g.add_argument("-md", "--model-draft", dest="model_draft", metavar="PATH",
                   help="draft model: a smaller GGUF with the same vocabulary (run by the same backend), or "
                        "self:N for the model's own first N layers (self-speculation)")
    g.add_argument("--draft-max", "--draft-n", dest="draft_max", type=int, default=None, metavar="K",
                   help=f"most tokens drafted per pass; the length adapts below it (default {DRAFT_MAX_DEFAULT})")
    g.add_argument("--draft-min", "--draft-n-min", dest="draft_min", type=int, default=None, metavar="K",
                   help="fewest drafted tokens worth a verification pass (default 1)")


def add_parser(sub: Any) -> None:
    """Register ``run`` and ``chat`` (bitnet_lab.cli's subcommand mechanism)."""
    p = sub.add_parser(
        "run",
        help="generate text from a prompt (or chat with -cnv)",
        description="Generate text from a prompt. The text streams to stdout; timings "
                    "(prompt and eval ms/token, tokens/s) go to stderr.",
    )
    _add_model_flags(p)
    g = p.add_argument_group("prompt")
    g.add_argument("-p", "--prompt", help="the prompt (special tokens like <|eot_id|> are parsed)")
    g.add_argument("-f", "--file", metavar="FILE", help="read the prompt from FILE")
    g.add_argument("-np", "--parallel", type=int, default=None, metavar="N",
                   help="decode N sequences together (batched generation): -f FILE holds one prompt per line "
                        "(empty lines skipped, as llama-parallel); the outputs print in the file's order")
    g.add_argument("--no-display-prompt", dest="display_prompt", action="store_false",
                   help="do not echo the prompt before the generated text (llama-cli echoes it)")
    g.add_argument("--no-escape", dest="escape", action="store_false",
                   help="do not turn \\n, \\t, \\\\ … in -p into characters (llama.cpp's -e is on by default)")
    _add_sampling_flags(p, f"tokens to generate; -1 = until end of generation (or a full context without a "
                           f"context shift) (default {RUN_N_DEFAULT}; with -cnv, per answer: {CHAT_N_HELP})")
    _add_chat_flags(p, with_cnv=True)
    _add_context_flags(p, chat=False)
    _add_draft_flags(p)
    p.set_defaults(func=run_command)

    c = sub.add_parser(
        "chat",
        help="interactive chat (/reset, /exit; Ctrl-C stops an answer)",
        description="Chat with a model in the terminal. Answers stream to stdout; /reset "
                    "forgets the conversation, /exit or Ctrl-D quits, Ctrl-C stops the current answer.",
    )
    _add_model_flags(c)
    _add_sampling_flags(c, f"tokens per answer; -1 = until the end-of-turn token (a model that never says it "
                           f"answers until Ctrl-C) (default {CHAT_N_HELP})", ignore_eos=False)
    _add_chat_flags(c, with_cnv=False)
    _add_context_flags(c, chat=True)
    _add_draft_flags(c)
    c.set_defaults(func=chat_command)


# =============================================================================================
# Shared pieces
# =============================================================================================


def _err(msg: str) -> None:
    print(f"{PROG}: {msg}", file=sys.stderr, flush=True)


def _process_escapes(text: str) -> str:
    r"""llama.cpp's prompt escapes: \n \r \t \' \" \\ (anything else is kept as written)."""
    table = {"n": "\n", "r": "\r", "t": "\t", "'": "'", '"': '"', "\\": "\\"}
    out, i = [], 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text) and text[i + 1] in table:
            out.append(table[text[i + 1]])
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _load(args: argparse.Namespace):
    """Load the model and build its backend; returns (model, n_ctx, load_ms)."""
    import bitnet_lab

    source = args.model
    if not source:
        from bitnet_lab.tools.default_model import default_model_path

        source = str(default_model_path())
        _err(f"no -m given: using the default model {source}")
    hub = hub_options(args)
    threads = clamp_threads(args.threads)
    if args.ctx_size is not None and args.ctx_size < 0:
        raise ConfigError(f"-c/--ctx-size must be >= 0, got {args.ctx_size}")
    backend = args.backend
    t0 = time.perf_counter()
    options = i2s_layout_options(args.i2s_layout, [backend])
    model = bitnet_lab.load(source, backend=backend, threads=threads, mmap=args.mmap, **options, **hub,
                            **tl_tiling_options(args), **numerics_options(args))
    # Build the backend and the tokenizer now, so load time includes them, and side by side: the
    # backend's build is mostly C without the GIL (re-ordering, copying the lm_head) and the
    # tokenizer's mostly Python (noticeable for a 128k vocabulary, docs/benchmarks.md#load-and-start-up),
    # so they share two cores.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:
        tokenizer = pool.submit(lambda: model.tokenizer)
        model.runner
        tokenizer.result()
    load_ms = (time.perf_counter() - t0) * 1e3
    train_ctx = model.config.context
    # default: the training context, capped so that a 4096-token model's cache stays small
    n_ctx = min(train_ctx, 2048) if args.ctx_size is None else (args.ctx_size or train_ctx)
    if n_ctx > train_ctx:
        _err(f"warning: -c {n_ctx} is longer than the model's training context ({train_ctx})")
    _err(f"model: {model!r}")
    _err(f"backend: {backend}, context {n_ctx} tokens")
    return model, n_ctx, load_ms


def check_draft_flags(args: argparse.Namespace) -> None:
    """The speculative-decoding flags, checked before anything is loaded (one line each)."""
    if args.lookup is not None and args.model_draft:
        raise ConfigError("give --lookup or -md/--model-draft, not both")
    if args.lookup is not None and args.lookup < 1:
        raise ConfigError(f"--lookup takes an n-gram size >= 1, got {args.lookup}")
    if args.lookup is None and not args.model_draft:
        if args.draft_max is not None or args.draft_min is not None:
            raise ConfigError("--draft-max/--draft-min set the draft length of --lookup or -md/--model-draft; "
                              "give one of them")
        return
    k_max = DRAFT_MAX_DEFAULT if args.draft_max is None else args.draft_max
    k_min = 1 if args.draft_min is None else args.draft_min
    if k_max < 1:
        raise ConfigError(f"--draft-max must be >= 1, got {k_max}")
    if k_min < 0 or k_min > k_max:
        raise ConfigError(f"--draft-min must be in 0..--draft-max ({k_max}), got {k_min}")


def _speculation(args: argparse.Namespace, model: Any):
    """The Speculation of --lookup / -md (None without them); a draft model is loaded with the
    target's backend and threads and must share its vocabulary."""
    if args.lookup is None and not args.model_draft:
        return None
    import bitnet_lab
    from bitnet_lab.generate.speculative import Speculation, make_drafter

    spec = f"lookup:{args.lookup}" if args.lookup is not None else args.model_draft
    t0 = time.perf_counter()
    drafter = make_drafter(spec, model, load=lambda path: bitnet_lab.load(
        path, backend=args.backend, threads=clamp_threads(args.threads), mmap=args.mmap))
    k_max = DRAFT_MAX_DEFAULT if args.draft_max is None else args.draft_max
    k_min = max(1, args.draft_min or 1)
    took = (time.perf_counter() - t0) * 1e3
    _err(f"speculative decoding: {drafter.name}, {k_min}..{k_max} drafted tokens per pass"
         + (f" (draft loaded in {took:.0f} ms)" if args.model_draft else ""))
    return Speculation(drafter, draft_max=k_max, draft_min=k_min)


def print_draft_stats(done: Any, file: Any = None) -> None:
    """llama.cpp's speculative summary: drafted, accepted, acceptance, tokens per pass."""
    if not done.n_pass or not done.drafter:
        return
    print(f"{PROG}: draft {done.drafter}: {done.n_draft} drafted, {done.n_accept} accepted "
          f"({100.0 * done.acceptance_rate if done.n_draft else 0.0:.1f} %), {done.n_eval} tokens in "
          f"{done.n_pass} passes ({done.tokens_per_pass:.2f} per pass)", file=file or sys.stderr, flush=True)


def _sampler(args: argparse.Namespace):
    from bitnet_lab.generate.sampling import make_sampler

    return make_sampler(
        temp=args.temp, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
        repeat_penalty=args.repeat_penalty, repeat_last_n=args.repeat_last_n,
        frequency_penalty=args.frequency_penalty, presence_penalty=args.presence_penalty,
    )


def _seed(args: argparse.Namespace) -> int:
    from bitnet_lab.generate.loop import resolve_seed

    return resolve_seed(None if args.seed < 0 else args.seed)


def print_timings(done: Any, load_ms: float | None = None, file: Any = None) -> None:
    """llama.cpp's end-of-run performance lines (`llama_perf_context_print`), in our words."""
    file = file or sys.stderr

    def line(label: str, text: str) -> None:
        print(f"{PROG} timings: {label:<12}= {text}", file=file)

    def per(ms: float, n: int, unit: str) -> str:
        if n <= 0:
            return f"{ms:10.2f} ms / {n:5d} {unit}"
        return (f"{ms:10.2f} ms / {n:5d} {unit} ({ms / n:8.2f} ms per token, "
                f"{1000.0 * n / ms if ms > 0 else float('inf'):8.2f} tokens per second)")

    if load_ms is not None:
        line("load", f"{load_ms:10.2f} ms")
    line("prompt eval", per(done.prompt_ms, done.n_prompt, "tokens"))
    line("eval", per(done.eval_ms, done.n_eval, "runs  "))
    line("sampling", per(done.sample_ms, done.n_generated, "tokens"))
    line("total", f"{done.total_ms + (load_ms or 0.0):10.2f} ms / {done.n_prompt + done.n_generated:5d} tokens")
    print(f"{PROG}: {stop_reason(done)}", file=file, flush=True)


def stop_reason(done: Any) -> str:
    """Why generation ended, in words (the DoneEvent's reason code is for programs)."""
    n = done.n_generated
    why = {
        "eos": f"stopped at an end-of-generation token after {n} tokens",
        "stop_string": f"stopped at a stop string after {n} tokens",
        "length": f"stopped after {n} tokens (-n {n})",
        "context": f"stopped after {n} tokens: the context is full (-c, or --context-shift to go on)",
        "interrupted": f"interrupted (Ctrl-C) after {n} tokens",
    }
    return why.get(done.reason, f"stopped ({done.reason}) after {n} tokens")


class _Interrupt:
    """Ctrl-C while generating: the first press asks the loop to stop after the current token,
    a second one raises KeyboardInterrupt. Installed only around generation, main thread only."""

    def __init__(self) -> None:
        self.flag = False

    def __call__(self) -> bool:
        return self.flag

    @contextlib.contextmanager
    def armed(self) -> Iterator["_Interrupt"]:
        self.flag = False
        if threading.current_thread() is not threading.main_thread():
            yield self
            return

        def handler(signum, frame):
            if self.flag:
                raise KeyboardInterrupt
            self.flag = True

        old = signal.signal(signal.SIGINT, handler)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, old)


def _stream_to_stdout(events: Iterator[Any]) -> Any:
    """Write each text delta to stdout (flushed per token); return the DoneEvent."""
    from bitnet_lab.generate.loop import DoneEvent

    done = None
    out = sys.stdout
    for ev in events:
        if isinstance(ev, DoneEvent):
            done = ev
        elif ev.text:
            out.write(ev.text)
            out.flush()
    return done


# =============================================================================================
# run
# =============================================================================================


def _read_prompt(args: argparse.Namespace) -> str:
    if args.prompt is not None and args.file:
        args._parser.error("give the prompt with -p or -f, not both")
    if args.file:
        try:
            data = Path(args.file).read_bytes()
        except OSError as e:
            raise ConfigError(f"cannot read the prompt file {args.file}: {e.strerror or e}") from e
        return decode_utf8(data, f"the prompt file {args.file}")
    if args.prompt is None:
        args._parser.error("a prompt is required: -p TEXT or -f FILE (or -cnv to chat)")
    prompt = decode_utf8(args.prompt, "the prompt (-p)")
    return _process_escapes(prompt) if args.escape else prompt


def decode_utf8(data: bytes | str, what: str) -> str:
    """``data`` as text, or a ConfigError naming the first byte that is not UTF-8 and its offset.

    ``str`` input is text Python decoded with ``surrogateescape`` (sys.argv, stdin): a byte that
    was not UTF-8 is a lone surrogate there, and is found the same way as in raw bytes."""
    if isinstance(data, str):
        try:
            data.encode("utf-8")
            return data
        except UnicodeEncodeError:
            data = data.encode("utf-8", "surrogateescape")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{what} is not UTF-8 text: byte 0x{data[e.start]:02x} at offset {e.start} "
                          f"({e.reason})") from None


def run_command(args: argparse.Namespace) -> int:
    if args.conversation:
        system = args.system_prompt
        if system is None and (args.prompt is not None or args.file):
            system = _read_prompt(args)   # llama.cpp: in conversation mode -p is the system prompt
        return _chat_repl(args, system)
    if args.parallel is not None:
        return _run_parallel(args)
    prompt = _read_prompt(args)
    n_predict = RUN_N_DEFAULT if args.n_predict is None else args.n_predict
    if n_predict < -1:
        raise ConfigError(f"-n/--n-predict must be >= -1, got {n_predict}")
    from bitnet_lab.generate.loop import generate

    check_draft_flags(args)
    model, n_ctx, load_ms = _load(args)
    spec = _speculation(args, model)
    sampler, seed = _sampler(args), _seed(args)
    _err(f"sampler: {sampler.name}; seed {seed}")
    stop_ids = () if args.ignore_eos else None
    interrupt = _Interrupt()
    shifts: list[int] = []
    events = generate(
        model, prompt, n=n_predict, sampler=sampler, seed=seed, stop=args.stop, n_ctx=n_ctx,
        parse_special=True, stop_ids=stop_ids, should_stop=interrupt,
        ctx_shift=bool(args.ctx_shift), n_keep=0 if args.keep is None else args.keep,
        on_shift=lambda tokens, n_discarded: shifts.append(n_discarded), draft=spec,
    )
    if args.display_prompt:   # llama-cli echoes the prompt, then the continuation
        sys.stdout.write(prompt)
        sys.stdout.flush()
    with interrupt.armed():
        done = _stream_to_stdout(events)
    print(file=sys.stderr)
    print_timings(done, load_ms)
    print_draft_stats(done)
    if shifts:
        _err(f"the context was full {len(shifts)} time(s): shifted, dropping {sum(shifts)} tokens in all")
    return 130 if done.reason == "interrupted" else 0


def _run_parallel(args: argparse.Namespace) -> int:
    """``run -np N -f FILE``: every line of FILE a prompt, N sequences decoded together
    (bitnet_lab.generate.batch); each output equals ``run`` on that prompt alone (same seed)."""
    if args.parallel < 1:
        raise ConfigError(f"-np/--parallel must be >= 1, got {args.parallel}")
    if not args.file or args.prompt is not None:
        raise ConfigError("-np reads its prompts from a file, one per line: give -f FILE (and no -p)")
    if args.ctx_shift:
        raise ConfigError("-np has no context shift: a sequence whose context is full stops")
    prompts = [line for line in _read_prompt(args).splitlines() if line.strip()]
    if not prompts:
        raise ConfigError(f"the prompt file {args.file} has no prompt (one per line)")
    n_predict = RUN_N_DEFAULT if args.n_predict is None else args.n_predict
    if n_predict < -1:
        raise ConfigError(f"-n/--n-predict must be >= -1, got {n_predict}")
    from bitnet_lab.generate.batch import generate_batch

    model, n_ctx, load_ms = _load(args)
    sampler, seed = _sampler(args), _seed(args)
    _err(f"sampler: {sampler.name}; seed {seed}; {len(prompts)} prompts, {args.parallel} in parallel")
    t0 = time.perf_counter()
    results = generate_batch(model, prompts, n=n_predict, sampler=sampler, seed=seed, stop=args.stop, n_ctx=n_ctx,
                             n_slots=args.parallel, parse_special=True, ignore_eos=args.ignore_eos)
    wall = time.perf_counter() - t0
    for prompt, res in zip(prompts, results):   # llama-parallel's Input / Response
        if args.display_prompt:
            sys.stdout.write(f"Input:    {prompt}\nResponse: ")
        sys.stdout.write(res.text + "\n\n")
    sys.stdout.flush()
    n_gen = sum(len(r.token_ids) for r in results)
    _err(f"{len(results)} sequences, {sum(r.n_prompt for r in results)} prompt + {n_gen} generated tokens in "
         f"{wall:.2f} s: {n_gen / wall if wall > 0 else float('nan'):.2f} generated tokens/s in all"
         + (f" (load {load_ms:.0f} ms)" if load_ms is not None else ""))
    return 0


# =============================================================================================
# chat
# =============================================================================================


def chat_command(args: argparse.Namespace) -> int:
    return _chat_repl(args, args.system_prompt)


def _history_file() -> Path:
    from bitnet_lab import paths

    return paths.CACHE_DIR / "chat_history"


def _setup_readline() -> Any:
    """Line editing and history (kept in the bitnet_lab cache folder) when readline exists."""
    try:
        import readline
    except ImportError:
        return None
    hist = _history_file()
    with contextlib.suppress(OSError):
        readline.read_history_file(hist)
    readline.set_history_length(1000)
    return readline


def _save_history(readline: Any) -> None:
    if readline is None:
        return
    hist = _history_file()
    with contextlib.suppress(OSError):
        hist.parent.mkdir(parents=True, exist_ok=True)
        readline.write_history_file(hist)


def _read_line(interactive: bool) -> str | None:
    """One user line; None at end of input. KeyboardInterrupt propagates (Ctrl-C = quit); a line
    that is not UTF-8 is a ConfigError naming the byte (the chat goes on)."""
    what = "the chat input"
    if interactive:
        try:
            return decode_utf8(input("> "), what)
        except EOFError:      # Ctrl-D: end the prompt's line, as a shell does
            sys.stdout.write("\n")
            sys.stdout.flush()
            return None
        except UnicodeDecodeError as e:
            raise ConfigError(f"{what} is not UTF-8 text: byte 0x{e.object[e.start]:02x} at offset {e.start} "
                              f"({e.reason})") from None
    raw = getattr(sys.stdin, "buffer", None)
    if raw is not None:       # a pipe or a file: the bytes themselves, decoded here
        data = raw.readline()
        return None if data == b"" else decode_utf8(data.rstrip(b"\n"), what)
    line = sys.stdin.readline()
    return None if line == "" else decode_utf8(line.rstrip("\n"), what)


def _chat_repl(args: argparse.Namespace, system: str | None) -> int:
    if args.n_predict is not None and args.n_predict < -1:
        raise ConfigError(f"-n/--n-predict must be >= -1, got {args.n_predict}")
    if getattr(args, "ignore_eos", False):   # run -cnv
        raise ConfigError("--ignore-eos makes no sense in a chat: answers would never end")
    from bitnet_lab.generate.chat import ChatSession

    check_draft_flags(args)
    model, n_ctx, load_ms = _load(args)
    spec = _speculation(args, model)
    sampler, seed = _sampler(args), _seed(args)
    session = ChatSession(model, system=system, chat_format=args.chat_template, n_ctx=n_ctx,
                          sampler=sampler, seed=seed, ctx_shift=args.ctx_shift is not False, n_keep=args.keep,
                          draft=spec)
    _err(f"sampler: {sampler.name}; seed {seed}")
    why = f" ({session.format.why})" if session.format.why else ""
    _err(f"chat format: {session.format.name}{why}")
    answer = "until the end-of-turn token" if args.n_predict == -1 else \
        f"up to {session.default_n if args.n_predict is None else args.n_predict} tokens (-n)"
    shift = (f"when full it shifts: the first {session.n_keep} tokens stay, the oldest half of the rest goes "
             f"(--keep, --no-context-shift)" if session.ctx_shift else "no context shift: a full context ends the chat")
    _err(f"context {session.n_ctx} tokens, {shift}; answers {answer}")
    _err("/reset forgets the conversation, /exit or Ctrl-D quits, Ctrl-C stops an answer")
    interactive = sys.stdin.isatty()
    rl = _setup_readline() if interactive else None
    interrupt = _Interrupt()
    try:
        while True:
            try:
                line = _read_line(interactive)
            except KeyboardInterrupt:     # Ctrl-C at the prompt: leave cleanly
                print(file=sys.stderr)
                break
            except ConfigError as e:      # a line that is not UTF-8: say which byte, keep chatting
                _err(f"error: {e}")
                continue
            if line is None:
                break
            cmd = line.strip()
            if not cmd:
                continue
            if cmd in ("/exit", "/quit"):
                break
            if cmd == "/reset":
                session.reset()
                _err("conversation reset")
                continue
            if cmd == "/help":
                for k, v in CHAT_COMMANDS.items():
                    _err(f"  {k:<7} {v}")
                continue
            try:
                events = session.send(line, n=args.n_predict, stop=args.stop, should_stop=interrupt)
            except ConfigError as e:      # e.g. the turn does not fit: say so, keep chatting
                _err(f"error: {e}")
                if session.n_past and not session.ctx_shift:
                    _err("type /reset to start a new conversation")
                continue
            shifts = session.n_shifts
            with interrupt.armed():
                done = _stream_to_stdout(events)
            sys.stdout.write("\n")
            sys.stdout.flush()
            shifted = session.n_shifts - shifts
            note = f", context shifted {shifted}x" if shifted else ""
            if done.n_draft:
                note += f", {done.n_accept}/{done.n_draft} drafts accepted"
            _err(f"[{done.reason}: prompt {done.n_prompt} tokens {done.prompt_ms:.0f} ms, "
                 f"{done.n_generated} tokens {done.eval_tokens_per_s:.1f} tokens/s, "
                 f"{session.n_past}/{session.n_ctx} in context{note}]")
    finally:
        _save_history(rl)
    return 0
