"""Rerank calls are priced per query (``input_cost_per_query``) where a price says so."""

from __future__ import annotations

from decimal import Decimal

from core.pricing import PriceTable
from schemas.usage import TokenUsage

TABLE = PriceTable.default()


def test_cohere_rerank_is_priced_per_search_from_the_shipped_table() -> None:
    usage = TokenUsage(prompt_tokens=500, queries=1)
    assert TABLE.cost("cohere", "rerank-v3.5", usage) == Decimal("0.002")
    assert TABLE.cost("cohere", "rerank-v3.5", usage.model_copy(update={"queries": 3})) == \
        Decimal("0.006")


def test_a_per_query_price_alone_prices_an_unknown_reranker() -> None:
    usage = TokenUsage(prompt_tokens=120, queries=1)
    cost = TABLE.cost("hosted_vllm", "bge-reranker-v2-m3", usage,
                      overrides={"input_cost_per_query": Decimal("0.01")})
    assert cost == Decimal("0.01")


def test_a_reranker_priced_per_token_pays_for_its_tokens_only() -> None:
    usage = TokenUsage(prompt_tokens=120, queries=1)
    cost = TABLE.cost("hosted_vllm", "bge-reranker-v2-m3", usage,
                      overrides={"input_cost_per_token": Decimal("0.000001"),
                                 "output_cost_per_token": Decimal("0")})
    assert cost == Decimal("0.00012")


def test_queries_cost_nothing_without_a_query_price() -> None:
    usage = TokenUsage(prompt_tokens=10, completion_tokens=5, queries=2)
    assert TABLE.cost("openai", "gpt-4o-mini", usage) == TABLE.cost(
        "openai", "gpt-4o-mini", usage.model_copy(update={"queries": 0}))


def test_moderation_models_are_free_in_the_table() -> None:
    assert TABLE.cost("openai", "omni-moderation-latest", TokenUsage(prompt_tokens=50)) == 0
