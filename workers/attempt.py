"""An attempt as the worker runs it, and what it reports when it ends.

:class:`Attempt` is the running state the service, its heartbeat loop and cancellation
share; :class:`Outcome` is how an attempt ended, for accounting; :class:`FrameTooLarge`
is what a ``Publish`` raises for a frame the bus cannot carry.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal

from opentelemetry.trace import Span

from schemas.config import Deployment
from schemas.errors import ErrorInfo
from schemas.infer import InferRequest
from schemas.usage import TokenUsage
from workers.providers.base import UpstreamCall

Publish = Callable[[str, bytes, dict[str, str]], Awaitable[None]]


class FrameTooLarge(Exception):
    """Raised by a ``Publish`` for a frame over the bus's message size limit."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"{size} bytes > {limit}")
        self.size = size
        self.limit = limit


@dataclass(slots=True)
class Attempt:
    """An attempt in progress, as the heartbeat loop and cancellation see it."""

    request: InferRequest
    reply: str
    started: float = field(default_factory=time.monotonic)
    last_sent: float = field(default_factory=time.monotonic)
    seq: int = 0
    chunks: int = 0
    output_chars: int = 0
    text_chunks: int = 0
    call: UpstreamCall | None = None
    first_chunk_at: float | None = None
    task: asyncio.Task[None] | None = None
    usage: TokenUsage | None = None
    cost: Decimal | None = None
    # Set only while tracing: the attempt's span, and the streamed text (content tracing).
    span: Span | None = None
    text: list[str] | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """How an attempt ended, for accounting."""

    request: InferRequest
    deployment: Deployment | None
    usage: TokenUsage | None
    error: ErrorInfo | None
    cancelled: bool
    latency_ms: float
    ttft_ms: float | None
    cost: Decimal | None


Pricer = Callable[[Deployment, TokenUsage], Decimal | None]


def no_price(deployment: Deployment, usage: TokenUsage) -> Decimal | None:
    return None


def ttft(attempt: Attempt) -> float | None:
    """Milliseconds from the attempt's start to its first chunk (or whole answer)."""
    if attempt.first_chunk_at is None:
        return None
    return (attempt.first_chunk_at - attempt.started) * 1000
