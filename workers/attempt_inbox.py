"""The worker's subscription to attempts: a plain nats-py queue subscription.

FastStream's concurrent subscriber (``max_workers``) passes each message through an anyio
memory stream, a task group, a semaphore, its middlewares and its decoder: about a sixth of
the worker's CPU per call in a py-spy profile under load, for attempts whose handler runs
each one in a task of its own anyway. :class:`AttemptInbox` takes attempts straight from
nats-py, at most ``slots`` at once (a full inbox stops reading, as FastStream's did), and
on stop unsubscribes first, then lets running attempts finish until the deadline. The
worker's other subjects (cancel, ping) stay FastStream subscribers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription


class AttemptInbox:
    def __init__(self, handle: Callable[[Msg], Coroutine[Any, Any, None]], slots: int) -> None:
        self._handle = handle
        self._slots = asyncio.Semaphore(slots)
        self._running: set[asyncio.Task[None]] = set()
        self._subscription: Subscription | None = None

    @property
    def running(self) -> int:
        return len(self._running)

    async def start(self, nc: Client, subject: str, queue: str) -> None:
        self._subscription = await nc.subscribe(subject, queue=queue, cb=self._on_message)

    async def _on_message(self, msg: Msg) -> None:
        await self._slots.acquire()  # all slots busy: stop reading, as FastStream did
        task = asyncio.create_task(self._handle(msg))
        self._running.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._slots.release()

    async def stop(self, deadline: float) -> None:
        """Take no more attempts; wait for the running ones until ``deadline`` (the loop's
        clock), then cancel what is left."""
        if self._subscription is not None:
            subscription, self._subscription = self._subscription, None
            # A connection already gone sends nothing more either.
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
        loop = asyncio.get_running_loop()
        if self._running:
            await asyncio.wait(set(self._running), timeout=max(0.0, deadline - loop.time()))
        for task in list(self._running):
            task.cancel()
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
