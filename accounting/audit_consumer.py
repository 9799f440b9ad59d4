"""Audit events from JetStream into ClickHouse: at least once delivered, stored once.

A durable pull consumer on the audit stream, shared by every accounting replica. Audit
events are rare (one per admin action), so this is the plain ``fetch`` loop, not the usage
consumer's hand-made pipeline. A batch is acked once its insert returned; if ClickHouse is
away, it is nak'ed with a delay and comes back. An unreadable message is terminated.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import pydantic
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext

from core.audit_stream import ensure_audit_stream
from schemas import subjects
from schemas.audit import AuditEvent

log = logging.getLogger("aigw.accounting.audit")

DURABLE = "aigw-accounting-audit"
BATCH = 200
FETCH_WAIT_S = 0.5


class Store(Protocol):
    def insert(self, events: Sequence[AuditEvent]) -> int: ...


@dataclass
class AuditStats:
    received: int = 0
    inserted: int = 0
    duplicates: int = 0
    invalid: int = 0
    failed_batches: int = 0


class AuditConsumer:
    def __init__(self, nc: Client, store: Store, *, retry_delay: float = 5.0,
                 durable: str = DURABLE) -> None:
        self.js: JetStreamContext = nc.jetstream()
        self.store = store
        self.retry_delay = retry_delay
        self.durable = durable
        self.stats = AuditStats()
        self._sub: JetStreamContext.PullSubscription | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await ensure_audit_stream(self.js)
        self._sub = await self.js.pull_subscribe(
            subjects.AUDIT_SUBJECTS, durable=self.durable, stream=subjects.AUDIT_STREAM,
            config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT,
                                  deliver_policy=DeliverPolicy.ALL, ack_wait=30.0,
                                  max_deliver=-1),
        )
        self._task = asyncio.create_task(self._run(), name="audit-consumer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    async def _run(self) -> None:
        assert self._sub is not None
        while True:
            try:
                msgs = await self._sub.fetch(BATCH, timeout=FETCH_WAIT_S)
            except NatsTimeout:
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # NATS away: try again shortly
                log.warning("audit fetch failed: %s", exc)
                await asyncio.sleep(1.0)
                continue
            await self.write(msgs)

    async def write(self, msgs: Sequence[Msg]) -> None:
        good: list[Msg] = []
        events: list[AuditEvent] = []
        for msg in msgs:
            try:
                events.append(AuditEvent.model_validate_json(msg.data))
            except pydantic.ValidationError as exc:
                log.error("dropping a message on %s that is not an audit event: %s",
                          msg.subject, exc.errors()[:1])
                self.stats.invalid += 1
                await msg.term()
                continue
            good.append(msg)
        if not good:
            return
        try:
            inserted = await asyncio.to_thread(self.store.insert, events)
        except Exception as exc:
            self.stats.failed_batches += 1
            log.warning("audit insert of %d events failed, retrying in %.0fs: %s",
                        len(good), self.retry_delay, exc)
            for msg in good:
                await msg.nak(delay=self.retry_delay)
            return
        for msg in good:
            await msg.ack()
        self.stats.received += len(good)
        self.stats.inserted += inserted
        self.stats.duplicates += len(good) - inserted
