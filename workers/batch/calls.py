"""A batch item's calls in one delivery: attempts routed by an ingress (failover, fallbacks,
retry rounds), or, with no ingress to ask, retried on the item's own deployment; or the
item handed over to the queue of the provider it was routed to."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from nats.js.client import JetStreamContext

from schemas import subjects
from schemas.batch import BatchItem, item_msg_id
from schemas.batch_admission import AdmitAnswer, Verdict
from schemas.errors import RETRYABLE, ErrorInfo, ErrorKind
from schemas.frames import DoneFrame, ErrorFrame
from schemas.infer import InferRequest
from workers.batch.admission import AdmissionClient, Route
from workers.batch.attempts import ATTEMPTS, UNROUTED_TRIES, backoff, first_attempt
from workers.batch.ledger import Ledger
from workers.batch.local_replies import LocalReplies

log = logging.getLogger("aigw.worker")

NOWHERE = ErrorInfo.of(ErrorKind.NOT_FOUND, "No deployment serves the item's model now.",
                       code="model_not_found")


class Moved:  # the item was handed over to another provider's queue
    pass


MOVED = Moved()
Outcome = DoneFrame | ErrorFrame | Moved | None


class ItemCalls:
    def __init__(self, provider: str, replies: LocalReplies, ledger: Ledger,
                 stopping: Callable[[], bool]) -> None:
        self._provider = provider
        self._replies = replies
        self._ledger = ledger
        self._stopping = stopping
        self._admission: AdmissionClient | None = None
        self._js: JetStreamContext | None = None

    def start(self, js: JetStreamContext, admission: AdmissionClient | None) -> None:
        """``admission``: the ingress to ask first (rate limits, budgets), or None."""
        self._js = js
        self._admission = admission

    @property
    def _jetstream(self) -> JetStreamContext:
        if self._js is None:
            raise RuntimeError("BatchRunner.start() was not awaited")
        return self._js

    async def call(self, item: BatchItem, delivery: int) -> Outcome:
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
                request, self._stopping,
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
        await self._ledger.record_attempt(item, delivery, request.attempt)
        return await self._replies.attempt(request.model_dump_json().encode())

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
