"""Images and audio on the bus: which endpoints and providers, the uploaded files an attempt
names instead of carrying, and the answer a worker sends back.

An uploaded file (the audio to transcribe, the image to edit) never rides in the attempt:
NATS caps a message at ``max_payload``. The ingress puts it in the object store
(``core.media_store``) and lists it in the attempt's body under :data:`FILES_KEY`; the worker
reads it from there and takes the key out before calling the upstream. An answer too large
for one message (base64 images) goes the same way back, named by :class:`MediaReply`.
Speech audio comes back as chunk frames of raw bytes, each well under ``max_payload``.
"""

from __future__ import annotations

import struct
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.infer import Endpoint

# The key of the attempt body that lists its uploaded files (a list of MediaFile dicts).
FILES_KEY = "aigw_files"

IMAGE_ENDPOINTS = frozenset({Endpoint.IMAGES, Endpoint.IMAGE_EDITS})
AUDIO_ENDPOINTS = frozenset({Endpoint.TRANSCRIPTIONS, Endpoint.TRANSLATIONS, Endpoint.SPEECH})
MEDIA_ENDPOINTS = IMAGE_ENDPOINTS | AUDIO_ENDPOINTS

# The route each endpoint is at, for error messages and the upstream path.
PATHS: dict[Endpoint, str] = {
    Endpoint.IMAGES: "/images/generations",
    Endpoint.IMAGE_EDITS: "/images/edits",
    Endpoint.TRANSCRIPTIONS: "/audio/transcriptions",
    Endpoint.TRANSLATIONS: "/audio/translations",
    Endpoint.SPEECH: "/audio/speech",
}

# Providers whose workers speak OpenAI's images and audio API (the OpenAI adapter's). The
# native Anthropic and Gemini APIs have no such endpoints.
PROVIDERS = frozenset({
    "openai", "openai_compatible", "hosted_vllm", "vllm", "groq", "together_ai",
    "fireworks_ai", "xai", "openrouter", "mistral", "deepseek", "ollama", "ollama_chat",
    "lm_studio", "perplexity",
})

# Chunks of speech audio sent back per frame: far below any max_payload.
AUDIO_CHUNK_BYTES = 64 * 1024
# An answer above this size goes through the object store rather than in the done frame.
INLINE_REPLY_BYTES = 512 * 1024
# OpenAI's own cap on an uploaded audio file or image.
MAX_UPLOAD_BYTES = 25 * 1024 * 1024

_SPEECH_TYPES = {
    "mp3": "audio/mpeg", "opus": "audio/opus", "aac": "audio/aac", "flac": "audio/flac",
    "wav": "audio/wav", "pcm": "audio/pcm",
}
# PCM from OpenAI's speech endpoint: 24 kHz, 16-bit, mono.
PCM_BYTES_PER_SECOND = 24_000 * 2


class MediaFile(BaseModel):
    """An uploaded file, by its object store name."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    field: str
    name: str
    filename: str
    content_type: str = "application/octet-stream"
    size: int = Field(ge=0)


class MediaReply(BaseModel):
    """The ``response`` of a media attempt's done frame: the upstream's body as the client
    gets it, inline (``body``, text) or in the object store (``blob``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["media"] = "media"
    content_type: str
    body: str | None = None
    blob: str | None = None


class ImageRequest(BaseModel):
    """``POST /v1/images/generations``: what the gateway reads; the rest passes through."""

    model_config = ConfigDict(extra="allow")

    model: str
    prompt: str = Field(min_length=1)
    n: int | None = Field(default=None, ge=1, le=10)
    size: str | None = None
    quality: str | None = None
    response_format: Literal["url", "b64_json"] | None = None


class SpeechRequest(BaseModel):
    """``POST /v1/audio/speech``."""

    model_config = ConfigDict(extra="allow")

    model: str
    input: str = Field(min_length=1, max_length=4096)
    voice: Any
    response_format: Literal["mp3", "opus", "aac", "flac", "wav", "pcm"] | None = None
    speed: float | None = Field(default=None, ge=0.25, le=4.0)


def files_of(body: dict[str, Any]) -> list[MediaFile]:
    raw = body.get(FILES_KEY)
    if not isinstance(raw, list):
        return []
    return [MediaFile.model_validate(item) for item in raw]


def speech_content_type(response_format: object) -> str:
    """The content type of speech audio in ``response_format`` (mp3 when unset)."""
    if response_format is None:
        return _SPEECH_TYPES["mp3"]
    return _SPEECH_TYPES.get(str(response_format), "application/octet-stream")


def speech_formats() -> list[str]:
    return sorted(_SPEECH_TYPES)


def wav_seconds(data: bytes) -> Decimal | None:
    """The duration of a RIFF/WAVE file from its header (None for anything else)."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    offset = 12
    byte_rate = 0
    while offset + 8 <= len(data):
        tag = data[offset:offset + 4]
        (size,) = struct.unpack_from("<I", data, offset + 4)
        if tag == b"fmt " and offset + 16 <= len(data):
            (byte_rate,) = struct.unpack_from("<I", data, offset + 16)
        elif tag == b"data":
            if byte_rate <= 0:
                return None
            # A streamed WAV may say 0 or 0xFFFFFFFF: take what is there.
            size = min(size, len(data) - offset - 8)
            return Decimal(size) / Decimal(byte_rate)
        offset += 8 + size + (size & 1)
    return None
