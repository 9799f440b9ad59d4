"""The semantic cache's entries, shared by every ingress replica through a NATS KV bucket.

Each replica follows the bucket (:class:`core.bucket_watch.BucketWatch`) into its own
:class:`~ingress.cache.semantic_index.SemanticIndex` of vectors, so a lookup is a search
in memory, then one KV read of the matched entry's answer. A replica that stores an entry
indexes it at once, and deletes (purges) what its scope's bound pushes out; every other
replica sees both through its watch (and drops the same oldest entries on its own).
Entries expire in NATS with their own TTL (per-message TTL), and each index forgets them
at the same time.

Redis here has no vector search, and NATS is already every replica's shared state: the
bucket needs no other server. The cache is an optimisation: when NATS fails, a lookup is
a miss and a store is skipped.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from core import replicas
from core.bucket_watch import BucketWatch
from core.periodic import Periodic
from ingress.cache.semantic_entry import BadEntry, decode_answer, decode_head, encode, entry_key
from ingress.cache.semantic_index import Match, SemanticIndex, Vector, one_blas_thread
from ingress.cache.store import CachedAnswer
from schemas.subjects import SEMANTIC_CACHE_BUCKET

log = logging.getLogger("aigw.ingress")

_NATS_ERRORS = (nats.errors.Error, OSError, asyncio.TimeoutError)
# A purge leaves a marker in the bucket; it goes after this long.
_MARKER_TTL = 60
_SWEEP_SECONDS = 10.0


def _nats_ttl(seconds: float) -> int:
    """NATS counts a message's TTL in whole seconds, at least one."""
    return max(1, math.ceil(seconds))


class SemanticStore:
    """The shared entries and this replica's index of them. ``max_age`` caps any entry's
    life in the bucket (the longest TTL a request may ask for)."""

    def __init__(self, nc: Client, bound: int, max_age: float,
                 bucket: str = SEMANTIC_CACHE_BUCKET) -> None:
        self._nc = nc
        self._js = nc.jetstream()
        self._bucket = bucket
        self._max_age = max_age
        self.index = SemanticIndex(bound)
        self._kv: KeyValue | None = None
        self._watch: BucketWatch | None = None
        self._sweep = Periodic(self._drop_expired, _SWEEP_SECONDS, "semantic cache sweep")
        self._saving: set[asyncio.Task[None]] = set()

    async def start(self, timeout: float = 10.0) -> None:
        """Open (or create) the bucket; return once the index holds every entry."""
        one_blas_thread()
        try:
            self._kv = await self._js.key_value(self._bucket)
        except nats.js.errors.BucketNotFoundError:
            self._kv = await self._js.create_key_value(
                bucket=self._bucket, history=1, ttl=self._max_age,
                replicas=replicas.wanted(),
                description="ai-gateway semantic cache (vectors and answers)")
        self._watch = BucketWatch(self._nc, self._kv, self._bucket, self._apply)
        await self._watch.start(timeout)
        self._sweep.start()

    async def drain(self) -> None:
        """Wait for the stores in flight."""
        if self._saving:
            await asyncio.gather(*self._saving, return_exceptions=True)

    async def stop(self) -> None:
        await self._sweep.stop()
        await self.drain()
        if self._watch is not None:
            await self._watch.stop()

    async def _drop_expired(self) -> None:
        self.index.drop_expired(time.time())

    def _apply(self, key: str, value: bytes | None, revision: int, op: str | None) -> None:
        if op in (KV_DEL, KV_PURGE) or not value:
            self.index.remove(key)
            return
        try:
            head = decode_head(key, value)
        except BadEntry as exc:
            log.debug("semantic cache: skipping %s", exc)
            return
        if head.expires_at > time.time():
            self.index.add(head.scope, key, head.vector, head.expires_at)

    def nearest(self, scope: str, vector: Vector) -> Match | None:
        return self.index.nearest(scope, vector, time.time())

    async def answer(self, key: str) -> CachedAnswer | None:
        """The answer stored under ``key``; None when it is gone or unreadable."""
        if self._kv is None:
            return None
        try:
            entry = await self._kv.get(key)
        except nats.js.errors.KeyNotFoundError:
            self.index.remove(key)
            return None
        except _NATS_ERRORS as exc:
            log.warning("semantic cache: reading %s failed (%s)", key, exc)
            return None
        if not entry.value:
            return None
        try:
            return decode_answer(key, entry.value)
        except BadEntry as exc:
            log.debug("semantic cache: %s", exc)
            return None

    def save(self, scope: str, text: str, vector: Vector, answer: CachedAnswer,
             ttl: float) -> None:
        """Store in the background (the client need not wait)."""
        task = asyncio.create_task(self._save(scope, text, vector, answer, ttl))
        self._saving.add(task)
        task.add_done_callback(self._saving.discard)

    async def _save(self, scope: str, text: str, vector: Vector, answer: CachedAnswer,
                    ttl: float) -> None:
        if self._kv is None:
            return
        ttl = min(ttl, self._max_age)
        key = entry_key(scope, text)
        expires_at = time.time() + ttl
        # Known before the write: this replica's own watch may index the entry first.
        dropped = self.index.overflow(scope, key)
        try:
            # First writer wins: the same prompt stored twice keeps the first answer.
            await self._kv.create(key, encode(vector, expires_at, answer),
                                  msg_ttl=_nats_ttl(ttl))
        except nats.js.errors.KeyWrongLastSequenceError:
            return
        except _NATS_ERRORS as exc:
            log.warning("semantic cache: storing %s failed (%s)", key, exc)
            return
        dropped += self.index.add(scope, key, vector, expires_at)
        for old in dict.fromkeys(dropped):
            try:
                await self._kv.purge(old, msg_ttl=_MARKER_TTL)
            except _NATS_ERRORS as exc:
                log.debug("semantic cache: purging %s failed (%s)", old, exc)
