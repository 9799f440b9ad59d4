"""What an images or audio call can cost at most (reserved against budgets before it is
sent) and what one whose worker was lost is assumed to have used: what it asked for."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from core.media_pricing import MediaPriceTable, deployment_overrides, image_size
from schemas.config import Deployment
from schemas.infer import Endpoint
from schemas.media import wav_seconds
from schemas.usage import MediaUsage, TokenUsage

# An upload of unknown duration is assumed to hold this many bytes per second when the
# most it can cost is reserved: 32 kbit/s, on the low side of speech codecs.
RESERVE_BYTES_PER_SECOND = 4000
PRICES = MediaPriceTable.default()


def most_cost(deployment: Deployment, endpoint: Endpoint, body: dict[str, Any],
              audio: bytes | None) -> Decimal | None:
    """The most a call at ``deployment`` can cost (None: unknown, reserve nothing)."""
    own = deployment_overrides(deployment)
    provider, model = deployment.provider, deployment.upstream_model
    table = PRICES.model_price(provider, model)
    if endpoint in (Endpoint.IMAGES, Endpoint.IMAGE_EDITS):
        n = body.get("n")
        count = n if isinstance(n, int) and n > 0 else 1
        one = own.per_image(image_size(body.get("size")))
        if one is None:
            one = PRICES.image_price(provider, model, body.get("size"), body.get("quality"))
        return None if one is None else count * one
    if endpoint is Endpoint.SPEECH:
        per_char = own.input_cost_per_character or (table and table.input_cost_per_character)
        text = body.get("input")
        return per_char * len(text) if per_char and isinstance(text, str) else None
    per_second = own.input_cost_per_second or (table and table.input_cost_per_second)
    if not per_second or audio is None:
        return None
    seconds = wav_seconds(audio)
    if seconds is None:
        seconds = Decimal(len(audio)) / RESERVE_BYTES_PER_SECOND
    return per_second * seconds


def media_estimate(endpoint: Endpoint, body: dict[str, Any],
                   audio: bytes | None) -> TokenUsage:
    """What a call whose worker was lost is assumed to have used: what it asked for."""
    if endpoint in (Endpoint.IMAGES, Endpoint.IMAGE_EDITS):
        n = body.get("n")
        size, quality = body.get("size"), body.get("quality")
        media = MediaUsage(images=n if isinstance(n, int) and n > 0 else 1,
                           image_size=size if isinstance(size, str) else None,
                           image_quality=quality if isinstance(quality, str) else None)
    elif endpoint is Endpoint.SPEECH:
        text = body.get("input")
        media = MediaUsage(characters=len(text) if isinstance(text, str) else 0)
    else:
        seconds = wav_seconds(audio or b"")
        if seconds is None:
            seconds = Decimal(len(audio or b"")) / RESERVE_BYTES_PER_SECOND
        media = MediaUsage(seconds=seconds.quantize(Decimal("0.001")))
    return TokenUsage(media=media, estimated=True)
