"""``POST /v1/messages`` and ``POST /v1/messages/count_tokens``: Anthropic's Messages API.

The body goes to the worker as the client wrote it (``Endpoint.MESSAGES``); an Anthropic
deployment gets it natively, any other provider a translation through chat
(:mod:`workers.protocols.messages`), so a request may fail over between the two. Auth,
rate limits, budgets, routing, fallbacks and accounting are chat's. Stream chunks arrive
as whole Anthropic events and are relayed as they are. Every failure on these paths is
Anthropic's error JSON (:mod:`ingress.errors`). The response cache does not serve these
routes: what it stores and replays is OpenAI's shape.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from ingress.auth.principal import Principal
from ingress.deps import AuthedGateway, request_id
from ingress.dispatch import relay
from ingress.dispatch.hangup import HangUp
from ingress.errors import invalid
from ingress.metrics import GenAI
from ingress.routes import upstream
from ingress.routes.body import read_body
from ingress.state import Gateway
from schemas import anthropic, model_limits
from schemas.anthropic import CountTokensRequest, MessagesRequest
from schemas.infer import Endpoint

router = APIRouter()

# The client's headers an Anthropic deployment gets too: betas turn on body fields.
FORWARDED_HEADERS = ("anthropic-beta", "anthropic-version")


async def _respond(request: Request, gateway: Gateway, parsed: MessagesRequest,
                   body: dict[str, Any]) -> Response:
    principal: Principal = request.state.principal
    model = parsed.model
    plan = upstream.plan_for(gateway, principal, model)
    try:
        model_limits.check(plan, body, model)
    except model_limits.OverLimit as exc:
        raise invalid(str(exc), param=exc.param) from None
    stream = bool(parsed.stream)
    genai = request.state.genai = GenAI(Endpoint.MESSAGES.value, model, stream=stream)
    # Anthropic's metadata holds only the end user's id; nothing of it is a usage tag.
    user = parsed.metadata.user_id if parsed.metadata is not None else None
    forwarded = {name: value for name in FORWARDED_HEADERS
                 if (value := request.headers.get(name))}
    caller = dataclasses.replace(upstream.caller_of(principal, {}), end_user=user,
                                 headers=forwarded)
    started = await upstream.start(request, gateway, plan, model, body, Endpoint.MESSAGES,
                                   stream, caller=caller)
    genai.provider = started.deployment.provider
    settings = gateway.settings
    settle = gateway.gatekeeper.settle
    response: Response
    if stream:
        response = relay.stream_response(started, False, settings.heartbeat_timeout, settle,
                                         framing=relay.ANTHROPIC)
    else:
        response = await relay.json_response(started, settings.heartbeat_timeout, settle)
    # Where Anthropic's SDK reads a response's id (``message._request_id``).
    response.headers["request-id"] = request_id(request)
    return response


@router.post("/messages")
async def messages(request: Request, gateway: AuthedGateway) -> Response:
    parsed, body = await read_body(request, MessagesRequest)
    if parsed.stream:  # a stream notices a departed client at its next write
        return await _respond(request, gateway, parsed, body)
    hangup = HangUp(request.receive)
    try:
        return await _respond(request, gateway, parsed, body)
    except asyncio.CancelledError:
        if not hangup.gone:
            raise
        raise hangup.absorb() from None
    finally:
        hangup.close()


@router.post("/messages/count_tokens")
async def count_tokens(request: Request, gateway: AuthedGateway) -> Response:
    """The gateway's own estimate (no upstream call, so nothing to admit or account):
    Anthropic's exact count needs its tokenizer, and other providers have no such call."""
    parsed, body = await read_body(request, CountTokensRequest)
    principal: Principal = request.state.principal
    upstream.plan_for(gateway, principal, parsed.model)  # an unknown or forbidden model is refused
    return JSONResponse({"input_tokens": anthropic.input_tokens(body)})
