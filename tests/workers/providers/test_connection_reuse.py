"""Streamed calls leave their connection in the pool: the next call reuses it instead of
opening a new one (for a real provider, a TCP and TLS handshake on every stream)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from schemas.config import Deployment
from schemas.usage import TokenUsage
from tests.fakes import anthropic_server, gemini_server, openai_server
from tests.fakes.server import serve
from workers.providers import create_provider
from workers.providers.base import UpstreamCall

Asgi = Callable[..., Any]


class ClientPorts:
    """ASGI middleware noting the client port of every HTTP request: one port per
    connection the client opened."""

    def __init__(self, app: Asgi) -> None:
        self.app = app
        self.ports: list[int] = []

    async def __call__(self, scope: dict[str, Any], receive: Asgi, send: Asgi) -> None:
        if scope["type"] == "http" and scope.get("client"):
            self.ports.append(scope["client"][1])
        await self.app(scope, receive, send)


CASES = {
    "openai": (lambda: openai_server.create_app(), "openai", "gpt-4o-mini", "sk-fake", "/v1"),
    "anthropic": (lambda: anthropic_server.create_app(), "anthropic", "claude-test",
                  anthropic_server.DEFAULT_KEY, ""),
    "gemini": (lambda: gemini_server.create_app(), "gemini", "gemini-2.5-flash",
               "test-gemini-key", ""),
}


@pytest.fixture(params=sorted(CASES))
def upstream(request: pytest.FixtureRequest) -> Iterator[tuple[ClientPorts, Deployment]]:
    make, provider, model, key, suffix = CASES[request.param]
    app = ClientPorts(make())
    with serve(app) as url:
        yield app, Deployment(id=f"{provider}#1", model_name="m", provider=provider,
                              upstream_model=model, api_key=SecretStr(key),
                              api_base=url + suffix, timeout=10)


async def test_finished_calls_hand_their_connection_to_the_next_call(
    upstream: tuple[ClientPorts, Deployment],
) -> None:
    app, deployment = upstream
    async with httpx.AsyncClient() as client:
        provider = create_provider(deployment.provider, client)
        for i in range(4):
            call = UpstreamCall(deployment=deployment, request_id=f"r{i}", body={
                "model": deployment.upstream_model,
                "messages": [{"role": "user", "content": f"hello {i}"}]})
            if i % 2:
                items = [item async for item in provider.stream(call)]
                assert items, "the stream answered"
            else:
                assert (await provider.complete(call)).response["choices"]
    assert len(app.ports) == 4
    assert len(set(app.ports)) == 1, f"a new connection per call: ports {app.ports}"


async def test_an_upstream_that_resets_after_its_last_event_still_gives_a_whole_answer() -> None:
    """Draining for reuse must not turn a complete answer into an error: the connection is
    dropped instead."""
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
             "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}]}
    usage = {**chunk, "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1,
                                               "total_tokens": 4}}
    events = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in (chunk, usage))
    events += b"data: [DONE]\n\n"

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                     b"transfer-encoding: chunked\r\n\r\n")
        writer.write(f"{len(events):x}\r\n".encode() + events + b"\r\n")
        await writer.drain()
        writer.transport.abort()  # no terminating chunk: a reset right after [DONE]

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    deployment = Deployment(id="openai#1", model_name="m", provider="openai",
                            upstream_model="m", api_key=SecretStr("k"),
                            api_base=f"http://127.0.0.1:{port}/v1", timeout=10)
    try:
        async with httpx.AsyncClient() as client:
            provider = create_provider("openai", client)
            call = UpstreamCall(deployment=deployment, request_id="r", body={
                "model": "m", "messages": [{"role": "user", "content": "x"}]})
            items = [item async for item in provider.stream(call)]
    finally:
        server.close()
        await server.wait_closed()
    assert items[-1] == TokenUsage(prompt_tokens=3, completion_tokens=1)
    assert items[0]["choices"][0]["delta"]["content"] == "hi"
