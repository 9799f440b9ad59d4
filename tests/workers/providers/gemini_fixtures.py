"""The Gemini adapter tests' common ground: the fake Gemini's key, a tool and user messages
for requests, and the fixtures and calls that drive the adapter over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from starlette.applications import Starlette

from schemas.config import Deployment
from tests.fakes.gemini_server import create_app
from tests.fakes.server import serve
from workers.providers.base import StreamItem, UpstreamCall, UpstreamError
from workers.providers.gemini.adapter import (
    GeminiProvider,
)

KEY = "AIzaSyFAKE-fake-fake-fake-fake-fake-123"

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def user(text: str | list[dict[str, Any]]) -> dict[str, Any]:
    return {"role": "user", "content": text}


@pytest.fixture(scope="module", name="fake")
def serve_fake_gemini() -> Iterator[tuple[Starlette, str]]:
    app = create_app(api_key=KEY)
    with serve(app) as url:
        yield app, url


@pytest.fixture(name="provider")
async def gemini_provider() -> AsyncIterator[GeminiProvider]:
    async with httpx.AsyncClient() as client:
        yield GeminiProvider(client)


def make_call(
    url: str, body: dict[str, Any], model: str = "gemini-2.5-flash", key: str = KEY
) -> UpstreamCall:
    deployment = Deployment(
        id="gemini#1",
        model_name="gemini",
        provider="gemini",
        upstream_model=model,
        api_key=SecretStr(key),
        api_base=url,
        timeout=10,
    )
    return UpstreamCall(deployment=deployment, body={"model": model, **body}, request_id="req-1")


async def collect(provider: GeminiProvider, call: UpstreamCall) -> list[StreamItem]:
    return [item async for item in provider.stream(call)]


async def failure(provider: GeminiProvider, call: UpstreamCall, stream: bool = False) -> Any:
    attempt = collect(provider, call) if stream else provider.complete(call)
    with pytest.raises(UpstreamError) as caught:
        await attempt
    return caught.value.info
