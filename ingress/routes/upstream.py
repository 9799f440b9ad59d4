"""A route's call upstream: the plan for the caller's model, who the caller is, and the
attempts started with admission and a lost worker's accounting."""

from __future__ import annotations

from functools import partial
from typing import Any

from fastapi import Request

from ingress.admission.gatekeeper import Ticket
from ingress.auth.principal import Principal, allowed
from ingress.deps import request_id
from ingress.dispatch import execution, lost
from ingress.dispatch.execution import Caller, Started
from ingress.errors import ApiError
from ingress.state import Gateway
from schemas.config import Deployment
from schemas.infer import Endpoint
from schemas.usage import UsageEvent, UsageStatus, event_id


def plan_for(
    gateway: Gateway, principal: Principal, model: str, body: dict[str, Any] | None = None,
) -> list[Deployment]:
    plan = gateway.router.plan(model, body)
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


def caller_of(principal: Principal, body: dict[str, Any]) -> Caller:
    end_user = body.get("safety_identifier") or body.get("user")
    metadata = body.get("metadata")
    return Caller(
        key_id=principal.key_id,
        team_id=principal.team_id,
        end_user=end_user if isinstance(end_user, str) else None,
        metadata=metadata if isinstance(metadata, dict) else None,
        may_use=None if principal.is_unrestricted else partial(allowed, principal),
    )


async def start(
    request: Request,
    gateway: Gateway,
    plan: list[Deployment],
    model: str,
    body: dict[str, Any],
    endpoint: Endpoint,
    stream: bool,
    rid: str | None = None,
    caller: Caller | None = None,
) -> Started:
    principal: Principal = request.state.principal
    rid = rid or request_id(request)
    gatekeeper = gateway.gatekeeper
    generates = endpoint not in (Endpoint.EMBEDDINGS, Endpoint.RERANK, Endpoint.MODERATIONS)

    async def admit(deployment: Deployment, attempt: int) -> Ticket:
        try:
            return await gatekeeper.admit(
                principal, deployment, f"{rid}:{attempt}", body, generates)
        except ApiError as exc:
            if exc.status == 429:
                publish_rejection(gateway, principal, rid, attempt, model, deployment,
                                  endpoint, stream, exc)
            raise

    def on_lost(silence: lost.Silence) -> bool:
        return lost.account(silence, connected=gateway.dispatcher.connected,
                            prices=gatekeeper.prices, publish=gateway.usage.submit,
                            settle=gatekeeper.settle)

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
        lost=on_lost,
        caller=caller or caller_of(principal, body),
    )


def publish_rejection(
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
