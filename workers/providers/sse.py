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


class EventParser:
    """Server-sent events from a body's bytes, fed in pieces as they arrive.

    Lines end in CRLF, LF or CR, and a piece may end between the CR and the LF of one line
    break. Bytes are split into lines before anything is decoded, so a character cut in two
    by a piece boundary is whole again in its line."""

    __slots__ = ("_data", "_event", "_rest", "_skip_lf")

    def __init__(self) -> None:
        self._rest = b""  # the start of a line whose end has not arrived
        self._skip_lf = False  # the last piece ended in CR: an LF first is that break's
        self._event: str | None = None
        self._data: list[str] = []

    def feed(self, piece: bytes) -> list[ServerEvent]:
        """The events completed by ``piece``."""
        if not piece:
            return []
        if self._skip_lf:
            self._skip_lf = False
            if piece[0] == 10:
                piece = piece[1:]
        if self._rest:
            piece = self._rest + piece
            self._rest = b""
        if not piece:
            return []
        lines = piece.splitlines()
        last = piece[-1]
        if last == 13:
            self._skip_lf = True
        elif last != 10:
            self._rest = lines.pop()
        return self._lines(lines)

    def close(self) -> list[ServerEvent]:
        """At the end of the body: an event whose closing blank line never came."""
        events = self._lines([self._rest] if self._rest else [])
        self._rest = b""
        if self._data:
            events.append(ServerEvent(self._event, "\n".join(self._data)))
            self._event, self._data = None, []
        return events

    def _lines(self, lines: list[bytes]) -> list[ServerEvent]:
        events: list[ServerEvent] = []
        for line in lines:
            if not line:
                if self._data:
                    events.append(ServerEvent(self._event, "\n".join(self._data)))
                self._event, self._data = None, []
                continue
            if line.startswith(b"data:"):
                value = line[5:]
            else:
                field, _, value = line.partition(b":")
                if field == b"event":
                    if value[:1] == b" ":
                        value = value[1:]
                    self._event = value.decode("utf-8", "replace")
                if field != b"data":
                    continue  # a comment (no field name), id, retry or unknown field
            if value[:1] == b" ":
                value = value[1:]
            self._data.append(value.decode("utf-8", "replace"))
        return events


async def read_events(response: httpx.Response) -> AsyncIterator[ServerEvent]:
    """Yield each event of an SSE body; multi-line ``data`` fields are joined with newlines."""
    parser = EventParser()
    async for piece in response.aiter_bytes():
        for event in parser.feed(piece):
            yield event
    for event in parser.close():
        yield event


# The end of a body follows its last event at once; an upstream that keeps the connection
# busy past that is not worth waiting for (the connection is closed instead).
DRAIN_SECONDS = 1.0


async def drain(events: AsyncIterator[object], within: float = DRAIN_SECONDS) -> None:
    """Read what is left of a stream after its final event (as a rule only the chunked
    body's terminator). The client hands a connection to the next call only once its
    response was read to the end and closes it otherwise (workers.transport, as httpcore),
    which would cost every streamed call a new TCP connection, and with a real provider a
    TLS handshake."""
    # Timed out, reset, or closed without the chunked terminator: the connection is closed
    # instead of reused, and the call, already whole, stands.
    with contextlib.suppress(Exception):
        async with asyncio.timeout(within):
            async for _ in events:
                pass
