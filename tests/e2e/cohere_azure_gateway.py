"""The gateway config of the Cohere and Azure tests (Cohere chat, embeddings and rerank,
Azure OpenAI deployments priced on the deployment, vLLM rerankers priced by token or by
query, OpenAI moderations), and the calls the tests make to it and read back from it."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import httpx

from tests.e2e.conftest import MASTER_KEY
from tests.harness import Gateway

MASTER = {"authorization": f"Bearer {MASTER_KEY}"}
# Azure's deployment prices (USD per token), set on the deployment.
AZ_IN, AZ_OUT = Decimal("0.000003"), Decimal("0.000012")
VLLM_PER_TOKEN = Decimal("0.000001")
VLLM_PER_QUERY = Decimal("0.01")


def _config(cohere_url: str, azure_url: str, openai_url: str) -> dict[str, Any]:
    def co(alias: str, model: str, provider: str = "cohere") -> dict[str, Any]:
        return {"model_name": alias, "litellm_params": {
            "model": f"{provider}/{model}", "api_base": cohere_url,
            "api_key": "os.environ/COHERE_API_KEY"}}

    def az(alias: str, deployment: str, **extra: Any) -> dict[str, Any]:
        return {"model_name": alias, "litellm_params": {
            "model": f"azure/{deployment}", "api_base": azure_url,
            "api_key": "os.environ/AZURE_API_KEY", "api_version": "2024-10-21",
            "input_cost_per_token": str(AZ_IN), "output_cost_per_token": str(AZ_OUT),
            **extra}}

    def compatible(alias: str, provider: str, model: str, **extra: Any) -> dict[str, Any]:
        return {"model_name": alias, "litellm_params": {
            "model": f"{provider}/{model}", "api_base": f"{openai_url}/v1",
            "api_key": "sk-fake", **extra}}

    return {
        "model_list": [
            co("command-a", "command-a-03-2025"),
            co("command-r", "command-r-08-2024", provider="cohere_chat"),
            co("cohere-embed", "embed-v4.0"),
            co("cohere-rerank", "rerank-v3.5"),
            co("cohere-limited", "fail-429"),
            az("azure-gpt", "my-gpt4o"),
            az("azure-embed", "my-embedder"),
            az("azure-old", "my-gpt4o", api_version="1999-01-01"),
            compatible("vllm-rerank", "hosted_vllm", "bge-reranker-v2-m3",
                       input_cost_per_token=str(VLLM_PER_TOKEN), output_cost_per_token="0"),
            compatible("vllm-rerank-per-query", "hosted_vllm", "bge-reranker-v2-m3",
                       input_cost_per_query=str(VLLM_PER_QUERY)),
            compatible("omni-moderation-latest", "openai", "omni-moderation-latest"),
            compatible("gpt-4o-mini", "openai", "gpt-4o-mini"),
        ],
        "general_settings": {"master_key": MASTER_KEY},
    }


def _post(gateway: Gateway, key: tuple[str, str], route: str, body: dict[str, Any]
          ) -> httpx.Response:
    return httpx.post(f"{gateway.base_url}/v1/{route}", json=body, timeout=30,
                      headers={"authorization": f"Bearer {key[1]}"})


def _events(gateway: Gateway, key_id: str, request_ids: set[str]) -> dict[str, dict[str, Any]]:
    """The usage event of each request, by request id, once all have landed."""
    deadline = time.monotonic() + 30
    found: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        r = httpx.get(gateway.base_url + "/v1/usage/logs", headers=MASTER, timeout=10,
                      params={"key_id": key_id, "limit": 1000, "days": 1})
        if r.status_code == 200:
            found = {row["request_id"]: row for row in r.json()["data"]
                     if row["request_id"] in request_ids}
            if len(found) == len(request_ids):
                return found
        time.sleep(0.2)
    raise AssertionError(f"events for {sorted(request_ids - set(found))} never came")
