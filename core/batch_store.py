"""Where the Batch API keeps its state, all in NATS JetStream:

| what | store |
|---|---|
| file bytes (input, output, error files) | Object Store ``aigw_files`` |
| file records (``File`` object + owner) | KV ``aigw_files`` |
| batch records (status, counts, cancel) | KV ``aigw_batches`` |
| items waiting to run | work-queue stream ``AIGW_BATCH``, one subject per provider and batch |
| item results | KV ``aigw_batch_results``, key ``<batch>.<ok|err>.<line>`` |
| calls begun, per delivery | KV ``aigw_batch_runs``, key ``<batch>.<line>.<delivery>`` |

Every write that may race (a batch changing status, on several ingress replicas) is a
compare-and-set on the KV revision. Workers use :func:`ensure` too, so whichever process
starts first creates the streams (an identical re-create is a no-op in JetStream).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js.api import KeyValueConfig, RetentionPolicy, StreamConfig
from nats.js.client import JetStreamContext
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue
from nats.js.object_store import ObjectStore
from pydantic import ValidationError

from core import replicas
from core.bucket_watch import BucketWatch
from schemas import subjects
from schemas.batch import (
    ACTIVE,
    WINDOW_SECONDS,
    BatchItem,
    BatchRecord,
    FileRecord,
    ItemResult,
    item_msg_id,
    progress,
)

log = logging.getLogger("aigw.batch")

# A re-submitted item (an ingress retrying a publish) is dropped within this window.
DUPLICATE_WINDOW = 3600.0
RESULTS_TTL = 2 * WINDOW_SECONDS
_CAS_ATTEMPTS = 20
_NOT_FOUND = (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError,
              nats.js.errors.NotFoundError)


@dataclass(frozen=True, slots=True)
class Queued:
    """An item, the provider whose workers run it, and its message body."""

    provider: str
    item: BatchItem
    payload: bytes

    @classmethod
    def of(cls, provider: str, item: BatchItem) -> Queued:
        return cls(provider, item, item.model_dump_json().encode())


@dataclass(frozen=True, slots=True)
class Buckets:
    batches: KeyValue
    results: KeyValue
    runs: KeyValue


async def _bucket(
    js: JetStreamContext, name: str, description: str, ttl: float | None = None
) -> KeyValue:
    try:
        kv = await js.key_value(name)
    except nats.js.errors.BucketNotFoundError:
        return await js.create_key_value(
            KeyValueConfig(bucket=name, history=1, description=description, ttl=ttl,
                           replicas=replicas.wanted()))
    await replicas.check(js, f"KV_{name}")
    return kv


async def ensure(js: JetStreamContext) -> Buckets:
    """The work-queue stream and the batch buckets, created if missing."""
    config = StreamConfig(
        name=subjects.BATCH_STREAM, subjects=[subjects.BATCH_SUBJECTS],
        retention=RetentionPolicy.WORK_QUEUE, duplicate_window=DUPLICATE_WINDOW,
        description="ai-gateway batch items waiting for a worker",
        num_replicas=replicas.wanted(),
    )
    try:
        info = await js.stream_info(subjects.BATCH_STREAM)
        replicas.compare(subjects.BATCH_STREAM, info.config.num_replicas or 1)
    except nats.js.errors.NotFoundError:
        try:
            await js.add_stream(config)
        except nats.js.errors.BadRequestError:
            await js.stream_info(subjects.BATCH_STREAM)  # another process made it first
    return Buckets(
        batches=await _bucket(js, subjects.BATCH_BUCKET, "ai-gateway batches"),
        # Results are dropped once the files are written; a result that lands later (an
        # item that was running when its batch was cancelled) ages out.
        results=await _bucket(js, subjects.BATCH_RESULTS_BUCKET,
                              "ai-gateway batch item results", ttl=RESULTS_TTL),
        runs=await _bucket(js, subjects.BATCH_RUNS_BUCKET, "ai-gateway batch calls begun",
                           ttl=RESULTS_TTL),
    )


async def entries(kv: KeyValue, pattern: str) -> list[tuple[str, bytes]]:
    """Every live key matching ``pattern`` with its value, read in one watch."""
    watcher = await kv.watch(pattern, ignore_deletes=True)
    found: list[tuple[str, bytes]] = []
    try:
        while True:
            entry = await watcher.updates(timeout=10.0)  # type: ignore[no-untyped-call]
            if entry is None:
                break
            if entry.operation not in (KV_DEL, KV_PURGE) and entry.value:
                found.append((entry.key, entry.value))
            if entry.delta == 0:
                break
    finally:
        await watcher.stop()  # type: ignore[no-untyped-call]
    return found


class BatchStore:
    def __init__(self, nc: Client) -> None:
        self._nc = nc
        self._js = nc.jetstream()
        self._buckets: Buckets | None = None
        # Batches with work left, mirrored from KV so the finalizer's loop reads memory.
        self._active: dict[str, BatchRecord] = {}
        self._watch: BucketWatch | None = None
        self._files: KeyValue | None = None
        self._objects: ObjectStore | None = None
        # Live counts of the active batches: (when, completed, failed), so a burst of
        # GETs (or a list of 100 batches) does not count 50,000 result keys each time.
        self._counted: dict[str, tuple[float, int, int]] = {}
        self._counting: dict[str, asyncio.Task[tuple[set[int], set[int]]]] = {}

    async def start(self) -> None:
        self._buckets = await ensure(self._js)
        self._files = await _bucket(self._js, subjects.FILES_BUCKET, "ai-gateway files")
        try:
            self._objects = await self._js.object_store(subjects.FILES_OBJECTS)
            await replicas.check(self._js, f"OBJ_{subjects.FILES_OBJECTS}")
        except nats.js.errors.BucketNotFoundError:
            self._objects = await self._js.create_object_store(
                subjects.FILES_OBJECTS, description="ai-gateway file contents",
                replicas=replicas.wanted())
        self._watch = BucketWatch(self._nc, self._buckets.batches, subjects.BATCH_BUCKET,
                                  self._mirror)
        await self._watch.start()

    async def stop(self) -> None:
        if self._watch is not None:
            await self._watch.stop()

    def _mirror(self, key: str, value: bytes | None, revision: int, op: str | None) -> None:
        record = None
        if value and op not in (KV_DEL, KV_PURGE):
            try:
                record = BatchRecord.model_validate_json(value)
            except ValidationError:
                log.warning("batch record %s cannot be read; skipped", key)
        if record is not None and record.batch.status in ACTIVE:
            self._active[key] = record
        else:
            self._active.pop(key, None)
            self._counted.pop(key, None)

    def active(self) -> list[BatchRecord]:
        """The batches with work left, as last seen (changes go through :meth:`update`)."""
        return list(self._active.values())

    @property
    def buckets(self) -> Buckets:
        if self._buckets is None:
            raise RuntimeError("BatchStore.start() was not awaited")
        return self._buckets

    @property
    def _file_kv(self) -> KeyValue:
        if self._files is None:
            raise RuntimeError("BatchStore.start() was not awaited")
        return self._files

    @property
    def _obs(self) -> ObjectStore:
        if self._objects is None:
            raise RuntimeError("BatchStore.start() was not awaited")
        return self._objects

    # ---- files ---------------------------------------------------------------------------

    async def put_file(self, record: FileRecord, data: bytes) -> None:
        """Bytes first, then the record: a file is listed only once it can be read."""
        await self._obs.put(record.file.id, data)
        await self._file_kv.put(record.file.id, record.model_dump_json().encode())

    async def file(self, file_id: str) -> FileRecord | None:
        try:
            entry = await self._file_kv.get(file_id)
        except (*_NOT_FOUND, nats.js.errors.InvalidKeyError):
            return None
        return FileRecord.model_validate_json(entry.value) if entry.value else None

    async def content(self, file_id: str) -> bytes | None:
        try:
            result = await self._obs.get(file_id)
        except (*_NOT_FOUND, nats.js.errors.ObjectNotFoundError,
                nats.js.errors.ObjectDeletedError):
            return None
        return result.data

    async def delete_file(self, file_id: str) -> None:
        await self._file_kv.delete(file_id)
        try:
            await self._obs.delete(file_id)
        except (*_NOT_FOUND, nats.js.errors.ObjectNotFoundError,
                nats.js.errors.ObjectDeletedError):
            pass

    async def files(self) -> list[FileRecord]:
        return [FileRecord.model_validate_json(v) for _, v in await entries(self._file_kv, ">")]

    # ---- batches -------------------------------------------------------------------------

    async def create_batch(self, record: BatchRecord) -> None:
        await self.buckets.batches.create(record.batch.id, record.model_dump_json().encode())

    async def batch(self, batch_id: str) -> BatchRecord | None:
        try:
            entry = await self.buckets.batches.get(batch_id)
        except (*_NOT_FOUND, nats.js.errors.InvalidKeyError):
            return None
        return BatchRecord.model_validate_json(entry.value) if entry.value else None

    async def update(
        self, batch_id: str, change: Callable[[BatchRecord], BatchRecord | None]
    ) -> BatchRecord | None:
        """Compare-and-set ``change`` onto the batch; ``change`` returns None to leave it
        as it is. Returns the batch as it stands afterwards (None: no such batch)."""
        kv = self.buckets.batches
        for _ in range(_CAS_ATTEMPTS):
            try:
                entry = await kv.get(batch_id)
            except (*_NOT_FOUND, nats.js.errors.InvalidKeyError):
                return None
            if not entry.value or entry.revision is None:
                return None
            current = BatchRecord.model_validate_json(entry.value)
            changed = change(current)
            if changed is None:
                return current
            try:
                await kv.update(batch_id, changed.model_dump_json().encode(),
                                last=entry.revision)
            except nats.js.errors.KeyWrongLastSequenceError:
                await asyncio.sleep(0.01)
                continue
            return changed
        raise RuntimeError(f"batch {batch_id} is being changed concurrently")

    async def batches(self) -> list[BatchRecord]:
        return [BatchRecord.model_validate_json(v)
                for _, v in await entries(self.buckets.batches, ">")]

    # ---- items ---------------------------------------------------------------------------

    @property
    def max_payload(self) -> int:
        """The most bytes a message may carry on this connection (the server's setting)."""
        return self._nc.max_payload

    async def publish_items(self, items: Iterable[Queued]) -> None:
        """Each item on its provider's work queue; a re-publish is deduplicated."""
        pending: list[asyncio.Future[object]] = []
        for queued in items:
            item = queued.item
            pending.append(asyncio.ensure_future(self._js.publish(
                subjects.batch_items(queued.provider, item.batch_id), queued.payload,
                headers={"Nats-Msg-Id": item_msg_id(item.batch_id, item.line)})))
            if len(pending) >= 256:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)

    async def waiting(self, record: BatchRecord, provider: str | None = None) -> int:
        """Items of the batch still on the work queue (not yet acknowledged by a worker):
        all of them, or those of one ``provider``."""
        total = 0
        for name in record.providers if provider is None else [provider]:
            info = await self._js.stream_info(
                subjects.BATCH_STREAM,
                subjects_filter=subjects.batch_items(name, record.batch.id))
            total += sum((info.state.subjects or {}).values())
        return total

    async def drop_items(self, record: BatchRecord) -> None:
        """Remove the batch's items no worker has finished (a cancel)."""
        for provider in record.providers:
            await self._js.purge_stream(
                subjects.BATCH_STREAM, subject=subjects.batch_items(provider, record.batch.id))

    # ---- results -------------------------------------------------------------------------

    def _results_subjects(self, batch_id: str) -> str:
        return f"$KV.{subjects.BATCH_RESULTS_BUCKET}.{batch_id}.>"

    async def progress(self, batch_id: str) -> tuple[set[int], set[int]]:
        """The lines with a result: (succeeded, failed). One scan of the batch's result
        keys (about 3 MB of JSON for 50,000 results), shared by concurrent callers."""
        task = self._counting.get(batch_id)
        if task is None:
            task = asyncio.create_task(self._scan(batch_id))
            self._counting[batch_id] = task
            task.add_done_callback(lambda _: self._counting.pop(batch_id, None))
        return await asyncio.shield(task)

    async def _scan(self, batch_id: str) -> tuple[set[int], set[int]]:
        info = await self._js.stream_info(
            f"KV_{subjects.BATCH_RESULTS_BUCKET}", subjects_filter=self._results_subjects(batch_id))
        ok, failed = progress(list((info.state.subjects or {}).keys()))
        if batch_id in self._active:
            self._counted[batch_id] = (time.monotonic(), len(ok), len(failed))
        return ok, failed

    async def counts(self, batch_id: str, max_age: float = 1.0) -> tuple[int, int]:
        """(completed, failed) of a running batch, counted at most ``max_age`` ago."""
        known = self._counted.get(batch_id)
        if known is not None and time.monotonic() - known[0] <= max_age:
            return known[1], known[2]
        ok, failed = await self.progress(batch_id)
        return len(ok), len(failed)

    def last_counts(self, batch_id: str) -> tuple[int, int] | None:
        """(completed, failed) as last counted on this replica (the finalizer counts every
        running batch every few seconds), without counting again."""
        known = self._counted.get(batch_id)
        return None if known is None else (known[1], known[2])

    async def results(self, batch_id: str) -> list[ItemResult]:
        return [ItemResult.model_validate_json(v)
                for _, v in await entries(self.buckets.results, f"{batch_id}.>")]

    async def drop_results(self, batch_id: str) -> None:
        await self._js.purge_stream(f"KV_{subjects.BATCH_RESULTS_BUCKET}",
                                    subject=self._results_subjects(batch_id))
        runs = subjects.BATCH_RUNS_BUCKET
        await self._js.purge_stream(f"KV_{runs}", subject=f"$KV.{runs}.{batch_id}.>")
