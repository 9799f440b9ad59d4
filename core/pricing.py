"""What one upstream call costs, from a shipped price table.

Prices are USD per token, kept as strings in ``prices.json`` and parsed into ``Decimal``
so no binary float ever touches money. Costs are rounded to 1e-9 USD, the scale of the
``Decimal(18, 9)`` cost column, so the cost an event carries is exactly the cost stored.

The rule for one call:

* a prompt of more than 200k tokens (cached ones included) prices the whole call at the
  model's ``_above_200k`` tier, as LiteLLM does; each tier price the model lacks falls back
  to its ordinary price;
* uncached input (``prompt_tokens - cached_tokens - cache_write_tokens``) at the input price;
* cached input at the cache-read price, cache writes at the cache-write price (each falls
  back to the input price when the model has none);
* ``completion_tokens`` at the output price. They already include reasoning tokens, so
  reasoning is never added on top; a model whose reasoning is priced apart from its other
  output (``output_cost_per_reasoning_token``) pays the difference on its reasoning tokens
  only.

Prices come from the table, and a deployment's own LiteLLM price keys
(:data:`schemas.price_keys.PRICE_KEYS`) replace the table's one by one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from importlib import resources
from typing import Any

from schemas.price_keys import LONG_CONTEXT_THRESHOLD, PRICE_KEYS
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
    """USD per token. Every field but ``input`` and ``output`` is optional; a new price
    dimension is a new optional field here and its LiteLLM key in ``PRICE_KEYS``."""

    input: Decimal
    output: Decimal
    cache_read: Decimal | None = None
    cache_write: Decimal | None = None
    reasoning: Decimal | None = None
    input_above_200k: Decimal | None = None
    output_above_200k: Decimal | None = None
    cache_read_above_200k: Decimal | None = None
    cache_write_above_200k: Decimal | None = None
    query: Decimal | None = None  # per query (a rerank search), not per token

    @classmethod
    def parse(cls, raw: Mapping[str, str]) -> ModelPrice:
        """A price table entry; keys are field names or LiteLLM's price keys."""
        names = {f.name for f in dataclasses.fields(cls)}
        values: dict[str, Decimal] = {}
        for key, value in raw.items():
            name = PRICE_KEYS.get(key, key)
            if name not in names:
                raise ValueError(f"unknown price key {key!r}")
            values[name] = Decimal(value)
        return cls(**values)

    def overridden(self, fields: Mapping[str, Decimal | None]) -> ModelPrice:
        # ``fields_of`` yields field names only, and never None for input or output.
        values: dict[str, Any] = dict(fields)
        return dataclasses.replace(self, **values)

    @property
    def has_long_context_tier(self) -> bool:
        return any(
            p is not None
            for p in (self.input_above_200k, self.output_above_200k,
                      self.cache_read_above_200k, self.cache_write_above_200k)
        )

    def for_prompt(self, prompt_tokens: int) -> ModelPrice:
        """The prices that apply to a call with this many prompt tokens."""
        if prompt_tokens <= LONG_CONTEXT_THRESHOLD or not self.has_long_context_tier:
            return self

        def tier(above: Decimal | None, base: Decimal | None) -> Decimal | None:
            return above if above is not None else base

        return dataclasses.replace(
            self,
            input=self.input if self.input_above_200k is None else self.input_above_200k,
            output=self.output if self.output_above_200k is None else self.output_above_200k,
            cache_read=tier(self.cache_read_above_200k, self.cache_read),
            cache_write=tier(self.cache_write_above_200k, self.cache_write),
        )


def fields_of(overrides: Mapping[str, Decimal]) -> dict[str, Decimal | None]:
    """A deployment's LiteLLM price keys as ``ModelPrice`` field values."""
    return {PRICE_KEYS[k]: v for k, v in overrides.items() if k in PRICE_KEYS}


def call_cost(price: ModelPrice, usage: TokenUsage) -> Decimal:
    """Cost of one call at ``price``, before rounding."""
    price = price.for_prompt(usage.prompt_tokens)
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
    if price.query is not None and usage.queries:
        cost += usage.queries * price.query
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

    def price(
        self, provider: str, model: str, overrides: Mapping[str, Decimal] | None = None
    ) -> ModelPrice | None:
        """The prices of one deployment: the table's, each replaced by the deployment's own
        LiteLLM price key where it sets one. A model the table does not know needs at least
        ``input_cost_per_token`` and ``output_cost_per_token``."""
        fields = fields_of(overrides or {})
        known = self.lookup(provider, model)
        if known is None:
            given = {k: v for k, v in fields.items() if v is not None}
            if "query" in given:  # a per-search price alone prices a reranker
                given = {"input": ZERO, "output": ZERO, **given}
            if "input" not in given or "output" not in given:
                return None
            return ModelPrice(**given)
        if "output" in fields and "reasoning" not in fields:
            # The table's reasoning price is relative to the table's output price.
            fields["reasoning"] = None
        return known.overridden(fields)

    def cost(
        self,
        provider: str,
        model: str,
        usage: TokenUsage,
        input_override: Decimal | None = None,
        output_override: Decimal | None = None,
        overrides: Mapping[str, Decimal] | None = None,
    ) -> Decimal | None:
        """USD cost of one call, or None when neither the table nor the overrides price it.

        ``overrides`` are a deployment's LiteLLM price keys (``Deployment.prices``);
        ``input_override``/``output_override`` are the first two of them, kept for callers
        that only know those.
        """
        if provider in FREE_PROVIDERS:
            return ZERO
        merged: dict[str, Decimal] = dict(overrides or {})
        if input_override is not None:
            merged["input_cost_per_token"] = input_override
        if output_override is not None:
            merged["output_cost_per_token"] = output_override
        price = self.price(provider, model, merged)
        if price is None:
            self._warn_unknown(provider, model)
            return None
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
