"""reasoning_effort, thinking and cache_control through the Anthropic and Gemini translators,
both ways, streamed and not; then through each adapter against its fake API over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from schemas.config import Deployment
from schemas.errors import ErrorKind
from schemas.usage import TokenUsage
from tests.fakes import anthropic_server, gemini_server
from tests.fakes.server import serve
from workers.providers.anthropic.adapter import AnthropicProvider
from workers.providers.anthropic.answers import StreamTranslator, from_anthropic_response
from workers.providers.anthropic.translate import to_anthropic_request
from workers.providers.base import UpstreamCall, UpstreamError
from workers.providers.gemini.adapter import GeminiProvider
from workers.providers.gemini.answers import (
    StreamTranslator as GeminiStreamTranslator,
)
from workers.providers.gemini.answers import from_gemini_response, usage_from_gemini
from workers.providers.gemini.translate import to_gemini_request
from workers.providers.openai.adapter import split_usage

EPHEMERAL = {"type": "ephemeral"}
SIGNED = {"type": "thinking", "thinking": "Let me see.", "signature": "c2lnbmF0dXJl"}
REDACTED = {"type": "redacted_thinking", "data": "b3BhcXVl"}


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def anthropic(**body: Any) -> dict[str, Any]:
    body.setdefault("messages", [user("hi")])
    return to_anthropic_request(body, "claude-test")


def gemini(**body: Any) -> dict[str, Any]:
    body.setdefault("messages", [user("hi")])
    return to_gemini_request(body)


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


# --- Gemini ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("effort", "config"), [
    ("none", {"thinkingBudget": 0}),
    ("minimal", {"thinkingBudget": 512, "includeThoughts": True}),
    ("low", {"thinkingBudget": 2048, "includeThoughts": True}),
    ("medium", {"thinkingBudget": 8192, "includeThoughts": True}),
    ("high", {"thinkingBudget": 24576, "includeThoughts": True}),
    ("xhigh", {"thinkingBudget": -1, "includeThoughts": True}),
])
def test_reasoning_effort_becomes_a_gemini_thinking_config(
    effort: str, config: dict[str, Any]
) -> None:
    assert gemini(reasoning_effort=effort)["generationConfig"]["thinkingConfig"] == config


def test_a_native_thinking_config_passes_through() -> None:
    native = {"thinkingBudget": -1, "includeThoughts": False}
    request = gemini(thinkingConfig=native, reasoning_effort="high")
    assert request["generationConfig"]["thinkingConfig"] == native


def test_an_anthropic_style_thinking_maps_to_a_gemini_budget() -> None:
    request = gemini(thinking={"type": "enabled", "budget_tokens": 1500})
    assert request["generationConfig"]["thinkingConfig"] == {
        "thinkingBudget": 1500, "includeThoughts": True}


def test_an_unknown_effort_is_refused_by_the_gemini_translator() -> None:
    with pytest.raises(UpstreamError) as caught:
        gemini(reasoning_effort="max")
    assert caught.value.info.param == "reasoning_effort"


def test_no_effort_sends_no_thinking_config() -> None:
    assert "generationConfig" not in gemini()


def test_gemini_cache_control_parts_are_read_as_plain_parts() -> None:
    content = [{"type": "text", "text": "doc", "cache_control": EPHEMERAL}]
    request = gemini(messages=[{"role": "user", "content": content}])
    assert request["contents"] == [{"role": "user", "parts": [{"text": "doc"}]}]


def test_gemini_thoughts_and_cached_tokens_come_back() -> None:
    response = from_gemini_response({
        "responseId": "r",
        "candidates": [{"content": {"role": "model", "parts": [
            {"text": "Pondering. ", "thought": True}, {"text": "More.", "thought": True},
            {"text": "Done."}]}, "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 100, "cachedContentTokenCount": 60,
                          "candidatesTokenCount": 2, "thoughtsTokenCount": 9},
    }, "gemini-2.5-flash")
    message = response["choices"][0]["message"]
    assert (message["content"], message["reasoning_content"]) == ("Done.", "Pondering. More.")
    assert response["usage"]["completion_tokens"] == 11
    assert response["usage"]["completion_tokens_details"] == {"reasoning_tokens": 9}
    assert response["usage"]["prompt_tokens_details"] == {"cached_tokens": 60}
    assert usage_from_gemini({"cachedContentTokenCount": 3}).cached_tokens == 3


def test_gemini_streamed_thoughts_arrive_as_reasoning_deltas() -> None:
    translator = GeminiStreamTranslator("gemini-2.5-flash", created=1)
    chunks: list[dict[str, Any]] = [
        {"responseId": "r", "candidates": [{"content": {"role": "model", "parts": [
            {"text": "Hmm.", "thought": True}]}}]},
        {"responseId": "r", "candidates": [{"content": {"role": "model", "parts": [
            {"text": "Yes."}]}, "finishReason": "STOP"}],
         "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 1,
                           "thoughtsTokenCount": 3, "cachedContentTokenCount": 2}},
    ]
    deltas = [c["choices"][0]["delta"] for chunk in chunks for c in translator.feed(chunk)]
    assert deltas == [{"role": "assistant", "content": ""}, {"reasoning_content": "Hmm."},
                      {"content": "Yes."}]
    assert translator.close() == TokenUsage(prompt_tokens=4, completion_tokens=4,
                                            cached_tokens=2, reasoning_tokens=3)


# --- the adapters over HTTP against the fakes ----------------------------------------------

ANT_KEY = "sk-ant-reasoning"
GEM_KEY = "gemini-reasoning"


@pytest.fixture(scope="module")
def fake_anthropic() -> Iterator[tuple[str, Any]]:
    app = anthropic_server.create_app(api_key=ANT_KEY)
    with serve(app) as url:
        yield url, app


@pytest.fixture(scope="module")
def fake_gemini() -> Iterator[tuple[str, Any]]:
    app = gemini_server.create_app(api_key=GEM_KEY)
    with serve(app) as url:
        yield url, app


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as http:
        yield http


def call(provider: str, url: str, key: str, body: dict[str, Any]) -> UpstreamCall:
    model = "claude-sonnet-4-5" if provider == "anthropic" else "gemini-2.5-flash"
    deployment = Deployment(id=f"{provider}#1", model_name=provider, provider=provider,
                            upstream_model=model, api_key=SecretStr(key), api_base=url,
                            timeout=10)
    return UpstreamCall(deployment=deployment, body={"model": model, **body},
                        request_id="req-r")


async def test_anthropic_thinking_round_trips_through_the_fake_api(
    client: httpx.AsyncClient, fake_anthropic: tuple[str, Any]
) -> None:
    url, app = fake_anthropic
    provider = AnthropicProvider(client)
    first = [user("what is 2+2 [redacted]")]
    done = await provider.complete(call("anthropic", url, ANT_KEY, {
        "messages": first, "reasoning_effort": "low"}))
    sent = app.state.last_request
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert sent["max_tokens"] == 2048 + 4096
    reply = done.response["choices"][0]["message"]
    assert reply["reasoning_content"] == "Thinking about: what is 2+2 [redacted]"
    assert [b["type"] for b in reply["thinking_blocks"]] == ["redacted_thinking", "thinking"]
    # the next turn sends the blocks back; the fake checks the signature it issued
    history = [*first, {"role": "assistant", "content": reply["content"],
                        "thinking_blocks": reply["thinking_blocks"]}, user("and 3+3?")]
    again = await provider.complete(call("anthropic", url, ANT_KEY, {
        "messages": history, "reasoning_effort": "low"}))
    assert app.state.last_request["messages"][1]["content"][:2] == reply["thinking_blocks"]
    assert again.response["choices"][0]["message"]["reasoning_content"]


async def test_anthropic_streamed_thinking_and_cache_counts_through_the_fake_api(
    client: httpx.AsyncClient, fake_anthropic: tuple[str, Any]
) -> None:
    url, app = fake_anthropic
    provider = AnthropicProvider(client)
    content = [{"type": "text", "text": "manual text", "cache_control": EPHEMERAL},
               {"type": "text", "text": "question [cache]"}]
    body = {"messages": [{"role": "user", "content": content}], "reasoning_effort": "minimal",
            "stream": True}
    items = [item async for item in provider.stream(call("anthropic", url, ANT_KEY, body))]
    assert app.state.last_request["messages"][0]["content"][0]["cache_control"] == EPHEMERAL
    chunks = [i for i in items if isinstance(i, dict)]
    reasoning = "".join(c["choices"][0]["delta"].get("reasoning_content", "") for c in chunks)
    assert reasoning == "Thinking about: manual text question [cache]"
    blocks = [b for c in chunks for b in c["choices"][0]["delta"].get("thinking_blocks", [])]
    assert blocks == [{"type": "thinking", "thinking": reasoning,
                       "signature": anthropic_server.signature_of(reasoning)}]
    usage = items[-1]
    assert isinstance(usage, TokenUsage)
    assert (usage.cached_tokens, usage.cache_write_tokens) == (1024, 256)


async def test_gemini_thinking_config_and_thoughts_through_the_fake_api(
    client: httpx.AsyncClient, fake_gemini: tuple[str, Any]
) -> None:
    url, app = fake_gemini
    provider = GeminiProvider(client)
    body = {"messages": [user("hello CACHED please")], "reasoning_effort": "medium"}
    done = await provider.complete(call("gemini", url, GEM_KEY, body))
    assert app.state.last_request["generationConfig"]["thinkingConfig"] == {
        "thinkingBudget": 8192, "includeThoughts": True}
    assert done.response["choices"][0]["message"]["reasoning_content"] == (
        "Thinking it over carefully.")
    assert done.usage.reasoning_tokens == gemini_server.THOUGHT_TOKENS
    assert done.usage.cached_tokens == done.usage.prompt_tokens // 2 > 0
    items = [i async for i in provider.stream(call("gemini", url, GEM_KEY, {**body,
                                                                            "stream": True}))]
    deltas = [i["choices"][0]["delta"] for i in items if isinstance(i, dict)]
    assert {"reasoning_content": "Thinking it over carefully."} in deltas
    assert items[-1] == done.usage


# --- OpenAI ---------------------------------------------------------------------------------


def test_openai_usage_details_become_cached_and_reasoning_tokens() -> None:
    chunk = {"id": "c", "choices": [], "usage": {
        "prompt_tokens": 2006, "completion_tokens": 300, "total_tokens": 2306,
        "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 256, "audio_tokens": 0,
                                      "accepted_prediction_tokens": 0}}}
    content, usage = split_usage(chunk)
    assert content is None
    assert usage == TokenUsage(prompt_tokens=2006, completion_tokens=300, cached_tokens=1920,
                               reasoning_tokens=256)
    assert usage.to_openai()["prompt_tokens_details"] == {"cached_tokens": 1920}
