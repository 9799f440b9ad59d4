"""The Anthropic adapter's request translation: OpenAI chat bodies (system prompts, sampling,
images, tool calls and results, tools, response formats) into Messages API requests."""

from __future__ import annotations

from typing import Any

import pytest

from schemas.errors import ErrorKind
from tests.workers.providers.anthropic_fixtures import TIME_TOOL, WEATHER_TOOL, user
from workers.providers.anthropic.translate import JSON_OBJECT_INSTRUCTION, to_anthropic_request
from workers.providers.base import UpstreamError


def translate(**body: Any) -> dict[str, Any]:
    body.setdefault("messages", [user("hi")])
    return to_anthropic_request(body, "claude-test")


def invalid_param(**body: Any) -> str | None:
    with pytest.raises(UpstreamError) as caught:
        translate(**body)
    assert caught.value.info.kind is ErrorKind.INVALID_REQUEST
    return caught.value.info.param


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
