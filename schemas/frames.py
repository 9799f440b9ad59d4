"""Frames a worker sends to the per-request reply inbox.

A reply is ``chunk* heartbeat*`` then exactly one ``done`` or ``error``. An attempt the
ingress cancelled still ends with an ``error`` of kind ``cancelled`` carrying what the
call used, so the ingress can settle its budget reservation with the real cost. The frame kind and a
sequence number ride in NATS headers; the body of a chunk frame is the OpenAI
``chat.completion.chunk`` JSON exactly as the client will see it, so the ingress relays it
without parsing (a ``chunks`` frame carries several, one per line). Ingresses and workers
of one release go together: an ingress older than ``chunks`` cannot read it. ``done``
and ``error`` bodies are the models below.
"""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict

from schemas.errors import ErrorInfo
from schemas.usage import TokenUsage

KIND_HEADER = "Aigw-Frame"
SEQ_HEADER = "Aigw-Seq"


class FrameKind(StrEnum):
    CHUNK = "chunk"
    # Several chunks that arrived together, each a JSON object, joined by newlines (which
    # compact JSON never holds): the ingress reads them as that many chunk frames.
    CHUNKS = "chunks"
    HEARTBEAT = "heartbeat"
    DONE = "done"
    ERROR = "error"
    # The worker is at its concurrency and did not start the attempt: send it again later.
    BUSY = "busy"


class DoneFrame(BaseModel):
    """The end of a successful attempt. ``response`` is the whole OpenAI response body for
    non-streamed calls and ``None`` for streamed ones."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    usage: TokenUsage
    finish_reason: str | None = None
    response: dict[str, Any] | None = None
    upstream_model: str | None = None
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    # Priced by the worker from this call's tokens; None when the model has no known price.
    cost: Decimal | None = None


class ErrorFrame(BaseModel):
    """The end of a failed attempt. ``chunks_sent`` tells the ingress whether the client
    has already seen content (then it may no longer fail over)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    error: ErrorInfo
    chunks_sent: int = 0
    usage: TokenUsage | None = None
    cost: Decimal | None = None


def headers(kind: FrameKind, seq: int) -> dict[str, str]:
    return {KIND_HEADER: kind.value, SEQ_HEADER: str(seq)}
