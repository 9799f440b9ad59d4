"""The circuit breaker of one deployment, as pure transitions of a :class:`HealthEntry`.

::

    closed ──(more than allowed_fails failures within fail_window)──▶ open
    open ──(cooldown_time passed; the next request takes the probe)──▶ half_open
    half_open ──(probe answers)──▶ closed        half_open ──(probe fails)──▶ open

Each transition is a function of (entry, now) returning the new entry, or None when
nothing changes, so a replica can re-apply it to a newer entry after losing a
compare-and-set race (:mod:`ingress.routing.health_board`).
"""

from __future__ import annotations

from enum import Enum

from schemas.config import RouterSettings
from schemas.errors import RETRYABLE, ErrorInfo, ErrorKind
from schemas.health import CircuitState, HealthEntry

# Failures that say something about the deployment itself, not the request: a client's
# bad request must not cool a healthy deployment down. "No worker" is about our own
# workers, not the upstream, and fails over at once anyway.
DEPLOYMENT_FAULTS: frozenset[ErrorKind] = (
    RETRYABLE | {ErrorKind.AUTHENTICATION, ErrorKind.PERMISSION, ErrorKind.NOT_FOUND}
) - {ErrorKind.NO_WORKER}

# How long a probe may run before another request may probe instead: long enough for a
# slow first token, short enough that a lost probe does not park a deployment for long.
PROBE_LEASE_SECONDS = 30.0


class Availability(Enum):
    HEALTHY = "healthy"
    COOLING = "cooling"  # open, cooldown not over
    PROBE_READY = "probe_ready"  # cooldown over: the next request probes it
    PROBING = "probing"  # another request's probe is out


def availability(entry: HealthEntry | None, now: float) -> Availability:
    if entry is None or entry.state is CircuitState.CLOSED:
        return Availability.HEALTHY
    if entry.until is not None and now < entry.until:
        return Availability.COOLING if entry.state is CircuitState.OPEN else Availability.PROBING
    return Availability.PROBE_READY


class Breaker:
    """Transitions under one router's settings."""

    def __init__(self, settings: RouterSettings) -> None:
        self.allowed_fails = settings.allowed_fails
        self.cooldown_time = settings.cooldown_time
        self.fail_window = settings.fail_window
        self.enabled = not settings.disable_cooldowns and settings.cooldown_time > 0

    def counts(self, error: ErrorInfo) -> bool:
        return self.enabled and error.kind in DEPLOYMENT_FAULTS

    def fail(
        self, entry: HealthEntry | None, deployment_id: str, error: ErrorInfo, now: float
    ) -> HealthEntry | None:
        if not self.counts(error):
            return None
        entry = entry or HealthEntry(deployment_id=deployment_id)
        # An upstream that asked for a longer pause than our cooldown gets it.
        cooldown = max(self.cooldown_time, error.retry_after or 0.0)
        opened = entry.model_copy(update={
            "state": CircuitState.OPEN, "fails": (), "until": now + cooldown,
            "reason": error.kind.value, "updated_at": now,
        })
        match availability(entry, now):
            case Availability.COOLING:
                return None  # already open: an attempt tried anyway failed, as expected
            case Availability.PROBING | Availability.PROBE_READY:
                return opened  # the probe (or a try-anyway past the cooldown) failed
        fails = (*(t for t in entry.fails if t > now - self.fail_window), now)
        if len(fails) > self.allowed_fails:
            return opened
        return entry.model_copy(update={"fails": fails, "reason": error.kind.value,
                                        "updated_at": now})

    def succeed(self, entry: HealthEntry | None, now: float) -> HealthEntry | None:
        """Close an open or probing breaker. A closed one is left alone, failures and all:
        writing on every success would cost a KV write per request."""
        if entry is None or entry.state is CircuitState.CLOSED:
            return None
        return entry.model_copy(update={"state": CircuitState.CLOSED, "fails": (),
                                        "until": None, "reason": None, "updated_at": now})

    def probe(self, entry: HealthEntry | None, now: float) -> HealthEntry | None:
        """Take the probe of a breaker whose cooldown is over; None if it is not free."""
        if entry is None or availability(entry, now) is not Availability.PROBE_READY:
            return None
        return entry.model_copy(update={"state": CircuitState.HALF_OPEN,
                                        "until": now + max(PROBE_LEASE_SECONDS,
                                                           self.cooldown_time),
                                        "updated_at": now})
