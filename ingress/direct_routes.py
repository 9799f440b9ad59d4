"""The inference routes served straight from ASGI, past FastAPI's own layers.

Profiled under load, a non-streamed chat call spent about 40 % of the ingress's CPU in
the framework around its handler: Starlette's and FastAPI's middlewares (error pages,
exit stacks, body limits, telemetry), a walk over every route's regular expression, and
the dependency solver. The hot routes need none of that: they take the request and an
authenticated gateway, and answer with a ready :class:`Response`.

:class:`DirectRoutes` sits between our own middlewares and the FastAPI app. A request for
one of those routes (method and exact path) goes to the route's endpoint directly, with
the same dependencies called in the same order, and with failures answered as the app's
exception handlers answer them (:func:`ingress.errors.response_for`). Everything else
(admin, files, batches, the console, paths with parameters, wrong methods) goes through
FastAPI as before. Which routes qualify is read off FastAPI's own analysis of each
endpoint (:func:`eligible`), so a route that grows a query or body parameter, or a
dependency of its own, falls back to FastAPI by itself rather than losing it.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ingress.errors import response_for

Provide = Callable[[Request], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Direct:
    """One route served directly: its FastAPI route (for metrics' route label), the
    endpoint, and the keyword each argument goes under."""

    route: APIRoute
    endpoint: Callable[..., Awaitable[Response]]
    request_name: str
    provides: tuple[tuple[str, Provide], ...]


def _plain(dependant: Dependant) -> bool:
    """Takes nothing FastAPI would have to parse, check or set up."""
    return not (
        dependant.path_params or dependant.query_params or dependant.header_params
        or dependant.cookie_params or dependant.body_params
        or dependant.background_tasks_param_name or dependant.response_param_name
        or dependant.http_connection_param_name or dependant.websocket_param_name
        or dependant.security_scopes_param_name
    )


def eligible(route: APIRoute) -> Direct | None:
    """``route`` as a direct route, or None when it needs FastAPI: a path parameter, a
    parameter FastAPI parses, or a dependency that is not an ``async def (request)``."""
    dependant = route.dependant
    if "{" in route.path or not _plain(dependant) or dependant.request_param_name is None:
        return None
    if not route.methods or route.methods - {"POST"}:
        return None
    provides: list[tuple[str, Provide]] = []
    for dependency in dependant.dependencies:
        if (dependency.name is None or dependency.call is None or dependency.dependencies
                or not _plain(dependency) or dependency.request_param_name is None
                or not inspect.iscoroutinefunction(dependency.call)):
            return None
        provides.append((dependency.name, dependency.call))
    return Direct(route, route.endpoint, dependant.request_param_name, tuple(provides))


def table(routers: Iterable[tuple[str, APIRouter]]) -> dict[str, Direct]:
    """Every eligible POST route of ``routers`` (each with the prefix it is included
    under, and no dependencies of its inclusion), by its full path."""
    found: dict[str, Direct] = {}
    for prefix, router in routers:
        for route in router.routes:
            if isinstance(route, APIRoute) and (direct := eligible(route)) is not None:
                found.setdefault(prefix + route.path, direct)
    return found


class DirectRoutes:
    """Serve the eligible POST routes of ``routers`` without FastAPI's stack, and pass
    the rest on to ``app``, where the same routers are included under the same prefixes.
    """

    def __init__(self, app: FastAPI, routers: Iterable[tuple[str, APIRouter]]) -> None:
        self.app = app
        self._routes = table(routers)

    @property
    def paths(self) -> frozenset[str]:
        return frozenset(self._routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        direct = (self._routes.get(scope["path"])
                  if scope["type"] == "http" and scope["method"] == "POST" else None)
        if direct is None:
            await self.app(scope, receive, send)
            return
        scope["app"] = self.app
        scope["route"] = direct.route
        scope["endpoint"] = direct.endpoint
        scope["path_params"] = {}
        request = Request(scope, receive, send)
        try:
            arguments: dict[str, Any] = {direct.request_name: request}
            for name, provide in direct.provides:
                arguments[name] = await provide(request)
            response = await direct.endpoint(**arguments)
        except Exception as exc:
            response = response_for(request, exc)
        await _send(response, scope, receive, send)


async def _send(response: Response, scope: Scope, receive: Receive, send: Send) -> None:
    """Send ``response``; a failure before its first byte still gets an error answer."""
    started = False

    async def watched(message: Any) -> None:
        nonlocal started
        started = True
        await send(message)

    try:
        await response(scope, receive, watched)
    except Exception as exc:
        if started:
            raise
        await response_for(Request(scope, receive, send), exc)(scope, receive, send)

