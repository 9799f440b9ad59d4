"""Running an images or audio attempt in the worker: the uploads read from the object store,
the adapter called, the answer sent back inline, through the object store when it is too
large for one message, or (speech) as chunk frames of raw audio.

A part of :class:`workers.service.WorkerService`, kept apart from chat's path.
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING

import nats.errors

from core.media_store import MediaStore, object_name
from schemas.errors import ErrorInfo, ErrorKind
from schemas.frames import DoneFrame, FrameKind
from schemas.infer import Endpoint
from schemas.media import (
    AUDIO_CHUNK_BYTES,
    FILES_KEY,
    INLINE_REPLY_BYTES,
    PATHS,
    MediaReply,
    files_of,
)
from workers.attempt import Attempt, ttft
from workers.providers.base import UpstreamCall, UpstreamError, unsupported
from workers.providers.media import MediaMaker, Upload
from workers.providers.openai.media import speech_usage

if TYPE_CHECKING:
    from workers.service import WorkerService


def _store_error(what: str, exc: BaseException) -> UpstreamError:
    return UpstreamError(ErrorInfo.of(
        ErrorKind.SERVER, f"the worker could not {what} the object store "
        f"({type(exc).__name__}); try again"))


async def _uploads(store: MediaStore | None, call: UpstreamCall) -> list[Upload]:
    refs = files_of(call.body)
    if not refs:
        return []
    if store is None:
        raise _store_error("reach", RuntimeError("not connected"))
    uploads = []
    for ref in refs:
        try:
            data = await store.get(ref.name)
        except (nats.errors.Error, TimeoutError) as exc:
            raise _store_error("read the upload from", exc) from None
        uploads.append(Upload(ref.field, ref.filename, ref.content_type, data))
    return uploads


async def run(service: WorkerService, attempt: Attempt, call: UpstreamCall) -> None:
    request = attempt.request
    maker = service._provider
    if not isinstance(maker, MediaMaker):
        raise unsupported(service.provider_name, "/v1" + PATHS[request.endpoint])
    uploads = await _uploads(service.media_store, call)
    call = dataclasses.replace(
        call, body={k: v for k, v in call.body.items() if k != FILES_KEY})
    if request.endpoint is Endpoint.SPEECH:
        await _speech(service, attempt, maker, call)
        return
    answer = await maker.media(call, request.endpoint, uploads)
    attempt.first_chunk_at = time.monotonic()
    service._settle(attempt, call, answer.usage)
    reply = await _reply(service.media_store, request.request_id, request.attempt,
                         answer.content_type, answer.body)
    done = DoneFrame(
        usage=answer.usage, response=reply.model_dump(),
        upstream_model=call.deployment.upstream_model,
        latency_ms=(time.monotonic() - attempt.started) * 1000,
        ttft_ms=ttft(attempt), cost=attempt.cost,
    )
    await service._send(attempt, FrameKind.DONE, done.model_dump_json().encode())


async def _reply(store: MediaStore | None, request_id: str, attempt: int, content_type: str,
                 body: bytes) -> MediaReply:
    """The answer inline when it is small text, else in the object store."""
    if len(body) <= INLINE_REPLY_BYTES:
        try:
            return MediaReply(content_type=content_type, body=body.decode())
        except UnicodeDecodeError:
            pass
    if store is None:
        raise _store_error("reach", RuntimeError("not connected"))
    name = object_name(request_id, f"reply.{attempt}")
    try:
        await store.put(name, body)
    except (nats.errors.Error, TimeoutError) as exc:
        raise _store_error("write the answer to", exc) from None
    return MediaReply(content_type=content_type, blob=name)


async def _speech(service: WorkerService, attempt: Attempt, maker: MediaMaker,
                  call: UpstreamCall) -> None:
    sent = 0
    async for piece in maker.speech(call):
        if attempt.first_chunk_at is None:
            attempt.first_chunk_at = time.monotonic()
            # The upstream answered: the text is billed, even if the audio is cut short.
            service._settle(attempt, call, speech_usage(call.body, 0))
        for start in range(0, len(piece), AUDIO_CHUNK_BYTES):
            chunk = piece[start:start + AUDIO_CHUNK_BYTES]
            attempt.chunks += 1
            await service._send(attempt, FrameKind.CHUNK, chunk)
            sent += len(chunk)
    usage = speech_usage(call.body, sent)
    service._settle(attempt, call, usage)
    done = DoneFrame(
        usage=usage, upstream_model=call.deployment.upstream_model,
        latency_ms=(time.monotonic() - attempt.started) * 1000,
        ttft_ms=ttft(attempt), cost=attempt.cost,
    )
    await service._send(attempt, FrameKind.DONE, done.model_dump_json().encode())

