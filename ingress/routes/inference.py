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
from ingress.execution import Caller, Started
from ingress.gatekeeper import Ticket
from ingress.principal import Principal, allowed
from ingress.state import Gateway
from schemas.config import Deployment
from schemas.infer import Endpoint
from schemas.openai import ChatCompletionRequest, EmbeddingRequest
from schemas.usage import UsageEvent, UsageStatus, event_id

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


def _plan(gateway: Gateway, principal: Principal, model: str) -> list[Deployment]:
    plan = gateway.router.plan(model)
    if not plan:
        raise ApiError(
            404,
            f"The model `{model}` does not exist or you do not have access to it.",
            code="model_not_found",
            param="model",
        )
    if not allowed(principal, model):
        raise ApiError(
            403,
            f"This key may not use the model `{model}`.",
            type="permission_error",
            code="model_not_allowed",
            param="model",
        )
    return plan


def _caller(principal: Principal, body: dict[str, Any]) -> Caller:
    end_user = body.get("safety_identifier") or body.get("user")
    metadata = body.get("metadata")
    return Caller(
        key_id=principal.key_id,
        team_id=principal.team_id,
        end_user=end_user if isinstance(end_user, str) else None,
        metadata=metadata if isinstance(metadata, dict) else None,
    )


async def _start(
    request: Request,
    gateway: Gateway,
    model: str,
    body: dict[str, Any],
    endpoint: Endpoint,
    stream: bool,
) -> Started:
    principal: Principal = request.state.principal
    plan = _plan(gateway, principal, model)
    rid = request_id(request)
    gatekeeper = gateway.gatekeeper
    generates = endpoint is not Endpoint.EMBEDDINGS

    async def admit(deployment: Deployment, attempt: int) -> Ticket:
        try:
            return await gatekeeper.admit(
                principal, deployment, f"{rid}:{attempt}", body, generates)
        except ApiError as exc:
            if exc.status == 429:
                _publish_rejection(gateway, principal, rid, attempt, model, deployment,
                                   endpoint, stream, exc)
            raise

    return await execution.start(
        gateway.dispatcher,
        plan,
        request_id=rid,
        endpoint=endpoint,
        model_alias=model,
        body=body,
        stream=stream,
        heartbeat_interval=gateway.settings.heartbeat_interval,
        heartbeat_timeout=gateway.settings.heartbeat_timeout,
        admit=admit,
        settle=gatekeeper.settle,
        caller=_caller(principal, body),
    )


def _publish_rejection(
    gateway: Gateway, principal: Principal, rid: str, attempt: int, model: str,
    deployment: Deployment, endpoint: Endpoint, stream: bool, error: ApiError,
) -> None:
    """A request the gateway refused is accounted too, with no cost."""
    gateway.usage.submit(UsageEvent(
        event_id=event_id(rid, attempt, "ingress"),
        request_id=rid,
        attempt=attempt,
        key_id=principal.key_id,
        team_id=principal.team_id,
        model_alias=model,
        provider=deployment.provider,
        deployment_id=deployment.id,
        upstream_model=deployment.upstream_model,
        endpoint=endpoint.value,
        streamed=stream,
        status=UsageStatus.REJECTED,
        error_type=error.code or error.type,
        http_status=error.status,
    ))


@router.post("/chat/completions")
async def chat_completions(request: Request, gateway: AuthedGateway) -> Response:
    parsed, body = await read_body(request, ChatCompletionRequest)
    stream = bool(parsed.stream)
    include_usage = bool(stream and parsed.stream_options and parsed.stream_options.include_usage)
    started = await _start(request, gateway, parsed.model, body, Endpoint.CHAT, stream)
    timeout = gateway.settings.heartbeat_timeout
    settle = gateway.gatekeeper.settle
    if stream:
        return relay.stream_response(started, include_usage, timeout, settle)
    return await relay.json_response(started, timeout, settle)


@router.post("/embeddings")
async def embeddings(request: Request, gateway: AuthedGateway) -> Response:
    parsed, body = await read_body(request, EmbeddingRequest)
    started = await _start(request, gateway, parsed.model, body, Endpoint.EMBEDDINGS, False)
    return await relay.json_response(
        started, gateway.settings.heartbeat_timeout, gateway.gatekeeper.settle)
