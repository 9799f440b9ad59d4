"""What an images or audio call costs: per image by size and quality, per second of audio,
per character of speech.

The table is the ``media`` section of ``prices.json``, keyed as LiteLLM keys its own:
``<quality>/<width>-x-<height>/<model>`` (``hd/1024-x-1792/dall-e-3``),
``<width>-x-<height>/<model>`` (``1024-x-1024/dall-e-2``) or the bare model (``whisper-1``).
An entry prices an image with ``output_cost_per_image`` (or ``input_cost_per_image``, which
LiteLLM's table also uses for generated images) or ``input_cost_per_pixel`` times the
image's pixels. A deployment's own ``litellm_params`` keys of the same names win.

The rule for one call: images made x the price of one at their size and quality, plus audio
seconds sent x ``input_cost_per_second``, plus audio seconds made x
``output_cost_per_second``, plus characters x ``input_cost_per_character``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from decimal import Decimal, InvalidOperation
from importlib import resources
from typing import Any, Protocol

from core.pricing import FREE_PROVIDERS, ZERO, candidates, quantize
from schemas.config import Deployment
from schemas.usage import MediaUsage, TokenUsage

log = logging.getLogger("aigw.core.pricing")

DEFAULT_SIZE = (1024, 1024)
# An unset or ``auto`` quality is priced as the model's standard one, else its highest.
_UNSET_QUALITIES = ("standard", "high", "hd")
_SIZE = re.compile(r"^(\d{1,5})x(\d{1,5})$")


@dataclass(frozen=True, slots=True)
class MediaPrice:
    """LiteLLM's keys, USD per unit; None where the entry does not say."""

    input_cost_per_image: Decimal | None = None
    output_cost_per_image: Decimal | None = None
    input_cost_per_pixel: Decimal | None = None
    input_cost_per_second: Decimal | None = None
    output_cost_per_second: Decimal | None = None
    input_cost_per_character: Decimal | None = None

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> MediaPrice:
        """The keys this class knows, from a table entry or a deployment's params; a value
        that is not a number is left out (and logged)."""
        found: dict[str, Decimal] = {}
        for name in KEYS:
            value = raw.get(name)
            if value is None or isinstance(value, bool):
                continue
            try:
                number = Decimal(str(value))
            except InvalidOperation:
                log.warning("price %s=%r is not a number; ignored", name, value)
                continue
            if number.is_finite() and number >= 0:
                found[name] = number
        return cls(**found)

    @property
    def empty(self) -> bool:
        return all(getattr(self, name) is None for name in KEYS)

    def per_image(self, size: tuple[int, int]) -> Decimal | None:
        if self.output_cost_per_image is not None:
            return self.output_cost_per_image
        if self.input_cost_per_image is not None:
            return self.input_cost_per_image
        if self.input_cost_per_pixel is not None:
            return self.input_cost_per_pixel * size[0] * size[1]
        return None


KEYS = tuple(f.name for f in fields(MediaPrice))


def image_size(size: object) -> tuple[int, int]:
    """``"1024x1792"`` as (1024, 1792); unset, ``auto`` or unreadable: 1024 x 1024."""
    if isinstance(size, str) and (match := _SIZE.match(size.strip())):
        return int(match[1]), int(match[2])
    return DEFAULT_SIZE


def _qualities(quality: object) -> tuple[str, ...]:
    if isinstance(quality, str) and quality and quality != "auto":
        return (quality,)
    return _UNSET_QUALITIES


class MediaPriceTable:
    def __init__(self, version: str, prices: dict[str, dict[str, MediaPrice]]) -> None:
        self.version = version
        self._prices = prices

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> MediaPriceTable:
        section = doc.get("media") or {}
        prices = {
            provider: {name: MediaPrice.parse(raw) for name, raw in models.items()}
            for provider, models in section.items() if isinstance(models, dict)
        }
        return cls(str(doc.get("version", "")), prices)

    @classmethod
    def default(cls) -> MediaPriceTable:
        text = resources.files("core").joinpath("prices.json").read_text("utf-8")
        return cls.from_json(json.loads(text))

    def _find(self, provider: str, names: list[str]) -> MediaPrice | None:
        tables = [self._prices.get(provider, {})]
        tables += [t for p, t in self._prices.items() if p != provider]
        for name in names:
            for table in tables:
                if name in table:
                    return table[name]
        return None

    def image_price(self, provider: str, model: str, size: object,
                    quality: object) -> Decimal | None:
        """One image of ``model`` at ``size`` and ``quality``, from the table."""
        width, height = image_size(size)
        dims = f"{width}-x-{height}"
        for name in candidates(model):
            keys = [f"{q}/{dims}/{name}" for q in _qualities(quality)]
            keys += [f"{dims}/{name}", name]
            found = self._find(provider, keys)
            if found is not None and (price := found.per_image((width, height))) is not None:
                return price
        return None

    def model_price(self, provider: str, model: str) -> MediaPrice | None:
        return self._find(provider, candidates(model))

    def cost(self, provider: str, model: str, media: MediaUsage,
             overrides: MediaPrice | None = None) -> Decimal | None:
        """USD cost of one call, rounded as stored; None when nothing prices what it used."""
        if provider in FREE_PROVIDERS:
            return ZERO
        own = overrides or MediaPrice()
        table = self.model_price(provider, model) or MediaPrice()
        total = ZERO
        priced = False
        if media.images:
            size = image_size(media.image_size)
            per_image = own.per_image(size)
            if per_image is None:
                per_image = self.image_price(provider, model, media.image_size,
                                             media.image_quality)
            if per_image is None:
                return None
            total += media.images * per_image
            priced = True
        for amount, key in ((media.seconds, "input_cost_per_second"),
                            (media.output_seconds, "output_cost_per_second"),
                            (Decimal(media.characters), "input_cost_per_character")):
            price = _pick(own, table, key)
            if price is not None:
                priced = True
                total += amount * price
            elif amount and key != "output_cost_per_second":
                return None  # used something no price covers: unknown, not free
        return quantize(total) if priced else None


def _pick(own: MediaPrice, table: MediaPrice, key: str) -> Decimal | None:
    value: Decimal | None = getattr(own, key)
    return value if value is not None else getattr(table, key)


class TokenPricer(Protocol):
    """``core.pricing.PriceTable``, as far as a transcription billed in tokens needs it."""

    def cost(self, provider: str, model: str, usage: TokenUsage,
             input_override: Decimal | None = None, output_override: Decimal | None = None,
             overrides: Mapping[str, Decimal] | None = None) -> Decimal | None: ...


def deployment_overrides(deployment: Deployment) -> MediaPrice:
    """The deployment's own media price keys: kept in ``extra`` (or ``prices`` when the
    config knows them as price keys)."""
    return MediaPrice.parse({**deployment.extra, **deployment.prices})


def deployment_cost(table: MediaPriceTable, deployment: Deployment, usage: TokenUsage,
                    tokens: TokenPricer) -> Decimal | None:
    """An images or audio call at ``deployment``: its media units, plus its tokens when the
    upstream billed some (``gpt-4o-transcribe``)."""
    media = usage.media or MediaUsage()
    cost = table.cost(deployment.provider, deployment.upstream_model, media,
                      deployment_overrides(deployment))
    if usage.prompt_tokens or usage.completion_tokens:
        token_cost = tokens.cost(deployment.provider, deployment.upstream_model, usage,
                                 overrides=deployment.prices)
        if token_cost is not None:
            cost = token_cost if cost is None else cost + token_cost
    return cost
