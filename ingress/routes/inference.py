"""``POST /v1/chat/completions`` and ``POST /v1/embeddings``."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError

from ingress import execution, relay
from ingress.deps import AuthedGateway, request_id
from ingress.errors import ApiError, invalid
from ingress.state import Gateway
from schemas.infer import Endpoint
from schemas.openai import ChatCompletionRequest, EmbeddingRequest

router = APIRouter()

T = TypeVar("T", bound=BaseModel)


async def read_body(request: Request, model: type[T]) -> tuple[T, dict[str, Any]]:
    raw = await request.body()
    try:
        body = json.loads(raw)
    except ValueError:
        raise invalid(
            "We could not parse the JSON body of your request. Send valid JSON.",
            code="invalid_json",
        ) from None
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.", code="invalid_json")
    try:
        return model.model_validate(body), body
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        message = f"{param}: {first['msg']}" if param else first["msg"]
        raise invalid(message, param=param) from None


def _plan(gateway: Gateway, model: str) -> list[Any]:
    plan = gateway.router.plan(model)
    if not plan:
        raise ApiError(
            404,
            f"The model `{model}` does not exist or you do not have access to it.",
            code="model_not_found",
            param="model",
        )
    return plan


@router.post("/chat/completions")
async def chat_completions(request: Request, gateway: AuthedGateway) -> Response:
    parsed, body = await read_body(request, ChatCompletionRequest)
    plan = _plan(gateway, parsed.model)
    stream = bool(parsed.stream)
    include_usage = bool(stream and parsed.stream_options and parsed.stream_options.include_usage)
    settings = gateway.settings
    started = await execution.start(
        gateway.dispatcher,
        plan,
        request_id=request_id(request),
        endpoint=Endpoint.CHAT,
        model_alias=parsed.model,
        body=body,
        stream=stream,
        heartbeat_interval=settings.heartbeat_interval,
        heartbeat_timeout=settings.heartbeat_timeout,
    )
    if stream:
        return relay.stream_response(started, include_usage, settings.heartbeat_timeout)
    return await relay.json_response(started, settings.heartbeat_timeout)


@router.post("/embeddings")
async def embeddings(request: Request, gateway: AuthedGateway) -> Response:
    parsed, body = await read_body(request, EmbeddingRequest)
    plan = _plan(gateway, parsed.model)
    settings = gateway.settings
    started = await execution.start(
        gateway.dispatcher,
        plan,
        request_id=request_id(request),
        endpoint=Endpoint.EMBEDDINGS,
        model_alias=parsed.model,
        body=body,
        stream=False,
        heartbeat_interval=settings.heartbeat_interval,
        heartbeat_timeout=settings.heartbeat_timeout,
    )
    return await relay.json_response(started, settings.heartbeat_timeout)
