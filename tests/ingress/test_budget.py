from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

from core.pricing import ModelPrice, PriceTable
from ingress.admission.budget import (
    DEFAULT_MAX_OUTPUT_TOKENS,
    MEDIA_PART_TOKENS,
    budget_exceeded_message,
    estimate_prompt_tokens,
    max_output_tokens,
    period_keys,
    rate_limit_message,
    reserve_cost,
    reset_times,
    usd,
)

PRICE = ModelPrice(input=Decimal("0.0000025"), output=Decimal("0.00001"))


def test_reserve_cost_prices_the_prompt_estimate_and_the_whole_output_cap() -> None:
    assert reserve_cost(1000, 4096, PRICE) == Decimal("0.0434600")


def test_reserve_cost_uses_a_reasoning_price_above_the_output_price() -> None:
    price = ModelPrice(input=Decimal("0.000001"), output=Decimal("0.000002"),
                       reasoning=Decimal("0.000004"))
    assert reserve_cost(0, 1000, price) == Decimal("0.004")


def test_reserve_cost_of_an_unknown_price_is_zero() -> None:
    assert reserve_cost(1000, 1000, None) == 0


def test_prompt_estimate_is_characters_over_four_plus_message_overhead() -> None:
    body = {"messages": [
        {"role": "system", "content": "x" * 40},
        {"role": "user", "content": "y" * 41},
    ]}
    # 10 + 11 tokens of text, 4 per message, 3 to prime the reply.
    assert estimate_prompt_tokens(body) == 10 + 11 + 2 * 4 + 3


def test_prompt_estimate_reads_parts_tools_and_tool_calls() -> None:
    body = {
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "a" * 8},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            ]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "c1", "type": "function",
                 "function": {"name": "weather", "arguments": '{"city":"Oslo"}'}},
            ]},
        ],
        "tools": [{"type": "function", "function": {"name": "weather"}}],
    }
    tools = len('[{"type":"function","function":{"name":"weather"}}]')
    expected = (2 + MEDIA_PART_TOKENS + 4) + (2 + 4 + 4) + 3 + -(-tools // 4)
    assert estimate_prompt_tokens(body) == expected


def test_prompt_estimate_reads_anthropic_system_and_blocks() -> None:
    body = {
        "system": [{"type": "text", "text": "s" * 12}],
        "messages": [{"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t", "content": "r" * 4},
        ]}],
    }
    assert estimate_prompt_tokens(body) == 3 + (4 + 1) + 3


def test_prompt_estimate_of_embeddings_input() -> None:
    assert estimate_prompt_tokens({"input": "abcdefgh"}) == 2
    assert estimate_prompt_tokens({"input": ["abcd", "abcdefgh"]}) == 3
    assert estimate_prompt_tokens({"input": [1, 2, 3]}) == 3
    assert estimate_prompt_tokens({"input": [[1, 2], [3]]}) == 3


def test_max_output_tokens_prefers_the_request_and_multiplies_by_n() -> None:
    assert max_output_tokens({}) == DEFAULT_MAX_OUTPUT_TOKENS
    assert max_output_tokens({}, 1000) == 1000
    assert max_output_tokens({"max_tokens": 50}) == 50
    assert max_output_tokens({"max_completion_tokens": 70, "max_tokens": 50}) == 70
    assert max_output_tokens({"max_tokens": 50, "n": 3}) == 150
    assert max_output_tokens({"max_tokens": None}, 10) == 10
    assert max_output_tokens({"input": "x"}, generates=False) == 0


def test_period_keys_are_utc() -> None:
    late_in_new_york = datetime(2026, 11, 22, 23, 30, tzinfo=timezone(timedelta(hours=-5)))
    assert period_keys(late_in_new_york) == ("20261123", "202611")


def test_reset_times_are_the_next_utc_midnight_and_month_start() -> None:
    day, month = reset_times(datetime(2026, 12, 31, 18, 0, tzinfo=UTC))
    assert day == datetime(2027, 1, 1, tzinfo=UTC)
    assert month == datetime(2027, 1, 1, tzinfo=UTC)
    day, month = reset_times(datetime(2026, 2, 1, 0, 0, tzinfo=UTC))
    assert day == datetime(2026, 2, 2, tzinfo=UTC)
    assert month == datetime(2026, 3, 1, tzinfo=UTC)


def test_budget_exceeded_message() -> None:
    resets = datetime(2026, 11, 23, tzinfo=UTC)
    assert budget_exceeded_message(
        "key", "ci-bot", "daily", Decimal("5"), Decimal("5.004"), resets
    ) == ("Budget exceeded: key ci-bot daily budget $5.00 (spent $5.00); "
          "resets at 2026-11-23T00:00:00Z")


def test_budget_message_says_what_holds_a_budget_that_is_not_spent() -> None:
    message = budget_exceeded_message(
        "team", "search", "monthly", Decimal(100), Decimal("97.5"),
        datetime(2026, 12, 1, tzinfo=UTC), reserved=Decimal("1.25"), requested=Decimal("2"),
    )
    assert "(spent $97.50, $1.25 reserved by requests in flight, " in message
    assert "this request may cost up to $2.00)" in message


def test_rate_limit_message_follows_openai() -> None:
    assert rate_limit_message("key", "ci", "tokens", 10000, 9348, 5086, 26.6041) == (
        "Rate limit reached for key ci on tokens per min (TPM): Limit 10000, Used 9348, "
        "Requested 5086. Please try again in 26.604s."
    )


def test_usd_rounds_half_even_to_cents() -> None:
    assert usd(Decimal("0.125")) == "$0.12"
    assert usd(Decimal("3")) == "$3.00"


def test_a_reranker_reserves_its_price_per_search_once() -> None:
    price = PriceTable.default().price("cohere", "rerank-v3.5")
    assert price is not None
    assert reserve_cost(400, 0, price) == Decimal("0.002")
