"""The OpenAI adapter's images and audio half: what a call used, read off its request and
answer (pure), and the calls themselves against the fake OpenAI server on a real socket."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Iterator
from decimal import Decimal

import httpx
import pytest
from pydantic import SecretStr

from schemas.config import Deployment
from schemas.infer import Endpoint
from schemas.media import FILES_KEY
from schemas.usage import MediaUsage, TokenUsage
from tests.fakes import openai_server
from tests.fakes.openai_media import SPEECH_BYTES_PER_CHAR, fake_png
from tests.fakes.server import serve
from workers.providers.base import UpstreamCall, UpstreamError
from workers.providers.media import Upload
from workers.providers.openai.adapter import OpenAIProvider
from workers.providers.openai.media import (
    form_fields,
    image_usage,
    speech_usage,
    transcription_usage,
)


def wav(seconds: float, rate: int = 8000) -> bytes:
    data = b"\0\0" * int(seconds * rate)
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    return (b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVE" + b"fmt "
            + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", len(data)) + data)


def test_form_fields_leave_out_the_file_references_and_encode_the_rest() -> None:
    body = {"model": "whisper-1", FILES_KEY: [{}], "temperature": 0.2, "language": None,
            "timestamp_granularities[]": "word", "file": "x"}
    assert form_fields(body) == {"model": "whisper-1", "temperature": "0.2",
                                 "timestamp_granularities[]": "word"}


def test_image_usage_counts_images_at_the_answers_size_else_the_requests() -> None:
    answer = {"data": [{"url": "a"}, {"url": "b"}], "size": "1536x1024", "quality": "high"}
    assert image_usage({"size": "1024x1024"}, answer).media == MediaUsage(
        images=2, image_size="1536x1024", image_quality="high")
    assert image_usage({"size": "256x256"}, {"data": [{}]}).media == MediaUsage(
        images=1, image_size="256x256")
    assert image_usage({}, {"data": "junk"}).media == MediaUsage()


@pytest.mark.parametrize(("content_type", "payload", "seconds"), [
    ("application/json", b'{"text": "hi", "duration": 8.470000267028809}',
     Decimal("8.470000267028809")),
    ("application/json", b'{"text": "hi", "usage": {"type": "duration", "seconds": 9}}',
     Decimal(9)),
])
def test_transcription_seconds_from_the_answer(content_type: str, payload: bytes,
                                               seconds: Decimal) -> None:
    usage = transcription_usage(content_type, payload, [])
    assert usage.media == MediaUsage(seconds=seconds) and not usage.estimated


def test_transcription_billed_in_tokens_keeps_them() -> None:
    payload = json.dumps({"text": "hi", "usage": {"type": "tokens", "input_tokens": 14,
                                                  "output_tokens": 45}}).encode()
    usage = transcription_usage("application/json", payload, [])
    assert (usage.prompt_tokens, usage.completion_tokens) == (14, 45)
    assert usage.media == MediaUsage()


def test_transcription_seconds_from_a_wav_when_the_answer_is_text() -> None:
    upload = Upload("file", "a.wav", "audio/wav", wav(3.5))
    usage = transcription_usage("text/plain", b"hello\n", [upload])
    assert usage.media == MediaUsage(seconds=Decimal("3.5")) and not usage.estimated


def test_transcription_seconds_estimated_from_the_size_of_other_audio() -> None:
    upload = Upload("file", "a.mp3", "audio/mpeg", b"ID3" + b"\0" * 31_997)
    usage = transcription_usage("text/vtt", b"WEBVTT", [upload])
    assert usage.media == MediaUsage(seconds=Decimal(2)) and usage.estimated


def test_speech_usage_counts_characters_and_pcm_seconds() -> None:
    assert speech_usage({"input": "héllo"}, 10_000).media == MediaUsage(characters=5)
    pcm = speech_usage({"input": "ab", "response_format": "pcm"}, 72_000).media
    assert pcm == MediaUsage(characters=2, output_seconds=Decimal("1.5"))


@pytest.fixture(scope="module")
def fake() -> Iterator[str]:
    with serve(openai_server.create_app()) as url:
        yield url


def _call(url: str, model: str, **body: object) -> UpstreamCall:
    deployment = Deployment(id="d", model_name="m", provider="openai", upstream_model=model,
                            api_key=SecretStr("sk-fake"), api_base=f"{url}/v1")
    return UpstreamCall(deployment=deployment, body={"model": model, **body}, request_id="r")


async def test_images_are_generated_and_counted(fake: str) -> None:
    async with httpx.AsyncClient() as client:
        answer = await OpenAIProvider(client).media(
            _call(fake, "dall-e-3", prompt="p", size="1024x1024", quality="hd",
                  response_format="b64_json"), Endpoint.IMAGES, [])
    data = json.loads(answer.body)["data"]
    assert base64.b64decode(data[0]["b64_json"]) == fake_png("1024x1024")
    assert answer.usage == TokenUsage(media=MediaUsage(images=1, image_size="1024x1024",
                                                       image_quality="hd"))


async def test_an_upload_is_sent_as_multipart(fake: str) -> None:
    audio = wav(2.0)
    async with httpx.AsyncClient() as client:
        answer = await OpenAIProvider(client).media(
            _call(fake, "whisper-1", response_format="verbose_json"), Endpoint.TRANSCRIPTIONS,
            [Upload("file", "a.wav", "audio/wav", audio)])
    assert json.loads(answer.body)["text"] == f"Fake transcript: heard {len(audio)} bytes."
    assert answer.usage.media == MediaUsage(seconds=Decimal("2.0"))


async def test_speech_streams_in_pieces(fake: str) -> None:
    async with httpx.AsyncClient() as client:
        pieces = [p async for p in OpenAIProvider(client).speech(
            _call(fake, "tts-1", input="x" * 20, voice="alloy"))]
    assert len(pieces) > 1 and sum(map(len, pieces)) == 20 * SPEECH_BYTES_PER_CHAR


async def test_upstream_errors_keep_their_status_and_code(fake: str) -> None:
    async with httpx.AsyncClient() as client:
        provider = OpenAIProvider(client)
        with pytest.raises(UpstreamError) as caught:
            await provider.media(_call(fake, "fail-400", prompt="p"), Endpoint.IMAGES, [])
        assert caught.value.info.status == 400
        assert caught.value.info.code == "content_policy_violation"
        with pytest.raises(UpstreamError) as caught:
            [p async for p in provider.speech(_call(fake, "fail-500", input="x"))]
        assert caught.value.info.retryable
