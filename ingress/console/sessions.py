"""Console sign-ins: a server-side session per browser, shared by every ingress replica.

The browser holds only an opaque session id in an HttpOnly cookie; the record (who signed
in, the CSRF token, when it ends) lives in a NATS KV bucket whose TTL ends it for every
replica at once. The record never holds the key itself: a virtual key's session names the
key id and is re-checked against the key store on every page, so a revoked key's sessions
end at once; a master session holds a digest of the master key, so changing the master
key ends them too. The bucket is keyed by a digest of the session id, so a reader of the
bucket cannot take a session over.
"""

from __future__ import annotations

import hashlib
import secrets
import time

import nats.errors
import nats.js.errors
from nats.js.api import KeyValueConfig
from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict, ValidationError

from core import replicas
from schemas.subjects import CONSOLE_BUCKET

_GONE = (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError)


class Session(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    key_id: str | None  # None: the master key
    master_digest: str | None = None
    csrf: str
    created: float
    expires: float


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class SessionStore:
    def __init__(self, js: JetStreamContext, lifetime: float) -> None:
        self._js = js
        self.lifetime = lifetime
        self._kv: KeyValue | None = None

    async def _bucket(self) -> KeyValue:
        if self._kv is None:
            try:
                self._kv = await self._js.key_value(CONSOLE_BUCKET)
            except nats.js.errors.BucketNotFoundError:
                self._kv = await self._js.create_key_value(KeyValueConfig(
                    bucket=CONSOLE_BUCKET, history=1, ttl=self.lifetime,
                    replicas=replicas.wanted(),
                    description="ai-gateway console sessions"))
        return self._kv

    async def create(self, key_id: str | None, master_key: str | None) -> tuple[str, Session]:
        """A new session; returns the id for the cookie (shown nowhere else)."""
        session_id = secrets.token_urlsafe(32)
        now = time.time()
        session = Session(key_id=key_id,
                          master_digest=digest(master_key) if master_key else None,
                          csrf=secrets.token_urlsafe(32), created=now,
                          expires=now + self.lifetime)
        kv = await self._bucket()
        await kv.put(digest(session_id), session.model_dump_json().encode())
        return session_id, session

    async def get(self, session_id: str) -> Session | None:
        if not session_id or len(session_id) > 128:
            return None
        kv = await self._bucket()
        try:
            entry = await kv.get(digest(session_id))
        except (*_GONE, nats.js.errors.InvalidKeyError):
            return None
        if not entry.value:
            return None
        try:
            session = Session.model_validate_json(entry.value)
        except ValidationError:
            return None
        if session.expires <= time.time():
            await self.end(session_id)
            return None
        return session

    async def end(self, session_id: str) -> None:
        kv = await self._bucket()
        try:
            await kv.delete(digest(session_id))
        except (*_GONE, nats.js.errors.InvalidKeyError, nats.errors.Error):
            pass
