from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from accounting import migrations
from accounting import store as store_module
from accounting.store import COLUMN_TYPES, COLUMNS, INSERT_SETTINGS, UsageStore, columns, connect
from schemas.usage import UsageEvent, UsageStatus


def totals(client: Any) -> tuple[int, Decimal]:
    count, cost = client.query("SELECT count(), sum(cost) FROM usage_events").result_rows[0]
    return int(count), cost


def test_migrations_are_recorded_and_applying_twice_changes_nothing(clickhouse: Any) -> None:
    assert migrations.apply(clickhouse) == []
    names = {row[0] for row in clickhouse.query("SELECT name FROM schema_migrations").result_rows}
    assert names == {name for name, _ in migrations.migration_files()}
    assert clickhouse.command("SELECT count() FROM schema_migrations") == len(names)


def test_migrations_on_a_fresh_store_apply_every_file(tmp_path: Any) -> None:
    client = connect(f"chdb://{tmp_path / 'fresh'}")
    try:
        applied = migrations.apply(client)
        assert applied == ["0001_usage_events", "0002_usage_daily", "0003_usage_estimated",
                           "0004_usage_route", "0005_audit_log", "0006_usage_media"]
        assert migrations.apply(client) == []
    finally:
        client.close()


def test_ttl_is_applied_only_when_it_changes(clickhouse: Any) -> None:
    assert migrations.current_ttl_days(clickhouse) == migrations.DEFAULT_TTL_DAYS
    migrations.apply(clickhouse, ttl_days=30)
    assert migrations.current_ttl_days(clickhouse) == 30
    with pytest.raises(ValueError, match="positive"):
        migrations.set_ttl(clickhouse, 0)


def test_every_event_field_is_a_column() -> None:
    assert set(COLUMNS) == set(UsageEvent.model_fields)


def test_insert_round_trips_an_event(
    store: UsageStore, clickhouse: Any, event_factory: Callable[..., UsageEvent]
) -> None:
    ts = datetime.now(UTC).replace(microsecond=123000)
    event = event_factory(1, ts=ts, key_id="k1", metadata={"tag": "x"}, ttft_ms=12.5,
                          saved_cost=None, cost="0.000000001")
    assert store.insert([event], "t1") == 1
    row = clickhouse.query(
        "SELECT event_id, ts, key_id, team_id, cost, saved_cost, metadata, ttft_ms, status "
        "FROM usage_events"
    ).result_rows[0]
    assert row[0] == event.event_id
    assert row[1].replace(tzinfo=UTC) == ts
    assert row[2:] == ("k1", "", Decimal("0.000000001"), None, {"tag": "x"}, 12.5, "ok")


def test_same_batch_with_same_token_twice_is_stored_once(
    store: UsageStore, clickhouse: Any, event_factory: Callable[..., UsageEvent]
) -> None:
    events = [event_factory(i) for i in range(100)]
    assert store.insert(events, "batch-1") == 100
    assert store.insert(events, "batch-1") == 0
    assert totals(clickhouse) == (100, Decimal("0.000123400"))


def test_a_retried_block_is_dropped_by_clickhouse_itself_and_by_the_rollup(
    clickhouse: Any, event_factory: Callable[..., UsageEvent]
) -> None:
    # Below the consumer's own id check: the same rows under the same token, as when an
    # insert landed but its reply was lost and the check raced another replica.
    events = [event_factory(i) for i in range(10)]
    for _ in range(2):
        clickhouse.insert(
            "usage_events", columns(events), column_names=list(COLUMNS),
            column_type_names=list(COLUMN_TYPES), column_oriented=True,
            settings={**INSERT_SETTINGS, "insert_deduplication_token": "same"},
        )
    assert totals(clickhouse) == (10, Decimal("0.000012340"))
    assert clickhouse.command("SELECT sum(events) FROM usage_daily") == 10


def test_same_event_in_two_different_batches_is_stored_once(
    store: UsageStore, clickhouse: Any, event_factory: Callable[..., UsageEvent]
) -> None:
    first = [event_factory(i) for i in range(10)]
    second = [first[3], first[7], *(event_factory(i) for i in range(10, 15))]
    assert store.insert(first, "a") == 10
    assert store.insert(second, "b") == 5
    assert totals(clickhouse) == (15, 15 * Decimal("0.000001234"))


def test_an_event_twice_in_one_batch_is_stored_once(
    store: UsageStore, clickhouse: Any, event_factory: Callable[..., UsageEvent]
) -> None:
    event = event_factory(1)
    assert store.insert([event, event], "dup") == 1
    assert totals(clickhouse)[0] == 1


def test_rollup_totals_equal_raw_totals(
    store: UsageStore, clickhouse: Any, event_factory: Callable[..., UsageEvent]
) -> None:
    now = datetime.now(UTC)
    events = []
    for i in range(300):
        events.append(event_factory(
            i, ts=now - timedelta(days=i % 3), key_id=f"k{i % 4}", team_id=f"t{i % 2}",
            model_alias=("a", "b", "c")[i % 3], cost=str(Decimal(i) / 1000),
            prompt_tokens=i, completion_tokens=2 * i,
        ))
    # A retried request: a failed attempt then a successful one, both costed.
    events.append(event_factory(0, attempt=1, ts=now, key_id="k0", team_id="t0",
                                model_alias="a", status=UsageStatus.OK, cost="0.5"))
    store.insert(events[:150], "x")
    store.insert(events[100:], "y")  # overlaps the first batch
    raw = clickhouse.query(
        "SELECT count(), uniqExact(request_id), sum(cost), sum(prompt_tokens), "
        "sum(completion_tokens) FROM usage_events"
    ).result_rows[0]
    rollup = clickhouse.query(
        "SELECT sum(events), uniqExactMerge(requests), sum(cost), sum(prompt_tokens), "
        "sum(completion_tokens) FROM usage_daily"
    ).result_rows[0]
    assert raw == rollup
    assert raw[:3] == (301, 300, sum(Decimal(i) / 1000 for i in range(300)) + Decimal("0.5"))
    per_key = (
        "SELECT key_id, {agg} FROM {table} GROUP BY key_id ORDER BY key_id"
    )
    assert clickhouse.query(
        per_key.format(agg="sum(cost), uniqExact(request_id)", table="usage_events")
    ).result_rows == clickhouse.query(
        per_key.format(agg="sum(cost), uniqExactMerge(requests)", table="usage_daily")
    ).result_rows


def test_one_id_stamped_hours_apart_by_two_sources_is_stored_once(
    store: UsageStore, clickhouse: Any, event_factory: Callable[..., UsageEvent]
) -> None:
    """The ingress accounts a lost attempt; its worker, cut off from NATS, reports the same
    attempt much later with its own clock: the first one stands."""
    estimate = event_factory(1, ts=datetime.now(UTC) - timedelta(hours=3))
    late = event_factory(1)
    assert estimate.event_id == late.event_id
    assert store.insert([estimate], "ingress") == 1
    assert store.insert([late, event_factory(2)], "worker") == 1
    assert totals(clickhouse)[0] == 2


def test_an_id_of_any_text_is_found_again(
    store: UsageStore, clickhouse: Any, event_factory: Callable[..., UsageEvent]
) -> None:
    odd = ["it's", "back\\slash", "{x:String}", " INSERT INTO t", "--x", "ü€😀", "", "\\n",
           "tab\tx", "new\nline"]
    events = [event_factory(i, request_id=r) for i, r in enumerate(odd)]
    assert store.insert(events[:4], "a") == 4
    assert store.insert(events[:8], "b") == 4  # ids the lookup writes into its query
    assert store.insert(events, "c") == 2  # and those it binds as parameters
    assert store.insert(events, "d") == 0
    assert totals(clickhouse)[0] == len(odd)


def test_ids_too_many_for_one_query_are_looked_up_in_parts(
    store: UsageStore, clickhouse: Any, event_factory: Callable[..., UsageEvent],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(store_module, "MAX_ID_LITERAL", 100)
    events = [event_factory(i) for i in range(40)]
    assert len(store_module.id_literals([e.event_id for e in events]) or []) > 4
    assert store.insert(events[:25], "a") == 25
    assert store.insert(events, "b") == 15
    assert totals(clickhouse)[0] == 40
