"""A background task that runs a check every few seconds until stopped."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("aigw.periodic")


class Periodic:
    """Runs ``check`` now and then every ``every`` seconds; a failure is logged at debug
    and the next tick tries again."""

    def __init__(self, check: Callable[[], Awaitable[object]], every: float, what: str) -> None:
        self._check = check
        self._every = every
        self._what = what
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                await self._check()
            except Exception as exc:
                log.debug("%s failed: %s", self._what, exc)
            await asyncio.sleep(self._every)
