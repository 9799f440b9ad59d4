"""What one ingress process holds while it runs, shared by every route."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import nats.aio.client

from core.publisher import UsagePublisher
from ingress.admission.gatekeeper import Gatekeeper
from ingress.auth.authenticate import Authenticator
from ingress.auth.keys import KeyStore
from ingress.cache.dedup import InFlight
from ingress.cache.dedup_shared import SharedLeads
from ingress.cache.key import default_ttls
from ingress.cache.semantic import SemanticCache
from ingress.cache.store import MemoryCache, ResponseCache
from ingress.dispatch.dispatcher import Dispatcher
from ingress.routing.router import Router
from ingress.settings import IngressSettings
from schemas.config import GatewayConfig
from schemas.infer import Endpoint


@dataclass
class Gateway:
    settings: IngressSettings
    config: GatewayConfig
    nc: nats.aio.client.Client
    dispatcher: Dispatcher
    router: Router
    auth: Authenticator
    keys: KeyStore
    gatekeeper: Gatekeeper
    usage: UsagePublisher
    cache: ResponseCache = field(default_factory=lambda: ResponseCache(MemoryCache()))
    inflight: InFlight = field(default_factory=InFlight)
    started_at: int = field(default_factory=lambda: int(time.time()))
    # Dedup across replicas: set when the cache is shared in Redis.
    shared_leads: SharedLeads | None = None
    # The semantic cache (off unless the config's cache_params.type is semantic).
    semantic: SemanticCache = field(default_factory=SemanticCache)
    # How long a request to each endpoint is cached when it says nothing about caching.
    cache_ttls: dict[Endpoint, float] = field(init=False)

    def __post_init__(self) -> None:
        self.cache.configure(self.config.cache)
        self.semantic.configure(self.config.cache)
        self.cache_ttls = default_ttls(self.config.cache, self.settings.cache_ttl)

    def apply_config(self, config: GatewayConfig) -> None:
        """Serve ``config`` from the next request on (a hot reload). Synchronous, so no
        request sees half of it; requests in flight keep the plan and deployments they
        already hold."""
        self.router.apply(config)
        if config.master_key != self.config.master_key:
            master = config.master_key.get_secret_value() if config.master_key else None
            self.auth = Authenticator(master, self.keys)
        self.cache.configure(config.cache)
        self.semantic.configure(config.cache)
        self.cache_ttls = default_ttls(config.cache, self.settings.cache_ttl)
        self.config = config
