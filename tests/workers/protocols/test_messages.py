"""The Messages API translated through chat: requests, answers and streams, pure."""

from __future__ import annotations

import json
from typing import Any

import pytest

from schemas import anthropic
from schemas.usage import TokenUsage
from workers.protocols.messages.request import to_chat
from workers.protocols.messages.response import to_message, tool_input
from workers.protocols.messages.stream import EventWriter, sse
from workers.providers.base import UpstreamError

WEATHER = {"name": "get_weather", "description": "Weather in a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
           "cache_control": {"type": "ephemeral"}}


def test_system_blocks_become_one_system_message_and_cache_control_is_dropped() -> None:
    chat = to_chat({
        "model": "m", "max_tokens": 50,
        "system": [{"type": "text", "text": "You are terse.",
                    "cache_control": {"type": "ephemeral"}},
                   {"type": "text", "text": "Answer in French."}],
        "messages": [{"role": "user", "content": "Hi"}],
    })
    assert chat == {"model": "m", "max_tokens": 50, "messages": [
        {"role": "system", "content": "You are terse.\n\nAnswer in French."},
        {"role": "user", "content": "Hi"}]}


def test_sampling_stop_sequences_and_user_map_to_chat_names() -> None:
    chat = to_chat({"model": "m", "max_tokens": 5, "temperature": 0.2, "top_p": 0.9,
                    "top_k": 40, "stop_sequences": ["END", "\n\n"], "stream": True,
                    "metadata": {"user_id": "u-1"}, "thinking": {"type": "enabled",
                                                                   "budget_tokens": 2048},
                    "messages": [{"role": "user", "content": "x"}]})
    assert chat["temperature"] == 0.2
    assert chat["top_p"] == 0.9
    assert chat["stop"] == ["END", "\n\n"]
    assert chat["stream"] is True
    assert chat["user"] == "u-1"
    assert "top_k" not in chat
    assert "thinking" not in chat


def test_tools_and_tool_choice_translate() -> None:
    base = {"model": "m", "max_tokens": 5, "tools": [WEATHER],
            "messages": [{"role": "user", "content": "x"}]}
    chat = to_chat(base)
    assert chat["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather in a city",
        "parameters": WEATHER["input_schema"]}}]
    assert to_chat({**base, "tool_choice": {"type": "any"}})["tool_choice"] == "required"
    assert to_chat({**base, "tool_choice": {"type": "none"}})["tool_choice"] == "none"
    named = to_chat({**base, "tool_choice": {"type": "tool", "name": "get_weather",
                                             "disable_parallel_tool_use": True}})
    assert named["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert named["parallel_tool_calls"] is False
    no_tools = to_chat({**base, "tools": None, "tool_choice": {"type": "auto"}})
    assert "tool_choice" not in no_tools


def test_tool_use_and_tool_result_round_trip_as_chat_tool_calls() -> None:
    chat = to_chat({"model": "m", "max_tokens": 5, "messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "sig"},
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
             "input": {"city": "Paris"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1",
             "content": [{"type": "text", "text": "18C"}, {"type": "text", "text": "sunny"}]},
            {"type": "text", "text": "And tomorrow?"}]},
    ]})
    assert chat["messages"] == [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "Let me check.", "tool_calls": [
            {"id": "toolu_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "18C\nsunny"},
        {"role": "user", "content": "And tomorrow?"},
    ]


def test_a_pure_tool_call_turn_has_null_content() -> None:
    chat = to_chat({"model": "m", "max_tokens": 5, "messages": [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f",
                                           "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                                      "content": "ok"}]}]})
    assert chat["messages"][1]["content"] is None
    assert chat["messages"][2] == {"role": "tool", "tool_call_id": "t", "content": "ok"}
    assert len(chat["messages"]) == 3


def test_images_and_pdfs_become_chat_parts() -> None:
    chat = to_chat({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                     "data": "iVBOR"}},
        {"type": "image", "source": {"type": "url", "url": "https://x/y.jpg"}},
        {"type": "document", "title": "a.pdf",
         "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBER"}},
        {"type": "document", "source": {"type": "text", "media_type": "text/plain",
                                        "data": "plain words"}},
        {"type": "text", "text": "Describe."}]}]})
    assert chat["messages"][0]["content"] == [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
        {"type": "image_url", "image_url": {"url": "https://x/y.jpg"}},
        {"type": "file", "file": {"filename": "a.pdf",
                                  "file_data": "data:application/pdf;base64,JVBER"}},
        {"type": "text", "text": "plain words"},
        {"type": "text", "text": "Describe."},
    ]


def test_an_image_in_a_tool_result_follows_the_tool_message() -> None:
    chat = to_chat({"model": "m", "max_tokens": 5, "messages": [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "shot",
                                           "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [
            {"type": "text", "text": "screenshot"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": "AAA"}}]}]}]})
    assert chat["messages"][2] == {"role": "tool", "tool_call_id": "t",
                                   "content": "screenshot"}
    assert chat["messages"][3]["content"] == [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA"}}]


@pytest.mark.parametrize("body", [
    {"tools": [{"type": "web_search_20250305", "name": "web_search"}]},
    {"messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "file", "file_id": "file_1"}}]}]},
    {"messages": [{"role": "user", "content": [{"type": "container_upload",
                                                 "file_id": "f"}]}]},
])
def test_what_only_anthropic_serves_is_refused(body: dict[str, Any]) -> None:
    request = {"model": "m", "max_tokens": 5,
               "messages": [{"role": "user", "content": "x"}], **body}
    with pytest.raises(UpstreamError) as caught:
        to_chat(request)
    assert caught.value.info.status == 400
    assert "only by Anthropic" in caught.value.info.message


def test_json_schema_output_becomes_response_format() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    chat = to_chat({"model": "m", "max_tokens": 5, "messages": [{"role": "user",
                                                                  "content": "x"}],
                    "output_config": {"format": {"type": "json_schema", "schema": schema}}})
    assert chat["response_format"]["json_schema"]["schema"] == schema


def test_a_chat_completion_becomes_a_message() -> None:
    completion = {"id": "chatcmpl-9", "model": "gpt-4o-mini", "choices": [{
        "index": 0, "finish_reason": "tool_calls",
        "message": {"role": "assistant", "content": "Checking.",
                    "reasoning_content": "they want weather",
                    "tool_calls": [{"id": "call_1", "type": "function", "function": {
                        "name": "get_weather", "arguments": '{"city":"Paris"}'}}]}}]}
    usage = TokenUsage(prompt_tokens=100, completion_tokens=20, cached_tokens=60)
    message = to_message(completion, usage, request_id="r", model="fallback")
    assert message == {
        "id": "msg_chatcmpl-9", "type": "message", "role": "assistant",
        "model": "gpt-4o-mini",
        "content": [
            {"type": "thinking", "thinking": "they want weather", "signature": ""},
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "call_1", "name": "get_weather",
             "input": {"city": "Paris"}}],
        "stop_reason": "tool_use", "stop_sequence": None,
        "usage": {"input_tokens": 40, "output_tokens": 20,
                  "cache_creation_input_tokens": 0, "cache_read_input_tokens": 60},
    }


@pytest.mark.parametrize(("finish", "stop"), [
    ("stop", "end_turn"), ("length", "max_tokens"), ("tool_calls", "tool_use"),
    ("content_filter", "refusal"), (None, "end_turn")])
def test_finish_reasons_map_to_stop_reasons(finish: str | None, stop: str) -> None:
    completion = {"choices": [{"message": {"content": "x"}, "finish_reason": finish}]}
    assert to_message(completion, TokenUsage(), request_id="r", model="m")[
        "stop_reason"] == stop


def test_tool_arguments_that_are_no_object_are_kept() -> None:
    assert tool_input('{"a":1}') == {"a": 1}
    assert tool_input("") == {}
    assert tool_input("[1,2]") == {"arguments": [1, 2]}
    assert tool_input("{broken") == {"arguments": "{broken"}


def _events(frames: list[bytes]) -> list[dict[str, Any]]:
    out = []
    for frame in frames:
        head, data = frame.decode().split("\n", 1)
        assert frame.endswith(b"\n\n")
        parsed = json.loads(data.removeprefix("data: "))
        assert head == f"event: {parsed['type']}"
        out.append(parsed)
    return out


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "gpt-x",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def test_a_stream_of_text_then_tool_calls_is_anthropic_events_in_order() -> None:
    writer = EventWriter(request_id="r", model="m")
    frames: list[bytes] = []
    for chunk in [
        _chunk({"role": "assistant", "content": ""}),
        _chunk({"reasoning_content": "think"}),
        _chunk({"content": "Let me "}),
        _chunk({"content": "check."}),
        _chunk({"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                                "function": {"name": "get_weather", "arguments": ""}}]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
        _chunk({"tool_calls": [{"index": 1, "id": "call_b", "type": "function",
                                "function": {"name": "get_time", "arguments": "{}"}}]}),
        _chunk({}, "tool_calls"),
    ]:
        frames += writer.feed(chunk)
    frames += writer.finish(TokenUsage(prompt_tokens=30, completion_tokens=12,
                                       cached_tokens=10))
    events = _events(frames)
    assert [e["type"] for e in events] == [
        "message_start",
        "content_block_start", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_delta",
        "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_delta",
        "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_stop",
        "message_delta", "message_stop"]
    start = events[0]["message"]
    assert start["id"] == "msg_chatcmpl-1"
    assert start["model"] == "gpt-x"
    assert start["content"] == [] and start["stop_reason"] is None
    assert events[1]["content_block"] == {"type": "thinking", "thinking": "",
                                          "signature": ""}
    assert events[2]["delta"] == {"type": "thinking_delta", "thinking": "think"}
    assert [e["index"] for e in events[1:15] if "index" in e] == [
        0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3]
    assert events[8]["content_block"] == {"type": "tool_use", "id": "call_a",
                                          "name": "get_weather", "input": {}}
    pieces = [e["delta"]["partial_json"] for e in events[9:11]]
    assert json.loads("".join(pieces)) == {"city": "Paris"}
    assert events[15] == {"type": "message_delta",
                          "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                          "usage": {"input_tokens": 20, "output_tokens": 12,
                                    "cache_creation_input_tokens": 0,
                                    "cache_read_input_tokens": 10}}


def test_an_empty_stream_still_starts_and_stops() -> None:
    writer = EventWriter(request_id="req1", model="m")
    events = _events(writer.finish(TokenUsage(prompt_tokens=3)))
    assert [e["type"] for e in events] == ["message_start", "message_delta", "message_stop"]
    assert events[0]["message"]["id"] == "msg_req1"


def test_sse_frames_name_the_event_by_its_type() -> None:
    assert sse({"type": "ping"}) == b'event: ping\ndata: {"type":"ping"}\n\n'


def test_count_tokens_estimate_counts_system_tools_blocks_and_images() -> None:
    body = {"model": "m", "system": "x" * 40, "tools": [WEATHER], "messages": [
        {"role": "user", "content": [
            {"type": "text", "text": "y" * 40},
            {"type": "image", "source": {"type": "url", "url": "u"}}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f",
                                           "input": {"a": 1}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                                      "content": "z" * 40}]}]}
    chars = 40 + 40 + len("f") + len(str({"a": 1})) + 40 + len(str(WEATHER))
    assert anthropic.input_tokens(body) == -(-chars // 4) + 4 * 3 + 85

