"""The Gemini adapter's request translation: OpenAI chat bodies (system prompts, turns, tool
calls and results, images, tools, sampling, response formats) into generateContent bodies."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from schemas.errors import ErrorKind
from tests.workers.providers.gemini_fixtures import WEATHER_TOOL, user
from workers.providers.base import UpstreamError
from workers.providers.gemini.adapter import (
    to_gemini_request,
)


def test_system_and_developer_messages_become_the_system_instruction() -> None:
    request = to_gemini_request(
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "Use French."}]},
                user("Hi"),
            ]
        }
    )
    assert request["systemInstruction"] == {
        "parts": [{"text": "Be brief."}, {"text": "Use French."}]
    }
    assert request["contents"] == [{"role": "user", "parts": [{"text": "Hi"}]}]


def test_assistant_becomes_model_and_consecutive_same_role_turns_merge() -> None:
    request = to_gemini_request(
        {
            "messages": [
                user("one"),
                user("two"),
                {"role": "assistant", "content": "three"},
                user("four"),
            ]
        }
    )
    assert request["contents"] == [
        {"role": "user", "parts": [{"text": "one"}, {"text": "two"}]},
        {"role": "model", "parts": [{"text": "three"}]},
        {"role": "user", "parts": [{"text": "four"}]},
    ]


def test_tool_calls_become_function_calls_and_tool_results_function_responses_by_name() -> None:
    request = to_gemini_request(
        {
            "messages": [
                user("Weather in Paris and Rome?"),
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_a",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                            "extra_content": {"google": {"thought_signature": "sig"}},
                        },
                        {
                            "id": "call_b",
                            "type": "function",
                            "function": {"name": "get_time", "arguments": '{"city": "Rome"}'},
                        },
                    ],
                },
                {"role": "tool", "tool_call_id": "call_b", "content": "12:00"},
                {"role": "tool", "tool_call_id": "call_a", "content": '{"temp": 21}'},
            ]
        }
    )
    model_turn, results_turn = request["contents"][1:]
    assert model_turn == {
        "role": "model",
        "parts": [
            {
                "functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                "thoughtSignature": "sig",
            },
            {"functionCall": {"name": "get_time", "args": {"city": "Rome"}}},
        ],
    }
    assert results_turn == {
        "role": "user",
        "parts": [
            {"functionResponse": {"name": "get_time", "response": {"content": "12:00"}}},
            {"functionResponse": {"name": "get_weather", "response": {"temp": 21}}},
        ],
    }


def test_a_tool_result_for_an_unknown_call_is_an_invalid_request() -> None:
    with pytest.raises(UpstreamError) as caught:
        to_gemini_request({"messages": [{"role": "tool", "tool_call_id": "x", "content": "1"}]})
    assert caught.value.info.kind is ErrorKind.INVALID_REQUEST


def test_images_become_inline_data_or_file_data() -> None:
    pixel = base64.b64encode(b"\x89PNG").decode()
    request = to_gemini_request(
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is this?"},
                        {
                            "type": "image_url",
                            "image_url": {"url": f"data:image/png;base64,{pixel}"},
                        },
                        {"type": "image_url", "image_url": {"url": "https://x.test/cat.jpg"}},
                        {"type": "image_url", "image_url": {"url": "https://x.test/render"}},
                    ],
                }
            ]
        }
    )
    assert request["contents"][0]["parts"] == [
        {"text": "What is this?"},
        {"inlineData": {"mimeType": "image/png", "data": pixel}},
        {"fileData": {"fileUri": "https://x.test/cat.jpg", "mimeType": "image/jpeg"}},
        {"fileData": {"fileUri": "https://x.test/render", "mimeType": "image/*"}},
    ]


def test_tools_become_function_declarations_with_json_schema() -> None:
    request = to_gemini_request({"messages": [user("hi")], "tools": [WEATHER_TOOL]})
    function = WEATHER_TOOL["function"]
    assert request["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": "Current weather in a city",
                    "parametersJsonSchema": function["parameters"],  # type: ignore[index]
                }
            ]
        }
    ]
    assert "toolConfig" not in request


@pytest.mark.parametrize(
    ("tool_choice", "config"),
    [
        ("auto", {"mode": "AUTO"}),
        ("required", {"mode": "ANY"}),
        ("none", {"mode": "NONE"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            {"mode": "ANY", "allowedFunctionNames": ["get_weather"]},
        ),
    ],
)
def test_tool_choice_becomes_the_function_calling_mode(
    tool_choice: Any, config: dict[str, Any]
) -> None:
    request = to_gemini_request(
        {"messages": [user("hi")], "tools": [WEATHER_TOOL], "tool_choice": tool_choice}
    )
    assert request["toolConfig"] == {"functionCallingConfig": config}


def test_sampling_parameters_become_the_generation_config() -> None:
    request = to_gemini_request(
        {
            "messages": [user("hi")],
            "temperature": 0.3,
            "top_p": 0.9,
            "max_tokens": 50,
            "max_completion_tokens": 100,
            "stop": "END",
            "n": 2,
            "seed": 7,
            "presence_penalty": 0.1,
            "frequency_penalty": 0.2,
            "response_format": {"type": "json_object"},
        }
    )
    assert request["generationConfig"] == {
        "temperature": 0.3,
        "topP": 0.9,
        "maxOutputTokens": 100,
        "stopSequences": ["END"],
        "candidateCount": 2,
        "seed": 7,
        "presencePenalty": 0.1,
        "frequencyPenalty": 0.2,
        "responseMimeType": "application/json",
    }


def test_a_json_schema_response_format_sends_the_schema() -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}}
    request = to_gemini_request(
        {
            "messages": [user("hi")],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "a", "schema": schema},
            },
        }
    )
    assert request["generationConfig"] == {
        "responseMimeType": "application/json",
        "responseJsonSchema": schema,
    }
