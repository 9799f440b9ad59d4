"""Retries, failover and fallbacks in :mod:`ingress.dispatch.execution`, with scripted workers: a
dispatcher double answers each attempt with the frames its deployment is scripted for."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, cast

import pytest

from ingress.admission.gatekeeper import Ticket
from ingress.dispatch import execution
from ingress.dispatch.dispatcher import Dispatcher, Reply
from ingress.errors import ApiError
from ingress.routing.health_board import HealthBoard
from ingress.routing.router import Router
from schemas.config import Deployment, parse_config
from schemas.errors import ErrorInfo, ErrorKind
from schemas.frames import KIND_HEADER, DoneFrame, ErrorFrame, FrameKind
from schemas.infer import Endpoint, InferRequest
from schemas.usage import TokenUsage


@dataclass
class Msg:
    headers: dict[str, str]
    data: bytes


def done() -> Msg:
    body = DoneFrame(usage=TokenUsage(prompt_tokens=1, completion_tokens=1), latency_ms=12,
                     response={"ok": True})
    return Msg({KIND_HEADER: FrameKind.DONE.value}, body.model_dump_json().encode())


def error(kind: ErrorKind, retry_after: float | None = None) -> Msg:
    body = ErrorFrame(error=ErrorInfo.of(kind, kind.value, retry_after=retry_after))
    return Msg({KIND_HEADER: FrameKind.ERROR.value}, body.model_dump_json().encode())


class ScriptedWorkers:
    """Answers attempts by upstream model: a list of messages, one per call, in order."""

    def __init__(self, script: dict[str, list[Msg]]) -> None:
        self.script = script
        self.sent: list[InferRequest] = []
        self.config: Any = None
        self.stream_buffer = 16 * 1024 * 1024

    async def send(self, request: InferRequest, provider: str) -> Reply:
        self.sent.append(request)
        deployment = self.config.deployment(request.deployment_id)
        reply = Reply(cast(Dispatcher, self), str(len(self.sent)), provider, request)
        reply.put(self.script[deployment.upstream_model].pop(0))  # type: ignore[arg-type]
        return reply

    def forget(self, token: str) -> None:
        pass

    async def cancel(self, request_id: str) -> None:
        pass


def setup(
    script: dict[str, list[Msg]], groups: dict[str, list[str]], **router_settings: object
) -> tuple[Router, ScriptedWorkers]:
    raw = {"model_list": [{"model_name": alias, "litellm_params": {"model": f"openai/{m}"}}
                          for alias, models in groups.items() for m in models],
           "router_settings": {"retry_after": 0, **router_settings}}
    config = parse_config(raw, {})
    workers = ScriptedWorkers(script)
    workers.config = config
    router = Router(config, health=HealthBoard(None, config.router))
    return router, workers


async def run(router: Router, workers: ScriptedWorkers, model: str,
              admitted: list[int] | None = None) -> execution.Started:
    async def admit(deployment: Deployment, attempt: int) -> Ticket:
        if admitted is not None:
            admitted.append(attempt)
        return Ticket(None, Decimal(0), {})

    return await execution.start(
        cast(Dispatcher, workers), router.plan(model), request_id="r", endpoint=Endpoint.CHAT,
        model_alias=model, body={}, stream=False, heartbeat_interval=1,
        heartbeat_timeout=1, admit=admit, settle=lambda *_: None)


async def test_a_group_fails_over_then_retries_then_falls_back_numbering_every_attempt(
) -> None:
    router, workers = setup(
        {"a": [error(ErrorKind.SERVER)] * 2, "b": [error(ErrorKind.RATE_LIMIT)] * 2,
         "c": [done()]},
        {"g": ["a", "b"], "fb": ["c"]},
        num_retries=1, fallbacks=[{"g": ["fb"]}], cooldown_time=0)
    admitted: list[int] = []
    started = await run(router, workers, "g", admitted)
    assert started.deployment.upstream_model == "c"
    assert [r.attempt for r in workers.sent] == [0, 1, 2, 3, 4]
    assert admitted == [0, 1, 2, 3, 4]
    assert [r.model_alias for r in workers.sent] == ["g", "g", "g", "g", "fb"]


async def test_a_client_error_neither_fails_over_nor_retries() -> None:
    router, workers = setup({"a": [error(ErrorKind.INVALID_REQUEST)], "b": [done()]},
                            {"g": ["a", "b"]}, num_retries=3)
    with pytest.raises(ApiError) as info:
        await run(router, workers, "g")
    assert info.value.status == 400
    assert len(workers.sent) == 1


async def test_a_context_length_error_goes_to_the_context_window_fallback() -> None:
    router, workers = setup({"small": [error(ErrorKind.CONTEXT_LENGTH)], "big": [done()],
                             "other": [done()]},
                            {"s": ["small"], "b": ["big"], "o": ["other"]},
                            fallbacks=[{"s": ["o"]}], context_window_fallbacks=[{"s": ["b"]}])
    started = await run(router, workers, "s")
    assert started.deployment.upstream_model == "big"


async def test_a_retry_after_past_the_deadline_skips_the_retry() -> None:
    router, workers = setup({"a": [error(ErrorKind.RATE_LIMIT, retry_after=7)]},
                            {"g": ["a"]}, num_retries=3, timeout=2)
    with pytest.raises(ApiError) as info:
        await run(router, workers, "g")
    assert info.value.status == 429
    assert info.value.headers["retry-after"] == "7"
    assert len(workers.sent) == 1


async def test_failures_open_the_breaker_and_the_plan_skips_the_deployment() -> None:
    router, workers = setup({"a": [error(ErrorKind.SERVER)] * 2, "b": [done()] * 4},
                            {"g": ["a", "b"]}, allowed_fails=1, cooldown_time=60)
    for _ in range(4):
        await run(router, workers, "g")
    upstreams = [workers.config.deployment(r.deployment_id).upstream_model
                 for r in workers.sent]
    # the rotation starts on a twice; its second failure opens it, then only b is asked
    assert upstreams == ["a", "b", "b", "a", "b", "b"]
    assert all(d.upstream_model == "b" for d in router.plan("g"))
    assert router.load.load(router.plan("g")[0].id).latency_ms == 12


async def test_a_fallback_the_caller_may_not_use_is_skipped() -> None:
    router, workers = setup(
        {"a": [error(ErrorKind.SERVER)], "pricey": [done()], "cheap": [done()]},
        {"g": ["a"], "big": ["pricey"], "small": ["cheap"]},
        fallbacks=[{"g": ["big", "small"]}], cooldown_time=0)

    async def admit(deployment: Deployment, attempt: int) -> Ticket:
        return Ticket(None, Decimal(0), {})

    started = await execution.start(
        cast(Dispatcher, workers), router.plan("g"), request_id="r", endpoint=Endpoint.CHAT,
        model_alias="g", body={}, stream=False, heartbeat_interval=1, heartbeat_timeout=1,
        admit=admit, settle=lambda *_: None,
        caller=execution.Caller(may_use=lambda model: model in {"g", "small"}))
    assert started.deployment.upstream_model == "cheap"
    assert [r.model_alias for r in workers.sent] == ["g", "small"]
