"""Running a ``/v1/messages`` attempt in the worker: the answer is a ``Message`` or its
stream events, natively or translated (:mod:`workers.protocols.messages.call`), sent back
as done and chunk frames.

A part of :class:`workers.service.WorkerService`, kept apart from chat's path.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from schemas import estimate
from schemas.frames import DoneFrame, FrameKind
from schemas.usage import TokenUsage
from workers.attempt import Attempt, ttft
from workers.protocols.messages import call as messages
from workers.providers.base import UpstreamCall

if TYPE_CHECKING:
    from workers.service import WorkerService


async def run(service: WorkerService, attempt: Attempt, call: UpstreamCall) -> None:
    provider = service._provider
    if not attempt.request.stream:
        result = await messages.complete(provider, call)
        attempt.first_chunk_at = time.monotonic()
        service._settle(attempt, call, result.usage)
        stop = result.response.get("stop_reason")
        done = DoneFrame(
            usage=result.usage, finish_reason=stop if isinstance(stop, str) else None,
            response=result.response, upstream_model=call.deployment.upstream_model,
            latency_ms=(time.monotonic() - attempt.started) * 1000,
            ttft_ms=ttft(attempt), cost=attempt.cost)
        await service._send(attempt, FrameKind.DONE, done.model_dump_json().encode())
        return
    service._settle(attempt, call, TokenUsage())
    # A cut stream's prompt is estimated from the body as chat would see it.
    chat = None if isinstance(provider, messages.NativeMessages) else messages.chat_call(call)
    attempt.call = chat or call
    async for item in messages.stream(provider, call, chat):
        if isinstance(item, TokenUsage):
            service._settle(attempt, call, item)
            continue
        if attempt.first_chunk_at is None:
            attempt.first_chunk_at = time.monotonic()
        attempt.chunks += 1
        chars = estimate.raw_chunk_chars(item)
        if chars:
            attempt.output_chars += chars
            attempt.text_chunks += 1
        await service._send(attempt, FrameKind.CHUNK, item)
    done = DoneFrame(
        usage=attempt.usage or TokenUsage(), upstream_model=call.deployment.upstream_model,
        latency_ms=(time.monotonic() - attempt.started) * 1000, ttft_ms=ttft(attempt),
        cost=attempt.cost)
    attempt.call = None  # complete: the provider's own figures stand
    await service._send(attempt, FrameKind.DONE, done.model_dump_json().encode())
