"""The Responses <-> chat translators, as pure functions."""

from __future__ import annotations

from typing import Any

import pytest

from ingress.protocols import responses as protocol
from ingress.protocols.responses_stream import ResponseStream, encode


def _chat(body: dict[str, Any], history: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    items = [*(history or []), *protocol.input_items(body.get("input"))]
    return protocol.to_chat(body, body["model"], items)


def test_a_string_input_with_instructions_becomes_a_system_and_a_user_message() -> None:
    chat = _chat({"model": "m", "input": "Hi", "instructions": "Be brief",
                  "max_output_tokens": 50, "temperature": 0.2, "top_p": 0.9, "user": "u1"})
    assert chat == {"model": "m", "messages": [{"role": "system", "content": "Be brief"},
                                               {"role": "user", "content": "Hi"}],
                    "max_completion_tokens": 50, "temperature": 0.2, "top_p": 0.9, "user": "u1"}


def test_items_become_messages_with_images_tool_calls_and_their_outputs() -> None:
    chat = _chat({"model": "m", "input": [
        {"role": "developer", "content": "rules"},
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "what is "},
            {"type": "input_image", "image_url": "data:image/png;base64,AAA", "detail": "low"}]},
        {"type": "message", "role": "assistant",
         "content": [{"type": "output_text", "text": "Let me look."}]},
        {"type": "function_call", "call_id": "call_1", "name": "look", "arguments": "{}"},
        {"type": "function_call", "call_id": "call_2", "name": "see", "arguments": "{\"a\":1}"},
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {"type": "function_call_output", "call_id": "call_1", "output": "a cat"},
        {"type": "function_call_output", "call_id": "call_2",
         "output": [{"type": "input_text", "text": "black"}]},
    ]})
    assert chat["messages"] == [
        {"role": "system", "content": "rules"},
        {"role": "user", "content": [
            {"type": "text", "text": "what is "},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA",
                                                "detail": "low"}}]},
        {"role": "assistant", "content": "Let me look.", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "look", "arguments": "{}"}},
            {"id": "call_2", "type": "function",
             "function": {"name": "see", "arguments": "{\"a\":1}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "a cat"},
        {"role": "tool", "tool_call_id": "call_2", "content": "black"},
    ]


def test_tools_tool_choice_reasoning_and_json_schema_translate() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    chat = _chat({
        "model": "m", "input": "x", "parallel_tool_calls": False,
        "tools": [{"type": "function", "name": "f", "description": "d",
                   "parameters": {"type": "object"}, "strict": True}],
        "tool_choice": {"type": "function", "name": "f"},
        "reasoning": {"effort": "high", "summary": "auto"},
        "text": {"format": {"type": "json_schema", "name": "out", "schema": schema,
                            "strict": True}},
    })
    assert chat["tools"] == [{"type": "function", "function": {
        "name": "f", "description": "d", "parameters": {"type": "object"}, "strict": True}}]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert chat["parallel_tool_calls"] is False
    assert chat["reasoning_effort"] == "high"
    assert chat["response_format"] == {"type": "json_schema", "json_schema": {
        "name": "out", "schema": schema, "strict": True}}
    assert "response_format" not in _chat({"model": "m", "input": "x",
                                           "text": {"format": {"type": "text"}}})
    assert _chat({"model": "m", "input": "x", "tool_choice": "required"})[
        "tool_choice"] == "required"


def test_a_stream_asks_for_usage() -> None:
    chat = _chat({"model": "m", "input": "x", "stream": True})
    assert chat["stream"] is True and chat["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize(("body", "param"), [
    ({"input": "x", "tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"input": "x", "tool_choice": {"type": "file_search"}}, "tool_choice"),
    ({"input": "x", "tool_choice": "sometimes"}, "tool_choice"),
    ({"input": "x", "background": True}, "background"),
    ({"input": "x", "conversation": "conv_1"}, "conversation"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
     "input[0].content[0].image_url"),
    ({"input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
    ({"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]},
     "input[0].call_id"),
    ({"input": "x", "text": {"format": {"type": "json_schema", "schema": {}}}}, "text.format"),
    ({"input": "x", "text": {"format": {"type": "yaml"}}}, "text.format.type"),
    ({}, "input"),
])
def test_what_chat_cannot_carry_is_refused_naming_the_parameter(
    body: dict[str, Any], param: str
) -> None:
    with pytest.raises(protocol.Unsupported) as err:
        _chat({"model": "m", **body})
    assert err.value.param == param


def test_input_items_get_ids_and_keep_their_own() -> None:
    items = protocol.input_items([{"role": "user", "content": "a"},
                                  {"type": "function_call", "id": "fc_mine", "call_id": "c",
                                   "name": "f", "arguments": "{}"}])
    assert items[0]["type"] == "message" and items[0]["id"].startswith("msg_")
    assert items[1]["id"] == "fc_mine"


def _completion(message: dict[str, Any], finish: str = "stop") -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion", "model": "up-model",
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 7, "total_tokens": 17,
                      "prompt_tokens_details": {"cached_tokens": 4},
                      "completion_tokens_details": {"reasoning_tokens": 3}, "cost": 0.5}}


def test_a_chat_answer_becomes_reasoning_message_and_function_call_items() -> None:
    base = protocol.shell("resp_1", {"model": "alias", "instructions": "i", "store": False},
                          "alias")
    response = protocol.from_chat(base, _completion({
        "role": "assistant", "content": "Sure.", "reasoning_content": "thinking...",
        "tool_calls": [{"id": "call_9", "type": "function",
                        "function": {"name": "f", "arguments": "{\"x\":1}"}}]}, "tool_calls"))
    assert response["id"] == "resp_1" and response["object"] == "response"
    assert response["status"] == "completed" and response["model"] == "up-model"
    assert response["instructions"] == "i" and response["store"] is False
    kinds = [item["type"] for item in response["output"]]
    assert kinds == ["reasoning", "message", "function_call"]
    reasoning, message, call = response["output"]
    assert reasoning["content"] == [{"type": "reasoning_text", "text": "thinking..."}]
    assert message["content"][0]["text"] == "Sure." and message["role"] == "assistant"
    assert (call["call_id"], call["name"], call["arguments"]) == ("call_9", "f", "{\"x\":1}")
    assert response["usage"] == {
        "input_tokens": 10, "input_tokens_details": {"cached_tokens": 4},
        "output_tokens": 7, "output_tokens_details": {"reasoning_tokens": 3},
        "total_tokens": 17, "cost": 0.5}


def test_an_answer_cut_at_its_length_is_incomplete() -> None:
    base = protocol.shell("resp_1", {}, "m")
    response = protocol.from_chat(base, _completion({"content": "Once"}, "length"))
    assert response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": "max_output_tokens"}


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"id": "c", "object": "chat.completion.chunk", "model": "up",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def test_a_text_stream_has_the_real_apis_event_order_and_sequence_numbers() -> None:
    stream = ResponseStream(protocol.shell("resp_1", {}, "m"))
    events = stream.start()
    for delta in ({"role": "assistant", "content": ""}, {"reasoning_content": "hm"},
                  {"content": "Hel"}, {"content": "lo"}):
        events += stream.chunk(_chunk(delta))
    events += stream.chunk(_chunk({}, "stop"))
    events += stream.finish({"prompt_tokens": 2, "completion_tokens": 3})
    assert [e["type"] for e in events] == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.content_part.added",
        "response.reasoning_text.delta", "response.reasoning_text.done",
        "response.content_part.done", "response.output_item.done",
        "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done",
        "response.output_item.done", "response.completed"]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    done = events[-1]["response"]
    assert done["status"] == "completed" and done["model"] == "up"
    assert done["output"][1]["content"][0]["text"] == "Hello"
    assert done["usage"]["output_tokens"] == 3
    assert events[12]["output_index"] == 1 and events[12]["text"] == "Hello"
    assert encode(events[0]).startswith(b"event: response.created\ndata: {")


def test_streamed_tool_calls_are_function_call_items_with_argument_deltas() -> None:
    stream = ResponseStream(protocol.shell("resp_1", {}, "m"))
    events: list[dict[str, Any]] = []
    events += stream.chunk(_chunk({"tool_calls": [{"index": 0, "id": "call_a",
                                                   "function": {"name": "f", "arguments": ""}}]}))
    events += stream.chunk(_chunk({"tool_calls": [{"index": 1, "id": "call_b",
                                                   "function": {"name": "g", "arguments": "{"}}]}))
    events += stream.chunk(_chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}))
    events += stream.chunk(_chunk({"tool_calls": [{"index": 1, "function": {"arguments": "}"}}]}))
    events += stream.finish(None)
    types = [e["type"] for e in events]
    assert types == ["response.output_item.added", "response.output_item.added",
                     "response.function_call_arguments.delta",
                     "response.function_call_arguments.delta",
                     "response.function_call_arguments.delta",
                     "response.function_call_arguments.done", "response.output_item.done",
                     "response.function_call_arguments.done", "response.output_item.done",
                     "response.completed"]
    output = events[-1]["response"]["output"]
    assert [(o["call_id"], o["name"], o["arguments"]) for o in output] == [
        ("call_a", "f", "{}"), ("call_b", "g", "{}")]


def test_a_stream_broken_off_ends_with_an_error_and_response_failed() -> None:
    stream = ResponseStream(protocol.shell("resp_1", {}, "m"))
    events = stream.start() + stream.chunk(_chunk({"content": "Hel"}))
    events += stream.fail({"message": "cut short", "type": "server_error",
                           "code": "worker_timeout"})
    assert [e["type"] for e in events[-2:]] == ["error", "response.failed"]
    assert events[-2]["code"] == "worker_timeout"
    assert events[-1]["response"]["status"] == "failed"
    assert events[-1]["response"]["error"] == {"code": "worker_timeout", "message": "cut short"}
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
