"""Thinking and cache counts through the Anthropic and Gemini adapters against their fake
APIs over HTTP: budgets sent, signed thinking blocks sent back, thoughts streamed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from schemas.config import Deployment
from schemas.usage import TokenUsage
from tests.fakes import anthropic_server, gemini_server
from tests.fakes.server import serve
from tests.workers.providers.reasoning_messages import EPHEMERAL, user
from workers.providers.anthropic.adapter import AnthropicProvider
from workers.providers.base import UpstreamCall
from workers.providers.gemini.adapter import GeminiProvider

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
