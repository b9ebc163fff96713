"""The scheduler: one thread owns the model and a `BatchGenerator` and steps it.

HTTP handlers never touch the model. They hand a `Job` (one choice of one request: prompt ids,
sampler, seed, limits) to `ServeEngine.submit`, which refuses it with `QueueFull` when the
slots and the queue are taken (the app answers 503) and otherwise passes it to the scheduler
thread through a thread-safe inbox. The thread admits jobs between steps — continuous batching:
a request joins the running batch at the next step and leaves it the step it finishes, and the
BatchGenerator feeds prompts in chunks so a long prompt does not stall the others' decoding —
and calls each job's ``sink`` with its events (`Scores`, `Token`, `Finished`, `Failed`); the
app's sink moves them onto its asyncio loop (``loop.call_soon_threadsafe``).

``echo`` with log-probs (a harness scoring a multiple-choice answer) needs every prompt row's
logits, which the batched decode never computes (it keeps the last row only): the thread scores
such a prompt itself, one chunk per step on a cache of its own, between the batch's steps, then
hands the job to the BatchGenerator if it also asks for new tokens.

A step that raises (a bug, not bad input: input is checked before it is queued) fails the
requests in it with a clean error and the thread builds a fresh BatchGenerator and goes on:
one bad step never leaves a dead worker behind a live port.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from bitnet_lab.errors import BitnetLabError, ConfigError
from bitnet_lab.generate.batch import DEFAULT_PREFILL_CHUNK, BatchGenerator
from bitnet_lab.generate.loop import stop_ids_for
from bitnet_lab.generate.sampling import SamplerChain, top_logprobs
from bitnet_lab.serve.metrics import Metrics

__all__ = ["Job", "Scores", "Token", "Finished", "Failed", "QueueFull", "ServeEngine"]


# ---- what the thread sends back --------------------------------------------------------------


@dataclass(frozen=True)
class Scores:
    """The prompt's own log-probs (echo): ``logprobs[i]`` = log p(token i | tokens before it),
    None for the first; ``top[i]``: the ``top_logprobs`` best (id, logprob) at position i."""

    token_ids: tuple
    logprobs: tuple
    top: tuple


@dataclass(frozen=True)
class Token:
    """One generated token: its id, the text it releases (loop.TokenEvent), its log-prob under
    the raw distribution, and the best alternatives when asked for."""

    token_id: int
    text: str
    logprob: float
    top: tuple = ()
    eog: bool = False        # an end-of-generation token (its own text is never released)


@dataclass(frozen=True)
class Finished:
    """The job is over: ``reason`` as loop.DONE_REASONS ("interrupted" never reaches a sink)."""

    reason: str
    n_prompt: int
    n_generated: int


@dataclass(frozen=True)
class Failed:
    """The job cannot go on: an HTTP ``status`` and a message for the client."""

    status: int
    message: str


Event = Any   # Scores | Token | Finished | Failed


class QueueFull(BitnetLabError):
    """Every slot is busy and the queue holds ``max_queue`` requests already."""


@dataclass
class Job:
    """One choice of one request. ``max_tokens``: -1 = until an end token or a full context.
    ``top_logprobs``: alternatives per generated token (0: none). ``score_prompt``: send the
    prompt's log-probs (`Scores`) first. ``sink(event)`` is called on the scheduler thread."""

    prompt_ids: list
    sampler: SamplerChain
    max_tokens: int
    sink: Callable[[Event], None]
    seed: Optional[int] = None
    stop: tuple = ()
    top_logprobs: int = 0
    score_prompt: bool = False
    # set by the engine
    rid: Optional[int] = field(default=None, repr=False)
    done: bool = field(default=False, repr=False)
    n_generated: int = field(default=0, repr=False)


class _Scoring:
    """A prompt being scored, chunk by chunk, on the scoring cache."""

    def __init__(self, job: Job):
        self.job = job
        self.fed = 0
        self.logprobs: list = [None]
        self.top: list = [()]


class ServeEngine:
    """The scheduler thread over one model (module docstring).

    ``n_slots`` sequences decode together (llama-server's ``--parallel``), each with a cache of
    ``n_ctx`` positions (``-c``); at most ``max_queue`` more jobs wait for a slot.
    ``stop_ids``: the end-of-generation ids (default: the tokenizer's and config's, plus
    ``extra_stop_ids`` — the chat format's end-of-turn ids).
    """

    def __init__(self, model: Any, *, n_slots: int, n_ctx: int, max_queue: int,
                 prefill_chunk: int = DEFAULT_PREFILL_CHUNK, extra_stop_ids: frozenset = frozenset(),
                 metrics: Optional[Metrics] = None):
        if isinstance(max_queue, bool) or not isinstance(max_queue, int) or max_queue < 0:
            raise ConfigError(f"max_queue must be an integer >= 0, got {max_queue!r}")
        self.model = model
        self.runner = model.runner
        self.tokenizer = model.tokenizer
        self.n_slots, self.n_ctx, self.max_queue = int(n_slots), int(n_ctx), int(max_queue)
        self.prefill_chunk = int(prefill_chunk)
        self.vocab = int(getattr(self.runner, "vocab_size", 0) or model.config.vocab)
        self.stop_ids = frozenset(stop_ids_for(self.tokenizer, model.config)) | frozenset(extra_stop_ids)
        self.metrics = metrics if metrics is not None else Metrics()
        self._gen = self._new_generator()      # raises here on bad n_slots / n_ctx / chunk
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._load = 0                          # jobs accepted and not finished
        self._jobs: dict[int, Job] = {}         # BatchGenerator request id -> job
        self._scoring: list[_Scoring] = []
        self._score_cache: Any = None
        self._stopping = False
        self._thread: Optional[threading.Thread] = None

    def _new_generator(self) -> BatchGenerator:
        # reuse_prefix: a request whose prompt begins as a finished one's did (a system prompt, a
        # conversation's earlier turns, a harness's shared context) feeds only the rest
        self._reused_seen = 0
        return BatchGenerator(self.model, n_slots=self.n_slots, n_ctx=self.n_ctx,
                              prefill_chunk=self.prefill_chunk, stop_ids=self.stop_ids, reuse_prefix=True)

    # ---- the HTTP side ------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="bitnet-lab-scheduler", daemon=True)
        self._thread.start()

    @property
    def capacity(self) -> int:
        return self.n_slots + self.max_queue

    def check_prompt(self, ids: list, max_tokens: int) -> None:
        """ConfigError naming the problem when ``ids`` cannot run here (checked before queueing)."""
        if not ids:
            raise ConfigError("the prompt is empty (0 tokens): there is nothing to condition on")
        if len(ids) > self.n_ctx:
            raise ConfigError(f"the prompt has {len(ids)} tokens but the context holds {self.n_ctx} "
                              f"(the server's -c)")
        if max_tokens and len(ids) >= self.n_ctx:
            raise ConfigError(f"the prompt has {len(ids)} tokens and fills the context of {self.n_ctx}: "
                              f"no room for a new token")
        bad = [t for t in ids if not 0 <= int(t) < self.vocab]
        if bad:
            raise ConfigError(f"prompt token id {bad[0]} is outside the vocabulary [0, {self.vocab})")

    def submit(self, jobs: list[Job]) -> None:
        """Queue the jobs of one request, all or none: `QueueFull` when they do not fit."""
        with self._lock:
            if self._stopping:
                raise QueueFull("the server is shutting down")
            if self._load + len(jobs) > self.capacity:
                self.metrics.count_rejected()
                raise QueueFull(f"all {self.n_slots} slots are busy and the queue is full "
                                f"({self.max_queue} waiting at most); retry later")
            self._load += len(jobs)
        for job in jobs:
            self.metrics.count_prompt(len(job.prompt_ids))
            self._inbox.put(("submit", job))

    def cancel(self, job: Job) -> None:
        """Stop ``job`` (its client is gone): its slot is free at the next step. Safe to call
        from any thread, for a finished job too."""
        if not job.done:
            self._inbox.put(("cancel", job))

    def drain(self, grace_s: float) -> None:
        """Shutting down: refuse new jobs (503) from now on, let those in flight run for
        ``grace_s`` seconds, then fail what is left with a clean 503 error."""
        with self._lock:
            self._stopping = True
        timer = threading.Timer(max(0.0, grace_s), self._inbox.put, args=(("fail_all", None),))
        timer.daemon = True
        timer.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Fail what is still queued or running ("server shutting down") and end the thread."""
        with self._lock:
            self._stopping = True
        self._inbox.put(("stop", None))
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def load(self) -> int:
        """Jobs accepted and not yet finished."""
        with self._lock:
            return self._load

    # ---- the scheduler thread -----------------------------------------------------------------
    def _busy(self) -> bool:
        return bool(self._jobs or self._scoring)

    def _run(self) -> None:
        while True:
            if not self._take_inbox(block=not self._busy()):
                break
            if self._scoring:
                self._guarded(self._score_chunk, [self._scoring[0].job])
            if self._jobs:
                self._guarded(self._step, list(self._jobs.values()))
        self._fail_all(503, "the server is shutting down")

    def _take_inbox(self, block: bool) -> bool:
        """Apply every waiting command (blocking for one when idle); False on "stop"."""
        while True:
            try:
                kind, job = self._inbox.get(block=block, timeout=None)
            except queue.Empty:
                return True
            block = False
            if kind == "stop":
                return False
            if kind == "fail_all":
                self._fail_all(503, "the server is shutting down")
            elif kind == "submit":
                self._accept(job)
            elif kind == "cancel" and not job.done:
                self._cancel(job)

    def _accept(self, job: Job) -> None:
        if job.score_prompt:
            self._scoring.append(_Scoring(job))
        else:
            self._to_generator(job)

    def _to_generator(self, job: Job) -> None:
        if job.max_tokens == 0:
            self._finish(job, Finished("length", len(job.prompt_ids), 0))
            return
        try:
            job.rid = self._gen.submit(job.prompt_ids, sampler=job.sampler, max_tokens=job.max_tokens,
                                       stop=job.stop, seed=job.seed, top_logprobs=job.top_logprobs)
        except BitnetLabError as e:
            self._finish(job, Failed(400, str(e)))
            return
        self._jobs[job.rid] = job

    def _cancel(self, job: Job) -> None:
        self.metrics.count_cancelled()
        scoring = [s for s in self._scoring if s.job is job]
        if scoring:
            self._scoring.remove(scoring[0])   # the next prompt scored resets the cache
        elif job.rid is not None and job.rid in self._jobs:
            self._gen.cancel(job.rid)
            del self._jobs[job.rid]
        job.done = True
        self._release(1)

    def _score_chunk(self) -> None:
        s = self._scoring[0]
        ids = s.job.prompt_ids
        if self._score_cache is None:
            self._score_cache = self.runner.new_cache(self.n_ctx)
        if s.fed == 0:
            self._score_cache.reset()
        chunk = ids[s.fed: s.fed + self.prefill_chunk]
        rows = np.asarray(self.runner.forward(chunk, self._score_cache, last_only=False), dtype=np.float64)
        # row j (position fed + j) predicts token fed + j + 1, the next chunk's first included
        targets = ids[s.fed + 1: s.fed + len(chunk) + 1]
        preds = rows[: len(targets)]
        if len(targets):
            m = preds.max(axis=1, keepdims=True)
            lse = (m + np.log(np.exp(preds - m).sum(axis=1, keepdims=True)))[:, 0]
            for row, t, z in zip(preds, targets, lse):
                s.logprobs.append(float(row[int(t)] - z))
                s.top.append(top_logprobs(row, s.job.top_logprobs))
        s.fed += len(chunk)
        if s.fed >= len(ids):
            self._scoring.pop(0)
            self._deliver(s.job, Scores(tuple(ids), tuple(s.logprobs), tuple(s.top)))
            self._to_generator(s.job)

    def _step(self) -> None:
        batch = min(self.n_slots, len(self._gen.active) + len(self._gen.waiting))
        events = self._gen.step()
        n_tokens = 0
        for ev in events:
            job = self._jobs.get(ev.request)
            if job is None:            # a cancelled job's last event
                continue
            if ev.token_id is not None:
                n_tokens += 1
                job.n_generated += 1
                self._deliver(job, Token(int(ev.token_id), ev.text, float(ev.logprob), ev.top_logprobs, bool(ev.eog)))
            if ev.finished:
                del self._jobs[ev.request]
                self._finish(job, Finished(ev.reason, len(job.prompt_ids), job.n_generated))
        self.metrics.count_step(batch, n_tokens, len(self._gen.active),
                                len(self._gen.waiting) + len(self._scoring))
        self.metrics.count_reused(self._gen.reused_tokens - self._reused_seen)
        self._reused_seen = self._gen.reused_tokens

    def _finish(self, job: Job, event: Event) -> None:
        if job.done:
            return
        job.done = True
        self._deliver(job, event)
        self._release(1)

    def _deliver(self, job: Job, event: Event) -> None:
        try:
            job.sink(event)
        except Exception:   # a sink whose loop is gone: the client went away, nothing to tell
            pass

    def _release(self, n: int) -> None:
        with self._lock:
            self._load -= n

    def _guarded(self, work: Callable[[], None], involved: list[Job]) -> None:
        try:
            work()
        except Exception as e:   # a bug: fail the requests involved, keep serving the others
            msg = f"internal error in the batch step: {type(e).__name__}: {e}"
            for job in involved:
                self._finish(job, Failed(500, msg))
            self._scoring = [s for s in self._scoring if not s.job.done]
            self._score_cache = None
            if any(job.rid is not None for job in involved):
                # the generator's state is unknown after a failed step: start a fresh one
                self._jobs.clear()
                self._gen = self._new_generator()

    def _fail_all(self, status: int, message: str) -> None:
        for job in list(self._jobs.values()) + [s.job for s in self._scoring]:
            self._finish(job, Failed(status, message))
        self._jobs.clear()
        self._scoring.clear()
        self._gen = self._new_generator()   # its requests are gone with their jobs
        while True:   # jobs that arrived after the stop: fail them too
            try:
                kind, job = self._inbox.get_nowait()
            except queue.Empty:
                break
            if kind == "submit":
                self._finish(job, Failed(status, message))
