"""Admission in process memory, for embedded mode without Redis (and as the fallback
when Redis is down and the gateway is configured to fail open).

Same semantics as the Redis scripts, step for step. Every method does its reads and
writes without awaiting in between, so on one event loop each call is atomic, as one Lua
call is in Redis. The limits hold for this process only: two processes using it do not
share anything.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from ingress.admission import budget, outcome, window
from ingress.admission.outcome import Counts
from ingress.admission.types import (
    AdmissionPolicy,
    AdmitRequest,
    Decision,
    DuplicateRequest,
    Limit,
    Reservation,
    Scope,
    ScopeKind,
    Settlement,
    epoch_ms,
    to_nanos,
)


@dataclass(slots=True)
class _ScopeState:
    requests: dict[int, int] = field(default_factory=dict)  # window -> count
    tokens: dict[int, int] = field(default_factory=dict)
    in_flight: dict[str, tuple[int, int]] = field(default_factory=dict)  # id -> (expiry, nanos)
    held: int = 0
    spend: dict[str, int] = field(default_factory=dict)  # "d:YYYYMMDD" | "m:YYYYMM" -> nanos
    alerted: set[str] = field(default_factory=set)

    def purge(self, now_ms: int) -> None:
        expired = [rid for rid, (expiry, _) in self.in_flight.items() if expiry <= now_ms]
        for rid in expired:
            self.release(self.in_flight.pop(rid)[1])

    def release(self, nanos: int) -> None:
        self.held = max(0, self.held - nanos)

    def live(self, now_ms: int) -> tuple[int, int]:
        """In-flight count and held nanos, ignoring expired entries, without purging."""
        entries = [nanos for expiry, nanos in self.in_flight.values() if expiry > now_ms]
        return len(entries), sum(entries)

    def count(self, buckets: dict[int, int], current: int, amount: int) -> int:
        buckets[current] = buckets.get(current, 0) + amount
        # Only the current and previous buckets are ever read.
        for old in [w for w in buckets if w < current - 1]:
            del buckets[old]
        return buckets[current]

    def add_spend(self, period_key: str, nanos: int) -> int:
        total = self.spend[period_key] = self.spend.get(period_key, 0) + nanos
        self._forget_before(period_key)
        return total

    def _forget_before(self, period_key: str) -> None:
        # Past periods are never read again; Redis lets their keys expire.
        prefix = period_key[:2]
        for key in [k for k in self.spend if k.startswith(prefix) and k < period_key]:
            del self.spend[key]
        for marker in [m for m in self.alerted if m.startswith(prefix) and m < period_key]:
            self.alerted.discard(marker)


class LocalAdmission:
    issuer = "local"

    def __init__(self, policy: AdmissionPolicy | None = None) -> None:
        self.policy = policy or AdmissionPolicy()
        self._scopes: dict[tuple[str, str], _ScopeState] = {}
        # request id -> settle-by (ms), oldest first: every entry gets the same ttl.
        self._markers: OrderedDict[str, int] = OrderedDict()
        self._unknown_cost = outcome.UnknownCostLog()

    def _state(self, kind: str, scope_id: str) -> _ScopeState:
        state = self._scopes.get((kind, scope_id))
        if state is None:
            state = self._scopes[(kind, scope_id)] = _ScopeState()
        return state

    def _drop_old_markers(self, now_ms: int) -> None:
        while self._markers:
            rid, expiry = next(iter(self._markers.items()))
            if expiry > now_ms:
                break
            del self._markers[rid]

    async def admit(self, request: AdmitRequest) -> Decision:
        outcome.validate(request)
        policy = self.policy
        now = request.now or datetime.now(UTC)
        now_ms = epoch_ms(now)
        current, elapsed = window.split(now_ms, policy.window_ms)
        reserve = to_nanos(request.reserve_cost, round_up=True)
        tokens = request.estimated_tokens
        day, month = budget.period_keys(now)
        rid = request.request_id

        self._drop_old_markers(now_ms)
        marker = self._markers.get(rid)
        if marker is not None and marker > now_ms:
            raise DuplicateRequest(f"request {rid} already holds a reservation")

        states = [self._state(s.kind, s.id) for s in request.scopes]
        counts: list[Counts] = []
        refused: tuple[int, Limit] | None = None
        for i, (scope, state) in enumerate(zip(request.scopes, states, strict=True)):
            c = Counts()
            if scope.rpm is not None:
                c.req_prev = state.requests.get(current - 1, 0)
                c.req_curr = state.requests.get(current, 0)
            if scope.tpm is not None:
                c.tok_prev = state.tokens.get(current - 1, 0)
                c.tok_curr = state.tokens.get(current, 0)
            if scope.tracks_in_flight:
                state.purge(now_ms)
                c.in_flight = len(state.in_flight)
            if scope.has_budget:
                c.held = state.held
            if scope.daily_budget is not None:
                c.spend_day = state.spend.get("d:" + day, 0)
            if scope.monthly_budget is not None:
                c.spend_month = state.spend.get("m:" + month, 0)
            counts.append(c)
            if refused is None:
                limit = outcome.refused_limit(scope, c, elapsed, tokens, reserve,
                                              policy.window_ms)
                if limit is not None:
                    refused = (i, limit)

        if refused is None:
            hold_until = now_ms + _ms(policy.hold_ttl)
            for scope, state, c in zip(request.scopes, states, counts, strict=True):
                if scope.rpm is not None:
                    c.req_curr = state.count(state.requests, current, 1)
                if scope.tpm is not None:
                    c.tok_curr = state.count(state.tokens, current, tokens)
                if scope.tracks_in_flight:
                    held = reserve if scope.has_budget else 0
                    state.in_flight[rid] = (hold_until, held)
                    state.held += held
                    c.in_flight += 1
                    c.held = state.held if scope.has_budget else 0
            self._markers[rid] = now_ms + _ms(policy.settle_ttl)
            self._markers.move_to_end(rid)

        raw_alerts = self._alerts(request.scopes, states, counts, day, month, spend_changed=None)
        return outcome.decide(
            request, counts, refused, now=now, now_ms=now_ms, reserve=reserve,
            policy=policy, issuer=self.issuer, raw_alerts=raw_alerts,
        )

    def _alerts(
        self,
        scopes: Sequence[Scope],
        states: Sequence[_ScopeState],
        counts: Sequence[Counts],
        day: str,
        month: str,
        spend_changed: Sequence[bool] | None,
    ) -> list[int]:
        raw: list[int] = []
        for i, (scope, state, c) in enumerate(zip(scopes, states, counts, strict=True)):
            if spend_changed is not None and not spend_changed[i]:
                continue
            for code, period in enumerate(outcome.PERIODS):
                amount = scope.budget(period)
                if amount is None:
                    continue
                key = "d:" + day if code == 0 else "m:" + month
                spend = c.spend(period)
                for pct in outcome.crossed(spend, outcome.budget_nanos(amount),
                                           self.policy.alert_thresholds):
                    marker = f"{key}:{pct}"
                    if marker not in state.alerted:
                        state.alerted.add(marker)
                        raw += [i, code, pct, spend]
        return raw

    async def settle(
        self,
        reservation: Reservation,
        actual_tokens: int,
        actual_cost: Decimal | None,
        now: datetime | None = None,
    ) -> Settlement:
        now = now or datetime.now(UTC)
        now_ms = epoch_ms(now)
        marker = self._markers.pop(reservation.request_id, None)
        if marker is None or marker <= now_ms:
            return Settlement(settled=False)
        current, _ = window.split(now_ms, self.policy.window_ms)
        if actual_cost is None:
            self._unknown_cost.note(reservation)
        cost = 0 if actual_cost is None else to_nanos(actual_cost)
        delta = actual_tokens - reservation.estimated_tokens
        day, month = budget.period_keys(now)
        states = [self._state(s.kind, s.id) for s in reservation.scopes]
        counts: list[Counts] = []
        changed: list[bool] = []
        for scope, state in zip(reservation.scopes, states, strict=True):
            c = Counts()
            if scope.tracks_in_flight:
                entry = state.in_flight.pop(reservation.request_id, None)
                if entry is not None and scope.has_budget:
                    state.release(entry[1])
            if (
                scope.tpm is not None and delta
                and reservation.window >= current - 1 and reservation.window in state.tokens
            ):
                state.tokens[reservation.window] = max(0, state.tokens[reservation.window] + delta)
            spent = scope.has_budget and cost > 0
            if spent:
                c.spend_day = state.add_spend("d:" + day, cost)
                c.spend_month = state.add_spend("m:" + month, cost)
            counts.append(c)
            changed.append(spent)
        raw = self._alerts(reservation.scopes, states, counts, day, month, changed)
        return Settlement(settled=True,
                          alerts=outcome.alerts_from(reservation.scopes, raw, now))

    async def seed_spend(
        self, scope_kind: ScopeKind, scope_id: str, period_key: str, amount: Decimal
    ) -> bool:
        key = outcome.spend_key(period_key)
        state = self._state(scope_kind, scope_id)
        nanos = to_nanos(amount)
        if state.spend.get(key, -1) >= nanos:
            return False
        state.spend[key] = nanos
        return True

    async def status(
        self, scopes: Sequence[Scope], now: datetime | None = None
    ) -> dict[str, Any]:
        now = now or datetime.now(UTC)
        now_ms = epoch_ms(now)
        current, elapsed = window.split(now_ms, self.policy.window_ms)
        day, month = budget.period_keys(now)
        entries = []
        for scope in scopes:
            state = self._state(scope.kind, scope.id)
            c = Counts()
            if scope.rpm is not None:
                c.req_prev = state.requests.get(current - 1, 0)
                c.req_curr = state.requests.get(current, 0)
            if scope.tpm is not None:
                c.tok_prev = state.tokens.get(current - 1, 0)
                c.tok_curr = state.tokens.get(current, 0)
            if scope.tracks_in_flight:
                c.in_flight, c.held = state.live(now_ms)
            if scope.daily_budget is not None:
                c.spend_day = state.spend.get("d:" + day, 0)
            if scope.monthly_budget is not None:
                c.spend_month = state.spend.get("m:" + month, 0)
            entries.append(outcome.status_entry(scope, c, now, elapsed, self.policy.window_ms))
        return {"as_of": budget.iso_z(now), "scopes": entries}


def _ms(delta: timedelta) -> int:
    return delta // timedelta(milliseconds=1)
