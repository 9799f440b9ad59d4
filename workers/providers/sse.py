"""Reading server-sent events from an upstream response."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx


@dataclass(frozen=True, slots=True)
class ServerEvent:
    event: str | None
    data: str


async def read_events(response: httpx.Response) -> AsyncIterator[ServerEvent]:
    """Yield each event of an SSE body; multi-line ``data`` fields are joined with newlines."""
    event: str | None = None
    data: list[str] = []
    async for line in response.aiter_lines():
        if not line:
            if data:
                yield ServerEvent(event, "\n".join(data))
            event, data = None, []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field == "data":
            data.append(value)
        elif field == "event":
            event = value
    if data:
        yield ServerEvent(event, "\n".join(data))


# The end of a body follows its last event at once; an upstream that keeps the connection
# busy past that is not worth waiting for (the connection is closed instead).
DRAIN_SECONDS = 1.0


async def drain(events: AsyncIterator[object], within: float = DRAIN_SECONDS) -> None:
    """Read what is left of a stream after its final event (as a rule only the chunked
    body's terminator). httpcore hands a connection to the next call only once its
    response was read to the end and closes it otherwise, which would cost every streamed
    call a new TCP connection, and with a real provider a TLS handshake."""
    # Timed out, reset, or closed without the chunked terminator: the connection is closed
    # instead of reused, and the call, already whole, stands.
    with contextlib.suppress(Exception):
        async with asyncio.timeout(within):
            async for _ in events:
                pass
