"""The most an images or audio call can cost, reserved against budgets before it is sent."""

from __future__ import annotations

import struct
from decimal import Decimal
from typing import Any

import pytest

from ingress.admission.media_reserve import RESERVE_BYTES_PER_SECOND, media_estimate, most_cost
from schemas.config import Deployment
from schemas.infer import Endpoint
from schemas.usage import MediaUsage


def _at(upstream: str, **extra: Any) -> Deployment:
    return Deployment(id="d", model_name="m", provider="openai", upstream_model=upstream,
                      extra=extra)


@pytest.mark.parametrize(("body", "most"), [
    ({"size": "1024x1792", "quality": "hd", "n": 2}, Decimal("0.24")),
    ({}, Decimal("0.04")),
    ({"n": "junk"}, Decimal("0.04")),
])
def test_images_reserve_their_count_at_their_size_and_quality(body: dict[str, Any],
                                                              most: Decimal) -> None:
    assert most_cost(_at("dall-e-3"), Endpoint.IMAGES, body, None) == most


def test_gpt_image_at_auto_quality_reserves_its_highest() -> None:
    assert most_cost(_at("gpt-image-1"), Endpoint.IMAGES, {"quality": "auto"}, None) == (
        Decimal("0.167"))


def test_a_deployment_price_per_image_is_reserved() -> None:
    deployment = _at("mine", output_cost_per_image="0.5")
    assert most_cost(deployment, Endpoint.IMAGE_EDITS, {"n": 3}, None) == Decimal("1.5")


def test_speech_reserves_its_characters() -> None:
    assert most_cost(_at("tts-1"), Endpoint.SPEECH, {"input": "x" * 100}, None) == (
        Decimal("0.0015"))


def test_audio_reserves_a_wavs_seconds_else_a_low_bitrates() -> None:
    rate = 8000
    data = b"\0\0" * rate * 4
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    wav = (b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVE" + b"fmt "
           + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", len(data)) + data)
    assert most_cost(_at("whisper-1"), Endpoint.TRANSCRIPTIONS, {}, wav) == Decimal("0.0004")
    mp3 = b"ID3" + b"\0" * (RESERVE_BYTES_PER_SECOND * 10 - 3)
    assert most_cost(_at("whisper-1"), Endpoint.TRANSLATIONS, {}, mp3) == Decimal("0.001")


def test_an_unpriced_model_reserves_nothing() -> None:
    assert most_cost(_at("unknown"), Endpoint.IMAGES, {}, None) is None
    assert most_cost(_at("unknown"), Endpoint.TRANSCRIPTIONS, {}, b"abc") is None


def test_a_lost_workers_call_is_assumed_to_have_used_what_it_asked_for() -> None:
    images = media_estimate(Endpoint.IMAGES, {"n": 2, "size": "1024x1792", "quality": "hd"},
                            None)
    assert images.estimated and images.media == MediaUsage(
        images=2, image_size="1024x1792", image_quality="hd")
    speech = media_estimate(Endpoint.SPEECH, {"input": "hello"}, None)
    assert speech.media == MediaUsage(characters=5)
    audio = media_estimate(Endpoint.TRANSCRIPTIONS, {}, b"\0" * 10_000)
    assert audio.media == MediaUsage(seconds=Decimal("2.5"))
