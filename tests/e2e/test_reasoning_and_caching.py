"""Reasoning and prompt caching end to end: the official openai SDK through a running
gateway to the fake Anthropic and Gemini APIs, and each LiteLLM price key in a config's
``litellm_params`` giving the usage API the cost computed here by hand."""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest

from cli.nats_server import NatsServer
from tests.e2e.conftest import MASTER_KEY, make_key
from tests.fakes.anthropic_server import signature_of
from tests.harness import Gateway, write_config
from tests.redis_server import RedisServer

pytestmark = pytest.mark.e2e
MASTER = {"authorization": f"Bearer {MASTER_KEY}"}
EPHEMERAL = {"type": "ephemeral"}
IN, OUT = "0.000002", "0.00001"

# One deployment per price key, each on a model the price table does not know, so every
# figure of its cost comes from the keys written here.
PRICED: dict[str, tuple[str, dict[str, str]]] = {
    "pk-base": ("anthropic", {}),
    "pk-cache-read": ("anthropic", {"cache_read_input_token_cost": "0.0000002"}),
    "pk-cache-write": ("anthropic", {"cache_creation_input_token_cost": "0.0000025"}),
    "pk-reasoning": ("gemini", {"output_cost_per_reasoning_token": "0.00003"}),
    "pk-input-200k": ("anthropic", {"input_cost_per_token_above_200k_tokens": "0.000004"}),
    "pk-output-200k": ("anthropic", {"output_cost_per_token_above_200k_tokens": "0.000015"}),
    "pk-cache-read-200k": ("anthropic", {
        "cache_read_input_token_cost": "0.0000002",
        "cache_read_input_token_cost_above_200k_tokens": "0.0000004"}),
    "pk-cache-write-200k": ("anthropic", {
        "cache_creation_input_token_cost": "0.0000025",
        "cache_creation_input_token_cost_above_200k_tokens": "0.000005"}),
}


def config(anthropic_url: str, gemini_url: str) -> dict[str, object]:
    def deployment(alias: str, provider: str, model: str, **params: str) -> dict[str, object]:
        url, key = (anthropic_url, "sk-ant-e2e") if provider == "anthropic" else (
            gemini_url, "gemini-e2e")
        return {"model_name": alias, "litellm_params": {
            "model": f"{provider}/{model}", "api_base": url, "api_key": key, **params}}

    priced = [deployment(alias, provider, f"house-{alias}", input_cost_per_token=IN,
                         output_cost_per_token=OUT, **keys)
              for alias, (provider, keys) in PRICED.items()]
    return {
        "model_list": [
            deployment("claude", "anthropic", "claude-sonnet-4-5-20250929"),
            deployment("gemini-think", "gemini", "gemini-2.5-flash"),
            *priced,
        ],
        "general_settings": {"master_key": MASTER_KEY},
    }


@pytest.fixture(scope="module")
def gateway(
    fake_anthropic: tuple[str, Any],
    fake_gemini: tuple[str, Any],
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    work = tmp_path_factory.mktemp("reasoning")
    path = write_config(work / "config.yaml", config(fake_anthropic[0], fake_gemini[0]))
    # Its own NATS: workers and accounting of another gateway on a shared server would
    # serve its requests and store its usage events.
    nats = NatsServer(work / "nats")
    nats.start()
    gw = Gateway(nats_url=nats.url, config_path=path, log_dir=work,
                 env={"REDIS_URL": redis_server.url, "AIGW_ACCOUNTING_BATCH_AGE": "0.2"})
    gw.start_accounting(work / "data")
    gw.start_worker("anthropic")
    gw.start_worker("gemini")
    gw.start_ingress()
    try:
        gw.wait_ready(90)
    except RuntimeError:
        gw.stop()
        nats.stop()
        raise RuntimeError(gw.all_logs()) from None
    yield gw
    gw.stop()
    nats.stop()


@pytest.fixture(scope="module")
def client(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url + "/v1", api_key=MASTER_KEY, max_retries=0)


def chat(client: openai.OpenAI, **body: Any) -> Any:
    """A chat completion with any body (the SDK's types know no cache_control)."""
    return client.chat.completions.create(**body)


def sent_to(app: Any, marker: str) -> dict[str, Any]:
    """The last body the fake received whose text holds ``marker``."""
    for body in reversed(app.state.requests):
        if marker in str(body):
            return dict(body)
    raise AssertionError(f"no upstream request with {marker!r}")


def test_reasoning_effort_and_cache_control_reach_anthropic_and_thinking_comes_back(
    client: openai.OpenAI, fake_anthropic: tuple[str, Any]
) -> None:
    _, app = fake_anthropic
    manual = [{"type": "text", "text": "the manual e2e-ant-1", "cache_control": EPHEMERAL},
              {"type": "text", "text": "a question [cache]"}]
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {}},
              "cache_control": EPHEMERAL}]
    response = chat(
        client, model="claude", reasoning_effort="low", tools=tools,
        messages=[{"role": "system", "content": [
            {"type": "text", "text": "Be brief.", "cache_control": EPHEMERAL}]},
            {"role": "user", "content": manual}])
    sent = sent_to(app, "e2e-ant-1")
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert sent["max_tokens"] == 2048 + 4096
    assert sent["system"] == [{"type": "text", "text": "Be brief.", "cache_control": EPHEMERAL}]
    assert sent["messages"][0]["content"][0]["cache_control"] == EPHEMERAL
    assert sent["tools"][0]["cache_control"] == EPHEMERAL

    message = response.choices[0].message
    extra = message.model_extra or {}
    thought = "Thinking about: the manual e2e-ant-1 a question [cache]"
    assert extra["reasoning_content"] == thought
    assert extra["thinking_blocks"] == [
        {"type": "thinking", "thinking": thought, "signature": signature_of(thought)}]
    assert response.usage is not None
    assert response.usage.prompt_tokens_details is not None
    assert response.usage.prompt_tokens_details.cached_tokens == 1024
    assert response.usage.prompt_tokens_details.model_dump()["cache_write_tokens"] == 256

    # the next turn hands the signed thinking back; the fake verifies the signature
    chat(client, model="claude", reasoning_effort="low", messages=[
        {"role": "user", "content": manual},
        {"role": "assistant", "content": message.content,
         "thinking_blocks": extra["thinking_blocks"]},
        {"role": "user", "content": "again e2e-ant-2"}])
    again = sent_to(app, "e2e-ant-2")
    assert again["messages"][1]["content"][0] == extra["thinking_blocks"][0]


def test_streamed_thinking_through_the_gateway(
    client: openai.OpenAI, fake_anthropic: tuple[str, Any]
) -> None:
    stream = client.chat.completions.create(
        model="claude", reasoning_effort="minimal", stream=True,
        stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "stream e2e-ant-3"}])
    reasoning, content = "", ""
    blocks: list[dict[str, Any]] = []
    usage = None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            extra = choice.delta.model_extra or {}
            reasoning += extra.get("reasoning_content") or ""
            blocks += extra.get("thinking_blocks") or []
            content += choice.delta.content or ""
    assert reasoning == "Thinking about: stream e2e-ant-3"
    assert blocks == [{"type": "thinking", "thinking": reasoning,
                       "signature": signature_of(reasoning)}]
    assert content == "Hello! You said: stream e2e-ant-3"
    assert usage is not None and usage.completion_tokens > 0
    assert sent_to(fake_anthropic[1], "e2e-ant-3")["thinking"]["budget_tokens"] == 1024


def test_gemini_thinking_config_and_thoughts_through_the_gateway(
    client: openai.OpenAI, fake_gemini: tuple[str, Any]
) -> None:
    response = client.chat.completions.create(
        model="gemini-think", reasoning_effort="high",
        messages=[{"role": "user", "content": "think e2e-gem-1 CACHED"}])
    sent = sent_to(fake_gemini[1], "e2e-gem-1")
    assert sent["generationConfig"]["thinkingConfig"] == {
        "thinkingBudget": 24576, "includeThoughts": True}
    assert (response.choices[0].message.model_extra or {})["reasoning_content"] == (
        "Thinking it over carefully.")
    assert response.usage is not None
    assert response.usage.completion_tokens_details is not None
    assert response.usage.completion_tokens_details.reasoning_tokens == 5
    assert response.usage.prompt_tokens_details is not None
    assert response.usage.prompt_tokens_details.cached_tokens == (
        response.usage.prompt_tokens // 2)

    stream = client.chat.completions.create(
        model="gemini-think", reasoning_effort="low", stream=True,
        messages=[{"role": "user", "content": "think e2e-gem-2"}])
    reasoning = "".join((c.choices[0].delta.model_extra or {}).get("reasoning_content") or ""
                        for c in stream if c.choices)
    assert reasoning == "Thinking it over carefully."


def logged(gateway: Gateway, key_id: str, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 20
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        r = httpx.get(gateway.base_url + "/v1/usage/logs", headers=MASTER, timeout=10,
                      params={"key_id": key_id, "limit": 100, "days": 1})
        rows = r.json().get("data", []) if r.status_code == 200 else []
        if len(rows) >= count:
            return rows
        time.sleep(0.2)
    raise AssertionError(f"{len(rows)} usage rows for {key_id}, expected {count}")


D = Decimal


def by_hand(alias: str, prompt: int, completion: int, cached: int, written: int,
            reasoning: int) -> Decimal:
    """The cost of one call with this usage, key by key, from the prices written above."""
    fresh = prompt - cached - written
    if alias == "pk-base":  # no cache prices: cached and written tokens at the input price
        return prompt * D("0.000002") + completion * D("0.00001")
    if alias == "pk-cache-read":
        return fresh * D("0.000002") + cached * D("0.0000002") + written * D("0.000002") \
            + completion * D("0.00001")
    if alias == "pk-cache-write":
        return fresh * D("0.000002") + cached * D("0.000002") + written * D("0.0000025") \
            + completion * D("0.00001")
    if alias == "pk-reasoning":
        return prompt * D("0.000002") + (completion - reasoning) * D("0.00001") \
            + reasoning * D("0.00003")
    # the four long-context deployments: the prompt passes 200k, the whole call is tiered
    assert prompt > 200_000
    if alias == "pk-input-200k":
        return prompt * D("0.000004") + completion * D("0.00001")
    if alias == "pk-output-200k":
        return prompt * D("0.000002") + completion * D("0.000015")
    if alias == "pk-cache-read-200k":
        return fresh * D("0.000002") + cached * D("0.0000004") + written * D("0.000002") \
            + completion * D("0.00001")
    assert alias == "pk-cache-write-200k"
    return fresh * D("0.000002") + cached * D("0.000002") + written * D("0.000005") \
        + completion * D("0.00001")


@pytest.mark.parametrize("alias", list(PRICED))
def test_each_price_key_in_litellm_params_gives_the_hand_computed_cost(
    gateway: Gateway, alias: str
) -> None:
    key_id, secret = make_key(gateway, alias=f"price-{alias}")
    client = openai.OpenAI(base_url=gateway.base_url + "/v1", api_key=secret, max_retries=0)
    provider, _ = PRICED[alias]
    if provider == "gemini":
        trigger = "THINK"
    else:
        trigger = "[long-context]" if "200k" in alias else "[cache]"
    body: dict[str, Any] = {"model": alias,
                            "messages": [{"role": "user", "content": f"price me {trigger}"}]}
    if provider == "gemini":
        body["reasoning_effort"] = "low"
    raw = client.chat.completions.with_raw_response.create(**body)
    usage = raw.parse().usage
    assert usage is not None
    cached = usage.prompt_tokens_details.cached_tokens if usage.prompt_tokens_details else 0
    details = usage.prompt_tokens_details.model_dump() if usage.prompt_tokens_details else {}
    written = details.get("cache_write_tokens") or 0
    reasoning = (usage.completion_tokens_details.reasoning_tokens
                 if usage.completion_tokens_details else 0)
    if alias == "pk-reasoning":
        assert reasoning and reasoning > 0
    if alias in ("pk-cache-read", "pk-cache-write"):
        assert (cached, written) == (1024, 256)
    expected = by_hand(alias, usage.prompt_tokens, usage.completion_tokens, cached or 0,
                       written, reasoning or 0)
    assert Decimal(raw.headers["x-aigw-cost-usd"]) == expected
    [row] = logged(gateway, key_id, 1)
    assert Decimal(row["cost"]) == expected
    assert (row["cached_tokens"], row["cache_write_tokens"], row["reasoning_tokens"]) == (
        cached, written, reasoning)


def test_a_streamed_call_is_priced_with_its_cache_and_long_context_keys(
    gateway: Gateway,
) -> None:
    key_id, secret = make_key(gateway, alias="price-streamed")
    client = openai.OpenAI(base_url=gateway.base_url + "/v1", api_key=secret, max_retries=0)
    expected = Decimal(0)
    for alias, trigger in (("pk-cache-write", "[cache]"), ("pk-cache-read-200k",
                                                          "[long-context]")):
        stream = chat(client, model=alias, stream=True, stream_options={"include_usage": True},
                      messages=[{"role": "user", "content": f"stream {trigger}"}])
        usage = [c.usage for c in stream if c.usage is not None][-1]
        details = usage.prompt_tokens_details.model_dump()
        expected += by_hand(alias, usage.prompt_tokens, usage.completion_tokens,
                            details["cached_tokens"], details["cache_write_tokens"], 0)
    rows = logged(gateway, key_id, 2)
    assert sum(Decimal(row["cost"]) for row in rows) == expected
    assert all(row["streamed"] for row in rows)
