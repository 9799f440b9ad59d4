"""The audit log in ClickHouse: storing audit events once, and reading them back.

``AuditStore.insert`` keeps out event ids already stored and tags the insert with a
deduplication token, as the usage store does; the table is a ReplacingMergeTree on
(ts, event_id) besides (migration 0005), so ``query`` reads it with FINAL.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, timedelta
from typing import Any

from accounting.timestamps import utc_text
from schemas.audit import AuditEvent, AuditQuery

TABLE = "audit_log"
COLUMNS = (
    "event_id", "ts", "actor", "actor_kind", "actor_team_id", "action", "target_kind",
    "target_id", "changes", "source_ip", "request_id", "schema_version",
)
# One id is always stamped once (the ingress that made the event), but a margin costs
# nothing at this volume.
SAME_ID_MARGIN = timedelta(days=1)
# Synchronous and deduplicated, as for usage (accounting.store, not imported: this module
# is imported by the analytics service, which stays free of the ClickHouse client).
INSERT_SETTINGS: dict[str, Any] = {"async_insert": 0, "insert_deduplicate": 1}


def _token(event_ids: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(event_ids).encode()).hexdigest()


def row(event: AuditEvent) -> list[Any]:
    changes = {name: change.model_dump(mode="json") for name, change in event.changes.items()}
    return [
        event.event_id, event.ts, event.actor, event.actor_kind, event.actor_team_id or "",
        event.action, event.target_kind, event.target_id,
        json.dumps(changes, sort_keys=True), event.source_ip or "", event.request_id,
        event.schema_version,
    ]


class AuditStore:
    def __init__(self, client: Any) -> None:
        self.client = client

    def existing_ids(self, events: Sequence[AuditEvent]) -> set[str]:
        if not events:
            return set()
        result = self.client.query(
            f"SELECT event_id FROM {TABLE} "
            "WHERE ts BETWEEN {lo:DateTime64(3, 'UTC')} AND {hi:DateTime64(3, 'UTC')} "
            "AND event_id IN {ids:Array(String)}",
            parameters={
                "lo": min(e.ts for e in events) - SAME_ID_MARGIN,
                "hi": max(e.ts for e in events) + SAME_ID_MARGIN,
                "ids": [e.event_id for e in events],
            },
        )
        return {r[0] for r in result.result_rows}

    def insert(self, events: Sequence[AuditEvent]) -> int:
        """Store the events not stored yet; return how many that was."""
        unique = list({e.event_id: e for e in events}.values())
        present = self.existing_ids(unique)
        fresh = [e for e in unique if e.event_id not in present]
        if not fresh:
            return 0
        self.client.insert(
            TABLE, [row(e) for e in fresh], column_names=list(COLUMNS),
            settings={**INSERT_SETTINGS,
                      "insert_deduplication_token": _token([e.event_id for e in fresh])},
        )
        return len(fresh)


def query_sql(q: AuditQuery) -> tuple[str, dict[str, Any]]:
    clauses: list[str] = []
    params: dict[str, Any] = {"limit": q.limit + 1, "offset": q.offset}
    for column, value in (("actor", q.actor), ("actor_team_id", q.team_id),
                          ("action", q.action), ("target_kind", q.target_kind),
                          ("target_id", q.target_id)):
        if value is not None:
            clauses.append(f"{column} = {{{column}:String}}")
            params[column] = value
    if q.since is not None:
        clauses.append("ts >= {since:DateTime64(3, 'UTC')}")
        params["since"] = q.since.astimezone(UTC)
    if q.until is not None:
        clauses.append("ts < {until:DateTime64(3, 'UTC')}")
        params["until"] = q.until.astimezone(UTC)
    where = f"WHERE {' AND '.join(clauses)} " if clauses else ""
    sql = (f"SELECT {', '.join(COLUMNS)} FROM {TABLE} FINAL {where}"
           "ORDER BY ts DESC, event_id DESC LIMIT {limit:UInt32} OFFSET {offset:UInt32}")
    return sql, params


def _entry(values: dict[str, Any]) -> dict[str, Any]:
    return {
        "event_id": values["event_id"],
        "ts": utc_text(values["ts"]),
        "actor": values["actor"],
        "actor_kind": values["actor_kind"],
        "actor_team_id": values["actor_team_id"] or None,
        "action": values["action"],
        "target": {"kind": values["target_kind"], "id": values["target_id"]},
        "changes": json.loads(values["changes"] or "{}"),
        "source_ip": values["source_ip"] or None,
        "request_id": values["request_id"],
    }


def query(client: Any, q: AuditQuery) -> dict[str, Any]:
    """A page of audit events, newest first."""
    sql, params = query_sql(q)
    result = client.query(sql, parameters=params)
    rows = [dict(zip(result.column_names, r, strict=True)) for r in result.result_rows]
    return {
        "object": "list",
        "data": [_entry(r) for r in rows[: q.limit]],
        "limit": q.limit,
        "offset": q.offset,
        "has_more": len(rows) > q.limit,
    }
