"""Turning an attempt's frames into the client's HTTP response: JSON or SSE."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import Response, StreamingResponse

from ingress.dispatch import WorkerSilent
from ingress.errors import ApiError
from ingress.execution import Started
from schemas.frames import DoneFrame, ErrorFrame, FrameKind

log = logging.getLogger("aigw.ingress")

_DONE = b"data: [DONE]\n\n"
COST_HEADER = "x-aigw-cost-usd"
_SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


async def json_response(started: Started, heartbeat_timeout: float) -> Response:
    """The whole answer of a non-streamed call, once the worker says it is done."""
    frame = started.first
    try:
        while frame.kind is FrameKind.HEARTBEAT:
            frame = await started.reply.next(heartbeat_timeout)
    except WorkerSilent:
        await started.reply.cancel()
        raise ApiError(504, "the worker stopped responding", type="timeout_error",
                       code="worker_timeout") from None
    started.reply.close()
    if frame.kind is FrameKind.ERROR:
        raise ApiError.from_info(ErrorFrame.model_validate_json(frame.body).error)
    if frame.kind is not FrameKind.DONE:
        raise ApiError(502, "the worker sent a stream to a non-streamed call",
                       type="server_error", code="bad_frame")
    done = DoneFrame.model_validate_json(frame.body)
    body = done.response or {}
    headers: dict[str, str] = {}
    if done.cost is not None:
        headers[COST_HEADER] = format(done.cost, "f")
        usage = body.get("usage")
        if isinstance(usage, dict):
            usage["cost"] = float(done.cost)
    return Response(
        json.dumps(body, separators=(",", ":")).encode(),
        media_type="application/json",
        headers=headers,
    )


def _usage_chunk(first_chunk: bytes | None, done: DoneFrame) -> bytes:
    meta: dict[str, Any] = {}
    if first_chunk is not None:
        parsed = json.loads(first_chunk)
        meta = {k: parsed.get(k) for k in ("id", "created", "model")}
    usage = done.usage.to_openai()
    if done.cost is not None:
        usage["cost"] = float(done.cost)
    chunk = {**meta, "object": "chat.completion.chunk", "choices": [], "usage": usage}
    return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"


async def _events(
    started: Started, include_usage: bool, heartbeat_timeout: float
) -> AsyncIterator[bytes]:
    reply = started.reply
    frame = started.first
    first_chunk: bytes | None = None
    finished = False
    try:
        while True:
            if frame.kind is FrameKind.CHUNK:
                if first_chunk is None:
                    first_chunk = frame.body
                yield b"data: " + frame.body + b"\n\n"
            elif frame.kind is FrameKind.DONE:
                finished = True
                if include_usage:
                    yield _usage_chunk(first_chunk, DoneFrame.model_validate_json(frame.body))
                yield _DONE
                return
            elif frame.kind is FrameKind.ERROR:
                finished = True
                failure = ErrorFrame.model_validate_json(frame.body)
                yield ApiError.from_info(failure.error).sse_event()
                yield _DONE
                return
            try:
                frame = await reply.next(heartbeat_timeout)
            except WorkerSilent:
                finished = True
                await reply.cancel()
                log.warning("worker went silent mid-stream on %s", reply.request.request_id)
                yield ApiError(504, "the worker stopped responding mid-stream",
                               type="timeout_error", code="worker_timeout").sse_event()
                yield _DONE
                return
    finally:
        if finished:
            reply.close()
        else:
            # The client went away: stop the upstream call instead of paying for it.
            await asyncio.shield(reply.cancel())


def stream_response(
    started: Started, include_usage: bool, heartbeat_timeout: float
) -> StreamingResponse:
    return StreamingResponse(
        _events(started, include_usage, heartbeat_timeout),
        media_type="text/event-stream",
        headers=_SSE_HEADERS,
    )
