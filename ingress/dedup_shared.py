"""In-flight deduplication across ingress replicas that share a Redis cache.

:mod:`ingress.dedup` lets identical requests within one replica share a call. Behind a
load balancer, identical requests often land on different replicas; without this module
each would call the upstream. Here the replica about to lead a call first claims the
cache key in Redis (``SET NX`` with an expiry, one round trip, only for cacheable
requests). A replica that finds the claim taken follows: it listens on the key's NATS
subject, where the leader says ``stored`` once the answer is readable from the shared
cache, or ``failed``; it then serves the cached answer, or makes its own call.

Ordering, so that no follower waits for a message it missed: the leader stores, then
publishes, then drops the claim. A follower subscribes (and flushes, so the server has
the subscription) before it reads the cache once; if the leader stored before that read,
the read finds the answer; if not, the message comes after the subscription. A leader
that dies without a word leaves a claim that expires; the follower checks the claim
every second and stops waiting when it is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from redis.asyncio import Redis

from ingress.cache import CachedAnswer
from schemas import subjects

log = logging.getLogger("aigw.ingress.dedup")

CLAIM_PREFIX = "aigw:lead:"
STORED = b"stored"
FAILED = b"failed"
# How often a follower makes sure the leader's claim still stands.
CHECK_EVERY = 1.0

Lookup = Callable[[], Awaitable[CachedAnswer | None]]


class SharedLeads:
    def __init__(self, redis: Redis, nc: NatsClient, wait_seconds: float) -> None:
        self._redis = redis
        self._nc = nc
        self.wait_seconds = wait_seconds

    async def claim(self, key: str) -> bool:
        """True when this replica now leads ``key`` across replicas (or Redis failed:
        then every replica leads for itself, as without this module)."""
        try:
            won = await self._redis.set(CLAIM_PREFIX + key, b"1", nx=True,
                                        px=max(1, int(self.wait_seconds * 1000)))
        except Exception as exc:  # a lost dedup never fails a request
            log.debug("dedup claim for %s failed: %s", key[:12], exc)
            return True
        return bool(won)

    async def ended(self, key: str, stored: bool) -> None:
        """The leader's call ended: tell followers, then drop the claim."""
        with contextlib.suppress(nats.errors.Error, OSError):
            await self._nc.publish(subjects.dedup_done(key), STORED if stored else FAILED)
        with contextlib.suppress(Exception):
            await self._redis.delete(CLAIM_PREFIX + key)

    async def follow(self, key: str, lookup: Lookup) -> CachedAnswer | None:
        """The answer another replica's call stored, or None: then make our own call."""
        ended: asyncio.Queue[bytes] = asyncio.Queue()

        async def on_message(msg: Msg) -> None:
            ended.put_nowait(msg.data)

        try:
            sub = await self._nc.subscribe(subjects.dedup_done(key), cb=on_message)
            await self._nc.flush(timeout=2)
        except (nats.errors.Error, OSError):
            return await lookup()
        try:
            answer = await lookup()
            if answer is not None:
                return answer
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.wait_seconds
            while (left := deadline - loop.time()) > 0:
                try:
                    word = await asyncio.wait_for(ended.get(), min(left, CHECK_EVERY))
                except TimeoutError:
                    if not await self._claimed(key):
                        return await lookup()
                    continue
                return await lookup() if word == STORED else None
            return None
        finally:
            with contextlib.suppress(nats.errors.Error, OSError):
                await sub.unsubscribe()

    async def _claimed(self, key: str) -> bool:
        try:
            return bool(await self._redis.exists(CLAIM_PREFIX + key))
        except Exception:
            return False
