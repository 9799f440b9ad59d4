"""The Gemini adapter over HTTP against the fake Gemini: the key header, images, tool-call
round trips with thought signatures, thinking tokens, generation config and streaming."""

from __future__ import annotations

import base64
import json
from typing import Any

from starlette.applications import Starlette

from schemas.usage import TokenUsage
from tests.fakes.gemini_server import THOUGHT_SIGNATURE, THOUGHT_TOKENS, TOOL_ARGS
from tests.workers.providers.gemini_fixtures import (
    KEY,
    WEATHER_TOOL,
    collect,
    failure,
    gemini_provider,  # noqa: F401 - the ``provider`` fixture
    make_call,
    serve_fake_gemini,  # noqa: F401 - the module's ``fake`` fixture
    user,
)
from workers.providers.gemini.adapter import (
    GeminiProvider,
)


async def test_complete_posts_generate_content_with_the_key_header(
    fake: tuple[Starlette, str], provider: GeminiProvider
) -> None:
    app, url = fake
    body = {"messages": [{"role": "system", "content": "Be kind."}, user("Hi there")]}
    result = await provider.complete(make_call(url, body))
    assert app.state.last_path == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert app.state.last_headers["x-goog-api-key"] == KEY
    assert app.state.last_request["systemInstruction"] == {"parts": [{"text": "Be kind."}]}
    choice = result.response["choices"][0]
    assert choice["message"]["content"] == "Hello from gemini-2.5-flash! You said: Hi there"
    assert choice["finish_reason"] == "stop"
    assert result.usage == TokenUsage(prompt_tokens=4, completion_tokens=7)
    assert result.response["usage"] == result.usage.to_openai()


async def test_an_image_is_sent_as_inline_data_the_fake_accepts(
    fake: tuple[Starlette, str], provider: GeminiProvider
) -> None:
    app, url = fake
    pixel = base64.b64encode(b"\x89PNG").decode()
    content: list[dict[str, Any]] = [
        {"type": "text", "text": "Describe"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{pixel}"}},
    ]
    result = await provider.complete(make_call(url, {"messages": [user(content)]}))
    sent = app.state.last_request["contents"][0]["parts"][1]
    assert sent == {"inlineData": {"mimeType": "image/png", "data": pixel}}
    assert result.response["choices"][0]["finish_reason"] == "stop"


async def test_a_request_gemini_refuses_is_an_invalid_request(
    fake: tuple[Starlette, str], provider: GeminiProvider
) -> None:
    _, url = fake
    call = make_call(url, {"messages": [{"role": "system", "content": "Only a system prompt"}]})
    info = await failure(provider, call)
    assert (info.kind, info.status, info.upstream_status) == ("invalid_request", 400, 400)


async def test_a_tool_call_round_trips_through_the_fake(
    fake: tuple[Starlette, str], provider: GeminiProvider
) -> None:
    app, url = fake
    messages: list[dict[str, Any]] = [user("USE_TOOL for Paris weather")]
    first = await provider.complete(make_call(url, {"messages": messages, "tools": [WEATHER_TOOL]}))
    assert first.response["choices"][0]["finish_reason"] == "tool_calls"
    message = first.response["choices"][0]["message"]
    (tool_call,) = message["tool_calls"]
    assert json.loads(tool_call["function"]["arguments"]) == TOOL_ARGS
    messages += [
        message,
        {"role": "tool", "tool_call_id": tool_call["id"], "content": '{"temp_c": 21}'},
    ]
    second = await provider.complete(
        make_call(url, {"messages": messages, "tools": [WEATHER_TOOL]})
    )
    sent = app.state.last_request["contents"]
    assert sent[1]["parts"][0]["thoughtSignature"] == THOUGHT_SIGNATURE
    assert sent[2]["parts"] == [
        {"functionResponse": {"name": "get_weather", "response": {"temp_c": 21}}}
    ]
    assert second.response["choices"][0]["message"]["content"] == 'The tool said: {"temp_c": 21}'


async def test_thinking_tokens_from_the_fake_are_counted_once(
    fake: tuple[Starlette, str], provider: GeminiProvider
) -> None:
    _, url = fake
    result = await provider.complete(make_call(url, {"messages": [user("THINK hard")]}))
    assert "Thinking" not in result.response["choices"][0]["message"]["content"]
    visible = len(result.response["choices"][0]["message"]["content"].split())
    assert result.usage.reasoning_tokens == THOUGHT_TOKENS
    assert result.usage.completion_tokens == visible + THOUGHT_TOKENS


async def test_generation_config_is_accepted_by_the_fake(
    fake: tuple[Starlette, str], provider: GeminiProvider
) -> None:
    app, url = fake
    body = {
        "messages": [user("Tell me a long story please")],
        "max_completion_tokens": 3,
        "n": 2,
        "temperature": 0.5,
        "stop": ["\n\n"],
        "response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "object"}}},
    }
    result = await provider.complete(make_call(url, body))
    assert app.state.last_request["generationConfig"]["maxOutputTokens"] == 3
    assert [c["finish_reason"] for c in result.response["choices"]] == ["length", "length"]


async def test_a_blocked_prompt_from_the_fake_is_a_content_filter_choice(
    fake: tuple[Starlette, str], provider: GeminiProvider
) -> None:
    _, url = fake
    result = await provider.complete(make_call(url, {"messages": [user("BLOCK_PROMPT")]}))
    assert result.response["choices"][0]["finish_reason"] == "content_filter"


async def test_a_stream_yields_role_text_and_finish_chunks_then_usage(
    fake: tuple[Starlette, str], provider: GeminiProvider
) -> None:
    app, url = fake
    items = await collect(provider, make_call(url, {"messages": [user("Stream this please")]}))
    assert app.state.last_path.endswith(":streamGenerateContent")
    assert app.state.last_query == {"alt": "sse"}
    *chunks, usage = items
    assert isinstance(usage, TokenUsage)
    assert all(isinstance(c, dict) and "usage" not in c for c in chunks)
    deltas = [c["choices"][0]["delta"] for c in chunks if isinstance(c, dict)]
    assert deltas[0] == {"role": "assistant", "content": ""}
    text = "".join(d.get("content", "") for d in deltas)
    assert text == "Hello from gemini-2.5-flash! You said: Stream this please"
    assert len(chunks) > 3
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if isinstance(c, dict)]
    assert finishes[-1] == "stop"
    assert set(finishes[:-1]) == {None}
    assert usage == TokenUsage(prompt_tokens=3, completion_tokens=len(text.split()))


async def test_a_streamed_tool_call_arrives_whole_and_finishes_with_tool_calls(
    fake: tuple[Starlette, str], provider: GeminiProvider
) -> None:
    _, url = fake
    call = make_call(url, {"messages": [user("USE_TOOL now")], "tools": [WEATHER_TOOL]})
    *chunks, usage = await collect(provider, call)
    last = chunks[-1]
    assert isinstance(last, dict)
    (tool_call,) = last["choices"][0]["delta"]["tool_calls"]
    assert tool_call["function"]["name"] == "get_weather"
    assert json.loads(tool_call["function"]["arguments"]) == TOOL_ARGS
    assert last["choices"][0]["finish_reason"] == "tool_calls"
    assert isinstance(usage, TokenUsage)
