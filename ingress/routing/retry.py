"""When a failed request is tried again, and how long it waits first. Pure: no clock, no I/O.

Failing over to another deployment of the group is immediate and free. A *retry* is a new
round over the group after every deployment in it has failed; it waits an exponential
backoff with jitter, at least the upstream's ``retry-after`` and the configured
``retry_after``, and only happens when the request's deadline leaves room for it.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from schemas.config import RouterSettings
from schemas.errors import RETRYABLE, ErrorInfo, ErrorKind

# The first retry waits around this long, doubling each round up to the cap. Small,
# because the deadline and the upstream's retry-after do the real pacing.
BACKOFF_BASE = 0.25
BACKOFF_CAP = 8.0
# A retry that would start with less time than this before the deadline is not made: it
# could not finish, and the client is better served by the error (or a fallback) now.
MIN_ATTEMPT_SECONDS = 0.5


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many retry rounds each error class earns (``num_retries`` for kinds that are
    worth retrying, 0 for the rest, unless ``retry_policy`` says otherwise)."""

    num_retries: int = 0
    per_kind: Mapping[ErrorKind, int] = field(default_factory=dict)
    min_wait: float = 0.0
    base: float = BACKOFF_BASE
    cap: float = BACKOFF_CAP

    @classmethod
    def from_settings(cls, settings: RouterSettings) -> RetryPolicy:
        return cls(settings.num_retries, dict(settings.retry_policy), settings.retry_after)

    def retries_for(self, kind: ErrorKind) -> int:
        if kind in self.per_kind:
            return self.per_kind[kind]
        # No worker at all for a provider is not fixed by waiting a moment.
        if kind is ErrorKind.NO_WORKER or kind not in RETRYABLE:
            return 0
        return self.num_retries

    def backoff(self, round_: int, error: ErrorInfo, rand: Callable[[], float]) -> float:
        """Seconds to wait before retry round ``round_`` (1 for the first retry).

        "Equal jitter": half the exponential step is fixed, half random, so replicas that
        failed together do not retry together, yet no retry comes back immediately.
        """
        step = min(self.cap, self.base * 2.0 ** (round_ - 1))
        wait = step / 2 + rand() * step / 2
        return max(wait, self.min_wait, error.retry_after or 0.0)

    def next_wait(
        self,
        retries_done: int,
        error: ErrorInfo,
        remaining: float | None,
        rand: Callable[[], float] = random.random,
    ) -> float | None:
        """The wait before the next retry round, or None when no retry should be made:
        the error class has used its retries, or the deadline leaves no room."""
        if retries_done >= self.retries_for(error.kind):
            return None
        wait = self.backoff(retries_done + 1, error, rand)
        if remaining is not None and wait + MIN_ATTEMPT_SECONDS > remaining:
            # Retrying before the upstream's retry-after would most likely fail again;
            # waiting past the deadline helps nobody.
            return None
        return wait
