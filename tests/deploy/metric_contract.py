"""The metric contract: every series the gateway's processes expose, and a fake of each process.

``CONTRACT`` is the list the dashboards and alerts may use; ``FakeProcess`` is a real HTTP
server that answers ``/metrics`` for one role with a sample of every series the contract gives
that role, counters and histograms growing at each scrape so that ``rate()`` and
``histogram_quantile()`` have something to work on.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.fakes.server import free_port, serve

Kind = Literal["counter", "gauge", "histogram"]
Role = Literal["ingress", "worker", "accounting"]

ROLES: tuple[Role, ...] = ("ingress", "worker", "accounting")
JOBS: dict[Role, str] = {role: f"aigw-{role}" for role in ROLES}
EVERY: frozenset[Role] = frozenset(ROLES)
# Token usage and cost are counted by accounting, once per event stored (after dedup),
# so they equal what the usage API reports.
INGRESS: frozenset[Role] = frozenset({"ingress"})
WORKER: frozenset[Role] = frozenset({"worker"})
ACCOUNTING: frozenset[Role] = frozenset({"accounting"})

OP, PROVIDER, MODEL = "gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model"


@dataclass(frozen=True)
class Metric:
    name: str  # as exposed: a counter ends in _total, a histogram has no _bucket/_sum/_count
    kind: Kind
    roles: frozenset[Role]
    labels: tuple[str, ...] = ()

    @property
    def series_names(self) -> tuple[str, ...]:
        if self.kind == "histogram":
            return tuple(f"{self.name}_{part}" for part in ("bucket", "sum", "count"))
        return (self.name,)


CONTRACT: tuple[Metric, ...] = (
    Metric("aigw_nats_connected", "gauge", EVERY),
    Metric("aigw_nats_reconnects_total", "counter", EVERY),
    Metric("aigw_usage_events_published_total", "counter", EVERY),
    Metric("aigw_usage_events_spooled_total", "counter", EVERY),
    Metric("aigw_usage_events_dropped_total", "counter", EVERY),
    Metric("gen_ai_client_token_usage", "histogram", ACCOUNTING,
           (OP, PROVIDER, MODEL, "gen_ai_token_type")),
    Metric("aigw_cost_usd_total", "counter", ACCOUNTING, (MODEL, "team")),
    Metric("gen_ai_client_operation_duration_seconds", "histogram", INGRESS,
           (OP, PROVIDER, MODEL, "error_type")),
    Metric("gen_ai_server_time_to_first_token_seconds", "histogram", INGRESS,
           (OP, PROVIDER, MODEL)),
    Metric("aigw_requests_total", "counter", INGRESS, ("route", "status_class")),
    Metric("aigw_limit_refusals_total", "counter", INGRESS, ("scope", "reason")),
    Metric("aigw_cache_requests_total", "counter", INGRESS, ("result",)),
    Metric("aigw_fallbacks_total", "counter", INGRESS, (MODEL,)),
    Metric("aigw_retries_total", "counter", INGRESS, (MODEL,)),
    Metric("aigw_circuit_open", "gauge", INGRESS, ("deployment", MODEL)),
    Metric("aigw_inflight_requests", "gauge", INGRESS),
    Metric("aigw_provider_ready", "gauge", INGRESS, (PROVIDER,)),
    Metric("aigw_dispatch_waiting", "gauge", INGRESS, (PROVIDER,)),
    Metric("aigw_dispatch_wait_seconds", "histogram", INGRESS, (PROVIDER,)),
    Metric("aigw_budget_utilization_ratio", "gauge", INGRESS, ("team", "period")),
    Metric("aigw_worker_inflight", "gauge", WORKER, (PROVIDER,)),
    Metric("aigw_worker_capacity", "gauge", WORKER, (PROVIDER,)),
    Metric("aigw_upstream_duration_seconds", "histogram", WORKER, (PROVIDER, "status")),
    Metric("aigw_upstream_errors_total", "counter", WORKER, (PROVIDER, "status")),
    Metric("aigw_batch_items_running", "gauge", WORKER, (PROVIDER,)),
    Metric("aigw_batch_items_done_total", "counter", WORKER, (PROVIDER, "outcome")),
    Metric("aigw_accounting_events_inserted_total", "counter", ACCOUNTING),
    Metric("aigw_accounting_duplicates_dropped_total", "counter", ACCOUNTING),
    Metric("aigw_accounting_insert_duration_seconds", "histogram", ACCOUNTING),
    Metric("aigw_accounting_pending_messages", "gauge", ACCOUNTING),
    Metric("aigw_accounting_oldest_pending_age_seconds", "gauge", ACCOUNTING),
)

# Series Prometheus adds to every target itself.
SCRAPE_SERIES = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})
TARGET_LABELS = frozenset({"job", "instance", "le"})


def series_names() -> frozenset[str]:
    """Every name a query may select: the contract's series and Prometheus's own."""
    return frozenset(n for m in CONTRACT for n in m.series_names) | SCRAPE_SERIES


def labels_of(series: Iterable[str]) -> frozenset[str]:
    """The labels the named series can carry: their contract labels and the target labels."""
    names = set(series)
    return TARGET_LABELS | {label for m in CONTRACT if names & set(m.series_names)
                            for label in m.labels}


# --- reading PromQL ---------------------------------------------------------------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{([^}]*)\}")
_MATCHER_LABEL = re.compile(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_RANGE = re.compile(r"\[[^\]]*\]")
_IDENTIFIER = re.compile(r"\b([A-Za-z_:][\w:]*)\b(?!\s*\()")
_KEYWORDS = frozenset({"and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
                       "group_right", "bool", "offset", "inf", "nan"})


def _without_strings(expr: str) -> str:
    return _STRING.sub('""', expr)


def metric_names_in(expr: str) -> set[str]:
    """The series names an expression selects (not its functions, keywords or labels)."""
    bare = _without_strings(expr)
    bare = _MATCHERS.sub(" ", bare)
    bare = _GROUPING.sub(" ", bare)
    bare = _RANGE.sub(" ", bare)
    return {name for name in _IDENTIFIER.findall(bare) if name.lower() not in _KEYWORDS}


def label_names_in(expr: str) -> set[str]:
    """Label names in the expression's matchers and grouping clauses."""
    bare = _without_strings(expr)
    labels = {name for body in _MATCHERS.findall(bare) for name in _MATCHER_LABEL.findall(body)}
    for body in _GROUPING.findall(bare):
        labels |= {part.strip() for part in body.split(",") if part.strip()}
    return labels


# --- a fake process ---------------------------------------------------------------------------

SAMPLE_LABEL_VALUES: dict[str, tuple[str, ...]] = {
    OP: ("chat",),
    PROVIDER: ("openai", "anthropic"),
    MODEL: ("gpt-4o-mini", "claude-sonnet-4"),
    "gen_ai_token_type": ("input", "output", "cached_input", "reasoning"),
    "error_type": ("", "timeout"),
    "team": ("research", "support"),
    "route": ("/v1/chat/completions",),
    "status_class": ("2xx", "4xx", "5xx"),
    "scope": ("key", "team", "deployment"),
    "reason": ("rate_limit", "budget"),
    "result": ("hit", "miss", "dedup_join"),
    "deployment": ("openai/gpt-4o-mini#0",),
    "period": ("daily", "monthly"),
    "status": ("200", "429"),
    "outcome": ("completed", "failed"),
}
# OpenTelemetry's GenAI semantic-convention bucket advice; the alerts' latency thresholds
# (60 s p95) need buckets on both sides of them.
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
                    40.96, 81.92)
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
                7.5, 10.0)
TOKEN_BUCKETS = tuple(float(4**n) for n in range(14))
BUCKETS: dict[str, Sequence[float]] = {
    "gen_ai_client_operation_duration_seconds": DURATION_BUCKETS,
    "gen_ai_server_time_to_first_token_seconds": TTFT_BUCKETS,
    "gen_ai_client_token_usage": TOKEN_BUCKETS,
}
OBSERVED: dict[str, float] = {
    "gen_ai_client_operation_duration_seconds": 3.0,
    "gen_ai_server_time_to_first_token_seconds": 0.3,
    "gen_ai_client_token_usage": 120.0,
    "aigw_dispatch_wait_seconds": 0.05,
    "aigw_upstream_duration_seconds": 2.0,
    "aigw_accounting_insert_duration_seconds": 0.02,
}
GAUGE_VALUES: dict[str, float] = {
    "aigw_worker_capacity": 8,
    "aigw_worker_inflight": 3,
    "aigw_dispatch_waiting": 2,
    "aigw_inflight_requests": 5,
    "aigw_budget_utilization_ratio": 0.4,
    "aigw_accounting_pending_messages": 12,
    "aigw_accounting_oldest_pending_age_seconds": 3,
}


def _label_sets(labels: tuple[str, ...]) -> Iterator[dict[str, str]]:
    for values in itertools.product(*(SAMPLE_LABEL_VALUES[label] for label in labels)):
        yield dict(zip(labels, values, strict=True))


class SampleRegistry:
    """The series one role exposes, with every label combination of the sample values."""

    def __init__(self, role: Role) -> None:
        self.role = role
        self.registry = CollectorRegistry(auto_describe=True)
        self._counters: list[Counter] = []
        self._histograms: list[tuple[Histogram, float]] = []
        for metric in CONTRACT:
            if role in metric.roles:
                self._add(metric)

    def _add(self, metric: Metric) -> None:
        doc = f"{metric.name} (test sample)"
        labels = metric.labels
        if metric.kind == "counter":
            counter = Counter(metric.name.removesuffix("_total"), doc, labels,
                              registry=self.registry)
            self._counters += [counter.labels(**ls) if labels else counter
                               for ls in _label_sets(labels)]
        elif metric.kind == "gauge":
            gauge = Gauge(metric.name, doc, labels, registry=self.registry)
            for ls in _label_sets(labels):
                (gauge.labels(**ls) if labels else gauge).set(GAUGE_VALUES.get(metric.name, 1))
        else:
            buckets = BUCKETS.get(metric.name, Histogram.DEFAULT_BUCKETS)
            histogram = Histogram(metric.name, doc, labels, buckets=buckets,
                                  registry=self.registry)
            observed = OBSERVED.get(metric.name, 1.0)
            self._histograms += [(histogram.labels(**ls) if labels else histogram, observed)
                                 for ls in _label_sets(labels)]

    def advance(self) -> None:
        for counter in self._counters:
            counter.inc()
        for histogram, value in self._histograms:
            histogram.observe(value)

    def exposition(self) -> bytes:
        self.advance()
        return generate_latest(self.registry)


def create_app(samples: SampleRegistry,
               targets: Sequence[Mapping[str, object]] | None = None) -> Starlette:
    """``/metrics``, and the Prometheus HTTP-SD target list ``aigw up`` serves (ingress only)."""

    def metrics(request: Request) -> Response:
        return Response(samples.exposition(), media_type=CONTENT_TYPE_LATEST)

    def health_targets(request: Request) -> Response:
        if targets is None or request.query_params.get("format") != "prometheus":
            return Response(status_code=404)
        return Response(json.dumps(list(targets)), media_type="application/json")

    return Starlette(routes=[Route("/metrics", metrics), Route("/health/targets", health_targets)])


class FakeProcesses:
    """One fake process per role on loopback sockets; ``addresses[role]`` is ``host:port``.

    The ingress also lists all three at ``/health/targets?format=prometheus``, as ``aigw up``
    does, with the labels ``role`` and ``provider``.
    """

    def __init__(self) -> None:
        self.addresses: dict[Role, str] = {role: f"127.0.0.1:{free_port()}" for role in ROLES}
        self._stack = ExitStack()

    @property
    def targets(self) -> list[dict[str, object]]:
        return [{"targets": [address],
                 "labels": {"role": role, "provider": "openai" if role == "worker" else ""}}
                for role, address in self.addresses.items()]

    def __enter__(self) -> FakeProcesses:
        try:
            for role, address in self.addresses.items():
                targets = self.targets if role == "ingress" else None
                app = create_app(SampleRegistry(role), targets)
                self._stack.enter_context(serve(app, port=int(address.rsplit(":", 1)[1])))
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()
