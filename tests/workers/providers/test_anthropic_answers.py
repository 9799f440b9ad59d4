"""The Anthropic adapter's answer translation: Messages API responses and usage into OpenAI
chat completions, and streamed Messages events into OpenAI chunks."""

from __future__ import annotations

from typing import Any

import pytest

from schemas.usage import TokenUsage
from workers.providers.anthropic.answers import (
    StreamTranslator,
    from_anthropic_response,
    usage_from_anthropic,
)

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
