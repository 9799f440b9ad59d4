"""The fake OpenAI server's images and audio endpoints, in OpenAI's wire format.

- ``/v1/images/generations`` (JSON) and ``/v1/images/edits`` (multipart ``image``, ``mask``):
  ``n`` images at ``size``; ``url`` answers name them, ``b64_json`` answers carry a fake
  PNG of ``width * height * 2`` bytes (so a few large images outgrow a NATS message);
- ``/v1/audio/transcriptions`` and ``/translations`` (multipart ``file``): the duration is
  a WAV's own, else the bytes at 32,000 a second; the text says how many bytes arrived;
  ``json`` answers carry ``usage`` of type ``duration`` (whole seconds), ``verbose_json``
  the exact ``duration``; ``text``, ``srt`` and ``vtt`` are plain text;
- ``/v1/audio/speech``: ``SPEECH_BYTES_PER_CHAR`` bytes of audio per input character,
  streamed in pieces, with the content type of ``response_format``.

The model ``fail-400`` answers 400, ``fail-500`` answers 500; ``cut-speech`` sends half its
audio and then drops the connection; ``slow-image`` waits ``slow_seconds`` before it answers.
"""

from __future__ import annotations

import asyncio
import base64
import math
import time
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from ingress.routes import form
from schemas.media import speech_content_type, wav_seconds

SPEECH_BYTES_PER_CHAR = 2000
_PNG = b"\x89PNG\r\n\x1a\n"


def fake_png(size: str | None) -> bytes:
    width, _, height = (size or "1024x1024").partition("x")
    try:
        count = int(width) * int(height) * 2
    except ValueError:
        count = 1024 * 1024 * 2
    return (_PNG + bytes(range(256)) * (count // 256 + 1))[:count]


def audio_seconds(data: bytes) -> Decimal:
    return wav_seconds(data) or Decimal(len(data)) / 32_000


def _error(status: int, message: str, code: str | None = None) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse({"error": {"message": message, "type": kind, "param": None,
                                   "code": code}}, status_code=status)


def _failure(model: object) -> Response | None:
    if model == "fail-400":
        return _error(400, "Your request was rejected by the fake safety system.",
                      "content_policy_violation")
    if model == "fail-500":
        return _error(500, "The fake server had an error.")
    return None


def _images(body: dict[str, Any]) -> dict[str, Any]:
    n = int(body.get("n") or 1)
    fmt = body.get("response_format") or "url"
    data = []
    for i in range(n):
        if fmt == "b64_json":
            data.append({"b64_json": base64.b64encode(fake_png(body.get("size"))).decode()})
        else:
            data.append({"url": f"https://fake-openai.example/images/{i}.png"})
        if body.get("model") == "dall-e-3":
            data[-1]["revised_prompt"] = f"A revised {body.get('prompt')}"
    return {"created": int(time.time()), "data": data}


def routes(state: Any, check_key: Callable[[Request], Response | None]) -> list[Route]:
    async def _form(request: Request) -> dict[str, form.Part]:
        return form.parse(request.headers.get("content-type", ""), await request.body())

    async def generations(request: Request) -> Response:
        if (denied := check_key(request)) is not None:
            return denied
        body = await request.json()
        state.requests.append(body)
        if body.get("model") == "slow-image":
            await asyncio.sleep(state.slow_seconds)
        return _failure(body.get("model")) or JSONResponse(_images(body))

    async def edits(request: Request) -> Response:
        if (denied := check_key(request)) is not None:
            return denied
        parts = await _form(request)
        fields = {k: p.data.decode() for k, p in parts.items() if p.filename is None}
        image = parts.get("image") or parts.get("image[]")
        if image is None or not image.data.startswith(_PNG):
            return _error(400, "Invalid input image - format must be a PNG.")
        state.requests.append({**fields, "image_bytes": len(image.data),
                               "mask_bytes": len(parts["mask"].data) if "mask" in parts else 0})
        return _failure(fields.get("model")) or JSONResponse(_images(fields))

    async def transcribe(request: Request, translate: bool) -> Response:
        if (denied := check_key(request)) is not None:
            return denied
        parts = await _form(request)
        fields = {k: p.data.decode() for k, p in parts.items() if p.filename is None}
        audio = parts.get("file")
        if audio is None:
            return _error(400, "Missing required parameter: 'file'.")
        state.requests.append({**fields, "file_bytes": len(audio.data),
                               "filename": audio.filename,
                               "content_type": audio.content_type})
        if (failed := _failure(fields.get("model"))) is not None:
            return failed
        seconds = audio_seconds(audio.data)
        text = f"Fake {'translation' if translate else 'transcript'}: heard " \
               f"{len(audio.data)} bytes."
        fmt = fields.get("response_format") or "json"
        if fmt == "verbose_json":
            return JSONResponse({
                "task": "translate" if translate else "transcribe", "language": "english",
                "duration": float(seconds), "text": text,
                "segments": [{"id": 0, "start": 0.0, "end": float(seconds), "text": text}]})
        if fmt == "json":
            answer: dict[str, Any] = {"text": text}
            if not translate:
                answer["usage"] = {"type": "duration", "seconds": math.ceil(seconds)}
            return JSONResponse(answer)
        if fmt in ("srt", "vtt"):
            return PlainTextResponse(f"1\n00:00:00,000 --> 00:00:01,000\n{text}\n")
        return PlainTextResponse(text + "\n")

    async def transcriptions(request: Request) -> Response:
        return await transcribe(request, False)

    async def translations(request: Request) -> Response:
        return await transcribe(request, True)

    async def speech(request: Request) -> Response:
        if (denied := check_key(request)) is not None:
            return denied
        body = await request.json()
        state.requests.append(body)
        if (failed := _failure(body.get("model"))) is not None:
            return failed
        total = len(body["input"]) * SPEECH_BYTES_PER_CHAR
        fmt = body.get("response_format")

        async def audio() -> AsyncIterator[bytes]:
            head = b"RIFF" if fmt == "wav" else b"ID3\x04" if fmt in (None, "mp3") else b""
            sent = 0
            while sent < total:
                if body.get("model") == "cut-speech" and sent >= total // 2:
                    raise ConnectionResetError("the fake speech server broke off")
                piece = (head if sent == 0 else b"") + bytes(range(256)) * 64
                piece = piece[:total - sent]
                sent += len(piece)
                yield piece
                await asyncio.sleep(0)

        return StreamingResponse(audio(), media_type=speech_content_type(fmt))

    return [
        Route("/v1/images/generations", generations, methods=["POST"]),
        Route("/v1/images/edits", edits, methods=["POST"]),
        Route("/v1/audio/transcriptions", transcriptions, methods=["POST"]),
        Route("/v1/audio/translations", translations, methods=["POST"]),
        Route("/v1/audio/speech", speech, methods=["POST"]),
    ]
