"""The server's counters and gauges, written as Prometheus text (``GET /metrics``).

A small exposition of our own rather than prometheus_client: a dozen numbers, one process, and
no process-global registry (tests start several servers in one process). Thread-safe: the
scheduler thread and the HTTP side both update it.
"""

from __future__ import annotations

import threading
import time
from collections import deque

__all__ = ["Metrics", "CONTENT_TYPE"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
RATE_WINDOW_S = 10.0   # tokens/s is the generated tokens of the last this-many seconds


class Metrics:
    """Requests by endpoint and status, tokens, and the scheduler's state."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = {}     # (endpoint, HTTP status) -> count
        self.prompt_tokens = 0
        self.reused_prompt_tokens = 0      # prompt tokens found in a slot's cache, not fed again
        self.generated_tokens = 0
        self.steps = 0
        self.batch_rows = 0                # sum over steps of the requests in the step
        self.rejected_full = 0             # 503: the queue was full
        self.cancelled = 0                 # client gone or shutdown
        self.queue_depth = 0               # requests waiting for a slot
        self.active = 0                    # requests holding a slot
        self.last_batch_size = 0
        self._recent: deque[tuple[float, int]] = deque()   # (time, tokens) per step

    def count_request(self, endpoint: str, status: int) -> None:
        with self._lock:
            key = (endpoint, int(status))
            self.requests[key] = self.requests.get(key, 0) + 1

    def count_step(self, batch_size: int, new_tokens: int, active: int, waiting: int) -> None:
        now = time.monotonic()
        with self._lock:
            self.steps += 1
            self.batch_rows += batch_size
            self.last_batch_size = batch_size
            self.generated_tokens += new_tokens
            self.active, self.queue_depth = active, waiting
            if new_tokens:
                self._recent.append((now, new_tokens))
            self._trim(now)

    def count_prompt(self, n_tokens: int) -> None:
        with self._lock:
            self.prompt_tokens += n_tokens

    def count_reused(self, n_tokens: int) -> None:
        if n_tokens:
            with self._lock:
                self.reused_prompt_tokens += n_tokens

    def count_rejected(self) -> None:
        with self._lock:
            self.rejected_full += 1

    def count_cancelled(self) -> None:
        with self._lock:
            self.cancelled += 1

    def set_queue(self, active: int, waiting: int) -> None:
        with self._lock:
            self.active, self.queue_depth = active, waiting

    def _trim(self, now: float) -> None:
        while self._recent and now - self._recent[0][0] > RATE_WINDOW_S:
            self._recent.popleft()

    def tokens_per_second(self) -> float:
        now = time.monotonic()
        with self._lock:
            self._trim(now)
            return sum(n for _, n in self._recent) / RATE_WINDOW_S

    def render(self) -> str:
        """The Prometheus text exposition format, version 0.0.4."""
        tps = self.tokens_per_second()
        with self._lock:
            lines = []

            def metric(name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> None:
                lines.append(f"# HELP bitnet_lab_{name} {help_}")
                lines.append(f"# TYPE bitnet_lab_{name} {kind}")
                for labels, value in samples:
                    lines.append(f"bitnet_lab_{name}{labels} {value:g}" if isinstance(value, float)
                                 else f"bitnet_lab_{name}{labels} {value}")

            metric("requests_total", "counter", "HTTP requests answered, by endpoint and status",
                   [(f'{{endpoint="{e}",status="{s}"}}', n) for (e, s), n in sorted(self.requests.items())])
            metric("prompt_tokens_total", "counter", "prompt tokens accepted", [("", self.prompt_tokens)])
            metric("reused_prompt_tokens_total", "counter", "prompt tokens whose KV cache a slot already held",
                   [("", self.reused_prompt_tokens)])
            metric("generated_tokens_total", "counter", "tokens generated", [("", self.generated_tokens)])
            metric("rejected_queue_full_total", "counter", "requests refused with 503 (queue full)",
                   [("", self.rejected_full)])
            metric("cancelled_total", "counter", "generations stopped early (client gone, shutdown)",
                   [("", self.cancelled)])
            metric("steps_total", "counter", "batched forward steps", [("", self.steps)])
            metric("batch_rows_total", "counter", "requests summed over steps (mean batch = this / steps)",
                   [("", self.batch_rows)])
            metric("queue_depth", "gauge", "requests waiting for a slot", [("", self.queue_depth)])
            metric("active_requests", "gauge", "requests holding a slot", [("", self.active)])
            metric("batch_size", "gauge", "requests in the last step", [("", self.last_batch_size)])
            metric("tokens_per_second", "gauge", f"tokens generated per second over the last {RATE_WINDOW_S:g} s",
                   [("", float(tps))])
            return "\n".join(lines) + "\n"
