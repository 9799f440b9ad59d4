"""A small HTTP server for processes without one of their own (workers, accounting):
``/metrics``, ``/health/liveliness`` and ``/health/readiness`` on ``AIGW_METRICS_PORT``."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE_LATEST
from prometheus_client import REGISTRY, generate_latest

log = logging.getLogger("aigw.metrics")

METRICS_PATH = "/metrics"
LIVELINESS_PATH = "/health/liveliness"
READINESS_PATH = "/health/readiness"
ROUTES = (METRICS_PATH, LIVELINESS_PATH, READINESS_PATH)
_MAX_HEAD = 16 * 1024


def metrics_body() -> bytes:
    return generate_latest(REGISTRY)


def authorized(header: str | None, key: str | None) -> bool:
    """``AIGW_METRICS_KEY`` set: the scrape must send it as a bearer token."""
    if not key:
        return True
    if not header or not header.lower().startswith("bearer "):
        return False
    return hmac.compare_digest(header[7:].strip().encode(), key.encode())


class MetricsServer:
    def __init__(self, port: int, host: str = "0.0.0.0", *,
                 ready: Callable[[], bool] = lambda: True, key: str | None = None) -> None:
        self.host = host
        self.port = port
        self._ready = ready
        self._key = key
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("metrics and health on http://%s:%d%s", self.host, self.port, METRICS_PATH)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10.0)
            status, ctype, body = self._answer(head[:_MAX_HEAD])
            writer.write(
                f"HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode() + body)
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError,
                ConnectionError):
            pass
        finally:
            writer.close()

    def _answer(self, head: bytes) -> tuple[str, str, bytes]:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or parts[0] not in ("GET", "HEAD"):
            return "405 Method Not Allowed", "text/plain", b"method not allowed\n"
        path = parts[1].split("?", 1)[0]
        if path == METRICS_PATH:
            auth = next((line.split(":", 1)[1].strip() for line in lines[1:]
                         if line.lower().startswith("authorization:")), None)
            if not authorized(auth, self._key):
                return "401 Unauthorized", "text/plain", b"metrics need the bearer key\n"
            return "200 OK", CONTENT_TYPE_LATEST, metrics_body()
        if path == LIVELINESS_PATH:
            return "200 OK", "application/json", b'{"status":"ok"}'
        if path == READINESS_PATH:
            if self._ready():
                return "200 OK", "application/json", b'{"status":"ready"}'
            return "503 Service Unavailable", "application/json", b'{"status":"not ready"}'
        return "404 Not Found", "text/plain", b"not found\n"
