"""Running batch items: a small pull consumer beside a worker's interactive subscription.

Items come from the work-queue stream (one durable pull consumer per provider, shared by
that provider's workers) and run through the very path an interactive attempt takes
(:class:`workers.service.WorkerService`), so the provider adapter, pricing and the usage
event (carrying ``batch_id``) are the same. Their frames never cross the bus
(:mod:`workers.batch.local_replies`).

Interactive requests come first: the runner fetches only while the worker has room
(interactive in-flight below half its concurrency, and no interactive attempt refused as
busy in the last seconds: :mod:`workers.capacity`) and never runs more than
:data:`CONCURRENCY` items at once.

What is kept in KV, exactly once: :mod:`workers.batch.ledger`; how calls are numbered, and
a call lost with its worker accounted: :mod:`workers.batch.attempts`; the calls of one
delivery: :mod:`workers.batch.calls`.

Items run while their batch is ``in_progress``; those of a batch still ``validating`` wait
for it (within their delivery, so waiting spends none of ``MAX_DELIVERIES``), those of a
batch in any other status are dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.client import JetStreamContext

from core.telemetry import tracing
from schemas import subjects
from schemas.batch import STOPPED, BatchItem, BatchStatus, ItemResult, error_line
from workers import spans
from workers.batch.admission import AdmissionClient
from workers.batch.attempts import LOST, MAX_DELIVERIES, lost_usage
from workers.batch.calls import ItemCalls, Moved
from workers.batch.ledger import Ledger
from workers.batch.local_replies import LocalReplies
from workers.batch.results import item_result
from workers.capacity import Capacity
from workers.metrics import batch_item_done
from workers.service import WorkerService

log = logging.getLogger("aigw.worker")

CONCURRENCY = 16
ACK_WAIT = 5.0
# An item of a batch still validating waits here (its ack deadline kept alive), checking
# the batch this often, for up to VALIDATING_WAIT seconds: a delivery handed back would count
# towards MAX_DELIVERIES. Past that it is handed back, to come again VALIDATING_DELAY later.
VALIDATING_POLL = 0.5
VALIDATING_WAIT = 60.0
VALIDATING_DELAY = 30.0


class BatchRunner:
    def __init__(self, provider: str, service: WorkerService, concurrency: int,
                 capacity: Capacity | None = None, admit: bool = False) -> None:
        self._provider = provider
        self._admit_items = admit  # ask an ingress first (rate limits, budgets)
        self._service = service
        self._worker_concurrency = concurrency
        self._gate = capacity if capacity is not None else Capacity(concurrency)
        self._capacity = min(CONCURRENCY, concurrency)
        self._replies = LocalReplies(service)
        self._ledger = Ledger()
        self._calls = ItemCalls(provider, self._replies, self._ledger, lambda: self._stopping)
        self._active: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._sub: JetStreamContext.PullSubscription | None = None
        self._stopping = False

    # ---- local replies -----------------------------------------------------------------

    @staticmethod
    def takes(subject: str) -> bool:
        return LocalReplies.takes(subject)

    def deliver(self, subject: str, body: bytes, headers: dict[str, str]) -> None:
        """A frame the service sent to a local reply subject."""
        self._replies.deliver(subject, body, headers)

    # ---- lifecycle ---------------------------------------------------------------------

    async def start(self, nc: Client) -> None:
        js = nc.jetstream()
        await self._ledger.open(js, nc.max_payload)
        self._calls.start(js, AdmissionClient(nc) if self._admit_items else None)
        self._loop_task = asyncio.create_task(self._run_forever(js))

    async def stop(self, deadline: float) -> None:
        """Stop fetching; let running items finish until ``deadline`` (loop time); an item
        cut off is not acknowledged, so another worker runs it."""
        self._stopping = True
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        if self._sub is not None:
            # A pull subscription left open holds up the connection's drain.
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
        loop = asyncio.get_running_loop()
        while self._active and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for task in list(self._active):
            task.cancel()

    @property
    def running(self) -> int:
        return len(self._active)

    @property
    def calling(self) -> int:
        """Items whose attempt the service is running (counted in its ``in_flight``)."""
        return self._replies.calling

    def _room(self) -> int:
        if self._gate.interactive_waiting():
            return 0
        interactive = self._service.in_flight - len(self._active)
        if interactive * 2 >= self._worker_concurrency:
            return 0
        return min(self._capacity - len(self._active),
                   self._worker_concurrency - self._service.in_flight)

    async def _subscribe(self, js: JetStreamContext) -> JetStreamContext.PullSubscription:
        config = ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=ACK_WAIT,
                                max_ack_pending=10_000)
        return await js.pull_subscribe(
            subjects.batch_provider_items(self._provider),
            durable=subjects.batch_consumer(self._provider),
            stream=subjects.BATCH_STREAM, config=config)

    async def _run_forever(self, js: JetStreamContext) -> None:
        sub: JetStreamContext.PullSubscription | None = None
        while not self._stopping:
            try:
                if sub is None:
                    sub = self._sub = await self._subscribe(js)
                room = self._room()
                if room <= 0:
                    await asyncio.sleep(0.05)
                    continue
                try:
                    msgs = await sub.fetch(room, timeout=1.0)
                except (TimeoutError, nats.errors.TimeoutError):
                    continue
                for msg in msgs:
                    task = asyncio.create_task(self._handle(msg))
                    self._active.add(task)
                    task.add_done_callback(self._active.discard)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # NATS away or the consumer gone: try again shortly
                log.warning("batch consumer for %s: %s", self._provider, exc)
                if sub is not None:
                    with contextlib.suppress(Exception):
                        await sub.unsubscribe()
                sub = self._sub = None
                await asyncio.sleep(1.0)

    # ---- one item ------------------------------------------------------------------------

    async def _handle(self, msg: Msg) -> None:
        keepalive = asyncio.create_task(self._keep_alive(msg))
        try:
            await self._process(msg)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("batch item failed inside the worker; it will be redelivered")
        finally:
            keepalive.cancel()

    @staticmethod
    async def _keep_alive(msg: Msg) -> None:
        while True:
            await asyncio.sleep(ACK_WAIT / 3)
            with contextlib.suppress(Exception):
                await msg.in_progress()

    async def _process(self, msg: Msg) -> None:
        try:
            item = BatchItem.model_validate_json(msg.data)
        except ValueError:
            log.error("dropping a batch item that cannot be read")
            await msg.term()
            return
        delivery = msg.metadata.num_delivered or 1
        if await self._ledger.has_result(item):
            # Its worker may have died between storing the result and sending the event.
            await self._account_lost(item, delivery)
            await msg.ack()
            return
        await self._account_lost(item, delivery)
        status = await self._ledger.batch_status(item.batch_id)
        waited = 0.0
        while status is BatchStatus.VALIDATING:  # the ingress may yet fail the batch
            if waited >= VALIDATING_WAIT:
                await msg.nak(delay=VALIDATING_DELAY)
                return
            await asyncio.sleep(VALIDATING_POLL)
            waited += VALIDATING_POLL
            status = await self._ledger.batch_status(item.batch_id)
        if status is None or status in STOPPED:
            await msg.ack()
            batch_item_done(self._provider, "cancelled")
            return
        if delivery > MAX_DELIVERIES:
            await self._ledger.store(item, ItemResult(
                line=item.line, custom_id=item.custom_id, ok=False,
                output=error_line(item.batch_id, item.custom_id, "delivery_limit",
                                  f"The request was tried {MAX_DELIVERIES} times and never "
                                  "finished.")))
            await msg.ack()
            batch_item_done(self._provider, "failed")
            return
        if tracing.enabled:
            with spans.batch_item(item) as span:
                frame = await self._calls.call(item, delivery)
                spans.batch_item_result(span, frame)
        else:
            frame = await self._calls.call(item, delivery)
        if frame is None:  # cancelled with the worker: leave it for redelivery
            return
        if isinstance(frame, Moved):
            await msg.ack()
            batch_item_done(self._provider, "moved")
            return
        stored = await self._ledger.store(item, item_result(item, frame))
        await msg.ack()
        if stored is not None:
            batch_item_done(self._provider, "completed" if stored else "failed")

    async def _account_lost(self, item: BatchItem, delivery: int) -> None:
        """Account the call each earlier delivery recorded and may have died in; a copy
        of an event its worker did publish is dropped downstream as a duplicate."""
        for earlier in range(1, delivery):
            attempt = await self._ledger.recorded_attempt(item, earlier)
            if attempt is None:
                continue  # it made no call (a validating wait handed back)
            request = item.request.model_copy(update={"attempt": attempt})
            self._service.report_lost(request, lost_usage(request), LOST)
            log.info("batch item %s: attempt %d (delivery %d) left no result; accounted "
                     "an estimate unless its worker did", request.request_id, attempt, earlier)
