"""A worker's config kept in step with the gateway config in NATS KV (hot reload).

The ingress publishes the config file (:mod:`ingress.config.reload`); a worker follows the
entry and applies each revision it can parse with its own environment. One it cannot
parse (an ``os.environ/`` variable missing on this host) is logged, and the worker keeps
its config. An attempt that names a deployment unknown here makes the worker read the
latest revision at once, so an ingress that applied a reload a moment earlier does not
fail its first requests.

Revisions apply in order: the watch and those reads race, so one older than the newest the
worker has taken (a read answered just before the watch delivered the next revision) is
ignored rather than rolling the config back. The watch itself going back means the KV was
made anew (a NATS store lost): its numbers start again, and they are followed.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping

import httpx
from nats.aio.client import Client

from core.config_feed import NATS_ERRORS, ConfigFeed, Revision
from schemas.config import ConfigError
from workers.providers import create_provider
from workers.service import WorkerService

log = logging.getLogger("aigw.worker")

# A read of the latest revision this recent answers every unknown deployment id.
_REFRESH_EVERY = 0.5


class ConfigFollower:
    def __init__(
        self, service: WorkerService, client: httpx.AsyncClient, key: str,
        env: Mapping[str, str] = os.environ,
    ) -> None:
        self._service = service
        self._client = client
        self._key = key
        self._env = env
        self._feed: ConfigFeed | None = None
        self._hash: str | None = None
        self._revision = 0  # the newest revision whose config this worker serves
        self._watched = 0  # the latest revision the watch delivered
        self._refreshed_at = 0.0
        self._refreshing: asyncio.Task[None] | None = None

    async def start(self, nc: Client) -> None:
        feed = ConfigFeed(nc, self._key)
        await feed.open()
        await feed.follow(self._on_watch)
        self._feed = feed

    async def stop(self) -> None:
        if self._feed is not None:
            await self._feed.stop()

    def _on_watch(self, revision: Revision) -> None:
        if revision.number < self._watched:
            log.warning("config revisions start again at %d (the NATS KV was made anew); "
                        "following them", revision.number)
            self._revision = 0
        self._watched = revision.number
        self.apply(revision)

    def apply(self, revision: Revision) -> None:
        doc = revision.doc
        if revision.number < self._revision:
            return  # older than what this worker serves: a read that lost the race
        if doc.hash == self._hash:
            self._revision = revision.number
            return
        try:
            config = doc.parse(self._env)
        except ConfigError as exc:
            log.error("config revision %d (hash %s) not applied here: %s; keeping the "
                      "current config", revision.number, doc.short_hash, exc)
            return
        self._hash = doc.hash
        self._revision = revision.number
        service = self._service
        old, provider = service.config, service.provider_name
        if config == old:
            return
        # Adapters keep headers and URLs per deployment: a fresh one when ours changed.
        ours = [d for d in config.deployments if d.provider == provider]
        changed = ours != [d for d in old.deployments if d.provider == provider]
        service.apply(config, create_provider(provider, self._client) if changed else None)
        log.info("config reloaded: %d models, hash %s (revision %d)",
                 len(config.model_names), doc.short_hash, revision.number)
        if not ours:
            log.warning("no deployment in the config uses provider %s now; this worker "
                        "serves nothing until one does", provider)

    async def refresh(self) -> None:
        """Read the latest revision now. Callers at the same moment share one read."""
        if self._feed is None:
            return
        now = asyncio.get_running_loop().time()
        if self._refreshing is None or (
                self._refreshing.done() and now - self._refreshed_at >= _REFRESH_EVERY):
            self._refreshed_at = now
            self._refreshing = asyncio.create_task(self._read_latest(self._feed))
        await asyncio.shield(self._refreshing)

    async def _read_latest(self, feed: ConfigFeed) -> None:
        try:
            number, doc = await feed.latest()
        except NATS_ERRORS:
            return
        if doc is not None:
            self.apply(Revision(number, doc))
