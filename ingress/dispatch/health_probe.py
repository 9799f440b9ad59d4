"""Background health checks: LiteLLM's ``general_settings.background_health_checks``.

When the config turns them on, one replica probes every deployment of the current config
once every ``health_check_interval`` seconds, through the normal dispatch path: a chat
deployment gets a one-token ``ping``, an embedding deployment embeds ``ping``. A probe
is an ordinary upstream call, so its worker publishes a usage event; the event carries no
key or team (nobody is charged) and the metadata ``aigw_probe: 1``.

Which probe a deployment gets: the config's ``model_info.mode`` decides, as in LiteLLM,
and without one the model's name (:func:`is_embedding`).

A probe tells the deployment's circuit breaker what a request would: an error frame is
reported as a failed request reports it, and an answer closes an open breaker, which is
how a breaker recovers without any client request. An upstream that refuses the probe
itself (not found, invalid request: an embedding model sent a chat ping, say) says the
probe had the wrong shape, not that the deployment is unwell: the check records the
failure, the breaker is not told. A deployment that is cooling down, or whose probe
another request holds, is left alone until its cooldown is over; then the check takes
the probe the way a request would. Unlike a request, a check that the
upstream keeps busy past :data:`PROBE_TIMEOUT` counts as a timeout: a health check is
there to notice exactly that.

Which replica probes: the one that holds ``probe_lease`` in the health bucket
(:meth:`HealthBoard.take_probe_lease`). Its holder renews it each round; another replica
takes over once a whole interval passes without renewal. So N replicas cost the
upstreams one round per interval, not N.

The config is read on every tick, never kept: a hot reload can turn the checks on or off,
change the interval, or add and remove deployments.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

from ingress.dispatch.dispatcher import Disconnected, Dispatcher, NoWorker, Reply, WorkerSilent
from ingress.routing.health_board import HealthCheck
from ingress.routing.router import Router
from ingress.settings import IngressSettings
from schemas.config import Deployment, GatewayConfig
from schemas.errors import ErrorInfo, ErrorKind
from schemas.frames import FrameKind
from schemas.infer import Endpoint, InferRequest

log = logging.getLogger("aigw.health")

PROBE_METADATA = {"aigw_probe": "1"}
PROBE_PREFIX = "probe-"
# Probes out at once: enough to get through a long model list in a round, few enough not
# to crowd the workers' real traffic.
CONCURRENCY = 4
# The longest a probe waits for its answer (less when the deployment's own timeout is).
PROBE_TIMEOUT = 30.0
# How often a loop whose checks are off looks at the config again.
IDLE_TICK = 5.0


# Errors that say the upstream did not take the probe's shape (a chat ping sent to a model
# that only embeds, say), not that the deployment is unwell: the breaker is not told.
PROBE_REFUSED = frozenset({ErrorKind.NOT_FOUND, ErrorKind.INVALID_REQUEST})


def is_embedding(deployment: Deployment) -> bool:
    """Whether the deployment only embeds. The config's ``model_info.mode`` says so, as
    LiteLLM asks it; without one, the upstream model name or the alias does, as most
    embedding models' names do (``text-embedding-3-small``, ``nomic-embed-text``,
    ``embed-english-v3.0``, ``gemini-embedding-001``). One that does not (``voyage-3``,
    ``bge-m3``) gets a chat ping, which its upstream refuses (:data:`PROBE_REFUSED`)."""
    if deployment.mode is not None:
        return deployment.mode == "embedding"
    return any("embed" in name.lower()
               for name in (deployment.upstream_model, deployment.model_name))


def probe_body(deployment: Deployment) -> tuple[Endpoint, dict[str, Any]]:
    """The endpoint and body of the cheapest call that shows the deployment answers."""
    mode = deployment.mode
    if mode == "rerank" or (mode is None and "rerank" in deployment.upstream_model.lower()):
        return Endpoint.RERANK, {"model": deployment.model_name, "query": "ping",
                                 "documents": ["ping"]}
    if mode == "moderation" or (mode is None and "moderation" in deployment.upstream_model.lower()):
        return Endpoint.MODERATIONS, {"model": deployment.model_name, "input": "ping"}
    if is_embedding(deployment):
        return Endpoint.EMBEDDINGS, {"model": deployment.model_name, "input": "ping"}
    return Endpoint.CHAT, {"model": deployment.model_name, "max_tokens": 1,
                           "messages": [{"role": "user", "content": "ping"}]}


def probe_request(deployment: Deployment, heartbeat_interval: float) -> InferRequest:
    endpoint, body = probe_body(deployment)
    return InferRequest(
        request_id=f"{PROBE_PREFIX}{uuid.uuid4().hex}",
        endpoint=endpoint,
        deployment_id=deployment.id,
        model_alias=deployment.model_name,
        body=body,
        heartbeat_interval=heartbeat_interval,
        metadata=dict(PROBE_METADATA),
    )


class Probed(Protocol):
    """What the checks read of the running gateway (:class:`ingress.state.Gateway`), each
    time anew: a reload replaces the config."""

    @property
    def config(self) -> GatewayConfig: ...
    @property
    def router(self) -> Router: ...
    @property
    def dispatcher(self) -> Dispatcher: ...
    @property
    def settings(self) -> IngressSettings: ...


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one probe ended. ``fault`` is what the breaker is told; None when the probe
    says nothing about the deployment (no worker, NATS away, the probe refused)."""

    ok: bool
    error: str | None = None
    fault: ErrorInfo | None = None


async def _last_frame(reply: Reply, heartbeat_timeout: float) -> Outcome:
    while True:
        frame = await reply.next_content(heartbeat_timeout)
        if frame.kind is FrameKind.DONE:
            return Outcome(ok=True)
        if frame.kind is FrameKind.ERROR:
            failure = frame.error().error
            error = f"{failure.kind.value}: {failure.message}"
            if failure.kind in PROBE_REFUSED:
                return Outcome(ok=False, error=f"{error} (the probe was refused; not "
                                               "counted against the deployment)")
            return Outcome(ok=False, error=error, fault=failure)


class HealthProbe:
    """The background task of one ingress replica."""

    def __init__(self, gateway: Probed, *, holder: str | None = None) -> None:
        self._gateway = gateway
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._task: asyncio.Task[None] | None = None
        self._last_round: float | None = None
        # Rounds this replica ran (tests, logs).
        self.rounds = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="health-probe")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            settings = self._gateway.config.health_checks
            now = loop.time()
            due = (now if self._last_round is None
                   else self._last_round + settings.interval)
            if not settings.enabled:
                self._last_round = None
                await asyncio.sleep(IDLE_TICK)
                continue
            if now < due:
                # Wake by IDLE_TICK at the latest, so a reload's shorter interval counts.
                await asyncio.sleep(min(due - now, IDLE_TICK))
                continue
            self._last_round = now
            try:
                await self.tick(settings.interval)
            except Exception:
                log.exception("health check round failed")

    async def tick(self, interval: float) -> bool:
        """One round, when this replica holds the lease; whether it ran."""
        board = self._gateway.router.health
        if not await board.take_probe_lease(self.holder, interval):
            return False
        self.rounds += 1
        await self.round()
        return True

    async def round(self) -> None:
        """Probe every deployment of the current config once, a few at a time."""
        deployments = list(self._gateway.config.deployments)
        limit = asyncio.Semaphore(CONCURRENCY)

        async def one(deployment: Deployment) -> None:
            async with limit:
                await self.probe(deployment)

        await asyncio.gather(*(one(d) for d in deployments))

    async def probe(self, deployment: Deployment) -> HealthCheck | None:
        """Probe one deployment, report to its breaker and record the check; None when its
        breaker keeps it out (cooling down, or another request holds its probe). Never
        raises but for cancellation."""
        board = self._gateway.router.health
        if not board.acquire(deployment.id):
            return None
        at = time.time()
        started = time.perf_counter()
        try:
            outcome = await self._call(deployment)
        except Exception as exc:  # a probe must not end the loop, whatever went wrong
            log.exception("health check of %s failed", deployment.id)
            outcome = Outcome(ok=False, error=f"probe failed: {exc!r}")
        latency_ms = round((time.perf_counter() - started) * 1000, 3)
        if outcome.ok:
            board.succeeded(deployment.id)
        elif outcome.fault is not None:
            board.failed(deployment.id, outcome.fault)
        check = HealthCheck(deployment_id=deployment.id, at=at, ok=outcome.ok,
                            latency_ms=latency_ms, error=outcome.error)
        await board.record_check(check)
        return check

    async def _call(self, deployment: Deployment) -> Outcome:
        settings = self._gateway.settings
        request = probe_request(deployment, settings.heartbeat_interval)
        timeout = min(PROBE_TIMEOUT, deployment.timeout)
        try:
            reply = await self._gateway.dispatcher.send(request, deployment.provider)
        except Disconnected as exc:
            return Outcome(ok=False, error=str(exc))
        try:
            async with asyncio.timeout(timeout):
                return await _last_frame(reply, settings.heartbeat_timeout)
        except TimeoutError:
            with contextlib.suppress(Exception):
                await reply.cancel()
            message = f"no answer within {timeout:g} s"
            return Outcome(ok=False, error=f"timeout: {message}",
                           fault=ErrorInfo.of(ErrorKind.TIMEOUT, message,
                                              code="health_check_timeout",
                                              provider=deployment.provider))
        except NoWorker as exc:
            return Outcome(ok=False, error=str(exc))
        except WorkerSilent as exc:
            # Like a request's: the worker went away, which says nothing of the upstream.
            return Outcome(ok=False, error=str(exc))
        finally:
            reply.close()
