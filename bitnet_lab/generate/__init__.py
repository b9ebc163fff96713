"""Generation: samplers, the token loop that yields events, chat formats and sessions, perplexity.

``sampling`` (frozen sampler dataclasses), ``loop`` (``generate()`` / ``stream_tokens()``: events,
never prints), ``batch`` (many sequences decoded together: ``BatchGenerator``, ``generate_batch``),
``chat`` (chat templates and multi-turn sessions), ``perplexity``.
"""

from __future__ import annotations

from bitnet_lab.generate.batch import BatchEvent, BatchGenerator, BatchResult, generate_batch
from bitnet_lab.generate.loop import (
    DONE_REASONS,
    DoneEvent,
    Event,
    generate,
    resolve_seed,
    stop_ids_for,
    stream_tokens,
    TokenEvent,
)
from bitnet_lab.generate.sampling import (
    Candidates,
    Draw,
    Greedy,
    log_softmax_at,
    make_sampler,
    MinP,
    RepetitionPenalty,
    SamplerChain,
    Temperature,
    TopK,
    TopP,
)

__all__ = [
    "TokenEvent",
    "DoneEvent",
    "Event",
    "generate",
    "stream_tokens",
    "generate_batch",
    "BatchGenerator",
    "BatchEvent",
    "BatchResult",
    "stop_ids_for",
    "resolve_seed",
    "DONE_REASONS",
    "Candidates",
    "RepetitionPenalty",
    "TopK",
    "TopP",
    "MinP",
    "Temperature",
    "Greedy",
    "Draw",
    "SamplerChain",
    "make_sampler",
    "log_softmax_at",
]
