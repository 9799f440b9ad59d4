"""``GET /usage/{summary,breakdown,daily,logs}``: spend and traffic, from the accounting
service over NATS request/reply (it owns ClickHouse; see ``accounting.service``).

Time range: ``days`` (the last N UTC days, today included) or ``start``/``end`` (ISO date or
datetime, end exclusive); filters ``key_id``, ``team_id``, ``model``. Parameters are checked
here with the accounting service's own model, so a bad one is a 400 without a NATS trip.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import pydantic
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from ingress.admission import AdmissionUnavailable, unavailable_error
from ingress.admission.gatekeeper import scopes_for
from ingress.auth.principal import Principal
from ingress.deps import AuthedGateway
from ingress.errors import ApiError, invalid
from ingress.state import Gateway
from schemas.analytics import AnalyticsQuery, BreakdownBy
from schemas.subjects import analytics as analytics_subject

router = APIRouter()

ANALYTICS_TIMEOUT_S = 10.0


def scope_for(request: Request) -> dict[str, str]:
    """Filters the caller cannot lift: a virtual key sees its own usage only, a team admin
    key its team's, whatever it asks for; the master key (or an open gateway) sees all and
    may filter."""
    principal: Principal = request.state.principal
    team = principal.admin_of_team
    if team is not None:
        return {"team_id": team}
    if principal.key is not None:
        return {"key_id": principal.key.id}
    return {}


@router.get("/usage/budget")
async def usage_budget(request: Request, gateway: AuthedGateway) -> dict[str, Any]:
    """The caller's limits, spend, reservations and reset times, per scope (key, team)."""
    principal: Principal = request.state.principal
    scopes = scopes_for(principal, None)
    try:
        status = await gateway.gatekeeper.admission.status(scopes)
    except AdmissionUnavailable:
        raise unavailable_error() from None
    return {"key_id": principal.key_id, "team_id": principal.team_id, **status}


def build_query(params: dict[str, Any], scope: dict[str, str]) -> AnalyticsQuery:
    given = {name: value for name, value in params.items() if value is not None}
    try:
        return AnalyticsQuery.model_validate({**given, **scope})
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        loc = first.get("loc", ())
        param = str(loc[0]) if loc else None  # not "start.datetime": the union's branch
        message = str(first.get("msg", "invalid query")).removeprefix("Value error, ")
        raise invalid(f"{param}: {message}" if param else message, param=param) from None


async def ask(gateway: Gateway, query: str, q: pydantic.BaseModel) -> Response:
    """The accounting service's answer to ``query`` (an analytics or the audit query)."""
    body = q.model_dump_json(exclude_defaults=True).encode()
    try:
        reply = await gateway.nc.request(analytics_subject(query), body,
                                         timeout=ANALYTICS_TIMEOUT_S)
    except NoRespondersError:
        raise ApiError(503, "accounting service is not running", type="server_error",
                       code="accounting_unavailable") from None
    except NatsTimeoutError:
        raise ApiError(504, "accounting service did not answer in time", type="server_error",
                       code="accounting_timeout") from None
    if reply.data.startswith(b'{"error"'):
        error = json.loads(reply.data)["error"]
        status = int(error.get("status", 502))
        raise ApiError(status, str(error.get("message")),
                       type="invalid_request_error" if status < 500 else "server_error")
    # Already JSON, money already strings: pass it through untouched.
    return Response(reply.data, media_type="application/json")


async def _filters(
    days: int | None = None, start: str | None = None, end: str | None = None,
    key_id: str | None = None, team_id: str | None = None, model: str | None = None,
) -> dict[str, Any]:
    """The time range and filters every usage query takes, as query parameters."""
    return {"days": days, "start": start, "end": end, "key_id": key_id,
            "team_id": team_id, "model": model}


Filters = Annotated[dict[str, Any], Depends(_filters)]


@router.get("/usage/summary")
async def usage_summary(request: Request, gateway: AuthedGateway, filters: Filters) -> Response:
    return await ask(gateway, "summary", build_query(filters, scope_for(request)))


@router.get("/usage/breakdown")
async def usage_breakdown(
    request: Request, gateway: AuthedGateway, filters: Filters, by: BreakdownBy = "model",
) -> Response:
    q = build_query({**filters, "by": by}, scope_for(request))
    return await ask(gateway, "breakdown", q)


@router.get("/usage/daily")
async def usage_daily(request: Request, gateway: AuthedGateway, filters: Filters) -> Response:
    return await ask(gateway, "daily", build_query(filters, scope_for(request)))


@router.get("/usage/logs")
async def usage_logs(
    request: Request, gateway: AuthedGateway, filters: Filters, limit: int = 100,
    offset: int = 0, status: str | None = None, request_id: str | None = None,
) -> Response:
    q = build_query({**filters, "limit": limit, "offset": offset, "status": status,
                     "request_id": request_id}, scope_for(request))
    return await ask(gateway, "logs", q)
