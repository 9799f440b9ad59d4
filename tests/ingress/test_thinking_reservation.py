"""A budget reservation covers the thinking budget the worker adds to max_tokens."""

from __future__ import annotations

from decimal import Decimal

from core.pricing import ModelPrice, PriceTable
from ingress.admission.alerts import BudgetAlerts
from ingress.admission.budget import max_output_tokens, reserve_cost
from ingress.admission.gatekeeper import Gatekeeper
from ingress.admission.local import LocalAdmission
from ingress.auth.principal import Principal
from schemas.config import Deployment
from schemas.keys import Limits, VirtualKey
from schemas.reasoning import thinking_budget


def test_the_reserved_output_is_the_max_tokens_the_worker_sends_anthropic() -> None:
    body = {"reasoning_effort": "high"}
    budget = thinking_budget("anthropic", body)
    assert max_output_tokens(body, 4096, thinking_budget=budget) == 16384 + 4096
    small = {"reasoning_effort": "high", "max_tokens": 100, "n": 2}
    assert max_output_tokens(small, 4096, thinking_budget=budget) == 2 * (16384 + 100)
    roomy = {"reasoning_effort": "low", "max_completion_tokens": 50_000}
    assert max_output_tokens(roomy, 4096, thinking_budget=2048) == 50_000


def test_no_thinking_reserves_as_before() -> None:
    assert max_output_tokens({"max_tokens": 10}, 4096) == 10
    assert max_output_tokens({}, 4096, thinking_budget=thinking_budget("openai", {})) == 4096


def test_a_long_prompt_is_reserved_at_the_long_context_tier() -> None:
    price = ModelPrice(input=Decimal("0.000003"), output=Decimal("0.000015"),
                       input_above_200k=Decimal("0.000006"),
                       output_above_200k=Decimal("0.0000225"))
    # 250000 x 0.000006 + 1000 x 0.0000225
    assert reserve_cost(250_000, 1000, price) == Decimal("1.5") + Decimal("0.0225")
    # 1000 x 0.000003 + 1000 x 0.000015
    assert reserve_cost(1000, 1000, price) == Decimal("0.003") + Decimal("0.015")


async def test_the_gatekeeper_reserves_the_thinking_budget_at_the_output_price() -> None:
    gatekeeper = Gatekeeper(LocalAdmission(), PriceTable.default(), BudgetAlerts(None))
    key = VirtualKey(id="k-think", limits=Limits(daily_budget_usd=Decimal("100")))
    claude = Deployment(id="c#1", model_name="claude", provider="anthropic",
                        upstream_model="claude-sonnet-4-20250514")
    body = {"messages": [{"role": "user", "content": "abcd" * 25}], "reasoning_effort": "high"}
    ticket = await gatekeeper.admit(Principal(key=key), claude, "adm-1", body, generates=True)
    # prompt estimate: 25 text + 4 message + 3 priming = 32 tokens at 3/M;
    # output: 16384 thinking + 4096 answer at 15/M
    assert ticket.reserve_cost == 32 * Decimal("0.000003") + 20480 * Decimal("0.000015")
