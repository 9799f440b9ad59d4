"""The sweep of expired files against a real nats-server: record and contents go, files
still live stay, replicas sweeping at once agree, and a running batch keeps its input."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import nats
import pytest

from cli.nats_server import NatsServer
from core.batch_store import BatchStore
from ingress.batch.file_sweep import sweep_expired
from schemas.batch import Batch, BatchRecord, BatchStatus, FileObject, FileRecord

DATA = b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {}}\n'


@pytest.fixture
async def stores(own_nats: NatsServer) -> AsyncIterator[tuple[BatchStore, BatchStore]]:
    """Two replicas' stores, each on its own connection."""
    connections = [await nats.connect(own_nats.url) for _ in range(2)]
    pair = (BatchStore(connections[0]), BatchStore(connections[1]))
    for store in pair:
        await store.start()
    yield pair
    for store in pair:
        await store.stop()
    for nc in connections:
        await nc.close()


async def _file(store: BatchStore, expires_in: int | None) -> str:
    now = int(time.time())
    record = FileRecord(file=FileObject(
        id=f"file-{uuid.uuid4().hex}", bytes=len(DATA), created_at=now - 7200,
        filename="in.jsonl", purpose="batch",
        expires_at=None if expires_in is None else now + expires_in), owner="key-1")
    await store.put_file(record, DATA)
    return record.file.id


async def _gone(store: BatchStore, file_id: str) -> bool:
    return await store.file(file_id) is None and await store.content(file_id) is None


async def _running_batch(store: BatchStore, input_file_id: str) -> str:
    batch_id = f"batch_{uuid.uuid4().hex}"
    now = int(time.time())
    await store.create_batch(BatchRecord(batch=Batch(
        id=batch_id, endpoint="/v1/chat/completions", input_file_id=input_file_id,
        status=BatchStatus.IN_PROGRESS, created_at=now, expires_at=now + 3600)))
    deadline = time.monotonic() + 5
    while batch_id not in {r.batch.id for r in store.active()}:  # the sweep's mirror
        assert time.monotonic() < deadline
        await asyncio.sleep(0.005)
    return batch_id


async def test_expired_files_are_deleted_and_live_ones_stay(
        stores: tuple[BatchStore, BatchStore]) -> None:
    store = stores[0]
    expired = await _file(store, -1)
    live = await _file(store, 3600)
    forever = await _file(store, None)
    assert await sweep_expired(store) == [expired]
    assert await _gone(store, expired)
    for file_id in (live, forever):
        assert await store.content(file_id) == DATA


async def test_replicas_sweeping_at_once_both_succeed(
        stores: tuple[BatchStore, BatchStore]) -> None:
    expired = [await _file(stores[0], -1) for _ in range(5)]
    swept = await asyncio.gather(*(sweep_expired(store) for store in stores))
    assert all(set(ids) <= set(expired) for ids in swept)
    for file_id in expired:
        assert await _gone(stores[1], file_id)
    assert await asyncio.gather(*(sweep_expired(store) for store in stores)) == [[], []]


async def test_a_running_batch_keeps_its_expired_input_file_until_it_ends(
        stores: tuple[BatchStore, BatchStore]) -> None:
    store = stores[0]
    source = await _file(store, -1)
    batch_id = await _running_batch(store, source)
    assert source not in await sweep_expired(store)
    assert await store.content(source) == DATA
    await store.update(batch_id, lambda r: r.model_copy(update={"batch": r.batch.model_copy(
        update={"status": BatchStatus.COMPLETED})}))
    deadline = time.monotonic() + 5
    while batch_id in {r.batch.id for r in store.active()}:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.005)
    assert source in await sweep_expired(store)
    assert await _gone(store, source)
