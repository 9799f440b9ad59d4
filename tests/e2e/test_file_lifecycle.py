"""Files expire (``expires_after`` as OpenAI has it, 30 days by default for batch files) and
a key's uploads are bounded by a storage quota, on a real ingress and NATS."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import nats
import pytest

from cli.nats_server import NatsServer, free_port
from core.batch_store import BatchStore
from ingress.batch.file_sweep import sweep_expired
from schemas.batch import FILE_EXPIRY_MAX, FileObject, FileRecord
from tests.harness import Gateway, write_config

pytestmark = pytest.mark.e2e

MASTER_KEY = "sk-master-files"
QUOTA = 4000
LINE = b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {}}\n'


@pytest.fixture(scope="module")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """This module's own NATS: any other gateway on the session's would sweep the expired
    files these tests put in the store, at a moment of its choosing."""
    server = NatsServer(tmp_path_factory.mktemp("files-nats"), port=free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def files_gateway(nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[Gateway]:
    work = tmp_path_factory.mktemp("files")
    config = write_config(work / "config.yaml", {
        "model_list": [{"model_name": "m", "litellm_params": {"model": "mock/m"}}],
        "general_settings": {"master_key": MASTER_KEY}})
    gateway = Gateway(nats_url=nats_server.url, config_path=config, log_dir=work,
                      # Its sweep runs at start only, never during a test that calls it.
                      env={"AIGW_FILES_QUOTA_BYTES": str(QUOTA),
                           "AIGW_FILES_SWEEP_SECONDS": "86400"})
    gateway.start_worker("mock")
    gateway.start_ingress()
    try:
        gateway.wait_ready(60)
        yield gateway
    finally:
        gateway.stop()


@pytest.fixture
def key(files_gateway: Gateway) -> dict[str, str]:
    r = httpx.post(files_gateway.base_url + "/admin/keys", json={"alias": "uploader"},
                   headers={"authorization": f"Bearer {MASTER_KEY}"}, timeout=30)
    assert r.status_code in (200, 201), r.text
    return {"authorization": f"Bearer {r.json()['secret']}"}


def _upload(gateway: Gateway, auth: dict[str, str], data: bytes = LINE,
            purpose: str = "batch", **fields: str) -> httpx.Response:
    return httpx.post(gateway.base_url + "/v1/files", headers=auth, timeout=30,
                      files={"file": ("in.jsonl", data)}, data={"purpose": purpose, **fields})


def _error(r: httpx.Response) -> dict[str, Any]:
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    return dict(error)


def test_expires_after_sets_expires_at_and_batch_files_default_to_30_days(
        files_gateway: Gateway, key: dict[str, str]) -> None:
    r = _upload(files_gateway, key, **{"expires_after[anchor]": "created_at",
                                       "expires_after[seconds]": "3600"})
    assert r.status_code == 200, r.text
    assert r.json()["expires_at"] == r.json()["created_at"] + 3600
    r = _upload(files_gateway, key)
    assert r.json()["expires_at"] == r.json()["created_at"] + FILE_EXPIRY_MAX
    r = _upload(files_gateway, key, purpose="user_data")
    assert r.json()["expires_at"] is None  # kept until deleted, as at OpenAI


@pytest.mark.parametrize(("fields", "param"), [
    ({"expires_after[anchor]": "last_active_at", "expires_after[seconds]": "3600"},
     "expires_after[anchor]"),
    ({"expires_after[anchor]": "created_at", "expires_after[seconds]": "59"},
     "expires_after[seconds]"),
    ({"expires_after[anchor]": "created_at", "expires_after[seconds]": str(FILE_EXPIRY_MAX + 1)},
     "expires_after[seconds]"),
    ({"expires_after[anchor]": "created_at", "expires_after[seconds]": "1e5"},
     "expires_after[seconds]"),
    ({"expires_after[anchor]": "created_at", "expires_after[seconds]": "9" * 5000},
     "expires_after[seconds]"),  # past int()'s own digit limit: still a 400, not a 500
    ({"expires_after[anchor]": "created_at"}, "expires_after[seconds]"),
    ({"expires_after[seconds]": "3600"}, "expires_after[anchor]"),
])
def test_a_bad_expires_after_is_a_400_naming_the_field(
        files_gateway: Gateway, key: dict[str, str], fields: dict[str, str], param: str) -> None:
    r = _upload(files_gateway, key, **fields)
    assert r.status_code == 400, r.text
    assert _error(r)["param"] == param


@pytest.fixture
async def store(nats_server: NatsServer) -> AsyncIterator[BatchStore]:
    nc = await nats.connect(nats_server.url)
    store = BatchStore(nc)
    await store.start()
    yield store
    await store.stop()
    await nc.close()


async def test_an_expired_file_is_gone_for_its_owner_and_swept_from_storage(
        files_gateway: Gateway, store: BatchStore) -> None:
    master = {"authorization": f"Bearer {MASTER_KEY}"}
    now = int(time.time())
    # Expiries are an hour at least: this one is written as it stands an hour later.
    record = FileRecord(file=FileObject(id=f"file-expired{now}", bytes=len(LINE),
                                        created_at=now - 7200, filename="old.jsonl",
                                        purpose="batch", expires_at=now - 3600))
    await store.put_file(record, LINE)
    fresh = _upload(files_gateway, master).json()["id"]
    base = files_gateway.base_url + "/v1/files/"
    async with httpx.AsyncClient(headers=master, timeout=30) as client:
        for path in (record.file.id, record.file.id + "/content"):
            r = await client.get(base + path)
            assert r.status_code == 404, r.text
            assert _error(r)["code"] == "file_not_found"
        listed = [f["id"] for f in (await client.get(base.rstrip("/"))).json()["data"]]
        assert record.file.id not in listed and fresh in listed
    assert record.file.id in await sweep_expired(store)
    assert await store.file(record.file.id) is None
    assert await store.content(record.file.id) is None
    assert await store.content(fresh) == LINE  # the live file stays
    assert record.file.id not in await sweep_expired(store)  # a second sweep: nothing


async def test_each_ingress_sweeps_expired_files_on_its_own(
        files_gateway: Gateway, store: BatchStore) -> None:
    now = int(time.time())
    expired = FileRecord(file=FileObject(id=f"file-lapsed{now}", bytes=len(LINE),
                                         created_at=now - 7200, filename="old.jsonl",
                                         purpose="batch", expires_at=now - 3600))
    live = FileRecord(file=FileObject(id=f"file-live{now}", bytes=len(LINE), created_at=now,
                                      filename="new.jsonl", purpose="batch",
                                      expires_at=now + 3600))
    for record in (expired, live):
        await store.put_file(record, LINE)
    replica = files_gateway.start_replica(free_port(), {"AIGW_FILES_SWEEP_SECONDS": "0.5"})
    try:
        deadline = time.monotonic() + 30
        while await store.file(expired.file.id) is not None:
            assert replica.poll() is None, files_gateway.all_logs()
            assert time.monotonic() < deadline, "the replica never swept the expired file"
            await asyncio.sleep(0.1)
        assert await store.content(expired.file.id) is None
        await asyncio.sleep(1.5)  # three more sweeps
        assert await store.content(live.file.id) == LINE  # the live file stays
    finally:
        replica.terminate()
        replica.wait(30)
        await store.delete_file(live.file.id)


def test_a_key_past_its_storage_quota_is_refused_until_it_deletes(
        files_gateway: Gateway, key: dict[str, str]) -> None:
    big = LINE * (QUOTA // len(LINE) // 2)  # two of them fit, a third does not
    kept = [_upload(files_gateway, key, big, purpose="user_data") for _ in range(2)]
    assert [r.status_code for r in kept] == [200, 200]
    r = _upload(files_gateway, key, big, purpose="user_data")
    assert r.status_code == 400, r.text
    error = _error(r)
    assert error["code"] == "storage_quota_exceeded" and f"{QUOTA:,}" in error["message"]
    deleted = httpx.delete(files_gateway.base_url + "/v1/files/" + kept[0].json()["id"],
                           headers=key, timeout=30)
    assert deleted.status_code == 200
    assert _upload(files_gateway, key, big, purpose="user_data").status_code == 200
    # The master key's uploads count against no quota.
    master = {"authorization": f"Bearer {MASTER_KEY}"}
    assert all(_upload(files_gateway, master, big).status_code == 200 for _ in range(3))

