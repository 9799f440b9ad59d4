"""``/ui/audit``: the audit log, newest first, filtered and paged, read from ClickHouse
through the accounting service as ``GET /admin/audit`` reads it: all of it for the master
key, the actions of its own team's keys for a team admin."""

from __future__ import annotations

from typing import Any, get_args
from urllib.parse import urlencode

import pydantic
from fastapi import APIRouter, Request
from fastapi.responses import Response

from ingress.console import data
from ingress.console.guard import gateway_of, key_admin
from ingress.console.pages import context
from ingress.console.paging import PER_PAGE, Page
from ingress.console.render import page
from schemas.audit import Action, AuditQuery, TargetKind

router = APIRouter()

FILTERS = ("actor", "action", "target_kind", "target_id", "since", "until")


@router.get("/audit")
async def audit(request: Request, p: int = 1) -> Response:
    found = await key_admin(request)
    filters = {name: request.query_params.get(name, "").strip() for name in FILTERS}
    number = max(1, p)
    rows: dict[str, Any] = {"data": [], "has_more": False}
    error = None
    try:
        q = AuditQuery.model_validate({
            **{k: v for k, v in filters.items() if v}, "limit": PER_PAGE,
            "offset": (number - 1) * PER_PAGE, "team_id": found.own_team})
        rows = await data.ask(gateway_of(request), "audit", q)
    except pydantic.ValidationError as exc:
        error = data.invalid_filter(exc)
    except data.Unavailable as exc:
        error = str(exc)
    listing = Page(items=rows["data"], number=number, has_previous=number > 1,
                   has_next=bool(rows.get("has_more")))
    return page(request, "audit.html", **context(
        found, events=listing, filters=filters, actions=get_args(Action),
        kinds=get_args(TargetKind), error=error,
        query=urlencode({k: v for k, v in filters.items() if v})))
