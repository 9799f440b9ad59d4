"""Turning an attempt's frames into the client's HTTP response: JSON or SSE.

Whatever way an attempt ends (done, error, silent worker, client gone), its admission
ticket is settled exactly once, with the real cost when the worker reported one. A worker
that goes silent never will: the attempt is accounted at the ingress instead, from what the
client was sent of the answer (:mod:`ingress.dispatch.lost`).

When the request may be cached, a :class:`~ingress.cache.store.Capture` sees the answer go by
(each chunk, then the done frame) and is told when it ends any other way.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from fastapi.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from core.json_codec import dumps, loads
from ingress.cache.store import Capture
from ingress.dispatch.abandon import Settle, abandon, settle_frame
from ingress.dispatch.abandon import drain as abandon_drain
from ingress.dispatch.dispatcher import Frame, ReaderTooSlow, WorkerSilent
from ingress.dispatch.event_stream import EventStream, Last
from ingress.dispatch.execution import Started
from ingress.dispatch.lost import Output, Silence
from ingress.errors import ApiError
from schemas.frames import FrameKind
from schemas.usage import TokenUsage

log = logging.getLogger("aigw.ingress")

DONE = b"data: [DONE]\n\n"
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
COST_HEADER = "x-aigw-cost-usd"


@dataclass(frozen=True, slots=True)
class Framing:
    """How a stream is written in the client's protocol."""

    # Chunk bodies are whole SSE events already (Anthropic's, framed by the worker); else
    # each is an OpenAI chunk's JSON, written as ``data: <json>``.
    framed: bool = False
    # What ends every stream: OpenAI's ``[DONE]``; an Anthropic stream ends with its own
    # message_stop event, a chunk like the others.
    end: bytes = DONE
    anthropic: bool = False

    def error(self, error: ApiError) -> bytes:
        """The event for a failure after the stream started, and the stream's end."""
        return (error.anthropic_event() if self.anthropic else error.sse_event()) + self.end


OPENAI = Framing()
ANTHROPIC = Framing(framed=True, end=b"", anthropic=True)


def _lost(started: Started, cause: WorkerSilent, output: Output | None = None) -> None:
    """Account the attempt at the ingress if its silence means a lost worker."""
    if started.lost is not None:
        started.lost(Silence(started.reply.request, started.deployment, started.ticket,
                             cause, started.sent_at, output))


def _settle_frame(started: Started, settle: Settle, frame: Frame) -> None:
    settle_frame(started.ticket, settle, frame)


def _cancel_in_background(started: Started, settle: Settle) -> None:
    abandon(started.reply, started.ticket, settle)


async def json_response(
    started: Started, heartbeat_timeout: float, settle: Settle, capture: Capture | None = None
) -> Response:
    """The whole answer of a non-streamed call, once the worker says it is done."""
    frame = started.first
    try:
        while frame.kind is FrameKind.HEARTBEAT:
            frame = await started.reply.next(heartbeat_timeout)
    except WorkerSilent as exc:
        _lost(started, exc)
        _cancel_in_background(started, settle)
        if capture is not None:
            capture.abandon()
        raise ApiError(504, str(exc), type="timeout_error", code="worker_timeout") from None
    except BaseException:
        _cancel_in_background(started, settle)
        if capture is not None:
            capture.abandon()
        raise
    started.reply.close()
    _settle_frame(started, settle, frame)
    if frame.kind is not FrameKind.DONE and capture is not None:
        capture.abandon()
    if frame.kind is FrameKind.ERROR:
        err = ApiError.from_info(frame.error().error)
        err.headers.update(started.ticket.headers)
        raise err
    if frame.kind is not FrameKind.DONE:
        raise ApiError(502, "the worker sent a stream to a non-streamed call",
                       type="server_error", code="bad_frame")
    done = frame.done()
    if capture is not None:
        capture.done(done, started.deployment, streamed=False)
    # A copy: the cache keeps the response as the upstream gave it, without our cost.
    body = dict(done.response or {})
    headers = dict(started.ticket.headers)
    if done.cost is not None:
        headers[COST_HEADER] = format(done.cost, "f")
        usage = body.get("usage")
        if isinstance(usage, dict):
            body["usage"] = {**usage, "cost": float(done.cost)}
    return Response(dumps(body), media_type="application/json", headers=headers)


def usage_chunk(first_chunk: bytes | None, tokens: TokenUsage, cost: Decimal | None) -> bytes:
    """The last chunk of a stream that asked for usage, in the first chunk's name."""
    meta: dict[str, Any] = {}
    parsed: dict[str, Any] = {}
    if first_chunk is not None:
        parsed = loads(first_chunk)
        meta = {k: parsed.get(k) for k in ("id", "created", "model")}
    usage = tokens.to_openai()
    if cost is not None:
        usage["cost"] = float(cost)
    # A legacy completion's stream is of ``text_completion`` objects.
    kind = parsed.get("object")
    chunk = {**meta, "object": kind if kind == "text_completion" else "chat.completion.chunk",
             "choices": [], "usage": usage}
    return b"data: " + dumps(chunk) + b"\n\n"


async def _events(
    started: Started, include_usage: bool, heartbeat_timeout: float, settle: Settle,
    capture: Capture | None, framing: Framing = OPENAI,
) -> AsyncIterator[bytes]:
    reply = started.reply
    frame = started.first
    first_chunk: bytes | None = None
    # Counted only to account the answer if the worker is lost (an estimate of its tokens).
    output = Output() if started.lost is not None else None
    finished = False
    broken: WorkerSilent | None = None
    try:
        while True:
            if frame.kind is FrameKind.CHUNK:
                if first_chunk is None:
                    first_chunk = frame.body
                # Chunks that have already arrived go out in one write: under load a
                # stream's frames queue up, and each write is a system call.
                bodies = [frame.body]
                try:
                    while (ready := reply.ready()) is not None and (
                            ready.kind is FrameKind.CHUNK):
                        bodies.append(ready.body)
                except WorkerSilent as exc:  # raised again below, after what arrived
                    ready, broken = None, exc
                if capture is not None:
                    for body in bodies:
                        capture.chunk(body)
                if framing.framed:
                    yield b"".join(bodies)
                else:
                    yield b"".join([b"data: " + body + b"\n\n" for body in bodies])
                if output is not None:  # once sent: the count stays off the chunk's way
                    for body in bodies:
                        output.add(body)
                if ready is not None:  # the frame after the run, already here
                    frame = ready
                    continue
            elif frame.kind is FrameKind.DONE:
                finished = True
                _settle_frame(started, settle, frame)
                done = frame.done()
                if include_usage:
                    yield Last(usage_chunk(first_chunk, done.usage, done.cost) + DONE)
                elif framing.end:
                    yield Last(framing.end)
                # Only once the client has had it all: a stream it left is not an answer.
                if capture is not None:
                    capture.done(done, started.deployment, streamed=True)
                return
            elif frame.kind is FrameKind.ERROR:
                finished = True
                _settle_frame(started, settle, frame)
                failure = frame.error()
                yield Last(framing.error(ApiError.from_info(failure.error)))
                return
            try:
                if broken is not None:
                    raise broken
                frame = await reply.next(heartbeat_timeout)
            except WorkerSilent as exc:
                log.warning("stream of %s broken off: %s", reply.request.request_id, exc)
                _lost(started, exc, output)
                yield Last(framing.error(ApiError(504, f"the answer was cut short: {exc}",
                                                  type="timeout_error", code="worker_timeout")))
                return
            except ReaderTooSlow as exc:  # the upstream call is being cancelled already
                log.warning("stream of %s ended: %s", reply.request.request_id, exc)
                yield Last(framing.error(ApiError(408, f"the answer was cut short: {exc}",
                                                  code="client_too_slow")))
                return
    finally:
        if capture is not None:
            capture.abandon()  # a no-op after done
        if finished:
            reply.close()
        else:
            # Client gone or worker silent: stop the upstream call instead of paying for it.
            _cancel_in_background(started, settle)


class _CapturedStream(EventStream):
    """Ends its capture however the response ends, even when a client that left early
    means the body never started (and so never reached its own ``finally``): requests
    waiting on the answer must not wait for nothing."""

    def __init__(self, content: AsyncIterator[bytes], capture: Capture,
                 headers: dict[str, str]) -> None:
        super().__init__(content, media_type="text/event-stream", headers=headers)
        self.capture = capture

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.capture.abandon()  # a no-op after done


def stream_response(
    started: Started, include_usage: bool, heartbeat_timeout: float, settle: Settle,
    capture: Capture | None = None, framing: Framing = OPENAI,
) -> StreamingResponse:
    events = _events(started, include_usage, heartbeat_timeout, settle, capture, framing)
    headers = {**SSE_HEADERS, **started.ticket.headers}
    if capture is not None:
        return _CapturedStream(events, capture, headers)
    return EventStream(events, media_type="text/event-stream", headers=headers)


drain = abandon_drain  # at shutdown: cancel reports still outstanding
