"""The Anthropic adapter over real HTTP against the fake Messages API: headers and bodies
sent, turns merged, tool calls, images, cache usage, finish reasons and streaming."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from schemas.usage import TokenUsage
from tests.workers.providers.anthropic_fixtures import (
    KEY,
    TIME_TOOL,
    WEATHER_TOOL,
    anthropic_provider,  # noqa: F401 - the ``provider`` fixture
    call_for,
    collect,
    serve_fake_anthropic,  # noqa: F401 - the module's ``fake_anthropic`` fixture
    user,
)
from workers.providers.anthropic.adapter import AnthropicProvider


async def test_complete_sends_the_messages_api_headers_and_translated_body(
    provider: AnthropicProvider, fake_anthropic: tuple[str, Any]
) -> None:
    url, app = fake_anthropic
    body = {"messages": [{"role": "system", "content": "Be nice."}, user("hi there")]}
    completion = await provider.complete(call_for(url, body))
    assert app.state.last_headers["x-api-key"] == KEY
    assert app.state.last_headers["anthropic-version"] == "2023-06-01"
    assert app.state.last_headers["content-type"] == "application/json"
    assert app.state.last_request["system"] == "Be nice."
    assert app.state.last_request["max_tokens"] == 4096
    assert "stream" not in app.state.last_request
    response = completion.response
    assert response["id"].startswith("chatcmpl-msg_fake")
    assert response["model"] == "claude-test"
    assert response["choices"][0]["message"]["content"] == "Hello! You said: hi there"
    assert response["choices"][0]["finish_reason"] == "stop"
    assert response["usage"] == completion.usage.to_openai()
    assert completion.usage.completion_tokens == 5


async def test_consecutive_user_messages_reach_the_fake_api_as_one_turn(
    provider: AnthropicProvider, fake_anthropic: tuple[str, Any]
) -> None:
    url, app = fake_anthropic
    completion = await provider.complete(call_for(url, {"messages": [user("one"), user("two")]}))
    assert [m["role"] for m in app.state.last_request["messages"]] == ["user"]
    assert completion.response["choices"][0]["message"]["content"] == "Hello! You said: one two"


@pytest.mark.parametrize(
    ("headers", "body", "message"),
    [
        ({"x-api-key": KEY}, {"model": "m", "max_tokens": 5, "messages": []}, "anthropic-version"),
        (
            {"x-api-key": KEY, "anthropic-version": "2023-06-01"},
            {"model": "m", "messages": [user("hi")]},
            "max_tokens: Field required",
        ),
        (
            {"x-api-key": KEY, "anthropic-version": "2023-06-01"},
            {"model": "m", "max_tokens": 5, "messages": [user("a"), user("b")]},
            "roles must alternate",
        ),
        (
            {"x-api-key": KEY, "anthropic-version": "2023-06-01"},
            {
                "model": "m",
                "max_tokens": 5,
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "tool_result", "tool_use_id": "toolu_x"}],
                    }
                ],
            },
            "unexpected `tool_use_id`",
        ),
    ],
)
async def test_the_fake_api_refuses_what_the_real_one_refuses(
    fake_anthropic: tuple[str, Any], headers: dict[str, str], body: dict[str, Any], message: str
) -> None:
    url, _ = fake_anthropic
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{url}/v1/messages", json=body, headers=headers)
    assert response.status_code == 400
    error = response.json()
    assert error["type"] == "error"
    assert error["error"]["type"] == "invalid_request_error"
    assert message in error["error"]["message"]


async def test_tool_calls_round_trip_through_the_fake_api(
    provider: AnthropicProvider, fake_anthropic: tuple[str, Any]
) -> None:
    url, _ = fake_anthropic
    first = await provider.complete(
        call_for(url, {"messages": [user("weather in Paris [tool]")], "tools": [WEATHER_TOOL]})
    )
    message = first.response["choices"][0]["message"]
    assert first.response["choices"][0]["finish_reason"] == "tool_calls"
    assert message["content"] == "Let me check."
    [call] = message["tool_calls"]
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"query": "weather in Paris [tool]"}
    follow_up = [
        user("weather in Paris [tool]"),
        {"role": "assistant", "content": message["content"], "tool_calls": message["tool_calls"]},
        {"role": "tool", "tool_call_id": call["id"], "content": "sunny, 21C"},
    ]
    second = await provider.complete(
        call_for(url, {"messages": follow_up, "tools": [WEATHER_TOOL]})
    )
    assert second.response["choices"][0]["message"]["content"] == "The tool returned: sunny, 21C"


async def test_an_image_data_url_is_accepted_by_the_fake_api(
    provider: AnthropicProvider, fake_anthropic: tuple[str, Any]
) -> None:
    url, app = fake_anthropic
    image = {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}}
    content = [{"type": "text", "text": "what is this"}, image]
    await provider.complete(call_for(url, {"messages": [{"role": "user", "content": content}]}))
    source = app.state.last_request["messages"][0]["content"][1]["source"]
    assert source == {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"}


async def test_usage_reports_cache_tokens(
    provider: AnthropicProvider, fake_anthropic: tuple[str, Any]
) -> None:
    url, _ = fake_anthropic
    completion = await provider.complete(call_for(url, {"messages": [user("one two [cache]")]}))
    assert completion.usage.cached_tokens == 1024
    assert completion.usage.cache_write_tokens == 256
    assert completion.usage.prompt_tokens == 3 + 256 + 1024
    assert completion.response["usage"]["prompt_tokens_details"]["cached_tokens"] == 1024


async def test_max_tokens_and_stop_sequences_set_the_finish_reason(
    provider: AnthropicProvider, fake_anthropic: tuple[str, Any]
) -> None:
    url, app = fake_anthropic
    cut = await provider.complete(call_for(url, {"max_completion_tokens": 2}))
    assert cut.response["choices"][0]["message"]["content"] == "Hello! You"
    assert cut.response["choices"][0]["finish_reason"] == "length"
    stopped = await provider.complete(call_for(url, {"stop": "said"}))
    assert app.state.last_request["stop_sequences"] == ["said"]
    assert stopped.response["choices"][0]["message"]["content"] == "Hello! You "
    assert stopped.response["choices"][0]["finish_reason"] == "stop"


async def test_streamed_text_arrives_as_chunks_then_usage_last(
    provider: AnthropicProvider, fake_anthropic: tuple[str, Any]
) -> None:
    url, app = fake_anthropic
    items = await collect(provider, call_for(url, {"messages": [user("stream me please")]}))
    assert app.state.last_request["stream"] is True
    *rest, usage = items
    assert isinstance(usage, TokenUsage)
    assert usage.completion_tokens == 6
    assert usage.prompt_tokens == 3
    # running totals may come earlier; every other item is a chunk without usage
    chunks = [c for c in rest if not isinstance(c, TokenUsage)]
    assert all(isinstance(c, dict) and "usage" not in c for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == "Hello! You said: stream me please"
    assert [c["choices"][0]["finish_reason"] for c in chunks][-2:] == [None, "stop"]
    assert len({c["id"] for c in chunks}) == 1


async def test_streamed_tool_call_arguments_reassemble_into_valid_json(
    provider: AnthropicProvider, fake_anthropic: tuple[str, Any]
) -> None:
    url, _ = fake_anthropic
    body = {"messages": [user('both "now" [tools]')], "tools": [WEATHER_TOOL, TIME_TOOL]}
    items = await collect(provider, call_for(url, body))
    calls: dict[int, dict[str, Any]] = {}
    for chunk in (item for item in items if isinstance(item, dict)):
        for piece in chunk["choices"][0]["delta"].get("tool_calls") or []:
            call = calls.setdefault(piece["index"], {"arguments": ""})
            if "id" in piece:
                call.update(id=piece["id"], name=piece["function"]["name"])
            call["arguments"] += piece["function"]["arguments"]
    assert sorted(calls) == [0, 1]
    assert [calls[i]["name"] for i in (0, 1)] == ["get_weather", "get_time"]
    for call in calls.values():
        assert json.loads(call["arguments"]) == {"query": 'both "now" [tools]'}
    assert items[-2]["choices"][0]["finish_reason"] == "tool_calls"
