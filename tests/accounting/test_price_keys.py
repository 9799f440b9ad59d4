"""Every LiteLLM price key, set on a deployment, prices a call as computed here by hand."""

from __future__ import annotations

from decimal import Decimal

import pytest

from core.pricing import ModelPrice, PriceTable
from schemas.config import ConfigError, parse_config
from schemas.price_keys import PRICE_KEYS
from schemas.usage import TokenUsage


@pytest.fixture
def table() -> PriceTable:
    return PriceTable.default()


BASE = {"input_cost_per_token": Decimal("0.000002"), "output_cost_per_token": Decimal("0.00001")}


def cost(table: PriceTable, usage: TokenUsage, **keys: str) -> Decimal | None:
    overrides = {**BASE, **{k: Decimal(v) for k, v in keys.items()}}
    return table.cost("hosted_vllm", "house-model", usage, overrides=overrides)


def test_input_and_output_cost_per_token(table: PriceTable) -> None:
    usage = TokenUsage(prompt_tokens=1000, completion_tokens=300)
    # 1000 x 0.000002 + 300 x 0.00001
    assert cost(table, usage) == Decimal("0.002") + Decimal("0.003")


def test_cache_read_input_token_cost(table: PriceTable) -> None:
    usage = TokenUsage(prompt_tokens=1000, completion_tokens=10, cached_tokens=600)
    # 400 x 0.000002 + 600 x 0.0000002 + 10 x 0.00001
    expected = Decimal("0.0008") + Decimal("0.00012") + Decimal("0.0001")
    assert cost(table, usage, cache_read_input_token_cost="0.0000002") == expected


def test_cache_creation_input_token_cost(table: PriceTable) -> None:
    usage = TokenUsage(prompt_tokens=1000, completion_tokens=10, cache_write_tokens=500)
    # 500 x 0.000002 + 500 x 0.0000025 + 10 x 0.00001
    expected = Decimal("0.001") + Decimal("0.00125") + Decimal("0.0001")
    assert cost(table, usage, cache_creation_input_token_cost="0.0000025") == expected


def test_output_cost_per_reasoning_token(table: PriceTable) -> None:
    usage = TokenUsage(prompt_tokens=100, completion_tokens=1000, reasoning_tokens=700)
    # 100 x 0.000002 + 300 visible x 0.00001 + 700 reasoning x 0.00002
    expected = Decimal("0.0002") + Decimal("0.003") + Decimal("0.014")
    assert cost(table, usage, output_cost_per_reasoning_token="0.00002") == expected


def test_input_cost_per_token_above_200k_tokens(table: PriceTable) -> None:
    usage = TokenUsage(prompt_tokens=200_001, completion_tokens=100)
    # the whole prompt at the tier: 200001 x 0.000004; output keeps its price
    expected = Decimal("0.800004") + Decimal("0.001")
    assert cost(table, usage, input_cost_per_token_above_200k_tokens="0.000004") == expected


def test_exactly_200k_prompt_tokens_stay_at_the_base_price(table: PriceTable) -> None:
    usage = TokenUsage(prompt_tokens=200_000, completion_tokens=100)
    expected = Decimal("0.4") + Decimal("0.001")
    assert cost(table, usage, input_cost_per_token_above_200k_tokens="0.000004") == expected


def test_output_cost_per_token_above_200k_tokens(table: PriceTable) -> None:
    usage = TokenUsage(prompt_tokens=250_000, completion_tokens=100)
    # 250000 x 0.000004 + 100 x 0.000015
    expected = Decimal("1.0") + Decimal("0.0015")
    assert cost(table, usage, input_cost_per_token_above_200k_tokens="0.000004",
                output_cost_per_token_above_200k_tokens="0.000015") == expected


def test_cache_read_input_token_cost_above_200k_tokens(table: PriceTable) -> None:
    usage = TokenUsage(prompt_tokens=300_000, completion_tokens=0, cached_tokens=200_000)
    # 100000 x 0.000004 + 200000 cached x 0.0000004 (the tier; base would be 0.0000002)
    expected = Decimal("0.4") + Decimal("0.08")
    assert cost(table, usage, cache_read_input_token_cost="0.0000002",
                input_cost_per_token_above_200k_tokens="0.000004",
                cache_read_input_token_cost_above_200k_tokens="0.0000004") == expected


def test_cache_creation_input_token_cost_above_200k_tokens(table: PriceTable) -> None:
    usage = TokenUsage(prompt_tokens=300_000, completion_tokens=0, cache_write_tokens=100_000)
    # 200000 x 0.000004 + 100000 written x 0.000005 (the tier; base would be 0.0000025)
    expected = Decimal("0.8") + Decimal("0.5")
    assert cost(table, usage, cache_creation_input_token_cost="0.0000025",
                input_cost_per_token_above_200k_tokens="0.000004",
                cache_creation_input_token_cost_above_200k_tokens="0.000005") == expected


def test_a_tier_without_its_cache_prices_keeps_the_base_cache_prices(table: PriceTable) -> None:
    usage = TokenUsage(prompt_tokens=300_000, cached_tokens=100_000)
    # 200000 x 0.000004 + 100000 x 0.0000002
    expected = Decimal("0.8") + Decimal("0.02")
    assert cost(table, usage, cache_read_input_token_cost="0.0000002",
                input_cost_per_token_above_200k_tokens="0.000004") == expected


def test_deployment_cache_prices_replace_the_table_s(table: PriceTable) -> None:
    usage = TokenUsage(prompt_tokens=1000, completion_tokens=100, cached_tokens=500,
                       cache_write_tokens=300)
    overrides = {"cache_read_input_token_cost": Decimal("0.0000001"),
                 "cache_creation_input_token_cost": Decimal("0.000005")}
    # claude-sonnet-4 list input 3/M and output 15/M stay; 200 x 0.000003 + 500 x 0.0000001
    # + 300 x 0.000005 + 100 x 0.000015
    expected = Decimal("0.0006") + Decimal("0.00005") + Decimal("0.0015") + Decimal("0.0015")
    assert table.cost("anthropic", "claude-sonnet-4-20250514", usage,
                      overrides=overrides) == expected


def test_the_table_prices_claude_sonnet_4_long_context(table: PriceTable) -> None:
    usage = TokenUsage(prompt_tokens=210_000, completion_tokens=1000, cached_tokens=10_000)
    # 200000 x 6/M + 10000 x 0.60/M + 1000 x 22.50/M
    expected = Decimal("1.2") + Decimal("0.006") + Decimal("0.0225")
    assert table.cost("anthropic", "claude-sonnet-4-20250514", usage) == expected


def test_the_table_accepts_litellm_key_names() -> None:
    price = ModelPrice.parse({"input_cost_per_token": "0.1", "output_cost_per_token": "0.2",
                              "cache_read_input_token_cost": "0.01"})
    assert price == ModelPrice(input=Decimal("0.1"), output=Decimal("0.2"),
                               cache_read=Decimal("0.01"))
    with pytest.raises(ValueError, match="unknown price key"):
        ModelPrice.parse({"input": "1", "output": "1", "input_cost_per_tokne": "1"})


def test_config_reads_every_price_key_from_litellm_params_and_model_info() -> None:
    params = {key: f"0.00000{i + 1}" for i, key in enumerate(PRICE_KEYS)}
    config = parse_config({"model_list": [
        {"model_name": "a", "litellm_params": {"model": "openai/x", **params}},
        {"model_name": "b", "litellm_params": {"model": "openai/x"}, "model_info": params},
    ]}, {})
    for deployment in config.deployments:
        assert deployment.prices == {k: Decimal(v) for k, v in params.items()}
        assert not set(deployment.extra) & set(PRICE_KEYS)


def test_a_negative_price_is_refused() -> None:
    with pytest.raises(ConfigError, match="cache_read_input_token_cost: a price must be"):
        parse_config({"model_list": [{"model_name": "a", "litellm_params": {
            "model": "openai/x", "cache_read_input_token_cost": -1}}]}, {})
