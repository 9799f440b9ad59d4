"""The exact-match response cache: stored answers, their stores, and capturing a miss.

An entry is one successful, complete answer (never an error, never a stream the client
left) with what the call used and cost, so a hit can be accounted with ``saved_cost``.
A non-streamed answer is kept as its response JSON; a streamed one as its chunks, exactly
as the client saw them (:mod:`ingress.dispatch.replay` turns either into the other).

Two stores behind one Protocol: Redis when ``REDIS_URL`` is set (one GET per lookup, one
SET with an expiry per store, shared by every replica), an in-process LRU with expiry
otherwise. The cache is an optimisation: when Redis fails, a lookup is a miss and a store
is skipped, and the request goes on.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any, Literal, Protocol

import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict, ValidationError
from redis.exceptions import RedisError

from schemas.config import CacheSettings, Deployment
from schemas.frames import DoneFrame
from schemas.usage import TokenUsage

log = logging.getLogger("aigw.ingress")

REDIS_PREFIX = "aigw:cache:v1:"
# At most one warning this often while Redis keeps failing, instead of one per request.
_WARN_EVERY = 30.0


class CachedAnswer(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    stored_at: float  # epoch seconds: ages are compared across replicas
    provider: str
    deployment_id: str | None = None
    upstream_model: str | None = None
    usage: TokenUsage
    # What the original call cost: a hit saved this much. None when it had no price.
    cost: Decimal | None = None
    response: dict[str, Any] | None = None
    chunks: list[str] | None = None

    def age(self, now: float | None = None) -> float:
        return max((time.time() if now is None else now) - self.stored_at, 0.0)


class CacheStore(Protocol):
    async def get(self, key: str) -> CachedAnswer | None: ...

    async def set(self, key: str, answer: CachedAnswer, ttl: float) -> None: ...


class MemoryCache:
    """One process's entries: least recently used first out, each with its expiry."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self._entries: collections.OrderedDict[str, tuple[float, CachedAnswer]] = (
            collections.OrderedDict())
        self._max_entries = max_entries

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str) -> CachedAnswer | None:
        found = self._entries.get(key)
        if found is None:
            return None
        expires, answer = found
        if expires <= time.monotonic():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return answer

    async def set(self, key: str, answer: CachedAnswer, ttl: float) -> None:
        self._entries[key] = (time.monotonic() + ttl, answer)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)


class RedisCache:
    """Entries shared by every replica; Redis expires them (``SET … PX``)."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._client = client
        self._warned_at = -_WARN_EVERY

    def _warn(self, action: str, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY:
            self._warned_at = now
            log.warning("response cache: %s failed (%s); serving without it", action, exc)

    async def get(self, key: str) -> CachedAnswer | None:
        try:
            raw = await self._client.get(REDIS_PREFIX + key)
        except (RedisError, OSError) as exc:
            self._warn("lookup", exc)
            return None
        if raw is None:
            return None
        try:
            return CachedAnswer.model_validate_json(raw)
        except ValidationError as exc:
            # An entry from another version of the gateway: a miss, overwritten later.
            self._warn("reading an entry", exc)
            return None

    async def set(self, key: str, answer: CachedAnswer, ttl: float) -> None:
        try:
            await self._client.set(REDIS_PREFIX + key, answer.model_dump_json(),
                                   px=max(int(ttl * 1000), 1))
        except (RedisError, OSError) as exc:
            self._warn("store", exc)


class ResponseCache:
    """The store with its age checks, and stores that happen off the response path.

    ``local`` is the in-process store a config with ``cache_params.type: local`` picks
    when ``store`` is shared (Redis); :meth:`configure` chooses, at start and on reload.
    """

    def __init__(self, store: CacheStore, *, local: CacheStore | None = None) -> None:
        self._shared = store
        self._local = local
        self.store = store
        self.namespace = ""
        self._saving: set[asyncio.Task[None]] = set()

    def configure(self, settings: CacheSettings) -> None:
        """Where entries go and under which key prefix, as the config says."""
        self.store = self._shared
        if settings.store == "local" and self._local is not None:
            self.store = self._local
        self.namespace = f"{settings.namespace}:" if settings.namespace else ""
        if settings.store == "redis" and self._local is None:
            log.warning("cache_params.type is redis but REDIS_URL is not set: "
                        "cached answers stay in this process")

    @property
    def shared(self) -> bool:
        """Whether entries go to the store every replica reads (Redis)."""
        return self._local is not None and self.store is self._shared

    async def lookup(self, key: str, max_age: float | None = None) -> CachedAnswer | None:
        answer = await self.store.get(self.namespace + key)
        if answer is None or (max_age is not None and answer.age() > max_age):
            return None
        return answer

    def save(self, key: str, answer: CachedAnswer, ttl: float,
             then: Callable[[], None] | None = None) -> None:
        """Store in the background (the client need not wait); ``then`` runs once the
        entry is readable, or once storing has failed."""
        task = asyncio.create_task(self._save(self.namespace + key, answer, ttl, then))
        self._saving.add(task)
        task.add_done_callback(self._saving.discard)

    async def _save(self, key: str, answer: CachedAnswer, ttl: float,
                    then: Callable[[], None] | None) -> None:
        try:
            await self.store.set(key, answer, ttl)
        finally:
            if then is not None:
                then()

    async def drain(self) -> None:
        if self._saving:
            await asyncio.gather(*self._saving, return_exceptions=True)


class Outcome(Protocol):
    """Who else waits for a captured answer (an in-flight leader's followers)."""

    def resolve(self, answer: CachedAnswer | None) -> None: ...

    def release(self) -> None: ...


class Capture:
    """A miss's answer as the relay sends it. On a complete answer it is stored (when the
    request allows) and handed to the requests waiting on it; anything else hands them
    nothing, so they make their own call."""

    __slots__ = ("_cache", "_chunks", "_ended", "_key", "_outcome", "_ttl")

    def __init__(self, cache: ResponseCache, key: str, ttl: float,
                 outcome: Outcome | None = None) -> None:
        self._cache = cache
        self._key = key
        self._ttl = ttl
        self._outcome = outcome
        self._chunks: list[bytes] = []
        self._ended = False

    def chunk(self, body: bytes) -> None:
        self._chunks.append(body)

    def done(self, done: DoneFrame, deployment: Deployment, streamed: bool) -> None:
        if self._ended:
            return
        if not streamed and done.response is None:
            self.abandon()
            return
        self._ended = True
        answer = CachedAnswer(
            stored_at=time.time(),
            provider=deployment.provider,
            deployment_id=deployment.id,
            upstream_model=done.upstream_model or deployment.upstream_model,
            usage=done.usage,
            cost=done.cost,
            response=done.response,
            chunks=[c.decode() for c in self._chunks] if streamed else None,
        )
        self._chunks = []
        outcome = self._outcome
        if outcome is not None:
            outcome.resolve(answer)
        if self._ttl > 0:
            self._cache.save(self._key, answer, self._ttl,
                             outcome.release if outcome is not None else None)
        elif outcome is not None:
            outcome.release()

    def abandon(self) -> None:
        if self._ended:
            return
        self._ended = True
        self._chunks = []
        if self._outcome is not None:
            self._outcome.resolve(None)
            self._outcome.release()
