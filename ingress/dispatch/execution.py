"""Running a request's attempts until one starts answering: failover, retries, fallbacks.

For the requested model, the plan's deployments are tried in order; a deployment-level
failure moves on to the next at once. When the whole group has failed, a *retry round*
re-plans the group after a backoff, as many times as the error class allows
(:mod:`ingress.routing.retry`). When the model's retries are spent, the configured fallback models
are tried the same way, in order. Everything stops at the request's deadline.

All of this happens only before the client has seen any content: once a chunk is relayed,
the answer belongs to that deployment, and a later error ends the stream (in the relay).

Every attempt is admitted first (rate limits and budget reservation) under its own
number, so admission ids (``<request>:<attempt>``) and usage events are per attempt and a
failed-over request shows its whole path.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from opentelemetry.trace import Status, StatusCode

from core.telemetry import tracing
from ingress.admission.gatekeeper import DeploymentBusy, Ticket
from ingress.dispatch.abandon import Settle, abandon
from ingress.dispatch.capacity import CapacityWait
from ingress.dispatch.dispatcher import (
    Disconnected,
    Dispatcher,
    Frame,
    NoWorker,
    WorkerBusy,
    WorkerSilent,
)
from ingress.dispatch.lost import Lost, Silence
from ingress.dispatch.observed import ObservedReply
from ingress.errors import ApiError
from ingress.metrics import FALLBACKS, RETRIES
from ingress.routing.complexity import Decision, RouteNote, note
from ingress.routing.router import Plan, Router
from ingress.spans import attempt_span
from schemas.config import Deployment
from schemas.errors import FAILOVER, ErrorInfo, ErrorKind
from schemas.frames import FrameKind
from schemas.infer import Endpoint, InferRequest

log = logging.getLogger("aigw.ingress")

Admit = Callable[[Deployment, int], Awaitable[Ticket]]


@dataclass(frozen=True, slots=True)
class Started:
    """An attempt whose first meaningful frame has arrived."""

    reply: ObservedReply
    first: Frame
    deployment: Deployment
    ticket: Ticket
    # When the attempt was sent (``time.monotonic()``).
    sent_at: float
    # Accounts the attempt if its worker goes silent later (see :mod:`ingress.dispatch.lost`).
    lost: Lost | None = None
    # The complexity router's tier for this attempt, and why.
    route: RouteNote | None = None


@dataclass(frozen=True, slots=True)
class Caller:
    key_id: str | None = None
    team_id: str | None = None
    end_user: str | None = None
    metadata: dict[str, str] | None = None
    # Which model aliases this caller may use: a fallback it may not use is skipped.
    may_use: Callable[[str], bool] | None = None
    # Protocol headers a native upstream call keeps (schemas.infer.InferRequest.headers).
    headers: dict[str, str] | None = None


class _DeadlinePassed(Exception):
    pass


def _deadline_error(timeout: float) -> ApiError:
    return ApiError(504, f"the request did not complete within its {timeout:g} s deadline",
                    type="timeout_error", code="deadline_exceeded")


class _Run:
    """One request's attempts, numbered across retries and fallbacks."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        router: Router | None,
        *,
        request_id: str,
        endpoint: Endpoint,
        body: dict[str, Any],
        stream: bool,
        heartbeat_interval: float,
        heartbeat_timeout: float,
        admit: Admit,
        settle: Settle,
        lost: Lost | None,
        caller: Caller,
    ) -> None:
        self.dispatcher = dispatcher
        self.router = router
        self.request_id = request_id
        self.endpoint = endpoint
        self.body = body
        self.stream = stream
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.admit = admit
        self.settle = settle
        self.lost = lost
        self.caller = caller
        self.attempts = 0
        self.route: Decision | None = None
        self.last: ErrorInfo | None = None
        self.busy: str | None = None
        self.loop = asyncio.get_running_loop()
        timeout = router.settings.timeout if router is not None else None
        self.timeout = timeout
        self.deadline = self.loop.time() + timeout if timeout is not None else None

    def remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - self.loop.time()

    def give_up(self, model: str) -> ApiError:
        if self.last is not None:
            return ApiError.from_info(self.last)
        return ApiError(429, f"every deployment of {model} is at its rate limit ({self.busy})",
                        type="requests", code="rate_limit_exceeded",
                        headers={"retry-after": "1"})

    async def first_frame(self, reply: ObservedReply) -> Frame:
        remaining = self.remaining()
        if remaining is None:
            return await reply.next_content(self.heartbeat_timeout)
        try:
            async with asyncio.timeout(remaining):
                return await reply.next_content(self.heartbeat_timeout)
        except TimeoutError:
            raise _DeadlinePassed() from None

    async def attempt(self, deployment: Deployment, model: str) -> Started | bool:
        """One attempt: Started, True to go on to the next deployment, False to stop
        trying this model (the request itself is at fault)."""
        if not tracing.enabled:
            return await self._attempt(deployment, model)
        with attempt_span(self.endpoint.value, model, deployment.provider,
                          deployment.upstream_model, self.request_id, self.attempts) as span:
            outcome = await self._attempt(deployment, model)
            if not isinstance(outcome, Started) and self.last is not None:
                span.set_attribute("error.type", self.last.code or self.last.kind.value)
                span.set_status(Status(StatusCode.ERROR))
            return outcome

    async def _attempt(self, deployment: Deployment, model: str) -> Started | bool:
        attempt = self.attempts
        self.attempts += 1
        try:
            ticket = await self.admit(deployment, attempt)
        except DeploymentBusy as exc:
            self.busy = str(exc)
            return True
        route = (note(self.route, deployment, self.router.settings.complexity)
                 if self.route is not None and self.router is not None else None)
        request = InferRequest(
            request_id=self.request_id,
            attempt=attempt,
            endpoint=self.endpoint,
            deployment_id=deployment.id,
            model_alias=model,
            body=self.body,
            stream=self.stream,
            heartbeat_interval=self.heartbeat_interval,
            key_id=self.caller.key_id,
            team_id=self.caller.team_id,
            end_user=self.caller.end_user,
            metadata=self.caller.metadata or {},
            headers=self.caller.headers or {},
            route_tier=route.tier if route else None,
            route_score=route.score if route else None,
            route_reason=route.reason if route else None,
        )
        waiting: CapacityWait | None = None
        resent = False
        try:
            while True:
                sent_at = time.monotonic()
                try:
                    sent = await self.dispatcher.send(request, deployment.provider)
                except Disconnected as exc:
                    # Nothing reached a worker. Not the deployment's fault: no breaker counts
                    # it, and the next deployment is refused the same way, at once.
                    self.settle(ticket, 0, Decimal(0))
                    self.last = ErrorInfo.of(ErrorKind.NO_WORKER, str(exc),
                                             code="nats_unavailable")
                    return True
                except BaseException:
                    self.settle(ticket, 0, Decimal(0))
                    raise
                reply = ObservedReply(sent, self.router, deployment.id)
                try:
                    frame = await self.first_frame(reply)
                except WorkerBusy:
                    reply.close()  # nothing started: wait for a worker, then send again
                    if waiting is None:
                        waiting = CapacityWait(deployment.provider,
                                               self.dispatcher.capacity_wait, self.remaining())
                    try:
                        if await waiting.pause():
                            continue
                    except BaseException:
                        self.settle(ticket, 0, Decimal(0))
                        raise
                    self.settle(ticket, 0, Decimal(0))
                    self.last = waiting.error()
                    return True
                except NoWorker as exc:
                    reply.close()
                    self.settle(ticket, 0, Decimal(0))
                    self.last = ErrorInfo.of(ErrorKind.NO_WORKER, str(exc), code="no_worker")
                    return True
                except WorkerSilent as exc:
                    if not (exc.heard or resent or not self.dispatcher.connected):
                        # Not even the heartbeat a worker sends on taking an attempt came
                        # back: it most likely went down with the NATS node that carried
                        # it, and no upstream was called. Sent once more (same reservation):
                        # another node, another worker. Under a number of its own: if only
                        # the heartbeat was lost, the first copy's worker calls the upstream
                        # too, and its usage event must not be taken for the resent one's
                        # duplicate (same id) and dropped.
                        reply.close()
                        resent = True
                        request = request.model_copy(update={"attempt": self.attempts})
                        self.attempts += 1
                        log.info("attempt %d of %s: never reached a worker of %s; sending "
                                 "it again as attempt %d", attempt, self.request_id,
                                 deployment.provider, request.attempt)
                        continue
                    # Before the cancel's await: whether NATS is connected tells a lost worker.
                    accounted = self.lost is not None and self.lost(
                        Silence(request, deployment, ticket, exc, sent_at))
                    await reply.cancel()
                    if not accounted:
                        # The worker may have called the upstream: hold the reservation as
                        # spent.
                        self.settle(ticket, 0, ticket.reserve_cost)
                    self.last = ErrorInfo.of(
                        ErrorKind.TIMEOUT, f"{exc} (provider {deployment.provider})",
                        code="worker_timeout")
                    log.info("attempt %d of %s: worker silent on %s, trying the next "
                             "deployment", attempt, self.request_id, deployment.id)
                    return True
                except _DeadlinePassed:
                    await reply.cancel()
                    # The worker may have called the upstream: hold the reservation as spent.
                    self.settle(ticket, 0, ticket.reserve_cost)
                    assert self.timeout is not None
                    raise _deadline_error(self.timeout) from None
                except BaseException:
                    # The caller is gone (cancelled) or we failed: the worker may be calling
                    # the upstream; stop it, and settle with what it reports.
                    abandon(reply, ticket, self.settle)
                    raise
                break
        finally:
            if waiting is not None:
                waiting.close()
        if frame.kind is FrameKind.ERROR:
            reply.close()
            failure = frame.error()
            self.settle(ticket, failure.usage.total_tokens if failure.usage else 0,
                        failure.cost)
            self.last = failure.error
            if failure.chunks_sent:
                raise ApiError.from_info(failure.error)
            log.info("attempt %d of %s on %s failed (%s)", attempt, self.request_id,
                     deployment.id, failure.error.kind.value)
            return failure.error.kind in FAILOVER
        if self.router is not None:
            self.router.health.succeeded(deployment.id)
        return Started(reply=reply, first=frame, deployment=deployment, ticket=ticket,
                       sent_at=sent_at, lost=self.lost, route=route)

    def check_deadline(self) -> None:
        remaining = self.remaining()
        if remaining is not None and remaining <= 0:
            if self.last is not None:
                raise ApiError.from_info(self.last)
            assert self.timeout is not None
            raise _deadline_error(self.timeout)

    async def round(self, plan: list[Deployment], model: str, forced: bool) -> Started | None:
        """Each deployment of the plan once, until one starts answering."""
        skipped: list[Deployment] = []
        attempted = False
        for deployment in plan:
            if (self.router is not None and not self.router.health.acquire(deployment.id)
                    and not forced):
                skipped.append(deployment)  # another request holds its probe
                continue
            self.check_deadline()
            attempted = True
            outcome = await self.attempt(deployment, model)
            if isinstance(outcome, Started):
                return outcome
            if not outcome:
                return None
        if skipped and not attempted:
            # Every probe was taken between planning and now: try rather than fail untried.
            return await self.round(skipped, model, True)
        return None

    async def model(self, plan: list[Deployment], model: str) -> Started | None:
        """A model's rounds: the plan, then retries while the error class allows them."""
        forced = plan.forced if isinstance(plan, Plan) else True
        self.route = plan.route if isinstance(plan, Plan) else None
        retries = 0
        while True:
            started = await self.round(plan, model, forced)
            if started is not None:
                return started
            if self.router is None or self.last is None:
                return None
            wait = self.router.retry.next_wait(retries, self.last, self.remaining())
            if wait is None:
                return None
            retries += 1
            RETRIES.labels(model).inc()
            log.info("%s: retry %d on %s in %.2f s after %s", self.request_id, retries,
                     model, wait, self.last.kind.value)
            await asyncio.sleep(wait)
            # A tier the classifier model chose stands for the retries too.
            judged = self.route.tier if self.route and self.route.classifier else None
            fresh = self.router.plan(model, self.body, judged)
            plan, forced, self.route = fresh, fresh.forced, fresh.route


async def start(
    dispatcher: Dispatcher,
    plan: list[Deployment],
    *,
    request_id: str,
    endpoint: Endpoint,
    model_alias: str,
    body: dict[str, Any],
    stream: bool,
    heartbeat_interval: float,
    heartbeat_timeout: float,
    admit: Admit,
    settle: Settle,
    lost: Lost | None = None,
    caller: Caller = Caller(),
) -> Started:
    """Run attempts for ``plan`` (and, when it is a :class:`Plan`, its retries and
    fallbacks); return the first that answers, or raise the last failure as an
    :class:`ApiError`. ``lost`` accounts an attempt whose worker goes silent; without it,
    such an attempt's reservation is held as spent."""
    router = plan.router if isinstance(plan, Plan) else None
    run = _Run(dispatcher, router, request_id=request_id, endpoint=endpoint, body=body,
               stream=stream, heartbeat_interval=heartbeat_interval,
               heartbeat_timeout=heartbeat_timeout, admit=admit, settle=settle, lost=lost,
               caller=caller)
    started = await run.model(plan, model_alias)
    if started is not None:
        return started
    tried = {model_alias}
    model = model_alias
    while router is not None and run.last is not None:
        # The requested model's chain, in order, chosen by the latest failure's class.
        chain = router.fallbacks(model_alias, run.last.kind)
        may_use = caller.may_use
        model = next(
            (m for m in chain if m not in tried and (may_use is None or may_use(m))), "")
        if not model:
            break
        tried.add(model)
        FALLBACKS.labels(model_alias).inc()
        log.info("%s: falling back from %s to %s after %s", request_id, model_alias, model,
                 run.last.kind.value)
        started = await run.model(router.plan(model, body), model)
        if started is not None:
            return started
    raise run.give_up(model_alias)
