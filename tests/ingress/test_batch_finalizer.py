"""The batch finalizer against a real nats-server: files written once by one of several
replicas, leases taken over, cancel and expiry with partial results."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import nats
import pytest
from nats.aio.client import Client

from cli.nats_server import NatsServer
from core.batch_store import BatchStore, Queued
from ingress.batch.finalizer import (
    CANCEL_GRACE,
    POLL_ITEMS_PER_SECOND,
    VALIDATION_TIMEOUT,
    Finalizer,
)
from schemas.batch import (
    FILE_EXPIRY_MAX,
    Batch,
    BatchItem,
    BatchRecord,
    BatchStatus,
    FileObject,
    FileRecord,
    ItemResult,
    RequestCounts,
    output_line,
    result_key,
)
from schemas.infer import Endpoint, InferRequest


@pytest.fixture(scope="module")
def own_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """A server of this module's own: the session's one also carries the e2e gateway,
    whose ingress runs a finalizer that would race these tests for their batches."""
    server = NatsServer(tmp_path_factory.mktemp("finalizer-nats"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def store(own_nats: NatsServer) -> AsyncIterator[BatchStore]:
    nc: Client = await nats.connect(own_nats.url)
    store = BatchStore(nc)
    await store.start()
    yield store
    await nc.close()


async def _batch(store: BatchStore, total: int, status: BatchStatus = BatchStatus.IN_PROGRESS,
                 lease: dict[str, object] | None = None, queued: int | None = None,
                 **fields: object) -> BatchRecord:
    batch_id = f"batch_{uuid.uuid4().hex}"
    now = int(time.time())
    record = BatchRecord(
        batch=Batch(id=batch_id, endpoint="/v1/chat/completions", input_file_id="file-x",
                    status=status, created_at=int(fields.pop("created_at", now)),  # type: ignore[call-overload]
                    expires_at=now + 3600,
                    request_counts=RequestCounts(total=total)).model_copy(update=fields),
        owner="key-1", providers=["p"]).model_copy(update=lease or {})
    await store.create_batch(record)
    await store.publish_items(
        Queued.of("p", BatchItem(batch_id=batch_id, line=line, custom_id=f"c{line}",
                                 request=InferRequest(request_id=f"{batch_id}-c{line}",
                                                      endpoint=Endpoint.CHAT, deployment_id="d",
                                                      model_alias="m", body={},
                                                      batch_id=batch_id)))
        for line in range(1, (total if queued is None else queued) + 1))
    deadline = time.monotonic() + 5
    while batch_id not in {r.batch.id for r in store.active()}:  # the finalizer's mirror
        assert time.monotonic() < deadline
        await asyncio.sleep(0.005)
    return record


async def _result(store: BatchStore, batch_id: str, line: int, ok: bool = True) -> None:
    result = ItemResult(line=line, custom_id=f"c{line}", ok=ok,
                        output=output_line(batch_id, f"c{line}", "r", 200 if ok else 500, {}))
    await store.buckets.results.create(result_key(batch_id, ok, line),
                                       result.model_dump_json().encode())


async def _ticked_until_settled(finalizer: Finalizer, store: BatchStore,
                                batch_id: str) -> BatchRecord | None:
    """The batch after as many ticks as it takes (10 s at most) to leave cancelling or
    finalizing: a tick whose read of the results lagged the store's count of them reads
    again at the next tick (``Finalizer._complete_read``), as the running finalizer does."""
    deadline = time.monotonic() + 10
    while True:
        await finalizer.run_once()
        record = await store.batch(batch_id)
        if (record is None or record.batch.status not in (BatchStatus.CANCELLING,
                                                          BatchStatus.FINALIZING)
                or time.monotonic() > deadline):
            return record
        await asyncio.sleep(0.05)


async def _status(store: BatchStore, batch_id: str) -> BatchStatus:
    record = await store.batch(batch_id)
    assert record is not None
    return record.batch.status


async def test_a_batch_is_finished_once_by_one_of_several_replicas(store: BatchStore) -> None:
    record = await _batch(store, 3)
    batch_id = record.batch.id
    await _result(store, batch_id, 1)
    await _result(store, batch_id, 2, ok=False)
    replicas = [Finalizer(store), Finalizer(store)]
    await asyncio.gather(*(f.run_once() for f in replicas))
    assert await _status(store, batch_id) is BatchStatus.IN_PROGRESS

    await _result(store, batch_id, 3)
    await asyncio.gather(*(f.run_once() for f in replicas))
    done = await store.batch(batch_id)
    assert done is not None and done.batch.status is BatchStatus.COMPLETED
    assert done.batch.request_counts == RequestCounts(total=3, completed=2, failed=1)
    assert done.claimed_by is None
    assert done.batch.output_file_id is not None and done.batch.error_file_id is not None
    output = await store.content(done.batch.output_file_id)
    assert output is not None and len(output.splitlines()) == 2
    file = await store.file(done.batch.output_file_id)
    assert file is not None and file.owner == "key-1" and file.file.purpose == "batch_output"
    assert file.file.expires_at == file.file.created_at + FILE_EXPIRY_MAX
    assert await store.progress(batch_id) == (set(), set())  # results dropped


async def test_a_live_lease_of_another_replica_is_respected_and_a_stale_one_taken(
    store: BatchStore,
) -> None:
    record = await _batch(store, 1, lease={"claimed_by": "other",
                                           "claim_until": time.time() + 60})
    await _result(store, record.batch.id, 1)
    await Finalizer(store).run_once()
    assert await _status(store, record.batch.id) is BatchStatus.IN_PROGRESS

    await store.update(record.batch.id,
                       lambda r: r.model_copy(update={"claim_until": time.time() - 1}))
    await Finalizer(store).run_once()
    assert await _status(store, record.batch.id) is BatchStatus.COMPLETED


async def test_a_cancelled_batch_waits_for_workers_to_skip_its_items(store: BatchStore) -> None:
    record = await _batch(store, 2, status=BatchStatus.CANCELLING,
                          cancelling_at=int(time.time()))
    await Finalizer(store).run_once()
    assert await _status(store, record.batch.id) is BatchStatus.CANCELLING
    await store.drop_items(record)  # as if workers had skipped them
    await Finalizer(store).run_once()
    assert await _status(store, record.batch.id) is BatchStatus.CANCELLED


async def test_a_cancelled_batch_drops_its_queued_items_after_a_grace_and_keeps_its_results(
    store: BatchStore,
) -> None:
    record = await _batch(store, 5, status=BatchStatus.CANCELLING,
                          cancelling_at=int(time.time() - CANCEL_GRACE - 1))
    await _result(store, record.batch.id, 2)
    assert await store.waiting(record) == 5
    done = await _ticked_until_settled(Finalizer(store), store, record.batch.id)
    assert done is not None and done.batch.status is BatchStatus.CANCELLED
    assert done.batch.request_counts == RequestCounts(total=5, completed=1, failed=0)
    assert await store.waiting(record) == 0


async def test_a_batch_past_its_window_expires_with_what_it_has(store: BatchStore) -> None:
    record = await _batch(store, 2, expires_at=int(time.time()) - 1)
    await _result(store, record.batch.id, 1)
    await Finalizer(store).run_once()
    done = await store.batch(record.batch.id)
    assert done is not None and done.batch.status is BatchStatus.EXPIRED
    assert done.batch.request_counts.completed == 1
    assert await store.waiting(record) == 0


async def test_a_batch_left_validating_by_a_dead_ingress_fails(store: BatchStore) -> None:
    stale = await _batch(store, 0, status=BatchStatus.VALIDATING,
                         created_at=time.time() - VALIDATION_TIMEOUT - 1)
    fresh = await _batch(store, 0, status=BatchStatus.VALIDATING)
    await Finalizer(store).run_once()
    failed = await store.batch(stale.batch.id)
    assert failed is not None and failed.batch.status is BatchStatus.FAILED
    assert failed.batch.errors is not None
    assert failed.batch.errors.data[0].code == "validation_interrupted"
    assert await _status(store, fresh.batch.id) is BatchStatus.VALIDATING


async def test_a_big_batch_is_counted_less_often_than_every_tick(store: BatchStore) -> None:
    total = POLL_ITEMS_PER_SECOND // 5  # counted every 0.2 s, a tick being 0.01 s
    record = await _batch(store, total, queued=0)
    batch_id = record.batch.id
    finalizer = Finalizer(store, tick=0.01)
    await finalizer.run_once()
    assert store.last_counts(batch_id) == (0, 0)
    await _result(store, batch_id, 1)
    await finalizer.run_once()
    assert store.last_counts(batch_id) == (0, 0)  # not counted again yet
    await asyncio.sleep(0.25)
    await finalizer.run_once()
    assert store.last_counts(batch_id) == (1, 0)


async def test_live_counts_are_reused_for_a_second_and_dropped_with_the_batch(
    store: BatchStore,
) -> None:
    record = await _batch(store, 2)
    batch_id = record.batch.id
    assert store.last_counts(batch_id) is None
    assert await store.counts(batch_id) == (0, 0)
    await _result(store, batch_id, 1)
    assert await store.counts(batch_id) == (0, 0)  # a GET within the second
    assert await store.counts(batch_id, max_age=0.0) == (1, 0)
    assert store.last_counts(batch_id) == (1, 0)
    await _result(store, batch_id, 2, ok=False)
    await Finalizer(store).run_once()
    done = await store.batch(batch_id)
    # Another test's finalizer on this store may hold the claim: wait for its finish.
    deadline = time.monotonic() + 10
    while (done is None or done.batch.request_counts.completed + done.batch.request_counts.failed
           < 2) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        done = await store.batch(batch_id)
    assert done is not None and done.batch.request_counts == RequestCounts(
        total=2, completed=1, failed=1)  # the final counts are counted in full
    deadline = time.monotonic() + 5
    while store.last_counts(batch_id) is not None:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.005)


async def test_concurrent_counts_of_a_batch_share_one_scan(store: BatchStore) -> None:
    record = await _batch(store, 1)
    scans = await asyncio.gather(*(store.progress(record.batch.id) for _ in range(5)))
    assert all(scan is scans[0] for scan in scans)


async def _input_file(store: BatchStore, total: int) -> str:
    file_id = f"file-{uuid.uuid4().hex}"
    data = b"".join(json.dumps({"custom_id": f"c{line}", "method": "POST",
                                "url": "/v1/chat/completions", "body": {}}).encode() + b"\n"
                    for line in range(1, total + 1))
    await store.put_file(FileRecord(file=FileObject(
        id=file_id, bytes=len(data), created_at=int(time.time()), filename="in.jsonl",
        purpose="batch"), owner="key-1"), data)
    return file_id


async def _error_lines(store: BatchStore, batch_id: str) -> dict[str, str | None]:
    done = await store.batch(batch_id)
    assert done is not None and done.batch.error_file_id is not None
    data = await store.content(done.batch.error_file_id)
    assert data is not None
    return {x["custom_id"]: (x["error"] or {}).get("code")
            for x in map(json.loads, data.splitlines())}


async def test_a_cancelled_batch_writes_an_error_line_for_each_request_it_did_not_run(
    store: BatchStore,
) -> None:
    record = await _batch(store, 4, status=BatchStatus.CANCELLING,
                          cancelling_at=int(time.time() - CANCEL_GRACE - 1),
                          input_file_id=await _input_file(store, 4))
    await _result(store, record.batch.id, 2)
    await _result(store, record.batch.id, 3, ok=False)
    await Finalizer(store).run_once()
    done = await store.batch(record.batch.id)
    assert done is not None and done.batch.status is BatchStatus.CANCELLED
    assert done.batch.request_counts == RequestCounts(total=4, completed=1, failed=3)
    errors = await _error_lines(store, record.batch.id)
    assert errors == {"c1": "batch_cancelled", "c3": None, "c4": "batch_cancelled"}


async def test_an_expired_batch_writes_an_error_line_for_each_request_it_did_not_run(
    store: BatchStore,
) -> None:
    record = await _batch(store, 3, expires_at=int(time.time()) - 1,
                          input_file_id=await _input_file(store, 3))
    await _result(store, record.batch.id, 1)
    await Finalizer(store).run_once()
    done = await store.batch(record.batch.id)
    assert done is not None and done.batch.status is BatchStatus.EXPIRED
    assert done.batch.request_counts == RequestCounts(total=3, completed=1, failed=2)
    assert await _error_lines(store, record.batch.id) == {"c2": "batch_expired",
                                                          "c3": "batch_expired"}


class _ShortFirstRead(BatchStore):
    """The store as a watch that ends early shows it (seen while a NATS node rejoins a
    cluster): the first read of a batch's results brings back only some of them."""

    short_reads = 0

    async def results(self, batch_id: str) -> list[ItemResult]:
        results = await super().results(batch_id)
        if self.short_reads == 0:
            self.short_reads += 1
            return results[: len(results) // 2]
        return results


async def test_a_short_read_of_the_results_is_read_again_before_any_file_is_written(
    own_nats: NatsServer,
) -> None:
    nc: Client = await nats.connect(own_nats.url)
    try:
        store = _ShortFirstRead(nc)
        await store.start()
        record = await _batch(store, 4)
        for line in range(1, 5):
            await _result(store, record.batch.id, line)
        finalizer = Finalizer(store)
        await finalizer.run_once()
        assert store.short_reads == 1
        assert await _status(store, record.batch.id) is BatchStatus.FINALIZING
        await finalizer.run_once()
        done = await store.batch(record.batch.id)
        assert done is not None and done.batch.status is BatchStatus.COMPLETED
        assert done.batch.request_counts == RequestCounts(total=4, completed=4, failed=0)
        assert done.batch.output_file_id is not None
        output = await store.content(done.batch.output_file_id)
        assert output is not None and len(output.splitlines()) == 4
        await store.stop()
    finally:
        await nc.close()
