"""A full worker says so at once instead of queueing attempts where no one can see them.

With core NATS queue groups a worker that is at its concurrency would otherwise keep taking
attempts into its client's buffer: the calls wait, but nothing outside the process can tell,
so an autoscaler sees no backlog and the ingress cannot wait elsewhere. So the worker runs
up to its concurrency and answers any attempt beyond it with a ``busy`` frame; the ingress
then waits a bounded time and sends again (the wait is its ``aigw_dispatch_waiting``).

Batch items use only spare room: while interactive attempts are being refused (within the
last :data:`REFUSAL_MEMORY` seconds) the batch runner fetches nothing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

# Handler slots beyond the concurrency, so that a full worker can still read attempts and
# refuse them (FastStream runs at most this many handlers at once).
SPARE_SLOTS = 64
# How long after refusing an interactive attempt the batch runner keeps out of the way.
REFUSAL_MEMORY = 2.0


class Capacity:
    """The worker's concurrency and its recent refusals."""

    def __init__(self, concurrency: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.concurrency = concurrency
        self._clock = clock
        self._refused_at = -math.inf
        self.refused = 0

    @property
    def handler_slots(self) -> int:
        return self.concurrency + SPARE_SLOTS

    def admit(self, in_flight: int) -> bool:
        """Whether one more attempt may run beside ``in_flight``; a refusal is remembered."""
        if in_flight < self.concurrency:
            return True
        self._refused_at = self._clock()
        self.refused += 1
        return False

    def interactive_waiting(self) -> bool:
        """Interactive attempts were refused lately: batch items must not take a slot."""
        return self._clock() - self._refused_at < REFUSAL_MEMORY
