"""The HTTP transport every adapter of a worker shares: httpx's API on aiohttp's client.

Adapters speak httpx (``httpx.AsyncClient``, ``httpx.Response``, httpx's exceptions). Under
that client, httpcore with h11 and anyio cost most of a worker's CPU per call: parsing a
response in Python, a cancel scope per socket operation, and a connection pool whose hand-out
does work proportional to the calls waiting on it. aiohttp parses HTTP/1.1 in C and hands
out pooled connections in constant time. Measured against bench/upstream.py at 32
concurrent calls (bench/overhead.py, worker CPU per call): httpcore over eight pools
1.6-2.2 ms non-streamed and 3.1-3.6 ms streamed; aiohttp 1.3-1.5 and 2.2 ms.

The transport maps aiohttp's failures onto httpx's exception tree, as httpcore would raise
them: a refused or reset connection is a ``ConnectError`` or a ``ReadError``, never a
timeout; only a timeout is a ``TimeoutException``. (The ``httpx-aiohttp`` package maps a
refused connection and a server that hung up to ``ConnectTimeout``, which would turn a dead
upstream into a timeout for failover and for the client.) A response body not read to its
end when closed closes its connection, as httpcore does; one read to the end goes back to
the pool. While tracing, each request is wrapped in a CLIENT span (``workers.spans``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator

import aiohttp
import httpx

from core.telemetry import tracing
from workers import spans

# httpcore's default: an idle pooled connection older than this is closed, not reused.
KEEPALIVE_SECONDS = 5.0
# h11's bound on a response's status line and headers.
MAX_HEADER_BYTES = 16 * 1024


@contextlib.contextmanager
def _as_httpx(reading: bool) -> Iterator[None]:
    """Re-raise aiohttp's exceptions as the httpx exceptions httpcore raises for them."""
    try:
        yield
    except aiohttp.ConnectionTimeoutError as exc:  # waiting for a pooled slot or a connect
        raise httpx.ConnectTimeout(str(exc) or "connect timed out") from exc
    except (aiohttp.ServerTimeoutError, TimeoutError) as exc:
        raise httpx.ReadTimeout(str(exc) or "read timed out") from exc
    except aiohttp.ClientConnectorError as exc:  # refused, DNS, TLS handshake
        raise httpx.ConnectError(str(exc)) from exc
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientResponseError) as exc:
        # Closed before a whole response, or one that is not HTTP.
        raise httpx.RemoteProtocolError(str(exc) or "server disconnected") from exc
    except aiohttp.ClientPayloadError as exc:  # a body cut short
        raise httpx.RemoteProtocolError(str(exc) or "incomplete body") from exc
    except (aiohttp.ClientOSError, aiohttp.ClientConnectionError) as exc:
        error = httpx.ReadError if reading else httpx.WriteError
        raise error(str(exc) or type(exc).__name__) from exc
    except (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError) as exc:
        raise httpx.UnsupportedProtocol(str(exc)) from exc
    except aiohttp.ClientError as exc:
        raise httpx.TransportError(str(exc) or type(exc).__name__) from exc


class _Body(httpx.AsyncByteStream):
    """A response body as aiohttp receives it."""

    __slots__ = ("_response",)

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        content = self._response.content
        with _as_httpx(reading=True):
            # Whatever has arrived, as it arrives: an event stream must not wait for more.
            while piece := await content.readany():
                yield piece

    async def aclose(self) -> None:
        # Read to the end: the connection is back in the pool already. Otherwise aiohttp
        # closes it, since what is left of the body would come first on it.
        self._response.release()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """Send httpx requests with one aiohttp session (created on first use, inside the
    worker's event loop)."""

    def __init__(self, max_connections: int = 1000) -> None:
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        # httpx verifies TLS with certifi's roots (or SSL_CERT_FILE); so does this transport.
        self._ssl = httpx.create_ssl_context()
        self._timeouts: dict[tuple[float | None, ...], aiohttp.ClientTimeout] = {}
        self._untraced = _Untraced(self)

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self._max_connections, limit_per_host=0,
            keepalive_timeout=KEEPALIVE_SECONDS, ssl=self._ssl,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            # httpx holds the cookies, and its Request already carries every header.
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            auto_decompress=False,  # httpx decodes Content-Encoding itself
            timeout=aiohttp.ClientTimeout(),
            max_line_size=MAX_HEADER_BYTES, max_field_size=MAX_HEADER_BYTES,
        )
        return self._session

    def _timeout(self, request: httpx.Request) -> aiohttp.ClientTimeout:
        """httpx's four timeouts as aiohttp's: ``pool`` and ``connect`` bound getting a
        connection, ``read`` each wait for data. There is no overall deadline in either."""
        given = request.extensions.get("timeout") or {}
        key = (given.get("connect"), given.get("read"), given.get("pool"))
        timeout = self._timeouts.get(key)
        if timeout is None:
            connect, read, pool = key
            waiting = None if pool is None or connect is None else pool + connect
            timeout = self._timeouts[key] = aiohttp.ClientTimeout(
                total=None, connect=waiting, sock_connect=connect, sock_read=read,
            )
        return timeout

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if tracing.enabled:
            return await spans.send(self._untraced, request)
        return await self._send(request)

    async def _send(self, request: httpx.Request) -> httpx.Response:
        session = self._session or self._open()
        body: bytes | AsyncIterator[bytes]
        headers = request.headers
        try:
            body = request.content
        except httpx.RequestNotRead:  # a streamed upload (multipart files)
            body = _upload(request.stream)
            if "transfer-encoding" in headers:
                headers = headers.copy()
                del headers["transfer-encoding"]  # aiohttp chunks it itself
        with _as_httpx(reading=False):
            response = await session.request(
                request.method,
                str(request.url),
                headers=headers.multi_items(),
                data=body or None,
                allow_redirects=False,
                timeout=self._timeout(request),
                server_hostname=request.extensions.get("sni_hostname"),
            )
        extensions = {"http_version": b"HTTP/1.1"}
        if response.reason:
            extensions["reason_phrase"] = response.reason.encode("ascii", "replace")
        stream: httpx.AsyncByteStream
        if response.content.is_eof():
            # The whole body came with the headers (a completion as a rule): taken at
            # once, and its connection is back in the pool before the adapter reads it.
            with _as_httpx(reading=True):
                stream = httpx.ByteStream(response.content.read_nowait())
            response.release()
        else:
            stream = _Body(response)
        return httpx.Response(
            response.status, headers=response.raw_headers, stream=stream,
            extensions=extensions,
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class _Untraced(httpx.AsyncBaseTransport):
    """The transport as ``spans.send`` calls it, inside the span it opened."""

    __slots__ = ("_transport",)

    def __init__(self, transport: AiohttpTransport) -> None:
        self._transport = transport

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self._transport._send(request)


async def _upload(stream: httpx.SyncByteStream | httpx.AsyncByteStream) -> AsyncIterator[bytes]:
    if isinstance(stream, httpx.AsyncByteStream):
        async for piece in stream:
            yield piece
    else:
        for piece in stream:
            yield piece


class _Cookies(httpx.Cookies):
    """httpx runs every response through urllib's cookie machinery, a tenth of a
    completion's CPU in a worker; this jar does so only for a response that sets one."""

    def extract_cookies(self, response: httpx.Response) -> None:
        if "set-cookie" in response.headers:
            super().extract_cookies(response)


def upstream_client(max_connections: int = 1000) -> httpx.AsyncClient:
    client = httpx.AsyncClient(
        transport=AiohttpTransport(max_connections),
        timeout=httpx.Timeout(600.0, connect=10.0),
    )
    # No public way in: the ``cookies`` setter copies what it is given into a plain jar.
    client._cookies = _Cookies()
    return client
