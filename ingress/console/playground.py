"""``/ui/playground``: chat with any model the viewer may use, through the gateway's own
chat route (the same auth, limits, budget, routing and accounting), streamed back. The
page's script posts to ``/ui/playground/chat`` with the session's CSRF token in a header;
the session's key is never in the page."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ingress.auth.principal import visible_models
from ingress.console.guard import check_csrf, gateway_of, viewer
from ingress.console.pages import context
from ingress.console.render import page
from ingress.routes.inference import chat_completions

router = APIRouter()


@router.get("/playground")
async def playground(request: Request) -> Response:
    found = await viewer(request)
    gateway = gateway_of(request)
    models = visible_models(found.principal, gateway.router.models)
    return page(request, "playground.html", **context(found, models=sorted(models)))


@router.post("/playground/chat")
async def playground_chat(request: Request) -> Response:
    found = await viewer(request)
    check_csrf(found, request.headers.get("x-csrf-token"))
    request.state.principal = found.principal
    return await chat_completions(request, gateway_of(request))
