"""Abandoning an attempt whose client is gone (or whose answer is no longer wanted).

The worker is told to stop the upstream call, and the attempt's admission ticket is settled
with what the worker reports the call used; if it never says, with the whole reservation.
This runs in the background, so that a handler that is being torn down need not wait.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from decimal import Decimal
from typing import Protocol

from ingress.admission.gatekeeper import Ticket
from schemas.frames import DoneFrame, ErrorFrame, FrameKind

Settle = Callable[[Ticket, int, Decimal | None], None]

# How long a cancelled attempt's worker gets to report what the call used.
REPORT_SECONDS = 5.0
_background: set[asyncio.Task[None]] = set()


class _Frame(Protocol):
    @property
    def kind(self) -> FrameKind: ...
    def done(self) -> DoneFrame: ...
    def error(self) -> ErrorFrame: ...


class Abandonable(Protocol):
    async def signal_cancel(self) -> None: ...
    async def next_content(self, timeout: float) -> _Frame: ...
    def close(self) -> None: ...


def settle_frame(ticket: Ticket, settle: Settle, frame: _Frame) -> None:
    """Settle ``ticket`` with the usage in a done or error frame (other frames: nothing)."""
    if frame.kind is FrameKind.DONE:
        done = frame.done()
        settle(ticket, done.usage.total_tokens, done.cost)
    elif frame.kind is FrameKind.ERROR:
        failure = frame.error()
        settle(ticket, failure.usage.total_tokens if failure.usage else 0, failure.cost)


async def _await_report(reply: Abandonable, ticket: Ticket, settle: Settle) -> None:
    try:
        await reply.signal_cancel()
        frame = await reply.next_content(REPORT_SECONDS)
        settle_frame(ticket, settle, frame)
    except Exception:
        pass
    finally:
        reply.close()
        settle(ticket, 0, ticket.reserve_cost)  # a no-op once settled


def abandon(reply: Abandonable, ticket: Ticket, settle: Settle) -> None:
    """Tell the worker to stop, and settle when it reports (in the background)."""
    task = asyncio.create_task(_await_report(reply, ticket, settle))
    _background.add(task)
    task.add_done_callback(_background.discard)


async def drain() -> None:
    """Wait for reports still outstanding (at shutdown)."""
    if _background:
        with contextlib.suppress(Exception):
            await asyncio.gather(*_background, return_exceptions=True)
