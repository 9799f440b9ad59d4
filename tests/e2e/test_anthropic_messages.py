"""``/v1/messages`` through a running gateway, with the official ``anthropic`` SDK.

To an Anthropic deployment the body and the events pass through untouched; to an
OpenAI-compatible one they are translated both ways. Either way the call is admitted,
routed, failed over and accounted like chat, and every failure is Anthropic's error JSON.
"""

from __future__ import annotations

import base64
import copy
import http.client
import itertools
import json
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
from starlette.applications import Starlette

from cli.nats_server import NatsServer
from schemas import estimate
from schemas.anthropic import input_tokens
from tests.e2e.conftest import MASTER_KEY, make_key
from tests.fakes.anthropic_server import signature_of
from tests.fakes.openai_server import ANSWER, TOOL_ARGS, FakeOpenAIState
from tests.harness import Gateway, write_config
from workers.protocols.messages.request import to_chat

pytestmark = pytest.mark.e2e
MASTER = {"authorization": f"Bearer {MASTER_KEY}"}
ANTHROPIC_KEY = "sk-ant-e2e"

# Prices written in the config, so each call's cost can be worked out by hand.
CLAUDE_PRICES = {"input_cost_per_token": "0.000003", "output_cost_per_token": "0.000015",
                 "cache_read_input_token_cost": "0.0000003",
                 "cache_creation_input_token_cost": "0.00000375"}
GPT_PRICES = {"input_cost_per_token": "0.000001", "output_cost_per_token": "0.000002"}

WEATHER: Any = {"name": "get_weather", "description": "The weather in a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                            "required": ["city"]}}
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\nfake image").decode()
PDF = base64.b64encode(b"%PDF-1.4 fake document").decode()
RECORDING = Path(__file__).parent / "recordings" / "claude_code_session.json"


@pytest.fixture(scope="module")
def gateway(
    fake_openai: tuple[str, FakeOpenAIState],
    fake_anthropic: tuple[str, Starlette],
    fake_gemini: tuple[str, Starlette],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    work = tmp_path_factory.mktemp("messages")

    def claude(alias: str, upstream: str, prices: dict[str, str] | None = None) -> dict[str, Any]:
        return {"model_name": alias, "litellm_params": {
            "model": f"anthropic/{upstream}", "api_base": fake_anthropic[0],
            "api_key": ANTHROPIC_KEY, **(prices or {})}}

    def gpt(alias: str, upstream: str, prices: dict[str, str] | None = None) -> dict[str, Any]:
        return {"model_name": alias, "litellm_params": {
            "model": f"openai/{upstream}", "api_base": fake_openai[0] + "/v1",
            "api_key": "os.environ/FAKE_OPENAI_KEY", **(prices or {})}}

    config = write_config(work / "config.yaml", {
        "model_list": [
            claude("claude", "claude-sonnet-4-20250514", CLAUDE_PRICES),
            # Claude Code asks for models by Anthropic's names: its small model goes to
            # an OpenAI-compatible deployment here.
            claude("claude-sonnet-4-20250514", "claude-sonnet-4-20250514"),
            gpt("claude-3-5-haiku-20241022", "gpt-4o-mini"),
            claude("claude-overloaded", "fail-529"),
            claude("claude-down", "fail-529"),
            claude("claude-early-overload", "fail-overloaded-early"),
            claude("claude-midstream", "fail-midstream"),
            gpt("gpt", "gpt-4o-mini", GPT_PRICES),
            gpt("gpt-broken", "fail-500"),
            gpt("gpt-midstream", "fail-midstream"),
            {"model_name": "gemini", "litellm_params": {
                "model": "gemini/gemini-2.0-flash", "api_base": fake_gemini[0],
                "api_key": "gemini-e2e"}},
        ],
        "router_settings": {"fallbacks": [{"claude-down": ["gpt"]},
                                          {"claude-early-overload": ["gpt"]}]},
        "general_settings": {"master_key": MASTER_KEY},
    })
    nats = NatsServer(work / "nats")
    nats.start()
    gw = Gateway(nats_url=nats.url, config_path=config, log_dir=work,
                 env={"FAKE_OPENAI_KEY": "sk-fake", "AIGW_ACCOUNTING_BATCH_AGE": "0.2",
                      "SERVER_ROOT_PATH": "/ai-api"})
    try:
        gw.start_accounting(work / "data")
        gw.start_worker("openai")
        gw.start_worker("anthropic")
        gw.start_worker("gemini")
        gw.start_ingress()
        gw.wait_ready(60)
        yield gw
    finally:
        gw.stop()
        nats.stop()


def _client(gateway: Gateway, key: str = MASTER_KEY, **kwargs: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.base_url, api_key=key, max_retries=0,
                               **kwargs)


def _logs(gateway: Gateway, key_id: str, expected: int,
          within: float = 20.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + within
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        r = httpx.get(gateway.base_url + "/v1/usage/logs", headers=MASTER, timeout=10,
                      params={"key_id": key_id, "limit": 1000, "days": 1})
        if r.status_code == 200:
            rows = r.json()["data"]
            if len(rows) >= expected:
                time.sleep(1.0)  # anything extra (a duplicate) would land by now
                r = httpx.get(gateway.base_url + "/v1/usage/logs", headers=MASTER,
                              timeout=10, params={"key_id": key_id, "limit": 1000, "days": 1})
                return list(r.json()["data"])
        time.sleep(0.2)
    raise AssertionError(f"{len(rows)} events after {within}s, expected {expected}: {rows}")


def _sse(lines: Iterator[str]) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) of each event of a raw SSE body."""
    events: list[tuple[str, dict[str, Any]]] = []
    name = ""
    for line in lines:
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            events.append((name, json.loads(line.removeprefix("data: "))))
    return events


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

    rows = _logs(gateway, key_id, expected=2)
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
    rows = _logs(gateway, key_id, expected=2)
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


def test_a_failed_native_attempt_falls_back_to_a_translated_one(gateway: Gateway) -> None:
    key_id, secret = make_key(gateway, alias="messages-fallback")
    message = _client(gateway, secret).messages.create(
        model="claude-down", max_tokens=50, messages=[{"role": "user", "content": "Hi"}])
    assert message.content[0].text == ANSWER  # type: ignore[union-attr]
    rows = _logs(gateway, key_id, expected=2)
    assert sorted((r["provider"], r["status"]) for r in rows) == [
        ("anthropic", "error"), ("openai", "ok")]


# --- count_tokens and errors -----------------------------------------------------------------


def test_count_tokens_is_the_gateways_estimate(gateway: Gateway) -> None:
    client = _client(gateway)
    body: dict[str, Any] = {"system": "You are terse.", "tools": [WEATHER],
                            "messages": [{"role": "user", "content": "How many tokens?"}]}
    counted = client.messages.count_tokens(model="claude", **body)
    assert counted.input_tokens == input_tokens(body) > 0
    assert client.messages.count_tokens(model="gpt", **body).input_tokens == counted.input_tokens
    with pytest.raises(anthropic.NotFoundError):
        client.messages.count_tokens(model="nope", **body)


def test_a_bad_key_is_an_anthropic_authentication_error(gateway: Gateway) -> None:
    with pytest.raises(anthropic.AuthenticationError) as caught:
        _client(gateway, "sk-wrong").messages.create(
            model="claude", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == 401
    assert caught.value.body == {"type": "error", "error": {
        "type": "authentication_error", "message": "Incorrect API key provided: ****."}}
    # Bearer works as well as x-api-key.
    r = httpx.post(gateway.base_url + "/v1/messages", headers=MASTER,
                   json={"model": "claude", "max_tokens": 5,
                         "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 200 and r.json()["type"] == "message"


@pytest.mark.parametrize(("content", "message", "counting_too"), [
    (b'{"model": "claude", "messages": [{"role": "user", "content": "x"}]}',
     "max_tokens: Field required", False),
    (b'{"model": "claude", "max_tokens": 5, "messages": []}', "messages: List should have",
     True),
    (b'{"model": "claude", "max_tokens": 5, "temperature": 3, '
     b'"messages": [{"role": "user", "content": "x"}]}', "temperature", False),
    (b'{"model": "claude", "max_tokens": 5, "messages": [{"role": "system", '
     b'"content": "x"}]}', "messages.0.role", True),
    (b'{"model": "claude", "max_tokens": ', "", True),
    (b"[1, 2]", "JSON object", True),
])
def test_a_bad_body_is_an_anthropic_invalid_request_error(
    gateway: Gateway, content: bytes, message: str, counting_too: bool
) -> None:
    paths = ["/v1/messages"] + (["/v1/messages/count_tokens"] if counting_too else [])
    for path in paths:
        r = httpx.post(gateway.base_url + path, content=content,
                       headers={"x-api-key": MASTER_KEY, "content-type": "application/json"})
        assert r.status_code == 400, r.text
        body = r.json()
        assert body["type"] == "error"
        assert body["error"]["type"] == "invalid_request_error"
        assert message in body["error"]["message"]


def test_errors_are_anthropic_shaped_with_the_right_status(gateway: Gateway) -> None:
    client = _client(gateway)
    user = [{"role": "user", "content": "x"}]
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.messages.create(model="no-such-model", max_tokens=5, messages=user)  # type: ignore[arg-type]
    assert missing.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    with pytest.raises(anthropic.InternalServerError) as overloaded:
        client.messages.create(model="claude-overloaded", max_tokens=5, messages=user)  # type: ignore[arg-type]
    assert overloaded.value.status_code == 503
    assert overloaded.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    with pytest.raises(anthropic.InternalServerError) as broken:
        client.messages.create(model="gpt-broken", max_tokens=5, messages=user)  # type: ignore[arg-type]
    assert broken.value.body["error"]["type"] == "api_error"  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError) as untranslatable:
        client.messages.create(model="gpt", max_tokens=5, messages=user,  # type: ignore[arg-type]
                               tools=[{"type": "web_search_20250305", "name": "web_search"}])
    assert "only by Anthropic" in untranslatable.value.body["error"]["message"]  # type: ignore[index]
    r = httpx.get(gateway.base_url + "/v1/messages", headers=MASTER)
    assert r.status_code == 405 and r.json()["type"] == "error"


def test_an_error_inside_a_native_stream_is_an_anthropic_error_event(gateway: Gateway) -> None:
    with httpx.stream("POST", gateway.base_url + "/v1/messages",
                      headers={"x-api-key": MASTER_KEY},
                      json={"model": "claude-midstream", "max_tokens": 100, "stream": True,
                            "messages": [{"role": "user", "content":
                                          "one two three four five six seven"}]}) as r:
        events = _sse(r.iter_lines())
    assert events[0][0] == "message_start"
    name, data = events[-1]
    assert name == "error"
    assert data == {"type": "error", "error": {"type": "overloaded_error",
                                               "message": "Overloaded"}}


def test_rate_limits_hold_and_answer_in_anthropic_shape(gateway: Gateway) -> None:
    _, secret = make_key(gateway, limits={"rpm": 1})
    client = _client(gateway, secret)
    client.messages.create(model="gpt", max_tokens=5, messages=[{"role": "user",
                                                                  "content": "x"}])
    with pytest.raises(anthropic.RateLimitError) as caught:
        client.messages.create(model="gpt", max_tokens=5, messages=[{"role": "user",
                                                                      "content": "x"}])
    assert caught.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]


@pytest.mark.parametrize("path", ["/messages", "/ai-api/v1/messages", "/ai-api/messages"])
def test_served_unversioned_and_under_the_root_path_too(gateway: Gateway, path: str) -> None:
    r = httpx.post(gateway.base_url + path, headers={"x-api-key": MASTER_KEY},
                   json={"model": "gpt", "max_tokens": 5,
                         "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 200 and r.json()["type"] == "message"
    r = httpx.post(gateway.base_url + path, headers={"x-api-key": "bad"}, json={})
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    r = httpx.post(gateway.base_url + path + "/count_tokens", headers={"x-api-key": MASTER_KEY},
                   json={"model": "gpt", "messages": [{"role": "user", "content": "four"}]})
    assert r.status_code == 200 and r.json() == {"input_tokens": 5}
    client = anthropic.Anthropic(base_url=gateway.base_url + "/ai-api", api_key=MASTER_KEY,
                                 max_retries=0)
    with pytest.raises(anthropic.NotFoundError):
        client.messages.create(model="nope", max_tokens=5,
                               messages=[{"role": "user", "content": "x"}])


# --- a Claude Code session, replayed ---------------------------------------------------------


def _accumulate(events: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """The content blocks a client builds from a stream's events."""
    blocks: dict[int, dict[str, Any]] = {}
    partial: dict[int, str] = {}
    for _, data in events:
        if data["type"] == "content_block_start":
            blocks[data["index"]] = dict(data["content_block"])
        elif data["type"] == "content_block_delta":
            block, delta = blocks[data["index"]], data["delta"]
            kind = delta["type"]
            if kind == "text_delta":
                block["text"] += delta["text"]
            elif kind == "thinking_delta":
                block["thinking"] += delta["thinking"]
            elif kind == "signature_delta":
                block["signature"] = delta["signature"]
            elif kind == "input_json_delta":
                partial[data["index"]] = partial.get(data["index"], "") + delta["partial_json"]
        elif data["type"] == "content_block_stop" and data["index"] in partial:
            blocks[data["index"]]["input"] = json.loads(partial[data["index"]])
    return [blocks[i] for i in sorted(blocks)]


def _shape(events: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, Any, Any]]:
    """Each event as (type, block index, block or delta type), runs of one delta kind
    collapsed to one entry."""
    shape = [(data["type"], data.get("index"),
              (data.get("content_block") or data.get("delta") or {}).get("type"))
             for _, data in events]
    return [key for key, _ in itertools.groupby(shape)]


def _replay(gateway: Gateway, model: str | None = None) -> list[Any]:
    """Send the recorded requests in order (to ``model`` instead of the recorded ones when
    given), each turn built from the answers before it as Claude Code builds it; the
    answers: a JSON body, or a stream's (event, data) pairs."""
    session = json.loads(RECORDING.read_text())
    headers = {**session["headers"], "x-api-key": MASTER_KEY}
    answers: list[Any] = []
    for request in session["requests"]:
        body = copy.deepcopy(request["body"])
        body["model"] = model or body["model"]
        if request["name"] == "turn-2":
            content = _accumulate(answers[-1])
            body["messages"][1]["content"] = content
            body["messages"][2]["content"][0]["tool_use_id"] = content[-1]["id"]
        if not body.get("stream"):
            r = httpx.post(gateway.base_url + session["path"], json=body, headers=headers)
            assert r.status_code == 200, r.text
            answers.append(r.json())
            continue
        with httpx.stream("POST", gateway.base_url + session["path"], json=body,
                          headers=headers, timeout=30) as r:
            assert r.status_code == 200, r.read()
            events = _sse(r.iter_lines())
        assert all(name == data["type"] for name, data in events)
        answers.append(events)
    return answers


def test_claude_code_session_replayed_against_an_anthropic_deployment(
    gateway: Gateway, fake_anthropic: tuple[str, Starlette],
    fake_openai: tuple[str, FakeOpenAIState],
) -> None:
    app = fake_anthropic[1]
    before = len(app.state.requests)
    quota, turn1, turn2 = _replay(gateway)

    # The small model's probe went to the OpenAI-compatible deployment, translated.
    assert quota["type"] == "message" and quota["role"] == "assistant"
    assert fake_openai[1].requests[-1]["max_tokens"] == 1
    assert fake_openai[1].requests[-1]["user"].startswith("user_")

    assert _shape(turn1) == [
        ("message_start", None, None), ("ping", None, None),
        ("content_block_start", 0, "thinking"), ("content_block_delta", 0, "thinking_delta"),
        ("content_block_delta", 0, "signature_delta"), ("content_block_stop", 0, None),
        ("content_block_start", 1, "text"), ("content_block_delta", 1, "text_delta"),
        ("content_block_stop", 1, None),
        ("content_block_start", 2, "tool_use"), ("content_block_delta", 2, "input_json_delta"),
        ("content_block_stop", 2, None),
        ("message_delta", None, None), ("message_stop", None, None)]
    recorded = json.loads(RECORDING.read_text())
    # The fake thinks about, and calls its tool with, the turn's user text.
    asked = " ".join(b["text"] for b in recorded["requests"][1]["body"]["messages"][0]["content"])
    thinking, text, tool_use = _accumulate(turn1)
    assert thinking["thinking"] == f"Thinking about: {asked}"
    assert thinking["signature"] == signature_of(thinking["thinking"])
    assert text == {"type": "text", "text": "Let me check."}
    assert tool_use["name"] == "Bash"
    assert tool_use["input"] == {"query": asked}
    assert turn1[-2][1]["delta"]["stop_reason"] == "tool_use"

    assert _shape(turn2) == [
        ("message_start", None, None), ("ping", None, None),
        ("content_block_start", 0, "thinking"), ("content_block_delta", 0, "thinking_delta"),
        ("content_block_delta", 0, "signature_delta"), ("content_block_stop", 0, None),
        ("content_block_start", 1, "text"), ("content_block_delta", 1, "text_delta"),
        ("content_block_stop", 1, None),
        ("message_delta", None, None), ("message_stop", None, None)]
    assert _accumulate(turn2)[1]["text"] == (
        "The tool returned: app.py\ncli.py\ntests/test_app.py")
    assert turn2[-2][1]["delta"]["stop_reason"] == "end_turn"

    # Upstream saw exactly what Claude Code sent: thinking signed, cache_control in place,
    # Claude Code's betas along.
    sent = app.state.requests[before:]
    assert len(sent) == 2
    assert sent[0]["system"] == recorded["requests"][1]["body"]["system"]
    assert sent[1]["messages"][1]["content"][0] == thinking
    assert sent[1]["messages"][2]["content"][0]["cache_control"] == {"type": "ephemeral"}
    assert app.state.last_headers["anthropic-beta"] == recorded["headers"]["anthropic-beta"]


def test_claude_code_session_replayed_against_an_openai_compatible_deployment(
    gateway: Gateway, fake_openai: tuple[str, FakeOpenAIState],
) -> None:
    quota, turn1, turn2 = _replay(gateway, model="gpt")
    assert quota["content"][0]["type"] == "text"
    for turn in (turn1, turn2):  # the fake calls the first tool whenever it has tools
        assert _shape(turn) == [
            ("message_start", None, None),
            ("content_block_start", 0, "tool_use"),
            ("content_block_delta", 0, "input_json_delta"),
            ("content_block_stop", 0, None),
            ("message_delta", None, None), ("message_stop", None, None)]
        [call] = _accumulate(turn)
        assert call["name"] == "Bash" and call["input"] == json.loads(TOOL_ARGS)
        assert turn[-2][1]["delta"]["stop_reason"] == "tool_use"
    sent = fake_openai[1].requests[-1]
    assert sent["messages"][0]["role"] == "system"
    assert sent["messages"][0]["content"].startswith("You are Claude Code")
    assert [m["role"] for m in sent["messages"][1:]] == ["user", "assistant", "tool"]
    assert sent["messages"][3] == {"role": "tool", "tool_call_id": "call_fake1",
                                   "content": "app.py\ncli.py\ntests/test_app.py"}
    assert [t["function"]["name"] for t in sent["tools"]] == ["Bash", "Glob", "Read"]


def test_a_body_over_the_cap_is_an_anthropic_request_too_large(gateway: Gateway) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    try:
        conn.putrequest("POST", "/v1/messages")
        conn.putheader("x-api-key", MASTER_KEY)
        conn.putheader("content-type", "application/json")
        conn.putheader("content-length", str(64 * 1024 * 1024))  # refused before it is sent
        conn.endheaders()
        response = conn.getresponse()
        assert response.status == 413
        body = json.loads(response.read())
    finally:
        conn.close()
    assert body["type"] == "error"
    assert body["error"]["type"] == "request_too_large"


def test_budgets_reserve_then_settle_with_the_real_cost(gateway: Gateway) -> None:
    key_id, secret = make_key(gateway, limits={"daily_budget_usd": "0.002"})
    client = _client(gateway, secret)
    user: Any = [{"role": "user", "content": "spend a little"}]
    # Reserved: the prompt's estimate and 100 output tokens at $0.000015, under the budget.
    made = client.messages.create(model="claude", max_tokens=100, messages=user)
    # 1000 output tokens could cost $0.015: refused before any upstream call.
    with pytest.raises(anthropic.RateLimitError) as caught:
        client.messages.create(model="claude", max_tokens=1000, messages=user)
    assert caught.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    cost = (made.usage.input_tokens * Decimal("0.000003")
            + made.usage.output_tokens * Decimal("0.000015"))
    deadline = time.monotonic() + 20
    while True:
        status = httpx.get(gateway.base_url + "/v1/usage/budget", timeout=10,
                           headers={"authorization": f"Bearer {secret}"}).json()
        daily = status["scopes"][0]["daily"]
        if Decimal(daily["reserved"]) == 0 and Decimal(daily["spent"]) == cost:
            break
        assert time.monotonic() < deadline, daily
        time.sleep(0.2)
    rows = _logs(gateway, key_id, expected=2)
    assert sorted(r["status"] for r in rows) == ["ok", "rejected"]


def test_a_translated_stream_cut_short_is_accounted_with_an_estimate(gateway: Gateway) -> None:
    key_id, secret = make_key(gateway, alias="messages-cut-stream")
    body = {"model": "gpt-midstream", "max_tokens": 100, "stream": True,
            "messages": [{"role": "user", "content": "please count this prompt of mine"}]}
    with httpx.stream("POST", gateway.base_url + "/v1/messages", json=body,
                      headers={"x-api-key": secret}) as r:
        events = _sse(r.iter_lines())
    texts = [d["delta"]["text"] for _, d in events if d.get("type") == "content_block_delta"]
    assert "".join(texts) == "Hello from the"  # the fake breaks off after three words
    name, data = events[-1]
    assert name == "error" and data["type"] == "error"
    assert data["error"]["type"] == "api_error"

    [row] = _logs(gateway, key_id, expected=1)
    assert row["status"] == "error" and row["usage_estimated"] is True
    assert row["prompt_tokens"] == estimate.prompt_tokens(to_chat(body))
    assert row["completion_tokens"] == max(3, -(-len("Hello from the") // 4))


def test_a_native_stream_that_fails_before_content_falls_back_cleanly(
    gateway: Gateway,
) -> None:
    """Anthropic's overloaded error right after message_start: nothing of the failed
    attempt reached the client, so the fallback's stream is the only one it sees."""
    key_id, secret = make_key(gateway, alias="messages-early-overload")
    with httpx.stream("POST", gateway.base_url + "/v1/messages",
                      headers={"x-api-key": secret},
                      json={"model": "claude-early-overload", "max_tokens": 50,
                            "stream": True,
                            "messages": [{"role": "user", "content": "Hi"}]}) as r:
        events = _sse(r.iter_lines())
    names = [name for name, _ in events]
    assert names.count("message_start") == 1 and "error" not in names
    assert "ping" not in names  # the translated stream has none: all of it is the fallback's
    texts = [d["delta"]["text"] for _, d in events if d.get("type") == "content_block_delta"]
    assert "".join(texts) == ANSWER
    rows = _logs(gateway, key_id, expected=2)
    assert sorted((r["provider"], r["status"]) for r in rows) == [
        ("anthropic", "error"), ("openai", "ok")]
