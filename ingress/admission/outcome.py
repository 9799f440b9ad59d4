"""From counter snapshots to decisions, headers, alerts and status, for both stores.

A store's only job is to read and change counters atomically; it hands back one
:class:`Counts` per scope and, on a refusal, which scope and limit refused. Everything a
caller sees is computed here, once, so the Redis and in-process stores cannot drift in
what they report. :func:`refused_limit` is the reference for the checks the Lua script
repeats.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from ingress.admission import budget, window
from ingress.admission.types import (
    AdmissionPolicy,
    AdmitRequest,
    BudgetAlert,
    Decision,
    Limit,
    Period,
    Refusal,
    Reservation,
    Scope,
    from_nanos,
)

log = logging.getLogger("aigw.ingress.admission")

# Limits in the order they are checked; the script reports them by 1-based position.
LIMIT_ORDER = (
    Limit.REQUESTS, Limit.TOKENS, Limit.PARALLEL, Limit.DAILY_BUDGET, Limit.MONTHLY_BUDGET,
)
PERIODS: tuple[Period, Period] = ("daily", "monthly")
BUDGET_LIMITS: tuple[tuple[Limit, Period], ...] = (
    (Limit.DAILY_BUDGET, "daily"), (Limit.MONTHLY_BUDGET, "monthly"),
)
# A refused request held only by other requests' reservations may fit once they settle.
_HELD_RETRY_SECONDS = 1.0
# Beyond this the openai SDK ignores retry-after and retries on its own schedule anyway.
_SDK_MAX_RETRY_AFTER = 60.0


@dataclass(slots=True)
class Counts:
    """One scope's counters; zero for any limit the scope does not have."""

    req_prev: int = 0
    req_curr: int = 0
    tok_prev: int = 0
    tok_curr: int = 0
    in_flight: int = 0
    spend_day: int = 0
    spend_month: int = 0
    held: int = 0

    WIDTH = 8

    @classmethod
    def from_flat(cls, values: Sequence[Any], start: int) -> Counts:
        return cls(*(int(v) for v in values[start:start + cls.WIDTH]))

    def spend(self, period: Period) -> int:
        return self.spend_day if period == "daily" else self.spend_month


def spend_key(period_key: str) -> str:
    """``d:YYYYMMDD`` or ``m:YYYYMM``, the suffix the spend counters use."""
    if len(period_key) == 8 and period_key.isdigit():
        return "d:" + period_key
    if len(period_key) == 6 and period_key.isdigit():
        return "m:" + period_key
    raise ValueError(f"period key must be YYYYMMDD or YYYYMM, not {period_key!r}")


def validate(request: AdmitRequest) -> None:
    if request.estimated_tokens < 0 or request.reserve_cost < 0:
        raise ValueError("estimated_tokens and reserve_cost must not be negative")


def budget_fits(spend: int, held: int, reserve: int, limit: int) -> bool:
    """Spent plus reserved plus this request's reservation must stay within the budget,
    so concurrent requests can never overshoot it together; and a spent budget refuses
    even requests that reserve nothing (unknown price)."""
    committed = spend + held
    return committed < limit and committed + reserve <= limit


def refused_limit(
    scope: Scope, counts: Counts, elapsed: int, tokens: int, reserve: int, window_ms: int
) -> Limit | None:
    if scope.rpm is not None and not window.fits(
        counts.req_prev, counts.req_curr, elapsed, 1, scope.rpm, window_ms
    ):
        return Limit.REQUESTS
    if scope.tpm is not None and not window.fits(
        counts.tok_prev, counts.tok_curr, elapsed, tokens, scope.tpm, window_ms
    ):
        return Limit.TOKENS
    if scope.max_parallel is not None and counts.in_flight + 1 > scope.max_parallel:
        return Limit.PARALLEL
    for limit, period in BUDGET_LIMITS:
        amount = scope.budget(period)
        if amount is not None and not budget_fits(
            counts.spend(period), counts.held, reserve, budget_nanos(amount)
        ):
            return limit
    return None


def budget_nanos(amount: Decimal) -> int:
    # Budgets are compared in the stores' unit; a fraction of a nano-dollar rounds down.
    return int(amount.scaleb(9))


def refusal(
    scope: Scope,
    limit: Limit,
    counts: Counts,
    elapsed: int,
    request: AdmitRequest,
    reserve: int,
    now: datetime,
    window_ms: int,
) -> Refusal:
    if limit is Limit.REQUESTS or limit is Limit.TOKENS:
        if limit is Limit.REQUESTS:
            prev, curr, cap, cost = counts.req_prev, counts.req_curr, scope.rpm, 1
        else:
            prev, curr, cap, cost = (
                counts.tok_prev, counts.tok_curr, scope.tpm, request.estimated_tokens,
            )
        assert cap is not None
        wait = window.retry_ms(prev, curr, elapsed, cost, cap, window_ms)
        return Refusal(
            scope=scope,
            limit=limit,
            limit_value=cap,
            used=window.used(prev, curr, elapsed, window_ms),
            requested=cost,
            retry_after=None if wait is None else max(wait, 1) / 1000,
        )
    if limit is Limit.PARALLEL:
        assert scope.max_parallel is not None
        return Refusal(
            scope=scope,
            limit=limit,
            limit_value=scope.max_parallel,
            used=counts.in_flight,
            requested=1,
            # A slot frees when any request ends, which nobody can predict.
            retry_after=_HELD_RETRY_SECONDS if scope.max_parallel > 0 else None,
        )
    period = limit.period
    amount = scope.budget(period)
    assert amount is not None
    limit_nanos = budget_nanos(amount)
    spend = counts.spend(period)
    day_end, month_end = budget.reset_times(now)
    resets_at = day_end if period == "daily" else month_end
    retry: float | None
    if reserve > limit_nanos:
        retry = None
    elif spend < limit_nanos and spend + reserve <= limit_nanos:
        retry = _HELD_RETRY_SECONDS
    else:
        retry = max((resets_at - now).total_seconds(), 1.0)
    return Refusal(
        scope=scope,
        limit=limit,
        limit_value=amount,
        used=from_nanos(spend),
        requested=from_nanos(reserve),
        retry_after=retry,
        reserved=from_nanos(counts.held),
        resets_at=resets_at,
    )


def rate_headers(
    scopes: Sequence[Scope], counts: Sequence[Counts], elapsed: int, window_ms: int
) -> dict[str, str]:
    """OpenAI's x-ratelimit-* headers for whichever scope has the least room left."""
    headers: dict[str, str] = {}
    best_req: tuple[int, int, int] | None = None  # (remaining, limit, reset_ms)
    best_tok: tuple[int, int, int] | None = None
    for scope, c in zip(scopes, counts, strict=True):
        if scope.rpm is not None:
            cand = (
                window.remaining(c.req_prev, c.req_curr, elapsed, scope.rpm, window_ms),
                scope.rpm,
                window.reset_ms(c.req_prev, c.req_curr, elapsed, window_ms),
            )
            best_req = cand if best_req is None or cand[:2] < best_req[:2] else best_req
        if scope.tpm is not None:
            cand = (
                window.remaining(c.tok_prev, c.tok_curr, elapsed, scope.tpm, window_ms),
                scope.tpm,
                window.reset_ms(c.tok_prev, c.tok_curr, elapsed, window_ms),
            )
            best_tok = cand if best_tok is None or cand[:2] < best_tok[:2] else best_tok
    for name, best in (("requests", best_req), ("tokens", best_tok)):
        if best is not None:
            headers[f"x-ratelimit-limit-{name}"] = str(best[1])
            headers[f"x-ratelimit-remaining-{name}"] = str(best[0])
            headers[f"x-ratelimit-reset-{name}"] = window.go_duration(best[2])
    return headers


def retry_headers(refused: Refusal) -> dict[str, str]:
    if refused.retry_after is None:
        return {"x-should-retry": "false"}
    headers = {
        "retry-after": str(max(1, math.ceil(refused.retry_after))),
        "retry-after-ms": str(round(refused.retry_after * 1000)),
    }
    if refused.retry_after > _SDK_MAX_RETRY_AFTER:
        # A budget that resets tomorrow: the SDK's own quick retries would only fail again.
        headers["x-should-retry"] = "false"
    return headers


def alerts_from(
    scopes: Sequence[Scope], raw: Sequence[Any], now: datetime
) -> tuple[BudgetAlert, ...]:
    """Alerts from the stores' flat ``(scope index, period 0|1, percent, spend)`` list."""
    if not raw:
        return ()
    day, month = budget.period_keys(now)
    day_end, month_end = budget.reset_times(now)
    alerts = []
    for i in range(0, len(raw), 4):
        scope = scopes[int(raw[i])]
        period = PERIODS[int(raw[i + 1])]
        amount = scope.budget(period)
        assert amount is not None
        alerts.append(BudgetAlert(
            scope=scope,
            period=period,
            period_key=day if period == "daily" else month,
            threshold=int(raw[i + 2]),
            budget=amount,
            spend=from_nanos(int(raw[i + 3])),
            resets_at=day_end if period == "daily" else month_end,
        ))
    return tuple(alerts)


def crossed(spend: int, limit: int, thresholds: Sequence[int]) -> list[int]:
    """Thresholds (percent) that ``spend`` has reached; a zero budget alerts on nothing."""
    if limit <= 0:
        return []
    return [pct for pct in thresholds if spend * 100 >= limit * pct]


def decide(
    request: AdmitRequest,
    counts: Sequence[Counts],
    refused: tuple[int, Limit] | None,
    *,
    now: datetime,
    now_ms: int,
    reserve: int,
    policy: AdmissionPolicy,
    issuer: str,
    raw_alerts: Sequence[Any] = (),
) -> Decision:
    scopes = tuple(request.scopes)
    current, elapsed = window.split(now_ms, policy.window_ms)
    headers = rate_headers(scopes, counts, elapsed, policy.window_ms)
    alerts = alerts_from(scopes, raw_alerts, now)
    if refused is not None:
        index, limit = refused
        why = refusal(scopes[index], limit, counts[index], elapsed, request, reserve, now,
                      policy.window_ms)
        headers.update(retry_headers(why))
        return Decision(allowed=False, refusal=why, headers=headers, alerts=alerts)
    reservation = Reservation(
        request_id=request.request_id,
        scopes=scopes,
        estimated_tokens=request.estimated_tokens,
        reserve_nanos=reserve,
        window=current,
        admitted_at=now,
        issuer=issuer,
    )
    return Decision(allowed=True, reservation=reservation, headers=headers, alerts=alerts)


def _money(nanos: int) -> str:
    return format(from_nanos(nanos), "f")


def status_entry(
    scope: Scope, c: Counts, now: datetime, elapsed: int, window_ms: int
) -> dict[str, Any]:
    """One scope's limits and use, JSON-ready (money as exact decimal strings)."""
    entry: dict[str, Any] = {"kind": scope.kind, "id": scope.id, "label": scope.label}
    for name, cap, prev, curr in (
        ("requests", scope.rpm, c.req_prev, c.req_curr),
        ("tokens", scope.tpm, c.tok_prev, c.tok_curr),
    ):
        if cap is None:
            entry[name] = None
            continue
        reset = window.reset_ms(prev, curr, elapsed, window_ms)
        entry[name] = {
            "limit": cap,
            "used": window.used(prev, curr, elapsed, window_ms),
            "remaining": window.remaining(prev, curr, elapsed, cap, window_ms),
            "reset": window.go_duration(reset),
            "reset_seconds": reset / 1000,
        }
    entry["parallel"] = (
        {"limit": scope.max_parallel, "in_flight": c.in_flight}
        if scope.max_parallel is not None else None
    )
    keys = budget.period_keys(now)
    ends = budget.reset_times(now)
    for index, period in enumerate(PERIODS):
        amount = scope.budget(period)
        if amount is None:
            entry[period] = None
            continue
        spend = c.spend(period)
        entry[period] = {
            "period": keys[index],
            "budget": format(amount, "f"),
            "spent": _money(spend),
            "reserved": _money(c.held),
            "remaining": _money(max(0, budget_nanos(amount) - spend - c.held)),
            "resets_at": budget.iso_z(ends[index]),
        }
    return entry


class UnknownCostLog:
    """Says, at most once a minute, that requests settled without a cost.

    Their spend stays unchanged rather than charging the reservation: the reservation is
    a worst case, not a cost, and ClickHouse records these events with no cost, so
    counting anything here would make the live counter disagree with the ledger it is
    rebuilt from. The price table already warns once per unpriced model.
    """

    def __init__(self, interval: float = 60.0) -> None:
        self.interval = interval
        self._last = float("-inf")
        self._count = 0

    def note(self, reservation: Reservation) -> None:
        self._count += 1
        now = time.monotonic()
        if now - self._last < self.interval:
            return
        log.warning(
            "%d request(s) settled with an unknown cost (latest %s): their spend is not "
            "counted against budgets; price the model to count it",
            self._count, reservation.request_id,
        )
        self._last = now
        self._count = 0
