"""The Anthropic adapter tests' common ground: the fake Messages API's key, the tools and
user messages requests carry, and the fixtures and calls that drive the adapter over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from schemas.config import Deployment
from tests.fakes import anthropic_server
from tests.fakes.server import serve
from workers.providers.anthropic.adapter import AnthropicProvider
from workers.providers.base import UpstreamCall, UpstreamError

KEY = "sk-ant-api03-very-secret-key"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
TIME_TOOL = {"type": "function", "function": {"name": "get_time"}}


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


@pytest.fixture(scope="module", name="fake_anthropic")
def serve_fake_anthropic() -> Iterator[tuple[str, Any]]:
    app = anthropic_server.create_app(api_key=KEY)
    with serve(app) as url:
        yield url, app


@pytest.fixture(name="provider")
async def anthropic_provider() -> AsyncIterator[AnthropicProvider]:
    async with httpx.AsyncClient() as client:
        yield AnthropicProvider(client)


def call_for(
    url: str, body: dict[str, Any], *, model: str = "claude-test", key: str = KEY
) -> UpstreamCall:
    deployment = Deployment(
        id="claude#1",
        model_name="claude",
        provider="anthropic",
        upstream_model=model,
        api_key=SecretStr(key),
        api_base=url,
        timeout=10,
    )
    body = {"model": model, **body}
    body.setdefault("messages", [user("hi there")])
    return UpstreamCall(deployment=deployment, body=body, request_id="req-test")


async def collect(provider: AnthropicProvider, call: UpstreamCall) -> list[Any]:
    return [item async for item in provider.stream(call)]


async def drain(stream: AsyncIterator[Any], into: list[Any]) -> None:
    """Like :func:`collect`, but what arrived before a failure stays in ``into``."""
    async for item in stream:
        into.append(item)


async def upstream_error(provider: AnthropicProvider, call: UpstreamCall) -> UpstreamError:
    with pytest.raises(UpstreamError) as caught:
        await provider.complete(call)
    return caught.value
