"""Pages from Jinja2 templates, with the headers every console answer carries.

The Content-Security-Policy allows scripts, styles and fetches from this origin only: no
inline script or style anywhere in the templates, no third-party origin, no framing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}

_env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]),
                   trim_blocks=True, lstrip_blocks=True)
def usd(value: object) -> str:
    """Money for people: cents from a cent up, the exact figure below (no trailing zeros).
    Pages put the exact amount in a title where they round."""
    if value is None or value == "":
        return "$0"
    amount = Decimal(str(value))
    if amount == 0:
        return "$0"
    if abs(amount) >= Decimal("0.01"):
        return f"${amount.quantize(Decimal('0.01')):,}"
    return "$" + format(amount.normalize(), "f")


_env.filters["usd"] = usd
_env.filters["datetime"] = lambda ts: (
    datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M") if ts else "-")


def base(request: Request) -> str:
    """The console's URL prefix, under ``SERVER_ROOT_PATH`` when there is one."""
    root: str = request.scope.get("root_path", "")
    return f"{root}/ui"


def secure(request: Request) -> bool:
    """Whether the browser reached us over TLS (directly or through a proxy that says so)."""
    forwarded = request.headers.get("x-forwarded-proto", "")
    return request.url.scheme == "https" or forwarded.split(",")[0].strip() == "https"


def page(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    html = _env.get_template(template).render(ui=base(request), **context)
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)


def redirect(request: Request, path: str) -> Response:
    """A 303 to a console page (``path`` relative to ``/ui``)."""
    return RedirectResponse(base(request) + path, status_code=303, headers=SECURITY_HEADERS)
