"""A lean HTTP/1.1 load client: a fixed number of POSTs over a few keep-alive connections.

Raw ``asyncio.Protocol`` connections parsed by httptools, so the client costs a small
fraction of what the server under test spends per call and leaves the cores to it.
Every answer is checked (status 200 and a caller-given test of the body): a server that
answers cheaply but wrongly must not pass for a fast one.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import cast

import httptools

BodyCheck = Callable[[bytes], bool]


class CallError(RuntimeError):
    """An answer was not a 200 or failed its check, or the connection broke."""


@dataclass(frozen=True)
class Post:
    """One request, encoded once and sent as many times as asked."""

    raw: bytes
    check: BodyCheck

    @classmethod
    def json(
        cls, host: str, port: int, path: str, body: object, headers: Mapping[str, str],
        check: BodyCheck,
    ) -> Post:
        payload = json.dumps(body, separators=(",", ":")).encode()
        lines = [f"POST {path} HTTP/1.1", f"host: {host}:{port}",
                 "content-type: application/json", f"content-length: {len(payload)}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        return cls(("\r\n".join(lines) + "\r\n\r\n").encode() + payload, check)


class _Connection(asyncio.Protocol):
    """One keep-alive connection with at most one call in flight."""

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._body: list[bytes] = []
        self._answer: asyncio.Future[tuple[int, bytes]] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(CallError(f"malformed answer: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._fail(CallError(f"connection lost: {exc}"))

    def on_message_begin(self) -> None:
        self._body = []

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_result((self._parser.get_status_code(), b"".join(self._body)))

    def _fail(self, error: CallError) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(error)

    async def call(self, post: Post) -> None:
        if self._transport is None:
            raise CallError("connection closed")
        self._answer = asyncio.get_running_loop().create_future()
        self._transport.write(post.raw)
        status, body = await self._answer
        if status != 200 or not post.check(body):
            raise CallError(f"HTTP {status}: {body[:300]!r}")

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


async def run_calls(host: str, port: int, post: Post, calls: int, concurrency: int) -> None:
    """Send ``post`` ``calls`` times, ``concurrency`` at a time, each connection sending its
    next call as soon as its answer has fully arrived. Raises :class:`CallError` at the
    first wrong answer."""
    loop = asyncio.get_running_loop()
    connections = [
        (await loop.create_connection(_Connection, host, port))[1] for _ in range(concurrency)
    ]
    left = calls

    async def drive(connection: _Connection) -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await connection.call(post)

    try:
        await asyncio.gather(*(drive(c) for c in connections))
    finally:
        for connection in connections:
            connection.close()
