"""OpenAI's images and audio endpoints, for the OpenAI adapter and every OpenAI-compatible
server: the request passes through (a JSON body, or the
client's multipart form rebuilt with its files), the answer comes back as sent, and what the
call used is read off the request and the answer.

Transcription seconds come from the answer when it says (``verbose_json``'s ``duration``, or
``usage`` of type ``duration``), else from the file when it is a WAV, else they are
estimated from its size (at 128 kbit/s) and marked so.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

import httpx

from schemas.errors import ErrorInfo, ErrorKind
from schemas.infer import Endpoint
from schemas.media import FILES_KEY, PATHS, PCM_BYTES_PER_SECOND, wav_seconds
from schemas.usage import MediaUsage, TokenUsage
from workers.providers.base import UpstreamCall, UpstreamError, transport_error
from workers.providers.media import MediaAnswer, Upload

# What a compressed upload of unknown length is assumed to hold: 128 kbit/s.
ESTIMATE_BYTES_PER_SECOND = 16_000
_FILE_FIELDS = frozenset({"file", "image", "mask"})


def form_fields(body: dict[str, Any]) -> dict[str, str]:
    """The text fields of the upstream form: everything but the file references."""
    fields: dict[str, str] = {}
    for key, value in body.items():
        if key == FILES_KEY or key in _FILE_FIELDS or value is None:
            continue
        fields[key] = value if isinstance(value, str) else json.dumps(value)
    return fields


def image_usage(body: dict[str, Any], answer: dict[str, Any]) -> TokenUsage:
    """Images made, at the size and quality the answer (else the request) says."""
    data = answer.get("data")
    count = len(data) if isinstance(data, list) else 0
    size = answer.get("size") or body.get("size")
    quality = answer.get("quality") or body.get("quality")
    return TokenUsage(media=MediaUsage(
        images=count, image_size=size if isinstance(size, str) else None,
        image_quality=quality if isinstance(quality, str) else None))


def _seconds(value: object) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        seconds = Decimal(str(value))
    except InvalidOperation:
        return None
    return seconds if seconds.is_finite() and seconds >= 0 else None


def transcription_usage(content_type: str, payload: bytes,
                        uploads: Sequence[Upload]) -> TokenUsage:
    """The seconds of audio a transcription or translation was billed for."""
    answer: Any = None
    if "json" in content_type:
        try:
            answer = json.loads(payload)
        except ValueError:
            answer = None
    if isinstance(answer, dict):
        if (seconds := _seconds(answer.get("duration"))) is not None:
            return TokenUsage(media=MediaUsage(seconds=seconds))
        usage = answer.get("usage")
        if (isinstance(usage, dict) and usage.get("type") == "duration"
                and (seconds := _seconds(usage.get("seconds"))) is not None):
            return TokenUsage(media=MediaUsage(seconds=seconds))
        if isinstance(usage, dict) and usage.get("type") == "tokens":
            return TokenUsage(prompt_tokens=int(usage.get("input_tokens") or 0),
                              completion_tokens=int(usage.get("output_tokens") or 0),
                              media=MediaUsage())
    audio = next((u for u in uploads if u.field == "file"), None)
    if audio is None:
        return TokenUsage(media=MediaUsage(), estimated=True)
    measured = wav_seconds(audio.data)
    if measured is not None:
        return TokenUsage(media=MediaUsage(seconds=measured))
    guessed = Decimal(len(audio.data)) / ESTIMATE_BYTES_PER_SECOND
    return TokenUsage(media=MediaUsage(seconds=guessed.quantize(Decimal("0.001"))),
                      estimated=True)


def speech_usage(body: dict[str, Any], audio_bytes: int) -> TokenUsage:
    """Characters turned into speech; seconds of it too when the format tells them."""
    text = body.get("input")
    characters = len(text) if isinstance(text, str) else 0
    fmt = body.get("response_format")
    seconds = Decimal(0)
    if fmt in ("pcm", "wav"):
        payload = audio_bytes - (44 if fmt == "wav" else 0)
        seconds = (Decimal(max(payload, 0)) / PCM_BYTES_PER_SECOND).quantize(Decimal("0.001"))
    return TokenUsage(media=MediaUsage(characters=characters, output_seconds=seconds))


class OpenAIMedia:
    """The images and audio half of the OpenAI adapter."""

    _client: httpx.AsyncClient
    _name: str

    def _auth(self, call: UpstreamCall) -> dict[str, str]:
        key = call.deployment.api_key
        return {"authorization": f"Bearer {key.get_secret_value()}"} if key is not None else {}

    def _fail(self, response: httpx.Response, body: bytes) -> UpstreamError:
        # Imported here: the adapter module imports this one.
        from workers.providers.openai.adapter import error_from_openai

        return UpstreamError(error_from_openai(response.status_code, body, response.headers,
                                               self._name))

    async def media(self, call: UpstreamCall, endpoint: Endpoint,
                    uploads: Sequence[Upload]) -> MediaAnswer:
        url = call.deployment.base_url + PATHS[endpoint]
        try:
            if uploads or endpoint is not Endpoint.IMAGES:
                files = [(u.field, (u.filename, u.data, u.content_type)) for u in uploads]
                response = await self._client.post(
                    url, data=form_fields(call.body), files=files, headers=self._auth(call),
                    timeout=call.deployment.timeout)
            else:
                response = await self._client.post(
                    url, json={k: v for k, v in call.body.items() if k != FILES_KEY},
                    headers=self._auth(call), timeout=call.deployment.timeout)
        except httpx.HTTPError as exc:
            raise transport_error(exc, self._name) from None
        payload = response.content
        if response.status_code >= 400:
            raise self._fail(response, payload)
        content_type = response.headers.get("content-type", "application/json")
        if endpoint in (Endpoint.IMAGES, Endpoint.IMAGE_EDITS):
            try:
                answer = json.loads(payload)
            except ValueError:
                answer = None
            if not isinstance(answer, dict):
                raise UpstreamError(ErrorInfo.of(
                    ErrorKind.SERVER, f"{self._name} sent a malformed body",
                    provider=self._name))
            usage = image_usage(call.body, answer)
        else:
            usage = transcription_usage(content_type, payload, uploads)
        return MediaAnswer(content_type=content_type, body=payload, usage=usage)

    async def speech(self, call: UpstreamCall) -> AsyncIterator[bytes]:
        request = self._client.build_request(
            "POST", call.deployment.base_url + PATHS[Endpoint.SPEECH],
            json={k: v for k, v in call.body.items() if k != FILES_KEY},
            headers=self._auth(call), timeout=call.deployment.timeout)
        try:
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise transport_error(exc, self._name) from None
        try:
            if response.status_code >= 400:
                raise self._fail(response, await response.aread())
            async for piece in response.aiter_bytes():
                if piece:
                    yield piece
        except httpx.HTTPError as exc:
            raise transport_error(exc, self._name) from None
        finally:
            await response.aclose()
