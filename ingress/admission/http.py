"""A refusal as the 429 OpenAI clients expect; an outage as a 503."""

from __future__ import annotations

from decimal import Decimal

from ingress.admission import budget
from ingress.admission.types import Decision, Limit
from ingress.errors import ApiError
from ingress.metrics import LIMIT_REFUSALS


def refusal_error(decision: Decision) -> ApiError:
    """The 429 for a refused :class:`Decision`, carrying its rate-limit and retry headers.

    Rate limits: type ``requests``/``tokens`` (the limit kind, as OpenAI sends it), code
    ``rate_limit_exceeded``. Budgets: type ``insufficient_quota``, code
    ``budget_exceeded``.
    """
    refused = decision.refusal
    if refused is None:
        raise ValueError("the decision allowed the request")
    scope = refused.scope
    LIMIT_REFUSALS.labels(scope.kind, "budget" if refused.limit.is_budget else "rate_limit").inc()
    if refused.limit.is_budget:
        assert refused.resets_at is not None
        message = budget.budget_exceeded_message(
            scope.kind, scope.name, refused.limit.period, Decimal(refused.limit_value),
            Decimal(refused.used), refused.resets_at, reserved=refused.reserved,
            requested=Decimal(refused.requested),
        )
        return ApiError(429, message, type="insufficient_quota", code="budget_exceeded",
                        headers=decision.headers)
    message = budget.rate_limit_message(
        scope.kind, scope.name, refused.limit.value, int(refused.limit_value),
        int(refused.used), int(refused.requested), refused.retry_after,
    )
    # Parallel requests count as requests for clients that switch on the type.
    kind = Limit.TOKENS.value if refused.limit is Limit.TOKENS else Limit.REQUESTS.value
    return ApiError(429, message, type=kind, code="rate_limit_exceeded",
                    headers=decision.headers)


def unavailable_error() -> ApiError:
    return ApiError(
        503,
        "Rate limits and budgets cannot be checked right now; please try again shortly.",
        type="server_error",
        code="admission_unavailable",
        headers={"retry-after": "1"},
    )
