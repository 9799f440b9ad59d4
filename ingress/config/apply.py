"""Serving a new config in this ingress, and what cannot change live.

A reload that removes ``general_settings.master_key`` is refused (it would open the
gateway to every caller; restart to run without one). A new provider needs its worker: the
reload applies and a warning names the command to start one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from core.config_feed import NATS_ERRORS
from ingress.state import Gateway
from schemas import subjects
from schemas.config import GatewayConfig

log = logging.getLogger("aigw.config")


def refusal(old: GatewayConfig, new: GatewayConfig) -> str | None:
    """Why ``new`` cannot replace ``old`` in a running ingress, or None."""
    if old.master_key is not None and new.master_key is None:
        return ("removing general_settings.master_key would let every caller in; "
                "restart the ingress to run without one")
    return None


class ConfigApplier:
    """Puts a config into service in the gateway and follows up on what changed: the load
    of a new deployment set, a new provider's worker. ``spawn`` runs the follow-ups."""

    def __init__(self, gateway: Gateway,
                 spawn: Callable[[Coroutine[Any, Any, Any]], None]) -> None:
        self.gateway = gateway
        self._spawn = spawn
        self.applied_hash: str | None = None
        self._retrack = asyncio.Lock()

    def apply(self, hash: str, config: GatewayConfig, origin: str, quiet: bool = False) -> None:
        old = self.gateway.config
        self.applied_hash = hash
        if config == old:
            return
        self.gateway.apply_config(config)
        if quiet:
            return
        log.info("config reloaded: %d models, %d deployments, hash %s (%s)",
                 len(config.model_names), len(config.deployments), hash[:12], origin)
        if config.ignored and config.ignored != old.ignored:
            log.warning("config: accepted but not acted on: %s", ", ".join(config.ignored))
        if {d.id for d in config.deployments} != {d.id for d in old.deployments}:
            self._spawn(self._track_load(config))
        for provider in sorted(set(config.providers) - set(old.providers)):
            self._spawn(self._check_worker(provider))

    async def _track_load(self, config: GatewayConfig) -> None:
        """Share the load of the new deployment set through Redis (counters are kept)."""
        load = self.gateway.router.load
        async with self._retrack:
            await load.stop()
            load.start(d.id for d in config.deployments)

    async def _check_worker(self, provider: str) -> None:
        try:
            await self.gateway.nc.request(subjects.ping(provider), b"", timeout=1.0)
        except (NoRespondersError, NatsTimeout):
            log.warning("provider %s has no worker: start `aigw worker --provider %s` "
                        "(with `aigw up`, restart it)", provider, provider)
        except NATS_ERRORS:
            pass  # NATS is down: readiness says so already
