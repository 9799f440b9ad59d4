"""Hot reload in the ingress: watch the config file, publish it to NATS KV, apply revisions.

Who serves what: every ingress and every worker serves the document in NATS KV (bucket
``aigw_config``, key ``AIGW_CONFIG_KEY``) and applies each new revision it can parse. A
revision a process cannot parse (an ``os.environ/`` variable missing on that host) is
logged there, and that process keeps its config.

Who publishes, and when: only an ingress started with a config file, and only a valid file.

* At start-up, when the KV holds no config, or holds a different one that came from an
  older file (this file's mtime is later than the document's). Replicas started with the
  same file publish nothing after the first; a replica restarted with an old copy of the
  file does not roll the others back, it serves the KV's newer config.
* When the file changes on disk (mtime or size, then the content hash; checked every
  ``AIGW_CONFIG_WATCH_INTERVAL`` seconds), on SIGUSR1 (and on SIGHUP, out of a terminal),
  and on ``POST /admin/config/reload``: whenever the content differs from the KV's. An
  edit is an operator's decision, so here the newest write wins, whatever the mtimes say.

Writes are compare-and-set: when two replicas write at once, one wins and the other
follows it. An invalid file is refused with one log line (``config reload refused: <path>:
<error>; keeping the current config``) and changes nothing, anywhere. A file whose
``api_key`` or ``master_key`` is written literally is published all the same, with one
warning naming those entries: the document carries them in clear to every NATS client.

NATS unreachable: an edit is applied here at once and shared when NATS is back. The watch,
started again after the reconnect, first delivers the revision that edit replaced; it is
not applied, and the file is published instead, whatever ``AIGW_CONFIG_WATCH_INTERVAL``
says. The one exception follows the start-up rule: when the KV meanwhile holds a config from
a newer file (by mtime), that config wins here too and this file is not published.

What cannot change live is said in :mod:`ingress.config.apply`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.config_feed import NATS_ERRORS, ConfigFeed, Revision
from ingress.config.apply import ConfigApplier, refusal
from ingress.config.file import ConfigFile, read_file, stat_file
from ingress.config.publish import publish
from ingress.state import Gateway
from schemas.config import ConfigError, parse_config_text

log = logging.getLogger("aigw.config")


@dataclass(frozen=True, slots=True)
class ReloadResult:
    """What a reload did: ``applied`` when the file's config is the one served now."""

    applied: bool
    hash: str | None = None
    error: str | None = None
    changed: bool = False


class ConfigReloader:
    def __init__(
        self,
        gateway: Gateway,
        feed: ConfigFeed,
        path: Path,
        *,
        interval: float,
        env: Mapping[str, str],
    ) -> None:
        self.gateway = gateway
        self.feed = feed
        self.path = path
        self._interval = interval
        self._env = env
        self._source = f"{socket.gethostname()}:{path.resolve()}"
        self._applier = ConfigApplier(gateway, self._spawn)
        self._seen: tuple[int, int] | None = None  # (mtime_ns, size) last looked at
        self._file_hash: str | None = None  # the content last acted on
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._poller: asyncio.Task[None] | None = None
        self._signals = False
        self._unshared: ConfigFile | None = None  # applied here, not yet in the KV
        self._watched = 0  # the latest revision the watch delivered
        self._revision = 0  # the newest revision whose config this ingress serves
        # Told of each reload a signal asked for: (signal name, hash before, result).
        self.on_signal_reload: Callable[[str, str | None, ReloadResult], None] | None = None

    @property
    def applied_hash(self) -> str | None:
        """The hash of the config this ingress serves (None before the first)."""
        return self._applier.applied_hash

    # ---- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Publish the file if the start-up rule says so, then follow the KV entry (the
        current revision is applied before this returns) and watch the file."""
        await self.feed.open()
        async with self._lock:
            await self._check(at_start=True)
        await self.feed.follow(self._on_revision)
        if self._interval > 0:
            self._poller = asyncio.create_task(self._poll())
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGUSR1, self._on_signal, "SIGUSR1")
            # SIGHUP reloads a daemon's config by custom; to a process in a terminal it
            # means the terminal closed, and the process stops (cli.process).
            if not _in_terminal():
                loop.add_signal_handler(signal.SIGHUP, self._on_signal, "SIGHUP")
            self._signals = True

    async def stop(self) -> None:
        if self._signals:
            for number in (signal.SIGUSR1, signal.SIGHUP):
                asyncio.get_running_loop().remove_signal_handler(number)  # True or False
        tasks = [*self._tasks, *([self._poller] if self._poller is not None else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.feed.stop()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("config task %s failed", task.get_coro(), exc_info=exc)

    def _on_signal(self, name: str) -> None:
        log.info("%s: re-reading %s", name, self.path)
        self._spawn(self._reload_by_signal(name))

    async def _reload_by_signal(self, name: str) -> None:
        before = self.applied_hash
        result = await self.reload()
        if self.on_signal_reload is not None and result.error is None:
            self.on_signal_reload(name, before, result)

    async def _poll(self) -> None:
        failed: str | None = None  # the last failure logged, to log a repeated one once
        while True:
            await asyncio.sleep(self._interval)
            try:
                if await asyncio.to_thread(stat_file, self.path) == self._seen:
                    continue
                async with self._lock:
                    await self._check()
                failed = None
            except Exception as exc:  # the poller must outlive anything one look raises
                if repr(exc) != failed:
                    log.exception("looking at config %s failed; looking again in %g s",
                                  self.path, self._interval)
                failed = repr(exc)

    async def reload(self) -> ReloadResult:
        """Re-read the file now (SIGHUP, the admin API), even if it looks unchanged."""
        async with self._lock:
            return await self._check(forced=True)

    # ---- the file ----------------------------------------------------------------------

    async def _check(self, *, at_start: bool = False, forced: bool = False) -> ReloadResult:
        self._seen = await asyncio.to_thread(stat_file, self.path)
        try:
            file = await asyncio.to_thread(read_file, self.path)
        except ConfigError as exc:
            return self._refuse(str(exc), None)
        if file.hash == self._file_hash and not forced:
            return ReloadResult(applied=file.hash == self.applied_hash, hash=file.hash)
        self._file_hash = file.hash
        try:
            config = parse_config_text(file.text, self._env, str(self.path))
        except ConfigError as exc:
            return self._refuse(str(exc), file.hash)
        except Exception as exc:  # a shape the parser missed: refused all the same
            return self._refuse(f"cannot be parsed ({type(exc).__name__}: {exc})", file.hash)
        problem = refusal(self.gateway.config, config)
        if problem is not None:
            return self._refuse(problem, file.hash)
        if at_start:
            # The file was parsed by the CLI a moment ago: serve what it holds now.
            self._applier.apply(file.hash, config, f"from {self.path}", quiet=True)
        changed = file.hash != self.applied_hash
        # An edit applied during an outage yields to a newer file's config, as at start-up.
        retry = self._unshared is not None and self._unshared.hash == file.hash
        try:
            revision = await publish(self.feed, file, self._source, self.path,
                                     newest_wins=at_start or retry)
            self._unshared = None
        except NATS_ERRORS as exc:
            if self._unshared is None:  # once per outage, not once per look
                log.warning("config from %s not shared through NATS (%s); serving it here "
                            "and retrying", self.path, exc or type(exc).__name__)
            self._unshared = file
            self._seen = self._file_hash = None  # the next look retries
            if not at_start:
                self._applier.apply(file.hash, config, f"{self.path}, not shared yet")
            return ReloadResult(applied=file.hash == self.applied_hash, hash=file.hash,
                                changed=changed)
        # Applied by the watch, in revision order, as on every other replica; directly
        # only when the watch lags behind.
        if revision is not None and not at_start and not await self._caught_up(revision):
            self._applier.apply(file.hash, config, f"{self.path}, revision {revision}")
            self._revision = max(self._revision, revision)
        return ReloadResult(applied=file.hash == self.applied_hash, hash=file.hash,
                            changed=changed and file.hash == self.applied_hash)

    async def _caught_up(self, revision: int, timeout: float = 5.0) -> bool:
        deadline = asyncio.get_running_loop().time() + timeout
        while self._watched < revision:
            if asyncio.get_running_loop().time() > deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    def _refuse(self, error: str, file_hash: str | None) -> ReloadResult:
        log.error("config reload refused: %s: %s; keeping the current config", self.path, error)
        return ReloadResult(applied=False, hash=file_hash, error=error)

    # ---- applying ----------------------------------------------------------------------

    def _on_revision(self, revision: Revision) -> None:
        if revision.number < self._watched:  # the watch itself went back: a new KV
            log.warning("config revisions start again at %d (the NATS KV was made anew); "
                        "following them", revision.number)
            self._revision = 0
        self._watched = revision.number
        doc = revision.doc
        if revision.number < self._revision:
            return  # older than what this ingress serves (applied before the watch had it)
        unshared = self._unshared
        if unshared is not None and unshared.hash != doc.hash:
            if unshared.mtime > doc.mtime:
                # NATS is back and the watch starts again at the revision this ingress's
                # unshared edit replaced: share the edit rather than roll it back.
                log.info("config revision %d (hash %s) not applied: %s, applied here while "
                         "NATS was unreachable, is newer; publishing it", revision.number,
                         doc.short_hash, self.path)
                self._spawn(self._share())
                return
            # A newer file's config reached the KV meanwhile: it wins, and the poll must not
            # publish the older file over it.
            self._unshared = None
            self._file_hash = unshared.hash
        elif unshared is not None:
            self._unshared = None  # the KV holds this file already
        if doc.hash == self.applied_hash:
            self._revision = revision.number
            return
        origin = f"revision {revision.number} from {doc.source}"
        try:
            config = doc.parse(self._env)
        except ConfigError as exc:
            log.error("config %s (hash %s) not applied here: %s; keeping the current config",
                      origin, doc.short_hash, exc)
            return
        problem = refusal(self.gateway.config, config)
        if problem is not None:
            log.error("config %s (hash %s) not applied here: %s; keeping the current config",
                      origin, doc.short_hash, problem)
            return
        self._applier.apply(doc.hash, config, origin)
        self._revision = revision.number

    async def _share(self) -> None:
        """Publish the file applied here while NATS was unreachable (or its latest edit),
        trying again for a few seconds while JetStream recovers."""
        for delay in (0.0, 0.5, 1.0, 2.0, 4.0):
            await asyncio.sleep(delay)
            async with self._lock:
                if self._unshared is None:
                    return
                if (await self._check(forced=True)).error is not None:
                    return  # the file is invalid now: refused, and this config stays


def reloader_for(gateway: Gateway, env: Mapping[str, str] = os.environ) -> ConfigReloader | None:
    """The reloader of an ingress started with a config file; None without one."""
    settings = gateway.settings
    if settings.config_path is None:
        return None
    return ConfigReloader(
        gateway, ConfigFeed(gateway.nc, settings.config_key), settings.config_path,
        interval=settings.config_watch_interval, env=env,
    )


def _in_terminal() -> bool:
    """Whether this process reads from a terminal (``aigw up`` typed at a prompt)."""
    try:
        return os.isatty(0)
    except OSError:
        return False
