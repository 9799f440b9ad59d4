"""Accounting for an attempt whose worker went silent.

The worker that makes an upstream call publishes its usage event. A worker killed, or
silent past the heartbeat deadline, after it received an attempt never does, though the
upstream may well have been called and billed. So when the ingress gives up on an attempt
for that reason (before its first frame or in the middle of its answer), it publishes the
event itself: status ``error``, error type ``timeout``, HTTP 504, who and what from the
request and the deployment, and tokens estimated as a worker estimates a stream cut short
(:mod:`schemas.estimate`): the prompt (an embedding's input), plus the output the client
was sent, if any; ``usage_estimated`` says so. The estimate is priced with the price
table like a worker's.

**First event wins.** The event carries the id the worker would have given it
(``event_id(request_id, attempt)``). If the worker was only slow (a blocked event loop, a
partition between it and NATS) and publishes its own event later, JetStream
(``Nats-Msg-Id``, within its duplicate window) and ClickHouse drop that one as a duplicate,
and the call stays accounted at the estimate although the worker's figures were exact.
That is the price of the alternative's risks: waiting for the worker's event would hold a
timer per lost attempt and lose the call whenever the ingress stopped meanwhile, and a
second id would count a slow worker's call twice. Once, roughly, beats never or twice.

Not every give-up is a lost worker:

- an attempt never heard from: a worker sends a heartbeat the moment it takes an attempt,
  before it calls the upstream, so silence from the start means the attempt most likely
  never reached a worker (it went down with the NATS node carrying it). Nothing was
  called; an estimate would bill the caller for nothing;

- a silence the ingress caused itself (its NATS connection is down, or frames went missing
  while NATS restarted): the worker most likely lives on, keeps its event and publishes it
  once NATS is back, with the real figures; an estimate would race it. Nothing is
  published, and the budget reservation stays held as spent, as before;
- the request's deadline passing: the worker was still heartbeating; it is told to cancel
  and accounts the call itself;
- no worker, or an error or done frame: nothing was called, or the worker reported.

The budget ticket is settled at the estimated cost rather than the whole reservation. The
reservation is the most the call could cost (the longest answer allowed); it protects the
budget while the call is in flight, not after. ClickHouse, which the live counters are
rebuilt from, holds the estimate; settling at the reservation would make the live counter
disagree with it, counting spend that no record shows, until the next rebuild.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from core.pricing import PriceTable
from ingress.admission.gatekeeper import Ticket
from ingress.dispatch.dispatcher import FramesLost, WorkerSilent
from schemas import estimate
from schemas.attempt_usage import attempt_event
from schemas.config import Deployment
from schemas.errors import ErrorInfo, ErrorKind
from schemas.infer import Endpoint, InferRequest
from schemas.usage import TokenUsage, UsageEvent

log = logging.getLogger("aigw.ingress")

HTTP_STATUS = 504


class Output:
    """What the client was sent of an attempt's answer, counted as the worker counts what
    it relays: characters of generated text, and the chunks that carried any."""

    __slots__ = ("chars", "text_chunks")

    def __init__(self) -> None:
        self.chars = 0
        self.text_chunks = 0

    def add(self, chunk: bytes) -> None:
        """Count one ``chat.completion.chunk`` as a worker sent it. The relay calls this
        for every chunk of every stream, for the rare worker lost midway: so the chunk's
        JSON is scanned, never parsed."""
        chars = estimate.raw_chunk_chars(chunk)
        if chars:
            self.chars += chars
            self.text_chunks += 1


@dataclass(frozen=True, slots=True)
class Silence:
    """An attempt the ingress gave up on because its worker went silent."""

    request: InferRequest
    deployment: Deployment
    ticket: Ticket
    cause: WorkerSilent
    # When the attempt was sent (``time.monotonic()``).
    sent_at: float
    # What the client was sent of the answer; None when nothing was.
    output: Output | None = None


# Accounts a silence when it means a lost worker; whether it did (and settled the ticket).
Lost = Callable[[Silence], bool]


def worker_lost(cause: WorkerSilent, connected: bool) -> bool:
    """Whether a silence means the worker is gone, rather than NATS failing the ingress
    (its connection down, or frames lost in a restart) while the worker lives on, or the
    attempt never reaching a worker (not even its first heartbeat came back)."""
    return connected and cause.heard and not isinstance(cause, FramesLost)


def _estimate(request: InferRequest, output: Output | None) -> TokenUsage:
    if request.endpoint in (Endpoint.EMBEDDINGS, Endpoint.MODERATIONS):  # no output tokens
        return TokenUsage(prompt_tokens=estimate.embedding_tokens(request.body),
                          estimated=True)
    if request.endpoint is Endpoint.RERANK:  # billed per search, whatever its length
        return TokenUsage(queries=1, estimated=True)
    return estimate.cut_stream(None, request.body, output.chars if output else 0,
                               output.text_chunks if output else 0)


def lost_event(
    request: InferRequest,
    deployment: Deployment,
    output: Output | None,
    latency_ms: float,
    prices: PriceTable,
) -> UsageEvent:
    """The usage event of an attempt whose worker went silent, with the id the worker's
    own event would have had."""
    usage = _estimate(request, output)
    cost = prices.cost(
        deployment.provider,
        deployment.upstream_model,
        usage,
        overrides=deployment.prices,
    )
    error = ErrorInfo.of(ErrorKind.TIMEOUT, "the worker running this attempt was lost",
                         status=HTTP_STATUS, code="worker_lost")
    return attempt_event(request, deployment.provider, deployment, usage, error,
                         cancelled=False, latency_ms=latency_ms, ttft_ms=None, cost=cost,
                         price_version=prices.version)


def account(
    silence: Silence,
    *,
    connected: bool,
    prices: PriceTable,
    publish: Callable[[UsageEvent], None],
    settle: Callable[[Ticket, int, Decimal | None], None],
) -> bool:
    """Publish the event of a lost worker's attempt and settle its ticket at the estimate;
    False, doing nothing, when the silence does not mean a lost worker."""
    if not worker_lost(silence.cause, connected):
        return False
    latency_ms = (time.monotonic() - silence.sent_at) * 1000
    event = lost_event(silence.request, silence.deployment, silence.output, latency_ms,
                       prices)
    publish(event)
    settle(silence.ticket, event.prompt_tokens + event.completion_tokens, event.cost)
    log.warning("attempt %d of %s: worker on %s lost; accounted an estimate (%d + %d "
                "tokens)", event.attempt, event.request_id, silence.deployment.id,
                event.prompt_tokens, event.completion_tokens)
    return True
