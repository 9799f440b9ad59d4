"""In-flight deduplication across ingress replicas that share a Redis cache.

:mod:`ingress.cache.dedup` lets identical requests within one replica share a call. Behind a
load balancer, identical requests often land on different replicas; without this module
each would call the upstream. Here the replica about to lead a call first claims the
cache key in Redis (``SET NX`` with an expiry, one round trip, only for cacheable
requests). A replica that finds the claim taken follows: it listens on the key's NATS
subject, where the leader says ``stored`` once the answer is readable from the shared
cache, or ``failed``; it then serves the cached answer, or makes its own call.

Ordering, so that no follower waits for a message it missed: the leader stores, then
publishes, then drops the claim. A follower subscribes, and waits until the server has
read the subscription (``core.bus_barrier``), before it reads the cache once; if the
leader stored before that read, the read finds the answer; if not, the message comes
after the subscription.

A claim lives ``CLAIM_TTL`` seconds and its leader renews it while the call runs, so a
leader that dies without a word (its replica killed) holds followers for seconds, not
for the whole dedup wait: they check the claim every second and stop waiting when it is
gone. A claim holds its leader's token, and only that token renews or drops it, so a
leader whose claim lapsed never drops the next leader's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable

import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from redis.asyncio import Redis

from core.bus_barrier import barrier
from ingress.cache.store import CachedAnswer
from schemas import subjects

log = logging.getLogger("aigw.ingress.dedup")

CLAIM_PREFIX = "aigw:lead:"
STORED = b"stored"
FAILED = b"failed"
# How often a follower makes sure the leader's claim still stands.
CHECK_EVERY = 1.0
# How long a claim lives unless its leader renews it (every third of that).
CLAIM_TTL = 6.0

# Renew or drop a claim only while it still holds the caller's token.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_DROP = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

Lookup = Callable[[], Awaitable[CachedAnswer | None]]


class SharedLeads:
    def __init__(self, redis: Redis, nc: NatsClient, wait_seconds: float,
                 claim_ttl: float = CLAIM_TTL) -> None:
        self._redis = redis
        self._nc = nc
        self.wait_seconds = wait_seconds
        self._ttl_ms = max(1, int(claim_ttl * 1000))
        self._renew = redis.register_script(_RENEW)
        self._drop = redis.register_script(_DROP)
        # The claims this replica holds: cache key -> (token, renewal task). One leader
        # per key per replica (``ingress.cache.dedup``), so the key is enough.
        self._held: dict[str, tuple[str, asyncio.Task[None]]] = {}

    @property
    def held(self) -> int:
        return len(self._held)

    async def claim(self, key: str) -> bool:
        """True when this replica now leads ``key`` across replicas (or Redis failed:
        then every replica leads for itself, as without this module)."""
        token = secrets.token_hex(8)
        try:
            won = await self._redis.set(CLAIM_PREFIX + key, token, nx=True, px=self._ttl_ms)
        except Exception as exc:  # a lost dedup never fails a request
            log.debug("dedup claim for %s failed: %s", key[:12], exc)
            return True
        if won:
            self._held[key] = (token, asyncio.create_task(self._keep(key, token)))
        return bool(won)

    async def _keep(self, key: str, token: str) -> None:
        """Renew the claim while the call runs (cancelled when it ends)."""
        while True:
            await asyncio.sleep(self._ttl_ms / 3000)
            try:
                if not await self._renew(keys=[CLAIM_PREFIX + key], args=[token, self._ttl_ms]):
                    return  # lapsed (Redis lost it): followers make their own calls
            except Exception as exc:  # Redis away: the claim lapses, nothing fails
                log.debug("dedup claim renewal for %s failed: %s", key[:12], exc)

    async def ended(self, key: str, stored: bool) -> None:
        """The leader's call ended: tell followers, then drop the claim."""
        token, renewal = self._held.pop(key, ("", None))
        if renewal is not None:
            renewal.cancel()
        with contextlib.suppress(nats.errors.Error, OSError):
            await self._nc.publish(subjects.dedup_done(key), STORED if stored else FAILED)
        if token:
            with contextlib.suppress(Exception):
                await self._drop(keys=[CLAIM_PREFIX + key], args=[token])

    async def follow(self, key: str, lookup: Lookup) -> CachedAnswer | None:
        """The answer another replica's call stored, or None: then make our own call."""
        ended: asyncio.Queue[bytes] = asyncio.Queue()

        async def on_message(msg: Msg) -> None:
            ended.put_nowait(msg.data)

        try:
            sub = await self._nc.subscribe(subjects.dedup_done(key), cb=on_message)
        except (nats.errors.Error, OSError):
            return await lookup()
        try:
            await barrier(self._nc, timeout=2)
        except (nats.errors.Error, OSError, TimeoutError):
            with contextlib.suppress(nats.errors.Error, OSError):
                await sub.unsubscribe()
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
