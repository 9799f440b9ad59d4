"""A fake Azure OpenAI resource: Azure's URLs and auth in front of the fake OpenAI server.

``POST /openai/deployments/{deployment}/{chat/completions|embeddings|completions}
?api-version=...`` with an ``api-key`` header. A request without ``api-version``, with a
version Azure does not know, with a wrong key, or with ``Authorization: Bearer`` instead of
``api-key`` fails as Azure fails it. A good one is served by the fake OpenAI app, the
deployment in the URL taking the place of the body's ``model`` (Azure ignores that field).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from starlette.responses import JSONResponse
from starlette.types import Message, Receive, Scope, Send

from tests.fakes import openai_server
from tests.fakes.server import serve

API_KEY = "azure-fake-key-0123456789"
API_VERSIONS = frozenset({"2024-10-21", "2024-06-01", "2025-01-01-preview"})
_PATH = re.compile(r"^/openai/deployments/([^/]+)/(chat/completions|embeddings|completions)$")


@dataclass
class FakeAzureState:
    api_key: str = API_KEY
    # (deployment, operation, api-version) of each request that got through.
    calls: list[tuple[str, str, str]] = field(default_factory=list)
    openai: openai_server.FakeOpenAIState = field(
        default_factory=lambda: openai_server.FakeOpenAIState(api_key="sk-behind-azure"))


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


class FakeAzure:
    def __init__(self, state: FakeAzureState) -> None:
        self.state = state
        self.inner = openai_server.create_app(state.openai)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        match = _PATH.match(scope["path"])
        query = parse_qs(scope.get("query_string", b"").decode())
        version = (query.get("api-version") or [""])[0]
        if match is None:
            refusal = _error(404, "404", "Resource not found")
        elif "authorization" in headers or headers.get("api-key") != self.state.api_key:
            refusal = _error(401, "401", "Access denied due to invalid subscription key or "
                             "wrong API endpoint. Make sure to provide a valid key for an "
                             "active subscription and use a correct regional API endpoint "
                             "for your resource.")
        elif not version:
            refusal = _error(404, "404", "Resource not found")
        elif version not in API_VERSIONS:
            refusal = _error(404, "404", f"API version {version} is not supported")
        else:
            refusal = None
        if refusal is not None or match is None:
            await (refusal or _error(404, "404", "Resource not found"))(scope, receive, send)
            return
        deployment, operation = match.group(1), match.group(2)
        self.state.calls.append((deployment, operation, version))
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        parsed: Any = json.loads(body or b"{}")
        if isinstance(parsed, dict):
            parsed["model"] = deployment
        content = json.dumps(parsed).encode()
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return await receive()  # the client's disconnect, when it comes
            sent = True
            return {"type": "http.request", "body": content, "more_body": False}

        inner_headers = [(k, v) for k, v in scope["headers"]
                         if k.lower() not in (b"api-key", b"content-length")]
        inner_headers += [
            (b"authorization", f"Bearer {self.state.openai.api_key}".encode()),
            (b"content-length", str(len(content)).encode()),
        ]
        inner = {**scope, "path": f"/v1/{operation}", "raw_path": f"/v1/{operation}".encode(),
                 "query_string": b"", "headers": inner_headers}
        await self.inner(inner, replay, _with_prompt_filter(send))


# What Azure streams first: its content filter's verdict on the prompt, with no choices.
PROMPT_FILTER_CHUNK = b"data: " + json.dumps({
    "choices": [], "created": 0, "id": "", "model": "", "object": "",
    "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {
        "hate": {"filtered": False, "severity": "safe"}}}]}).encode() + b"\n\n"


def _with_prompt_filter(send: Send) -> Send:
    """``send`` with :data:`PROMPT_FILTER_CHUNK` before the first bytes of an SSE body."""
    streaming = False
    first = True

    async def wrapped(message: Message) -> None:
        nonlocal streaming, first
        if message["type"] == "http.response.start":
            types = [v for k, v in message.get("headers", []) if k.lower() == b"content-type"]
            streaming = any(v.startswith(b"text/event-stream") for v in types)
        elif message["type"] == "http.response.body" and streaming and first:
            first = False
            message = {**message, "body": PROMPT_FILTER_CHUNK + message.get("body", b"")}
        await send(message)

    return wrapped


@dataclass
class Served:
    url: str
    state: FakeAzureState


@contextmanager
def running(state: FakeAzureState | None = None) -> Iterator[Served]:
    state = state or FakeAzureState()
    with serve(FakeAzure(state)) as url:
        yield Served(url, state)
