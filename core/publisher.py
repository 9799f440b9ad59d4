"""Publishing usage events to JetStream, off the response path.

``submit`` appends the event to the process's spool (:mod:`core.spool`, when it has one)
and to a bounded buffer; a background pump publishes with ``Nats-Msg-Id`` = event id, so a
retried publish is dropped by JetStream, and takes acknowledged events out of the spool.
Usage events are grouped: the pump lets events gather for ``LINGER_S`` and publishes what
waits as one message per subject (``schemas.event_message``), which under load spares
this process, nats-server and accounting one message per call.
While NATS is away, events wait in the buffer and the spool; a process killed meanwhile
replays its spool when it starts again. If the buffer (or the spool) overflows, the dropped
count is logged and kept in ``dropped``, never silent. Workers publish one event per
upstream call; the ingress one per request it answers itself (rejected, served from cache).

The machinery is :class:`EventPublisher`; :class:`UsagePublisher` publishes usage events
on the usage stream, and the ingress's audit trail (``core.audit_publisher``) its audit
events on a stream of their own, each with a spool of its own.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from nats.js.client import JetStreamContext

from core.spool import Spool, SpoolFull
from core.usage_stream import ensure_usage_stream
from schemas import subjects
from schemas.event_message import group_id, join_events
from schemas.usage import UsageEvent

log = logging.getLogger("aigw.usage")

SYNC_EVERY = 0.2  # seconds between fsyncs of the spool
ADOPT_EVERY = 5.0  # seconds between looks for the spools of dead siblings
# How long the pump lets events gather into one message, when fewer than a window wait.
LINGER_S = 0.01
# A group's body at most; an event larger than this goes alone (NATS refuses a message
# over the server's max_payload, 1 MiB by default).
GROUP_BYTES = 256 * 1024


@dataclass(slots=True)
class _Pending:
    event_id: str
    subject: str
    data: bytes
    segment: int  # in the spool; -1 without one
    failed: bool = False


class EventPublisher:
    """Events with an ``event_id``, through a spool, to one JetStream stream. A subclass
    says which subject an event goes to (``_route``) and declares its stream."""

    kind = "event"
    # Whether several events may share one message (their consumer reads groups).
    groups = False

    def __init__(self, js: JetStreamContext, capacity: int = 100_000, window: int = 256,
                 spool: Spool | None = None, linger: float = LINGER_S) -> None:
        self._js = js
        self._linger = linger
        self._buffer: collections.deque[_Pending] = collections.deque()
        self._capacity = capacity
        self._window = window
        self._spool = spool
        self._wake = asyncio.Event()
        self.dropped = 0
        self.published = 0
        # Events whose first publish failed: they wait (in the spool) for a later one.
        self.spooled = 0
        self._task: asyncio.Task[None] | None = None
        self._syncer: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def _drop(self, event_id: str, why: str) -> None:
        self.dropped += 1
        log.error("%s: dropped event %s, %d dropped so far", why, event_id, self.dropped)

    def _route(self, data: bytes) -> tuple[str, str]:
        """(event id, subject) of a spooled event; ValueError if it is unreadable."""
        raise NotImplementedError

    async def _ensure_stream(self) -> None:
        raise NotImplementedError

    def _submit(self, event_id: str, subject: str, data: bytes) -> None:
        if len(self._buffer) >= self._capacity:
            self._drop(event_id, f"{self.kind} buffer full ({self._capacity} events)")
            return
        segment = -1
        if self._spool is not None:
            try:
                segment = self._spool.append(data)
            except SpoolFull:
                self._drop(event_id, f"{self.kind} spool full")
                return
            except OSError as exc:  # a full or failing disk: keep the event in memory
                log.error("could not spool %s event %s: %s", self.kind, event_id, exc)
        self._buffer.append(_Pending(event_id, subject, data, segment))
        self._wake.set()

    def _replay(self, spool: Spool) -> None:
        self._enqueue(spool, spool.recover())

    def _enqueue(self, spool: Spool, recovered: list[tuple[int, bytes]]) -> None:
        for segment, data in recovered:
            try:
                event_id, subject = self._route(data)
            except ValueError:
                log.error("dropping an unreadable line of the %s spool", self.kind)
                spool.acked(segment)
                continue
            self._buffer.append(_Pending(event_id, subject, data, segment))
        if recovered:
            log.warning("replaying %d %s events from the spool %s", len(recovered), self.kind,
                        spool.directory)

    async def start(self) -> None:
        if self._spool is not None:
            self._replay(self._spool)
            self._syncer = asyncio.create_task(self._sync_forever(self._spool))
        self._task = asyncio.create_task(self._pump())
        try:
            await self._ensure_stream()
        except Exception as exc:  # NATS or JetStream away: the pump waits for it
            log.warning("%s stream not ready (%s); events wait in the spool", self.kind, exc)

    async def _sync_forever(self, spool: Spool) -> None:
        loop = asyncio.get_running_loop()
        adopt_at = loop.time() + ADOPT_EVERY
        while True:
            await asyncio.sleep(SYNC_EVERY)
            await asyncio.to_thread(spool.sync)
            if loop.time() >= adopt_at:
                adopt_at = loop.time() + ADOPT_EVERY
                try:
                    orphans = await asyncio.to_thread(spool.adopt_orphans)
                except OSError as exc:
                    log.error("could not adopt a dead sibling's %s spool: %s", self.kind, exc)
                    continue
                if orphans:
                    self._enqueue(spool, orphans)
                    self._wake.set()

    def _messages(self, batch: Sequence[_Pending]) -> list[tuple[str, str, bytes]]:
        """(subject, Nats-Msg-Id, body) of each message for these events: one per event,
        or with ``groups``, one per subject and up to ``GROUP_BYTES``, in order."""
        if not self.groups:
            return [(p.subject, p.event_id, p.data) for p in batch]
        by_subject: dict[str, list[list[_Pending]]] = {}
        sizes: dict[str, int] = {}
        for p in batch:
            groups = by_subject.setdefault(p.subject, [[]])
            if groups[-1] and sizes[p.subject] + len(p.data) + 1 > GROUP_BYTES:
                groups.append([])
                sizes[p.subject] = 0
            groups[-1].append(p)
            sizes[p.subject] = sizes.get(p.subject, 0) + len(p.data) + 1
        return [
            (subject, group_id([p.event_id for p in group]),
             join_events([p.data for p in group]))
            for subject, groups in by_subject.items() for group in groups
        ]

    async def _publish(self, batch: Sequence[_Pending]) -> None:
        await asyncio.gather(*(
            self._js.publish(subject, data, headers={"Nats-Msg-Id": msg_id})
            for subject, msg_id, data in self._messages(batch)
        ))

    async def _pump(self) -> None:
        backoff = 0.1
        retry = 0  # the size of a batch that failed: retried as the very same messages
        while True:
            if not self._buffer:
                self._wake.clear()
                await self._wake.wait()
            if not retry and self.groups and self._linger and len(self._buffer) < self._window:
                await asyncio.sleep(self._linger)
            size = retry or min(self._window, len(self._buffer))
            batch = [self._buffer[i] for i in range(size)]
            try:
                await self._publish(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Keep the batch: the same messages re-published later are deduplicated.
                retry = size
                for pending in batch:
                    if not pending.failed:
                        pending.failed = True
                        self.spooled += 1
                log.warning("%s publish failed (%s); %d events waiting", self.kind, exc,
                            self.pending)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            retry = 0
            backoff = 0.1
            for _ in batch:
                done = self._buffer.popleft()
                if self._spool is not None and done.segment >= 0:
                    self._spool.acked(done.segment)
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
            where = (f"; they stay in the spool {self._spool.directory}" if self._spool
                     else "")
            log.error("stopping with %d %s events unpublished%s", len(self._buffer), self.kind,
                      where)
        for task in (self._task, self._syncer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._spool is not None:
            self._spool.close()


class UsagePublisher(EventPublisher):
    kind = "usage"
    groups = True

    def submit(self, event: UsageEvent) -> None:
        self._submit(event.event_id, subjects.usage(event.provider),
                     event.model_dump_json().encode())

    def _route(self, data: bytes) -> tuple[str, str]:
        event = UsageEvent.model_validate_json(data)
        return event.event_id, subjects.usage(event.provider)

    async def _ensure_stream(self) -> None:
        await ensure_usage_stream(self._js)
