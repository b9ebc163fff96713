"""The HTTP API: FastAPI routes in front of the scheduler (`bitnet_lab.serve.engine`).

Routes (OpenAI's and llama-server's shapes)::

    POST /v1/completions        text completion; streaming (server-sent events, ``[DONE]``) or not;
                                ``echo`` + ``logprobs``: the prompt's log-probs too
    POST /v1/chat/completions   the conversation in the model family's chat format
    GET  /v1/models             the one model
    GET  /health                liveness (no API key needed)
    GET  /metrics               Prometheus text
    POST /tokenize, /detokenize llama-server's

Every error is OpenAI's error object ``{"error": {"message", "type", "param", "code"}}``: a
malformed body or a bad field is a 400 whose ``param`` names the field, a missing or wrong API
key a 401, an oversize body a 413, a full queue a 503 with ``Retry-After``; an unexpected
exception is a 500 with the same shape, never a traceback and never a dead worker. A client that
disconnects (mid-stream or while waiting) cancels its generations: their slots are free at the
next step.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Optional

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from bitnet_lab.errors import ConfigError
from bitnet_lab.generate.chat import chat_format_for
from bitnet_lab.generate.sampling import make_sampler
from bitnet_lab.serve.engine import Failed, Finished, Job, QueueFull, Scores, ServeEngine, Token
from bitnet_lab.serve.metrics import CONTENT_TYPE, Metrics
from bitnet_lab.serve.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    DetokenizeRequest,
    TokenizeRequest,
    param_of,
)

__all__ = ["create_app", "ServeSettings", "DEFAULT_MAX_BODY_BYTES", "graceful_server"]

DEFAULT_MAX_BODY_BYTES = 1 << 20   # a request body larger than this is refused (413)
RETRY_AFTER_S = 1                  # what a 503 (queue full) tells the client to wait
DISCONNECT_POLL_S = 0.25           # how often a non-streaming request checks that its client is there
SHUTDOWN_GRACE = 0.8              # the share of the shutdown timeout in-flight requests get to finish
FINISH_REASONS = {"eos": "stop", "stop_string": "stop", "length": "length", "context": "length"}


@dataclass
class ServeSettings:
    """What `create_app` needs besides the model (the CLI's flags)."""

    n_slots: int = 4                   # --parallel
    n_ctx: int = 2048                  # -c: context per slot
    max_queue: int = 64                # requests waiting for a slot before 503
    api_key: Optional[str] = None      # --api-key
    model_name: str = "bitnet-lab"     # --alias
    chat_template: Optional[str] = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    prefill_chunk: Optional[int] = None


class APIError(Exception):
    """An error answered as OpenAI's error object."""

    def __init__(self, status: int, message: str, *, param: Optional[str] = None, code: Optional[str] = None,
                 headers: Optional[dict] = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.headers = status, message, param, code, headers


ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
               405: "invalid_request_error", 413: "invalid_request_error", 503: "unavailable_error"}


def error_body(status: int, message: str, param: Optional[str] = None, code: Optional[str] = None) -> dict:
    return {"error": {"message": message, "type": ERROR_TYPES.get(status, "server_error"),
                      "param": param, "code": code}}


def error_response(e: APIError) -> JSONResponse:
    return JSONResponse(error_body(e.status, e.message, e.param, e.code), status_code=e.status, headers=e.headers)


# ---- ASGI middleware: the body-size limit and the request counter -----------------------------


class _BodyTooLarge(StarletteHTTPException):
    def __init__(self, limit: int):
        super().__init__(413, f"the request body is larger than the server's limit of {limit} bytes")


class BodyLimit:
    """Refuse a body over ``max_bytes`` (413): at once by its Content-Length, or while it streams in."""

    def __init__(self, app: Any, max_bytes: int):
        self.app, self.max_bytes = app, int(max_bytes)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            resp = JSONResponse(error_body(413, _BodyTooLarge(self.max_bytes).detail, None, "request_too_large"),
                                status_code=413, headers={"Connection": "close"})
            return await resp(scope, receive, send)
        seen = 0

        async def limited() -> dict:
            nonlocal seen
            msg = await receive()
            if msg.get("type") == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_bytes:
                    raise _BodyTooLarge(self.max_bytes)
            return msg

        await self.app(scope, limited, send)


class CountRequests:
    """Count every answered request by route and status for ``/metrics`` (paths that are no
    route count as "other", so random URLs cannot grow the label set)."""

    def __init__(self, app: Any, metrics: Metrics, routes: frozenset):
        self.app, self.metrics, self.routes = app, metrics, routes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def counted(msg: dict) -> None:
            if msg.get("type") == "http.response.start":
                path = scope.get("path", "")
                self.metrics.count_request(path if path in self.routes else "other", msg.get("status", 0))
            await send(msg)

        await self.app(scope, receive, counted)


# ---- one request's choices, as their events arrive ---------------------------------------------


@dataclass
class _Choice:
    """What one choice has received: the prompt's scores (echo), its tokens, its end."""

    index: int
    prompt_index: int = 0
    prompt_text: str = ""
    scores: Optional[Scores] = None
    tokens: list = field(default_factory=list)   # Token events that are not end-of-generation
    parts: list = field(default_factory=list)
    finished: Optional[Finished] = None
    failed: Optional[Failed] = None
    n_generated: int = 0

    @property
    def done(self) -> bool:
        return self.finished is not None or self.failed is not None

    def add(self, ev: Any) -> None:
        if isinstance(ev, Scores):
            self.scores = ev
        elif isinstance(ev, Token):
            self.parts.append(ev.text)
            if not ev.eog:
                self.tokens.append(ev)
        elif isinstance(ev, Finished):
            self.finished = ev
            self.n_generated = ev.n_generated
        elif isinstance(ev, Failed):
            self.failed = ev

    @property
    def finish_reason(self) -> Optional[str]:
        return FINISH_REASONS.get(self.finished.reason, "stop") if self.finished else None


class _Run:
    """The jobs of one request, their events on this loop, and their cancellation."""

    def __init__(self, engine: ServeEngine, request: Request):
        self.engine, self.request = engine, request
        self.queue: asyncio.Queue = asyncio.Queue()
        self.loop = asyncio.get_running_loop()
        self.jobs: list[Job] = []

    def sink(self, index: int):
        def put(ev: Any) -> None:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, (index, ev))
        return put

    def submit(self, jobs: list[Job]) -> None:
        if len(jobs) > self.engine.capacity:
            raise APIError(400, f"{len(jobs)} generations (prompts x n) can never fit in the server's "
                                f"{self.engine.n_slots} slots and {self.engine.max_queue} queue places",
                           param="n")
        self.jobs = jobs
        try:
            self.engine.submit(jobs)
        except QueueFull as e:
            raise APIError(503, str(e), code="queue_full", headers={"Retry-After": str(RETRY_AFTER_S)}) from None

    def cancel(self) -> None:
        for job in self.jobs:
            self.engine.cancel(job)

    async def events(self, poll_disconnect: bool) -> AsyncIterator[tuple[int, Any]]:
        """(choice index, event) until every job has finished or failed. ``poll_disconnect``: check
        every DISCONNECT_POLL_S that the client is still there (a streaming response learns it from
        its failed writes instead), and stop, cancelling the jobs, when it is not."""
        left = len(self.jobs)
        next_check = self.loop.time() + DISCONNECT_POLL_S
        while left:
            timeout = max(0.0, next_check - self.loop.time()) if poll_disconnect else None
            try:
                index, ev = await asyncio.wait_for(self.queue.get(), timeout)
            except asyncio.TimeoutError:
                pass
            else:
                if isinstance(ev, (Finished, Failed)):
                    left -= 1
                yield index, ev
            if poll_disconnect and self.loop.time() >= next_check:
                if await self.request.is_disconnected():
                    self.cancel()
                    return
                next_check = self.loop.time() + DISCONNECT_POLL_S


# ---- the app ---------------------------------------------------------------------------------


def create_app(model: Any, settings: ServeSettings) -> FastAPI:
    """The FastAPI app over a loaded ``model``; the scheduler thread starts with the app's
    lifespan and stops (failing what is left with a clean error) when the server shuts down."""
    tokenizer, config = model.tokenizer, model.config
    chat_format = chat_format_for(tokenizer, config, settings.chat_template)
    metrics = Metrics()
    options = {} if settings.prefill_chunk is None else {"prefill_chunk": settings.prefill_chunk}
    engine = ServeEngine(model, n_slots=settings.n_slots, n_ctx=settings.n_ctx, max_queue=settings.max_queue,
                         extra_stop_ids=frozenset(chat_format.stop_ids), metrics=metrics, **options)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        engine.start()
        try:
            yield
        finally:
            engine.stop()

    app = FastAPI(title="bitnet-lab serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine, app.state.metrics, app.state.settings = engine, metrics, settings
    app.state.chat_format = chat_format
    created = int(time.time())

    # ---- errors as OpenAI error objects --------------------------------------------------------
    @app.exception_handler(APIError)
    async def _api_error(request: Request, e: APIError) -> JSONResponse:
        return error_response(e)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        errors = e.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": ""}
        if first.get("type") == "json_invalid":
            return error_response(APIError(400, f"the body is not valid JSON: {first.get('ctx', {}).get('error', '')}"
                                           .rstrip(": "), code="invalid_json"))
        param = param_of(tuple(first.get("loc", ())))
        msg = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
        return error_response(APIError(400, f"{param}: {msg}" if param else msg, param=param))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException) -> JSONResponse:
        code = "request_too_large" if e.status_code == 413 else None
        return error_response(APIError(e.status_code, str(e.detail), code=code, headers=getattr(e, "headers", None)))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, e: Exception) -> JSONResponse:
        return error_response(APIError(500, f"internal error: {type(e).__name__}: {e}"))

    # ---- the API key -------------------------------------------------------------------------
    def require_key(request: Request) -> None:
        if settings.api_key is None:
            return
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), settings.api_key.encode()):
            raise APIError(401, "invalid or missing API key (send Authorization: Bearer KEY)",
                           code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})

    guarded = [Depends(require_key)]

    # ---- routes ------------------------------------------------------------------------------
    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "slots": settings.n_slots, "requests": engine.load}

    @app.get("/v1/models", dependencies=guarded)
    async def models() -> dict:
        return {"object": "list", "data": [{"id": settings.model_name, "object": "model", "created": created,
                                            "owned_by": "bitnet-lab",
                                            "meta": {"n_ctx": settings.n_ctx, "n_slots": settings.n_slots,
                                                     "vocab": int(config.vocab), "arch": config.arch}}]}

    @app.get("/metrics", dependencies=guarded)
    async def metrics_route() -> Response:
        return PlainTextResponse(metrics.render(), media_type=CONTENT_TYPE)

    @app.post("/tokenize", dependencies=guarded)
    async def tokenize(body: TokenizeRequest) -> dict:
        ids = [int(t) for t in tokenizer.encode(body.content, add_bos=body.add_special, parse_special=True)]
        if body.with_pieces:
            return {"tokens": [{"id": t, "piece": tokenizer.token_to_piece(t)} for t in ids]}
        return {"tokens": ids}

    @app.post("/detokenize", dependencies=guarded)
    async def detokenize(body: DetokenizeRequest) -> dict:
        _check_ids(body.tokens, int(config.vocab), "tokens")
        return {"content": tokenizer.decode(body.tokens)}

    def sampler_of(body: Any):
        try:
            return make_sampler(temp=body.temperature, top_k=body.top_k, top_p=body.top_p, min_p=body.min_p,
                                repeat_penalty=body.repeat_penalty, repeat_last_n=body.repeat_last_n,
                                frequency_penalty=body.frequency_penalty, presence_penalty=body.presence_penalty)
        except ConfigError as e:
            raise APIError(400, str(e)) from None

    def check(ids: list, max_tokens: int, param: str) -> None:
        try:
            engine.check_prompt(ids, max_tokens)
        except ConfigError as e:
            raise APIError(400, str(e), param=param, code="context_length_exceeded"
                           if "context" in str(e) else None) from None

    @app.post("/v1/completions", dependencies=guarded)
    async def completions(body: CompletionRequest, request: Request) -> Response:
        prompts = []
        for i, p in enumerate(body.prompts()):
            if isinstance(p, str):
                ids = [int(t) for t in tokenizer.encode(p, parse_special=True)]
                text = p
            else:
                _check_ids(p, int(config.vocab), "prompt")
                ids, text = list(p), tokenizer.decode(p)
            check(ids, body.max_tokens, "prompt")
            prompts.append((ids, text))
        run = _Run(engine, request)
        sampler, top = sampler_of(body), int(body.logprobs or 0)
        jobs, choices = [], []
        for p_index, (ids, text) in enumerate(prompts):
            for j in range(body.n):
                index = p_index * body.n + j
                jobs.append(Job(ids, sampler, body.max_tokens, run.sink(index),
                                seed=None if body.seed is None else body.seed + j, stop=tuple(body.stops),
                                top_logprobs=top, score_prompt=body.echo and body.logprobs is not None))
                choices.append(_Choice(index, p_index, prompt_text=text if body.echo else ""))
        run.submit(jobs)
        head = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
                "model": settings.model_name}
        fmt = _CompletionFormat(tokenizer, body.logprobs is not None, body.echo)
        if body.stream:
            return _sse(run, choices, head, fmt, body.include_usage)
        return await _whole(run, choices, head, fmt)

    @app.post("/v1/chat/completions", dependencies=guarded)
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        try:
            ids = chat_format.encode([m.as_dict() for m in body.messages], add_generation_prompt=True)
        except ConfigError as e:
            raise APIError(400, str(e), param="messages") from None
        limit = body.answer_limit
        max_tokens = -1 if limit is None else int(limit)
        check(ids, max_tokens, "messages")
        run = _Run(engine, request)
        sampler, top = sampler_of(body), int(body.top_logprobs or 0)
        stops = tuple(body.stops) + tuple(chat_format.stop_strings)
        jobs = [Job(ids, sampler, max_tokens, run.sink(j), seed=None if body.seed is None else body.seed + j,
                    stop=stops, top_logprobs=top) for j in range(body.n)]
        choices = [_Choice(j) for j in range(body.n)]
        run.submit(jobs)
        head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
                "model": settings.model_name}
        fmt = _ChatFormat(tokenizer, body.logprobs)
        if body.stream:
            return _sse(run, choices, head, fmt, body.include_usage)
        return await _whole(run, choices, head, fmt)

    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(CountRequests, metrics=metrics,
                       routes=frozenset(r.path for r in app.routes if hasattr(r, "path")))
    return app


def graceful_server(app: FastAPI, *, shutdown_timeout: float, log_level: str = "warning") -> Any:
    """A uvicorn server for ``app`` whose shutdown (SIGTERM, Ctrl-C) first tells the scheduler to
    drain: no new request is accepted, those in flight have most of ``shutdown_timeout`` seconds
    to finish and then end with a clean 503 error object — before uvicorn's own deadline would cut
    their connections."""
    import uvicorn

    class Server(uvicorn.Server):
        async def shutdown(self, sockets: Any = None) -> None:
            app.state.engine.drain(SHUTDOWN_GRACE * shutdown_timeout)
            await super().shutdown(sockets)

    return Server(uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=shutdown_timeout))


def _check_ids(ids: list, vocab: int, param: str) -> None:
    bad = [t for t in ids if not 0 <= int(t) < vocab]
    if bad:
        raise APIError(400, f"token id {bad[0]} is outside the vocabulary [0, {vocab})", param=param)


def _usage(choices: list[_Choice]) -> dict:
    # each prompt counted once, however many choices it has
    per_prompt = {c.prompt_index: c.finished.n_prompt for c in choices if c.finished is not None}
    prompt = sum(per_prompt.values())
    completion = sum(c.n_generated for c in choices)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


# ---- response shapes -------------------------------------------------------------------------


class _CompletionFormat:
    """``text_completion`` choices; log-probs in the legacy shape (tokens, token_logprobs,
    top_logprobs as {piece: logprob}, text_offset)."""

    chunk_object = "text_completion"

    def __init__(self, tokenizer: Any, logprobs: bool, echo: bool):
        self.tok, self.logprobs, self.echo = tokenizer, logprobs, echo

    def _lp(self, ids: list, lps: list, tops: list, offset: int) -> dict:
        pieces = [self.tok.token_to_piece(int(t)) for t in ids]
        offsets = []
        for t, p in zip(ids, pieces):
            offsets.append(offset)
            offset += 0 if self.tok.is_special(int(t)) else len(p)   # a BOS is not in the text
        return {"tokens": pieces, "token_logprobs": lps,
                "top_logprobs": [None if top is None else {self.tok.token_to_piece(i): lp for i, lp in top}
                                 for top in tops],
                "text_offset": offsets}

    def logprobs_of(self, c: _Choice, tokens: list, with_prompt: bool, offset: int = 0) -> Optional[dict]:
        if not self.logprobs:
            return None
        ids, lps, tops = [], [], []
        if with_prompt and c.scores is not None:
            ids += list(c.scores.token_ids)
            lps += list(c.scores.logprobs)
            tops += [None] + list(c.scores.top[1:])
        ids += [t.token_id for t in tokens]
        lps += [t.logprob for t in tokens]
        tops += [t.top for t in tokens]
        return self._lp(ids, lps, tops, offset)

    def whole(self, c: _Choice) -> dict:
        text = c.prompt_text + "".join(c.parts)
        return {"index": c.index, "text": text, "logprobs": self.logprobs_of(c, c.tokens, True),
                "finish_reason": c.finish_reason}

    def chunk(self, c: _Choice, text: str, tokens: list, first: bool, finish: Optional[str]) -> dict:
        if first and self.echo:
            text = c.prompt_text + text
        return {"index": c.index, "text": text, "logprobs": self.logprobs_of(c, tokens, first),
                "finish_reason": finish}


class _ChatFormat:
    """``chat.completion`` choices; log-probs in the chat shape ({"content": [{token, logprob,
    bytes, top_logprobs}]})."""

    chunk_object = "chat.completion.chunk"

    def __init__(self, tokenizer: Any, logprobs: bool):
        self.tok, self.logprobs = tokenizer, logprobs

    def _entry(self, token_id: int, logprob: float) -> dict:
        piece = self.tok.token_to_piece(int(token_id))
        return {"token": piece, "logprob": logprob, "bytes": list(self.tok.token_to_bytes(int(token_id)))}

    def logprobs_of(self, tokens: list) -> Optional[dict]:
        if not self.logprobs:
            return None
        return {"content": [dict(self._entry(t.token_id, t.logprob),
                                 top_logprobs=[self._entry(i, lp) for i, lp in t.top]) for t in tokens]}

    def whole(self, c: _Choice) -> dict:
        return {"index": c.index, "message": {"role": "assistant", "content": "".join(c.parts)},
                "logprobs": self.logprobs_of(c.tokens), "finish_reason": c.finish_reason}

    def chunk(self, c: _Choice, text: str, tokens: list, first: bool, finish: Optional[str]) -> dict:
        delta: dict = {"role": "assistant", "content": text} if first else ({"content": text} if text else {})
        return {"index": c.index, "delta": delta, "logprobs": self.logprobs_of(tokens), "finish_reason": finish}


async def _whole(run: _Run, choices: list[_Choice], head: dict, fmt: Any) -> Response:
    try:
        async for index, ev in run.events(poll_disconnect=True):
            choices[index].add(ev)
            if isinstance(ev, Failed):
                run.cancel()
                raise APIError(ev.status, ev.message)
    finally:
        run.cancel()   # a no-op for finished jobs; frees the slots of a request cut short
    if not all(c.done for c in choices):   # the client went away: nobody to answer
        return Response(status_code=499)
    return JSONResponse(dict(head, choices=[fmt.whole(c) for c in choices], usage=_usage(choices)))


def _sse(run: _Run, choices: list[_Choice], head: dict, fmt: Any, include_usage: bool) -> StreamingResponse:
    head = dict(head, object=fmt.chunk_object)

    def data(obj: Any) -> str:
        return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"

    async def stream() -> AsyncIterator[str]:
        started = [False] * len(choices)
        try:
            async for index, ev in run.events(poll_disconnect=False):
                c = choices[index]
                c.add(ev)
                if isinstance(ev, Failed):
                    run.cancel()
                    yield data(error_body(ev.status, ev.message))
                    return
                if isinstance(ev, Scores):
                    continue
                if isinstance(ev, Token):
                    if not ev.text and ev.eog and started[index]:
                        continue
                    tokens = [] if ev.eog else [ev]
                    yield data(dict(head, choices=[fmt.chunk(c, ev.text, tokens, not started[index], None)]))
                    started[index] = True
                elif isinstance(ev, Finished):
                    yield data(dict(head, choices=[fmt.chunk(c, "", [], not started[index], c.finish_reason)]))
                    started[index] = True
            if include_usage:
                yield data(dict(head, choices=[], usage=_usage(choices)))
            yield "data: [DONE]\n\n"
        finally:
            run.cancel()   # the client went away mid-stream (or the stream ended): free the slots

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
