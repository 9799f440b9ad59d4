"""Finishing batches: the output and error files once every item has a result, and the
partial ones of a cancelled batch.

It runs in the ingress, next to the files API that serves what it writes and the batch
records it changes (the accounting process owns ClickHouse and nothing else). Every
replica runs the loop; which one finishes a batch is decided per batch by a lease in its
record (``claimed_by`` / ``claim_until``, compare-and-set), so files are written once,
and a replica that dies mid-way is replaced when its lease runs out. Finishing is
idempotent (file ids are derived from the batch id), so a takeover simply redoes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable

from core.batch_store import BatchStore
from ingress.batch.input import custom_ids, line_bodies
from ingress.batch.responses_lines import as_responses
from schemas.batch import (
    RESPONSES_ENDPOINT,
    BatchError,
    BatchErrors,
    BatchRecord,
    BatchStatus,
    BatchUsage,
    FileObject,
    FileRecord,
    ItemResult,
    RequestCounts,
    error_file_id,
    error_line,
    file_expiry,
    output_file_id,
)

log = logging.getLogger("aigw.batch")

LEASE_SECONDS = 60.0
# A batch still ``validating`` this long after it was created lost its ingress mid-way
# (validation runs inside the create request): it fails, and may be submitted again.
VALIDATION_TIMEOUT = 600.0
# A cancelled batch waits this long for workers to skip its queued items and finish the
# running ones (whose results it keeps); then what is still queued is dropped.
CANCEL_GRACE = 30.0
# Counting a batch's results reads one subject per result (3 MB of JSON for 50,000), so a
# big batch is counted less often than every tick: every ``total / POLL_ITEMS_PER_SECOND``
# seconds, MAX_POLL_INTERVAL at most.
POLL_ITEMS_PER_SECOND = 10_000
MAX_POLL_INTERVAL = 5.0


def render(results: list[ItemResult]) -> tuple[bytes, bytes, RequestCounts, BatchUsage]:
    """The output file, the error file, the counts and the token totals of a batch's
    results, in input order; a line with two results (a redelivered item two workers
    both ran) appears once, its success preferred."""
    by_line: dict[int, ItemResult] = {}
    for result in results:
        held = by_line.get(result.line)
        if held is None or (result.ok and not held.ok):
            by_line[result.line] = result
    ok: list[bytes] = []
    failed: list[bytes] = []
    prompt = completion = cached = reasoning = 0
    for line in sorted(by_line):
        result = by_line[line]
        text = json.dumps(result.output, separators=(",", ":")).encode()
        (ok if result.ok else failed).append(text)
        prompt += result.prompt_tokens
        completion += result.completion_tokens
        cached += result.cached_tokens
        reasoning += result.reasoning_tokens
    usage = BatchUsage(
        input_tokens=prompt, input_tokens_details={"cached_tokens": cached},
        output_tokens=completion, output_tokens_details={"reasoning_tokens": reasoning},
        total_tokens=prompt + completion,
    )
    counts = RequestCounts(total=0, completed=len(ok), failed=len(failed))
    return (b"".join(x + b"\n" for x in ok), b"".join(x + b"\n" for x in failed), counts,
            usage)


# Why a line has no result, as its error line says.
_UNFINISHED = {
    "cancelled": ("batch_cancelled",
                  "This request was not executed because the batch was cancelled."),
    "expired": ("batch_expired",
                "This request could not be executed before the completion window expired."),
    "no_worker": ("no_worker", "This request was not executed: no worker served its "
                  "provider for longer than the gateway waits (AIGW_BATCH_NO_WORKER_SECONDS)."),
}


def _claim(holder: str, now: float) -> Callable[[BatchRecord], BatchRecord | None]:
    def change(record: BatchRecord) -> BatchRecord | None:
        if record.batch.status not in (BatchStatus.IN_PROGRESS, BatchStatus.FINALIZING,
                                       BatchStatus.CANCELLING):
            return None
        if (record.claimed_by not in (None, holder) and record.claim_until is not None
                and record.claim_until > now):
            return None
        return record.model_copy(update={"claimed_by": holder,
                                         "claim_until": now + LEASE_SECONDS})
    return change


class Finalizer:
    """``missing_for(provider)``: for how many seconds no worker of ``provider`` has
    answered (0 while one does). A running batch whose items wait only on providers
    missing for ``no_worker_after`` seconds or more is finished, its lines left with a
    ``no_worker`` error line, rather than waiting for its 24 h window (None: it waits)."""

    def __init__(self, store: BatchStore, tick: float = 0.5,
                 missing_for: Callable[[str], float] = lambda provider: 0.0,
                 no_worker_after: float | None = None) -> None:
        self._store = store
        self._tick = tick
        self._missing_for = missing_for
        self._no_worker_after = no_worker_after
        # Running batches with items for a provider that has no worker, per provider.
        self.stranded: dict[str, int] = {}
        self._id = uuid.uuid4().hex
        self._task: asyncio.Task[None] | None = None
        # When each running batch is next counted (time.monotonic()).
        self._next_count: dict[str, float] = {}

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception as exc:  # NATS away, a record we cannot read: next tick
                log.warning("batch finalizer: %s", exc)
            await asyncio.sleep(self._tick)

    def _due(self, record: BatchRecord) -> bool:
        """Whether to count the batch's results (or queued items) on this tick."""
        interval = min(MAX_POLL_INTERVAL,
                       record.batch.request_counts.total / POLL_ITEMS_PER_SECOND)
        if interval <= self._tick:
            return True
        batch_id = record.batch.id
        clock = time.monotonic()
        if clock < self._next_count.get(batch_id, 0.0):
            return False
        self._next_count[batch_id] = clock + interval
        return True

    async def run_once(self) -> None:
        now = time.time()
        active = self._store.active()
        live = {r.batch.id for r in active}
        for batch_id in [b for b in self._next_count if b not in live]:
            del self._next_count[batch_id]
        stranded: dict[str, int] = {}
        for record in active:
            batch = record.batch
            status = batch.status
            if status is BatchStatus.IN_PROGRESS:
                for provider in record.providers:
                    if self._missing_for(provider) > 0:
                        stranded[provider] = stranded.get(provider, 0) + 1
            if status is BatchStatus.CANCELLING:
                since = now - (batch.cancelling_at or batch.created_at)
                if since > CANCEL_GRACE or (
                        self._due(record) and not await self._store.waiting(record)):
                    await self._finish(record)
            elif status is BatchStatus.FINALIZING:
                await self._finish(record)
            elif status is BatchStatus.IN_PROGRESS:
                if batch.expires_at is not None and now >= batch.expires_at:
                    await self._finish(record)
                    continue
                if not self._due(record):
                    continue
                ok, failed = await self._store.progress(batch.id)
                if (len(ok) + len(failed) >= batch.request_counts.total
                        or await self._stranded(record)):
                    await self._finish(record)
            elif status is BatchStatus.VALIDATING and now - batch.created_at > VALIDATION_TIMEOUT:
                await self._store.update(batch.id, _interrupted(int(now)))
        self.stranded = stranded

    async def _finish(self, record: BatchRecord) -> None:
        batch_id = record.batch.id
        now = time.time()
        claimed = await self._store.update(batch_id, _claim(self._id, now))
        if claimed is None or claimed.claimed_by != self._id:
            return
        # Finished short of a result per line (past its window, or stranded without a
        # worker): the lines left get an error line each, whichever replica finishes it.
        short: str | None = None
        if claimed.batch.status is not BatchStatus.CANCELLING:
            ok, failed = await self._store.progress(batch_id)
            if len(ok) + len(failed) < claimed.batch.request_counts.total:
                expires_at = claimed.batch.expires_at
                short = "expired" if expires_at is not None and now >= expires_at else (
                    "no_worker")
        expired = short == "expired"
        if claimed.batch.status is BatchStatus.IN_PROGRESS:
            claimed = await self._store.update(batch_id, _to_finalizing(self._id))
            if claimed is None or claimed.batch.status is BatchStatus.IN_PROGRESS:
                return
        cancelled = claimed.batch.status is BatchStatus.CANCELLING
        if cancelled or short:
            await self._store.drop_items(claimed)
        results = await self._store.results(batch_id)
        if not await self._complete_read(batch_id, results):
            return  # FINALIZING, claimed by this replica: read again on the next tick
        if cancelled or short:
            results += await self._unfinished(claimed, results,
                                              "cancelled" if cancelled else short or "")
        if claimed.batch.endpoint == RESPONSES_ENDPOINT:
            results = await self._as_responses(claimed, results)
        output, errors, counts, usage = render(results)
        out_id = await self._write(claimed, output_file_id(batch_id), output, now)
        err_id = await self._write(claimed, error_file_id(batch_id), errors, now)
        done = await self._store.update(
            batch_id,
            _finished(self._id, out_id, err_id, counts, usage, int(time.time()), expired))
        if done is not None and done.batch.status in (BatchStatus.COMPLETED,
                                                      BatchStatus.CANCELLED,
                                                      BatchStatus.EXPIRED):
            await self._store.drop_results(batch_id)
            log.info("batch %s %s: %d ok, %d failed", batch_id, done.batch.status.value,
                     counts.completed, counts.failed)

    async def _stranded(self, record: BatchRecord) -> bool:
        """Whether the batch's work left waits only on providers with no worker, each
        missing past the bound."""
        missing = [p for p in record.providers if self._missing_for(p) > 0]
        if not missing or self._no_worker_after is None or any(
                self._missing_for(p) < self._no_worker_after for p in missing):
            return False
        for provider in record.providers:
            if provider not in missing and await self._store.waiting(record, provider):
                return False
        return True

    async def _complete_read(self, batch_id: str, results: list[ItemResult]) -> bool:
        """Whether ``results`` (read through a KV watch) has every line the result keys
        count. While a NATS node rejoins a cluster, a watch may end early and bring back a
        part of the results; a file written from it would drop items for good."""
        ok, failed = await self._store.progress(batch_id)
        counted = len(ok) + len(failed)
        read = len({r.line for r in results})
        if read >= counted:
            return True
        log.warning("batch %s: read %d results of %d; reading again", batch_id, read, counted)
        return False

    async def _as_responses(self, record: BatchRecord,
                            results: list[ItemResult]) -> list[ItemResult]:
        """A Responses batch's answers as Response objects, echoing their lines."""
        data = await self._store.content(record.batch.input_file_id)
        bodies = await asyncio.to_thread(line_bodies, data) if data is not None else {}
        return await asyncio.to_thread(as_responses, results, bodies)

    async def _unfinished(self, record: BatchRecord, results: list[ItemResult],
                          why: str) -> list[ItemResult]:
        """An error result for each line of a cancelled, expired or stranded batch that
        has none, as OpenAI writes them, so ``completed + failed == total``. The custom ids
        are read again from the input file (every line of a batch that ran was an item); a
        file deleted meanwhile leaves those lines out."""
        data = await self._store.content(record.batch.input_file_id)
        if data is None:
            return []
        ids = await asyncio.to_thread(custom_ids, data)
        done = {r.line for r in results}
        code, message = _UNFINISHED[why]
        batch_id = record.batch.id
        return [ItemResult(line=line, custom_id=custom_id, ok=False,
                           output=error_line(batch_id, custom_id, code, message))
                for line, custom_id in ids.items() if line not in done]

    async def _write(self, record: BatchRecord, file_id: str, data: bytes,
                     now: float) -> str | None:
        if not data:
            return None
        await self._store.put_file(FileRecord(
            file=FileObject(id=file_id, bytes=len(data), created_at=int(now),
                            filename=f"{file_id}.jsonl", purpose="batch_output",
                            expires_at=file_expiry("batch_output", int(now), None, None)),
            owner=record.owner), data)
        return file_id


def _to_finalizing(holder: str) -> Callable[[BatchRecord], BatchRecord | None]:
    def change(record: BatchRecord) -> BatchRecord | None:
        if record.batch.status is not BatchStatus.IN_PROGRESS or record.claimed_by != holder:
            return None
        batch = record.batch.model_copy(update={"status": BatchStatus.FINALIZING,
                                                "finalizing_at": int(time.time())})
        return record.model_copy(update={"batch": batch})
    return change


def _finished(
    holder: str, out_id: str | None, err_id: str | None, counts: RequestCounts,
    usage: BatchUsage, now: int, expired: bool = False,
) -> Callable[[BatchRecord], BatchRecord | None]:
    def change(record: BatchRecord) -> BatchRecord | None:
        status = record.batch.status
        if record.claimed_by != holder or status not in (BatchStatus.FINALIZING,
                                                         BatchStatus.CANCELLING):
            return None
        total = record.batch.request_counts.total
        update: dict[str, object] = {
            "output_file_id": out_id, "error_file_id": err_id, "usage": usage,
            "request_counts": counts.model_copy(update={"total": total}),
        }
        if status is BatchStatus.CANCELLING:
            update |= {"status": BatchStatus.CANCELLED, "cancelled_at": now}
        elif expired:
            update |= {"status": BatchStatus.EXPIRED, "expired_at": now}
        else:
            update |= {"status": BatchStatus.COMPLETED, "completed_at": now}
        return record.model_copy(update={"batch": record.batch.model_copy(update=update),
                                         "claimed_by": None, "claim_until": None})
    return change


def _interrupted(now: int) -> Callable[[BatchRecord], BatchRecord | None]:
    def change(record: BatchRecord) -> BatchRecord | None:
        if record.batch.status is not BatchStatus.VALIDATING:
            return None
        errors = BatchErrors(data=[BatchError(
            code="validation_interrupted",
            message="The gateway restarted while validating this batch; submit it again.")])
        batch = record.batch.model_copy(update={"status": BatchStatus.FAILED, "failed_at": now,
                                                "errors": errors})
        return record.model_copy(update={"batch": batch})
    return change
