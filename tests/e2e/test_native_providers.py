"""Anthropic and Gemini behind the OpenAI API, driven by the official openai SDK."""

from __future__ import annotations

import json

import openai
import pytest

from tests.e2e.conftest import MASTER_KEY
from tests.harness import Gateway

pytestmark = pytest.mark.e2e

TOOLS = [{"type": "function", "function": {
    "name": "lookup", "description": "look a thing up",
    "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}}]


@pytest.fixture
def client(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url + "/v1", api_key=MASTER_KEY, max_retries=0)


@pytest.mark.parametrize("model", ["anthropic-claude-sonnet-4-20250514",
                                   "gemini-gemini-2.0-flash"])
def test_plain_chat_through_a_native_provider(client: openai.OpenAI, model: str) -> None:
    completion = client.chat.completions.create(
        model=model,
        messages=[{"role": "system", "content": "be brief"},
                  {"role": "user", "content": "ping"}],
    )
    assert "ping" in (completion.choices[0].message.content or "")
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.prompt_tokens > 0


@pytest.mark.parametrize("model", ["anthropic-claude-sonnet-4-20250514",
                                   "gemini-gemini-2.0-flash"])
def test_streamed_chat_through_a_native_provider_ends_with_usage(
    client: openai.OpenAI, model: str
) -> None:
    chunks = list(client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "ping"}], stream=True,
        stream_options={"include_usage": True},
    ))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "ping" in text
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0


def test_anthropic_streamed_tool_call_reassembles(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(
        model="anthropic-claude-sonnet-4-20250514",
        messages=[{"role": "user", "content": "find it [tool]"}],
        tools=TOOLS, stream=True,  # type: ignore[arg-type]
    ))
    args = "".join(tc.function.arguments or "" for c in chunks if c.choices
                   for tc in (c.choices[0].delta.tool_calls or []) if tc.function)
    assert json.loads(args) == {"query": "find it [tool]"}
    assert [c for c in chunks if c.choices][-1].choices[0].finish_reason == "tool_calls"


def test_gemini_tool_call(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="gemini-gemini-2.0-flash",
        messages=[{"role": "user", "content": "USE_TOOL please"}], tools=TOOLS,  # type: ignore[arg-type]
    )
    assert completion.choices[0].finish_reason == "tool_calls"
    assert completion.choices[0].message.tool_calls[0].function.name == "lookup"  # type: ignore[index, union-attr]


def test_anthropic_overloaded_is_a_503(client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(
            model="anthropic-fail-529", messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 503


def test_anthropic_in_stream_error_ends_the_stream_with_an_error(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="anthropic-fail-midstream", messages=[{"role": "user", "content": "x"}],
        stream=True)
    with pytest.raises(openai.APIError):
        for _ in stream:
            pass


def test_gemini_bad_key_is_an_authentication_error(client: openai.OpenAI) -> None:
    with pytest.raises(openai.AuthenticationError) as info:
        client.chat.completions.create(
            model="gemini-bad-key", messages=[{"role": "user", "content": "x"}])
    assert "not-the-key" not in str(info.value)


def test_gemini_rate_limit_carries_retry_after(client: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(
            model="gemini-fail-429", messages=[{"role": "user", "content": "x"}])
    assert info.value.response.headers["retry-after"] == "12"


def test_gemini_unknown_model_is_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(
            model="gemini-missing-model", messages=[{"role": "user", "content": "x"}])
