"""Analytics over NATS request/reply: the accounting service owns ClickHouse (a chDB store
opens in one process only), so the ingress asks it.

Subject ``aigw.v1.analytics.<query>`` (summary | breakdown | daily | logs); request: JSON
of :class:`~schemas.analytics.AnalyticsQuery` fields; reply: the query's JSON, or
``{"error": {"message", "status"}}`` (status 400 for a bad query, 500 otherwise).

No ClickHouse import here: the ingress imports this module for the subject names.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pydantic

from accounting import analytics, audit_log
from schemas import subjects
from schemas.analytics import QUERIES, AnalyticsQuery
from schemas.audit import AuditQuery

log = logging.getLogger("aigw.accounting.service")

ANALYTICS_PREFIX = subjects.ANALYTICS_PREFIX
ANALYTICS_ALL = subjects.ANALYTICS_ALL
ANALYTICS_QUEUE = "accounting"
# The audit log is read on the same path: ``aigw.v1.analytics.audit``, an AuditQuery.
AUDIT_QUERY = "audit"


def analytics_subject(query: str) -> str:
    """Subject the accounting service answers ``query`` on."""
    return subjects.analytics(query)


def query_name(subject: str) -> str:
    return subject.rsplit(".", 1)[-1]


def _error(status: int, message: str) -> bytes:
    return json.dumps({"error": {"message": message, "status": status}}).encode()


def answer(client: Any, query: str, body: bytes) -> bytes:
    """The reply to one analytics request; blocking (runs ClickHouse queries)."""
    if query == AUDIT_QUERY:
        return _answer_audit(client, body)
    if query not in QUERIES:
        return _error(404, f"unknown analytics query {query!r} (known: {', '.join(QUERIES)})")
    try:
        params = json.loads(body or b"{}")
        q = AnalyticsQuery.model_validate(params)
    except (ValueError, pydantic.ValidationError) as exc:
        return _error(400, str(exc))
    try:
        result = analytics.QUERY_FUNCTIONS[query](client, q)
    except Exception:
        log.exception("analytics query %s failed", query)
        return _error(500, f"analytics query {query} failed")
    return json.dumps(result).encode()


def _answer_audit(client: Any, body: bytes) -> bytes:
    try:
        q = AuditQuery.model_validate_json(body or b"{}")
    except (ValueError, pydantic.ValidationError) as exc:
        return _error(400, str(exc))
    try:
        result = audit_log.query(client, q)
    except Exception:
        log.exception("audit query failed")
        return _error(500, "audit query failed")
    return json.dumps(result).encode()
