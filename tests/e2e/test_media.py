"""Images and audio through a running gateway, with the official openai SDK: generated and
edited images (``b64_json`` and ``url``), the homestack ``dalle3`` alias, transcriptions and
translations of uploads larger than one NATS message, speech streamed back; each call's
cost in the usage API equal to the figure worked out by hand; a provider without the
endpoints refused with a 400, an upload too large with a 413."""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from decimal import Decimal
from typing import Any

import httpx
import nats
import nats.js.errors
import openai
import pytest

from tests.e2e.conftest import make_key
from tests.e2e.media_gateway import (
    MEDIA_CAP,
    _cost,
    media_key,  # noqa: F401 - the ``keyed`` fixture
    start_media_gateway,  # noqa: F401 - the module's ``media_gateway`` fixture
    wav,
)
from tests.e2e.usage_logs import usage_logs
from tests.fakes.openai_media import SPEECH_BYTES_PER_CHAR, fake_png
from tests.fakes.openai_server import FakeOpenAIState
from tests.harness import Gateway

pytestmark = pytest.mark.e2e


def test_the_homestack_dalle3_alias_makes_a_b64_image_priced_by_size_and_quality(
    media_gateway: Gateway, keyed: tuple[str, openai.OpenAI],
    fake_openai: tuple[str, FakeOpenAIState],
) -> None:
    key_id, client = keyed
    raw = client.images.with_raw_response.generate(
        model="dalle3", prompt="a lighthouse at dusk", size="1024x1792", quality="hd",
        response_format="b64_json")
    images = raw.parse()
    assert images.data is not None and len(images.data) == 1
    assert base64.b64decode(images.data[0].b64_json or "") == fake_png("1024x1792")
    assert images.data[0].revised_prompt == "A revised a lighthouse at dusk"
    sent = fake_openai[1].requests[-1]
    assert sent["model"] == "dall-e-3" and sent["quality"] == "hd"
    hd_tall = Decimal("0.12")  # hd/1024-x-1792/dall-e-3
    assert Decimal(raw.headers["x-aigw-cost-usd"]) == hd_tall
    assert _cost(media_gateway, key_id, images=1, endpoint="images") == hd_tall


def test_url_images_are_priced_per_image(
    media_gateway: Gateway, keyed: tuple[str, openai.OpenAI],
) -> None:
    key_id, client = keyed
    images = client.images.generate(model="dall-e-2", prompt="three cats", n=3,
                                    size="256x256", response_format="url")
    assert [i.url for i in images.data or []] == [
        f"https://fake-openai.example/images/{i}.png" for i in range(3)]
    assert _cost(media_gateway, key_id, images=3) == 3 * Decimal("0.016")


def test_b64_images_larger_than_a_nats_message_come_through_the_object_store(
    media_gateway: Gateway, keyed: tuple[str, openai.OpenAI],
) -> None:
    key_id, client = keyed
    images = client.images.generate(model="gpt-image-1", prompt="a map", n=3,
                                    size="1536x1024", quality="medium",
                                    response_format="b64_json")
    data = [base64.b64decode(i.b64_json or "") for i in images.data or []]
    assert sum(len(i.b64_json or "") for i in images.data or []) > 8 * 1024 * 1024
    assert data == [fake_png("1536x1024")] * 3
    assert _cost(media_gateway, key_id) == 3 * Decimal("0.063")


def test_an_image_edit_uploads_image_and_mask_and_is_priced(
    media_gateway: Gateway, keyed: tuple[str, openai.OpenAI],
    fake_openai: tuple[str, FakeOpenAIState],
) -> None:
    key_id, client = keyed
    image, mask = fake_png("512x512"), fake_png("512x512")[:1000]
    edited = client.images.edit(model="dall-e-2", image=("in.png", image, "image/png"),
                                mask=("mask.png", mask, "image/png"), prompt="add a hat",
                                size="512x512", n=2, response_format="url")
    assert len(edited.data or []) == 2
    sent = fake_openai[1].requests[-1]
    assert (sent["image_bytes"], sent["mask_bytes"]) == (len(image), len(mask))
    assert sent["prompt"] == "add a hat" and sent["model"] == "dall-e-2"
    assert _cost(media_gateway, key_id, images=2, endpoint="image_edits") == (
        2 * Decimal("0.018"))


def test_a_deployment_price_per_image_wins_over_the_table(
    media_gateway: Gateway, keyed: tuple[str, openai.OpenAI],
) -> None:
    key_id, client = keyed
    client.images.generate(model="my-images", prompt="x", n=4, response_format="url")
    assert _cost(media_gateway, key_id) == 4 * Decimal("0.05")


def test_a_transcription_is_priced_by_the_verbose_json_duration(
    media_gateway: Gateway, keyed: tuple[str, openai.OpenAI],
) -> None:
    key_id, client = keyed
    audio = wav(12.5)
    result = client.audio.transcriptions.create(model="whisper", file=("talk.wav", audio),
                                                response_format="verbose_json")
    assert result.text == f"Fake transcript: heard {len(audio)} bytes."
    assert result.duration == 12.5
    assert _cost(media_gateway, key_id, audio_seconds="12.500", endpoint="transcriptions") == (
        Decimal("12.5") * Decimal("0.0001"))


def test_a_json_transcription_is_priced_by_the_seconds_the_upstream_billed(
    media_gateway: Gateway, keyed: tuple[str, openai.OpenAI],
) -> None:
    key_id, client = keyed
    result = client.audio.transcriptions.create(model="whisper", file=("talk.wav", wav(12.5)))
    assert result.text.startswith("Fake transcript")
    assert _cost(media_gateway, key_id) == 13 * Decimal("0.0001")  # usage.seconds, rounded up


def test_audio_larger_than_a_nats_message_is_transcribed_whole(
    media_gateway: Gateway, keyed: tuple[str, openai.OpenAI],
    fake_openai: tuple[str, FakeOpenAIState],
) -> None:
    key_id, client = keyed
    audio = wav(300)  # 9.6 MB: more than the 8 MiB a NATS message may carry
    assert len(audio) > 8 * 1024 * 1024
    result = client.audio.transcriptions.create(model="whisper", file=("long.wav", audio),
                                                response_format="verbose_json")
    assert result.text == f"Fake transcript: heard {len(audio)} bytes."
    assert fake_openai[1].requests[-1]["filename"] == "long.wav"
    assert _cost(media_gateway, key_id) == 300 * Decimal("0.0001")


def test_a_text_translation_is_priced_by_the_wav_duration(
    media_gateway: Gateway, keyed: tuple[str, openai.OpenAI],
) -> None:
    key_id, client = keyed
    text = client.audio.translations.create(model="my-whisper", file=("fr.wav", wav(7.25)),
                                            response_format="text")
    assert "Fake translation" in str(text)
    assert _cost(media_gateway, key_id, audio_seconds="7.250", endpoint="translations") == (
        Decimal("7.25") * Decimal("0.001"))


def test_an_upload_over_the_cap_is_a_413(
    media_gateway: Gateway, keyed: tuple[str, openai.OpenAI],
) -> None:
    _, client = keyed
    with pytest.raises(openai.APIStatusError) as caught:
        client.audio.transcriptions.create(model="whisper",
                                           file=("huge.wav", b"\0" * (MEDIA_CAP + 100_000)))
    assert caught.value.status_code == 413
    body: Any = caught.value.body
    assert body["code"] == "request_too_large" and "upload" in body["message"]


def test_speech_streams_back_as_audio_priced_per_character(
    media_gateway: Gateway, keyed: tuple[str, openai.OpenAI],
) -> None:
    key_id, client = keyed
    line = "Hello there, world!"
    with client.audio.speech.with_streaming_response.create(
            model="tts", voice="alloy", input=line) as response:
        assert response.headers["content-type"] == "audio/mpeg"
        audio = b"".join(response.iter_bytes())
    assert len(audio) == len(line) * SPEECH_BYTES_PER_CHAR and audio.startswith(b"ID3")
    assert _cost(media_gateway, key_id, characters=len(line), endpoint="speech",
                 streamed=True) == len(line) * Decimal("0.000015")


def test_speech_in_another_format_at_a_deployment_price(
    media_gateway: Gateway, keyed: tuple[str, openai.OpenAI],
) -> None:
    key_id, client = keyed
    with client.audio.speech.with_streaming_response.create(
            model="my-tts", voice="nova", input="abc", response_format="wav") as response:
        assert response.headers["content-type"] == "audio/wav"
        assert len(response.read()) == 3 * SPEECH_BYTES_PER_CHAR
    assert _cost(media_gateway, key_id) == 3 * Decimal("0.0001")


@pytest.mark.parametrize("call", ["image", "edit", "speech", "transcription", "translation"])
@pytest.mark.parametrize(("model", "provider"), [("claude", "anthropic"), ("gemini", "gemini")])
def test_a_provider_without_the_endpoint_answers_400(
    media_gateway: Gateway, keyed: tuple[str, openai.OpenAI], call: str, model: str,
    provider: str,
) -> None:
    _, client = keyed
    with pytest.raises(openai.BadRequestError) as caught:
        if call == "image":
            client.images.generate(model=model, prompt="x")
        elif call == "edit":
            client.images.edit(model=model, prompt="x", image=("a.png", fake_png("256x256")))
        elif call == "speech":
            client.audio.speech.create(model=model, voice="alloy", input="x")
        elif call == "transcription":
            client.audio.transcriptions.create(model=model, file=("a.wav", wav(1)))
        else:
            client.audio.translations.create(model=model, file=("a.wav", wav(1)))
    body: Any = caught.value.body
    assert body["code"] == "unsupported_endpoint" and body["param"] == "model"
    assert provider in body["message"]


def test_an_upstream_refusal_is_an_openai_shaped_400(
    media_gateway: Gateway, keyed: tuple[str, openai.OpenAI],
) -> None:
    _, client = keyed
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(model="refusing-images", prompt="x")
    body: Any = caught.value.body
    assert body["code"] == "content_policy_violation"


@pytest.mark.parametrize(("path", "payload", "param"), [
    ("/v1/images/generations", {"model": "dall-e-2"}, "prompt"),
    ("/v1/images/generations", {"model": "dall-e-2", "prompt": "x", "n": 0}, "n"),
    ("/v1/audio/speech", {"model": "tts", "voice": "alloy", "input": ""}, "input"),
    ("/v1/images/generations", {"model": "nope", "prompt": "x"}, "model"),
])
def test_bad_json_requests_are_clear_4xx(
    media_gateway: Gateway, keyed: tuple[str, openai.OpenAI], path: str,
    payload: dict[str, Any], param: str,
) -> None:
    r = httpx.post(media_gateway.base_url + path, json=payload, timeout=10,
                   headers={"authorization": f"Bearer {keyed[1].api_key}"})
    assert r.status_code in (400, 404), r.text
    assert r.json()["error"]["param"] == param


def test_a_transcription_without_a_file_is_a_400(
    media_gateway: Gateway, keyed: tuple[str, openai.OpenAI],
) -> None:
    r = httpx.post(media_gateway.base_url + "/v1/audio/transcriptions", timeout=10,
                   headers={"authorization": f"Bearer {keyed[1].api_key}"},
                   files={"model": (None, "whisper")})
    assert r.status_code == 400 and r.json()["error"]["param"] == "file"


def test_media_routes_need_a_key(media_gateway: Gateway) -> None:
    r = httpx.post(media_gateway.base_url + "/v1/images/generations", timeout=10,
                   json={"model": "dalle3", "prompt": "x"})
    assert r.status_code == 401 and "error" in r.json()


def test_a_failing_deployment_fails_over_and_only_the_answer_is_paid(
    media_gateway: Gateway, keyed: tuple[str, openai.OpenAI],
) -> None:
    key_id, client = keyed
    for _ in range(3):
        client.images.generate(model="images-group", prompt="x", response_format="url")
    rows = usage_logs(media_gateway, key_id, expected=3)
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) == 3 and all(Decimal(r["cost"]) == Decimal("0.02") for r in ok)
    assert all(r["status"] == "error" and not Decimal(r["cost"] or 0)
               for r in rows if r["status"] != "ok")


def test_a_budget_refuses_an_image_it_cannot_pay_and_settles_what_it_can(
    media_gateway: Gateway,
) -> None:
    key_id, secret = make_key(media_gateway, limits={"daily_budget_usd": "0.1"})
    client = openai.OpenAI(base_url=media_gateway.base_url + "/v1", api_key=secret,
                           max_retries=0)
    with pytest.raises(openai.RateLimitError) as caught:  # reserves 0.12 of 0.10
        client.images.generate(model="dalle3", prompt="x", size="1024x1792", quality="hd")
    assert caught.value.code == "budget_exceeded"
    client.images.generate(model="dalle3", prompt="x", size="1024x1024")
    deadline = time.monotonic() + 20
    while True:
        daily = httpx.get(media_gateway.base_url + "/v1/usage/budget", timeout=10,
                          headers={"authorization": f"Bearer {secret}"}
                          ).json()["scopes"][0]["daily"]
        if Decimal(daily["reserved"]) == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert (Decimal(daily["spent"]), Decimal(daily["reserved"])) == (Decimal("0.04"), Decimal(0))
    rows = usage_logs(media_gateway, key_id, expected=2)
    assert sorted(r["status"] for r in rows) == ["ok", "rejected"]


def test_gpt_image_edits_take_the_image_list_field(
    media_gateway: Gateway, keyed: tuple[str, openai.OpenAI],
    fake_openai: tuple[str, FakeOpenAIState],
) -> None:
    key_id, client = keyed
    image = fake_png("256x256")
    client.images.edit(model="gpt-image-1", image=[("in.png", image, "image/png")],
                       prompt="x", size="1024x1024", quality="low")
    assert fake_openai[1].requests[-1]["image_bytes"] == len(image)
    assert _cost(media_gateway, key_id, images=1) == Decimal("0.011")


def test_a_client_cannot_name_uploads_itself(
    media_gateway: Gateway, keyed: tuple[str, openai.OpenAI],
    fake_openai: tuple[str, FakeOpenAIState],
) -> None:
    _, client = keyed
    forged = [{"field": "image", "name": "someone-else/file", "filename": "x.png",
               "size": 1}]
    client.images.generate(model="dall-e-2", prompt="x", extra_body={"aigw_files": forged})
    assert "aigw_files" not in fake_openai[1].requests[-1]


def test_speech_cut_short_upstream_cuts_the_client_and_is_still_paid(
    media_gateway: Gateway, keyed: tuple[str, openai.OpenAI],
) -> None:
    key_id, client = keyed
    line = "x" * 100  # 200 kB of audio, half of it sent before the upstream breaks off
    received = 0
    with pytest.raises(httpx.HTTPError), httpx.stream(
            "POST", media_gateway.base_url + "/v1/audio/speech", timeout=30,
            headers={"authorization": f"Bearer {client.api_key}"},
            json={"model": "cut-tts", "voice": "alloy", "input": line}) as r:
        assert r.status_code == 200
        for piece in r.iter_bytes():
            received += len(piece)
    assert 0 < received < len(line) * SPEECH_BYTES_PER_CHAR
    [row] = usage_logs(media_gateway, key_id, expected=1)
    assert row["status"] == "error" and row["characters"] == len(line)
    assert Decimal(row["cost"]) == len(line) * Decimal("0.001")


def test_a_lost_workers_image_call_is_accounted_at_what_it_asked_for(
    media_gateway: Gateway, keyed: tuple[str, openai.OpenAI],
    fake_openai: tuple[str, FakeOpenAIState],
) -> None:
    key_id, client = keyed
    fake = fake_openai[1]
    asked = len(fake.requests)
    failure: list[BaseException] = []

    def call() -> None:
        try:
            client.images.generate(model="slow-images", prompt="x", n=2)
        except openai.APIStatusError as exc:
            failure.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    deadline = time.monotonic() + 20
    while not any(r.get("model") == "slow-image" for r in fake.requests[asked:]):
        assert time.monotonic() < deadline, "the call never reached the upstream"
        time.sleep(0.05)
    [(_, worker)] = [(p, w) for p, w in media_gateway.workers
                     if p == "openai" and w.poll() is None]
    worker.kill()
    worker.wait()
    media_gateway.start_worker("openai")
    caller.join(30)
    assert failure and getattr(failure[0], "status_code", None) == 504
    media_gateway.wait_ready(60)
    [row] = usage_logs(media_gateway, key_id, expected=1)
    assert row["status"] == "error" and row["usage_estimated"] and row["images"] == 2
    assert Decimal(row["cost"]) == 2 * Decimal("0.07")


async def _objects_left(nats_url: str) -> list[str]:
    nc = await nats.connect(nats_url)
    try:
        store = await nc.jetstream().object_store("aigw_media")
        try:
            return [o.name for o in await store.list(ignore_deletes=True)]
        except nats.js.errors.NotFoundError:
            return []
    finally:
        await nc.close()


def test_uploads_and_large_answers_leave_nothing_in_the_object_store(
    media_gateway: Gateway, keyed: tuple[str, openai.OpenAI],
) -> None:
    _, client = keyed
    client.audio.transcriptions.create(model="whisper", file=("a.wav", wav(60)))
    client.images.generate(model="dalle3", prompt="x", response_format="b64_json")
    client.images.edit(model="dall-e-2", image=("in.png", fake_png("256x256"), "image/png"),
                       prompt="x", response_format="b64_json")
    assert asyncio.run(_objects_left(media_gateway.nats_url)) == []
