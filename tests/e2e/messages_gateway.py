"""The gateway the ``/v1/messages`` tests share, and what they read back from it.

One gateway on a nats-server of its own, under ``SERVER_ROOT_PATH=/ai-api``, with Anthropic
deployments (passed through), OpenAI-compatible ones (translated) and a Gemini one, priced
so that each call's cost can be worked out by hand. Its fixture is module-scoped and named
``gateway``: a test module imports ``messages_gateway`` and gets a gateway of its own.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest
from starlette.applications import Starlette

from cli.nats_server import NatsServer
from tests.e2e.conftest import MASTER_KEY
from tests.fakes.openai_server import FakeOpenAIState
from tests.harness import Gateway, write_config

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


@pytest.fixture(scope="module", name="gateway")
def messages_gateway(
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
