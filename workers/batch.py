"""Running batch items: a small pull consumer beside a worker's interactive subscription.

Items come from the work-queue stream (one durable pull consumer per provider, shared by
that provider's workers) and run through the very path an interactive attempt takes
(:class:`workers.service.WorkerService`), so the provider adapter, pricing and the usage
event (carrying ``batch_id``) are the same. Their frames never cross the bus: the runner
hands the service a local reply subject and :meth:`BatchRunner.deliver` takes the frames.

Interactive requests come first: the runner fetches only while the worker has room
(interactive in-flight below half its concurrency, and no interactive attempt refused as
busy in the last seconds: :mod:`workers.capacity`) and never runs more than
:data:`CONCURRENCY` items at once.

Exactly once, as the files see it: a result is written with a KV ``create`` keyed by the
item's line, which fails if one is there, and a redelivered item whose result exists is
acknowledged without a call. A result too large for a NATS message is stored as a
``response_too_large`` error instead, so the item ends after one paid call.

Each upstream call, as accounting sees it: an item cut off with its worker (a drain that
ran out, a crash) is redelivered after :data:`ACK_WAIT` (kept short; running items are
marked in progress) and runs again. Each delivery numbers its attempts from
:func:`first_attempt`, and each further attempt (routed by the ingress: failover, fallback,
retry) takes the next number, so every call has a usage event id of its own: the earlier
delivery's event (a cancelled call, a 429) never shadows the call that answered.

A worker killed outright publishes no event for the call it was in. So before each call a
delivery records the attempt it is about to make (KV ``aigw_batch_runs``, one key per
delivery), and a later delivery of an item with no result accounts every earlier
delivery's recorded attempt as :mod:`ingress.dispatch.lost` accounts an interactive one: the event
id that worker would have used, status ``error`` (``connection``, 502), the prompt
estimated (:func:`lost_usage`) and priced. First event wins: if that worker did publish (a
drain that cancelled its call), the copy is dropped as a duplicate by JetStream or the
accounting store. The records expire with the batch's results (purged with them once the
files are written, or aged out).

Items run while their batch is ``in_progress``; those of a batch still ``validating`` wait
for it (within their delivery, so waiting spends none of ``MAX_DELIVERIES``), those of a
batch in any other status are dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.client import JetStreamContext

from core.batch_store import Buckets, ensure
from core.telemetry import tracing
from schemas import estimate, subjects
from schemas.batch import (
    STOPPED,
    BatchItem,
    BatchRecord,
    BatchStatus,
    ItemResult,
    error_line,
    item_msg_id,
    result_key,
)
from schemas.batch_admission import AdmitAnswer, Verdict
from schemas.errors import RETRYABLE, ErrorInfo, ErrorKind
from schemas.frames import KIND_HEADER, DoneFrame, ErrorFrame, FrameKind
from schemas.infer import Endpoint, InferRequest
from schemas.usage import TokenUsage
from workers import spans
from workers.batch_admission import AdmissionClient, Route
from workers.batch_results import item_result as _result
from workers.batch_results import too_large
from workers.capacity import Capacity
from workers.metrics import batch_item_done
from workers.service import WorkerService

log = logging.getLogger("aigw.worker")

LOCAL_PREFIX = "_AIGW_BATCH_LOCAL."
CONCURRENCY = 16
ACK_WAIT = 5.0
# Deliveries after which an item that keeps killing its worker goes to the error file.
MAX_DELIVERIES = 5
# Attempts per delivery: routed by an ingress (failover, fallbacks, retry rounds), or,
# with no ingress to ask, retries of transient failures on the item's own deployment.
ATTEMPTS = 6
UNROUTED_TRIES = 3
STATUS_TTL = 1.0
# An item of a batch still validating waits here (its ack deadline kept alive), checking
# the batch this often, for up to VALIDATING_WAIT seconds: a delivery handed back would count
# towards MAX_DELIVERIES. Past that it is handed back, to come again VALIDATING_DELAY later.
VALIDATING_POLL = 0.5
VALIDATING_WAIT = 60.0
VALIDATING_DELAY = 30.0
# How a call is accounted whose worker died in it (a later delivery finds its record).
LOST = ErrorInfo.of(ErrorKind.CONNECTION, "the worker running this call was lost")
NOWHERE = ErrorInfo.of(ErrorKind.NOT_FOUND, "No deployment serves the item's model now.",
                       code="model_not_found")


def run_key(item: BatchItem, delivery: int) -> str:
    """KV key (bucket ``aigw_batch_runs``) of the attempt a delivery of an item began last
    (a delivery of the item as handed over to another provider has keys of its own)."""
    base = f"{item.batch_id}.{item.line}.{delivery}"
    return base if not item.moves else f"{base}.m{item.moves}"


def first_attempt(item: BatchItem, delivery: int) -> int:
    """The attempt number a delivery starts from: no two deliveries, nor two copies of an
    item handed over between providers, share one, so every call has an event id of its
    own."""
    return (item.moves * MAX_DELIVERIES + delivery - 1) * ATTEMPTS


class Moved:  # the item was handed over to another provider's queue
    pass


MOVED = Moved()
Outcome = DoneFrame | ErrorFrame | Moved | None


def lost_usage(request: InferRequest) -> TokenUsage:
    """What a call whose worker died is accounted at: its prompt, estimated by the rules
    the ingress uses for a lost interactive attempt; nothing of the answer was seen."""
    if request.endpoint in (Endpoint.EMBEDDINGS, Endpoint.MODERATIONS):
        tokens = estimate.embedding_tokens(request.body)
    else:
        tokens = estimate.prompt_tokens(request.body)
    return TokenUsage(prompt_tokens=tokens, estimated=True)


def backoff(attempt: int, error: ErrorInfo) -> float:
    """Seconds before retry ``attempt`` (1, 2, ...): the provider's hint, else doubling."""
    if error.retry_after is not None:
        return min(float(error.retry_after), 30.0)
    return min(0.5 * 2.0 ** (attempt - 1), 8.0)


class BatchRunner:
    def __init__(self, provider: str, service: WorkerService, concurrency: int,
                 capacity: Capacity | None = None, admit: bool = False) -> None:
        self._provider = provider
        self._admit_items = admit  # ask an ingress first (rate limits, budgets)
        self._admission: AdmissionClient | None = None
        self._service = service
        self._worker_concurrency = concurrency
        self._gate = capacity if capacity is not None else Capacity(concurrency)
        self._capacity = min(CONCURRENCY, concurrency)
        self._waiting: dict[str, asyncio.Future[DoneFrame | ErrorFrame]] = {}
        self._active: set[asyncio.Task[None]] = set()
        self._calling = 0  # items inside the service: interactive = in_flight - _calling
        self._status: dict[str, tuple[float, BatchStatus | None]] = {}
        self._buckets: Buckets | None = None
        self._js: JetStreamContext | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._sub: JetStreamContext.PullSubscription | None = None
        self._max_payload = 0
        self._stopping = False

    # ---- local replies -----------------------------------------------------------------

    @staticmethod
    def takes(subject: str) -> bool:
        return subject.startswith(LOCAL_PREFIX)

    def deliver(self, subject: str, body: bytes, headers: dict[str, str]) -> None:
        """A frame the service sent to a local reply subject."""
        future = self._waiting.get(subject)
        if future is None or future.done():
            return
        kind = headers.get(KIND_HEADER)
        if kind == FrameKind.DONE.value:
            future.set_result(DoneFrame.model_validate_json(body))
        elif kind == FrameKind.ERROR.value:
            future.set_result(ErrorFrame.model_validate_json(body))

    # ---- lifecycle ---------------------------------------------------------------------

    async def start(self, nc: Client) -> None:
        js = nc.jetstream()
        self._max_payload = nc.max_payload
        self._js = js
        self._buckets = await ensure(js)
        if self._admit_items:
            self._admission = AdmissionClient(nc)
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
        return self._calling

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
        if await self._has_result(item):
            # Its worker may have died between storing the result and sending the event.
            await self._account_lost(item, delivery)
            await msg.ack()
            return
        await self._account_lost(item, delivery)
        status = await self._batch_status(item.batch_id)
        waited = 0.0
        while status is BatchStatus.VALIDATING:  # the ingress may yet fail the batch
            if waited >= VALIDATING_WAIT:
                await msg.nak(delay=VALIDATING_DELAY)
                return
            await asyncio.sleep(VALIDATING_POLL)
            waited += VALIDATING_POLL
            status = await self._batch_status(item.batch_id)
        if status is None or status in STOPPED:
            await msg.ack()
            batch_item_done(self._provider, "cancelled")
            return
        if delivery > MAX_DELIVERIES:
            await self._store(item, ItemResult(
                line=item.line, custom_id=item.custom_id, ok=False,
                output=error_line(item.batch_id, item.custom_id, "delivery_limit",
                                  f"The request was tried {MAX_DELIVERIES} times and never "
                                  "finished.")))
            await msg.ack()
            batch_item_done(self._provider, "failed")
            return
        if tracing.enabled:
            with spans.batch_item(item) as span:
                frame = await self._call(item, delivery)
                spans.batch_item_result(span, frame)
        else:
            frame = await self._call(item, delivery)
        if frame is None:  # cancelled with the worker: leave it for redelivery
            return
        if isinstance(frame, Moved):
            await msg.ack()
            batch_item_done(self._provider, "moved")
            return
        stored = await self._store(item, _result(item, frame))
        await msg.ack()
        if stored is not None:
            batch_item_done(self._provider, "completed" if stored else "failed")

    async def _call(self, item: BatchItem, delivery: int) -> Outcome:
        if self._admission is None:
            return await self._call_unrouted(item, delivery)
        frame: DoneFrame | ErrorFrame | None = None
        failed = list(item.failed)
        request = item.request
        first = first_attempt(item, delivery)
        retries = 0
        for n in range(ATTEMPTS):
            request = request.model_copy(update={"attempt": first + n})
            last = frame.error if isinstance(frame, ErrorFrame) else None
            found = await self._admission.admit(
                request, lambda: self._stopping,
                Route(self._provider, tuple(failed), last, item.moves))
            if found is None:  # stopping: leave the item for redelivery
                return None
            if found.verdict is Verdict.EXHAUSTED:
                return frame if frame is not None else ErrorFrame(error=NOWHERE)
            if found.verdict is Verdict.MOVE:
                return await self._move(item, found, failed)
            if found.error is not None:  # refused: a spent budget, a revoked key
                return ErrorFrame(error=found.error)
            if found.deployment_id is not None and found.deployment_id != request.deployment_id:
                request = request.model_copy(update={"deployment_id": found.deployment_id})
            if found.route == "retry" and last is not None:
                # Nothing else is left: the same deployments again, after a backoff.
                retries += 1
                await asyncio.sleep(backoff(retries, last))
            frame = await self._run_attempt(item, delivery, request)
            await self._admission.settle(found, request, frame)
            if not isinstance(frame, ErrorFrame):
                return frame
            if frame.error.kind is ErrorKind.CANCELLED:
                return None
            if request.deployment_id not in failed:
                failed.append(request.deployment_id)
        return frame

    async def _call_unrouted(self, item: BatchItem, delivery: int) -> Outcome:
        """No ingress to ask (a worker run on its own): the item's own deployment, with
        retries of transient failures."""
        frame: DoneFrame | ErrorFrame | None = None
        first = first_attempt(item, delivery)
        for retry in range(UNROUTED_TRIES):
            request = item.request.model_copy(update={"attempt": first + retry})
            frame = await self._run_attempt(item, delivery, request)
            if not isinstance(frame, ErrorFrame):
                return frame
            error = frame.error
            if error.kind is ErrorKind.CANCELLED:
                return None
            if error.kind not in RETRYABLE or retry == UNROUTED_TRIES - 1:
                return frame
            await asyncio.sleep(backoff(retry + 1, error))
        return frame

    async def _run_attempt(self, item: BatchItem, delivery: int,
                           request: InferRequest) -> DoneFrame | ErrorFrame | None:
        await self._kv.runs.put(run_key(item, delivery), str(request.attempt).encode())
        return await self._attempt(request.model_dump_json().encode())

    async def _move(self, item: BatchItem, answer: AdmitAnswer, failed: list[str]) -> Moved:
        """Onto the queue of the provider it was routed to, under an id of its own per move
        (a worker that dies before acknowledging this delivery hands it over once)."""
        assert answer.deployment_id is not None
        assert answer.provider is not None
        moved = item.model_copy(update={
            "request": item.request.model_copy(update={"deployment_id": answer.deployment_id}),
            "moves": item.moves + 1, "failed": tuple(failed)})
        await self._jetstream.publish(
            subjects.batch_items(answer.provider, item.batch_id),
            moved.model_dump_json().encode(),
            headers={"Nats-Msg-Id": item_msg_id(item.batch_id, item.line, moved.moves)})
        log.info("batch item %s line %d: handed to %s (%s, %s)", item.batch_id, item.line,
                 answer.provider, answer.deployment_id, answer.route)
        return MOVED

    async def _attempt(self, data: bytes) -> DoneFrame | ErrorFrame | None:
        reply = f"{LOCAL_PREFIX}{uuid.uuid4().hex}"
        future: asyncio.Future[DoneFrame | ErrorFrame] = (
            asyncio.get_running_loop().create_future())
        self._waiting[reply] = future
        self._calling += 1
        try:
            await self._service.handle(data, reply)
            return future.result() if future.done() else None
        finally:
            self._calling -= 1
            self._waiting.pop(reply, None)

    # ---- state in KV ---------------------------------------------------------------------

    @property
    def _jetstream(self) -> JetStreamContext:
        if self._js is None:
            raise RuntimeError("BatchRunner.start() was not awaited")
        return self._js

    @property
    def _kv(self) -> Buckets:
        if self._buckets is None:
            raise RuntimeError("BatchRunner.start() was not awaited")
        return self._buckets

    async def _has_result(self, item: BatchItem) -> bool:
        for ok in (True, False):
            try:
                await self._kv.results.get(result_key(item.batch_id, ok, item.line))
            except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
                continue
            return True
        return False

    async def _account_lost(self, item: BatchItem, delivery: int) -> None:
        """Account the call each earlier delivery recorded and may have died in; a copy
        of an event its worker did publish is dropped downstream as a duplicate."""
        for earlier in range(1, delivery):
            try:
                entry = await self._kv.runs.get(run_key(item, earlier))
            except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
                continue  # it made no call (a validating wait handed back)
            value = (entry.value or b"").decode()
            attempt = int(value) if value.isdigit() else first_attempt(item, earlier)
            request = item.request.model_copy(update={"attempt": attempt})
            self._service.report_lost(request, lost_usage(request), LOST)
            log.info("batch item %s: attempt %d (delivery %d) left no result; accounted "
                     "an estimate unless its worker did", request.request_id, attempt, earlier)

    async def _batch_status(self, batch_id: str) -> BatchStatus | None:
        """The batch's status (None: it is gone), read at most every :data:`STATUS_TTL`."""
        now = time.monotonic()
        cached = self._status.get(batch_id)
        if cached is None or now - cached[0] > STATUS_TTL:
            try:
                entry = await self._kv.batches.get(batch_id)
                status = (BatchRecord.model_validate_json(entry.value).batch.status
                          if entry.value else None)
            except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
                status = None
            cached = (now, status)
            self._status[batch_id] = cached
            if len(self._status) > 1000:
                self._status = {k: v for k, v in self._status.items() if now - v[0] <= STATUS_TTL}
        return cached[1]

    async def _store(self, item: BatchItem, result: ItemResult) -> bool | None:
        """Store the item's result once; whether it was an answer (None: stored before)."""
        data = result.model_dump_json().encode()
        try:
            await self._kv.results.create(result_key(item.batch_id, result.ok, item.line), data)
        except nats.js.errors.KeyWrongLastSequenceError:
            return None  # another delivery of the item stored its result first
        except nats.errors.MaxPayloadError:
            # Left unacknowledged, the item would be run (and paid for) on every redelivery.
            error = too_large(item, result, len(data), self._max_payload)
            try:
                await self._kv.results.create(result_key(item.batch_id, False, item.line),
                                              error.model_dump_json().encode())
            except nats.js.errors.KeyWrongLastSequenceError:
                return None
            return False
        return result.ok
