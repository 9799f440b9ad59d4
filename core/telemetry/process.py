"""Metrics every process exposes: its NATS connection and its usage event publisher."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

from prometheus_client import REGISTRY, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

NATS_RECONNECTS = Counter("aigw_nats_reconnects", "Reconnections to NATS since start.")


class _Connection(Protocol):
    @property
    def is_connected(self) -> bool: ...


class _Publisher(Protocol):
    published: int
    dropped: int
    spooled: int

    @property
    def pending(self) -> int: ...


class ProcessCollector(Collector):
    """Reads the live NATS connection and usage publisher at each scrape, so the hot path
    does no metrics work for them."""

    def __init__(self) -> None:
        self.connection: Callable[[], _Connection | None] = lambda: None
        self.publisher: Callable[[], _Publisher | None] = lambda: None

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        nc = self.connection()
        yield GaugeMetricFamily("aigw_nats_connected", "1 while connected to NATS.",
                                value=1.0 if nc is not None and nc.is_connected else 0.0)
        pub = self.publisher()
        yield CounterMetricFamily("aigw_usage_events_published",
                                  "Usage events acknowledged by JetStream.",
                                  value=pub.published if pub else 0)
        yield CounterMetricFamily("aigw_usage_events_dropped",
                                  "Usage events dropped because the buffer was full.",
                                  value=pub.dropped if pub else 0)
        yield CounterMetricFamily("aigw_usage_events_spooled",
                                  "Usage events whose publish failed: they wait in the spool "
                                  "(or memory) for a later one.",
                                  value=pub.spooled if pub else 0)
        yield GaugeMetricFamily("aigw_usage_events_pending",
                                "Usage events waiting to be published.",
                                value=pub.pending if pub else 0)


PROCESS = ProcessCollector()
REGISTRY.register(PROCESS)


async def count_reconnect() -> None:
    """A nats-py ``reconnected_cb``."""
    NATS_RECONNECTS.inc()
