"""The worker's upstream client (httpx over aiohttp) behaves as httpx's own does for the
adapters: the same answers and streams, failures of the same kinds, connections reused
after a whole answer and closed after an abandoned one."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from schemas.config import Deployment
from schemas.errors import ErrorKind
from schemas.usage import TokenUsage
from tests.fakes import openai_server
from tests.fakes.server import serve
from workers.providers import create_provider
from workers.providers.base import UpstreamCall, UpstreamError
from workers.transport import upstream_client

Asgi = Callable[..., Any]
CLIENTS: dict[str, Callable[[], httpx.AsyncClient]] = {
    "httpx": httpx.AsyncClient,
    "worker": upstream_client,
}


@pytest.fixture(params=sorted(CLIENTS))
async def client(request: pytest.FixtureRequest) -> AsyncIterator[httpx.AsyncClient]:
    async with CLIENTS[request.param]() as made:
        yield made


class ClientPorts:
    """ASGI middleware noting the client port of every HTTP request."""

    def __init__(self, app: Asgi) -> None:
        self.app = app
        self.ports: list[int] = []

    async def __call__(self, scope: dict[str, Any], receive: Asgi, send: Asgi) -> None:
        if scope["type"] == "http" and scope.get("client"):
            self.ports.append(scope["client"][1])
        await self.app(scope, receive, send)


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[ClientPorts, openai_server.FakeOpenAIState, str]]:
    state = openai_server.FakeOpenAIState()
    state.slow_seconds = 5
    app = ClientPorts(openai_server.create_app(state))
    with serve(app) as url:
        yield app, state, url


def deployment(base: str, timeout: float = 10) -> Deployment:
    return Deployment(id="openai#1", model_name="m", provider="openai",
                      upstream_model="gpt-4o-mini", api_key=SecretStr("sk-fake"),
                      api_base=base, timeout=timeout)


def call_for(target: Deployment, model: str = "gpt-4o-mini", text: str = "hello") -> UpstreamCall:
    return UpstreamCall(deployment=target, request_id="r", body={
        "model": model, "messages": [{"role": "user", "content": text}]})


async def test_answers_and_streams_arrive_whole(
    client: httpx.AsyncClient, upstream: tuple[ClientPorts, Any, str],
) -> None:
    provider = create_provider("openai", client)
    target = deployment(upstream[2] + "/v1")
    answer = await provider.complete(call_for(target, text="one two three"))
    assert answer.response["choices"][0]["message"]["content"]
    assert answer.usage.completion_tokens > 0
    items = [item async for item in provider.stream(call_for(target, text="one two three"))]
    usage = items[-1]
    assert isinstance(usage, TokenUsage)
    assert usage.completion_tokens == answer.usage.completion_tokens
    text = "".join(item["choices"][0]["delta"].get("content") or ""
                   for item in items[:-1] if isinstance(item, dict) and item["choices"])
    assert text == answer.response["choices"][0]["message"]["content"]


async def test_finished_calls_hand_their_connection_to_the_next(
    client: httpx.AsyncClient, upstream: tuple[ClientPorts, Any, str],
) -> None:
    app, _, url = upstream
    provider = create_provider("openai", client)
    target = deployment(url + "/v1")
    before = len(app.ports)
    for i in range(4):
        if i % 2:
            assert [item async for item in provider.stream(call_for(target, text=f"s{i}"))]
        else:
            assert (await provider.complete(call_for(target, text=f"c{i}"))).response
    ports = app.ports[before:]
    assert len(ports) == 4
    assert len(set(ports)) == 1, f"a new connection per call: ports {ports}"


async def test_a_stream_left_midway_closes_its_connection_and_the_next_call_works(
    client: httpx.AsyncClient, upstream: tuple[ClientPorts, Any, str],
) -> None:
    app, state, url = upstream
    provider = create_provider("openai", client)
    target = deployment(url + "/v1")
    cancelled = state.cancelled
    stream = provider.stream(call_for(target, model="slow-stream"))
    assert isinstance(await anext(stream), dict)
    await stream.aclose()  # type: ignore[attr-defined]
    for _ in range(100):  # the upstream notices its client gone
        if state.cancelled > cancelled:
            break
        await asyncio.sleep(0.02)
    assert state.cancelled == cancelled + 1
    before = len(app.ports)
    assert (await provider.complete(call_for(target, text="after"))).response
    assert app.ports[-1] != app.ports[before - 1], "the abandoned connection was reused"


async def test_a_cancelled_call_leaves_the_client_usable(
    client: httpx.AsyncClient, upstream: tuple[ClientPorts, Any, str],
) -> None:
    provider = create_provider("openai", client)
    target = deployment(upstream[2] + "/v1")
    task = asyncio.create_task(provider.complete(call_for(target, model="slow")))
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (await provider.complete(call_for(target, text="after"))).response


async def test_a_stream_that_breaks_off_is_an_upstream_error(
    client: httpx.AsyncClient, upstream: tuple[ClientPorts, Any, str],
) -> None:
    provider = create_provider("openai", client)
    target = deployment(upstream[2] + "/v1")
    with pytest.raises(UpstreamError) as caught:
        async for _ in provider.stream(call_for(target, model="fail-midstream",
                                                text="a b c d e f")):
            pass
    assert caught.value.info.kind in (ErrorKind.CONNECTION, ErrorKind.SERVER)


async def test_a_refused_connection_is_a_connection_error_not_a_timeout(
    client: httpx.AsyncClient,
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: refused
        provider = create_provider("openai", client)
        with pytest.raises(UpstreamError) as caught:
            await provider.complete(call_for(deployment(f"http://127.0.0.1:{port}/v1")))
    assert caught.value.info.kind is ErrorKind.CONNECTION


@pytest.mark.parametrize("stage", ["headers", "body"])
async def test_an_upstream_that_goes_quiet_is_a_timeout(
    client: httpx.AsyncClient, stage: str,
) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        if stage == "body":
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                         b"transfer-encoding: chunked\r\n\r\n")
            await writer.drain()
        with contextlib.suppress(Exception):
            await reader.read()  # until the client gives up

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    provider = create_provider("openai", client)
    target = deployment(f"http://127.0.0.1:{port}/v1", timeout=0.3)
    try:
        with pytest.raises(UpstreamError) as caught:
            async for _ in provider.stream(call_for(target)):
                pass
    finally:
        server.close()
        await server.wait_closed()
    assert caught.value.info.kind is ErrorKind.TIMEOUT


async def test_a_multipart_upload_reaches_the_upstream_whole(client: httpx.AsyncClient) -> None:
    seen: dict[str, Any] = {}

    async def echo(scope: dict[str, Any], receive: Asgi, send: Asgi) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        seen["headers"] = dict(scope["headers"])
        seen["body"] = body
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b"{}"})

    audio = bytes(range(256)) * 400
    with serve(echo) as url:
        response = await client.post(url + "/upload", data={"model": "whisper-1"},
                                     files={"file": ("a.wav", audio, "audio/wav")})
    assert response.status_code == 200
    assert seen["headers"][b"content-type"].startswith(b"multipart/form-data; boundary=")
    assert audio in seen["body"]
    assert b'name="model"\r\n\r\nwhisper-1' in seen["body"]
    length = seen["headers"].get(b"content-length")
    assert length is None or int(length) == len(seen["body"])


async def test_small_and_large_bodies_arrive_whole_on_one_connection(
    client: httpx.AsyncClient,
) -> None:
    """A small body comes with its headers, a large one in many pieces after them."""
    sizes = {"/small": 300, "/large": 3_000_000}
    ports: list[int] = []

    async def app(scope: dict[str, Any], receive: Asgi, send: Asgi) -> None:
        ports.append(scope["client"][1])
        body = bytes(i % 251 for i in range(sizes[scope["path"]]))
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    with serve(app) as url:
        for path in ["/small", "/large", "/small", "/large"]:
            response = await client.get(url + path)
            assert response.content == bytes(i % 251 for i in range(sizes[path]))
    assert len(set(ports)) == 1


async def test_a_cookie_the_upstream_sets_is_sent_back(client: httpx.AsyncClient) -> None:
    seen: list[bytes | None] = []

    async def app(scope: dict[str, Any], receive: Asgi, send: Asgi) -> None:
        seen.append(dict(scope["headers"]).get(b"cookie"))
        headers = [(b"set-cookie", b"lb=abc; Path=/")] if scope["path"] == "/set" else []
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"{}"})

    with serve(app) as url:
        await client.get(url + "/plain")
        await client.get(url + "/set")
        await client.get(url + "/after")
    assert seen == [None, None, b"lb=abc"]
