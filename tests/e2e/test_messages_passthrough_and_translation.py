"""``/v1/messages`` to an Anthropic deployment, passed through untouched, and to
OpenAI-compatible and Gemini ones, translated both ways: bodies, streams, tools, thinking,
and each call accounted with its exact cost (the official ``anthropic`` SDK as the client).
"""

from __future__ import annotations

import base64
import json
from decimal import Decimal
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from tests.e2e.conftest import MASTER_KEY, make_key
from tests.e2e.messages_gateway import (
    ANTHROPIC_KEY,
    WEATHER,
    _client,
    _sse,
    messages_gateway,  # noqa: F401 - the module's gateway
)
from tests.e2e.usage_logs import usage_logs
from tests.fakes.anthropic_server import signature_of
from tests.fakes.openai_server import ANSWER, TOOL_ARGS, FakeOpenAIState
from tests.harness import Gateway

pytestmark = pytest.mark.e2e
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\nfake image").decode()
PDF = base64.b64encode(b"%PDF-1.4 fake document").decode()


# --- to an Anthropic deployment: passed through ------------------------------------------


def test_native_create_sends_the_body_upstream_untouched(
    gateway: Gateway, fake_anthropic: tuple[str, Starlette]
) -> None:
    app = fake_anthropic[1]
    system: Any = [{"type": "text", "text": "You are a weather bot.",
                    "cache_control": {"type": "ephemeral"}}]
    tools: Any = [{**WEATHER, "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    messages: list[Any] = [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                     "data": PNG}},
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf",
                                        "data": PDF}},
        {"type": "text", "text": "What is shown?", "cache_control": {"type": "ephemeral"}}]}]
    client = _client(gateway)
    message = client.messages.create(
        model="claude", max_tokens=2048, system=system, tools=tools, messages=messages,
        thinking={"type": "enabled", "budget_tokens": 1024}, extra_body={"temperature": 1},
        extra_headers={"anthropic-beta": "interleaved-thinking-2025-05-14"})

    sent = app.state.last_request
    assert sent == {"model": "claude-sonnet-4-20250514", "max_tokens": 2048, "system": system,
                    "tools": tools, "messages": messages, "temperature": 1,
                    "thinking": {"type": "enabled", "budget_tokens": 1024}}
    assert app.state.last_headers["anthropic-beta"] == "interleaved-thinking-2025-05-14"
    assert app.state.last_headers["x-api-key"] == ANTHROPIC_KEY
    assert message.model == "claude-sonnet-4-20250514"
    thinking, text = message.content
    assert thinking.type == "thinking"
    assert thinking.signature == signature_of(thinking.thinking)
    assert text.type == "text" and text.text == "Hello! You said: What is shown?"
    assert message.stop_reason == "end_turn"

    # The signed thinking goes back with the next turn and the upstream accepts it.
    again = client.messages.create(
        model="claude", max_tokens=2048, thinking={"type": "enabled", "budget_tokens": 1024},
        messages=[*messages, {"role": "assistant", "content": [
            {"type": "thinking", "thinking": thinking.thinking,
             "signature": thinking.signature},
            {"type": "text", "text": text.text}]},
            {"role": "user", "content": "Thanks"}])
    assert again.content[-1].text == "Hello! You said: Thanks"  # type: ignore[union-attr]


def test_native_stream_events_are_the_upstreams_own(
    gateway: Gateway, fake_anthropic: tuple[str, Starlette]
) -> None:
    body = {"model": "claude-sonnet-4-20250514", "max_tokens": 2048, "stream": True,
            "thinking": {"type": "enabled", "budget_tokens": 1024}, "tools": [WEATHER],
            "messages": [{"role": "user", "content": "Weather in Paris? [tool]"}]}
    headers = {"x-api-key": ANTHROPIC_KEY, "anthropic-version": "2023-06-01"}
    with httpx.stream("POST", fake_anthropic[0] + "/v1/messages", json=body,
                      headers=headers) as r:
        direct = _sse(r.iter_lines())
    with httpx.stream("POST", gateway.base_url + "/v1/messages",
                      json={**body, "model": "claude"},
                      headers={"x-api-key": MASTER_KEY,
                               "anthropic-version": "2023-06-01"}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        relayed = _sse(r.iter_lines())

    def same_ids(events: list[tuple[str, dict[str, Any]]]) -> str:
        text = json.dumps(events)
        for n in range(len(text)):
            if text.startswith("msg_fake", n):
                text = text.replace(text[n:n + 12], "msg_X")
            if text.startswith("toolu_fake", n):
                text = text.replace(text[n:n + 14], "toolu_X")
        return text

    assert same_ids(relayed) == same_ids(direct)
    assert [name for name, _ in relayed][:2] == ["message_start", "ping"]
    assert [name for name, _ in relayed][-2:] == ["message_delta", "message_stop"]
    assert all(name == data["type"] for name, data in relayed)


def test_native_sdk_stream_accumulates_thinking_text_and_tool_use(gateway: Gateway) -> None:
    client = _client(gateway)
    with client.messages.stream(
        model="claude", max_tokens=2048, tools=[WEATHER],
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=[{"role": "user", "content": "Weather in Paris? [tool]"}],
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start"
    assert "thinking" in kinds and "signature" in kinds and "input_json" in kinds
    assert kinds[-1] == "message_stop"
    assert [b.type for b in final.content] == ["thinking", "text", "tool_use"]
    assert final.content[0].signature == signature_of(final.content[0].thinking)  # type: ignore[union-attr]
    assert final.content[2].input == {"query": "Weather in Paris? [tool]"}  # type: ignore[union-attr]
    assert final.stop_reason == "tool_use"


def test_native_calls_are_accounted_once_with_cache_tokens_and_exact_cost(
    gateway: Gateway,
) -> None:
    key_id, secret = make_key(gateway, alias="messages-native-usage")
    client = _client(gateway, secret)
    prompt = "Count me [cache]"
    made = client.messages.create(model="claude", max_tokens=100,
                                  messages=[{"role": "user", "content": prompt}],
                                  metadata={"user_id": "user-42"})
    assert made._request_id  # the gateway's request id, as Anthropic's SDK reads it
    with client.messages.stream(model="claude", max_tokens=100,
                                messages=[{"role": "user", "content": prompt}],
                                metadata={"user_id": "user-42"}) as stream:
        streamed = stream.get_final_message()
    for message in (made, streamed):
        assert message.usage.cache_read_input_tokens == 1024
        assert message.usage.cache_creation_input_tokens == 256

    rows = usage_logs(gateway, key_id, expected=2)
    assert len(rows) == 2
    assert sorted(r["streamed"] for r in rows) == [False, True]
    assert made._request_id in {r["request_id"] for r in rows}
    for row, message in zip(sorted(rows, key=lambda r: r["streamed"]), (made, streamed),
                            strict=True):
        usage = message.usage
        assert row["status"] == "ok"
        assert row["endpoint"] == "messages"
        assert row["provider"] == "anthropic"
        assert row["end_user"] == "user-42"
        assert row["prompt_tokens"] == usage.input_tokens + 1024 + 256
        assert row["cached_tokens"] == 1024
        assert row["cache_write_tokens"] == 256
        assert row["completion_tokens"] == usage.output_tokens
        expected = (usage.input_tokens * Decimal("0.000003")
                    + usage.output_tokens * Decimal("0.000015")
                    + 1024 * Decimal("0.0000003") + 256 * Decimal("0.00000375"))
        assert Decimal(row["cost"]) == expected


# --- to an OpenAI-compatible deployment: translated ----------------------------------------


def test_translated_tool_round_trip(
    gateway: Gateway, fake_openai: tuple[str, FakeOpenAIState]
) -> None:
    state = fake_openai[1]
    client = _client(gateway)
    question: Any = {"role": "user", "content": "Weather in Paris?"}
    first = client.messages.create(
        model="gpt", max_tokens=200, system="Be brief.", tools=[WEATHER],
        tool_choice={"type": "any"}, messages=[question])
    sent = state.requests[-1]
    assert sent["messages"] == [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "Weather in Paris?"}]
    assert sent["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": WEATHER["description"],
        "parameters": WEATHER["input_schema"]}}]
    assert sent["tool_choice"] == "required"
    assert sent["max_tokens"] == 200
    assert first.stop_reason == "tool_use"
    [call] = first.content
    assert call.type == "tool_use"
    assert call.id == "call_fake1" and call.name == "get_weather"
    assert call.input == json.loads(TOOL_ARGS)
    assert first.id.startswith("msg_")

    turns: Any = [question,
                  {"role": "assistant", "content": [call.model_dump()]},
                  {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id,
                                                "content": "18C and sunny"}]}]
    answer = client.messages.create(model="gpt", max_tokens=200, tools=[WEATHER],
                                    messages=turns)
    sent = state.requests[-1]
    assert sent["messages"][1:] == [
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_fake1", "type": "function",
            "function": {"name": "get_weather", "arguments": json.dumps(
                json.loads(TOOL_ARGS), separators=(",", ":"))}}]},
        {"role": "tool", "tool_call_id": "call_fake1", "content": "18C and sunny"}]
    assert answer.stop_reason == "tool_use"  # the fake calls a tool whenever it has tools


def test_translated_stream_of_tool_use_is_anthropic_events_in_order(gateway: Gateway) -> None:
    with httpx.stream("POST", gateway.base_url + "/v1/messages",
                      headers={"x-api-key": MASTER_KEY, "anthropic-version": "2023-06-01"},
                      json={"model": "gpt", "max_tokens": 100, "stream": True,
                            "tools": [WEATHER],
                            "messages": [{"role": "user", "content": "Paris?"}]}) as r:
        events = _sse(r.iter_lines())
    names = [name for name, _ in events]
    assert names[:2] == ["message_start", "content_block_start"]
    assert set(names[2:-3]) == {"content_block_delta"}
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert events[1][1]["content_block"] == {"type": "tool_use", "id": "call_fake1",
                                             "name": "get_weather", "input": {}}
    pieces = "".join(d["delta"]["partial_json"] for _, d in events[2:-3])
    assert json.loads(pieces) == json.loads(TOOL_ARGS)
    delta = events[-2][1]
    assert delta["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert delta["usage"]["output_tokens"] == 9

    client = _client(gateway)
    with client.messages.stream(model="gpt", max_tokens=100, tools=[WEATHER],
                                messages=[{"role": "user", "content": "Paris?"}]) as stream:
        final = stream.get_final_message()
    assert final.content[0].input == json.loads(TOOL_ARGS)  # type: ignore[union-attr]


def test_translated_text_stream_with_stop_sequences(
    gateway: Gateway, fake_openai: tuple[str, FakeOpenAIState]
) -> None:
    client = _client(gateway)
    with client.messages.stream(model="gpt", max_tokens=100, stop_sequences=["fake"],
                                extra_body={"temperature": 0.5, "top_p": 0.9},
                                messages=[{"role": "user", "content": "Hi"}]) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    sent = fake_openai[1].requests[-1]
    assert sent["stop"] == ["fake"]
    assert sent["temperature"] == 0.5 and sent["top_p"] == 0.9
    assert "".join(texts) == ANSWER[:ANSWER.find("fake")]
    assert final.content[0].text == "".join(texts)  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn"


def test_translated_calls_are_accounted_with_exact_cost(gateway: Gateway) -> None:
    key_id, secret = make_key(gateway, alias="messages-translated-usage")
    client = _client(gateway, secret)
    made = client.messages.create(model="gpt", max_tokens=50,
                                  messages=[{"role": "user", "content": "Hi there"}])
    with client.messages.stream(model="gpt", max_tokens=50,
                                messages=[{"role": "user", "content": "Hi there"}]) as stream:
        streamed = stream.get_final_message()
    rows = usage_logs(gateway, key_id, expected=2)
    assert len(rows) == 2
    for row, message in zip(sorted(rows, key=lambda r: r["streamed"]), (made, streamed),
                            strict=True):
        assert row["status"] == "ok" and row["endpoint"] == "messages"
        assert row["provider"] == "openai"
        assert row["prompt_tokens"] == message.usage.input_tokens > 0
        assert row["completion_tokens"] == message.usage.output_tokens > 0
        assert Decimal(row["cost"]) == (message.usage.input_tokens * Decimal("0.000001")
                                        + message.usage.output_tokens * Decimal("0.000002"))


def test_translated_to_gemini_tools_and_thinking(gateway: Gateway) -> None:
    client = _client(gateway)
    question: Any = {"role": "user", "content": "Weather in Paris? USE_TOOL"}
    first = client.messages.create(model="gemini", max_tokens=200, tools=[WEATHER],
                                   messages=[question])
    assert first.stop_reason == "tool_use"
    call = first.content[-1]
    assert call.type == "tool_use" and call.name == "get_weather"
    turns: Any = [question, {"role": "assistant", "content": [call.model_dump()]},
                  {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id,
                                                "content": "18C and sunny"}]}]
    answer = client.messages.create(model="gemini", max_tokens=200, tools=[WEATHER],
                                    messages=turns)
    assert answer.stop_reason == "end_turn"
    assert "18C and sunny" in answer.content[-1].text  # type: ignore[union-attr]

    with client.messages.stream(model="gemini", max_tokens=200,
                                messages=[{"role": "user", "content": "Hello THINK"}]) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert final.usage.output_tokens > 0
