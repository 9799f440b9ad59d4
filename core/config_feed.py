"""The config document in NATS KV: read it, publish it with compare-and-set, follow it.

One entry per gateway: bucket ``aigw_config``, key ``AIGW_CONFIG_KEY``. Ingresses
publish (:mod:`ingress.config.reload` says when); every ingress and every worker follows
the entry and applies each revision it can parse. The ingress and the workers share this
module, as they share :mod:`core.publisher`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from core import replicas
from core.bucket_watch import BucketWatch
from schemas.config_doc import ConfigDocument
from schemas.subjects import CONFIG_BUCKET, CONFIG_HISTORY

log = logging.getLogger("aigw.config")

# What a NATS or KV call raises when the server is unreachable or slow.
NATS_ERRORS = (nats.errors.Error, OSError, asyncio.TimeoutError)


@dataclass(frozen=True, slots=True)
class Revision:
    number: int
    doc: ConfigDocument


class ConfigFeed:
    def __init__(self, nc: Client, key: str, *, bucket: str = CONFIG_BUCKET) -> None:
        self._nc = nc
        self._js = nc.jetstream()
        self.key = key
        self._bucket = bucket
        self._kv: KeyValue | None = None
        self._watch: BucketWatch | None = None

    async def open(self) -> None:
        """Open the bucket, creating it when it is missing."""
        try:
            self._kv = await self._js.key_value(self._bucket)
            await replicas.check(self._js, f"KV_{self._bucket}")
        except nats.js.errors.BucketNotFoundError:
            # Two processes may race here; creating a stream with an identical config is
            # idempotent in JetStream, so both succeed.
            self._kv = await self._js.create_key_value(
                bucket=self._bucket, history=CONFIG_HISTORY, replicas=replicas.wanted(),
                description="ai-gateway config files, one key per gateway",
            )

    @property
    def kv(self) -> KeyValue:
        if self._kv is None:
            raise RuntimeError("ConfigFeed.open() was not awaited")
        return self._kv

    async def latest(self) -> tuple[int, ConfigDocument | None]:
        """The entry's revision (0: none) and its document (None: none this version
        reads)."""
        try:
            entry = await self.kv.get(self.key)
        except nats.js.errors.KeyNotFoundError:  # also raised for a deleted entry
            return 0, None
        return entry.revision or 0, ConfigDocument.decode(entry.value) if entry.value else None

    async def publish(self, doc: ConfigDocument, last: int) -> int | None:
        """Write ``doc`` if the entry is still at revision ``last`` (0: no entry yet).
        The new revision, or None when another writer came first."""
        try:
            if last == 0:
                return await self.kv.create(self.key, doc.encode())
            return await self.kv.update(self.key, doc.encode(), last=last)
        except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.APIError) as exc:
            log.debug("config write raced (%s)", exc)
            return None

    async def follow(
        self, apply: Callable[[Revision], None], timeout: float = 10.0
    ) -> None:
        """Call ``apply`` with the current revision, then with each new one (again after a
        NATS restart: ``apply`` must ignore what it already serves). Returns once the
        current revision, if any, has been applied."""

        def on_entry(key: str, value: bytes | None, revision: int, op: str | None) -> None:
            if key != self.key or op in (KV_DEL, KV_PURGE) or not value:
                return  # another gateway's entry; a deleted entry changes nothing
            doc = ConfigDocument.decode(value)
            if doc is None:
                log.warning("config revision %d is not readable by this version; keeping "
                            "the current config", revision)
                return
            try:
                apply(Revision(revision, doc))
            except Exception:  # one bad revision must not stop the following
                log.exception("config revision %d not applied", revision)

        self._watch = BucketWatch(self._nc, self.kv, self._bucket, on_entry)
        await self._watch.start(timeout)

    @property
    def following(self) -> bool:
        return self._watch is not None and self._watch.following

    async def stop(self) -> None:
        if self._watch is not None:
            await self._watch.stop()
