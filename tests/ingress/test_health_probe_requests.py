"""What background health checks probe and how: embedding, chat, rerank and moderation
pings by model and model_info mode, probes charged to nobody, and the probe lease rule."""

from __future__ import annotations

import pytest

from ingress.dispatch.health_probe import (
    PROBE_PREFIX,
    is_embedding,
    probe_body,
    probe_request,
)
from ingress.routing.health_board import ProbeLease, may_take
from schemas.config import (
    ConfigError,
    Deployment,
    parse_config,
)
from schemas.infer import Endpoint


def deployment(alias: str, model: str) -> Deployment:
    config = parse_config({"model_list": [{"model_name": alias, "litellm_params": {
        "model": model, "api_base": "http://upstream/v1"}}]}, {})
    return config.deployments[0]


@pytest.mark.parametrize(("alias", "model", "embeds"), [
    ("gpt-4o-mini", "openai/gpt-4o-mini", False),
    ("claude", "anthropic/claude-sonnet-4-20250514", False),
    ("text-embedding-3-small", "openai/text-embedding-3-small", True),
    ("vectors", "ollama/nomic-embed-text", True),
    ("cohere-vectors", "openai_compatible/embed-english-v3.0", True),
    ("mock-embedding", "mock/mock-embedding", True),
    ("embedder", "hosted_vllm/bge-m3", True),
])
def test_a_deployment_embeds_when_its_model_or_alias_says_so(
    alias: str, model: str, embeds: bool
) -> None:
    assert is_embedding(deployment(alias, model)) is embeds


@pytest.mark.parametrize(("alias", "model", "mode", "embeds"), [
    ("vectors", "openai_compatible/voyage-3", "embedding", True),
    ("local-vectors", "ollama/all-minilm", "embedding", True),
    ("embedder", "hosted_vllm/bge-m3", "embedding", True),
    # the config's word wins over the name
    ("embed-chat", "openai/embed-chat-v1", "chat", False),
    ("writer", "openai/gpt-3.5-turbo-instruct", "completion", False),
])
def test_a_deployment_embeds_when_its_model_info_mode_says_so(
    alias: str, model: str, mode: str, embeds: bool
) -> None:
    config = parse_config({"model_list": [{
        "model_name": alias, "model_info": {"mode": mode},
        "litellm_params": {"model": model, "api_base": "http://upstream/v1"}}]}, {})
    [d] = config.deployments
    assert d.mode == mode
    assert is_embedding(d) is embeds
    assert probe_body(d)[0] is (Endpoint.EMBEDDINGS if embeds else Endpoint.CHAT)


def test_a_model_info_mode_that_is_no_string_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"model_info\.mode"):
        parse_config({"model_list": [{
            "model_name": "vectors", "model_info": {"mode": ["embedding"]},
            "litellm_params": {"model": "openai/voyage-3", "api_base": "http://u/v1"}}]}, {})


def test_a_chat_deployment_is_probed_with_a_one_token_ping() -> None:
    endpoint, body = probe_body(deployment("gpt-4o-mini", "openai/gpt-4o-mini"))
    assert endpoint is Endpoint.CHAT
    assert body == {"model": "gpt-4o-mini", "max_tokens": 1,
                    "messages": [{"role": "user", "content": "ping"}]}


def test_an_embedding_deployment_is_probed_with_an_embedding_of_ping() -> None:
    endpoint, body = probe_body(deployment("emb", "openai/text-embedding-3-small"))
    assert endpoint is Endpoint.EMBEDDINGS
    assert body == {"model": "emb", "input": "ping"}


@pytest.mark.parametrize(("model", "mode"), [
    ("cohere/rerank-v3.5", None), ("hosted_vllm/bge-reranker-v2-m3", None),
    ("hosted_vllm/bge-m3", "rerank")])
def test_a_reranker_is_probed_with_a_rerank_of_ping(model: str, mode: str | None) -> None:
    config = parse_config({"model_list": [{
        "model_name": "ranker", "model_info": {"mode": mode},
        "litellm_params": {"model": model, "api_base": "http://upstream/v1"}}]}, {})
    endpoint, body = probe_body(config.deployments[0])
    assert endpoint is Endpoint.RERANK
    assert body == {"model": "ranker", "query": "ping", "documents": ["ping"]}


def test_a_moderation_model_is_probed_with_a_moderation_of_ping() -> None:
    endpoint, body = probe_body(deployment("mod", "openai/omni-moderation-latest"))
    assert endpoint is Endpoint.MODERATIONS
    assert body == {"model": "mod", "input": "ping"}


def test_a_probe_is_charged_to_nobody_and_marked_as_a_probe() -> None:
    d = deployment("gpt-4o-mini", "openai/gpt-4o-mini")
    first, second = probe_request(d, 0.5), probe_request(d, 0.5)
    assert first.request_id.startswith(PROBE_PREFIX)
    assert first.request_id != second.request_id
    assert first.deployment_id == d.id and first.model_alias == "gpt-4o-mini"
    assert first.key_id is None and first.team_id is None and first.end_user is None
    assert first.metadata == {"aigw_probe": "1"}
    assert not first.stream and first.heartbeat_interval == 0.5


def test_the_lease_is_free_when_nobody_holds_it_its_time_is_up_or_it_is_ours() -> None:
    held = ProbeLease(holder="a", until=100.0)
    assert may_take(None, "a", 50.0)
    assert may_take(held, "a", 50.0)  # the holder renews
    assert not may_take(held, "b", 99.9)
    assert may_take(held, "b", 100.0)
