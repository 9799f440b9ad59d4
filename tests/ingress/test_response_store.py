"""Stored responses in NATS KV, on a real nats-server: kept, read back, purged, aged out
after the configured retention, and a changed retention applied to the bucket."""

from __future__ import annotations

import asyncio
import uuid

import nats
import pytest

from cli.nats_server import NatsServer
from ingress.response_store import ResponseStore, StoreUnavailable
from schemas.responses import StoredResponse


def _record(owner: str | None = "key-a") -> StoredResponse:
    return StoredResponse(owner=owner, response={"id": "resp_1", "output": [
        {"type": "message", "role": "assistant", "content": [{"type": "output_text",
                                                              "text": "hi"}]}]},
        context=[{"type": "message", "role": "user", "content": "earlier"},
                 {"type": "message", "role": "user", "content": "now"}], input_start=1)


async def test_a_response_is_kept_read_back_and_purged(nats_server: NatsServer) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        store = ResponseStore(nc, ttl=60, bucket=f"responses_{uuid.uuid4().hex[:8]}")
        await store.start()
        assert await store.put("resp_1", _record())
        found = await store.get("resp_1")
        assert found is not None and found.owner == "key-a"
        assert [i["content"] for i in found.own_input] == ["now"]
        assert found.continuation[-1]["role"] == "assistant"
        await store.delete("resp_1")
        assert await store.get("resp_1") is None
        assert await store.get("resp_>") is None  # not an id: never a wildcard read
        assert await store.get("missing") is None
    finally:
        await nc.close()


async def test_a_response_ages_out_after_the_ttl_and_a_new_ttl_is_applied(
    nats_server: NatsServer,
) -> None:
    nc = await nats.connect(nats_server.url)
    bucket = f"responses_{uuid.uuid4().hex[:8]}"
    try:
        store = ResponseStore(nc, ttl=1.0, bucket=bucket)
        await store.start()
        assert await store.put("resp_old", _record())
        assert await store.get("resp_old") is not None
        await asyncio.sleep(2.0)
        assert await store.get("resp_old") is None

        longer = ResponseStore(nc, ttl=3600.0, bucket=bucket)  # a restart with a new setting
        await longer.start()
        info = await nc.jetstream().stream_info(f"KV_{bucket}")
        assert info.config.max_age == pytest.approx(3600.0)
    finally:
        await nc.close()


async def test_a_response_too_large_for_one_message_is_not_stored(
    nats_server: NatsServer,
) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        store = ResponseStore(nc, ttl=60, bucket=f"responses_{uuid.uuid4().hex[:8]}")
        await store.start()
        huge = StoredResponse(response={"id": "resp_big"},
                              context=[{"type": "message", "role": "user",
                                        "content": "x" * (nc.max_payload + 1)}])
        assert not await store.put("resp_big", huge)
        assert await store.get("resp_big") is None
    finally:
        await nc.close()


async def test_with_nats_gone_a_read_is_unavailable_and_a_write_is_skipped(
    nats_server: NatsServer,
) -> None:
    nc = await nats.connect(nats_server.url)
    store = ResponseStore(nc, ttl=60, bucket=f"responses_{uuid.uuid4().hex[:8]}")
    await store.start()
    await nc.close()
    with pytest.raises(StoreUnavailable):
        await store.get("resp_1")
    with pytest.raises(StoreUnavailable):
        await store.delete("resp_1")
    assert not await store.put("resp_1", _record())
