"""One Messages call on a provider that speaks only chat (the mock): translated both ways."""

from __future__ import annotations

import json
from typing import Any

from schemas.config import Deployment
from schemas.usage import TokenUsage
from workers.protocols.messages import call as messages
from workers.providers.anthropic.adapter import AnthropicProvider
from workers.providers.base import UpstreamCall
from workers.providers.mock import MockProvider


def _call(body: dict[str, Any]) -> UpstreamCall:
    deployment = Deployment(id="mock#1", model_name="m", provider="mock",
                            upstream_model="mock-1")
    return UpstreamCall(deployment=deployment, request_id="req-1",
                        body={"model": "mock-1", "max_tokens": 50, **body})


async def test_a_whole_answer_is_a_message_with_the_providers_usage() -> None:
    result = await messages.complete(MockProvider(), _call(
        {"messages": [{"role": "user", "content": "say something"}]}))
    message = result.response
    assert message["type"] == "message" and message["role"] == "assistant"
    assert message["content"] == [{"type": "text",
                                   "text": "This is a mock response from mock-1."}]
    assert message["stop_reason"] == "end_turn"
    assert message["usage"]["input_tokens"] == result.usage.prompt_tokens
    assert message["usage"]["output_tokens"] == result.usage.completion_tokens > 0


async def test_a_stream_is_anthropic_events_then_the_usage() -> None:
    items = [item async for item in messages.stream(MockProvider(), _call(
        {"messages": [{"role": "user", "content": "hi"}], "stream": True,
         "tools": [{"name": "f", "input_schema": {"type": "object"}}],
         "tool_choice": {"type": "any"}}))]
    usage = [i for i in items if isinstance(i, TokenUsage)]
    events = [json.loads(i.split(b"data: ", 1)[1]) for i in items if isinstance(i, bytes)]
    assert [e["type"] for e in events] == [
        "message_start", "content_block_start", "content_block_delta", "content_block_stop",
        "message_delta", "message_stop"]
    assert events[1]["content_block"]["name"] == "f"
    assert json.loads(events[2]["delta"]["partial_json"]) == {"mock": True}
    assert events[4]["delta"]["stop_reason"] == "tool_use"
    assert events[4]["usage"]["input_tokens"] == usage[-1].prompt_tokens


def test_only_the_anthropic_adapter_speaks_messages_natively() -> None:
    assert isinstance(AnthropicProvider(None), messages.NativeMessages)  # type: ignore[arg-type]
    assert not isinstance(MockProvider(), messages.NativeMessages)
