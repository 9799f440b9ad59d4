"""Admission shared by every ingress replica, in Redis: one Lua call per admit, settle
and status (key layout and scripts in :mod:`ingress.admission.lua`).

The scripts are loaded once (:meth:`RedisAdmission.load`, or lazily) and run by SHA; a
Redis that lost them (restart, ``SCRIPT FLUSH``) answers NOSCRIPT, and they are loaded
again. Connection failures surface as :class:`AdmissionUnavailable`, so the caller (or
:class:`~ingress.admission.resilient.ResilientAdmission`) decides between failing closed
and failing open. The client is passed in, with its pool, timeouts and retries; the script
calls themselves go, pipelined, over one connection of admission's own to the same Redis
(:mod:`ingress.admission.redis_pipeline`), with the client's timeout. Nothing here opens
connections per request.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (
    ConnectionError as RedisConnectionError,
)
from redis.exceptions import (
    NoScriptError,
    ReadOnlyError,
)
from redis.exceptions import (
    TimeoutError as RedisTimeoutError,
)

from ingress.admission import budget, lua, outcome, window
from ingress.admission.outcome import Counts
from ingress.admission.redis_pipeline import AutoPipeline
from ingress.admission.types import (
    AdmissionPolicy,
    AdmissionUnavailable,
    AdmitRequest,
    Decision,
    DuplicateRequest,
    Reservation,
    Scope,
    ScopeKind,
    Settlement,
    epoch_ms,
    to_nanos,
)

# Spend counters outlive their period a little, so a settle that lands just after
# midnight never finds a fresh key for the old day; past periods are never read.
DAY_SPEND_TTL = timedelta(days=2)
MONTH_SPEND_TTL = timedelta(days=35)
# A read-only replica (after a failover) cannot admit either: same as unreachable.
UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, ReadOnlyError, OSError)


def connect(
    url: str,
    *,
    max_connections: int = 64,
    timeout: float = 0.5,
) -> aioredis.Redis:
    """A client fit for admission, built once per process in the app lifespan.

    * A blocking pool: under a burst, requests wait ``timeout`` for a connection instead
      of failing at once (the default pool raises "Too many connections" past 100).
    * No retries: a retried admit after a read timeout may already have been applied
      (it would then fail as a duplicate and hold its reservation until it expires), and
      redis-py's default of ten backed-off retries turns an outage into seconds per
      request. :class:`~ingress.admission.resilient.ResilientAdmission` handles failure.
    * Short socket timeouts: a script runs in well under a millisecond.
    """
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )
    return aioredis.Redis.from_pool(pool)


def _ms(delta: timedelta) -> int:
    return delta // timedelta(milliseconds=1)


def scope_args(scope: Scope) -> list[int]:
    def nanos(amount: Decimal | None) -> int:
        return -1 if amount is None else outcome.budget_nanos(amount)

    return [
        -1 if scope.rpm is None else scope.rpm,
        -1 if scope.tpm is None else scope.tpm,
        -1 if scope.max_parallel is None else scope.max_parallel,
        nanos(scope.daily_budget),
        nanos(scope.monthly_budget),
    ]


class _Script:
    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def load(self, client: aioredis.Redis) -> None:
        await client.script_load(self.source)

    async def __call__(
        self, redis: AutoPipeline, keys: Sequence[str], args: Sequence[Any]
    ) -> list[int]:
        """The script's comma-separated integers."""
        try:
            result = await redis.evalsha(self.sha, keys, args)
        except NoScriptError:
            await self.load(redis.client)
            result = await redis.evalsha(self.sha, keys, args)
        text = cast(bytes | str, result)
        if not text:
            return []
        return [int(v) for v in (text.split(b",") if isinstance(text, bytes) else text.split(","))]


class RedisAdmission:
    issuer = "redis"

    _admit_script = _Script(lua.ADMIT)
    _settle_script = _Script(lua.SETTLE)
    _status_script = _Script(lua.STATUS)
    _raise_spend_script = _Script(lua.RAISE_SPEND)

    def __init__(
        self,
        client: aioredis.Redis,
        policy: AdmissionPolicy | None = None,
        *,
        namespace: str = "aigw:adm:",
    ) -> None:
        self.client = client
        self._pipeline = AutoPipeline(client)
        self.policy = policy or AdmissionPolicy()
        self.namespace = namespace
        p = self.policy
        # The fixed part of every admit/settle argument list, built once.
        self._ttls = [_ms(DAY_SPEND_TTL), _ms(MONTH_SPEND_TTL)]
        self._thresholds = [len(p.alert_thresholds), *p.alert_thresholds]
        self._hold_ms = _ms(p.hold_ttl)
        self._settle_ms = _ms(p.settle_ttl)
        self._unknown_cost = outcome.UnknownCostLog()

    async def load(self) -> None:
        """Load the scripts ahead of the first request (call from the app lifespan)."""
        try:
            for script in (self._admit_script, self._settle_script, self._status_script,
                           self._raise_spend_script):
                await script.load(self.client)
        except UNAVAILABLE as exc:
            raise AdmissionUnavailable(f"redis unavailable: {exc}") from exc

    async def aclose(self) -> None:
        """Close the connection the script calls go over (the client stays the caller's)."""
        await self._pipeline.aclose()

    def scope_key(self, kind: str, scope_id: str) -> str:
        return f"{self.namespace}{kind}:{{{scope_id}}}"

    def _marker(self, request_id: str) -> str:
        return f"{self.namespace}rsv:{{{request_id}}}"

    async def _run(self, script: _Script, keys: Sequence[str], args: Sequence[Any]) -> list[int]:
        try:
            return await script(self._pipeline, keys, args)
        except UNAVAILABLE as exc:
            raise AdmissionUnavailable(f"redis unavailable: {exc}") from exc

    async def admit(self, request: AdmitRequest) -> Decision:
        outcome.validate(request)
        now = request.now or datetime.now(UTC)
        now_ms = epoch_ms(now)
        reserve = to_nanos(request.reserve_cost, round_up=True)
        day, month = budget.period_keys(now)
        keys = [self._marker(request.request_id)]
        args: list[Any] = [
            now_ms, request.request_id, request.estimated_tokens, reserve,
            self._hold_ms, self._settle_ms, day, month, self.policy.window_ms,
            *self._ttls, *self._thresholds,
        ]
        for scope in request.scopes:
            keys.append(self.scope_key(scope.kind, scope.id))
            args += scope_args(scope)
        raw = await self._run(self._admit_script, keys, args)
        if raw[0] == -1:
            raise DuplicateRequest(f"request {request.request_id} already holds a reservation")
        refused = None if raw[0] == 1 else (raw[1] - 1, outcome.LIMIT_ORDER[raw[2] - 1])
        start = 4 + 4 * raw[3]
        counts = [Counts.from_flat(raw, start + Counts.WIDTH * i)
                  for i in range(len(request.scopes))]
        return outcome.decide(
            request, counts, refused, now=now, now_ms=now_ms, reserve=reserve,
            policy=self.policy, issuer=self.issuer, raw_alerts=raw[4:start],
        )

    async def settle(
        self,
        reservation: Reservation,
        actual_tokens: int,
        actual_cost: Decimal | None,
        now: datetime | None = None,
    ) -> Settlement:
        now = now or datetime.now(UTC)
        day, month = budget.period_keys(now)
        keys = [self._marker(reservation.request_id)]
        args: list[Any] = [
            epoch_ms(now), reservation.request_id, reservation.reserve_nanos,
            0 if actual_cost is None else to_nanos(actual_cost),
            actual_tokens - reservation.estimated_tokens, reservation.window,
            day, month, self.policy.window_ms, *self._ttls, *self._thresholds,
        ]
        for scope in reservation.scopes:
            keys.append(self.scope_key(scope.kind, scope.id))
            args += scope_args(scope)
        raw = await self._run(self._settle_script, keys, args)
        if raw[0] == 0:
            return Settlement(settled=False)
        if actual_cost is None:
            self._unknown_cost.note(reservation)
        return Settlement(
            settled=True,
            alerts=outcome.alerts_from(reservation.scopes, raw[2:2 + 4 * raw[1]], now),
        )

    async def seed_spend(
        self, scope_kind: ScopeKind, scope_id: str, period_key: str, amount: Decimal
    ) -> bool:
        """Raise a spend counter to ClickHouse's figure when that is higher (a cold
        counter, or spend it never saw); never lower it. True when it was raised."""
        suffix = outcome.spend_key(period_key)
        key = f"{self.scope_key(scope_kind, scope_id)}:s{suffix[0]}:{suffix[2:]}"
        ttl = DAY_SPEND_TTL if suffix[0] == "d" else MONTH_SPEND_TTL
        raised = await self._run(self._raise_spend_script, [key],
                                 [to_nanos(amount), _ms(ttl)])
        return raised == [1]

    async def status(
        self, scopes: Sequence[Scope], now: datetime | None = None
    ) -> dict[str, Any]:
        now = now or datetime.now(UTC)
        now_ms = epoch_ms(now)
        _, elapsed = window.split(now_ms, self.policy.window_ms)
        day, month = budget.period_keys(now)
        keys: list[str] = []
        args: list[Any] = [now_ms, day, month, self.policy.window_ms]
        for scope in scopes:
            keys.append(self.scope_key(scope.kind, scope.id))
            args += scope_args(scope)
        raw = await self._run(self._status_script, keys, args) if scopes else []
        entries = [
            outcome.status_entry(scope, Counts.from_flat(raw, Counts.WIDTH * i), now, elapsed,
                                 self.policy.window_ms)
            for i, scope in enumerate(scopes)
        ]
        return {"as_of": budget.iso_z(now), "scopes": entries}
