"""Publishing usage events to JetStream, off the response path.

``submit`` only appends to a bounded buffer; a background pump publishes with
``Nats-Msg-Id`` = event id, so a retried publish is dropped by JetStream. While NATS is
away, events wait in the buffer; if it overflows, the dropped count is logged and kept in
``dropped``, never silent. Workers publish one event per upstream call; the ingress one per
request it answers itself (rejected, served from cache).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Sequence

from nats.js.client import JetStreamContext

from core.usage_stream import ensure_usage_stream
from schemas import subjects
from schemas.usage import UsageEvent

log = logging.getLogger("aigw.usage")


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
