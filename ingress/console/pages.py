"""The console's router: sign-in and sign-out, the overview, the static files, and the
handlers that turn a missing session into the sign-in page and a refusal into a 403 page.
The other pages live beside it, one module per area."""

from __future__ import annotations

import asyncio
import hmac
import secrets
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, Response

from ingress.admission import AdmissionUnavailable
from ingress.admission.gatekeeper import scopes_for
from ingress.audit import AuditTrail
from ingress.auth.principal import MASTER, Principal
from ingress.console import charts, data
from ingress.console.guard import (
    COOKIE,
    Denied,
    SignInNeeded,
    Viewer,
    check_csrf,
    gateway_of,
    master_key,
    sessions,
    viewer,
)
from ingress.console.render import SECURITY_HEADERS, STATIC, base, page, redirect, secure
from ingress.console.sessions import digest

router = APIRouter()

LOGIN_COOKIE = "aigw_console_login"
_STATIC_TYPES = {"console.css": "text/css", "console.js": "text/javascript"}
MAX_FORM_BYTES = 64 * 1024


async def form(request: Request) -> dict[str, str]:
    """An urlencoded form's fields (the last value of a repeated one)."""
    raw = await request.body()
    if len(raw) > MAX_FORM_BYTES:
        raise Denied("The form is too large.")
    try:
        return dict(parse_qsl(raw.decode(), keep_blank_values=True, max_num_fields=200))
    except (UnicodeDecodeError, ValueError):
        raise Denied("The form could not be read.") from None


async def posted(request: Request, found: Viewer) -> dict[str, str]:
    """A form post's fields, once its CSRF token matched the viewer's session."""
    fields = await form(request)
    check_csrf(found, fields.get("csrf"))
    return fields


def context(found: Viewer, **extra: Any) -> dict[str, Any]:
    return {"viewer": found, "csrf": found.session.csrf, **extra}


def install(app: FastAPI) -> None:
    async def sign_in(request: Request, exc: Exception) -> Response:
        return redirect(request, "/login")

    async def denied(request: Request, exc: Exception) -> Response:
        message = exc.message if isinstance(exc, Denied) else "Not allowed."
        return page(request, "denied.html", status=403, message=message, viewer=None)

    app.add_exception_handler(SignInNeeded, sign_in)
    app.add_exception_handler(Denied, denied)


@router.get("/static/{name}")
async def static(name: str) -> Response:
    media = _STATIC_TYPES.get(name)
    if media is None:
        return Response(status_code=404, headers=SECURITY_HEADERS)
    return FileResponse(STATIC / name, media_type=media,
                        headers={**SECURITY_HEADERS, "cache-control": "max-age=300"})


# ---- signing in and out ----------------------------------------------------------------

@router.get("/login")
async def login_page(request: Request, error: str | None = None) -> Response:
    token = secrets.token_urlsafe(24)
    gateway = gateway_of(request)
    closed = master_key(gateway) is None
    response = page(request, "login.html", viewer=None, login_token=token, error=error,
                    closed=closed)
    response.set_cookie(LOGIN_COOKIE, token, max_age=600, httponly=True, samesite="strict",
                        secure=secure(request), path=base(request))
    return response


@router.post("/login")
async def login(request: Request) -> Response:
    fields = await form(request)
    expected = request.cookies.get(LOGIN_COOKIE, "")
    given = fields.get("login_token", "")
    if not expected or not hmac.compare_digest(expected.encode(), given.encode()):
        raise Denied("The sign-in form expired: open the sign-in page again.")
    gateway = gateway_of(request)
    secret = fields.get("key", "").strip()
    master = master_key(gateway)
    key_id: str | None
    if master is not None and secret and hmac.compare_digest(digest(secret), digest(master)):
        key_id, principal = None, MASTER
    else:
        found = gateway.keys.check(secret) if master is not None and secret else None
        if not isinstance(found, Principal) or found.key is None:
            note_sign_in(request, None)
            return page(request, "login.html", status=401, viewer=None,
                        login_token=given, closed=master is None,
                        error="That key was not accepted: it is unknown, revoked or expired.")
        key_id, principal = found.key.id, found
    session_id, _ = await sessions(request).create(key_id, master)
    note_sign_in(request, principal)
    response = redirect(request, "")
    response.set_cookie(COOKIE, session_id, max_age=int(sessions(request).lifetime),
                        httponly=True, samesite="strict", secure=secure(request),
                        path=base(request))
    response.delete_cookie(LOGIN_COOKIE, path=base(request))
    return response


def note_sign_in(request: Request, principal: Principal | None) -> None:
    """The audit log's record of a console sign-in, or of a failed one."""
    trail: AuditTrail | None = getattr(request.app.state, "audit", None)
    if trail is not None:
        trail.record_sign_in(request, principal)


@router.post("/logout")
async def logout(request: Request) -> Response:
    found = await viewer(request)
    await posted(request, found)
    await sessions(request).end(found.session_id)
    response = redirect(request, "/login")
    response.delete_cookie(COOKIE, path=base(request))
    return response


# ---- overview ------------------------------------------------------------------------

def _money(value: str | None) -> float:
    return float(value) if value else 0.0


def every_day(rows: list[dict[str, Any]], count: int,
              today: date | None = None) -> list[tuple[str, dict[str, Any]]]:
    """The last ``count`` UTC days, oldest first, each with its row (empty when the day
    had no traffic), so a chart's bars line up with the calendar."""
    today = today or datetime.now(UTC).date()
    by_day = {row["day"]: row for row in rows}
    days = [(today - timedelta(days=n)).isoformat() for n in range(count - 1, -1, -1)]
    return [(d, by_day.get(d, {})) for d in days]


@router.get("")
async def overview(request: Request) -> Response:
    found = await viewer(request)
    gateway = gateway_of(request)
    try:
        today, month, daily, models = await asyncio.gather(
            data.ask(gateway, "summary", data.query(found, days=1)),
            data.ask(gateway, "summary", data.query(found, days=30)),
            data.ask(gateway, "daily", data.query(found, days=30)),
            data.ask(gateway, "breakdown", data.query(found, days=30, by="model")))
    except data.Unavailable as exc:
        return page(request, "overview.html", **context(found, unavailable=str(exc)))
    days = every_day(daily["data"], 30)
    spend_chart = charts.bar_chart([(d, _money(row.get("cost"))) for d, row in days],
                                   "Spend per day, last 30 days", "$")
    request_chart = charts.bar_chart([(d, float(row.get("requests", 0))) for d, row in days],
                                     "Requests per day, last 30 days")
    model_rows = models["data"][:12]
    model_chart = charts.bar_chart([(m["model"] or "(none)", _money(m["cost"]))
                                    for m in model_rows], "Spend per model, last 30 days", "$")
    budget = None
    if found.principal.key is not None:
        try:
            budget = await gateway.gatekeeper.admission.status(scopes_for(found.principal, None))
        except AdmissionUnavailable:
            budget = None
    return page(request, "overview.html", **context(
        found, today=today, month=month, spend_chart=spend_chart,
        request_chart=request_chart, model_chart=model_chart, models=model_rows,
        budget=budget))
