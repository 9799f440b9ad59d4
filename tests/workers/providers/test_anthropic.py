"""The Anthropic adapter: pure translation, then real HTTP against the fake Messages API."""

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
from tests.fakes.server import free_port, serve
from workers.providers.anthropic.adapter import AnthropicProvider, error_from_anthropic
from workers.providers.anthropic.answers import (
    StreamTranslator,
    from_anthropic_response,
    usage_from_anthropic,
)
from workers.providers.anthropic.translate import JSON_OBJECT_INSTRUCTION, to_anthropic_request
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


def translate(**body: Any) -> dict[str, Any]:
    body.setdefault("messages", [user("hi")])
    return to_anthropic_request(body, "claude-test")


def invalid_param(**body: Any) -> str | None:
    with pytest.raises(UpstreamError) as caught:
        translate(**body)
    assert caught.value.info.kind is ErrorKind.INVALID_REQUEST
    return caught.value.info.param


# --- requests -------------------------------------------------------------------------------


def test_system_and_developer_messages_are_lifted_to_top_level_system() -> None:
    request = translate(
        messages=[
            {"role": "system", "content": "Be brief."},
            user("hi"),
            {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
        ]
    )
    assert request["system"] == "Be brief.\n\nAnswer in French."
    assert request["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]


def test_max_tokens_defaults_to_4096_when_the_client_sets_none() -> None:
    assert translate()["max_tokens"] == 4096


def test_max_completion_tokens_wins_over_max_tokens() -> None:
    assert translate(max_completion_tokens=50, max_tokens=99)["max_tokens"] == 50
    assert translate(max_tokens=99)["max_tokens"] == 99


def test_temperature_is_clamped_to_anthropics_range() -> None:
    assert translate(temperature=1.7)["temperature"] == 1.0
    assert translate(temperature=0.3)["temperature"] == 0.3
    assert "temperature" not in translate()


def test_top_p_passes_through() -> None:
    assert translate(top_p=0.9)["top_p"] == 0.9


def test_stop_string_or_list_becomes_stop_sequences() -> None:
    assert translate(stop="END")["stop_sequences"] == ["END"]
    assert translate(stop=["a", "b"])["stop_sequences"] == ["a", "b"]
    assert "stop_sequences" not in translate(stop=None)


def test_safety_identifier_or_user_becomes_metadata_user_id() -> None:
    assert translate(user="u-1")["metadata"] == {"user_id": "u-1"}
    assert translate(user="u-1", safety_identifier="s-1")["metadata"] == {"user_id": "s-1"}


def test_more_than_one_choice_is_rejected_naming_n() -> None:
    assert invalid_param(n=2) == "n"
    assert "n" not in translate(n=1)


def test_image_data_url_becomes_a_base64_image_source() -> None:
    part = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    request = translate(
        messages=[{"role": "user", "content": [{"type": "text", "text": "?"}, part]}]
    )
    assert request["messages"][0]["content"][1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
    }


def test_image_http_url_becomes_a_url_image_source() -> None:
    part = {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}
    request = translate(messages=[{"role": "user", "content": [part]}])
    assert request["messages"][0]["content"] == [
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}
    ]


def test_image_url_that_is_neither_data_nor_http_is_rejected() -> None:
    part = {"type": "image_url", "image_url": {"url": "ftp://example.com/cat.jpg"}}
    assert invalid_param(messages=[{"role": "user", "content": [part]}]) == "messages"


def test_assistant_tool_calls_become_tool_use_blocks_with_parsed_input() -> None:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    }
    request = translate(
        messages=[
            user("weather?"),
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ]
    )
    assert request["messages"][1] == {
        "role": "assistant",
        "content": [
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}}
        ],
    }
    assert request["messages"][2] == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"}],
    }


def test_tool_call_arguments_that_are_not_a_json_object_are_an_invalid_request() -> None:
    for arguments in ("{not json", "[1, 2]"):
        call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": arguments}}
        messages = [user("x"), {"role": "assistant", "tool_calls": [call]}]
        assert invalid_param(messages=messages) == "messages"


def test_consecutive_tool_results_and_a_following_user_message_share_one_user_turn() -> None:
    calls = [
        {"id": f"c{i}", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        for i in range(2)
    ]
    request = translate(
        messages=[
            user("go"),
            {"role": "assistant", "content": "Calling.", "tool_calls": calls},
            {"role": "tool", "tool_call_id": "c0", "content": "one"},
            {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "two"}]},
            user("and?"),
        ]
    )
    assert [m["role"] for m in request["messages"]] == ["user", "assistant", "user"]
    assert request["messages"][1]["content"][0] == {"type": "text", "text": "Calling."}
    assert request["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "c0", "content": "one"},
        {"type": "tool_result", "tool_use_id": "c1", "content": [{"type": "text", "text": "two"}]},
        {"type": "text", "text": "and?"},
    ]


def test_consecutive_same_role_messages_are_merged_to_keep_roles_alternating() -> None:
    request = translate(
        messages=[
            user("a"),
            user("b"),
            {"role": "assistant", "content": "c"},
            {"role": "assistant", "content": ""},
        ]
    )
    assert request["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "c"}]},
    ]


def test_tools_map_to_name_description_and_input_schema() -> None:
    request = translate(tools=[WEATHER_TOOL, TIME_TOOL])
    assert request["tools"] == [
        {
            "name": "get_weather",
            "description": "Weather for a city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
        {"name": "get_time", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert "tool_choice" not in request


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"type": "auto"}),
        ("required", {"type": "any"}),
        ("none", {"type": "none"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            {"type": "tool", "name": "get_weather"},
        ),
    ],
)
def test_tool_choice_maps_to_anthropic_tool_choice(choice: Any, expected: dict[str, Any]) -> None:
    assert translate(tools=[WEATHER_TOOL], tool_choice=choice)["tool_choice"] == expected


def test_parallel_tool_calls_false_disables_parallel_tool_use() -> None:
    assert translate(tools=[WEATHER_TOOL], parallel_tool_calls=False)["tool_choice"] == {
        "type": "auto",
        "disable_parallel_tool_use": True,
    }
    required = translate(tools=[WEATHER_TOOL], tool_choice="required", parallel_tool_calls=False)
    assert required["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}


def test_json_schema_response_format_becomes_output_config_format() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    response_format = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    request = translate(response_format=response_format)
    assert request["output_config"] == {"format": {"type": "json_schema", "schema": schema}}


def test_json_object_response_format_adds_a_system_instruction() -> None:
    request = translate(
        messages=[{"role": "system", "content": "Be brief."}, user("hi")],
        response_format={"type": "json_object"},
    )
    assert request["system"] == f"Be brief.\n\n{JSON_OBJECT_INSTRUCTION}"
    assert "output_config" not in request


# --- answers --------------------------------------------------------------------------------


def anthropic_message(**overrides: Any) -> dict[str, Any]:
    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-test",
        "content": [{"type": "text", "text": "Hello"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 3},
    }
    return {**message, **overrides}


def test_response_becomes_an_openai_chat_completion() -> None:
    response = from_anthropic_response(
        anthropic_message(
            content=[{"type": "text", "text": "Hel"}, {"type": "text", "text": "lo"}]
        ),
        request_id="req-1",
        model="claude-test",
        created=1700000000,
    )
    assert response == {
        "id": "chatcmpl-msg_1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "claude-test",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello", "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": TokenUsage(prompt_tokens=10, completion_tokens=3).to_openai(),
    }


def test_tool_use_blocks_become_tool_calls_with_json_arguments() -> None:
    message = anthropic_message(
        content=[{"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"x": 1}}],
        stop_reason="tool_use",
    )
    choice = from_anthropic_response(message, request_id="r", model="m")["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    assert choice["message"]["tool_calls"] == [
        {"id": "toolu_1", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}
    ]


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("model_context_window_exceeded", "length"),
        ("pause_turn", "stop"),
    ],
)
def test_stop_reasons_map_to_finish_reasons(stop_reason: str, finish_reason: str) -> None:
    message = anthropic_message(stop_reason=stop_reason)
    response = from_anthropic_response(message, request_id="r", model="m")
    assert response["choices"][0]["finish_reason"] == finish_reason


def test_response_without_an_anthropic_id_uses_the_request_id() -> None:
    response = from_anthropic_response(anthropic_message(id=None), request_id="req-9", model="m")
    assert response["id"] == "chatcmpl-req-9"


def test_usage_counts_cache_reads_and_writes_inside_prompt_tokens() -> None:
    usage = usage_from_anthropic(
        {
            "input_tokens": 10,
            "cache_creation_input_tokens": 200,
            "cache_read_input_tokens": 1000,
            "output_tokens": 7,
        }
    )
    assert usage == TokenUsage(
        prompt_tokens=1210, completion_tokens=7, cached_tokens=1000, cache_write_tokens=200
    )


# --- stream translation ---------------------------------------------------------------------


def feed_all(events: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], StreamTranslator]:
    translator = StreamTranslator(request_id="req-1", model="fallback", created=1)
    chunks = [chunk for event in events for chunk in translator.feed(event["type"], event)]
    return chunks, translator


def test_stream_events_become_openai_chunks_with_usage_at_message_stop() -> None:
    start_usage = {"input_tokens": 5, "cache_read_input_tokens": 100, "output_tokens": 1}
    chunks, translator = feed_all(
        [
            {
                "type": "message_start",
                "message": {"id": "msg_9", "model": "claude-x", "usage": start_usage},
            },
            {"type": "ping"},
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "Hi"},
            },
            {"type": "content_block_stop", "index": 0},
            {
                "type": "message_delta",
                "delta": {"stop_reason": "max_tokens"},
                "usage": {"output_tokens": 4},
            },
        ]
    )
    assert [c["choices"][0]["delta"] for c in chunks] == [
        {"role": "assistant", "content": ""},
        {"content": "Hi"},
        {},
    ]
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, "length"]
    assert {(c["id"], c["model"], c["object"]) for c in chunks} == {
        ("chatcmpl-msg_9", "claude-x", "chat.completion.chunk")
    }
    assert all("usage" not in c for c in chunks)
    assert not translator.done
    assert translator.feed("message_stop", {"type": "message_stop"}) == []
    assert translator.done
    assert translator.usage == TokenUsage(prompt_tokens=105, completion_tokens=4, cached_tokens=100)


def test_stream_tool_calls_are_numbered_by_tool_not_by_content_block() -> None:
    def tool_start(index: int, name: str) -> dict[str, Any]:
        block = {"type": "tool_use", "id": f"toolu_{name}", "name": name, "input": {}}
        return {"type": "content_block_start", "index": index, "content_block": block}

    def arguments(index: int, piece: str) -> dict[str, Any]:
        delta = {"type": "input_json_delta", "partial_json": piece}
        return {"type": "content_block_delta", "index": index, "delta": delta}

    chunks, _ = feed_all(
        [
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
            tool_start(1, "a"),
            arguments(1, ""),
            arguments(1, '{"x":'),
            arguments(1, " 1}"),
            tool_start(2, "b"),
            arguments(2, "{}"),
        ]
    )
    calls = [c["choices"][0]["delta"]["tool_calls"][0] for c in chunks]
    assert calls == [
        {
            "index": 0,
            "id": "toolu_a",
            "type": "function",
            "function": {"name": "a", "arguments": ""},
        },
        {"index": 0, "function": {"arguments": '{"x":'}},
        {"index": 0, "function": {"arguments": " 1}"}},
        {
            "index": 1,
            "id": "toolu_b",
            "type": "function",
            "function": {"name": "b", "arguments": ""},
        },
        {"index": 1, "function": {"arguments": "{}"}},
    ]


# --- errors ---------------------------------------------------------------------------------


def error_body(error_type: str, message: str = "boom") -> bytes:
    return json.dumps({"type": "error", "error": {"type": error_type, "message": message}}).encode()


@pytest.mark.parametrize(
    ("status", "error_type", "kind", "client_status", "retryable"),
    [
        (400, "invalid_request_error", ErrorKind.INVALID_REQUEST, 400, False),
        (401, "authentication_error", ErrorKind.AUTHENTICATION, 401, False),
        (403, "permission_error", ErrorKind.PERMISSION, 403, False),
        (404, "not_found_error", ErrorKind.NOT_FOUND, 404, False),
        (413, "request_too_large", ErrorKind.INVALID_REQUEST, 400, False),
        (429, "rate_limit_error", ErrorKind.RATE_LIMIT, 429, True),
        (500, "api_error", ErrorKind.SERVER, 500, True),
        (504, "timeout_error", ErrorKind.TIMEOUT, 504, True),
        (529, "overloaded_error", ErrorKind.OVERLOADED, 503, True),
    ],
)
def test_error_types_map_to_kinds_and_client_statuses(
    status: int, error_type: str, kind: ErrorKind, client_status: int, retryable: bool
) -> None:
    info = error_from_anthropic(status, error_body(error_type), httpx.Headers())
    assert (info.kind, info.status, info.retryable) == (kind, client_status, retryable)
    assert info.message == "boom"
    assert info.upstream_status == status
    assert info.provider == "anthropic"


def test_not_found_carries_the_model_not_found_code() -> None:
    assert error_from_anthropic(404, error_body("not_found_error")).code == "model_not_found"


def test_a_prompt_too_long_is_a_context_length_error() -> None:
    body = error_body("invalid_request_error", "prompt is too long: 250000 tokens > 200000 maximum")
    info = error_from_anthropic(400, body)
    assert (info.kind, info.code, info.status) == (
        ErrorKind.CONTEXT_LENGTH,
        "context_length_exceeded",
        400,
    )


def test_rate_limit_carries_retry_after_from_headers() -> None:
    info = error_from_anthropic(429, error_body("rate_limit_error"), {"retry-after": "12"})
    assert info.retry_after == 12.0


def test_an_unreadable_529_body_is_still_a_retryable_overload() -> None:
    info = error_from_anthropic(529, b"<html>overloaded</html>")
    assert (info.kind, info.status, info.retryable) == (ErrorKind.OVERLOADED, 503, True)


def test_an_in_stream_error_event_is_judged_by_its_type_not_the_200() -> None:
    event = {"type": "error", "error": {"type": "api_error", "message": "oops"}}
    info = error_from_anthropic(200, event)
    assert (info.kind, info.status, info.upstream_status) == (ErrorKind.SERVER, 500, 500)


# --- the adapter over real HTTP -------------------------------------------------------------


@pytest.fixture(scope="module")
def fake_anthropic() -> Iterator[tuple[str, Any]]:
    app = anthropic_server.create_app(api_key=KEY)
    with serve(app) as url:
        yield url, app


@pytest.fixture
async def provider() -> AsyncIterator[AnthropicProvider]:
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


async def test_a_wrong_api_key_is_an_authentication_error(
    provider: AnthropicProvider, fake_anthropic: tuple[str, Any]
) -> None:
    url, _ = fake_anthropic
    error = await upstream_error(provider, call_for(url, {}, key="sk-ant-wrong"))
    assert (error.info.kind, error.info.status) == (ErrorKind.AUTHENTICATION, 401)
    assert not error.info.retryable


async def test_the_api_key_never_appears_in_an_error_message(
    provider: AnthropicProvider, fake_anthropic: tuple[str, Any]
) -> None:
    url, _ = fake_anthropic
    secret = "sk-ant-api03-leaky-secret"
    call = call_for(url, {}, key=secret)
    error = await upstream_error(provider, call)
    with pytest.raises(UpstreamError) as streamed:
        await collect(provider, call)
    for raised in (error, streamed.value):
        assert "invalid x-api-key" in raised.info.message
        assert secret not in raised.info.model_dump_json()
        assert secret not in str(raised)


async def test_an_unknown_model_is_not_found_with_model_not_found_code(
    provider: AnthropicProvider, fake_anthropic: tuple[str, Any]
) -> None:
    url, _ = fake_anthropic
    error = await upstream_error(provider, call_for(url, {}, model="fail-404"))
    assert (error.info.kind, error.info.status, error.info.code) == (
        ErrorKind.NOT_FOUND,
        404,
        "model_not_found",
    )


async def test_a_rate_limit_carries_retry_after(
    provider: AnthropicProvider, fake_anthropic: tuple[str, Any]
) -> None:
    url, _ = fake_anthropic
    error = await upstream_error(provider, call_for(url, {}, model="fail-429"))
    assert (error.info.kind, error.info.status) == (ErrorKind.RATE_LIMIT, 429)
    assert error.info.retryable
    assert error.info.retry_after == 7.0


async def test_an_overloaded_529_is_a_retryable_503(
    provider: AnthropicProvider, fake_anthropic: tuple[str, Any]
) -> None:
    url, _ = fake_anthropic
    error = await upstream_error(provider, call_for(url, {}, model="fail-529"))
    assert (error.info.kind, error.info.status, error.info.upstream_status) == (
        ErrorKind.OVERLOADED,
        503,
        529,
    )
    assert error.info.retryable


async def test_a_server_error_is_retryable(
    provider: AnthropicProvider, fake_anthropic: tuple[str, Any]
) -> None:
    url, _ = fake_anthropic
    error = await upstream_error(provider, call_for(url, {}, model="fail-500"))
    assert (error.info.kind, error.info.status, error.info.retryable) == (
        ErrorKind.SERVER,
        500,
        True,
    )


async def test_a_prompt_too_long_is_a_context_length_error_over_http(
    provider: AnthropicProvider, fake_anthropic: tuple[str, Any]
) -> None:
    url, _ = fake_anthropic
    error = await upstream_error(provider, call_for(url, {"messages": [user("[too-long]")]}))
    assert (error.info.kind, error.info.code) == (
        ErrorKind.CONTEXT_LENGTH,
        "context_length_exceeded",
    )
    assert not error.info.retryable


async def test_a_stream_that_fails_before_starting_raises_the_mapped_error(
    provider: AnthropicProvider, fake_anthropic: tuple[str, Any]
) -> None:
    url, _ = fake_anthropic
    with pytest.raises(UpstreamError) as caught:
        await collect(provider, call_for(url, {}, model="fail-529"))
    assert caught.value.info.kind is ErrorKind.OVERLOADED


async def test_an_error_event_mid_stream_raises_a_retryable_overload_after_the_text_so_far(
    provider: AnthropicProvider, fake_anthropic: tuple[str, Any]
) -> None:
    url, _ = fake_anthropic
    received: list[Any] = []
    with pytest.raises(UpstreamError) as caught:
        await drain(provider.stream(call_for(url, {}, model="fail-midstream")), received)
    assert (caught.value.info.kind, caught.value.info.status) == (ErrorKind.OVERLOADED, 503)
    assert caught.value.info.retryable
    text = "".join(c["choices"][0]["delta"].get("content") or ""
                   for c in received if isinstance(c, dict))
    assert text == "Hello! You said: hi "
    # the input was billed before the stream broke: it is reported, to be accounted
    running = [item for item in received if isinstance(item, TokenUsage)]
    assert running
    assert running[-1].prompt_tokens > 0


async def test_a_stream_that_ends_without_message_stop_is_a_server_error(
    provider: AnthropicProvider, fake_anthropic: tuple[str, Any]
) -> None:
    url, _ = fake_anthropic
    with pytest.raises(UpstreamError) as caught:
        await collect(provider, call_for(url, {}, model="fail-truncated"))
    assert caught.value.info.kind is ErrorKind.SERVER
    assert "ended early" in caught.value.info.message


async def test_an_unreachable_upstream_is_a_connection_error(provider: AnthropicProvider) -> None:
    call = call_for(f"http://127.0.0.1:{free_port()}", {})
    error = await upstream_error(provider, call)
    assert error.info.kind is ErrorKind.CONNECTION
    with pytest.raises(UpstreamError) as streamed:
        await collect(provider, call)
    assert streamed.value.info.kind is ErrorKind.CONNECTION


async def test_an_invalid_request_is_refused_before_anything_is_sent(
    provider: AnthropicProvider, fake_anthropic: tuple[str, Any]
) -> None:
    url, app = fake_anthropic
    sent = len(app.state.requests)
    error = await upstream_error(provider, call_for(url, {"n": 3}))
    assert (error.info.kind, error.info.param) == (ErrorKind.INVALID_REQUEST, "n")
    assert len(app.state.requests) == sent


async def test_embeddings_are_refused_as_an_invalid_request(
    provider: AnthropicProvider, fake_anthropic: tuple[str, Any]
) -> None:
    url, _ = fake_anthropic
    with pytest.raises(UpstreamError) as caught:
        await provider.embed(call_for(url, {"input": "hello"}))
    assert caught.value.info.kind is ErrorKind.INVALID_REQUEST
    assert "embeddings" in caught.value.info.message
