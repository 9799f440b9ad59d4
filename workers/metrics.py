"""The worker's Prometheus metrics: its load, its upstream calls and its batch items.

Labels name the provider and an outcome, never a key, request, user or prompt. Load is read
from the live worker at each scrape (:class:`LoadCollector`), so attempts do no work for it;
an upstream call costs one histogram observation on a series bound at start-up.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from core.telemetry import buckets
from schemas.errors import ErrorInfo, ErrorKind

PROVIDER = "gen_ai_provider_name"

UPSTREAM_DURATION = Histogram(
    "aigw_upstream_duration_seconds",
    "Upstream calls, from the attempt's arrival to its last byte, by HTTP status "
    "('error': no answer, 'cancelled': the client went away).",
    (PROVIDER, "status"), buckets=buckets.DURATION)
UPSTREAM_ERRORS = Counter(
    "aigw_upstream_errors", "Upstream calls that failed, by HTTP status ('error': no answer).",
    (PROVIDER, "status"))
BATCH_ITEMS_DONE = Counter(
    "aigw_batch_items_done",
    "Batch items finished here: completed, failed (an error line), or cancelled (their batch "
    "stopped before they ran).",
    (PROVIDER, "outcome"))

OK = "200"
NO_ANSWER = "error"
CANCELLED = "cancelled"
# Kinds a call ends with when the upstream sent no usable answer and no status says more.
_NO_ANSWER_KINDS = frozenset({ErrorKind.TIMEOUT, ErrorKind.CONNECTION, ErrorKind.SERVER})


def call_status(error: ErrorInfo | None, cancelled: bool) -> str | None:
    """The ``status`` label of a finished upstream call; None when the worker refused the
    call itself before the upstream saw it (a request the adapter cannot translate)."""
    if cancelled:
        return CANCELLED
    if error is None or error.code == "response_too_large":  # the upstream did answer
        return OK
    if error.upstream_status is not None:
        return str(error.upstream_status)
    return NO_ANSWER if error.kind in _NO_ANSWER_KINDS else None


class UpstreamCalls:
    """Records the upstream calls of one provider."""

    def __init__(self, provider: str) -> None:
        self._provider = provider
        self._ok = UPSTREAM_DURATION.labels(provider, OK)

    def record(self, status: str, seconds: float) -> None:
        if status == OK:
            self._ok.observe(seconds)
            return
        UPSTREAM_DURATION.labels(self._provider, status).observe(seconds)
        if status != CANCELLED:
            UPSTREAM_ERRORS.labels(self._provider, status).inc()


def batch_item_done(provider: str, outcome: str) -> None:
    BATCH_ITEMS_DONE.labels(provider, outcome).inc()


class Load(Protocol):
    """What the collector reads from the running worker."""

    provider_name: str

    @property
    def interactive(self) -> int: ...

    @property
    def capacity(self) -> int: ...

    @property
    def batch_running(self) -> int: ...


class LoadCollector(Collector):
    """The worker's in-flight calls and capacity (what autoscalers divide), read at scrape."""

    def __init__(self) -> None:
        self.worker: Callable[[], Load | None] = lambda: None

    def collect(self) -> Iterable[GaugeMetricFamily]:
        inflight = GaugeMetricFamily(
            "aigw_worker_inflight", "Interactive calls in flight on this worker.",
            labels=[PROVIDER])
        capacity = GaugeMetricFamily(
            "aigw_worker_capacity", "Calls this worker runs at once (its concurrency).",
            labels=[PROVIDER])
        running = GaugeMetricFamily(
            "aigw_batch_items_running", "Batch items this worker is running.", labels=[PROVIDER])
        worker = self.worker()
        if worker is not None:
            inflight.add_metric([worker.provider_name], worker.interactive)
            capacity.add_metric([worker.provider_name], worker.capacity)
            running.add_metric([worker.provider_name], worker.batch_running)
        yield inflight
        yield capacity
        yield running


LOAD = LoadCollector()
REGISTRY.register(LOAD)
