"""Stored Responses API responses, in the NATS KV bucket ``aigw_responses``.

One entry per response (key: its id), holding the conversation that led to it, so that any
ingress replica can continue it (``previous_response_id``). The bucket's age limit is the
retention (``AIGW_RESPONSES_TTL``); a changed setting is applied to the bucket at start. A
deleted response is purged, not just marked.
"""

from __future__ import annotations

import logging
import re

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js.api import KeyValueConfig
from nats.js.kv import KeyValue
from pydantic import ValidationError

from core import replicas
from schemas.responses import StoredResponse
from schemas.subjects import RESPONSES_BUCKET

log = logging.getLogger("aigw.responses")

# What a response id may look like; anything else is not one of ours (and could be a NATS
# wildcard in a key).
_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_NOT_FOUND = (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError,
              nats.js.errors.NotFoundError)
# Room for the message's headers within the server's max_payload.
_HEADROOM = 1024
# NATS unreachable or JetStream not answering.
_UNAVAILABLE = (nats.errors.Error, nats.js.errors.Error, TimeoutError, OSError)


class StoreUnavailable(Exception):
    """The bucket could not be read or written now (NATS down): a 503, not a 404."""


class ResponseStore:
    def __init__(self, nc: Client, ttl: float, bucket: str = RESPONSES_BUCKET) -> None:
        self._nc = nc
        self.ttl = ttl
        self.bucket = bucket
        self._kv: KeyValue | None = None

    async def start(self) -> None:
        js = self._nc.jetstream()
        try:
            kv = await js.key_value(self.bucket)
        except nats.js.errors.BucketNotFoundError:
            try:
                self._kv = await js.create_key_value(KeyValueConfig(
                    bucket=self.bucket, history=1, ttl=self.ttl, replicas=replicas.wanted(),
                    description="ai-gateway stored Responses API responses"))
                return
            except nats.js.errors.BadRequestError:  # another replica made it first
                kv = await js.key_value(self.bucket)
        stream = f"KV_{self.bucket}"
        info = await js.stream_info(stream)
        if info.config.max_age != self.ttl:
            info.config.max_age = self.ttl
            await js.update_stream(info.config)
            log.info("stored responses now kept %g s", self.ttl)
        self._kv = kv

    def _bucket(self) -> KeyValue:
        if self._kv is None:
            raise RuntimeError("the response store was not started")
        return self._kv

    async def get(self, response_id: str) -> StoredResponse | None:
        if not _ID.match(response_id):
            return None
        try:
            entry = await self._bucket().get(response_id)
        except _NOT_FOUND:
            return None
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(str(exc) or type(exc).__name__) from None
        if not entry.value:
            return None
        try:
            return StoredResponse.model_validate_json(entry.value)
        except ValidationError:
            log.warning("stored response %s is unreadable; treated as missing", response_id)
            return None

    async def put(self, response_id: str, record: StoredResponse) -> bool:
        """Keep ``record``; False when it cannot be (too large for one NATS message)."""
        data = record.model_dump_json().encode()
        limit = self._nc.max_payload - _HEADROOM
        if len(data) > limit:
            log.warning("response %s not stored: %d bytes, over the %d a NATS message may "
                        "carry here", response_id, len(data), limit)
            return False
        try:
            await self._bucket().put(response_id, data)
        except _UNAVAILABLE as exc:
            log.warning("response %s not stored: %s", response_id, exc or type(exc).__name__)
            return False
        return True

    async def delete(self, response_id: str) -> None:
        if not _ID.match(response_id):
            return
        try:
            await self._bucket().purge(response_id)
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(str(exc) or type(exc).__name__) from None
