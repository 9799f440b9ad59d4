"""Uploaded audio and images, and answers too large for one NATS message, in the JetStream
object store ``aigw_media``, between the ingress and a worker.

An object lives for one call: the side that reads it last deletes it, and the bucket's TTL
sweeps what a crashed process left behind.
"""

from __future__ import annotations

import contextlib

import nats.errors
import nats.js.errors
from nats.js.client import JetStreamContext
from nats.js.object_store import ObjectStore

from core import replicas
from schemas import subjects

# Long enough for the slowest call (a deployment's timeout is 600 s by default) and its
# answer to be read back.
TTL_SECONDS = 3600.0


class MediaStore:
    def __init__(self, js: JetStreamContext) -> None:
        self._js = js
        self._store: ObjectStore | None = None

    async def _objects(self) -> ObjectStore:
        if self._store is None:
            try:
                self._store = await self._js.object_store(subjects.MEDIA_OBJECTS)
            except nats.js.errors.BucketNotFoundError:
                try:
                    self._store = await self._js.create_object_store(
                        subjects.MEDIA_OBJECTS, description="ai-gateway images and audio in "
                        "flight", ttl=TTL_SECONDS, replicas=replicas.wanted())
                except nats.js.errors.BadRequestError:  # another process made it first
                    self._store = await self._js.object_store(subjects.MEDIA_OBJECTS)
        return self._store

    async def put(self, name: str, data: bytes) -> None:
        await (await self._objects()).put(name, data)

    async def get(self, name: str) -> bytes:
        result = await (await self._objects()).get(name)
        return result.data or b""

    async def delete(self, name: str) -> None:
        """Forget ``name``; gone already, or NATS away, is no error: the TTL sweeps it."""
        with contextlib.suppress(nats.errors.Error, TimeoutError):
            await (await self._objects()).delete(name)


def object_name(request_id: str, part: str) -> str:
    """The object of one request's ``part`` (an upload field, ``reply.<attempt>``)."""
    return f"{request_id}/{part}"
