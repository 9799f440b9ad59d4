"""Following one NATS KV bucket into an in-memory mirror, through NATS restarts.

A KV watch is an ordered JetStream consumer held in the server's memory. When the server
restarts, the client reconnects and re-subscribes, but the consumer behind the
subscription is gone; nats-py notices only after two missed idle heartbeats (ten
seconds) and then resumes it in the background. For a mirror of keys, ten seconds of
missed revokes is too long, so :class:`BucketWatch` watches again as soon as the
connection is back. The new watch delivers the latest entry of every key again; the
mirror's ``apply`` orders entries by revision, so the ones it already holds change
nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import nats.errors
from nats.aio.client import Client
from nats.js.kv import KeyValue

log = logging.getLogger("aigw.kv")

# key, value, revision, operation (``KV_DEL``, ``KV_PURGE`` or None)
Apply = Callable[[str, bytes | None, int, str | None], None]

_NATS_ERRORS = (nats.errors.Error, OSError, asyncio.TimeoutError)
_RETRY_MAX = 2.0


class BucketWatch:
    def __init__(
        self, nc: Client, kv: KeyValue, name: str, apply: Apply, *, poll: float = 0.25
    ) -> None:
        self._nc = nc
        self._kv = kv
        self.name = name
        self._apply = apply
        self._poll = poll
        self._task: asyncio.Task[None] | None = None
        # How often the bucket was watched again after a reconnect (logs, tests).
        self.rewatches = 0

    async def start(self, timeout: float = 10.0) -> None:
        """Watch the bucket; return once every entry that exists now has been applied."""
        watcher = await self._kv.watchall()
        synced = asyncio.Event()
        self._task = asyncio.create_task(self._run(watcher, synced))
        await asyncio.wait_for(synced.wait(), timeout)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    @property
    def following(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _run(self, watcher: KeyValue.KeyWatcher, synced: asyncio.Event) -> None:
        while True:
            reconnects = self._nc.stats["reconnects"]
            reader = asyncio.create_task(self._read(watcher, synced))
            try:
                while not reader.done() and self._nc.stats["reconnects"] == reconnects:
                    await asyncio.sleep(self._poll)
            finally:
                reader.cancel()
                with contextlib.suppress(*_NATS_ERRORS):
                    await watcher.stop()  # type: ignore[no-untyped-call]
                await asyncio.gather(reader, return_exceptions=True)
            if not reader.cancelled() and (exc := reader.exception()) is not None:
                log.error("watch of %s failed: %r; watching again", self.name, exc)
            watcher = await self._watch_again()

    async def _read(self, watcher: KeyValue.KeyWatcher, synced: asyncio.Event) -> None:
        async for entry in watcher:
            if entry is None:  # everything that existed when the watch began is applied
                synced.set()
                continue
            self._apply(entry.key, entry.value, entry.revision or 0, entry.operation)
            if entry.delta == 0:
                synced.set()

    async def _watch_again(self) -> KeyValue.KeyWatcher:
        delay = 0.1
        failures = 0
        while True:
            if self._nc.is_connected:
                try:
                    watcher = await self._kv.watchall()
                except _NATS_ERRORS as exc:
                    # JetStream may still be recovering its streams after a restart.
                    failures += 1
                    level = logging.WARNING if failures == 5 else logging.DEBUG
                    log.log(level, "watching %s again failed (%r); retrying",
                            self.name, exc)
                else:
                    self.rewatches += 1
                    log.info("watching %s again after a reconnect", self.name)
                    return watcher
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RETRY_MAX)
