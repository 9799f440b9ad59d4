"""What the console pages read: usage analytics from the accounting service (over the same
NATS request/reply as ``/v1/usage``), scoped to what the viewer may see."""

from __future__ import annotations

import json
from typing import Any

import pydantic
from nats.errors import Error as NatsError

from ingress.console.guard import Viewer
from ingress.state import Gateway
from schemas.analytics import AnalyticsQuery
from schemas.subjects import analytics as analytics_subject

TIMEOUT = 10.0


class Unavailable(Exception):
    """The accounting service did not answer: pages say so instead of failing."""


def scope(found: Viewer) -> dict[str, str]:
    """Filters the viewer cannot lift: a virtual key sees its own usage only, a team admin
    its team's (as on ``/v1/usage``)."""
    team = found.principal.admin_of_team
    if team is not None:
        return {"team_id": team}
    key = found.principal.key
    return {"key_id": key.id} if key is not None else {}


def query(found: Viewer, **params: Any) -> AnalyticsQuery:
    given = {k: v for k, v in params.items() if v not in (None, "")}
    return AnalyticsQuery.model_validate({**given, **scope(found)})


async def ask(gateway: Gateway, name: str, q: pydantic.BaseModel) -> dict[str, Any]:
    body = q.model_dump_json(exclude_defaults=True).encode()
    try:
        reply = await gateway.nc.request(analytics_subject(name), body, timeout=TIMEOUT)
    except (NatsError, TimeoutError) as exc:
        raise Unavailable(f"The accounting service did not answer ({type(exc).__name__}).") \
            from None
    answer: dict[str, Any] = json.loads(reply.data)
    if "error" in answer:
        raise Unavailable(str(answer["error"].get("message", "analytics failed")))
    return answer


def invalid_filter(exc: pydantic.ValidationError) -> str:
    first = exc.errors()[0]
    loc = ".".join(str(p) for p in first.get("loc", ()))
    message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
    return f"{loc}: {message}" if loc else message
