"""Serving a cached answer in either shape: pure conversions and the hit responses."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import Any

from fastapi.responses import StreamingResponse

from ingress.cache.store import CachedAnswer
from ingress.dispatch.replay import assemble, json_hit, split, stream_hit
from schemas.usage import TokenUsage

USAGE = TokenUsage(prompt_tokens=5, completion_tokens=4)
META = {"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 7, "model": "m",
        "system_fingerprint": "fp"}


def chunk(delta: dict[str, Any], finish: str | None = None, index: int = 0) -> str:
    return json.dumps({**META, "choices": [
        {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}]})


TEXT_CHUNKS = [chunk({"role": "assistant", "content": ""}), chunk({"content": "Hello"}),
               chunk({"content": " there"}), chunk({}, "stop")]
TOOL_CHUNKS = [
    chunk({"role": "assistant", "content": None}),
    chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                           "function": {"name": "weather", "arguments": ""}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
    chunk({}, "tool_calls"),
]
RESPONSE: dict[str, Any] = {
    "id": "chatcmpl-9", "object": "chat.completion", "created": 7, "model": "m",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "Hello there",
                                 "refusal": None, "annotations": []},
         "logprobs": None, "finish_reason": "stop"},
        {"index": 1, "message": {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "weather", "arguments": "{}"}}]},
         "logprobs": None, "finish_reason": "tool_calls"},
    ],
    "usage": {**USAGE.to_openai(), "cost": 0.25},
}


def cached(**fields: Any) -> CachedAnswer:
    return CachedAnswer(stored_at=time.time() - 3, provider="openai", usage=USAGE,
                        cost=Decimal("0.25"), **fields)


def test_chunks_add_up_to_the_message_they_streamed() -> None:
    response = assemble(TEXT_CHUNKS, USAGE)
    assert response["object"] == "chat.completion"
    assert (response["id"], response["created"], response["model"]) == ("chatcmpl-9", 7, "m")
    assert response["system_fingerprint"] == "fp"
    assert response["choices"] == [{
        "index": 0, "message": {"role": "assistant", "content": "Hello there"},
        "logprobs": None, "finish_reason": "stop"}]
    assert response["usage"] == USAGE.to_openai()


def test_streamed_tool_call_arguments_are_joined() -> None:
    message = assemble(TOOL_CHUNKS, USAGE)["choices"][0]["message"]
    assert message["content"] is None
    assert message["tool_calls"] == [{"id": "call_1", "type": "function", "function": {
        "name": "weather", "arguments": '{"city": "Paris"}'}}]


def test_choices_are_kept_apart_by_index() -> None:
    chunks = [chunk({"content": "a"}, index=1), chunk({"content": "b"}, index=0),
              chunk({"content": "c"}, index=1)]
    choices = assemble(chunks, USAGE)["choices"]
    assert [c["message"]["content"] for c in choices] == ["b", "ac"]


def test_a_response_splits_into_one_delta_and_one_finish_per_choice() -> None:
    chunks = [json.loads(c) for c in split(RESPONSE)]
    assert len(chunks) == 4
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == "chatcmpl-9"
               for c in chunks)
    first = chunks[0]["choices"][0]
    assert first["delta"] == {"role": "assistant", "content": "Hello there"}
    assert first["finish_reason"] is None
    assert chunks[1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None,
                                       "finish_reason": "stop"}
    tool = chunks[2]["choices"][0]["delta"]["tool_calls"][0]
    assert tool["index"] == 0
    assert tool["function"] == {"name": "weather", "arguments": "{}"}
    assert "usage" not in chunks[0]


def test_split_then_assemble_gives_the_messages_back() -> None:
    again = assemble(split(RESPONSE), USAGE)
    for before, after in zip(RESPONSE["choices"], again["choices"], strict=True):
        assert after["finish_reason"] == before["finish_reason"]
        assert after["message"].get("content") == before["message"]["content"]
        assert after["message"].get("tool_calls") == before["message"].get("tool_calls")


def test_a_json_hit_is_free_and_says_so() -> None:
    response = json_hit(cached(response=RESPONSE))
    body = json.loads(bytes(response.body))
    assert body["usage"]["cost"] == 0
    assert body["usage"]["prompt_tokens"] == 5
    assert body["choices"] == RESPONSE["choices"]
    assert response.headers["x-aigw-cache"] == "hit"
    assert response.headers["x-aigw-cost-usd"] == "0"
    assert int(response.headers["age"]) >= 3


def test_a_json_hit_does_not_change_the_stored_answer() -> None:
    answer = cached(response=RESPONSE)
    json_hit(answer)
    assert answer.response is not None
    assert answer.response["usage"]["cost"] == 0.25


def test_a_json_hit_on_a_streamed_entry_is_assembled() -> None:
    body = json.loads(bytes(json_hit(cached(chunks=TEXT_CHUNKS)).body))
    assert body["choices"][0]["message"]["content"] == "Hello there"
    assert body["usage"]["cost"] == 0


async def read(response: StreamingResponse) -> list[str]:
    parts = [part if isinstance(part, bytes) else str(part).encode()
             async for part in response.body_iterator]
    text = b"".join(parts).decode()
    return [e.removeprefix("data: ") for e in text.split("\n\n") if e]


async def test_a_stream_hit_replays_the_chunks_exactly_then_done() -> None:
    response = stream_hit(cached(chunks=TEXT_CHUNKS), include_usage=False)
    assert response.headers["x-aigw-cache"] == "hit"
    assert response.media_type == "text/event-stream"
    assert await read(response) == [*TEXT_CHUNKS, "[DONE]"]


async def test_a_stream_hit_ends_with_a_free_usage_chunk_when_asked() -> None:
    events = await read(stream_hit(cached(chunks=TEXT_CHUNKS), include_usage=True))
    assert events[-1] == "[DONE]"
    usage_chunk = json.loads(events[-2])
    assert usage_chunk["choices"] == []
    assert usage_chunk["id"] == "chatcmpl-9"
    assert usage_chunk["usage"]["cost"] == 0
    assert usage_chunk["usage"]["completion_tokens"] == 4


async def test_a_stream_hit_on_a_non_streamed_entry_is_split() -> None:
    events = await read(stream_hit(cached(response=RESPONSE), include_usage=False))
    assert events[-1] == "[DONE]"
    assert events[:-1] == split(RESPONSE)
