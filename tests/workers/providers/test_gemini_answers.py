"""The Gemini adapter's answer translation: generateContent responses and usage into OpenAI
chat completions, and streamed responses into OpenAI chunks."""

from __future__ import annotations

from typing import Any

import pytest

from schemas.errors import ErrorKind
from schemas.usage import TokenUsage
from workers.providers.base import UpstreamError
from workers.providers.gemini.adapter import (
    StreamTranslator,
    from_gemini_response,
    usage_from_gemini,
)

# -- response translation -----------------------------------------------------------------


def candidate(parts: list[dict[str, Any]], finish: str | None = "STOP") -> dict[str, Any]:
    found: dict[str, Any] = {"content": {"role": "model", "parts": parts}}
    if finish:
        found["finishReason"] = finish
    return found


def test_text_parts_join_and_thought_parts_become_reasoning_content() -> None:
    response = from_gemini_response(
        {
            "responseId": "r1",
            "candidates": [
                candidate([{"text": "hmm", "thought": True}, {"text": "Hello, "}, {"text": "you"}])
            ],
            "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2},
        },
        "gemini-2.5-flash",
        created=123,
    )
    assert response == {
        "id": "chatcmpl-r1",
        "object": "chat.completion",
        "created": 123,
        "model": "gemini-2.5-flash",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello, you",
                            "reasoning_content": "hmm"},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": TokenUsage(prompt_tokens=3, completion_tokens=2).to_openai(),
    }


@pytest.mark.parametrize(
    ("gemini", "openai"),
    [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("SPII", "content_filter"),
        ("IMAGE_SAFETY", "content_filter"),
        ("MALFORMED_FUNCTION_CALL", "stop"),
        ("FINISH_REASON_UNSPECIFIED", "stop"),
    ],
)
def test_finish_reasons_map_to_openai(gemini: str, openai: str) -> None:
    response = from_gemini_response({"candidates": [candidate([{"text": "x"}], gemini)]}, "m")
    assert response["choices"][0]["finish_reason"] == openai


def test_function_calls_become_tool_calls_and_finish_with_tool_calls() -> None:
    response = from_gemini_response(
        {
            "responseId": "r2",
            "candidates": [
                candidate(
                    [
                        {"functionCall": {"name": "f", "args": {"a": 1}}, "thoughtSignature": "s"},
                        {"functionCall": {"name": "g", "args": {}}},
                    ]
                )
            ],
        },
        "m",
    )
    choice = response["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    first, second = choice["message"]["tool_calls"]
    assert first["function"] == {"name": "f", "arguments": '{"a": 1}'}
    assert first["extra_content"] == {"google": {"thought_signature": "s"}}
    assert second["function"] == {"name": "g", "arguments": "{}"}
    assert first["id"].startswith("call_")
    assert first["id"] != second["id"]
    again = from_gemini_response(
        {"responseId": "r2", "candidates": [candidate([{"functionCall": {"name": "f"}}])]}, "m"
    )
    assert again["choices"][0]["message"]["tool_calls"][0]["id"] == first["id"]


def test_several_candidates_become_several_choices() -> None:
    response = from_gemini_response(
        {"candidates": [candidate([{"text": "a"}]), {**candidate([{"text": "b"}]), "index": 1}]},
        "m",
    )
    assert [(c["index"], c["message"]["content"]) for c in response["choices"]] == [
        (0, "a"),
        (1, "b"),
    ]


def test_a_blocked_prompt_becomes_an_empty_content_filter_choice() -> None:
    response = from_gemini_response({"promptFeedback": {"blockReason": "SAFETY"}}, "m")
    assert response["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": ""},
            "logprobs": None,
            "finish_reason": "content_filter",
        }
    ]


def test_thinking_tokens_count_once_in_completion_and_again_as_reasoning() -> None:
    usage = usage_from_gemini(
        {
            "promptTokenCount": 100,
            "toolUsePromptTokenCount": 10,
            "cachedContentTokenCount": 40,
            "candidatesTokenCount": 20,
            "thoughtsTokenCount": 30,
            "totalTokenCount": 160,
        }
    )
    assert usage == TokenUsage(
        prompt_tokens=110, completion_tokens=50, cached_tokens=40, reasoning_tokens=30
    )
    assert usage.total_tokens == 160


# -- stream translation -------------------------------------------------------------------


def test_a_text_stream_opens_with_the_role_and_ends_with_the_finish_reason() -> None:
    translator = StreamTranslator("m", created=5)
    chunks = translator.feed(
        {"responseId": "s1", "candidates": [candidate([{"text": "Hel"}], None)]}
    )
    chunks += translator.feed(
        {
            "responseId": "s1",
            "candidates": [candidate([{"text": "lo"}])],
            "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 2},
        }
    )
    assert [c["choices"][0]["delta"] for c in chunks] == [
        {"role": "assistant", "content": ""},
        {"content": "Hel"},
        {"content": "lo"},
    ]
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, "stop"]
    assert all(c["id"] == "chatcmpl-s1" and c["object"] == "chat.completion.chunk" for c in chunks)
    assert all("usage" not in c and c["choices"][0]["logprobs"] is None for c in chunks)
    assert translator.close() == TokenUsage(prompt_tokens=4, completion_tokens=2)


def test_a_streamed_function_call_is_one_whole_tool_call_delta() -> None:
    translator = StreamTranslator("m")
    chunks = translator.feed(
        {"candidates": [candidate([{"functionCall": {"name": "f", "args": {"x": 1}}}])]}
    )
    delta = chunks[1]["choices"][0]["delta"]
    assert delta["tool_calls"] == [
        {
            "index": 0,
            "id": delta["tool_calls"][0]["id"],
            "type": "function",
            "function": {"name": "f", "arguments": '{"x": 1}'},
        }
    ]
    assert chunks[1]["choices"][0]["finish_reason"] == "tool_calls"


def test_a_stream_without_a_finish_reason_ended_early() -> None:
    translator = StreamTranslator("m")
    translator.feed({"candidates": [candidate([{"text": "partial"}], None)]})
    with pytest.raises(UpstreamError) as caught:
        translator.close()
    assert caught.value.info.kind is ErrorKind.SERVER
    assert "ended early" in caught.value.info.message
