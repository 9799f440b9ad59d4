"""What an adapter whose upstream makes images and audio offers (OpenAI's API shape).

The worker (``workers.media``) reads the uploaded files from the object store and hands
them over; the adapter makes the call and says what it used, in the units it is priced by.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from schemas.infer import Endpoint
from schemas.usage import TokenUsage
from workers.providers.base import UpstreamCall


@dataclass(frozen=True, slots=True)
class Upload:
    """A file of the client's multipart form, passed on in the upstream's."""

    field: str
    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True, slots=True)
class MediaAnswer:
    """A whole answer (images, a transcript) as the upstream sent it, and what it used."""

    content_type: str
    body: bytes
    usage: TokenUsage


@runtime_checkable
class MediaMaker(Protocol):
    async def media(self, call: UpstreamCall, endpoint: Endpoint,
                    uploads: Sequence[Upload]) -> MediaAnswer:
        """Images generated or edited, audio transcribed or translated."""
        ...

    def speech(self, call: UpstreamCall) -> AsyncIterator[bytes]:
        """Speech audio, piece by piece as the upstream sends it."""
        ...
