"""What to do when Redis is down: refuse (``closed``) or go on with per-process limits
(``open``).

``closed`` keeps every limit and budget exact and turns an outage into 503s. ``open``
keeps serving: each replica counts on its own from zero, so rate limits multiply by the
replica count and budgets can overshoot by what is spent during the outage (ClickHouse
still records every cost). After a failure Redis is not tried again for
``retry_interval`` seconds, so an outage costs one timeout, not one per request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from ingress.admission.local import LocalAdmission
from ingress.admission.types import (
    Admission,
    AdmissionUnavailable,
    AdmitRequest,
    Decision,
    Reservation,
    Scope,
    ScopeKind,
    Settlement,
)

log = logging.getLogger("aigw.ingress.admission")

OnRedisError = Literal["closed", "open"]


class ResilientAdmission:
    def __init__(
        self,
        primary: Admission,
        fallback: Admission | None = None,
        mode: OnRedisError = "closed",
        *,
        retry_interval: float = 1.0,
        log_interval: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.primary = primary
        self.fallback: Admission = fallback if fallback is not None else LocalAdmission()
        self.mode = mode
        self.retry_interval = retry_interval
        self.log_interval = log_interval
        self._clock = clock
        self._down_until: float | None = None
        self._last_log = float("-inf")
        self._quiet = 0

    @property
    def issuer(self) -> str:
        return self.primary.issuer

    @property
    def degraded(self) -> bool:
        return self._down_until is not None

    def _primary_due(self) -> bool:
        return self._down_until is None or self._clock() >= self._down_until

    def _failed(self, exc: AdmissionUnavailable) -> None:
        self._down_until = self._clock() + self.retry_interval
        self._report("admission store unavailable (%s); failing %s", exc, self.mode)

    def _recovered(self) -> None:
        if self._down_until is not None:
            self._down_until = None
            log.warning("admission store is back")

    def _report(self, message: str, *args: Any) -> None:
        # An outage fails every request: one line per interval, with a count, not a flood.
        now = self._clock()
        if now - self._last_log < self.log_interval:
            self._quiet += 1
            return
        if self._quiet:
            message += " (%d similar messages suppressed)"
            args = (*args, self._quiet)
        log.warning(message, *args)
        self._last_log = now
        self._quiet = 0

    def _unavailable(self, cause: AdmissionUnavailable | None) -> AdmissionUnavailable:
        error = AdmissionUnavailable("rate limits and budgets cannot be checked right now")
        error.__cause__ = cause
        return error

    async def admit(self, request: AdmitRequest) -> Decision:
        cause: AdmissionUnavailable | None = None
        if self._primary_due():
            try:
                decision = await self.primary.admit(request)
            except AdmissionUnavailable as exc:
                self._failed(exc)
                cause = exc
            else:
                self._recovered()
                return decision
        if self.mode == "closed":
            raise self._unavailable(cause)
        return await self.fallback.admit(request)

    async def settle(
        self,
        reservation: Reservation,
        actual_tokens: int,
        actual_cost: Decimal | None,
        now: datetime | None = None,
    ) -> Settlement:
        if reservation.issuer == self.fallback.issuer:
            return await self.fallback.settle(reservation, actual_tokens, actual_cost, now)
        try:
            return await self.primary.settle(reservation, actual_tokens, actual_cost, now)
        except AdmissionUnavailable as exc:
            # The request is over; failing it now helps nobody. Its hold expires on its
            # own and its cost is in ClickHouse, from which spend is rebuilt.
            self._failed(exc)
            self._report("settle of %s lost: %s", reservation.request_id, exc)
            return Settlement(settled=False)

    async def seed_spend(
        self, scope_kind: ScopeKind, scope_id: str, period_key: str, amount: Decimal
    ) -> bool:
        try:
            return await self.primary.seed_spend(scope_kind, scope_id, period_key, amount)
        except AdmissionUnavailable as exc:
            self._failed(exc)
            if self.mode == "closed":
                raise
        return await self.fallback.seed_spend(scope_kind, scope_id, period_key, amount)

    async def status(
        self, scopes: Sequence[Scope], now: datetime | None = None
    ) -> dict[str, Any]:
        if self._primary_due():
            try:
                result = await self.primary.status(scopes, now)
            except AdmissionUnavailable as exc:
                self._failed(exc)
                if self.mode == "closed":
                    raise self._unavailable(exc) from exc
            else:
                self._recovered()
                return result
        elif self.mode == "closed":
            raise self._unavailable(None)
        return {**await self.fallback.status(scopes, now), "degraded": True}
