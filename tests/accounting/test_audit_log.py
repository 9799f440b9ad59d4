"""Audit events through JetStream into ClickHouse, once, and read back with filters."""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from nats.aio.client import Client
from nats.js.errors import NotFoundError

from accounting import service
from accounting.audit_consumer import AuditConsumer
from accounting.audit_log import AuditStore, query
from core.audit_publisher import AuditPublisher
from schemas import subjects
from schemas.audit import AuditEvent, AuditQuery

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def make(n: int, **fields: Any) -> AuditEvent:
    base: dict[str, Any] = {
        "ts": T0 + timedelta(minutes=n), "actor": "master", "actor_kind": "master",
        "action": "key.update", "target_kind": "key", "target_id": f"key_{n}",
        "request_id": f"req_{n}", "changes": {"alias": {"before": "a", "after": f"b{n}"}},
        "source_ip": "127.0.0.1",
    }
    return AuditEvent.model_validate({**base, **fields})


def test_an_event_stored_twice_is_one_row(clickhouse: Any) -> None:
    store = AuditStore(clickhouse)
    assert store.insert([make(1), make(1), make(2)]) == 2
    assert store.insert([make(1)]) == 0
    assert clickhouse.command("SELECT count() FROM audit_log") == 2


def test_the_query_filters_and_pages_newest_first(clickhouse: Any) -> None:
    store = AuditStore(clickhouse)
    store.insert([make(n) for n in range(5)] + [make(9, action="team.create",
                                                     target_kind="team", target_id="team_x",
                                                     actor="key_a", actor_kind="key",
                                                     actor_team_id="team_a")])
    page = query(clickhouse, AuditQuery(limit=2))
    assert [e["target"]["id"] for e in page["data"]] == ["team_x", "key_4"]
    assert page["has_more"] is True
    rest = query(clickhouse, AuditQuery(limit=10, offset=2))
    assert [e["target"]["id"] for e in rest["data"]] == ["key_3", "key_2", "key_1", "key_0"]
    assert rest["has_more"] is False
    by_actor = query(clickhouse, AuditQuery(actor="key_a"))["data"]
    assert [(e["actor"], e["actor_team_id"], e["action"]) for e in by_actor] == [
        ("key_a", "team_a", "team.create")]
    window = query(clickhouse, AuditQuery(since=T0 + timedelta(minutes=1),
                                          until=T0 + timedelta(minutes=3)))["data"]
    assert [e["target"]["id"] for e in window] == ["key_2", "key_1"]
    assert window[0]["changes"] == {"alias": {"before": "a", "after": "b2"}}
    assert query(clickhouse, AuditQuery(target_kind="key", target_id="key_0"))["data"][0][
        "request_id"] == "req_0"


def test_stamps_have_one_width_so_they_order_as_text(clickhouse: Any) -> None:
    # A stamp on a whole second once read "...:00Z" beside "...:00.040000Z", and the
    # console and the tests that ordered stamps as text put it after the later ones.
    store = AuditStore(clickhouse)
    store.insert([make(0, ts=T0), make(1, ts=T0 + timedelta(milliseconds=40)),
                  make(2, ts=T0 - timedelta(milliseconds=3))])
    stamps = [e["ts"] for e in query(clickhouse, AuditQuery())["data"]]
    assert stamps == ["2026-03-01T12:00:00.040Z", "2026-03-01T12:00:00.000Z",
                      "2026-03-01T11:59:59.997Z"]
    assert stamps == sorted(stamps, reverse=True)


def test_the_analytics_service_answers_audit_queries_and_refuses_bad_ones(
    clickhouse: Any,
) -> None:
    AuditStore(clickhouse).insert([make(1)])
    answer = json.loads(service.answer(clickhouse, "audit", b'{"action": "key.update"}'))
    assert [e["event_id"] for e in answer["data"]] == [make(1).event_id]
    refused = json.loads(service.answer(clickhouse, "audit", b'{"action": "nope"}'))
    assert refused["error"]["status"] == 400


async def test_published_events_reach_clickhouse_once(nc: Client, clickhouse: Any) -> None:
    js = nc.jetstream()
    with contextlib.suppress(NotFoundError):
        await js.delete_stream(subjects.AUDIT_STREAM)
    publisher = AuditPublisher(js)
    await publisher.start()
    consumer = AuditConsumer(nc, AuditStore(clickhouse), durable="test-audit")
    await consumer.start()
    try:
        events = [make(n) for n in range(3)]
        for e in [*events, events[0]]:  # a re-publish of the same action
            publisher.submit(e)
        assert await publisher.flush()
        # Past JetStream's duplicate window, the store's own check keeps it once.
        await js.publish(subjects.audit("key"), events[1].model_dump_json().encode())
        for _ in range(100):
            if consumer.stats.received >= 3 + 1:
                break
            await asyncio.sleep(0.05)
        assert consumer.stats.inserted == 3
        assert clickhouse.command("SELECT count() FROM audit_log") == 3
    finally:
        await consumer.stop()
        await publisher.stop()
