"""The AI Gateway dashboard's queries.

Every panel and variable query is expanded the way Grafana and the ClickHouse plugin expand
it (``grafana_macros``) and run against a chDB store with the real migrations, so a broken
query fails here rather than on a blank panel; the key panels must return exact numbers,
and agree with ``accounting.analytics``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from accounting import analytics, migrations
from accounting.store import UsageStore, connect
from schemas.analytics import AnalyticsQuery
from schemas.usage import UsageEvent, UsageStatus, event_id
from tests.deploy.grafana_dashboard import DASHBOARD, PANELS, TEMPLATES, VARIABLES
from tests.deploy.grafana_macros import (
    MacroError,
    QueryContext,
    Selection,
    render,
)

# Hour-aligned, so 60 s buckets start at T, T+60, T+120; a few hours back, inside the TTL.
T = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
ALL_SELECTED = {name: Selection.everything() for name in VARIABLES}
RANGE = QueryContext(start=T - timedelta(hours=1), end=T + timedelta(hours=1), interval_s=60,
                     variables=ALL_SELECTED)


def queries() -> list[tuple[str, str]]:
    """(id, rawSql) of every panel target and every variable query."""
    out = [(f"{p['title']}/{t['refId']}", t["rawSql"])
           for p in DASHBOARD["panels"] for t in p["targets"]]
    out += [(f"variable {v['name']}", v["query"]) for v in DASHBOARD["templating"]["list"]]
    return out


def event(request: str, attempt: int = 0, *, seconds: float, status: UsageStatus = UsageStatus.OK,
          cost: str | None = None, **fields: Any) -> UsageEvent:
    return UsageEvent(
        event_id=event_id(request, attempt),
        request_id=request,
        attempt=attempt,
        ts=T + timedelta(seconds=seconds),
        status=status,
        cost=Decimal(cost) if cost is not None else None,
        **{"model_alias": "gpt-4o-mini", "provider": "openai", **fields},
    )


EVENTS = [
    # r1: failed on openai at T, then served by anthropic a minute later: one request, both
    # attempts' cost and tokens.
    event("r1", 0, seconds=0, status=UsageStatus.ERROR, cost="0.000100000", key_id="k1",
          team_id="t1", prompt_tokens=100, latency_ms=50.0),
    event("r1", 1, seconds=61, cost="0.002000000", key_id="k1", team_id="t1",
          provider="anthropic", prompt_tokens=100, completion_tokens=40, cached_tokens=60,
          latency_ms=300.0, ttft_ms=120.0, streamed=True),
    event("r2", seconds=5, cost="0.010000000", key_id="k2", team_id="t1", model_alias="gpt-4.1",
          prompt_tokens=1000, completion_tokens=200, reasoning_tokens=50, latency_ms=100.0),
    event("r3", seconds=10, status=UsageStatus.CACHE_HIT, cost="0", saved_cost="0.003000000",
          key_id="k2", team_id="t2", latency_ms=2.0),
    event("r4", seconds=120, status=UsageStatus.REJECTED, key_id="k3", team_id="t2",
          model_alias="gpt-4.1"),
    event("r5", seconds=125, cost="0.000000001", key_id="k1", team_id="t1", prompt_tokens=10,
          completion_tokens=5, latency_ms=200.0, ttft_ms=80.0, streamed=True),
    # r6: no key, no team; its only attempt failed.
    event("r6", seconds=130, status=UsageStatus.ERROR, model_alias="claude-sonnet",
          provider="anthropic", latency_ms=20.0),
    # Outside the range on both sides: must never count.
    event("old", seconds=-2 * 3600, cost="5.000000000", key_id="k1", team_id="t1"),
    event("late", seconds=2 * 3600, cost="7.000000000", key_id="k9", team_id="t9"),
]
TOTAL = Decimal("0.012100001")


@pytest.fixture(scope="module")
def clickhouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    # Module scope: one chDB path per process, closed before another module opens its own.
    client = connect(f"chdb://{tmp_path_factory.mktemp('grafana') / 'clickhouse'}")
    try:
        migrations.apply(client)
        UsageStore(client).insert(EVENTS)
        yield client
    finally:
        client.close()


def run(client: Any, sql: str, ctx: QueryContext = RANGE) -> list[dict[str, Any]]:
    rendered = render(sql, ctx)
    assert "$" not in rendered, rendered
    result = client.query(rendered)
    return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]


def panel_sql(title: str) -> str:
    (target,) = PANELS[title]["targets"]
    return str(target["rawSql"])


def selected(**values: tuple[str, ...]) -> QueryContext:
    chosen = {name: Selection.of(*values[name]) if name in values else Selection.everything()
              for name in VARIABLES}
    return QueryContext(start=RANGE.start, end=RANGE.end, interval_s=60, variables=chosen)


def at(seconds: int) -> datetime:
    return (T + timedelta(seconds=seconds)).replace(tzinfo=None)


def times(rows: list[dict[str, Any]]) -> list[datetime]:
    return [row["time"].replace(tzinfo=None) for row in rows]


# --- the expansion itself -------------------------------------------------------------------


def test_macros_expand_as_the_clickhouse_plugin_does() -> None:
    ctx = QueryContext(
        start=datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=UTC),
        end=datetime(2026, 1, 2, 4, 4, 5, tzinfo=UTC),
        interval_s=30,
        variables={"model": Selection.of("a", "it's"), "team": Selection.everything(("t1",))},
    )
    sql = (
        "SELECT $__timeInterval(ts) AS time FROM t WHERE $__timeFilter(ts) "
        "AND $__conditionalAll(model_alias IN (${model:singlequote}), $model) "
        "AND $__conditionalAll(team_id IN (${team:singlequote}), $team) "
        "AND x >= $__fromTime AND x <= $__toTime AND team_id IN ($team)"
    )
    assert render(sql, ctx) == (
        "SELECT toStartOfInterval(toDateTime(ts), INTERVAL 30 second) AS time FROM t "
        "WHERE ts >= toDateTime(1767323045) AND ts <= toDateTime(1767326645) "
        "AND model_alias IN ('a','it\\'s') AND 1=1 "
        "AND x >= toDateTime(1767323045) AND x <= toDateTime(1767326645) "
        "AND team_id IN ('t1')"
    )


def test_an_unknown_macro_or_variable_is_an_error_not_a_silent_pass() -> None:
    with pytest.raises(MacroError):
        render("SELECT $__timeGroup(ts, '5m')", RANGE)
    with pytest.raises(MacroError):
        render("SELECT 1 WHERE $__conditionalAll(a IN ($nope), $nope)", RANGE)


SELECTIONS = {
    "all": selected(),
    "one model": selected(model=("gpt-4o-mini",)),
    "two teams and a key": selected(team=("t1", "t2"), key_id=("k1",)),
    "a value with a quote": selected(model=("it's",)),
}


@pytest.mark.parametrize(("name", "sql"), queries(), ids=[q[0] for q in queries()])
def test_every_query_runs_on_clickhouse_for_every_selection(
    clickhouse: Any, name: str, sql: str
) -> None:
    for ctx in SELECTIONS.values():
        run(clickhouse, sql, ctx)


# --- exact numbers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ctx", "spend"),
    [
        (selected(), TOTAL),
        (selected(model=("gpt-4o-mini",)), Decimal("0.002100001")),
        (selected(team=("t2",)), Decimal(0)),
        (selected(key_id=("k2",)), Decimal("0.010000000")),
        (selected(team=("t1",), model=("gpt-4.1", "claude-sonnet")), Decimal("0.010000000")),
        (selected(model=("it's",)), Decimal(0)),
    ],
)
def test_total_spend_is_the_exact_decimal_sum_of_every_attempt(
    clickhouse: Any, ctx: QueryContext, spend: Decimal
) -> None:
    (row,) = run(clickhouse, panel_sql("Total spend"), ctx)
    assert row["spend"] == spend
    assert isinstance(row["spend"], Decimal)


def test_spend_by_model_buckets_each_attempt_by_its_own_time(clickhouse: Any) -> None:
    rows = run(clickhouse, panel_sql("Spend by model"))
    got = {(row["time"].replace(tzinfo=None), row["model"]): row["spend"] for row in rows}
    assert got == {
        (at(0), "gpt-4o-mini"): Decimal("0.000100000"),
        (at(0), "gpt-4.1"): Decimal("0.010000000"),
        (at(60), "gpt-4o-mini"): Decimal("0.002000000"),
        (at(120), "gpt-4.1"): Decimal(0),
        (at(120), "gpt-4o-mini"): Decimal("0.000000001"),
        (at(120), "claude-sonnet"): Decimal(0),
    }
    assert times(rows) == sorted(times(rows))


def test_spend_by_model_in_five_minute_buckets(clickhouse: Any) -> None:
    ctx = QueryContext(RANGE.start, RANGE.end, interval_s=300, variables=ALL_SELECTED)
    rows = run(clickhouse, panel_sql("Spend by model"), ctx)
    assert {row["model"]: row["spend"] for row in rows} == {
        "gpt-4o-mini": Decimal("0.002100001"), "gpt-4.1": Decimal("0.010000000"),
        "claude-sonnet": Decimal(0),
    }
    assert set(times(rows)) == {at(0)}


@pytest.mark.parametrize(
    ("title", "label", "expected"),
    [
        ("Spend by team", "team", {"t1": Decimal("0.012100001"), "t2": Decimal(0),
                                   "(no team)": Decimal(0)}),
        ("Spend by key (top 10)", "key", {"k1": Decimal("0.002100001"),
                                          "k2": Decimal("0.010000000"), "k3": Decimal(0),
                                          "(no key)": Decimal(0)}),
    ],
)
def test_spend_by_team_and_by_key_add_up_to_the_total(
    clickhouse: Any, title: str, label: str, expected: dict[str, Decimal]
) -> None:
    totals: dict[str, Decimal] = {}
    for row in run(clickhouse, panel_sql(title)):
        totals[row[label]] = totals.get(row[label], Decimal(0)) + row["spend"]
    assert totals == expected
    assert sum(totals.values()) == TOTAL


def test_requests_count_once_in_the_interval_they_started(clickhouse: Any) -> None:
    rows = run(clickhouse, panel_sql("Requests and error rate"))
    assert [(t, r["requests"], r["failed"]) for t, r in zip(times(rows), rows, strict=True)] == [
        (at(0), 3, 0),  # r1 (its retry a minute later is not a second request), r2, r3
        (at(120), 3, 1),  # r4, r5, r6 (failed)
    ]
    assert [row["error rate"] for row in rows] == [0.0, 1 / 3]
    (stat,) = run(clickhouse, panel_sql("Requests"))
    assert stat["requests"] == 6


def test_headline_stats_agree_with_accounting_analytics(clickhouse: Any) -> None:
    for ctx, filters in [
        (selected(), {}),
        (selected(model=("gpt-4o-mini",)), {"model": "gpt-4o-mini"}),
        (selected(team=("t1",)), {"team_id": "t1"}),
        (selected(key_id=("k2",)), {"key_id": "k2"}),
    ]:
        summary = analytics.summary(
            clickhouse, AnalyticsQuery(start=RANGE.start, end=RANGE.end, **filters)
        )
        (spend,) = run(clickhouse, panel_sql("Total spend"), ctx)
        (requests,) = run(clickhouse, panel_sql("Requests"), ctx)
        (errors,) = run(clickhouse, panel_sql("Error rate"), ctx)
        (cache,) = run(clickhouse, panel_sql("Cache hit rate"), ctx)
        (saved,) = run(clickhouse, panel_sql("Saved by cache"), ctx)
        (tokens,) = run(clickhouse, panel_sql("Tokens"), ctx)
        assert analytics.money(spend["spend"]) == summary["cost"], filters
        assert analytics.money(saved["saved"]) == summary["saved_cost"], filters
        assert requests["requests"] == summary["requests"], filters
        assert errors["error_rate"] == summary["error_rate"], filters
        assert cache["cache_hit_rate"] == summary["by_status"]["cache_hit"] / summary["requests"]
        assert (tokens["input"], tokens["output"]) == (
            summary["prompt_tokens"], summary["completion_tokens"]
        ), filters


def test_rates_of_an_empty_selection_are_null_not_nan(clickhouse: Any) -> None:
    ctx = selected(model=("nothing-here",))
    assert run(clickhouse, panel_sql("Error rate"), ctx) == [{"error_rate": None}]
    assert run(clickhouse, panel_sql("Cache hit rate"), ctx) == [{"cache_hit_rate": None}]


def test_cache_hit_rate_is_per_request(clickhouse: Any) -> None:
    rows = run(clickhouse, panel_sql("Cache hit rate over time"))
    assert [(t, r["cache hit rate"]) for t, r in zip(times(rows), rows, strict=True)] == [
        (at(0), 1 / 3), (at(120), 0.0),
    ]


def test_latency_and_ttft_quantiles_cover_successful_calls_only(clickhouse: Any) -> None:
    latency = run(clickhouse, panel_sql("Latency p50 / p95"))
    assert [(t, r["p50"], r["p95"]) for t, r in zip(times(latency), latency, strict=True)] == [
        (at(0), 100.0, 100.0), (at(60), 300.0, 300.0), (at(120), 200.0, 200.0),
    ]
    ttft = run(clickhouse, panel_sql("Time to first token p50 / p95"))
    assert [(t, r["p50"]) for t, r in zip(times(ttft), ttft, strict=True)] == [
        (at(60), 120.0), (at(120), 80.0),
    ]


def test_tokens_in_and_out_per_interval(clickhouse: Any) -> None:
    rows = run(clickhouse, panel_sql("Tokens in / out"))
    got = [(r["input"], r["cached input"], r["output"], r["reasoning"]) for r in rows]
    # The cache hit and the rejected request carry the event defaults of 0 tokens.
    assert got == [(1100, 0, 200, 50), (100, 60, 40, 0), (10, 0, 5, 0)]


def test_top_keys_table_ranks_keys_by_spend(clickhouse: Any) -> None:
    rows = run(clickhouse, panel_sql("Top keys by spend"))
    assert [(r["key"], r["team"], r["requests"], r["failed attempts"], r["spend"])
            for r in rows] == [
        ("k2", "t1, t2", 2, 0, Decimal("0.010000000")),
        ("k1", "t1", 2, 1, Decimal("0.002100001")),
        ("(no key)", "", 1, 1, Decimal(0)),
        ("k3", "t2", 1, 0, Decimal(0)),
    ]
    # Decimal division keeps the 9 decimals of the cost column: truncated, not rounded.
    assert rows[1]["cost per request"] == Decimal("0.001050000")


@pytest.mark.parametrize(
    ("variable", "ctx", "options"),
    [
        ("model", selected(), ["claude-sonnet", "gpt-4.1", "gpt-4o-mini"]),
        ("team", selected(), ["t1", "t2"]),
        ("key_id", selected(), ["k1", "k2", "k3"]),
        ("key_id", selected(team=("t2",)), ["k2", "k3"]),
    ],
)
def test_variable_options_come_from_the_range_and_cascade_from_team(
    clickhouse: Any, variable: str, ctx: QueryContext, options: list[str]
) -> None:
    rows = run(clickhouse, TEMPLATES[variable]["query"], ctx)
    assert [next(iter(row.values())) for row in rows] == options
