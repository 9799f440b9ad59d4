"""reasoning_effort, thinking and cache_control through the Anthropic translator: into
thinking budgets and cache_control blocks, and back as reasoning_content and signed
thinking blocks, streamed and not."""

from __future__ import annotations

from typing import Any

import pytest

from schemas.errors import ErrorKind
from schemas.usage import TokenUsage
from tests.workers.providers.reasoning_messages import EPHEMERAL, user
from workers.providers.anthropic.answers import StreamTranslator, from_anthropic_response
from workers.providers.anthropic.translate import to_anthropic_request
from workers.providers.base import UpstreamError

SIGNED = {"type": "thinking", "thinking": "Let me see.", "signature": "c2lnbmF0dXJl"}
REDACTED = {"type": "redacted_thinking", "data": "b3BhcXVl"}


def anthropic(**body: Any) -> dict[str, Any]:
    body.setdefault("messages", [user("hi")])
    return to_anthropic_request(body, "claude-test")


# --- Anthropic requests ---------------------------------------------------------------------


@pytest.mark.parametrize(("effort", "budget"), [
    ("minimal", 1024), ("low", 2048), ("medium", 8192), ("high", 16384), ("xhigh", 32768)])
def test_reasoning_effort_becomes_a_thinking_budget_with_room_for_the_answer(
    effort: str, budget: int
) -> None:
    request = anthropic(reasoning_effort=effort)
    assert request["thinking"] == {"type": "enabled", "budget_tokens": budget}
    # no cap asked: the budget on top of the default 4096 for the answer
    assert request["max_tokens"] == budget + 4096


def test_a_cap_above_the_budget_is_kept_as_the_total() -> None:
    assert anthropic(reasoning_effort="low", max_completion_tokens=10_000)["max_tokens"] == 10_000


def test_a_cap_at_or_below_the_budget_is_raised_by_the_budget() -> None:
    request = anthropic(reasoning_effort="medium", max_tokens=500)
    assert request["max_tokens"] == 8192 + 500
    assert request["thinking"]["budget_tokens"] < request["max_tokens"]


def test_effort_none_sends_no_thinking() -> None:
    request = anthropic(reasoning_effort="none")
    assert "thinking" not in request
    assert request["max_tokens"] == 4096


def test_an_unknown_effort_is_an_invalid_request_naming_reasoning_effort() -> None:
    with pytest.raises(UpstreamError) as caught:
        anthropic(reasoning_effort="extreme")
    assert caught.value.info.kind is ErrorKind.INVALID_REQUEST
    assert caught.value.info.param == "reasoning_effort"
    assert "extreme" in caught.value.info.message


def test_a_native_thinking_object_passes_through_and_wins_over_the_effort() -> None:
    native = {"type": "enabled", "budget_tokens": 3000}
    request = anthropic(thinking=native, reasoning_effort="high", max_tokens=1000)
    assert request["thinking"] == native
    assert request["max_tokens"] == 3000 + 1000


def test_cache_control_on_text_and_image_parts_reaches_the_blocks() -> None:
    content = [
        {"type": "text", "text": "long document", "cache_control": EPHEMERAL},
        {"type": "image_url", "image_url": {"url": "https://x/a.png"},
         "cache_control": {"type": "ephemeral", "ttl": "1h"}},
        {"type": "text", "text": "question"},
    ]
    blocks = anthropic(messages=[{"role": "user", "content": content}])["messages"][0]["content"]
    assert blocks[0] == {"type": "text", "text": "long document", "cache_control": EPHEMERAL}
    assert blocks[1]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
    assert "cache_control" not in blocks[2]


def test_cache_control_on_system_parts_sends_system_as_blocks() -> None:
    system = {"role": "system", "content": [
        {"type": "text", "text": "You are terse."},
        {"type": "text", "text": "Here is the manual.", "cache_control": EPHEMERAL}]}
    request = anthropic(messages=[system, user("hi")])
    assert request["system"] == [
        {"type": "text", "text": "You are terse."},
        {"type": "text", "text": "Here is the manual.", "cache_control": EPHEMERAL},
    ]


def test_a_system_without_cache_control_stays_one_string() -> None:
    system = {"role": "system", "content": [{"type": "text", "text": "a"},
                                            {"type": "text", "text": "b"}]}
    request = anthropic(messages=[system, {"role": "developer", "content": "c"}, user("hi")])
    assert request["system"] == "a\nb\n\nc"


def test_message_level_cache_control_marks_the_message_s_last_block() -> None:
    messages = [
        {"role": "system", "content": "rules", "cache_control": EPHEMERAL},
        {"role": "user", "content": "first", "cache_control": EPHEMERAL},
        {"role": "assistant", "content": "", "tool_calls": [{
            "id": "t1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "t1", "content": "42", "cache_control": EPHEMERAL},
    ]
    request = anthropic(messages=messages)
    assert request["system"] == [{"type": "text", "text": "rules", "cache_control": EPHEMERAL}]
    assert request["messages"][0]["content"] == [
        {"type": "text", "text": "first", "cache_control": EPHEMERAL}]
    assert request["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "t1", "content": "42",
         "cache_control": EPHEMERAL}]


def test_cache_control_on_tools_passes_beside_or_inside_function() -> None:
    tools = [
        {"type": "function", "function": {"name": "a"}, "cache_control": EPHEMERAL},
        {"type": "function", "function": {"name": "b", "cache_control": EPHEMERAL}},
        {"type": "function", "function": {"name": "c"}},
    ]
    sent = anthropic(tools=tools)["tools"]
    assert [t.get("cache_control") for t in sent] == [EPHEMERAL, EPHEMERAL, None]


def test_thinking_blocks_sent_back_open_the_assistant_turn() -> None:
    messages = [
        user("q"),
        {"role": "assistant", "content": "answer", "reasoning_content": "Let me see.",
         "thinking_blocks": [SIGNED, REDACTED]},
        user("more"),
    ]
    turn = anthropic(messages=messages)["messages"][1]
    assert turn == {"role": "assistant", "content": [
        SIGNED, REDACTED, {"type": "text", "text": "answer"}]}


def test_thinking_content_parts_are_accepted_too_and_go_first() -> None:
    content = [{"type": "text", "text": "answer"}, SIGNED]
    turn = anthropic(messages=[user("q"), {"role": "assistant", "content": content},
                               user("more")])["messages"][1]
    assert turn["content"] == [SIGNED, {"type": "text", "text": "answer"}]


def test_a_thinking_block_without_its_signature_is_an_invalid_request() -> None:
    unsigned = {"type": "thinking", "thinking": "x", "signature": None}
    with pytest.raises(UpstreamError) as caught:
        anthropic(messages=[user("q"), {"role": "assistant", "content": "a",
                                        "thinking_blocks": [unsigned]}, user("more")])
    assert caught.value.info.kind is ErrorKind.INVALID_REQUEST
    assert "signature" in caught.value.info.message


# --- Anthropic answers ----------------------------------------------------------------------


def test_thinking_comes_back_as_reasoning_content_and_signed_thinking_blocks() -> None:
    message = {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-test",
        "content": [
            REDACTED,
            {"type": "thinking", "thinking": "Let me see.", "signature": "c2lnbmF0dXJl"},
            {"type": "text", "text": "Four."},
        ],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 10, "output_tokens": 20, "cache_read_input_tokens": 100,
                  "cache_creation_input_tokens": 50},
    }
    response = from_anthropic_response(message, request_id="r", model="claude-test", created=1)
    reply = response["choices"][0]["message"]
    assert reply["content"] == "Four."
    assert reply["reasoning_content"] == "Let me see."
    assert reply["thinking_blocks"] == [REDACTED, SIGNED]
    assert response["usage"]["prompt_tokens"] == 160
    assert response["usage"]["prompt_tokens_details"] == {
        "cached_tokens": 100, "cache_write_tokens": 50}


def test_an_answer_without_thinking_has_no_reasoning_fields() -> None:
    message = {"id": "m", "content": [{"type": "text", "text": "hi"}], "usage": {}}
    reply = from_anthropic_response(message, request_id="r", model="m")["choices"][0]["message"]
    assert "reasoning_content" not in reply and "thinking_blocks" not in reply


def stream_of(events: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], StreamTranslator]:
    translator = StreamTranslator(request_id="r", model="claude-test", created=1)
    deltas = []
    for event in events:
        for chunk in translator.feed(event["type"], event):
            deltas.append(chunk["choices"][0]["delta"])
    return deltas, translator


def test_streamed_thinking_arrives_as_reasoning_deltas_then_one_signed_block() -> None:
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": {"id": "msg_1", "model": "claude-test", "usage": {
            "input_tokens": 5, "cache_read_input_tokens": 7, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0, "content_block": REDACTED},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1,
         "content_block": {"type": "thinking", "thinking": "", "signature": ""}},
        {"type": "content_block_delta", "index": 1,
         "delta": {"type": "thinking_delta", "thinking": "Let me "}},
        {"type": "content_block_delta", "index": 1,
         "delta": {"type": "thinking_delta", "thinking": "see."}},
        {"type": "content_block_delta", "index": 1,
         "delta": {"type": "signature_delta", "signature": "c2lnbmF0dXJl"}},
        {"type": "content_block_stop", "index": 1},
        {"type": "content_block_start", "index": 2,
         "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 2,
         "delta": {"type": "text_delta", "text": "Four."}},
        {"type": "content_block_stop", "index": 2},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
         "usage": {"output_tokens": 30}},
        {"type": "message_stop"},
    ]
    deltas, translator = stream_of(events)
    assert deltas == [
        {"role": "assistant", "content": ""},
        {"thinking_blocks": [REDACTED]},
        {"reasoning_content": "Let me "},
        {"reasoning_content": "see."},
        {"thinking_blocks": [SIGNED]},
        {"content": "Four."},
        {},
    ]
    assert translator.done
    assert translator.usage == TokenUsage(prompt_tokens=12, completion_tokens=30,
                                          cached_tokens=7)
