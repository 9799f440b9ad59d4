"""Waiting, within a timeout, for what the health probe tests expect to happen."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def _until(check: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)
