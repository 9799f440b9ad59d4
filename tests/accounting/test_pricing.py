from __future__ import annotations

import logging
from decimal import Decimal

import pytest

from core.pricing import PriceTable, candidates
from schemas.usage import TokenUsage

M = Decimal(1_000_000)


@pytest.fixture
def table() -> PriceTable:
    return PriceTable.default()


def test_default_table_has_a_version_and_exact_decimal_prices(table: PriceTable) -> None:
    assert table.version
    price = table.lookup("openai", "gpt-4o")
    assert price is not None
    assert price.input == Decimal("2.50") / M
    assert price.output == Decimal("10.00") / M


def test_cost_of_plain_input_and_output(table: PriceTable) -> None:
    usage = TokenUsage(prompt_tokens=1000, completion_tokens=500)
    cost = table.cost("openai", "gpt-4o", usage)
    assert cost == Decimal("0.0025") + Decimal("0.005")


def test_cached_tokens_are_charged_at_the_cache_read_price(table: PriceTable) -> None:
    usage = TokenUsage(prompt_tokens=1000, completion_tokens=500, cached_tokens=200)
    # 800 uncached at 0.15/M, 200 cached at 0.075/M, 500 out at 0.60/M
    assert table.cost("openai", "gpt-4o-mini", usage) == Decimal("0.000435000")


def test_cache_writes_and_reads_at_their_own_prices(table: PriceTable) -> None:
    usage = TokenUsage(prompt_tokens=1000, completion_tokens=100, cached_tokens=100,
                       cache_write_tokens=100)
    # 800 x 3/M + 100 x 0.30/M + 100 x 3.75/M + 100 x 15/M
    expected = Decimal("0.0024") + Decimal("0.00003") + Decimal("0.000375") + Decimal("0.0015")
    assert table.cost("anthropic", "claude-sonnet-4-20250514", usage) == expected


def test_cache_prices_fall_back_to_input_when_the_model_has_none(table: PriceTable) -> None:
    usage = TokenUsage(prompt_tokens=100, cached_tokens=40, cache_write_tokens=10)
    assert table.cost("openai", "gpt-4-turbo", usage) == 100 * Decimal("10") / M


def test_reasoning_tokens_are_counted_once_inside_completion_tokens(table: PriceTable) -> None:
    with_reasoning = TokenUsage(prompt_tokens=100, completion_tokens=1000, reasoning_tokens=800)
    without = TokenUsage(prompt_tokens=100, completion_tokens=1000)
    cost = table.cost("openai", "o3", with_reasoning)
    assert cost == table.cost("openai", "o3", without)
    assert cost == (100 * Decimal("2") + 1000 * Decimal("8")) / M


def test_dated_and_prefixed_names_find_the_family_price(table: PriceTable) -> None:
    usage = TokenUsage(prompt_tokens=1_000_000)
    assert table.cost("openai", "gpt-4o-mini-2024-07-18", usage) == Decimal("0.15")
    assert table.cost("openai", "openai/gpt-4o-mini", usage) == Decimal("0.15")
    assert table.cost("gemini", "models/gemini-1.5-pro-002", usage) == Decimal("1.25")
    assert table.cost("openai", "gpt-3.5-turbo-0125", usage) == Decimal("0.50")


def test_exact_name_wins_over_the_family(table: PriceTable) -> None:
    usage = TokenUsage(prompt_tokens=1_000_000)
    assert table.cost("openai", "gpt-4o-2024-05-13", usage) == Decimal("5")
    assert table.cost("openai", "gpt-4o-2024-08-06", usage) == Decimal("2.5")


def test_suffix_stripping_does_not_price_a_different_model() -> None:
    assert "o3" not in candidates("o3-pro")
    assert candidates("claude-3-5-haiku-20241022")[-1] == "claude-3-5-haiku"


def test_a_model_served_through_another_provider_uses_the_list_price(table: PriceTable) -> None:
    usage = TokenUsage(prompt_tokens=1_000_000)
    assert table.cost("openrouter", "openai/gpt-4.1", usage) == Decimal("2")


def test_mock_provider_is_free(table: PriceTable) -> None:
    assert table.cost("mock", "anything", TokenUsage(prompt_tokens=10**6)) == Decimal("0")


def test_deployment_overrides_take_precedence(table: PriceTable) -> None:
    usage = TokenUsage(prompt_tokens=1000, completion_tokens=100, cached_tokens=100)
    cost = table.cost("openai", "gpt-4o", usage, input_override=Decimal("0.000001"),
                      output_override=Decimal("0.000002"))
    # 900 at the override, 100 cached at the table's cache price, 100 out at the override
    assert cost == Decimal("0.0009") + 100 * Decimal("1.25") / M + Decimal("0.0002")


def test_overrides_price_a_model_the_table_does_not_know(table: PriceTable) -> None:
    usage = TokenUsage(prompt_tokens=10, completion_tokens=20, cached_tokens=5)
    cost = table.cost("hosted_vllm", "my-llama", usage, input_override=Decimal("0.1"),
                      output_override=Decimal("0.2"))
    assert cost == Decimal("5.000000000")


def test_costs_are_rounded_to_the_nanodollar(table: PriceTable) -> None:
    usage = TokenUsage(prompt_tokens=1, cached_tokens=1)
    # 1 token at 0.01875/M = 1.875e-8: half-even to 9 places
    assert table.cost("gemini", "gemini-1.5-flash", usage) == Decimal("0.000000019")


def test_unknown_model_costs_none_and_warns_once(
    table: PriceTable, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="aigw.core.pricing")
    usage = TokenUsage(prompt_tokens=10)
    assert table.cost("openai", "gpt-9-ultra", usage) is None
    assert table.cost("openai", "gpt-9-ultra", usage) is None
    assert table.cost("openai", "gpt-9-ultra", usage, input_override=Decimal("1")) is None
    warnings = [r for r in caplog.records if "gpt-9-ultra" in r.getMessage()]
    assert len(warnings) == 1
