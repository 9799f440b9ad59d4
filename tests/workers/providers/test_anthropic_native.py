"""The Anthropic adapter's pass-through of the Messages API, over real HTTP to the fake."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from schemas.config import Deployment
from schemas.errors import ErrorKind
from schemas.usage import TokenUsage
from tests.fakes import anthropic_server
from tests.fakes.server import serve
from workers.providers.anthropic.adapter import AnthropicProvider
from workers.providers.base import UpstreamCall, UpstreamError

KEY = "sk-ant-native-test"


@pytest.fixture(scope="module")
def fake() -> Iterator[tuple[str, Any]]:
    app = anthropic_server.create_app(api_key=KEY)
    with serve(app) as url:
        yield url, app


@pytest.fixture
async def provider() -> AsyncIterator[AnthropicProvider]:
    async with httpx.AsyncClient() as client:
        yield AnthropicProvider(client)


def _call(url: str, body: dict[str, Any], model: str = "claude-x",
          headers: dict[str, str] | None = None) -> UpstreamCall:
    deployment = Deployment(id="c#1", model_name="c", provider="anthropic",
                            upstream_model=model, api_key=SecretStr(KEY), api_base=url,
                            timeout=10)
    return UpstreamCall(deployment=deployment, request_id="req-n", headers=headers or {},
                        body={"model": "alias", "max_tokens": 100, **body})


async def test_a_whole_message_comes_back_as_anthropic_sent_it(
    fake: tuple[str, Any], provider: AnthropicProvider
) -> None:
    url, app = fake
    body = {"system": [{"type": "text", "text": "S", "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": "hi [cache]"}], "top_k": 5}
    result = await provider.messages(_call(url, body, headers={"anthropic-beta": "b-1"}))
    assert app.state.last_request == {**body, "model": "claude-x", "max_tokens": 100}
    assert app.state.last_headers["anthropic-beta"] == "b-1"
    assert app.state.last_headers["x-api-key"] == KEY
    assert result.response["type"] == "message"
    assert result.response["content"] == [{"type": "text", "text": "Hello! You said: hi [cache]"}]
    usage = result.response["usage"]
    assert result.usage == TokenUsage(
        prompt_tokens=usage["input_tokens"] + 1024 + 256,
        completion_tokens=usage["output_tokens"], cached_tokens=1024, cache_write_tokens=256)


async def test_a_stream_is_the_upstreams_events_with_usage_at_start_and_end(
    fake: tuple[str, Any], provider: AnthropicProvider
) -> None:
    url, _ = fake
    items = [i async for i in provider.messages_stream(
        _call(url, {"messages": [{"role": "user", "content": "one two three"}]}))]
    frames = [i for i in items if isinstance(i, bytes)]
    usages = [i for i in items if isinstance(i, TokenUsage)]
    events = []
    for frame in frames:
        name, data = frame.decode().removesuffix("\n\n").split("\n")
        parsed = json.loads(data.removeprefix("data: "))
        assert name == f"event: {parsed['type']}"
        events.append(parsed["type"])
    assert events[:3] == ["message_start", "ping", "content_block_start"]
    assert events[-2:] == ["message_delta", "message_stop"]
    assert isinstance(items[0], TokenUsage)  # the input is billed from message_start
    assert usages[-1].completion_tokens == 6  # "Hello! You said: one two three"
    assert items[-1] == usages[-1]


async def test_an_error_before_any_content_yields_no_event(
    fake: tuple[str, Any], provider: AnthropicProvider
) -> None:
    url, _ = fake
    sent: list[bytes] = []
    with pytest.raises(UpstreamError) as caught:
        async for item in provider.messages_stream(_call(
                url, {"messages": [{"role": "user", "content": "x"}]},
                model="fail-overloaded-early")):
            if isinstance(item, bytes):
                sent.append(item)
    assert sent == []  # message_start and the ping were held back: a failover stays clean
    assert caught.value.info.kind is ErrorKind.OVERLOADED


async def test_an_upstream_error_status_keeps_the_key_out(
    fake: tuple[str, Any], provider: AnthropicProvider
) -> None:
    url, _ = fake
    with pytest.raises(UpstreamError) as caught:
        await provider.messages(_call(url, {"messages": [{"role": "user", "content": "x"}]},
                                      model="fail-529"))
    assert caught.value.info.kind is ErrorKind.OVERLOADED
    assert KEY not in caught.value.info.message
