"""The ingress's Prometheus metrics: requests, GenAI durations, refusals, cache, circuits."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nats.errors import Error as NatsError
from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from core.periodic import Periodic
from core.telemetry import buckets
from schemas import subjects

if TYPE_CHECKING:
    from ingress.state import Gateway

log = logging.getLogger("aigw.metrics")

GENAI_LABELS = ("gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model")

OPERATION_DURATION = Histogram(
    "gen_ai_client_operation_duration_seconds",
    "Whole request at the ingress, from the first byte in to the last byte out.",
    (*GENAI_LABELS, "error_type"), buckets=buckets.DURATION)
FIRST_TOKEN = Histogram(
    "gen_ai_server_time_to_first_token_seconds",
    "Streams: from the request to the first content chunk sent to the client.",
    GENAI_LABELS, buckets=buckets.FIRST_TOKEN)
REQUESTS = Counter("aigw_requests", "HTTP requests by route and status class.",
                   ("route", "status_class"))
LIMIT_REFUSALS = Counter("aigw_limit_refusals", "Requests refused by a rate limit or budget.",
                         ("scope", "reason"))
CACHE = Counter("aigw_cache_requests",
                "Cacheable requests: hit, semantic_hit, miss, or dedup_join.", ("result",))
FALLBACKS = Counter("aigw_fallbacks", "Requests moved on to a fallback model.",
                    ("gen_ai_request_model",))
RETRIES = Counter("aigw_retries", "Retry rounds over a model's deployments.",
                  ("gen_ai_request_model",))
for _result in ("hit", "miss", "dedup_join"):
    CACHE.labels(_result)



@dataclass(slots=True)
class GenAI:
    """What an inference route tells the metrics middleware about its request."""

    operation: str
    model: str
    provider: str = ""
    stream: bool = False


def status_class(status: int) -> str:
    return f"{status // 100}xx"


class IngressCollector(Collector):
    """Read at each scrape from the live state, so requests pay nothing for these."""

    def __init__(self) -> None:
        self.gateway: Callable[[], Gateway | None] = lambda: None
        self.in_flight = 0
        self.providers_ready: dict[str, bool] = {}
        self.budget_ratios: dict[tuple[str, str], float] = {}
        # Calls waiting for a worker of a full provider (ingress.dispatch.capacity).
        self.waiting: dict[str, int] = {}
        # Since when (time.monotonic()) no worker of a provider answers (ProviderWatch).
        self.missing_since: dict[str, float] = {}
        # Running batches with items for a provider that has no worker (the finalizer's).
        self.stranded_batches: Callable[[], dict[str, int]] = dict

    def missing_for(self, provider: str) -> float:
        """Seconds since a worker of ``provider`` last answered a ping (0: one does)."""
        since = self.missing_since.get(provider)
        return 0.0 if since is None else time.monotonic() - since

    def set_budget_ratios(self, ratios: dict[tuple[str, str], float]) -> None:
        self.budget_ratios = ratios

    def collect(self) -> Iterable[GaugeMetricFamily]:
        yield GaugeMetricFamily("aigw_inflight_requests", "HTTP requests being served.",
                                value=self.in_flight)
        ready = GaugeMetricFamily(
            "aigw_provider_ready", "1 when a worker answers for the configured provider.",
            labels=["gen_ai_provider_name"])
        for provider, ok in sorted(self.providers_ready.items()):
            ready.add_metric([provider], 1.0 if ok else 0.0)
        yield ready
        budgets = GaugeMetricFamily(
            "aigw_budget_utilization_ratio", "A team's spend over its budget this period.",
            labels=["team", "period"])
        for (team, period), ratio in sorted(self.budget_ratios.items()):
            budgets.add_metric([team, period], ratio)
        yield budgets
        circuits = GaugeMetricFamily(
            "aigw_circuit_open", "1 while a deployment's circuit is open (cooling down).",
            labels=["deployment", "gen_ai_request_model"])
        gateway = self.gateway()
        if gateway is not None:
            from ingress.routing.breaker import Availability

            routing = gateway.router
            for d in routing.deployments:
                cooling = routing.health.availability(d.id) is Availability.COOLING
                circuits.add_metric([d.id, d.model_name], 1.0 if cooling else 0.0)
        yield circuits
        waiting = GaugeMetricFamily(
            "aigw_dispatch_waiting",
            "Calls waiting for a worker because every worker of the provider is busy.",
            labels=["gen_ai_provider_name"])
        providers = dict.fromkeys(gateway.config.providers, 0) if gateway is not None else {}
        providers.update(self.waiting)
        for provider, count in sorted(providers.items()):
            waiting.add_metric([provider], float(count))
        yield waiting
        stranded = GaugeMetricFamily(
            "aigw_batches_without_worker",
            "Running batches with items for a provider no worker serves.",
            labels=["gen_ai_provider_name"])
        for provider, count in sorted(self.stranded_batches().items()):
            stranded.add_metric([provider], float(count))
        yield stranded


INGRESS = IngressCollector()
REGISTRY.register(INGRESS)


class ProviderWatch(Periodic):
    """Pings each configured provider's workers every few seconds for ``aigw_provider_ready``
    (the alert on a provider with no worker); one request per provider per tick."""

    def __init__(self, gateway: Gateway, every: float = 5.0) -> None:
        super().__init__(self.check, every, "checking providers")
        self._gateway = gateway

    async def check(self) -> None:
        nc = self._gateway.nc
        providers = list(self._gateway.config.providers)
        answers = await asyncio.gather(*(self._answers(p) for p in providers)) \
            if nc.is_connected else [False] * len(providers)
        INGRESS.providers_ready = dict(zip(providers, answers, strict=True))
        now = time.monotonic()
        for provider, ok in INGRESS.providers_ready.items():
            if ok:
                INGRESS.missing_since.pop(provider, None)
            else:
                INGRESS.missing_since.setdefault(provider, now)

    async def _answers(self, provider: str) -> bool:
        try:
            await self._gateway.nc.request(subjects.ping(provider), b"", timeout=1.0)
        except (NatsError, TimeoutError):
            return False
        return True
