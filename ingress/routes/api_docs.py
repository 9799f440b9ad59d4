"""``GET /openapi.json`` and ``GET /docs``, as ``AIGW_API_DOCS`` says.

- ``key`` (the default): the schema needs a key, like every other route (any virtual key
  or the master key); ``/docs``, whose page fetches the schema without one, is not served;
- ``public``: both open to anybody, for a gateway on a developer's machine;
- ``off``: neither exists (404).

The schema lists every route the gateway serves and their parameters: on a gateway open to
the internet it is a map for whoever probes it, so it is not given away by default.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse

from ingress.deps import GatewayDep
from ingress.errors import ApiError
from ingress.openapi_bodies import add_request_bodies

router = APIRouter(include_in_schema=False)


def _not_served(path: str) -> ApiError:
    return ApiError(404, f"Invalid URL (GET {path})", code="not_found")


@router.get("/openapi.json")
async def openapi(request: Request, gateway: GatewayDep) -> dict[str, Any]:
    mode = gateway.settings.api_docs
    if mode == "off":
        raise _not_served("/openapi.json")
    if mode == "key":
        gateway.auth.check(request)  # 401 without a valid key
    schema: dict[str, Any] = request.app.openapi()
    if not schema.get("x-aigw-bodies"):  # FastAPI caches the dict: fill it in once
        add_request_bodies(schema)
        schema["x-aigw-bodies"] = True
    return schema


@router.get("/docs")
async def docs(request: Request, gateway: GatewayDep) -> HTMLResponse:
    if gateway.settings.api_docs != "public":
        raise _not_served("/docs")
    root = request.scope.get("root_path", "")
    return get_swagger_ui_html(openapi_url=f"{root}/openapi.json", title="ai-gateway")
