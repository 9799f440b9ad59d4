"""What one ingress process holds while it runs, shared by every route."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import nats.aio.client

from accounting.publisher import UsagePublisher
from ingress.auth import Authenticator
from ingress.cache import MemoryCache, ResponseCache
from ingress.dedup import InFlight
from ingress.dispatch import Dispatcher
from ingress.gatekeeper import Gatekeeper
from ingress.keys import KeyStore
from ingress.routing import Router
from ingress.settings import IngressSettings
from schemas.config import GatewayConfig


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
