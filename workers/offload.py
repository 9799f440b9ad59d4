"""CPU-heavy work of a worker run in a thread, so that its event loop never stalls, and
counted, so that a stopping worker knows whether a thread still holds it.

A thread cannot be cancelled: a worker told to stop while one still runs (a huge answer
being decoded after the drain ran out) would wait for it at exit, past its deadline. So
:func:`workers.app.run_worker` exits at once when :data:`running` is not zero, once its
usage events are published or spooled.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

# Jobs whose thread has not finished: an awaiting task that was cancelled leaves its
# thread running, so this counts in the thread, not in the task.
running = 0
_lock = threading.Lock()


def _counted(fn: Callable[..., T], *args: object) -> T:
    global running
    try:
        return fn(*args)
    finally:
        with _lock:
            running -= 1


async def off_loop(fn: Callable[..., T], *args: object) -> T:
    global running
    with _lock:
        running += 1
    try:
        future = asyncio.to_thread(_counted, fn, *args)
    except BaseException:
        with _lock:
            running -= 1
        raise
    return await future
