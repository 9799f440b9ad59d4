"""Uploaded audio and images, and answers too large for one NATS message, in the JetStream
object store ``aigw_media``, between the ingress and a worker.

An object lives for one call: the side that reads it last deletes it, and the bucket's TTL
sweeps what a crashed process left behind.

Objects are read with a pull consumer fetching their chunks in batches, not with
``ObjectStore.get``: its push consumer and growing ``bytes`` read 10 MB in about 0.6 s where
this takes 0.04 s.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib

import nats.errors
import nats.js.errors
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, ObjectMeta, ObjectMetaOptions
from nats.js.client import JetStreamContext
from nats.js.object_store import OBJ_CHUNKS_PRE_TEMPLATE, OBJ_DIGEST_TYPE, ObjectStore

from core import replicas
from schemas import subjects

# Long enough for the slowest call (a deployment's timeout is 600 s by default) and its
# answer to be read back.
TTL_SECONDS = 3600.0
# Chunks of an object: under NATS's default max_payload (1 MB) with room for headers.
CHUNK_BYTES = 512 * 1024
# Chunks fetched per round trip, and how long one fetch may wait.
FETCH_BATCH = 32
FETCH_SECONDS = 10.0


class CorruptObject(nats.errors.Error):
    """An object whose chunks do not add up to its size or digest."""


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
        meta = ObjectMeta(name=name, options=ObjectMetaOptions(max_chunk_size=CHUNK_BYTES))
        await (await self._objects()).put(name, data, meta=meta)

    async def get(self, name: str) -> bytes:
        info = await (await self._objects()).get_info(name)
        if not info.size or not info.nuid:
            return b""
        chunks = OBJ_CHUNKS_PRE_TEMPLATE.format(bucket=subjects.MEDIA_OBJECTS, obj=info.nuid)
        sub = await self._js.pull_subscribe(
            chunks, stream=f"OBJ_{subjects.MEDIA_OBJECTS}",
            config=ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL,
                                  inactive_threshold=FETCH_SECONDS * 3))
        parts: list[bytes] = []
        size = 0
        try:
            while size < info.size:
                for msg in await sub.fetch(batch=FETCH_BATCH, timeout=FETCH_SECONDS):
                    parts.append(msg.data)
                    size += len(msg.data)
        finally:
            with contextlib.suppress(nats.errors.Error, TimeoutError):
                await sub.unsubscribe()
        data = b"".join(parts)
        digest = (info.digest or "").removeprefix(OBJ_DIGEST_TYPE)
        if size != info.size or (digest and hashlib.sha256(data).digest()
                                 != base64.urlsafe_b64decode(digest)):
            raise CorruptObject(f"object {name} is not whole ({size} of {info.size} bytes)")
        return data

    async def delete(self, name: str) -> None:
        """Forget ``name``; gone already, or NATS away, is no error: the TTL sweeps it."""
        with contextlib.suppress(nats.errors.Error, TimeoutError):
            await (await self._objects()).delete(name)


def object_name(request_id: str, part: str) -> str:
    """The object of one request's ``part`` (an upload field, ``reply.<attempt>``)."""
    return f"{request_id}/{part}"
