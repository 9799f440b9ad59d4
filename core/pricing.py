"""What one upstream call costs, from a shipped price table.

Prices are USD per token, kept as strings in ``prices.json`` and parsed into ``Decimal``
so no binary float ever touches money. Costs are rounded to 1e-9 USD, the scale of the
``Decimal(18, 9)`` cost column, so the cost an event carries is exactly the cost stored.

The rule for one call:

* uncached input (``prompt_tokens - cached_tokens - cache_write_tokens``) at the input price;
* cached input at the cache-read price, cache writes at the cache-write price (each falls
  back to the input price when the model has none);
* ``completion_tokens`` at the output price. They already include reasoning tokens, so
  reasoning is never added on top; a model whose reasoning is priced apart from its other
  output (none today) pays the difference on its reasoning tokens only.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from importlib import resources
from typing import Any

from schemas.usage import TokenUsage

log = logging.getLogger("aigw.core.pricing")

COST_QUANTUM = Decimal("1e-9")
ZERO = Decimal("0")

# Providers whose calls are free by definition: the built-in mock serves demos and tests.
FREE_PROVIDERS = frozenset({"mock"})

# Version suffixes a provider appends to a model family name: dates (``-2024-07-18``,
# ``-20241022``), OpenAI's ``-0125``, Gemini's ``-001`` and ``-latest``. Only these are
# stripped: a looser prefix match would price ``o3-pro`` as ``o3``.
_VERSION_SUFFIX = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{8}|\d{4}|\d{3}|latest)$")


@dataclass(frozen=True, slots=True)
class ModelPrice:
    input: Decimal
    output: Decimal
    cache_read: Decimal | None = None
    cache_write: Decimal | None = None
    reasoning: Decimal | None = None

    @classmethod
    def parse(cls, raw: dict[str, str]) -> ModelPrice:
        def opt(name: str) -> Decimal | None:
            value = raw.get(name)
            return Decimal(value) if value is not None else None

        return cls(
            input=Decimal(raw["input"]),
            output=Decimal(raw["output"]),
            cache_read=opt("cache_read"),
            cache_write=opt("cache_write"),
            reasoning=opt("reasoning"),
        )


def call_cost(price: ModelPrice, usage: TokenUsage) -> Decimal:
    """Cost of one call at ``price``, before rounding."""
    cached = usage.cached_tokens
    written = usage.cache_write_tokens
    # A provider that reports more cached than prompt tokens would make this negative.
    uncached = max(usage.prompt_tokens - cached - written, 0)
    cost = uncached * price.input
    cost += cached * (price.cache_read if price.cache_read is not None else price.input)
    cost += written * (price.cache_write if price.cache_write is not None else price.input)
    cost += usage.completion_tokens * price.output
    if price.reasoning is not None and usage.reasoning_tokens:
        reasoning = min(usage.reasoning_tokens, usage.completion_tokens)
        cost += reasoning * (price.reasoning - price.output)
    return cost


def quantize(cost: Decimal) -> Decimal:
    return cost.quantize(COST_QUANTUM, rounding=ROUND_HALF_EVEN)


def candidates(model: str) -> list[str]:
    """Names to look ``model`` up under, most specific first."""
    names = [model]
    bare = model.rsplit("/", 1)[-1]  # "openai/gpt-4o", "models/gemini-2.0-flash"
    if bare != model:
        names.append(bare)
    stripped = bare
    while (match := _VERSION_SUFFIX.search(stripped)) is not None:
        stripped = stripped[: match.start()]
        names.append(stripped)
    return names


class PriceTable:
    def __init__(self, version: str, prices: dict[str, dict[str, ModelPrice]]) -> None:
        self.version = version
        self._prices = prices
        self._warned: set[tuple[str, str]] = set()

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> PriceTable:
        prices = {
            provider: {model: ModelPrice.parse(raw) for model, raw in models.items()}
            for provider, models in doc["providers"].items()
        }
        for provider, aliases in doc.get("aliases", {}).items():
            for alias, target in aliases.items():
                prices[provider][alias] = prices[provider][target]
        return cls(str(doc["version"]), prices)

    @classmethod
    def default(cls) -> PriceTable:
        text = resources.files("core").joinpath("prices.json").read_text("utf-8")
        return cls.from_json(json.loads(text))

    def lookup(self, provider: str, model: str) -> ModelPrice | None:
        """Exact name first, then without prefix and version suffix; the provider's own
        table first, then any provider's (an Azure or proxy deployment of ``gpt-4o``)."""
        tables = [self._prices.get(provider, {})]
        tables += [t for p, t in self._prices.items() if p != provider]
        for name in candidates(model):
            for table in tables:
                if name in table:
                    return table[name]
        return None

    def cost(
        self,
        provider: str,
        model: str,
        usage: TokenUsage,
        input_override: Decimal | None = None,
        output_override: Decimal | None = None,
    ) -> Decimal | None:
        """USD cost of one call, or None when neither the table nor the overrides price it.

        Deployment overrides (LiteLLM's ``input_cost_per_token``/``output_cost_per_token``)
        win over the table; cache prices stay the table's when it knows the model, else
        they fall back to the overriding input price.
        """
        if provider in FREE_PROVIDERS:
            return ZERO
        known = self.lookup(provider, model)
        if known is None:
            if input_override is None or output_override is None:
                self._warn_unknown(provider, model)
                return None
            price = ModelPrice(input=input_override, output=output_override)
        else:
            price = ModelPrice(
                input=input_override if input_override is not None else known.input,
                output=output_override if output_override is not None else known.output,
                cache_read=known.cache_read,
                cache_write=known.cache_write,
                reasoning=known.reasoning if output_override is None else None,
            )
        return quantize(call_cost(price, usage))

    def _warn_unknown(self, provider: str, model: str) -> None:
        # Once per model: an unpriced model in a busy deployment would flood the log.
        if (provider, model) in self._warned:
            return
        self._warned.add((provider, model))
        log.warning(
            "no price for %s/%s in price table %s: its calls carry no cost "
            "(set input_cost_per_token and output_cost_per_token on the deployment)",
            provider, model, self.version,
        )
