"""`bitnet-lab serve`: the model behind an OpenAI-compatible HTTP API (llama-server's flags).

    bitnet-lab serve [-m MODEL] [--host 127.0.0.1] [--port 8080] [--api-key KEY] [-t N]
                     [-np/--parallel 4] [-c N] [--max-queue 64] [-a/--alias NAME]
                     [--chat-template NAME] [--max-body-bytes N] [--prefill-chunk N]

One process, one model: ``--parallel`` sequences decode together (continuous batching,
`bitnet_lab.serve.engine`), each with a KV cache of ``-c`` tokens; at most ``--max-queue`` more
requests wait for a slot, beyond that the server answers 503 with Retry-After. It binds
127.0.0.1 unless ``--host`` says otherwise; with ``--api-key`` every route but ``/health`` needs
``Authorization: Bearer KEY``. SIGTERM or Ctrl-C: the server stops accepting, lets requests in
flight finish for up to ``--shutdown-timeout`` seconds, fails what is left with a clean error
and releases the port.
"""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

from bitnet_lab.cli.run import _add_model_flags, _load
from bitnet_lab.errors import ConfigError

PROG = "bitnet-lab"
DEFAULT_PORT = 8080          # llama-server's
DEFAULT_PARALLEL = 4
DEFAULT_MAX_QUEUE = 64
DEFAULT_SHUTDOWN_S = 30.0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("serve", help="serve the model over an OpenAI-compatible HTTP API (continuous batching)",
                       description=__doc__.split("\n\n")[0])
    _add_model_flags(p)
    g = p.add_argument_group("server (llama-server's flags)")
    g.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 exposes it)")
    g.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 = any free)")
    g.add_argument("--api-key", default=None, metavar="KEY",
                   help="require Authorization: Bearer KEY on every route but /health")
    g.add_argument("-np", "--parallel", type=int, default=DEFAULT_PARALLEL, metavar="N",
                   help=f"sequences decoded together (slots; default {DEFAULT_PARALLEL}); -c is per slot")
    g.add_argument("--max-queue", type=int, default=DEFAULT_MAX_QUEUE, metavar="N",
                   help=f"requests that may wait for a slot; more get 503 + Retry-After (default {DEFAULT_MAX_QUEUE})")
    g.add_argument("-a", "--alias", default=None, metavar="NAME",
                   help="the model's name in the API (default: the file's name)")
    g.add_argument("--chat-template", default=None, metavar="NAME",
                   help="chat format: bitnet, llama3, falcon3, chatml, template (the file's) or a Jinja source "
                        "(default: chosen from the model, as bitnet-lab chat does)")
    g.add_argument("--max-body-bytes", type=int, default=None, metavar="N",
                   help="largest request body accepted (default 1 MiB); larger ones get 413")
    g.add_argument("--prefill-chunk", type=int, default=None, metavar="N",
                   help="prompt tokens a request feeds per step, so long prompts share steps with decoding "
                        "(default 64)")
    g.add_argument("--shutdown-timeout", type=float, default=DEFAULT_SHUTDOWN_S, metavar="S",
                   help=f"on SIGTERM, seconds in-flight requests may take to finish (default {DEFAULT_SHUTDOWN_S:g})")
    p.set_defaults(func=serve_command)


def _err(msg: str) -> None:
    print(f"{PROG}: {msg}", file=sys.stderr, flush=True)


def _server_module() -> Any:
    """The serve app's module, or one ConfigError line naming what to install."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise ConfigError(f"bitnet-lab serve needs {e.name}: pip install 'fastapi>=0.110' 'uvicorn>=0.29' "
                          f"(they come with pip install bitnet-lab)") from None
    from bitnet_lab.serve import app

    return app


def check_args(args: argparse.Namespace) -> None:
    for flag, value, low in (("-np/--parallel", args.parallel, 1), ("--max-queue", args.max_queue, 0),
                             ("--port", args.port, 0)):
        if value < low:
            raise ConfigError(f"{flag} must be >= {low}, got {value}")
    if args.port > 65535:
        raise ConfigError(f"--port must be <= 65535, got {args.port}")
    if args.max_body_bytes is not None and args.max_body_bytes < 1:
        raise ConfigError(f"--max-body-bytes must be >= 1, got {args.max_body_bytes}")
    if args.prefill_chunk is not None and args.prefill_chunk < 1:
        raise ConfigError(f"--prefill-chunk must be >= 1, got {args.prefill_chunk}")
    if args.shutdown_timeout < 0:
        raise ConfigError(f"--shutdown-timeout must be >= 0, got {args.shutdown_timeout}")
    if args.api_key is not None and not args.api_key.strip():
        raise ConfigError("--api-key is empty")


def serve_command(args: argparse.Namespace) -> int:
    check_args(args)
    serve_app = _server_module()
    model, n_ctx, load_ms = _load(args)
    settings = serve_app.ServeSettings(
        n_slots=args.parallel, n_ctx=n_ctx, max_queue=args.max_queue, api_key=args.api_key,
        model_name=args.alias or model.source.stem, chat_template=args.chat_template,
        max_body_bytes=args.max_body_bytes or serve_app.DEFAULT_MAX_BODY_BYTES, prefill_chunk=args.prefill_chunk)
    app = serve_app.create_app(model, settings)
    _err(f"chat format: {app.state.chat_format.name}; {args.parallel} slots x {n_ctx} tokens, "
         f"queue {args.max_queue}; loaded in {load_ms:.0f} ms")
    if args.host not in ("127.0.0.1", "localhost", "::1") and args.api_key is None:
        _err(f"warning: listening on {args.host} without --api-key: anyone who can reach it can use it")
    sock = _bind(args.host, args.port)
    server = serve_app.graceful_server(app, shutdown_timeout=args.shutdown_timeout)
    host = f"[{args.host}]" if ":" in args.host else args.host
    _err(f"serving {settings.model_name} at http://{host}:{sock.getsockname()[1]}/v1 (OpenAI API); "
         f"/health, /metrics")
    # uvicorn re-raises the signal that stopped it once it is done; SIGTERM then ends the
    # process through this handler (exit 0, "server stopped") rather than the default (143)
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        server.run(sockets=[sock])
    finally:
        signal.signal(signal.SIGTERM, previous)
        sock.close()
    _err("server stopped")
    return 0


def _bind(host: str, port: int) -> Any:
    """A listening socket on host:port, or one ConfigError line (port in use, unknown host)."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise ConfigError(f"--host {host}: {e.strerror}") from None
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as e:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock
