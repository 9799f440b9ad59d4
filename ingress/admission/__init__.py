"""Admission control: rate limits, parallel limits and budgets, checked and reserved in
one atomic step per request, and settled with the real cost when the request ends.

::

    decision = await admission.admit(AdmitRequest(request_id, scopes, tokens, max_cost))
    if not decision.allowed:
        raise refusal_error(decision)          # 429 with x-ratelimit-* and retry-after
    ...                                        # the upstream call
    await admission.settle(decision.reservation, actual_tokens, actual_cost)

Two stores implement :class:`Admission`: :class:`RedisAdmission`, shared by every
replica (one Lua call each for admit, settle and status), and :class:`LocalAdmission`,
in process, for embedded mode without Redis. :class:`ResilientAdmission` decides what
happens when Redis is down. The decisions themselves (retry times, headers, alerts) are
computed once, in :mod:`ingress.admission.outcome`, from what either store counted.

Errors: :class:`AdmissionUnavailable` (the store cannot be reached: 503) and
:class:`DuplicateRequest` (a request id admitted twice: a bug in the caller).
"""

from ingress.admission.http import refusal_error, unavailable_error
from ingress.admission.local import LocalAdmission
from ingress.admission.redis_impl import RedisAdmission
from ingress.admission.resilient import OnRedisError, ResilientAdmission
from ingress.admission.types import (
    Admission,
    AdmissionPolicy,
    AdmissionUnavailable,
    AdmitRequest,
    BudgetAlert,
    Decision,
    DuplicateRequest,
    Limit,
    Refusal,
    Reservation,
    Scope,
    ScopeKind,
    Settlement,
)

__all__ = [
    "Admission",
    "AdmissionPolicy",
    "AdmissionUnavailable",
    "AdmitRequest",
    "BudgetAlert",
    "Decision",
    "DuplicateRequest",
    "Limit",
    "LocalAdmission",
    "OnRedisError",
    "RedisAdmission",
    "Refusal",
    "Reservation",
    "ResilientAdmission",
    "Scope",
    "ScopeKind",
    "Settlement",
    "refusal_error",
    "unavailable_error",
]
