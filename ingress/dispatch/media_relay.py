"""The answer of an images or audio attempt as the client's HTTP response: the whole body
(inline in the done frame, or read back from the object store), or speech audio streamed
as its chunk frames arrive. Whatever way an attempt ends, its ticket is settled once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import nats.errors
from fastapi.responses import Response, StreamingResponse

from core.media_store import MediaStore
from ingress.dispatch.abandon import Settle, abandon, settle_frame
from ingress.dispatch.dispatcher import WorkerSilent
from ingress.dispatch.execution import Started
from ingress.dispatch.lost import Silence
from ingress.errors import ApiError
from schemas.frames import FrameKind
from schemas.media import MediaReply

COST_HEADER = "x-aigw-cost-usd"


def lost(started: Started, cause: WorkerSilent) -> None:
    """Account the attempt at the ingress if its silence means a lost worker."""
    if started.lost is not None:
        started.lost(Silence(started.reply.request, started.deployment, started.ticket,
                             cause, started.sent_at, None))


def _headers(started: Started, cost: Decimal | None) -> dict[str, str]:
    headers = dict(started.ticket.headers)
    if cost is not None:
        headers[COST_HEADER] = format(cost, "f")
    return headers


async def whole_response(started: Started, timeout: float, settle: Settle,
                         store: MediaStore) -> Response:
    """The answer of an images or transcription call, once the worker is done."""
    frame = started.first
    try:
        while frame.kind is FrameKind.HEARTBEAT:
            frame = await started.reply.next(timeout)
    except WorkerSilent as exc:
        lost(started, exc)
        abandon(started.reply, started.ticket, settle)
        raise ApiError(504, str(exc), type="timeout_error", code="worker_timeout") from None
    except BaseException:
        abandon(started.reply, started.ticket, settle)
        raise
    started.reply.close()
    settle_frame(started.ticket, settle, frame)
    if frame.kind is FrameKind.ERROR:
        err = ApiError.from_info(frame.error().error)
        err.headers.update(started.ticket.headers)
        raise err
    if frame.kind is not FrameKind.DONE:
        raise ApiError(502, "the worker sent a stream to a non-streamed call",
                       type="server_error", code="bad_frame")
    done = frame.done()
    reply = MediaReply.model_validate(done.response or {})
    if reply.blob is not None:
        try:
            content = await store.get(reply.blob)
        except (nats.errors.Error, TimeoutError) as exc:
            raise ApiError(502, f"The answer could not be read back from the object store "
                           f"({type(exc).__name__}).", type="server_error",
                           code="nats_unavailable") from None
        await store.delete(reply.blob)
    else:
        content = (reply.body or "").encode()
    return Response(content, media_type=reply.content_type,
                    headers=_headers(started, done.cost))


async def audio_response(started: Started, timeout: float, settle: Settle,
                         content_type: str) -> Response:
    """Speech: the audio streams to the client as the worker sends it."""
    reply = started.reply
    frame = started.first
    try:
        while frame.kind is FrameKind.HEARTBEAT:
            frame = await reply.next(timeout)
    except WorkerSilent as exc:
        lost(started, exc)
        abandon(reply, started.ticket, settle)
        raise ApiError(504, str(exc), type="timeout_error", code="worker_timeout") from None
    except BaseException:
        abandon(reply, started.ticket, settle)
        raise
    if frame.kind is FrameKind.ERROR:
        reply.close()
        settle_frame(started.ticket, settle, frame)
        err = ApiError.from_info(frame.error().error)
        err.headers.update(started.ticket.headers)
        raise err
    first = frame

    async def pieces() -> AsyncIterator[bytes]:
        frame = first
        finished = False
        try:
            while True:
                if frame.kind is FrameKind.CHUNK:
                    yield frame.body
                elif frame.kind is FrameKind.DONE:
                    finished = True
                    settle_frame(started.ticket, settle, frame)
                    return
                elif frame.kind is FrameKind.ERROR:
                    finished = True
                    settle_frame(started.ticket, settle, frame)
                    failure = frame.error()
                    # Audio has no in-band error: the connection is cut, so that the
                    # client sees an incomplete body rather than a short file.
                    raise RuntimeError(f"speech cut short: {failure.error.message}")
                try:
                    frame = await reply.next(timeout)
                except WorkerSilent as exc:
                    lost(started, exc)
                    raise RuntimeError(f"speech cut short: {exc}") from None
        finally:
            if finished:
                reply.close()
            else:
                abandon(reply, started.ticket, settle)

    return StreamingResponse(pieces(), media_type=content_type,
                             headers=dict(started.ticket.headers))
