"""Images and audio priced from the shipped table and from a deployment's own keys."""

from __future__ import annotations

from decimal import Decimal

import pytest

from core.media_pricing import MediaPrice, MediaPriceTable, image_size
from schemas.usage import MediaUsage

TABLE = MediaPriceTable.default()


@pytest.mark.parametrize(("model", "size", "quality", "price"), [
    ("dall-e-3", "1024x1024", "standard", "0.04"),
    ("dall-e-3", None, None, "0.04"),
    ("dall-e-3", "1024x1792", "hd", "0.12"),
    ("dall-e-3", "1792x1024", "standard", "0.08"),
    ("dall-e-2", "256x256", None, "0.016"),
    ("dall-e-2", "512x512", "standard", "0.018"),
    ("gpt-image-1", "1536x1024", "medium", "0.063"),
    ("gpt-image-1", "auto", "auto", "0.167"),
    ("openai/dall-e-3", "1024x1024", "hd", "0.08"),
])
def test_image_price_by_size_and_quality(model: str, size: str | None, quality: str | None,
                                         price: str) -> None:
    assert TABLE.image_price("openai", model, size, quality) == Decimal(price)


def test_images_cost_their_count_times_the_price_of_one() -> None:
    usage = MediaUsage(images=3, image_size="1024x1792", image_quality="hd")
    assert TABLE.cost("openai", "dall-e-3", usage) == Decimal("0.36")


def test_an_image_at_a_size_the_table_lacks_has_no_price() -> None:
    usage = MediaUsage(images=1, image_size="640x480", image_quality="standard")
    assert TABLE.cost("openai", "dall-e-3", usage) is None


def test_per_pixel_entries_price_by_the_image_area() -> None:
    table = MediaPriceTable.from_json({"version": "t", "media": {"openai": {
        "hd/1024-x-1024/img": {"input_cost_per_pixel": "0.0000000762939453125"}}}})
    assert table.cost("openai", "img", MediaUsage(images=2, image_size="1024x1024",
                                                  image_quality="hd")) == Decimal("0.16")


def test_transcription_seconds_at_the_per_second_price() -> None:
    usage = MediaUsage(seconds=Decimal("12.5"))
    assert TABLE.cost("openai", "whisper-1", usage) == Decimal("0.00125")


def test_speech_characters_at_the_per_character_price() -> None:
    assert TABLE.cost("openai", "tts-1", MediaUsage(characters=1000)) == Decimal("0.015")
    assert TABLE.cost("openai", "tts-1-hd", MediaUsage(characters=3)) == Decimal("0.00009")


def test_deployment_keys_win_over_the_table() -> None:
    own = MediaPrice.parse({"output_cost_per_image": "0.5", "input_cost_per_second": 0.01,
                            "input_cost_per_character": "0.001",
                            "output_cost_per_second": "0.002"})
    assert TABLE.cost("openai", "dall-e-3", MediaUsage(images=2), own) == Decimal("1.0")
    assert TABLE.cost("openai", "whisper-1", MediaUsage(seconds=Decimal(3)), own) == (
        Decimal("0.03"))
    speech = MediaUsage(characters=10, output_seconds=Decimal("2.5"))
    assert TABLE.cost("openai", "tts-1", speech, own) == Decimal("0.015")


def test_input_cost_per_image_prices_generated_images_when_no_output_price() -> None:
    own = MediaPrice.parse({"input_cost_per_image": "0.07"})
    assert TABLE.cost("openai", "my-image-model", MediaUsage(images=3), own) == (
        Decimal("0.21"))


def test_unknown_model_has_no_price_and_junk_keys_are_ignored() -> None:
    assert TABLE.cost("openai", "whisper-9", MediaUsage(seconds=Decimal(3))) is None
    assert MediaPrice.parse({"input_cost_per_second": "lots", "x": 1}).empty


def test_the_mock_provider_is_free() -> None:
    assert TABLE.cost("mock", "anything", MediaUsage(images=5)) == Decimal(0)


@pytest.mark.parametrize(("size", "parsed"), [
    ("1024x1792", (1024, 1792)), ("auto", (1024, 1024)), (None, (1024, 1024)),
    ("huge", (1024, 1024)), (" 256x256 ", (256, 256)),
])
def test_image_size(size: object, parsed: tuple[int, int]) -> None:
    assert image_size(size) == parsed
