"""The accounting process's Prometheus metrics: what it stores, and how far behind it is.

Token usage and cost are counted here, once per event that became a row (after
deduplication, in ``UsageStore.insert``), so that they add up to exactly what the usage
API reports: tokens to the token, cost to the float of its ``Decimal`` sum. Tokens are
observed for upstream calls only (ok, error, cancelled); rejected and cache-hit events
carry none. Labels never name a key, a user or a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from itertools import accumulate
from typing import Protocol

from nats.errors import Error as NatsError
from nats.js.api import ConsumerInfo
from nats.js.client import JetStreamContext
from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from core.telemetry import buckets
from schemas import subjects

log = logging.getLogger("aigw.accounting.metrics")

INSERTED = Counter("aigw_accounting_events_inserted", "Usage events stored in ClickHouse.")
DUPLICATES = Counter("aigw_accounting_duplicates_dropped",
                     "Usage events dropped as already stored (re-published or re-delivered).")
INSERT_DURATION = Histogram("aigw_accounting_insert_duration_seconds",
                            "One insert of a batch into ClickHouse, failed ones included.",
                            buckets=buckets.SHORT)
PENDING = Gauge("aigw_accounting_pending_messages",
                "Usage messages (one event or a group) in JetStream not stored yet (not "
                "delivered, or not acked).")
OLDEST_PENDING_AGE = Gauge("aigw_accounting_oldest_pending_age_seconds",
                           "Age of the oldest usage event not stored yet (0: none).")
COST = Counter("aigw_cost_usd", "Cost of the stored usage events, in US dollars.",
               ("gen_ai_request_model", "team"))

TOKEN_LABELS = ("gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model",
                "gen_ai_token_type")
TokenLabels = tuple[str, str, str, str]
# Our endpoint names → gen_ai.operation.name.
OPERATIONS = {"chat": "chat", "embeddings": "embeddings"}
# Statuses of events that stand for a call to the upstream, the ones that use tokens.
UPSTREAM_CALLS = frozenset({"ok", "error", "cancelled"})


class TokenUsage(Collector):
    """``gen_ai_client_token_usage``: tokens per upstream call (unit: tokens), a histogram.

    Counted a batch at a time under one lock: prometheus_client's ``Histogram`` takes a
    lock for the sum and one for the bucket on every observation (3 us here), and a batch
    holds two to four observations per event, against the consumer's per-event budget.
    """

    name = "gen_ai_client_token_usage"

    def __init__(self, bounds: Sequence[float]) -> None:
        self._bounds = tuple(bounds)
        # ``le`` as prometheus_client's Histogram writes it, so both kinds read alike.
        to_go: Callable[[float], str] = floatToGoString
        self._edges = [*(to_go(b) for b in self._bounds), "+Inf"]
        self._lock = threading.Lock()
        # Per label set: a count per bucket (the last one past every bound) and the sum.
        self._series: dict[TokenLabels, tuple[list[int], list[int]]] = {}

    def observe(self, observations: Iterable[tuple[TokenLabels, Sequence[int]]]) -> None:
        """Count each label set's token amounts."""
        bounds = self._bounds
        with self._lock:
            for labels, amounts in observations:
                series = self._series.get(labels)
                if series is None:
                    series = self._series[labels] = ([0] * (len(bounds) + 1), [0])
                counts = series[0]
                for tokens in amounts:
                    counts[bisect_left(bounds, tokens)] += 1
                series[1][0] += sum(amounts)

    def collect(self) -> Iterable[HistogramMetricFamily]:
        with self._lock:
            snapshot = [(labels, list(counts), total[0])
                        for labels, (counts, total) in self._series.items()]
        family = HistogramMetricFamily(
            self.name, "Tokens used per upstream call, by token type (unit: tokens).",
            labels=TOKEN_LABELS)
        for labels, counts, total in snapshot:
            cumulative = accumulate(counts)
            family.add_metric(list(labels), list(zip(self._edges, cumulative, strict=True)),
                              total)
        yield family


TOKEN_USAGE = TokenUsage(buckets.TOKENS)
REGISTRY.register(TOKEN_USAGE)


class Stored(Protocol):
    """What the metrics read of a stored event: a ``UsageEvent``, or the consumer's
    ``EventKey`` of one."""

    @property
    def endpoint(self) -> str: ...
    @property
    def provider(self) -> str: ...
    @property
    def model_alias(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def team_id(self) -> str | None: ...
    @property
    def prompt_tokens(self) -> int: ...
    @property
    def completion_tokens(self) -> int: ...
    @property
    def cached_tokens(self) -> int: ...
    @property
    def reasoning_tokens(self) -> int: ...
    @property
    def cost(self) -> Decimal | str | float | None: ...


def _money(value: Decimal | str | float) -> Decimal:
    try:
        amount = value if isinstance(value, Decimal) else Decimal(str(value))
    except InvalidOperation:
        return Decimal(0)
    return amount if amount.is_finite() else Decimal(0)


# The token types of a call's observations, in the order ``count_stored`` lists them.
_TOKEN_TYPES = ("input", "output", "cached_input", "reasoning")


def count_stored(events: Iterable[Stored]) -> None:
    """Token usage and cost of events just stored, each event once. Never raises: the
    rows are in ClickHouse already, and a metric must not turn that into a retry.

    An upstream call that reported usage observes its input and output tokens, and its
    cached input and reasoning tokens when there are any. Amounts are gathered per label
    set first and counted under one lock: this runs for every event on the ingest path.
    """
    costs: dict[tuple[str, str], list[Decimal | str | float]] = {}
    # Per (endpoint, provider, model): input, output, cached input and reasoning amounts.
    calls: dict[tuple[str, str, str], tuple[list[int], list[int], list[int], list[int]]] = {}
    for event in events:
        cost = event.cost
        if cost is not None:
            key = (event.model_alias, event.team_id or "")
            listed = costs.get(key)
            if listed is None:
                costs[key] = [cost]
            else:
                listed.append(cost)
        status = event.status
        if status not in UPSTREAM_CALLS:
            continue
        call = (event.endpoint, event.provider, event.model_alias)
        amounts = calls.get(call)
        if amounts is None:
            amounts = calls[call] = ([], [], [], [])
        prompt, completion = event.prompt_tokens, event.completion_tokens
        if status == "ok" or prompt or completion:
            amounts[0].append(prompt)
            amounts[1].append(completion)
        if event.cached_tokens:
            amounts[2].append(event.cached_tokens)
        if event.reasoning_tokens:
            amounts[3].append(event.reasoning_tokens)
    TOKEN_USAGE.observe(
        ((OPERATIONS.get(endpoint, endpoint), provider, model, kind), listed_amounts)
        for (endpoint, provider, model), per_kind in calls.items()
        for kind, listed_amounts in zip(_TOKEN_TYPES, per_kind, strict=True)
        if listed_amounts
    )
    for (model, team), values in costs.items():
        amount = sum(map(_money, values), Decimal(0))
        if amount > 0:
            COST.labels(model, team).inc(float(amount))


class LagWatch:
    """Every few seconds, how many usage events wait for the durable consumer and how old
    the oldest is: two small JetStream API requests a tick, whatever the backlog."""

    def __init__(self, js: JetStreamContext, durable: str, every: float = 5.0) -> None:
        self._js = js
        self._durable = durable
        self._every = every
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="usage-lag")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def check(self) -> None:
        """Update the gauges; on a NATS error keep their last values."""
        try:
            info = await self._js.consumer_info(subjects.USAGE_STREAM, self._durable)
        except (NatsError, TimeoutError) as exc:
            log.debug("usage consumer info failed: %r", exc)
            return
        pending = (info.num_pending or 0) + (info.num_ack_pending or 0)
        PENDING.set(pending)
        if not pending:
            OLDEST_PENDING_AGE.set(0)
            return
        try:
            age = await self._oldest_age(info)
        except (NatsError, TimeoutError) as exc:
            log.debug("oldest pending usage event not read: %r", exc)
            return
        OLDEST_PENDING_AGE.set(age)

    async def _oldest_age(self, info: ConsumerInfo) -> float:
        # Everything up to the ack floor is stored; the first event past it (past any gap
        # left by the stream's max age) is the oldest one waiting.
        floor = (info.ack_floor.stream_seq if info.ack_floor else None) or 0
        msg = await self._js.get_msg(subjects.USAGE_STREAM, seq=floor + 1, next=True,
                                     subject=info.config.filter_subject or subjects.USAGE_SUBJECTS)
        if msg.time is None:
            return 0.0
        return max(0.0, (datetime.now(UTC) - msg.time).total_seconds())

    async def _run(self) -> None:
        while True:
            try:
                await self.check()
            except Exception:
                log.warning("usage consumer lag check failed", exc_info=True)
            await asyncio.sleep(self._every)
