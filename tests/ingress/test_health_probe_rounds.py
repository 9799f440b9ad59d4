"""Health probe rounds against scripted workers (a dispatcher double answering each probe
with the frames a worker would send): what each check records and tells the breaker,
timeouts, concurrency, and the loop following a reloaded config."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from ingress.dispatch.dispatcher import Dispatcher, Reply
from ingress.dispatch.health_probe import (
    CONCURRENCY,
    HealthProbe,
)
from ingress.routing.breaker import Availability
from ingress.routing.health_board import HealthBoard
from ingress.routing.router import Router
from ingress.settings import IngressSettings
from schemas.config import (
    Deployment,
    GatewayConfig,
    parse_config,
)
from schemas.errors import ErrorInfo, ErrorKind
from schemas.frames import KIND_HEADER, DoneFrame, ErrorFrame, FrameKind
from schemas.health import CircuitState
from schemas.infer import Endpoint, InferRequest
from schemas.usage import TokenUsage
from tests.ingress.health_probe_waits import _until


@dataclass
class Msg:
    headers: dict[str, str]
    data: bytes


def frame(kind: FrameKind, body: bytes = b"") -> Msg:
    return Msg({KIND_HEADER: kind.value}, body)


DONE = frame(FrameKind.DONE, DoneFrame(usage=TokenUsage(prompt_tokens=1)).model_dump_json()
             .encode())


# Upstream models whose probe the worker answers with an error frame.
FAILURES: dict[str, tuple[ErrorKind, str]] = {
    "fail-500": (ErrorKind.SERVER, "upstream said 500"),
    "fail-404": (ErrorKind.NOT_FOUND, "no such endpoint for this model"),
    "fail-400": (ErrorKind.INVALID_REQUEST, "'messages' is not supported"),
}


class Workers:
    """Answer a probe by its deployment's upstream model, a little later, as a worker
    would: one of :data:`FAILURES` an error frame, ``hang`` heartbeats until cancelled,
    ``nobody`` NATS's no-responders status, anything else a done frame."""

    connected = True

    def __init__(self, config: GatewayConfig, delay: float = 0.02) -> None:
        self.config = config
        self.delay = delay
        self.sent: list[InferRequest] = []
        self.cancelled: list[str] = []
        self.open: set[str] = set()
        self.most_open = 0
        self._tasks: list[asyncio.Task[None]] = []

    async def send(self, request: InferRequest, provider: str) -> Reply:
        self.sent.append(request)
        token = str(len(self.sent))
        reply = Reply(cast(Dispatcher, self), token, provider, request)
        self.open.add(token)
        self.most_open = max(self.most_open, len(self.open))
        deployment = self.config.deployment(request.deployment_id)
        assert deployment is not None
        self._tasks.append(asyncio.create_task(self._answer(reply, token,
                                                            deployment.upstream_model)))
        return reply

    async def _answer(self, reply: Reply, token: str, model: str) -> None:
        await asyncio.sleep(self.delay)
        if model == "hang":
            while token in self.open:
                reply.put(frame(FrameKind.HEARTBEAT))  # type: ignore[arg-type]
                await asyncio.sleep(0.02)
            return
        if model == "nobody":
            msg = Msg({"Status": "503"}, b"")
        elif model in FAILURES:
            error = ErrorInfo.of(*FAILURES[model])
            msg = frame(FrameKind.ERROR, ErrorFrame(error=error).model_dump_json().encode())
        else:
            msg = DONE
        reply.put(msg)  # type: ignore[arg-type]

    def forget(self, token: str) -> None:
        self.open.discard(token)

    async def cancel(self, request_id: str) -> None:
        self.cancelled.append(request_id)


@dataclass
class Running:
    """What the probe reads of a gateway: the config (a reload replaces it), the router
    and its health board, the dispatcher, the process settings."""

    config: GatewayConfig
    router: Router
    dispatcher: Dispatcher
    settings: IngressSettings
    clock: list[float] = field(default_factory=lambda: [1000.0])

    @property
    def workers(self) -> Workers:
        return cast(Workers, self.dispatcher)


def running(models: list[str], **router_settings: Any) -> Running:
    config = parse_config({
        "model_list": [{"model_name": f"alias-{m}", "litellm_params": {
            "model": f"openai/{m.split('@')[0]}", "api_base": "http://upstream/v1",
            **({"timeout": float(m.split("@")[1])} if "@" in m else {})}} for m in models],
        "router_settings": {"allowed_fails": 0, "cooldown_time": 10, **router_settings},
        "general_settings": {"background_health_checks": True, "health_check_interval": 0.05},
    }, {})
    clock = [1000.0]
    board = HealthBoard(None, config.router, clock=lambda: clock[0])
    settings = IngressSettings.model_validate(
        {"AIGW_HEARTBEAT": 0.02, "AIGW_HEARTBEAT_TIMEOUT": 1.0})
    return Running(config, Router(config, health=board), cast(Dispatcher, Workers(config)),
                   settings, clock)


def dep(gw: Running, model: str) -> Deployment:
    return next(d for d in gw.config.deployments if d.upstream_model == model.split("@")[0])


async def test_a_round_probes_each_deployment_once_and_records_each_check() -> None:
    gw = running(["gpt-4o-mini", "fail-500", "text-embedding-3-small"])
    await HealthProbe(gw).round()
    sent = {r.deployment_id: r for r in gw.workers.sent}
    assert len(gw.workers.sent) == 3 and set(sent) == {d.id for d in gw.config.deployments}
    assert sent[dep(gw, "text-embedding-3-small").id].endpoint is Endpoint.EMBEDDINGS
    board = gw.router.health
    ok = board.last_check(dep(gw, "gpt-4o-mini").id)
    assert ok is not None and ok.ok and ok.error is None and ok.latency_ms > 0
    failed = board.last_check(dep(gw, "fail-500").id)
    assert failed is not None and not failed.ok
    assert failed.error == "server: upstream said 500"
    # the failure reached the breaker as a request's would: with no failure allowed, open
    assert board.availability(dep(gw, "fail-500").id) is Availability.COOLING
    assert board.availability(dep(gw, "gpt-4o-mini").id) is Availability.HEALTHY
    assert not gw.workers.open  # every reply was let go


async def test_a_cooling_deployment_is_left_alone_until_its_probe_closes_it() -> None:
    gw = running(["gpt-4o-mini"])
    d = dep(gw, "gpt-4o-mini")
    board = gw.router.health
    board.failed(d.id, ErrorInfo.of(ErrorKind.SERVER, "boom"))
    probe = HealthProbe(gw)
    assert await probe.probe(d) is None
    assert gw.workers.sent == []
    gw.clock[0] += 10  # cooldown over: the check is the one probe
    check = await probe.probe(d)
    assert check is not None and check.ok
    entry = board.entry(d.id)
    assert entry is not None and entry.state is CircuitState.CLOSED
    assert board.availability(d.id) is Availability.HEALTHY


@pytest.mark.parametrize(("model", "error"), [
    ("fail-404", "not_found: no such endpoint for this model"),
    ("fail-400", "invalid_request: 'messages' is not supported"),
])
async def test_a_probe_the_upstream_refuses_as_malformed_is_recorded_but_leaves_the_breaker(
    model: str, error: str
) -> None:
    # e.g. a chat ping sent to an embedding model the config did not mark as one
    gw = running([model])
    d = dep(gw, model)
    check = await HealthProbe(gw).probe(d)
    assert check is not None and not check.ok
    assert check.error is not None and check.error.startswith(error)
    assert gw.router.health.last_check(d.id) == check
    assert gw.router.health.entry(d.id) is None
    assert gw.router.health.availability(d.id) is Availability.HEALTHY


async def test_no_worker_is_recorded_but_says_nothing_about_the_deployment() -> None:
    gw = running(["nobody"])
    d = dep(gw, "nobody")
    check = await HealthProbe(gw).probe(d)
    assert check is not None and not check.ok
    assert check.error is not None and "no worker" in check.error
    assert gw.router.health.entry(d.id) is None


async def test_an_upstream_busy_past_the_timeout_counts_as_a_timeout_and_is_cancelled(
) -> None:
    gw = running(["hang@0.2"])
    d = dep(gw, "hang")
    check = await HealthProbe(gw).probe(d)
    assert check is not None and not check.ok
    assert check.error == "timeout: no answer within 0.2 s"
    assert gw.workers.cancelled == [gw.workers.sent[0].request_id]
    assert gw.router.health.availability(d.id) is Availability.COOLING


async def test_a_round_keeps_at_most_a_few_probes_out_at_once() -> None:
    gw = running([f"model-{i}" for i in range(3 * CONCURRENCY)])
    await HealthProbe(gw).round()
    assert len(gw.workers.sent) == 3 * CONCURRENCY
    assert gw.workers.most_open == CONCURRENCY


async def test_the_loop_probes_every_interval_and_follows_a_reloaded_config() -> None:
    gw = running(["gpt-4o-mini"])
    probe = HealthProbe(gw)
    probe.start()
    try:
        await _until(lambda: probe.rounds >= 2)
        added = running(["gpt-4o-mini", "gpt-4.1"]).config
        gw.config = added  # a hot reload replaces the config object
        gw.router.apply(added)
        await _until(lambda: any(r.deployment_id == dep(gw, "gpt-4.1").id
                                 for r in gw.workers.sent))
    finally:
        await probe.stop()
    rounds = probe.rounds
    await asyncio.sleep(0.1)
    assert probe.rounds == rounds  # stopped
