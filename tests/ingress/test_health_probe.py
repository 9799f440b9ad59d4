"""Background health checks: what is probed and how, what a probe tells the breaker, and
what replicas share through KV.

The probe rounds run against scripted workers: a dispatcher double answers each probe
with the frames a worker would send for its deployment's upstream model."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import nats
import pytest

from cli.nats_server import NatsServer
from ingress.dispatch.dispatcher import Dispatcher, Reply
from ingress.dispatch.health_probe import (
    CONCURRENCY,
    PROBE_PREFIX,
    HealthProbe,
    is_embedding,
    probe_body,
    probe_request,
)
from ingress.routing.breaker import Availability
from ingress.routing.health_board import HealthBoard, HealthCheck, ProbeLease, may_take
from ingress.routing.router import Router
from ingress.settings import IngressSettings
from schemas.config import (
    ConfigError,
    Deployment,
    GatewayConfig,
    RouterSettings,
    parse_config,
)
from schemas.errors import ErrorInfo, ErrorKind
from schemas.frames import KIND_HEADER, DoneFrame, ErrorFrame, FrameKind
from schemas.health import CircuitState
from schemas.infer import Endpoint, InferRequest
from schemas.usage import TokenUsage


def deployment(alias: str, model: str) -> Deployment:
    config = parse_config({"model_list": [{"model_name": alias, "litellm_params": {
        "model": model, "api_base": "http://upstream/v1"}}]}, {})
    return config.deployments[0]


@pytest.mark.parametrize(("alias", "model", "embeds"), [
    ("gpt-4o-mini", "openai/gpt-4o-mini", False),
    ("claude", "anthropic/claude-sonnet-4-20250514", False),
    ("text-embedding-3-small", "openai/text-embedding-3-small", True),
    ("vectors", "ollama/nomic-embed-text", True),
    ("cohere-vectors", "openai_compatible/embed-english-v3.0", True),
    ("mock-embedding", "mock/mock-embedding", True),
    ("embedder", "hosted_vllm/bge-m3", True),
])
def test_a_deployment_embeds_when_its_model_or_alias_says_so(
    alias: str, model: str, embeds: bool
) -> None:
    assert is_embedding(deployment(alias, model)) is embeds


@pytest.mark.parametrize(("alias", "model", "mode", "embeds"), [
    ("vectors", "openai_compatible/voyage-3", "embedding", True),
    ("local-vectors", "ollama/all-minilm", "embedding", True),
    ("embedder", "hosted_vllm/bge-m3", "embedding", True),
    # the config's word wins over the name
    ("embed-chat", "openai/embed-chat-v1", "chat", False),
    ("writer", "openai/gpt-3.5-turbo-instruct", "completion", False),
])
def test_a_deployment_embeds_when_its_model_info_mode_says_so(
    alias: str, model: str, mode: str, embeds: bool
) -> None:
    config = parse_config({"model_list": [{
        "model_name": alias, "model_info": {"mode": mode},
        "litellm_params": {"model": model, "api_base": "http://upstream/v1"}}]}, {})
    [d] = config.deployments
    assert d.mode == mode
    assert is_embedding(d) is embeds
    assert probe_body(d)[0] is (Endpoint.EMBEDDINGS if embeds else Endpoint.CHAT)


def test_a_model_info_mode_that_is_no_string_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"model_info\.mode"):
        parse_config({"model_list": [{
            "model_name": "vectors", "model_info": {"mode": ["embedding"]},
            "litellm_params": {"model": "openai/voyage-3", "api_base": "http://u/v1"}}]}, {})


def test_a_chat_deployment_is_probed_with_a_one_token_ping() -> None:
    endpoint, body = probe_body(deployment("gpt-4o-mini", "openai/gpt-4o-mini"))
    assert endpoint is Endpoint.CHAT
    assert body == {"model": "gpt-4o-mini", "max_tokens": 1,
                    "messages": [{"role": "user", "content": "ping"}]}


def test_an_embedding_deployment_is_probed_with_an_embedding_of_ping() -> None:
    endpoint, body = probe_body(deployment("emb", "openai/text-embedding-3-small"))
    assert endpoint is Endpoint.EMBEDDINGS
    assert body == {"model": "emb", "input": "ping"}


@pytest.mark.parametrize(("model", "mode"), [
    ("cohere/rerank-v3.5", None), ("hosted_vllm/bge-reranker-v2-m3", None),
    ("hosted_vllm/bge-m3", "rerank")])
def test_a_reranker_is_probed_with_a_rerank_of_ping(model: str, mode: str | None) -> None:
    config = parse_config({"model_list": [{
        "model_name": "ranker", "model_info": {"mode": mode},
        "litellm_params": {"model": model, "api_base": "http://upstream/v1"}}]}, {})
    endpoint, body = probe_body(config.deployments[0])
    assert endpoint is Endpoint.RERANK
    assert body == {"model": "ranker", "query": "ping", "documents": ["ping"]}


def test_a_moderation_model_is_probed_with_a_moderation_of_ping() -> None:
    endpoint, body = probe_body(deployment("mod", "openai/omni-moderation-latest"))
    assert endpoint is Endpoint.MODERATIONS
    assert body == {"model": "mod", "input": "ping"}


def test_a_probe_is_charged_to_nobody_and_marked_as_a_probe() -> None:
    d = deployment("gpt-4o-mini", "openai/gpt-4o-mini")
    first, second = probe_request(d, 0.5), probe_request(d, 0.5)
    assert first.request_id.startswith(PROBE_PREFIX)
    assert first.request_id != second.request_id
    assert first.deployment_id == d.id and first.model_alias == "gpt-4o-mini"
    assert first.key_id is None and first.team_id is None and first.end_user is None
    assert first.metadata == {"aigw_probe": "1"}
    assert not first.stream and first.heartbeat_interval == 0.5


def test_the_lease_is_free_when_nobody_holds_it_its_time_is_up_or_it_is_ours() -> None:
    held = ProbeLease(holder="a", until=100.0)
    assert may_take(None, "a", 50.0)
    assert may_take(held, "a", 50.0)  # the holder renews
    assert not may_take(held, "b", 99.9)
    assert may_take(held, "b", 100.0)


# ---- probe rounds against scripted workers -----------------------------------------------


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


# ---- shared through a real NATS KV -------------------------------------------------------


Clock = list[float]


@pytest.fixture
async def boards(nats_server: NatsServer) -> AsyncIterator[tuple[HealthBoard, HealthBoard,
                                                                  Clock]]:
    """Two replicas' boards on one fresh bucket, with a clock the test moves."""
    clock = [1000.0]
    bucket = f"health_probe_{uuid.uuid4().hex[:12]}"
    settings = RouterSettings(allowed_fails=0, cooldown_time=10)
    ncs = [await nats.connect(nats_server.url) for _ in range(2)]
    a, b = (HealthBoard(nc, settings, bucket=bucket, clock=lambda: clock[0]) for nc in ncs)
    await a.start()
    await b.start()
    yield a, b, clock
    for board in (a, b):
        await board.stop()
    for nc in ncs:
        await nc.close()


async def test_one_replica_holds_the_probe_lease_until_it_stops_renewing(
    boards: tuple[HealthBoard, HealthBoard, Clock],
) -> None:
    a, b, clock = boards
    assert await a.take_probe_lease("a", 60)
    assert not await b.take_probe_lease("b", 60)
    clock[0] += 59
    assert await a.take_probe_lease("a", 60)  # renewed before its time was up
    clock[0] += 59
    assert not await b.take_probe_lease("b", 60)
    clock[0] += 1  # a let a whole interval pass: b takes over
    assert await b.take_probe_lease("b", 60)
    assert not await a.take_probe_lease("a", 60)


async def test_of_replicas_taking_the_lease_at_once_one_wins(
    boards: tuple[HealthBoard, HealthBoard, Clock],
) -> None:
    a, b, _ = boards
    won = await asyncio.gather(a.take_probe_lease("a", 60), b.take_probe_lease("b", 60))
    assert sorted(won) == [False, True]
    holder, other = ((a, "a"), (b, "b")) if won[0] else ((b, "b"), (a, "a"))
    again = await asyncio.gather(holder[0].take_probe_lease(holder[1], 60),
                                 other[0].take_probe_lease(other[1], 60))
    assert list(again) == [True, False]  # the winner keeps it


async def test_a_check_recorded_on_one_replica_is_seen_by_the_other(
    boards: tuple[HealthBoard, HealthBoard, Clock],
) -> None:
    a, b, _ = boards
    check = HealthCheck(deployment_id="dep#1", at=1000.0, ok=False, latency_ms=12.5,
                        error="server: boom")
    await a.record_check(check)
    assert a.last_check("dep#1") == check
    await _until(lambda: b.last_check("dep#1") == check)
    newer = check.model_copy(update={"at": 1001.0, "ok": True, "error": None})
    await a.record_check(newer)
    await _until(lambda: b.last_check("dep#1") == newer)
    # neither the checks nor the lease read as breakers
    assert await a.take_probe_lease("a", 60)
    assert a.snapshot() == {} and b.snapshot() == {}
    assert b.availability("dep#1") is Availability.HEALTHY


async def _until(check: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)
