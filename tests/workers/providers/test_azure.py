"""The Azure OpenAI adapter against the fake Azure resource (deployment URLs, api-version,
api-key), and rerank and moderations on the OpenAI adapter against the fake OpenAI server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from schemas.config import Deployment
from schemas.errors import ErrorKind
from schemas.usage import TokenUsage
from tests.fakes import azure_server, openai_server
from tests.fakes.server import serve
from workers.providers import create_provider
from workers.providers.azure.adapter import AzureProvider, deployment_url
from workers.providers.base import UpstreamCall, UpstreamError
from workers.providers.openai.adapter import OpenAIProvider

MESSAGES = [{"role": "user", "content": "ping"}]


@pytest.fixture(scope="module")
def azure() -> Iterator[azure_server.Served]:
    with azure_server.running() as served:
        yield served


def azure_call(served: azure_server.Served, body: dict[str, Any], *,
               deployment: str = "my-gpt4o", key: str = azure_server.API_KEY,
               **params: Any) -> UpstreamCall:
    found = Deployment(id=f"az-{deployment}-{key}-{params}", model_name="az",
                       provider="azure", upstream_model=deployment, api_key=SecretStr(key),
                       api_base=served.url, extra=params)
    return UpstreamCall(deployment=found, body={**body, "model": deployment}, request_id="r1")


def test_the_url_names_the_deployment_and_the_api_version() -> None:
    assert deployment_url("https://res.openai.azure.com/", "gpt 4o", "/chat/completions",
                          "2024-10-21") == ("https://res.openai.azure.com/openai/deployments/"
                                            "gpt%204o/chat/completions?api-version=2024-10-21")
    assert deployment_url("https://res.openai.azure.com/openai", "d", "/embeddings", "v") == \
        "https://res.openai.azure.com/openai/deployments/d/embeddings?api-version=v"


def test_the_registry_serves_azure_with_its_own_adapter() -> None:
    assert isinstance(create_provider("azure", httpx.AsyncClient()), AzureProvider)


async def test_chat_goes_to_the_deployment_with_api_key_and_version(
    azure: azure_server.Served
) -> None:
    async with httpx.AsyncClient() as client:
        result = await AzureProvider(client).complete(
            azure_call(azure, {"messages": MESSAGES}, api_version="2024-06-01"))
    assert result.response["choices"][0]["message"]["content"] == openai_server.ANSWER
    assert result.usage.prompt_tokens > 0
    assert azure.state.calls[-1] == ("my-gpt4o", "chat/completions", "2024-06-01")


async def test_stream_and_embeddings_use_the_default_version(
    azure: azure_server.Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AZURE_API_VERSION", raising=False)
    async with httpx.AsyncClient() as client:
        provider = AzureProvider(client)
        items = [i async for i in provider.stream(azure_call(azure, {"messages": MESSAGES}))]
        embedded = await provider.embed(azure_call(azure, {"input": "a b"},
                                                   deployment="my-embedder"))
    assert isinstance(items[-1], TokenUsage) and items[-1].completion_tokens > 0
    assert "".join(i["choices"][0]["delta"].get("content") or "" for i in items
                   if isinstance(i, dict)) == openai_server.ANSWER
    assert all(i["choices"] and i["id"] == "chatcmpl-fake" for i in items if isinstance(i, dict))
    assert embedded.usage.prompt_tokens == 2
    assert azure.state.calls[-2:] == [("my-gpt4o", "chat/completions", "2024-10-21"),
                                      ("my-embedder", "embeddings", "2024-10-21")]


async def test_the_fake_opens_a_stream_with_the_prompt_filter_verdict(
    azure: azure_server.Served
) -> None:
    async with httpx.AsyncClient() as client:
        r = await client.post(f"{azure.url}/openai/deployments/d/chat/completions",
                              params={"api-version": "2024-10-21"},
                              headers={"api-key": azure_server.API_KEY},
                              json={"messages": MESSAGES, "stream": True})
    assert r.content.startswith(azure_server.PROMPT_FILTER_CHUNK)


async def test_legacy_completions_go_to_the_deployment_too(
    azure: azure_server.Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AZURE_API_VERSION", raising=False)
    async with httpx.AsyncClient() as client:
        result = await AzureProvider(client).complete_text(
            azure_call(azure, {"prompt": "once upon"}, deployment="instruct"))
    assert result.response["object"] == "text_completion"
    assert result.usage.prompt_tokens == 2
    assert azure.state.calls[-1] == ("instruct", "completions", "2024-10-21")


async def test_azure_api_version_comes_from_the_environment(
    azure: azure_server.Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AZURE_API_VERSION", "2025-01-01-preview")
    async with httpx.AsyncClient() as client:
        await AzureProvider(client).complete(azure_call(azure, {"messages": MESSAGES},
                                                        deployment="env-version"))
    assert azure.state.calls[-1] == ("env-version", "chat/completions", "2025-01-01-preview")


async def test_a_wrong_key_fails_and_never_shows_in_the_error(azure: azure_server.Served) -> None:
    async with httpx.AsyncClient() as client:
        with pytest.raises(UpstreamError) as caught:
            await AzureProvider(client).complete(
                azure_call(azure, {"messages": MESSAGES}, key="azure-wrong-key-555"))
    assert caught.value.info.kind is ErrorKind.AUTHENTICATION
    assert "azure-wrong-key-555" not in caught.value.info.message


async def test_an_unknown_api_version_fails(azure: azure_server.Served) -> None:
    async with httpx.AsyncClient() as client:
        with pytest.raises(UpstreamError) as caught:
            await AzureProvider(client).complete(
                azure_call(azure, {"messages": MESSAGES}, api_version="1999-01-01"))
    assert caught.value.info.kind is ErrorKind.NOT_FOUND


async def test_the_fake_refuses_bearer_auth_and_a_missing_version(
    azure: azure_server.Served
) -> None:
    url = f"{azure.url}/openai/deployments/d/chat/completions"
    body = {"messages": MESSAGES}
    async with httpx.AsyncClient() as client:
        bearer = await client.post(url, params={"api-version": "2024-10-21"}, json=body,
                                   headers={"authorization": f"Bearer {azure_server.API_KEY}"})
        unversioned = await client.post(url, json=body,
                                        headers={"api-key": azure_server.API_KEY})
    assert bearer.status_code == 401
    assert unversioned.status_code == 404


async def test_azure_has_neither_rerank_nor_moderations(azure: azure_server.Served) -> None:
    async with httpx.AsyncClient() as client:
        provider = AzureProvider(client)
        for method in (provider.rerank, provider.moderate):
            with pytest.raises(UpstreamError) as caught:
                await method(azure_call(azure, {"query": "q", "documents": ["d"]}))
            assert caught.value.info.status == 400
            assert caught.value.info.code == "unsupported_endpoint"


# --- rerank and moderations on OpenAI-compatible servers -----------------------------------


@pytest.fixture(scope="module")
def openai_fake() -> Iterator[str]:
    with serve(openai_server.create_app(openai_server.FakeOpenAIState())) as url:
        yield url


def compatible_call(url: str, provider: str, body: dict[str, Any]) -> UpstreamCall:
    deployment = Deployment(id=f"{provider}-{url}", model_name="m", provider=provider,
                            upstream_model="model-x", api_key=SecretStr("sk-fake"),
                            api_base=f"{url}/v1")
    return UpstreamCall(deployment=deployment, body={**body, "model": "model-x"},
                        request_id="r1")


async def test_a_vllm_rerank_answers_in_the_cohere_shape(openai_fake: str) -> None:
    body = {"query": "red apple", "documents": ["green pear", {"text": "red apple pie"}],
            "top_n": 2, "return_documents": True}
    async with httpx.AsyncClient() as client:
        result = await OpenAIProvider(client, name="hosted_vllm").rerank(
            compatible_call(openai_fake, "hosted_vllm", body))
    assert result.response["id"] == "rerank-fake"
    assert result.response["results"] == [
        {"index": 1, "relevance_score": 1.0, "document": {"text": "red apple pie"}},
        {"index": 0, "relevance_score": 0.0, "document": {"text": "green pear"}}]
    assert result.response["meta"]["billed_units"] == {"search_units": 1}
    assert result.usage == TokenUsage(prompt_tokens=9, queries=1)


async def test_a_server_without_rerank_is_a_400_and_openai_is_never_asked(
    openai_fake: str
) -> None:
    body = {"query": "q", "documents": ["d"]}
    async with httpx.AsyncClient() as client:
        with pytest.raises(UpstreamError) as caught:
            await OpenAIProvider(client, name="openai").rerank(
                compatible_call(openai_fake, "openai", body))
        assert caught.value.info.code == "unsupported_endpoint"
        with serve(openai_server.create_app()) as bare_url:  # a route it lacks: 404
            call = compatible_call(bare_url + "/nothing-here", "vllm", body)
            with pytest.raises(UpstreamError) as caught:
                await OpenAIProvider(client, name="vllm").rerank(call)
    assert caught.value.info.status == 400
    assert "/v1/rerank" in caught.value.info.message


async def test_moderations_pass_through_with_an_estimated_input_count(openai_fake: str) -> None:
    async with httpx.AsyncClient() as client:
        result = await OpenAIProvider(client).moderate(compatible_call(
            openai_fake, "openai", {"input": ["I will kill the process", "hello there"]}))
    assert [r["flagged"] for r in result.response["results"]] == [True, False]
    assert result.response["id"] == "modr-fake"
    assert result.usage.prompt_tokens > 0 and result.usage.estimated
