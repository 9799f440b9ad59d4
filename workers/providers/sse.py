"""Reading server-sent events from an upstream response."""

from __future__ import annotations

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
