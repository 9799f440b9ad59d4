"""Waiting for a worker when every worker of a provider is full.

A full worker answers an attempt with a ``busy`` frame instead of starting it
(:mod:`workers.capacity`). The attempt then waits here and is sent again, with a short
backoff, for at most the dispatcher's ``capacity_wait`` (and never past the request's own
deadline); past that the caller gets a 503 ``no_capacity`` with ``retry-after``. While it
waits it counts in ``aigw_dispatch_waiting{gen_ai_provider_name}``: the backlog that an
autoscaler adds workers for, and that core NATS queue groups alone would keep out of sight.
"""

from __future__ import annotations

import asyncio
import random

from ingress.metrics import INGRESS
from schemas.errors import ErrorInfo, ErrorKind

FIRST_PAUSE = 0.02
LONGEST_PAUSE = 0.5


class CapacityWait:
    """One attempt's wait for a free worker of ``provider``: enter on the first ``busy``."""

    def __init__(self, provider: str, bound: float, remaining: float | None) -> None:
        self.provider = provider
        self.bound = bound
        loop = asyncio.get_running_loop()
        self._loop = loop
        allowed = bound if remaining is None else max(0.0, min(bound, remaining))
        self._deadline = loop.time() + allowed
        self._pause = FIRST_PAUSE
        self._open = True
        INGRESS.waiting[provider] = INGRESS.waiting.get(provider, 0) + 1

    async def pause(self) -> bool:
        """Sleep before the next send; False once the bound has passed (send no more)."""
        left = self._deadline - self._loop.time()
        if left <= 0:
            return False
        # Jittered, so that the calls a full provider turned away do not come back together.
        await asyncio.sleep(min(self._pause * (0.5 + random.random()), left))
        self._pause = min(self._pause * 2, LONGEST_PAUSE)
        return True

    def close(self) -> None:
        if self._open:
            self._open = False
            INGRESS.waiting[self.provider] -= 1

    def error(self) -> ErrorInfo:
        return ErrorInfo.of(
            ErrorKind.NO_WORKER,
            f"every worker of provider {self.provider!r} stayed busy for "
            f"{self.bound:g} s; try again later",
            code="no_capacity", retry_after=max(1.0, self.bound / 2), provider=self.provider)
