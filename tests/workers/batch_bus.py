"""Batch items run by a real runner and service over a real nats-server: a provider
stand-in, a worker holding a runner, the test's view of the bus, and their fixtures."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

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
from schemas.infer import Endpoint, InferRequest
from schemas.usage import TokenUsage, UsageEvent
from workers.attempt import Outcome
from workers.batch.runner import BatchRunner
from workers.providers.base import Completion, StreamItem, UpstreamCall, UpstreamError
from workers.service import WorkerService


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


@pytest.fixture(name="nats_url")
def nats_url_for_batches(tmp_path: Path) -> Iterator[str]:
    server = NatsServer(tmp_path / "nats", port=free_port(), max_payload=MAX_PAYLOAD)
    server.start()
    yield server.url
    server.stop()


MAX_PAYLOAD = 8192


@pytest.fixture(name="bus")
async def batch_bus(nats_url: str) -> AsyncIterator[Bus]:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    yield Bus(js, await ensure(js))
    await nc.close()
