from __future__ import annotations

from collections.abc import Iterator

import pytest

from cli.nats_server import NatsServer
from tests.fakes.openai_server import FakeOpenAIState
from tests.harness import Gateway, write_config
from tests.redis_server import RedisServer

MASTER_KEY = "sk-master-e2e"


def e2e_config(
    openai_url: str, anthropic_url: str = "", gemini_url: str = ""
) -> dict[str, object]:
    def openai(alias: str, upstream: str) -> dict[str, object]:
        return {
            "model_name": alias,
            "litellm_params": {
                "model": f"openai/{upstream}",
                "api_base": f"{openai_url}/v1",
                "api_key": "os.environ/FAKE_OPENAI_KEY",
            },
        }

    def native(provider: str, url: str, key: str, models: list[str]) -> list[dict[str, object]]:
        if not url:
            return []
        return [{"model_name": f"{provider}-{m}", "litellm_params": {
            "model": f"{provider}/{m}", "api_base": url, "api_key": key}} for m in models]

    return {
        "model_list": [
            openai("gpt-4o-mini", "gpt-4o-mini"),
            openai("text-embedding-3-small", "text-embedding-3-small"),
            openai("limited", "fail-429"),
            openai("broken", "fail-500"),
            openai("missing-upstream", "missing"),
            openai("tiny-context", "context-small"),
            openai("midstream", "fail-midstream"),
            openai("slow", "slow"),
            openai("slow-stream", "slow-stream"),
            openai("slow-watch", "slow-watch"),
            openai("echo-secrets", "echo-secrets"),
            {**openai("capped-chat", "gpt-4o-mini"),
             "model_info": {"max_output_tokens": 100}},
            {**openai("capped-embed", "text-embedding-3-small"),
             "model_info": {"output_vector_size": 1536}},
            {"model_name": "pricey", "litellm_params": {
                "model": "openai/pricey", "api_base": f"{openai_url}/v1",
                "api_key": "os.environ/FAKE_OPENAI_KEY",
                "input_cost_per_token": "0.001", "output_cost_per_token": "0.002"}},
            # thinks first (reasoning_content), priced like pricey
            {"model_name": "reasoner", "litellm_params": {
                "model": "openai/reasoner", "api_base": f"{openai_url}/v1",
                "api_key": "os.environ/FAKE_OPENAI_KEY",
                "input_cost_per_token": "0.001", "output_cost_per_token": "0.002"}},
            # a group: the first deployment always fails, the second answers
            openai("flaky-group", "fail-500"),
            openai("flaky-group", "gpt-4o-mini"),
            {"model_name": "nobody-serves", "litellm_params": {"model": "mock/none"}},
            *native("anthropic", anthropic_url, "sk-ant-e2e",
                    ["claude-sonnet-4-20250514", "fail-529", "fail-midstream"]),
            *native("gemini", gemini_url, "gemini-e2e",
                    ["gemini-2.0-flash", "fail-429", "missing-model"]),
            {"model_name": "gemini-bad-key", "litellm_params": {
                "model": "gemini/gemini-2.0-flash", "api_base": gemini_url,
                "api_key": "not-the-key"}},
        ],
        "general_settings": {"master_key": MASTER_KEY},
    }


@pytest.fixture(scope="session")
def gateway(
    nats_server: NatsServer,
    fake_openai: tuple[str, FakeOpenAIState],
    fake_anthropic: tuple[str, object],
    fake_gemini: tuple[str, object],
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    url, _ = fake_openai
    work = tmp_path_factory.mktemp("gateway")
    config = write_config(
        work / "config.yaml", e2e_config(url, fake_anthropic[0], fake_gemini[0])
    )
    gw = Gateway(nats_url=nats_server.url, config_path=config, log_dir=work,
                 env={"FAKE_OPENAI_KEY": "sk-fake", "AIGW_HEARTBEAT": "0.5",
                      "AIGW_HEARTBEAT_TIMEOUT": "2", "REDIS_URL": redis_server.url,
                      "AIGW_ACCOUNTING_BATCH_AGE": "0.2", "AIGW_SPEND_SEED_INTERVAL": "1",
                      "AIGW_BUDGET_METRICS_INTERVAL": "0.5"})
    gw.start_accounting(work / "data")
    gw.start_worker("openai")
    gw.start_worker("openai")
    gw.start_worker("anthropic")
    gw.start_worker("gemini")
    gw.start_ingress()
    # mock has no worker on purpose (the "no worker" test), so readiness stays 503:
    # wait on the ingress and the openai workers instead.
    import time

    import httpx
    deadline = time.monotonic() + 120  # six processes start slowly on a busy machine
    while True:
        try:
            r = httpx.get(gw.base_url + "/health/readiness", timeout=2)
            workers = r.json().get("workers", {})
            if all(workers.get(p) == "ok" for p in ("openai", "anthropic", "gemini")):
                break
        except (httpx.HTTPError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(gw.logs("ingress"))
        time.sleep(0.1)
    yield gw
    gw.stop()


def make_key(gateway: Gateway, **fields: object) -> tuple[str, str]:
    """A fresh virtual key (id, secret), through the admin API."""
    import httpx

    r = httpx.post(gateway.base_url + "/admin/keys", json=fields,
                   headers={"authorization": f"Bearer {MASTER_KEY}"}, timeout=10)
    assert r.status_code in (200, 201), r.text
    body = r.json()
    return body["id"], body["secret"]
