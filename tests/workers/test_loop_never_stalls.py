"""One pathological call must not stall a worker: a batch of embeddings of 1,024 inputs at
8,192 dimensions (8.4 million floats to build, then to encode) runs beside chat calls
that still answer quickly, its own heartbeats keep coming, and SIGTERM stops the worker
within its drain time while the work is still going on."""

from __future__ import annotations

import asyncio
import itertools
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client

from cli.nats_server import NatsServer
from schemas import subjects
from schemas.config import GatewayConfig
from schemas.frames import KIND_HEADER, FrameKind
from schemas.infer import Endpoint, InferRequest
from tests.harness import Gateway
from tests.workers.worker_process import request_for, send_attempt, until_serving, worker_process

PROVIDER = "mock"
DRAIN = 2.0
CONFIG = {"model_list": [
    {"model_name": "chat", "litellm_params": {"model": "mock/chat", "mock_response": "hi"}},
    {"model_name": "embed", "litellm_params": {"model": "mock/embed"}},
]}


@pytest.fixture
def worker(own_nats: NatsServer, tmp_path: Path) -> Iterator[tuple[Gateway, GatewayConfig]]:
    env = {"AIGW_DRAIN_SECONDS": str(DRAIN), "AIGW_LOG_LEVEL": "INFO"}
    with worker_process(own_nats.url, CONFIG, tmp_path, PROVIDER, env) as found:
        yield found


def _huge(config: GatewayConfig, request_id: str) -> InferRequest:
    base = request_for(config, "embed", endpoint=Endpoint.EMBEDDINGS, request_id=request_id)
    return base.model_copy(update={
        "heartbeat_interval": 0.5,
        "body": {"input": [f"text {i}" for i in range(1024)], "dimensions": 8192}})


class Frames:
    """Every frame of one attempt, with when it arrived."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, str]] = []

    @property
    def ended(self) -> bool:
        return any(kind in (FrameKind.DONE, FrameKind.ERROR) for _, kind in self.seen)

    async def start(self, nc: Client, request: InferRequest) -> None:
        inbox = nc.new_inbox()

        async def on_frame(msg: nats.aio.msg.Msg) -> None:
            self.seen.append((time.monotonic(), (msg.headers or {}).get(KIND_HEADER, "")))

        await nc.subscribe(inbox, cb=on_frame)
        await nc.publish(subjects.infer(PROVIDER), request.model_dump_json().encode(),
                         reply=inbox)


async def _until(check, within: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.02)


async def test_a_huge_call_leaves_the_loop_free_and_sigterm_stops_the_worker_in_time(
        own_nats: NatsServer, worker: tuple[Gateway, GatewayConfig]) -> None:
    gateway, config = worker
    nc = await nats.connect(own_nats.url)
    try:
        await until_serving(nc, gateway, PROVIDER)
        huge = Frames()
        await huge.start(nc, _huge(config, "huge-1"))
        await _until(lambda: huge.seen, 5, "the worker never took the huge call")
        await asyncio.sleep(0.3)  # well into building the vectors

        latencies = []
        for i in range(5):
            started = time.monotonic()
            frame = await send_attempt(nc, PROVIDER, request_for(
                config, "chat", request_id=f"chat-{i}"), timeout=5)
            latencies.append(time.monotonic() - started)
            assert frame.__class__.__name__ == "DoneFrame", frame
        assert not huge.ended, "the huge call ended before the chat calls: nothing overlapped"
        assert max(latencies) < 1.0, latencies

        # Its heartbeats keep coming while the work goes on.
        await asyncio.sleep(1.5)
        beats = [at for at, kind in huge.seen if kind == FrameKind.HEARTBEAT]
        gaps = [b - a for a, b in itertools.pairwise(beats)]
        assert len(beats) >= 3 and max(gaps) < 1.5, (len(beats), gaps)

        # A second one, then SIGTERM in the middle of both.
        second = Frames()
        await second.start(nc, _huge(config, "huge-2"))
        await _until(lambda: second.seen, 5, "the worker never took the second call")
        proc = gateway.workers[0][1]
        stopping = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        while proc.poll() is None:
            assert time.monotonic() - stopping < DRAIN + 5, (
                f"still running {DRAIN + 5} s after SIGTERM:\n{gateway.all_logs()}")
            await asyncio.sleep(0.05)
    finally:
        await nc.close()
