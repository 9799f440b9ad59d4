"""Plain ASGI middleware: cheaper than Starlette's BaseHTTPMiddleware on the hot path."""

from __future__ import annotations

import itertools
import logging
import os
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.telemetry import tracing
from ingress.metrics import (
    FIRST_TOKEN,
    INGRESS,
    OPERATION_DURATION,
    REQUESTS,
    GenAI,
    status_class,
)
from ingress.spans import server_span

_access = logging.getLogger("aigw.access")
# Scrapes and probes are not traffic: they would dilute the error rate.
_UNCOUNTED = ("/metrics", "/health")

# A random per-process prefix and a counter: unique across processes and restarts without
# a system call per request (os.urandom costs ~50 us on some virtual machines).
_PREFIX = os.urandom(8).hex()
_COUNTER = itertools.count(1)


def new_request_id() -> str:
    return f"req_{_PREFIX}{next(_COUNTER):08x}"


class RequestIdMiddleware:
    """Give every request an id (``scope["state"]["request_id"]``) and return it in
    ``x-request-id`` on every response, errors included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_request_id()
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        await self.app(scope, receive, send_with_id)


class RootPathMiddleware:
    """Serve the app under a path prefix (``SERVER_ROOT_PATH``) as well as at the root, as
    a proxy that does not strip the prefix would send it."""

    def __init__(self, app: ASGIApp, root_path: str) -> None:
        self.app = app
        self.root_path = root_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and self.root_path:
            path: str = scope["path"]
            if path == self.root_path or path.startswith(self.root_path + "/"):
                scope = {**scope, "path": path[len(self.root_path):] or "/",
                         "root_path": scope.get("root_path", "") + self.root_path}
        await self.app(scope, receive, send)


_PREFIXES = ("/v1/", "/admin/")


def route_label(scope: Scope) -> str:
    """The matched route's template (bounded, unlike the path), with the router prefix
    FastAPI keeps apart from it."""
    template: str | None = getattr(scope.get("route"), "path", None)
    if template is None:
        return "unmatched"
    path: str = scope["path"]
    for prefix in _PREFIXES:
        if path.startswith(prefix) and not template.startswith(prefix):
            return prefix[:-1] + template
    return template


class ObserveMiddleware:
    """Metrics for every request, the GenAI duration and time to first token for inference
    routes (labels the route leaves in ``scope["state"]["genai"]``), the server span when
    tracing is on, and the access log when ``AIGW_ACCESS_LOG`` asks for it."""

    def __init__(self, app: ASGIApp, access_log: bool = False) -> None:
        self.app = app
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 500
        first_body = 0.0

        async def observed(message: Message) -> None:
            nonlocal status, first_body
            if message["type"] == "http.response.start":
                status = message["status"]
            elif not first_body and message["type"] == "http.response.body" and message.get(
                    "body"):
                first_body = time.perf_counter()
            await send(message)

        span = server_span(scope) if tracing.enabled else None
        INGRESS.in_flight += 1
        try:
            await self.app(scope, receive, observed)
        finally:
            INGRESS.in_flight -= 1
            elapsed = time.perf_counter() - began
            route = route_label(scope)
            if not route.startswith(_UNCOUNTED):
                REQUESTS.labels(route, status_class(status)).inc()
            state: dict[str, Any] = scope.get("state", {})
            genai: GenAI | None = state.get("genai")
            error = state.get("error_type") or str(status) if status >= 400 else ""
            if genai is not None:
                labels = (genai.operation, genai.provider, genai.model)
                OPERATION_DURATION.labels(*labels, error).observe(elapsed)
                if genai.stream and first_body and status < 400:
                    FIRST_TOKEN.labels(*labels).observe(first_body - began)
            if span is not None:
                span.end(route, status, error, genai, state.get("request_id"))
            if self.access_log:
                _access.info(
                    "%s %s %d %.1f ms", scope["method"], route, status, elapsed * 1000,
                    extra={"method": scope["method"], "route": route, "status": status,
                           "duration_ms": round(elapsed * 1000, 2),
                           "model": genai.model if genai else None,
                           "key_id": state.get("key_id"),
                           "request_id": state.get("request_id")})
