"""Every deployment's circuit breaker, shared by all ingress replicas through NATS KV.

Each replica watches the ``aigw_health`` bucket into an in-memory mirror, so building a
plan reads memory only. A replica that sees an attempt fail or succeed applies the
transition to its mirror at once (its next plan already knows) and writes it to KV in the
background with compare-and-set; when another replica wrote first, the transition is
re-applied to the newer entry. Writes for one deployment are queued and coalesced, so a
burst of failures costs one write in flight per deployment, not one per failure.

When NATS is unreachable the mirror keeps working for this replica alone: breakers still
open and close locally, and the writes resume with the connection.

The same bucket holds what the background health checks (:mod:`ingress.dispatch.health_probe`)
share: each deployment's last check (``c_<hash>``, last writer wins: one replica probes
per interval) and the lease that says which replica probes (``probe_lease``,
compare-and-set).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Literal

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue
from pydantic import BaseModel, ConfigDict, ValidationError

from core import replicas
from core.bucket_watch import BucketWatch
from ingress.routing.breaker import Availability, Breaker, availability
from schemas.config import RouterSettings
from schemas.errors import ErrorInfo
from schemas.health import HEALTH_BUCKET, HealthEntry, health_key

log = logging.getLogger("aigw.health")

Clock = Callable[[], float]
Transition = Callable[[HealthEntry | None, float], HealthEntry | None]

_CAS_ATTEMPTS = 8
_NATS_ERRORS = (nats.errors.Error, OSError, asyncio.TimeoutError)
_BREAKER_PREFIX = "d_"
_CHECK_PREFIX = "c_"
LEASE_KEY = "probe_lease"


class HealthCheck(BaseModel):
    """A deployment's last background health check. ``at`` is Unix seconds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    deployment_id: str
    at: float
    ok: bool
    latency_ms: float
    error: str | None = None


class ProbeLease(BaseModel):
    """Which replica runs the background health checks, until when (Unix seconds)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    holder: str
    until: float


def check_key(deployment_id: str) -> str:
    return _CHECK_PREFIX + health_key(deployment_id).removeprefix(_BREAKER_PREFIX)


def may_take(lease: ProbeLease | None, holder: str, now: float) -> bool:
    """Whether ``holder`` may take the probe lease: nobody holds it, its holder's time is
    up, or ``holder`` holds it already (it renews, so one replica keeps the job)."""
    return lease is None or lease.holder == holder or lease.until <= now


class HealthBoard:
    def __init__(
        self,
        nc: Client | None,
        settings: RouterSettings,
        *,
        bucket: str = HEALTH_BUCKET,
        clock: Clock = time.time,
    ) -> None:
        self._nc = nc
        self._js = nc.jetstream() if nc is not None else None
        self._bucket = bucket
        self.breaker = Breaker(settings)
        self._clock = clock
        self._kv: KeyValue | None = None
        # deployment id -> (KV revision, entry); revision 0 marks a local-only change.
        self._entries: dict[str, tuple[int, HealthEntry]] = {}
        self._checks: dict[str, tuple[int, HealthCheck]] = {}
        self._pending: dict[str, list[Transition]] = {}
        self._writers: dict[str, asyncio.Task[None]] = {}
        self._watch: BucketWatch | None = None

    # ---- lifecycle ---------------------------------------------------------------------

    async def start(self, timeout: float = 10.0) -> None:
        """Open (or create) the bucket; return once the mirror holds every entry."""
        if self._nc is None or self._js is None:
            return
        try:
            self._kv = await self._js.key_value(self._bucket)
            await replicas.check(self._js, f"KV_{self._bucket}")
        except nats.js.errors.BucketNotFoundError:
            self._kv = await self._js.create_key_value(
                bucket=self._bucket, history=1, replicas=replicas.wanted(),
                description="ai-gateway deployment health (circuit breakers)",
            )
        self._watch = BucketWatch(self._nc, self._kv, self._bucket,
                                  self._apply)
        await self._watch.start(timeout)

    async def stop(self) -> None:
        for task in list(self._writers.values()):
            task.cancel()
        await asyncio.gather(*self._writers.values(), return_exceptions=True)
        if self._watch is not None:
            await self._watch.stop()

    def _apply(self, key: str, value: bytes | None, revision: int, op: str | None) -> None:
        if op in (KV_DEL, KV_PURGE) or not value:
            return  # entries are never deleted by us; a purge by hand changes nothing
        if key.startswith(_CHECK_PREFIX):
            self._apply_check(value, revision)
            return
        if not key.startswith(_BREAKER_PREFIX):
            return  # the probe lease
        try:
            entry = HealthEntry.model_validate_json(value)
        except ValidationError:
            log.warning("unreadable health entry at revision %d ignored", revision)
            return
        held = self._entries.get(entry.deployment_id)
        if held is not None and 0 < revision <= held[0]:
            return
        self._entries[entry.deployment_id] = (revision, entry)

    # ---- the hot path: memory only -----------------------------------------------------

    def entry(self, deployment_id: str) -> HealthEntry | None:
        held = self._entries.get(deployment_id)
        return held[1] if held is not None else None

    def availability(self, deployment_id: str) -> Availability:
        return availability(self.entry(deployment_id), self._clock())

    def acquire(self, deployment_id: str) -> bool:
        """Whether an attempt may go to the deployment now. Taking the probe of a
        deployment whose cooldown is over counts as going: the next caller is refused
        until the probe reports."""
        state = self.availability(deployment_id)
        if state is Availability.HEALTHY:
            return True
        if state is Availability.PROBE_READY:
            self._change(deployment_id, lambda e, now: self.breaker.probe(e, now))
            return True
        return False

    def failed(self, deployment_id: str, error: ErrorInfo) -> None:
        if self.breaker.counts(error):
            self._change(deployment_id,
                         lambda e, now: self.breaker.fail(e, deployment_id, error, now))

    def succeeded(self, deployment_id: str) -> None:
        entry = self.entry(deployment_id)
        if entry is not None and self.breaker.succeed(entry, self._clock()) is not None:
            self._change(deployment_id, self.breaker.succeed)

    # ---- writes ------------------------------------------------------------------------

    def _change(self, deployment_id: str, transition: Transition) -> None:
        held = self._entries.get(deployment_id)
        new = transition(held[1] if held else None, self._clock())
        if new is None:
            return
        self._entries[deployment_id] = (held[0] if held else 0, new)
        if self._js is None:
            return
        self._pending.setdefault(deployment_id, []).append(transition)
        if deployment_id not in self._writers:
            task = asyncio.create_task(self._write(deployment_id))
            self._writers[deployment_id] = task
            task.add_done_callback(lambda _: self._writers.pop(deployment_id, None))

    async def _write(self, deployment_id: str) -> None:
        key = health_key(deployment_id)
        while self._pending.get(deployment_id):
            transitions = self._pending.pop(deployment_id)
            try:
                await self._write_once(key, deployment_id, transitions)
            except _NATS_ERRORS as exc:
                log.warning("health of %s not shared (kept locally): %s", deployment_id, exc)
                return

    async def _write_once(
        self, key: str, deployment_id: str, transitions: list[Transition]
    ) -> None:
        assert self._kv is not None
        for _ in range(_CAS_ATTEMPTS):
            try:
                current = await self._kv.get(key)
                revision = current.revision or 0
                base = HealthEntry.model_validate_json(current.value) if current.value else None
            except nats.js.errors.KeyNotFoundError:
                revision, base = 0, None
            entry, now = base, self._clock()
            for transition in transitions:
                entry = transition(entry, now) or entry
            if entry is None or entry == base:
                return
            data = entry.model_dump_json().encode()
            try:
                if revision == 0:
                    new_revision = await self._kv.create(key, data)
                else:
                    new_revision = await self._kv.update(key, data, last=revision)
            except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.APIError) as exc:
                # Another replica wrote first: apply ours to its entry.
                log.debug("health write for %s raced (%s); retrying", deployment_id, exc)
                continue
            self._apply(key, data, new_revision, None)
            return
        log.warning("health of %s not written after %d races", deployment_id, _CAS_ATTEMPTS)

    # ---- background health checks ------------------------------------------------------

    def _apply_check(self, value: bytes, revision: int) -> None:
        try:
            check = HealthCheck.model_validate_json(value)
        except ValidationError:
            log.warning("unreadable health check at revision %d ignored", revision)
            return
        held = self._checks.get(check.deployment_id)
        if held is not None and (0 < revision <= held[0] or held[1].at > check.at):
            return
        self._checks[check.deployment_id] = (revision, check)

    def last_check(self, deployment_id: str) -> HealthCheck | None:
        held = self._checks.get(deployment_id)
        return held[1] if held is not None else None

    async def record_check(self, check: HealthCheck) -> None:
        """Keep ``check`` as its deployment's last, here at once and for every replica
        through KV. A failed write is logged: the next round writes again."""
        held = self._checks.get(check.deployment_id)
        self._checks[check.deployment_id] = (held[0] if held else 0, check)
        if self._kv is None:
            return
        data = check.model_dump_json().encode()
        try:
            await self._kv.put(check_key(check.deployment_id), data)
        except _NATS_ERRORS as exc:
            log.warning("health check of %s not shared (kept locally): %s",
                        check.deployment_id, exc)

    async def take_probe_lease(self, holder: str, seconds: float) -> bool:
        """Whether ``holder`` runs this round of health checks: it takes (or renews) the
        lease for ``seconds`` with compare-and-set, so of replicas that try at once one
        wins. Without a bucket to share, this process is alone and always probes."""
        if self._kv is None:
            return self._nc is None
        now = self._clock()
        data = ProbeLease(holder=holder, until=now + seconds).model_dump_json().encode()
        try:
            try:
                current = await self._kv.get(LEASE_KEY)
            except nats.js.errors.KeyNotFoundError:
                await self._kv.create(LEASE_KEY, data)
                return True
            try:
                lease = ProbeLease.model_validate_json(current.value or b"")
            except ValidationError:
                lease = None  # unreadable: taken over
            if not may_take(lease, holder, now):
                return False
            await self._kv.update(LEASE_KEY, data, last=current.revision)
            return True
        except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.APIError):
            return False  # another replica took it first
        except _NATS_ERRORS as exc:
            log.warning("probe lease not taken: %s", exc)
            return False

    # ---- reporting ---------------------------------------------------------------------

    def snapshot(self) -> dict[str, HealthEntry]:
        return {d: e for d, (_, e) in self._entries.items()}

    @property
    def following(self) -> bool:
        return self._watch is not None and self._watch.following

    async def settle(self) -> None:
        """Wait for queued writes (tests, shutdown)."""
        while self._writers:
            await asyncio.gather(*list(self._writers.values()), return_exceptions=True)
