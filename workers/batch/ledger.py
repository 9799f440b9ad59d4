"""What a worker reads and writes of batch items in KV: results, attempt records, statuses.

Exactly once, as the files see it: a result is written with a KV ``create`` keyed by the
item's line, which fails if one is there, and a redelivered item whose result exists is
acknowledged without a call. A result too large for a NATS message is stored as a
``response_too_large`` error instead, so the item ends after one paid call.
"""

from __future__ import annotations

import time

import nats.errors
import nats.js.errors
from nats.js.client import JetStreamContext

from core.batch_store import Buckets, ensure
from schemas.batch import BatchItem, BatchRecord, BatchStatus, ItemResult, result_key
from workers.batch.attempts import first_attempt, run_key
from workers.batch.results import too_large

STATUS_TTL = 1.0


class Ledger:
    def __init__(self) -> None:
        self._status: dict[str, tuple[float, BatchStatus | None]] = {}
        self._buckets: Buckets | None = None
        self._max_payload = 0

    async def open(self, js: JetStreamContext, max_payload: int) -> None:
        self._max_payload = max_payload
        self._buckets = await ensure(js)

    @property
    def _kv(self) -> Buckets:
        if self._buckets is None:
            raise RuntimeError("BatchRunner.start() was not awaited")
        return self._buckets

    async def has_result(self, item: BatchItem) -> bool:
        for ok in (True, False):
            try:
                await self._kv.results.get(result_key(item.batch_id, ok, item.line))
            except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
                continue
            return True
        return False

    async def record_attempt(self, item: BatchItem, delivery: int, attempt: int) -> None:
        """Record the attempt a delivery is about to make, before its call."""
        await self._kv.runs.put(run_key(item, delivery), str(attempt).encode())

    async def recorded_attempt(self, item: BatchItem, delivery: int) -> int | None:
        """The attempt a delivery recorded last; None if it made no call."""
        try:
            entry = await self._kv.runs.get(run_key(item, delivery))
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            return None
        value = (entry.value or b"").decode()
        return int(value) if value.isdigit() else first_attempt(item, delivery)

    async def batch_status(self, batch_id: str) -> BatchStatus | None:
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

    async def store(self, item: BatchItem, result: ItemResult) -> bool | None:
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
