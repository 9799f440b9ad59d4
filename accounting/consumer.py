"""Usage events from JetStream into ClickHouse, in batches, at least once, counted once.

A durable pull consumer (shared by every accounting replica) is read in batches of up to
``batch_size`` events or ``batch_age`` seconds after the first one, whichever comes first;
a message holds one event or a group of them (``schemas.event_message``).
A batch is acked only after its insert returned; if the insert fails, every message is
nak'ed with a delay and comes back later, so events wait in the stream while ClickHouse is
down. Duplicates (a re-published or re-delivered event) are dropped by the store.

Pull requests are sent by hand to ``$JS.API.CONSUMER.MSG.NEXT`` with a callback
subscription on our own inbox, not with nats-py's ``fetch`` or FastStream's batch
``PullSub`` (which wraps it): ``fetch`` waits for each message with its own
``wait_for``, which measured 90 us per event here, four times our whole per-event budget,
and under a trickle it returns one-event batches, the many tiny inserts ClickHouse handles
worst. While one batch is written (in a thread), the next one is already arriving.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import pydantic
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import DEFAULT_PREFIX, AckPolicy, ConsumerConfig, DeliverPolicy, Header

from accounting import metrics
from accounting.store import EventKey, batch_token
from core.usage_stream import DEFAULT_MAX_AGE_S, ensure_usage_stream
from schemas import subjects
from schemas.event_message import SEPARATOR, split_events
from schemas.usage import UsageEvent

log = logging.getLogger("aigw.accounting.consumer")

DURABLE = "aigw-accounting"
# How long one pull request waits for a first event, so stop() is noticed this soon.
IDLE_POLL_S = 0.5
# Longer than the slowest insert we expect: past it, JetStream redelivers the batch to
# another replica while this one may still be writing it (harmless, but wasted work). It is
# also how long the events of a consumer that crashed wait before they are delivered again.
ACK_WAIT_S = 30.0
# Bytes a pull request may bring per event of a batch (an event is about 600).
PULL_BYTES_PER_EVENT = 1024


class Store(Protocol):
    def insert(
        self,
        events: Sequence[UsageEvent | EventKey],
        token: str | None = None,
        bodies: Sequence[bytes] | None = None,
    ) -> int: ...


@dataclass
class ConsumerStats:
    batches: int = 0
    received: int = 0
    inserted: int = 0
    duplicates: int = 0
    failed_batches: int = 0
    invalid: int = 0


# Keys, bodies, the message of each, and how many lines were unreadable.
Events = tuple[list[EventKey], list[bytes], list[int], int]


def read_events(msgs: Sequence[Msg]) -> Events:
    """The usage events of these messages, each message one event or a group of them
    (``schemas.event_message``): their keys, their JSON, which message each came from,
    and how many lines were not usage events (logged and left out)."""
    keys: list[EventKey] = []
    bodies: list[bytes] = []
    owners: list[int] = []
    unreadable = 0
    for i, msg in enumerate(msgs):
        for body in split_events(msg.data):
            try:
                keys.append(EventKey.model_validate_json(body))
            except pydantic.ValidationError as exc:
                log.error("dropping a line on %s that is not a usage event: %s",
                          msg.subject, exc.errors()[:1])
                unreadable += 1
                continue
            bodies.append(body)
            owners.append(i)
    return keys, bodies, owners, unreadable


# ClickHouse errors that mean "these rows cannot be stored", not "ClickHouse is away".
_DATA_ERRORS = re.compile(
    r"\((CANNOT_PARSE_\w+|INCORRECT_DATA|TYPE_MISMATCH|ARGUMENT_OUT_OF_BOUND|DECIMAL_OVERFLOW"
    r"|VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE|ILLEGAL_COLUMN|INCORRECT_NUMBER_OF_COLUMNS)\)"
)


def refused_data(exc: Exception) -> bool:
    return _DATA_ERRORS.search(str(exc)) is not None


class UsageConsumer:
    def __init__(
        self,
        nc: Client,
        store: Store,
        *,
        batch_size: int = 10_000,
        batch_age: float = 1.0,
        retry_delay: float = 5.0,
        stream_max_age: float = DEFAULT_MAX_AGE_S,
        durable: str = DURABLE,
        ack_wait: float = ACK_WAIT_S,
    ) -> None:
        self.ack_wait = ack_wait
        self.nc = nc
        self.js = nc.jetstream()
        self.store = store
        self.batch_size = batch_size
        self.batch_age = batch_age
        self.retry_delay = retry_delay
        self.stream_max_age = stream_max_age
        self.durable = durable
        self.stats = ConsumerStats()
        # False from a failed insert (ClickHouse away) to the next one that works.
        self.store_reachable = True
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._sub: Subscription | None = None
        self._inbox = ""
        self._next = f"{DEFAULT_PREFIX}.CONSUMER.MSG.NEXT.{subjects.USAGE_STREAM}.{durable}"
        # Delivered, not yet taken into a batch.
        self._buffer: list[Msg] = []
        self._buffered_events = 0  # in those messages (a message may hold a group)
        self._wake = asyncio.Event()
        # Messages the open pull request may still deliver; 0 means none is open.
        self._outstanding = 0
        self._request_ends = 0.0

    async def start(self) -> None:
        await ensure_usage_stream(self.js, self.stream_max_age)
        await self.js.add_consumer(
            subjects.USAGE_STREAM,
            ConsumerConfig(
                durable_name=self.durable,
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                filter_subject=subjects.USAGE_SUBJECTS,
                ack_wait=self.ack_wait,
                # One batch being written plus the next arriving, with room to spare; the
                # server default (1000) would cap every batch at 1000.
                max_ack_pending=max(4 * self.batch_size, 1000),
                # Never give up on an event: ClickHouse may be down for a long time.
                max_deliver=-1,
            ),
        )
        self._inbox = self.nc.new_inbox()
        self._sub = await self.nc.subscribe(
            self._inbox, cb=self._on_msg, pending_msgs_limit=max(8 * self.batch_size, 65536),
        )
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name="usage-consumer")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def stop(self, timeout: float = 30.0) -> None:
        """Stop pulling, write and ack what was delivered, unsubscribe. The durable
        consumer stays on the server, so a restart resumes where this one stopped."""
        self._stopping.set()
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout)
            except TimeoutError:
                log.error("usage consumer did not finish its batch within %.0fs", timeout)
            self._task = None
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None
        if self._buffer:
            # Delivered after the last write: JetStream redelivers them after ack_wait.
            log.warning("%d usage messages left unacked at stop", len(self._buffer))
            self._buffer = []
            self._buffered_events = 0

    async def _on_msg(self, msg: Msg) -> None:
        status = msg.headers.get(Header.STATUS) if msg.headers else None
        if status is None:
            self._buffer.append(msg)
            self._buffered_events += msg.data.count(SEPARATOR) + 1
            self._outstanding -= 1
            if (self._outstanding <= 0 or len(self._buffer) == 1
                    or self._buffered_events >= self.batch_size):
                self._wake.set()
        elif status != "100":  # 100 is a heartbeat; 404/408/409 end the pull request
            self._outstanding = 0
            self._wake.set()

    async def _pull(self, wait: float) -> None:
        # Each message is at least one event; max_bytes keeps groups of them from
        # arriving by the thousand, and is never less than the largest message NATS takes.
        want = max(self.batch_size - self._buffered_events, 1)
        max_bytes = max(self.batch_size * PULL_BYTES_PER_EVENT, 2 * self.nc.max_payload)
        expires = max(wait, 0.01)
        await self.nc.publish(
            self._next,
            json.dumps({"batch": want, "max_bytes": max_bytes,
                        "expires": int(expires * 1e9)}).encode(),
            reply=self._inbox,
        )
        self._outstanding = want
        self._request_ends = asyncio.get_running_loop().time() + expires

    async def _run(self) -> None:
        writing: asyncio.Task[None] | None = None
        try:
            while True:
                batch = await self._collect()
                # Read while the previous batch is still being written (in a thread).
                events = read_events(batch) if batch else None
                if writing is not None:
                    await writing
                    writing = None
                if events is not None:
                    writing = asyncio.create_task(self.write(batch, events))
                elif self._stopping.is_set():
                    return
        finally:
            if writing is not None:
                await writing

    async def _collect(self) -> list[Msg]:
        """Up to batch_size messages, returning batch_age after the first one arrived.
        When stopping: whatever the open pull request still delivers, without a new one."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.batch_age if self._buffer else None
        while self._buffered_events < self.batch_size:
            now = loop.time()
            if deadline is not None and now >= deadline:
                break
            if self._outstanding > 0 and now > self._request_ends + 1.0:
                self._outstanding = 0  # its end-of-request status got lost (reconnect)
            if self._outstanding <= 0:
                if self._stopping.is_set():
                    break
                await self._pull(IDLE_POLL_S if deadline is None else deadline - now)
            self._wake.clear()
            timeout = (deadline - now) if deadline is not None else IDLE_POLL_S + 1.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            if self._buffer and deadline is None:
                deadline = loop.time() + self.batch_age
        taken = events = 0
        while taken < len(self._buffer) and events < self.batch_size:
            events += self._buffer[taken].data.count(SEPARATOR) + 1
            taken += 1
        batch = self._buffer[:taken]
        del self._buffer[:taken]
        self._buffered_events -= events
        return batch

    async def write(self, msgs: Sequence[Msg], events: Events) -> None:
        """Insert one batch, then ack it; if ClickHouse is away, nak it for a later retry.

        Only each event's key is parsed here; ClickHouse parses the rest. If it refuses
        the rows, the batch is halved until the rows it refuses are found and dropped, so
        one bad event never holds up the others. A message is acked once every event in
        it is stored (or found stored already), nak'ed if any could not be written, and
        terminated if none of its events can ever be stored. ``events``: ``read_events``
        of ``msgs``.
        """
        keys, bodies, owners, unreadable = events
        outcome = _Outcome()
        if keys:
            await self._insert(list(range(len(keys))), keys, bodies,
                               batch_token([k.event_id for k in keys]), outcome)
        self.stats.invalid += unreadable + len(outcome.dropped)
        waiting = {owners[i] for i in outcome.away}
        kept = {owner for i, owner in enumerate(owners) if i not in outcome.dropped}
        for i, msg in enumerate(msgs):
            if i in waiting:
                await msg.nak(delay=self.retry_delay)
            elif i in kept:
                await msg.ack()
            else:
                # Redelivering a message that can never be stored would only loop; it
                # stays in the stream (until max age) for whoever needs to look at it.
                await msg.term()

    async def _insert(self, entries: list[int], keys: list[EventKey], bodies: list[bytes],
                      token: str | None, outcome: _Outcome) -> None:
        part = [keys[i] for i in entries]
        try:
            with metrics.INSERT_DURATION.time():
                inserted = await asyncio.to_thread(
                    self.store.insert, part, token, [bodies[i] for i in entries]
                )
        except Exception as exc:
            if refused_data(exc) and len(entries) == 1:
                log.error("dropping usage event %s: ClickHouse refuses it: %s",
                          part[0].event_id, exc)
                outcome.dropped.add(entries[0])
            elif refused_data(exc):
                half = len(entries) // 2
                await self._insert(entries[:half], keys, bodies, None, outcome)
                await self._insert(entries[half:], keys, bodies, None, outcome)
            else:
                self.stats.failed_batches += 1
                self.store_reachable = False
                log.warning("usage insert of %d events failed, retrying in %.0fs: %s",
                            len(entries), self.retry_delay, exc)
                outcome.away.update(entries)
            return
        self.store_reachable = True
        self.stats.batches += 1
        self.stats.received += len(entries)
        self.stats.inserted += inserted
        self.stats.duplicates += len(entries) - inserted
        metrics.INSERTED.inc(inserted)
        metrics.DUPLICATES.inc(len(entries) - inserted)


@dataclass
class _Outcome:
    """What became of the events of one batch, by their index in it."""

    dropped: set[int] = field(default_factory=set)  # refused by ClickHouse for good
    away: set[int] = field(default_factory=set)  # not written: ClickHouse is away
