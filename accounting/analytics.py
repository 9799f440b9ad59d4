"""Spend and traffic analytics over ClickHouse: SQL builders (pure) and the functions that
run them and shape JSON.

Counting rules:

* ``requests`` is the number of distinct request ids: a failed attempt followed by a
  successful one is one request, while both attempts' tokens and costs add up.
* ``by_status`` counts requests by the status of their last attempt (ok, error, cancelled,
  cache_hit, rejected); ``attempts`` counts every event by its own status.
  ``error_rate`` = final errors / requests; ``success_rate`` = (ok + cache_hit) / requests.
* Latency (avg, p50, p95, exact quantiles) is over successful upstream calls (status ok).
* Money is ``Decimal`` end to end and leaves as a string with 9 decimals.

``usage_events`` is plain MergeTree with no duplicates (see migration 0001), so no FINAL is
needed anywhere; ``daily`` reads the ``usage_daily`` rollup and re-aggregates it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from accounting.timestamps import utc_text
from schemas.analytics import AnalyticsQuery

Sql = tuple[str, dict[str, Any]]

STATUSES = ("ok", "error", "cancelled", "cache_hit", "rejected")
GROUP_COLUMNS = {
    "model": "model_alias", "key": "key_id", "team": "team_id",
    "provider": "provider", "user": "end_user",
}
LOG_COLUMNS = (
    "event_id", "request_id", "attempt", "ts", "key_id", "team_id", "end_user", "model_alias",
    "provider", "deployment_id", "upstream_model", "endpoint", "streamed", "status",
    "error_type", "http_status", "prompt_tokens", "completion_tokens", "cached_tokens",
    "cache_write_tokens", "reasoning_tokens", "usage_estimated", "cost", "saved_cost",
    "price_version", "latency_ms", "ttft_ms", "batch_id", "metadata", "route_tier",
    "route_score", "route_reason", "images", "audio_seconds", "characters",
)
_MONEY = Decimal("1e-9")


def money(value: Decimal | None) -> str | None:
    return None if value is None else format(Decimal(value).quantize(_MONEY), "f")


def _number(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else round(float(value), 3)


def where(q: AnalyticsQuery, now: datetime) -> Sql:
    """The WHERE clause on ``usage_events`` for the query's range and filters."""
    start, end = q.window(now)
    clauses = [
        "ts >= {start:DateTime64(3, 'UTC')}",
        "ts < {end:DateTime64(3, 'UTC')}",
    ]
    params: dict[str, Any] = {"start": start, "end": end}
    for column, value in (("key_id", q.key_id), ("team_id", q.team_id),
                          ("model_alias", q.model), ("status", q.status),
                          ("request_id", q.request_id)):
        if value is not None:
            clauses.append(f"{column} = {{{column}:String}}")
            params[column] = value
    return " AND ".join(clauses), params


_TOTALS = """
    uniqExact(request_id) AS requests,
    count() AS events,
    {status_counts},
    sum(prompt_tokens) AS prompt_tokens,
    sum(completion_tokens) AS completion_tokens,
    sum(cached_tokens) AS cached_tokens,
    sum(cache_write_tokens) AS cache_write_tokens,
    sum(reasoning_tokens) AS reasoning_tokens,
    sum(ifNull(cost, toDecimal64(0, 9))) AS total_cost,
    sum(ifNull(saved_cost, toDecimal64(0, 9))) AS total_saved_cost,
    countIf(cost IS NULL AND status IN ('ok', 'error', 'cancelled')) AS unpriced_events,
    avgIf(latency_ms, status = 'ok') AS latency_avg_ms,
    quantileExactIf(0.5)(latency_ms, status = 'ok') AS latency_p50_ms,
    quantileExactIf(0.95)(latency_ms, status = 'ok') AS latency_p95_ms
""".format(status_counts=",\n    ".join(
    f"countIf(status = '{s}') AS attempts_{s}" for s in STATUSES
))


def summary_sql(q: AnalyticsQuery, now: datetime) -> list[Sql]:
    """Event totals, then requests by the status of their last attempt."""
    cond, params = where(q, now)
    totals = f"SELECT {_TOTALS} FROM usage_events WHERE {cond}"
    final = (
        "SELECT final, count() AS requests FROM ("
        " SELECT request_id, argMax(status, (attempt, ts)) AS final"
        f" FROM usage_events WHERE {cond} GROUP BY request_id"
        ") GROUP BY final"
    )
    return [(totals, params), (final, params)]


def breakdown_sql(q: AnalyticsQuery, now: datetime) -> Sql:
    cond, params = where(q, now)
    column = GROUP_COLUMNS[q.by]
    sql = (
        f"SELECT {column} AS group, {_TOTALS} FROM usage_events WHERE {cond} "
        "GROUP BY group ORDER BY total_cost DESC, requests DESC, group LIMIT 1000"
    )
    return sql, params


def daily_sql(q: AnalyticsQuery, now: datetime) -> Sql:
    """Per day from the rollup; whole UTC days covering the range."""
    start, end = q.window(now)
    clauses = ["day >= {first:Date}", "day <= {last:Date}"]
    params: dict[str, Any] = {
        "first": start.date(), "last": (end - timedelta(microseconds=1)).date(),
    }
    for column, value in (("key_id", q.key_id), ("team_id", q.team_id),
                          ("model_alias", q.model)):
        if value is not None:
            clauses.append(f"{column} = {{{column}:String}}")
            params[column] = value
    sql = (
        "SELECT day, uniqExactMerge(requests) AS requests, sum(events) AS events, "
        "sum(ok) AS attempts_ok, sum(errors) AS attempts_error, "
        "sum(cancelled) AS attempts_cancelled, sum(cache_hits) AS attempts_cache_hit, "
        "sum(rejected) AS attempts_rejected, "
        "sum(prompt_tokens) AS prompt_tokens, sum(completion_tokens) AS completion_tokens, "
        "sum(cached_tokens) AS cached_tokens, sum(cache_write_tokens) AS cache_write_tokens, "
        "sum(reasoning_tokens) AS reasoning_tokens, "
        "sum(cost) AS total_cost, sum(saved_cost) AS total_saved_cost "
        f"FROM usage_daily WHERE {' AND '.join(clauses)} GROUP BY day ORDER BY day"
    )
    return sql, params


def logs_sql(q: AnalyticsQuery, now: datetime) -> Sql:
    cond, params = where(q, now)
    params = {**params, "limit": q.limit + 1, "offset": q.offset}
    sql = (
        f"SELECT {', '.join(LOG_COLUMNS)} FROM usage_events WHERE {cond} "
        "ORDER BY ts DESC, event_id DESC LIMIT {limit:UInt32} OFFSET {offset:UInt32}"
    )
    return sql, params


def _rows(client: Any, sql: Sql) -> list[dict[str, Any]]:
    result = client.query(sql[0], parameters=sql[1])
    return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]


def _totals(row: dict[str, Any]) -> dict[str, Any]:
    """Shape one totals row: money as strings, NaN as null, attempts grouped."""
    out: dict[str, Any] = {
        "requests": int(row["requests"]),
        "events": int(row["events"]),
        "attempts": {s: int(row[f"attempts_{s}"]) for s in STATUSES},
    }
    for name in ("prompt_tokens", "completion_tokens", "cached_tokens", "cache_write_tokens",
                 "reasoning_tokens"):
        out[name] = int(row[name])
    out["cost"] = money(row["total_cost"])
    out["saved_cost"] = money(row["total_saved_cost"])
    out["cache_hits"] = out["attempts"]["cache_hit"]
    if "unpriced_events" in row:
        out["unpriced_events"] = int(row["unpriced_events"])
        out["latency_ms"] = {
            "avg": _number(row["latency_avg_ms"]),
            "p50": _number(row["latency_p50_ms"]),
            "p95": _number(row["latency_p95_ms"]),
        }
    return out


def _range(q: AnalyticsQuery, now: datetime) -> dict[str, str]:
    start, end = q.window(now)
    return {"start": utc_text(start), "end": utc_text(end)}


def summary(client: Any, q: AnalyticsQuery, now: datetime | None = None) -> dict[str, Any]:
    now = now or datetime.now(UTC)
    totals_sql, final_sql = summary_sql(q, now)
    out = _totals(_rows(client, totals_sql)[0])
    by_status = dict.fromkeys(STATUSES, 0)
    for row in _rows(client, final_sql):
        by_status[row["final"]] = int(row["requests"])
    requests = out["requests"]
    out["by_status"] = by_status
    out["error_rate"] = by_status["error"] / requests if requests else None
    served = by_status["ok"] + by_status["cache_hit"]
    out["success_rate"] = served / requests if requests else None
    return {"range": _range(q, now), **out}


def breakdown(client: Any, q: AnalyticsQuery, now: datetime | None = None) -> dict[str, Any]:
    now = now or datetime.now(UTC)
    rows = _rows(client, breakdown_sql(q, now))
    data = [{q.by: row["group"] or None, **_totals(row)} for row in rows]
    return {"range": _range(q, now), "by": q.by, "data": data}


def daily(client: Any, q: AnalyticsQuery, now: datetime | None = None) -> dict[str, Any]:
    now = now or datetime.now(UTC)
    rows = _rows(client, daily_sql(q, now))
    data = [{"day": row["day"].isoformat(), **_totals(row)} for row in rows]
    return {"range": _range(q, now), "data": data}


def _log_entry(row: dict[str, Any]) -> dict[str, Any]:
    entry = dict(row)
    entry["ts"] = utc_text(row["ts"])
    entry["cost"] = money(row["cost"])
    entry["saved_cost"] = money(row["saved_cost"])
    for name in ("key_id", "team_id", "end_user", "deployment_id", "upstream_model",
                 "error_type", "price_version", "batch_id", "route_tier", "route_reason"):
        entry[name] = row[name] or None
    entry["streamed"] = bool(row["streamed"])
    if "audio_seconds" in row:  # exact, as text like cost
        entry["audio_seconds"] = format(Decimal(row["audio_seconds"]), "f")
    return entry


def logs(client: Any, q: AnalyticsQuery, now: datetime | None = None) -> dict[str, Any]:
    """Events newest first, ``limit`` per page from ``offset``."""
    now = now or datetime.now(UTC)
    rows = _rows(client, logs_sql(q, now))
    page = [_log_entry(row) for row in rows[: q.limit]]
    return {
        "range": _range(q, now),
        "data": page,
        "limit": q.limit,
        "offset": q.offset,
        "has_more": len(rows) > q.limit,
    }


QUERY_FUNCTIONS: dict[str, Callable[[Any, AnalyticsQuery], dict[str, Any]]] = {
    "summary": summary,
    "breakdown": breakdown,
    "daily": daily,
    "logs": logs,
}
