"""Usage events out of the worker, published to JetStream.

Publishing never sits on the response path: ``submit`` only appends to a bounded buffer,
and a background pump publishes with ``Nats-Msg-Id`` = event id, so a retried publish is
dropped by JetStream. While NATS is away, events wait in the buffer; if it overflows, the
dropped count is logged and exposed, never silent.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Sequence
from decimal import Decimal

from accounting.stream import ensure_usage_stream
from nats.js.client import JetStreamContext

from schemas import subjects
from schemas.config import Deployment
from schemas.errors import ErrorInfo
from schemas.infer import InferRequest
from schemas.usage import TokenUsage, UsageEvent, UsageStatus, event_id

log = logging.getLogger("aigw.worker.usage")


def build_event(
    request: InferRequest,
    provider: str,
    deployment: Deployment | None,
    usage: TokenUsage | None,
    error: ErrorInfo | None,
    cancelled: bool,
    latency_ms: float,
    ttft_ms: float | None,
    cost: Decimal | None,
    price_version: str,
) -> UsageEvent:
    """The one event of one upstream call."""
    usage = usage or TokenUsage()
    if cancelled:
        status, http_status = UsageStatus.CANCELLED, 499
    elif error is not None:
        status, http_status = UsageStatus.ERROR, error.status
    else:
        status, http_status = UsageStatus.OK, 200
    body = request.body
    end_user = request.end_user or body.get("safety_identifier") or body.get("user")
    return UsageEvent(
        event_id=event_id(request.request_id, request.attempt),
        request_id=request.request_id,
        attempt=request.attempt,
        key_id=request.key_id,
        team_id=request.team_id,
        end_user=end_user if isinstance(end_user, str) else None,
        model_alias=request.model_alias,
        provider=provider,
        deployment_id=request.deployment_id,
        upstream_model=deployment.upstream_model if deployment else None,
        endpoint=request.endpoint.value,
        streamed=request.stream,
        status=status,
        error_type=error.kind.value if error is not None else None,
        http_status=http_status,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        cached_tokens=usage.cached_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        reasoning_tokens=usage.reasoning_tokens,
        cost=cost,
        price_version=price_version if cost is not None else None,
        latency_ms=round(latency_ms, 3),
        ttft_ms=round(ttft_ms, 3) if ttft_ms is not None else None,
        batch_id=request.batch_id,
        metadata=request.metadata,
    )


class UsagePublisher:
    def __init__(self, js: JetStreamContext, capacity: int = 100_000, window: int = 256) -> None:
        self._js = js
        self._buffer: collections.deque[UsageEvent] = collections.deque()
        self._capacity = capacity
        self._window = window
        self._wake = asyncio.Event()
        self.dropped = 0
        self.published = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def submit(self, event: UsageEvent) -> None:
        if len(self._buffer) >= self._capacity:
            self.dropped += 1
            log.error(
                "usage buffer full (%d events): dropped event %s, %d dropped so far",
                self._capacity, event.event_id, self.dropped,
            )
            return
        self._buffer.append(event)
        self._wake.set()

    async def start(self) -> None:
        await ensure_usage_stream(self._js)
        self._task = asyncio.create_task(self._pump())

    async def _publish(self, batch: Sequence[UsageEvent]) -> None:
        await asyncio.gather(*(
            self._js.publish(
                subjects.usage(e.provider),
                e.model_dump_json().encode(),
                headers={"Nats-Msg-Id": e.event_id},
            )
            for e in batch
        ))

    async def _pump(self) -> None:
        backoff = 0.1
        while True:
            if not self._buffer:
                self._wake.clear()
                await self._wake.wait()
            batch = [self._buffer[i] for i in range(min(self._window, len(self._buffer)))]
            try:
                await self._publish(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Keep the batch: the same ids re-published later are deduplicated.
                log.warning("usage publish failed (%s); %d events waiting", exc, self.pending)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.1
            for _ in batch:
                self._buffer.popleft()
            self.published += len(batch)

    async def flush(self, timeout: float = 10.0) -> bool:
        """Wait until the buffer is empty; False if it is not within ``timeout``."""
        deadline = asyncio.get_running_loop().time() + timeout
        while self._buffer and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        return not self._buffer

    async def stop(self, timeout: float = 10.0) -> None:
        await self.flush(timeout)
        if self._buffer:
            log.error("stopping with %d usage events unpublished", len(self._buffer))
        if self._task is not None:
            self._task.cancel()
