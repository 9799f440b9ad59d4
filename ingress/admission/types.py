"""The data admission control speaks in, and the one interface both stores implement.

Money crosses the interface as ``Decimal`` and is kept inside the stores as integer
nano-dollars (see :func:`to_nanos`), so counters add up exactly and never see a float.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, ROUND_HALF_EVEN, Decimal
from enum import StrEnum
from typing import Any, Literal, Protocol

ScopeKind = Literal["key", "team", "deployment"]
Period = Literal["daily", "monthly"]

NANOS_PER_USD = 10**9
WINDOW_MS = 60_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def to_nanos(amount: Decimal, *, round_up: bool = False) -> int:
    """USD as integer nano-dollars. Reservations round up so a reservation is never smaller
    than the cost it stands for; costs are already quantized to 1e-9 by the price table."""
    rounding = ROUND_CEILING if round_up else ROUND_HALF_EVEN
    return int((amount * NANOS_PER_USD).to_integral_value(rounding=rounding))


def from_nanos(nanos: int) -> Decimal:
    return Decimal(nanos).scaleb(-9)


def epoch_ms(moment: datetime) -> int:
    # Integer arithmetic on timedelta: ``timestamp() * 1000`` can land a millisecond off.
    return (moment - _EPOCH) // _MS


def from_epoch_ms(ms: int) -> datetime:
    return _EPOCH + ms * _MS


@dataclass(frozen=True, slots=True)
class Scope:
    """One thing a request is counted against: a virtual key, its team, or the deployment.

    A ``None`` limit is not enforced and its counter is not kept at all, so an unlimited
    scope costs nothing on the hot path.
    """

    kind: ScopeKind
    id: str
    rpm: int | None = None
    tpm: int | None = None
    max_parallel: int | None = None
    daily_budget: Decimal | None = None
    monthly_budget: Decimal | None = None
    # Human name for messages and alerts (key alias, team name); ``id`` when absent.
    label: str | None = None

    @property
    def name(self) -> str:
        return self.label or self.id

    @property
    def has_budget(self) -> bool:
        return self.daily_budget is not None or self.monthly_budget is not None

    @property
    def tracks_in_flight(self) -> bool:
        # Budgets need the in-flight set too: it is where reservations live and expire.
        return self.max_parallel is not None or self.has_budget

    def budget(self, period: Period) -> Decimal | None:
        return self.daily_budget if period == "daily" else self.monthly_budget


@dataclass(frozen=True, slots=True)
class AdmitRequest:
    request_id: str
    scopes: Sequence[Scope]
    # Prompt estimate plus the most output the request may produce.
    estimated_tokens: int
    # The most the request can cost; zero when its price is unknown.
    reserve_cost: Decimal
    # Injectable clock; ``None`` means now.
    now: datetime | None = None


class Limit(StrEnum):
    REQUESTS = "requests"
    TOKENS = "tokens"
    PARALLEL = "parallel"
    DAILY_BUDGET = "daily_budget"
    MONTHLY_BUDGET = "monthly_budget"

    @property
    def is_budget(self) -> bool:
        return self in (Limit.DAILY_BUDGET, Limit.MONTHLY_BUDGET)

    @property
    def period(self) -> Period:
        return "daily" if self is Limit.DAILY_BUDGET else "monthly"


@dataclass(frozen=True, slots=True)
class Refusal:
    """Which limit of which scope refused a request, with the numbers for the message.

    For budgets ``limit``/``used``/``reserved``/``requested`` are USD; otherwise counts.
    ``retry_after`` is ``None`` when waiting cannot help (the request alone exceeds the
    limit).
    """

    scope: Scope
    limit: Limit
    limit_value: int | Decimal
    used: int | Decimal
    requested: int | Decimal
    retry_after: float | None
    reserved: Decimal = Decimal(0)
    resets_at: datetime | None = None

    @property
    def reason(self) -> str:
        return f"{self.scope.kind} {self.scope.name}: {self.limit.value}"


@dataclass(frozen=True, slots=True)
class Reservation:
    """What :meth:`Admission.settle` needs to undo an admission and record its cost."""

    request_id: str
    scopes: tuple[Scope, ...]
    estimated_tokens: int
    reserve_nanos: int
    window: int
    admitted_at: datetime
    # Which store issued it, so a wrapper settles it where it was made.
    issuer: str


@dataclass(frozen=True, slots=True)
class BudgetAlert:
    scope: Scope
    period: Period
    period_key: str
    threshold: int
    budget: Decimal
    spend: Decimal
    resets_at: datetime


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reservation: Reservation | None = None
    refusal: Refusal | None = None
    # x-ratelimit-* for the tightest scope; on a refusal also retry-after.
    headers: dict[str, str] = field(default_factory=dict)
    alerts: tuple[BudgetAlert, ...] = ()

    @property
    def reason(self) -> str | None:
        return self.refusal.reason if self.refusal else None

    @property
    def retry_after(self) -> float | None:
        return self.refusal.retry_after if self.refusal else None


@dataclass(frozen=True, slots=True)
class Settlement:
    # False when the reservation was already settled or had expired: nothing changed.
    settled: bool
    alerts: tuple[BudgetAlert, ...] = ()


@dataclass(frozen=True, slots=True)
class AdmissionPolicy:
    """Tunables shared by both stores."""

    # How long an admitted request holds its parallel slot and budget reservation when
    # its settle never comes (a crashed ingress): longer than the longest upstream call.
    hold_ttl: timedelta = timedelta(minutes=15)
    # How long a settle is still accepted. Past ``hold_ttl`` the hold is gone, but a late
    # settle still adds the real cost to spend, exactly once.
    settle_ttl: timedelta = timedelta(hours=6)
    # Percent of a budget at which an alert fires, once per scope, period and threshold.
    alert_thresholds: tuple[int, ...] = (50, 80, 100)
    window_ms: int = WINDOW_MS

    def __post_init__(self) -> None:
        if self.settle_ttl < self.hold_ttl:
            raise ValueError("settle_ttl must be at least hold_ttl")


class AdmissionUnavailable(Exception):
    """The shared store cannot be reached, so limits cannot be checked."""


class DuplicateRequest(ValueError):
    """A request id that still holds a reservation was admitted again."""


class Admission(Protocol):
    # Stamped on every reservation, so a wrapper settles it where it was made.
    @property
    def issuer(self) -> str: ...

    async def admit(self, request: AdmitRequest) -> Decision: ...

    async def settle(
        self,
        reservation: Reservation,
        actual_tokens: int,
        actual_cost: Decimal | None,
        now: datetime | None = None,
    ) -> Settlement: ...

    async def seed_spend(
        self, scope_kind: ScopeKind, scope_id: str, period_key: str, amount: Decimal
    ) -> bool:
        """Raise a spend counter to ``amount`` (ClickHouse's figure) if it is lower; True
        when it was raised."""
        ...

    async def status(
        self, scopes: Sequence[Scope], now: datetime | None = None
    ) -> dict[str, Any]: ...
