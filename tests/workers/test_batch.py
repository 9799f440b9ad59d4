"""The batch runner: its pure parts (room left by interactive load, result lines, backoff),
then items run by a real runner and service over a real nats-server, with a provider
stand-in: which deliveries call the upstream, under which attempt numbers, what is stored."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import nats
import nats.js.errors
import pytest
from nats.aio.client import Client
from nats.js.client import JetStreamContext

from cli.nats_server import NatsServer, free_port
from core.batch_store import Buckets, ensure
from schemas import subjects
from schemas.attempt_usage import attempt_event
from schemas.batch import (
    Batch,
    BatchItem,
    BatchRecord,
    BatchStatus,
    ItemResult,
    item_msg_id,
    item_request_id,
    result_key,
)
from schemas.config import Deployment, parse_config
from schemas.errors import ErrorInfo, ErrorKind
from schemas.frames import DoneFrame, ErrorFrame
from schemas.infer import Endpoint, InferRequest
from schemas.usage import TokenUsage, UsageEvent, UsageStatus
from workers.attempt import Outcome
from workers.batch.attempts import ATTEMPTS, backoff, run_key
from workers.batch.ledger import STATUS_TTL
from workers.batch.results import item_result as _result
from workers.batch.runner import ACK_WAIT, CONCURRENCY, VALIDATING_DELAY, BatchRunner
from workers.providers.base import Completion, StreamItem, UpstreamCall, UpstreamError
from workers.service import WorkerService


class _Service:
    in_flight = 0


def _runner(concurrency: int) -> tuple[BatchRunner, _Service]:
    service = _Service()
    return BatchRunner("openai", cast(WorkerService, service), concurrency), service


def test_batch_items_wait_while_interactive_load_is_high() -> None:
    runner, service = _runner(100)
    assert runner._room() == CONCURRENCY
    service.in_flight = 49
    assert runner._room() == CONCURRENCY
    service.in_flight = 50  # half the worker's concurrency is interactive: batch waits
    assert runner._room() == 0


def test_batch_never_takes_more_than_the_worker_concurrency() -> None:
    runner, service = _runner(4)
    assert runner._room() == 4
    service.in_flight = 1
    assert runner._room() == 3


ITEM = BatchItem(batch_id="batch_1", line=3, custom_id="c", request=InferRequest(
    request_id="batch_1-c", endpoint=Endpoint.CHAT, deployment_id="d", model_alias="m",
    body={}, batch_id="batch_1"))


def test_an_answer_becomes_an_output_line_with_its_cost() -> None:
    response: dict[str, Any] = {"id": "x", "usage": {"prompt_tokens": 3}}
    result = _result(ITEM, DoneFrame(usage=TokenUsage(prompt_tokens=3, completion_tokens=4),
                                     response=response, cost=Decimal("0.5")))
    assert result.ok and (result.line, result.prompt_tokens, result.completion_tokens) == (3, 3, 4)
    assert result.output["response"]["status_code"] == 200
    assert result.output["response"]["body"]["usage"] == {"prompt_tokens": 3, "cost": 0.5}
    assert response["usage"] == {"prompt_tokens": 3}


def test_an_error_becomes_an_error_line_with_openai_error_body() -> None:
    info = ErrorInfo.of(ErrorKind.INVALID_REQUEST, "too long", code="context_length_exceeded")
    result = _result(ITEM, ErrorFrame(error=info))
    assert not result.ok
    response = result.output["response"]
    assert response["status_code"] == 400
    assert response["body"]["error"] == {"message": "too long", "type": "invalid_request_error",
                                         "param": None, "code": "context_length_exceeded"}


def test_backoff_follows_the_provider_hint_else_doubles() -> None:
    hinted = ErrorInfo.of(ErrorKind.RATE_LIMIT, "slow down", retry_after=7)
    plain = ErrorInfo.of(ErrorKind.SERVER, "oops")
    assert backoff(1, hinted) == 7
    assert [backoff(n, plain) for n in (1, 2, 3, 6)] == [0.5, 1.0, 2.0, 8.0]


# ---- a runner on a real nats-server, with a provider stand-in ------------------------------


class Upstream:
    """A provider stand-in that counts its calls; ``pause`` holds each answer, and the
    first ``limited`` calls are refused with a 429."""

    def __init__(self, answer_bytes: int = 10, pause: float = 0.0, limited: int = 0) -> None:
        self.calls = 0
        self.answer_bytes = answer_bytes
        self.pause = pause
        self.limited = limited

    async def complete(self, call: UpstreamCall) -> Completion:
        self.calls += 1
        if self.calls <= self.limited:
            raise UpstreamError(ErrorInfo.of(ErrorKind.RATE_LIMIT, "slow down", retry_after=0))
        await asyncio.sleep(self.pause)
        return Completion(response={"data": "x" * self.answer_bytes},
                          usage=TokenUsage(prompt_tokens=7, completion_tokens=3))

    async def embed(self, call: UpstreamCall) -> Completion:
        return await self.complete(call)

    async def stream(self, call: UpstreamCall) -> AsyncIterator[StreamItem]:
        yield TokenUsage()


CONFIG = parse_config(
    {"model_list": [{"model_name": "m", "litellm_params": {"model": "openai/m"}}]}, {})


@dataclass
class Worker:
    """What a worker process holds for batch items: a connection, a service, a runner."""

    nc: Client
    runner: BatchRunner
    events: list[UsageEvent]
    killed: bool = False

    async def stop(self, drain: float = 0.0) -> None:
        await self.runner.stop(asyncio.get_running_loop().time() + drain)
        await asyncio.sleep(0.1)  # the cancelled calls report their outcome
        await self.nc.close()

    async def kill(self) -> None:
        """As SIGKILL leaves things: calls cut off, nothing acknowledged or published."""
        self.killed = True
        await self.stop()


async def _worker(url: str, upstream: Upstream) -> Worker:
    nc = await nats.connect(url)
    events: list[UsageEvent] = []
    runner: BatchRunner | None = None
    worker: Worker | None = None

    async def publish(subject: str, body: bytes, headers: dict[str, str]) -> None:
        assert runner is not None and runner.takes(subject)
        runner.deliver(subject, body, headers)

    def account(o: Outcome) -> None:
        if worker is not None and worker.killed:
            return
        events.append(attempt_event(o.request, "openai", o.deployment, o.usage, o.error,
                                  o.cancelled, o.latency_ms, o.ttft_ms, o.cost, "test"))

    service = WorkerService("openai", upstream, CONFIG, publish, on_outcome=account,
                            price=_price)
    runner = BatchRunner("openai", service, 8)
    await runner.start(nc)
    worker = Worker(nc, runner, events)
    return worker


def _price(deployment: Deployment, usage: TokenUsage) -> Decimal:
    return Decimal("0.001") * usage.prompt_tokens + Decimal("0.002") * usage.completion_tokens


@dataclass
class Bus:
    """The test's view of NATS: batch records, the work queue and the results."""

    js: JetStreamContext
    buckets: Buckets

    async def set_status(self, status: BatchStatus) -> None:
        batch = Batch(id=BATCH, endpoint="/v1/chat/completions", input_file_id="file-1",
                      status=status, created_at=0)
        await self.buckets.batches.put(BATCH, BatchRecord(batch=batch).model_dump_json()
                                       .encode())

    async def enqueue(self, item: BatchItem) -> None:
        await self.js.publish(subjects.batch_items("openai", BATCH),
                              item.model_dump_json().encode(),
                              headers={"Nats-Msg-Id": item_msg_id(BATCH, item.line)})

    async def queued(self) -> int:
        info = await self.js.stream_info(subjects.BATCH_STREAM)
        return info.state.messages

    async def result(self, ok: bool, line: int = 1) -> ItemResult | None:
        try:
            entry = await self.buckets.results.get(result_key(BATCH, ok, line))
        except nats.js.errors.KeyNotFoundError:
            return None
        return ItemResult.model_validate_json(entry.value or b"")


BATCH = "batch_w"


def _item(line: int = 1) -> BatchItem:
    request = InferRequest(
        request_id=item_request_id(BATCH, f"c{line}"), endpoint=Endpoint.CHAT,
        deployment_id=CONFIG.deployments[0].id, model_alias="m", batch_id=BATCH,
        body={"messages": [{"role": "user", "content": "say something " * 10}]})
    return BatchItem(batch_id=BATCH, line=line, custom_id=f"c{line}", request=request)


async def _until(check: Callable[[], Awaitable[bool]], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


@pytest.fixture
def nats_url(tmp_path: Path) -> Iterator[str]:
    server = NatsServer(tmp_path / "nats", port=free_port(), max_payload=MAX_PAYLOAD)
    server.start()
    yield server.url
    server.stop()


MAX_PAYLOAD = 8192


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    yield Bus(js, await ensure(js))
    await nc.close()


async def test_a_rerun_item_accounts_each_call_under_its_own_event_id(
    nats_url: str, bus: Bus
) -> None:
    """The first delivery's cancelled call must not shadow the redelivery's paid answer;
    the redelivery's account of the first call, in case its worker died, is a copy under the
    same id, which accounting drops."""
    await bus.set_status(BatchStatus.IN_PROGRESS)
    slow = Upstream(pause=30.0)
    first = await _worker(nats_url, slow)
    await bus.enqueue(_item())

    async def running() -> bool:
        return slow.calls == 1

    await _until(running)
    await first.stop()  # a drain that ran out: the call is cut off, the item not acked
    upstream = Upstream()
    second = await _worker(nats_url, upstream)

    async def answered() -> bool:
        return await bus.result(True) is not None

    await _until(answered, within=ACK_WAIT + 5)
    await second.stop()
    events = first.events + second.events
    assert [(e.status, e.attempt) for e in events] == [
        (UsageStatus.CANCELLED, 0), (UsageStatus.ERROR, 0), (UsageStatus.OK, ATTEMPTS)]
    cancelled, copy, _ = events
    assert copy.event_id == cancelled.event_id and copy.usage_estimated
    assert len({e.event_id for e in events}) == 2  # both calls reach accounting, once each
    assert upstream.calls == 1 and await bus.queued() == 0


async def test_a_call_whose_worker_was_killed_is_accounted_by_the_next_delivery(
    nats_url: str, bus: Bus
) -> None:
    await bus.set_status(BatchStatus.IN_PROGRESS)
    slow = Upstream(pause=30.0)
    first = await _worker(nats_url, slow)
    item = _item()
    await bus.enqueue(item)

    async def running() -> bool:
        return slow.calls == 1

    await _until(running)
    await first.kill()
    upstream = Upstream()
    second = await _worker(nats_url, upstream)

    async def answered() -> bool:
        return await bus.result(True) is not None

    await _until(answered, within=ACK_WAIT + 5)
    await second.stop()
    assert first.events == [] and upstream.calls == 1
    lost, ok = second.events
    assert (lost.status, lost.attempt, lost.error_type, lost.http_status) == (
        UsageStatus.ERROR, 0, ErrorKind.CONNECTION.value, 502)
    # The prompt estimated at four characters a token plus four for the message:
    # "say something " x 10 is 140 characters, 35 tokens, and 4 more.
    expected = 39
    assert (lost.prompt_tokens, lost.completion_tokens, lost.usage_estimated) == (
        expected, 0, True)
    assert lost.cost == Decimal("0.001") * expected and lost.batch_id == BATCH
    assert lost.event_id == f"{item.request.request_id}:0:worker"
    assert (ok.status, ok.attempt, ok.usage_estimated) == (UsageStatus.OK, ATTEMPTS, False)
    # Each delivery recorded the attempt it began, beside the results, not among them.
    for delivery, attempt in ((1, 0), (2, ATTEMPTS)):
        entry = await bus.buckets.runs.get(run_key(item, delivery))
        assert entry.value == str(attempt).encode()


async def test_a_redelivered_item_with_a_result_is_acked_without_a_call(
    nats_url: str, bus: Bus
) -> None:
    await bus.set_status(BatchStatus.IN_PROGRESS)
    item = _item()
    stored = ItemResult(line=1, custom_id="c1", ok=True, output={"custom_id": "c1"})
    await bus.buckets.results.create(result_key(BATCH, True, 1), stored.model_dump_json()
                                     .encode())
    upstream = Upstream()
    worker = await _worker(nats_url, upstream)
    await bus.enqueue(item)

    async def acked() -> bool:
        return await bus.queued() == 0

    await _until(acked)
    await worker.stop()
    assert upstream.calls == 0 and worker.events == []


async def test_items_of_a_batch_still_validating_wait_until_it_is_in_progress(
    nats_url: str, bus: Bus
) -> None:
    await bus.set_status(BatchStatus.VALIDATING)
    upstream = Upstream()
    worker = await _worker(nats_url, upstream)
    await bus.enqueue(_item())
    await asyncio.sleep(1.5)
    assert upstream.calls == 0 and await bus.queued() == 1
    await bus.set_status(BatchStatus.IN_PROGRESS)

    async def answered() -> bool:
        return await bus.result(True) is not None

    await _until(answered, within=VALIDATING_DELAY + STATUS_TTL + 5)
    await worker.stop()
    assert upstream.calls == 1
    # It waited within its first delivery: none of MAX_DELIVERIES was spent on waiting.
    assert [e.attempt for e in worker.events] == [0]


@pytest.mark.parametrize("status", [BatchStatus.FINALIZING, BatchStatus.COMPLETED,
                                    BatchStatus.CANCELLED, BatchStatus.EXPIRED])
async def test_an_item_of_a_batch_past_in_progress_is_dropped_without_a_call(
    nats_url: str, bus: Bus, status: BatchStatus
) -> None:
    await bus.set_status(status)
    upstream = Upstream()
    worker = await _worker(nats_url, upstream)
    await bus.enqueue(_item())

    async def acked() -> bool:
        return await bus.queued() == 0

    await _until(acked)
    await worker.stop()
    assert upstream.calls == 0 and await bus.result(True) is None


async def test_a_result_too_large_for_nats_ends_the_item_as_an_error_after_one_call(
    nats_url: str, bus: Bus
) -> None:
    await bus.set_status(BatchStatus.IN_PROGRESS)
    upstream = Upstream(answer_bytes=2 * MAX_PAYLOAD)
    worker = await _worker(nats_url, upstream)
    await bus.enqueue(_item())

    async def stored() -> bool:
        return await bus.result(False) is not None

    await _until(stored)
    result = await bus.result(False)
    assert result is not None
    response = result.output["response"]
    assert response["status_code"] == 400
    assert response["body"]["error"]["code"] == "response_too_large"
    assert (result.prompt_tokens, result.completion_tokens) == (7, 3)  # the call was paid
    assert await bus.queued() == 0  # acknowledged: never run again
    await worker.stop()
    assert upstream.calls == 1 and await bus.result(True) is None


async def test_the_runner_leaves_no_subscription_behind_when_fetching_fails(
    nats_url: str, bus: Bus
) -> None:
    worker = await _worker(nats_url, Upstream())

    async def subscribed() -> bool:
        return worker.runner._sub is not None

    async def consumer() -> bool:
        try:
            await bus.js.consumer_info(subjects.BATCH_STREAM, subjects.batch_consumer("openai"))
        except nats.js.errors.NotFoundError:
            return False
        return True

    await _until(subscribed)
    before = len(worker.nc._subs)
    for _ in range(3):  # each fetch against the deleted consumer fails; the runner resubscribes
        await _until(consumer)
        await bus.js.delete_consumer(subjects.BATCH_STREAM, subjects.batch_consumer("openai"))
        await asyncio.sleep(0.2)
    await _until(consumer)
    assert len(worker.nc._subs) <= before
    await worker.stop()


async def test_a_worker_killed_in_a_retry_has_that_retry_accounted(
    nats_url: str, bus: Bus
) -> None:
    await bus.set_status(BatchStatus.IN_PROGRESS)
    slow = Upstream(pause=30.0, limited=1)
    first = await _worker(nats_url, slow)
    await bus.enqueue(_item())

    async def retrying() -> bool:
        return slow.calls == 2

    await _until(retrying)
    await first.kill()
    second = await _worker(nats_url, Upstream())

    async def answered() -> bool:
        return await bus.result(True) is not None

    await _until(answered, within=ACK_WAIT + 5)
    await second.stop()
    # The 429 was published before the kill; the retry it died in is accounted after it.
    assert [(e.status, e.attempt) for e in first.events] == [(UsageStatus.ERROR, 0)]
    assert [(e.status, e.attempt, e.usage_estimated) for e in second.events] == [
        (UsageStatus.ERROR, 1, True), (UsageStatus.OK, ATTEMPTS, False)]
