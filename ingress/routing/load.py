"""How busy, how fast and how used each deployment is: what the routing strategies read.

Each replica counts its own attempts in memory (in-flight, moving averages of time to
first token and total latency, requests and tokens this minute). With Redis, a background
loop every ``sync_interval`` writes this replica's numbers into one small hash per
deployment (``aigw:load:<deployment>``, one field per replica) and reads the other
replicas' fields back, in one pipelined round trip. Plans read memory only: the others'
numbers are at most one interval old, which is plenty for spreading load, and the admission
layer stays the authority on hard limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger("aigw.load")

Clock = Callable[[], float]

# Weight of a new sample in the moving averages: about the last ten calls count.
EWMA_ALPHA = 0.2
# A replica whose numbers are older than this has stopped or lost Redis: ignore them.
STALE_SECONDS = 5.0
KEY_PREFIX = "aigw:load:"


@dataclass(frozen=True, slots=True)
class Load:
    """One deployment's numbers, summed (or averaged) over every replica."""

    in_flight: int = 0
    ttft_ms: float | None = None
    latency_ms: float | None = None
    requests_this_minute: int = 0
    tokens_this_minute: int = 0


IDLE = Load()


def _ewma(old: float | None, sample: float) -> float:
    return sample if old is None else old + EWMA_ALPHA * (sample - old)


class _Counters:
    __slots__ = ("in_flight", "latency_ms", "minute", "requests", "samples", "tokens", "ttft_ms")

    def __init__(self) -> None:
        self.in_flight = 0
        self.ttft_ms: float | None = None
        self.latency_ms: float | None = None
        self.samples = 0
        self.minute = 0
        self.requests = 0
        self.tokens = 0

    def roll(self, minute: int) -> None:
        if minute != self.minute:
            self.minute, self.requests, self.tokens = minute, 0, 0

    def to_json(self) -> str:
        return json.dumps({
            "in_flight": self.in_flight, "ttft_ms": self.ttft_ms,
            "latency_ms": self.latency_ms, "samples": self.samples,
            "minute": self.minute, "requests": self.requests, "tokens": self.tokens,
        })


def merge(own: _Counters | None, others: Iterable[dict[str, object]], minute: int) -> Load:
    """One deployment's :class:`Load` from this replica's counters and the others'
    published numbers (latencies weighted by each replica's sample count)."""
    parts: list[dict[str, object]] = list(others)
    if own is not None:
        own.roll(minute)
        parts.append(json.loads(own.to_json()))
    in_flight = requests = tokens = 0
    weights = {"ttft_ms": 0.0, "latency_ms": 0.0}
    sums = {"ttft_ms": 0.0, "latency_ms": 0.0}
    for part in parts:
        in_flight += int(part.get("in_flight") or 0)  # type: ignore[call-overload]
        if part.get("minute") == minute:
            requests += int(part.get("requests") or 0)  # type: ignore[call-overload]
            tokens += int(part.get("tokens") or 0)  # type: ignore[call-overload]
        samples = float(part.get("samples") or 0)  # type: ignore[arg-type]
        for name in sums:
            value = part.get(name)
            if isinstance(value, int | float) and samples:
                # Cap a replica's weight: a busy replica's old average should not drown
                # a quiet replica's fresh view.
                weight = min(samples, 50.0)
                sums[name] += value * weight
                weights[name] += weight
    return Load(
        in_flight=in_flight,
        ttft_ms=sums["ttft_ms"] / weights["ttft_ms"] if weights["ttft_ms"] else None,
        latency_ms=sums["latency_ms"] / weights["latency_ms"] if weights["latency_ms"] else None,
        requests_this_minute=requests,
        tokens_this_minute=tokens,
    )


class LoadTracker:
    def __init__(
        self,
        redis: aioredis.Redis | None = None,
        *,
        sync_interval: float = 0.25,
        clock: Clock = time.time,
    ) -> None:
        self._redis = redis
        self._interval = sync_interval
        self._clock = clock
        self.replica = uuid.uuid4().hex[:12]
        self._own: dict[str, _Counters] = {}
        self._others: dict[str, list[dict[str, object]]] = {}
        self._merged: dict[str, Load] = {}
        self._dirty = True
        self._task: asyncio.Task[None] | None = None

    # ---- the hot path: memory only -----------------------------------------------------

    def _counters(self, deployment_id: str) -> _Counters:
        counters = self._own.get(deployment_id)
        if counters is None:
            counters = self._own[deployment_id] = _Counters()
        counters.roll(int(self._clock() // 60))
        return counters

    def started(self, deployment_id: str) -> None:
        counters = self._counters(deployment_id)
        counters.in_flight += 1
        counters.requests += 1
        self._dirty = True

    def finished(
        self, deployment_id: str, *, latency_ms: float | None = None,
        ttft_ms: float | None = None, tokens: int = 0,
    ) -> None:
        counters = self._counters(deployment_id)
        counters.in_flight = max(0, counters.in_flight - 1)
        counters.tokens += tokens
        if latency_ms is not None:
            counters.latency_ms = _ewma(counters.latency_ms, latency_ms)
            counters.samples += 1
        if ttft_ms is not None:
            counters.ttft_ms = _ewma(counters.ttft_ms, ttft_ms)
        self._dirty = True

    def load(self, deployment_id: str) -> Load:
        if self._dirty:
            self._merged.clear()
            self._dirty = False
        merged = self._merged.get(deployment_id)
        if merged is None:
            merged = merge(self._own.get(deployment_id), self._others.get(deployment_id, ()),
                           int(self._clock() // 60))
            self._merged[deployment_id] = merged
        return merged

    # ---- sharing through Redis ---------------------------------------------------------

    def start(self, deployment_ids: Iterable[str]) -> None:
        if self._redis is not None:
            self._task = asyncio.create_task(self._sync_loop(list(deployment_ids)))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _sync_loop(self, deployment_ids: list[str]) -> None:
        failing = False
        while True:
            try:
                await self.sync(deployment_ids)
                failing = False
            except (RedisError, OSError, ValueError) as exc:
                if not failing:  # once per outage, not four times a second
                    log.warning("deployment load not shared through Redis: %s", exc)
                failing = True
            await asyncio.sleep(self._interval)

    async def sync(self, deployment_ids: list[str]) -> None:
        """Publish this replica's counters and read everyone else's: one round trip."""
        assert self._redis is not None
        now = self._clock()
        minute = int(now // 60)
        pipe = self._redis.pipeline(transaction=False)
        # Counters may be created while the pipeline runs: count the writes now.
        writes = len(self._own)
        for deployment_id, counters in list(self._own.items()):
            counters.roll(minute)
            body = json.loads(counters.to_json())
            body["at"] = now
            key = KEY_PREFIX + deployment_id
            pipe.hset(key, self.replica, json.dumps(body))
            pipe.expire(key, 120)
        for deployment_id in deployment_ids:
            pipe.hgetall(KEY_PREFIX + deployment_id)
        results = await pipe.execute()
        fetched = results[2 * writes:]
        others: dict[str, list[dict[str, object]]] = {}
        for deployment_id, fields in zip(deployment_ids, fetched, strict=True):
            for replica, raw in (fields or {}).items():
                name = replica.decode() if isinstance(replica, bytes) else replica
                if name == self.replica:
                    continue
                try:
                    part = json.loads(raw)
                except ValueError:
                    continue
                if now - float(part.get("at") or 0) <= STALE_SECONDS:
                    others.setdefault(deployment_id, []).append(part)
        self._others = others
        self._dirty = True
