"""The usage event of one upstream attempt: as the worker that made it describes it, or as
the ingress (``ingress.dispatch.lost``) estimates it when that worker went silent. One builder, so
both sides produce the same id and fields."""

from __future__ import annotations

from decimal import Decimal

from schemas.config import Deployment
from schemas.errors import ErrorInfo
from schemas.infer import InferRequest
from schemas.usage import MediaUsage, TokenUsage, UsageEvent, UsageStatus, event_id


def attempt_event(
    request: InferRequest,
    provider: str,
    deployment: Deployment | None,
    usage: TokenUsage | None,
    error: ErrorInfo | None,
    cancelled: bool,
    latency_ms: float,
    ttft_ms: float | None,
    cost: Decimal | None,
    price_version: str,
) -> UsageEvent:
    """The one event of one upstream call."""
    usage = usage or TokenUsage()
    media = usage.media or MediaUsage()
    if cancelled:
        status, http_status = UsageStatus.CANCELLED, 499
    elif error is not None:
        status, http_status = UsageStatus.ERROR, error.status
    else:
        status, http_status = UsageStatus.OK, 200
    body = request.body
    end_user = request.end_user or body.get("safety_identifier") or body.get("user")
    return UsageEvent(
        event_id=event_id(request.request_id, request.attempt),
        request_id=request.request_id,
        attempt=request.attempt,
        key_id=request.key_id,
        team_id=request.team_id,
        end_user=end_user if isinstance(end_user, str) else None,
        model_alias=request.model_alias,
        provider=provider,
        deployment_id=request.deployment_id,
        upstream_model=deployment.upstream_model if deployment else None,
        endpoint=request.endpoint.value,
        streamed=request.stream,
        status=status,
        error_type=error.kind.value if error is not None else None,
        http_status=http_status,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        cached_tokens=usage.cached_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        reasoning_tokens=usage.reasoning_tokens,
        usage_estimated=usage.estimated,
        images=media.images,
        audio_seconds=(media.seconds + media.output_seconds).quantize(Decimal("0.001")),
        characters=media.characters,
        cost=cost,
        price_version=price_version if cost is not None else None,
        latency_ms=round(latency_ms, 3),
        ttft_ms=round(ttft_ms, 3) if ttft_ms is not None else None,
        batch_id=request.batch_id,
        metadata=request.metadata,
        route_tier=request.route_tier,
        route_score=request.route_score,
        route_reason=request.route_reason,
    )
