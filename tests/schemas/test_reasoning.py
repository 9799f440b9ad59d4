"""Effort words to thinking budgets, and the output cap a thinking budget needs."""

from __future__ import annotations

import pytest

from schemas.reasoning import (
    ANTHROPIC_BUDGETS,
    GEMINI_BUDGETS,
    anthropic_thinking,
    effort,
    max_tokens_with_thinking,
    thinking_budget,
)


def test_the_responses_api_s_reasoning_effort_is_read_too() -> None:
    assert effort({"reasoning": {"effort": "high"}}) == "high"
    assert effort({"reasoning_effort": "low", "reasoning": {"effort": "high"}}) == "low"
    assert effort({}) is None


def test_budgets_grow_with_effort_and_anthropic_s_start_at_its_minimum() -> None:
    assert list(ANTHROPIC_BUDGETS.values()) == sorted(ANTHROPIC_BUDGETS.values())
    fixed = [b for effort, b in GEMINI_BUDGETS.items() if effort != "xhigh"]
    assert fixed == sorted(fixed)
    assert GEMINI_BUDGETS["xhigh"] == -1  # dynamic
    assert min(ANTHROPIC_BUDGETS.values()) == 1024


@pytest.mark.parametrize(("requested", "budget", "expected"), [
    (None, 0, 4096), (100, 0, 100),
    (None, 2048, 2048 + 4096), (1000, 2048, 3048), (2048, 2048, 4096), (5000, 2048, 5000),
])
def test_the_cap_sent_with_a_thinking_budget(
    requested: int | None, budget: int, expected: int
) -> None:
    assert max_tokens_with_thinking(requested, budget, 4096) == expected


def test_thinking_budget_per_provider() -> None:
    body = {"reasoning_effort": "high"}
    assert thinking_budget("anthropic", body) == 16384
    assert thinking_budget("gemini", body) == 24576
    assert thinking_budget("openai", body) == 0
    assert thinking_budget("anthropic", {"reasoning_effort": "bogus"}) == 0
    assert thinking_budget("gemini", {"reasoning_effort": "none"}) == 0
    assert thinking_budget("gemini", {"reasoning_effort": "xhigh"}) == 32768
    assert thinking_budget("anthropic", {"reasoning_effort": "xhigh"}) == 32768
    assert thinking_budget("anthropic", {"thinking": {"type": "enabled",
                                                       "budget_tokens": 5000}}) == 5000


def test_an_unknown_effort_raises_value_error() -> None:
    with pytest.raises(ValueError, match="reasoning_effort must be one of"):
        anthropic_thinking({"reasoning_effort": "ultra"})
