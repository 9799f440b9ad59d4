"""In-flight deduplication: identical cacheable requests share one upstream call.

The first request with a key *leads*: it makes the call. Requests with the same key that
arrive while it runs *follow*: they wait for the leader's complete answer and are served
it as a cache hit, without an upstream call of their own. A streamed follower waits for
the whole answer and then replays it; teeing live chunks would give it an earlier first
token, but a leader failing mid-stream would then leave followers with half an answer
they can no longer retry.

When the leader fails (an error, a client that left, a wait past ``wait_seconds``),
every follower makes its own call, at once and independently. A leader's failure is
often its own (its key's rate limit or budget, its client going away) and a retryable
one may well succeed a moment later, so it is never handed on; and followers do not elect
a new leader among themselves, which would run a failing request N times in a row.

Within one ingress process leaders are futures in memory, keyed by cache key (which
already holds the team scope). Across replicas sharing a Redis cache, a leader also
claims its key there (:mod:`ingress.cache.dedup_shared`) and ``on_end`` tells the other
replicas' followers when its answer is stored or its call failed.

A finished leader stays findable until its entry is readable from the store, so a
request arriving in between does not miss both and call upstream again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from ingress.cache.store import CachedAnswer


class Lead:
    """A leader's promise to its followers; resolved exactly once (see :class:`Capture`)."""

    __slots__ = ("_future", "_inflight", "key", "on_end")

    def __init__(self, inflight: InFlight, key: str,
                 future: asyncio.Future[CachedAnswer | None]) -> None:
        self._inflight = inflight
        self.key = key
        self._future = future
        # Called once at release with whether an answer was handed on (and so stored).
        self.on_end: Callable[[bool], None] | None = None

    def resolve(self, answer: CachedAnswer | None) -> None:
        if not self._future.done():
            self._future.set_result(answer)

    def release(self) -> None:
        """Stop being findable; a lead released before it resolved has failed."""
        self.resolve(None)
        self._inflight._forget(self.key, self._future)
        on_end, self.on_end = self.on_end, None
        if on_end is not None:
            on_end(self._future.result() is not None)


class InFlight:
    def __init__(self, wait_seconds: float = 300.0) -> None:
        self._leaders: dict[str, asyncio.Future[CachedAnswer | None]] = {}
        self.wait_seconds = wait_seconds

    def __len__(self) -> int:
        return len(self._leaders)

    def leader(self, key: str) -> asyncio.Future[CachedAnswer | None] | None:
        return self._leaders.get(key)

    def lead(self, key: str) -> Lead:
        """Register as the leader for ``key``; call only when :meth:`leader` found none."""
        future: asyncio.Future[CachedAnswer | None] = (
            asyncio.get_running_loop().create_future())
        self._leaders[key] = future
        return Lead(self, key, future)

    def _forget(self, key: str, future: asyncio.Future[CachedAnswer | None]) -> None:
        if self._leaders.get(key) is future:
            del self._leaders[key]

    async def follow(self, future: asyncio.Future[CachedAnswer | None]) -> CachedAnswer | None:
        """The leader's answer, or None: then the follower makes its own call. Shielded, so
        a follower whose client leaves does not cancel the leader's promise."""
        if future.done():
            return future.result()
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(asyncio.shield(future), self.wait_seconds)
        return None
