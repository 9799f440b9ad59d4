"""A worker process's /metrics and health on ``AIGW_METRICS_PORT``.

Capacity and in-flight calls for the autoscalers, upstream calls by status, batch items by
outcome, readiness, and the scrape key.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from prometheus_client.parser import text_string_to_metric_families

from cli.nats_server import NatsServer
from schemas.batch import BatchItem
from schemas.config import GatewayConfig
from schemas.frames import DoneFrame, ErrorFrame
from schemas.infer import Endpoint
from tests.fakes.server import free_port
from tests.harness import Gateway
from tests.workers.worker_process import (
    get,
    request_for,
    run_batch_item,
    send_attempt,
    until_serving,
    worker_process,
)

PROVIDER = "mock"
CONCURRENCY = 7
KEY = "scrape-key"
AUTH = {"authorization": f"Bearer {KEY}"}
CONFIG = {"model_list": [
    {"model_name": "ok", "litellm_params": {"model": "mock/ok-model", "mock_response": "hi"}},
    {"model_name": "slow", "litellm_params": {"model": "mock/slow-model",
                                              "mock_ttft_ms": 1500}},
    {"model_name": "unavailable", "litellm_params": {"model": "mock/down",
                                                     "mock_error_status": 503}},
]}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


class Worker:
    def __init__(self, gateway: Gateway, config: GatewayConfig, port: int) -> None:
        self.gateway = gateway
        self.config = config
        self.url = f"http://127.0.0.1:{port}"

    async def scrape(self) -> Samples:
        response = await get(self.url + "/metrics", AUTH)
        assert response.status_code == 200, response.text
        return samples(response.text)


@pytest.fixture
def worker(own_nats: NatsServer, tmp_path: Path) -> Iterator[Worker]:
    port = free_port()
    env = {"AIGW_METRICS_PORT": str(port), "AIGW_METRICS_HOST": "127.0.0.1",
           "AIGW_METRICS_KEY": KEY, "AIGW_WORKER_CONCURRENCY": str(CONCURRENCY)}
    with worker_process(own_nats.url, CONFIG, tmp_path, PROVIDER, env) as (gateway, config):
        yield Worker(gateway, config, port)


@pytest.fixture
async def nc(own_nats: NatsServer) -> AsyncIterator[Client]:
    client = await nats.connect(own_nats.url)
    yield client
    await client.close()


async def ready(worker: Worker, nc: Client, timeout: float = 30.0) -> None:
    await until_serving(nc, worker.gateway, PROVIDER)
    deadline = time.monotonic() + timeout
    while (await get(worker.url + "/health/readiness")).status_code != 200:
        assert time.monotonic() < deadline, worker.gateway.all_logs()
        await asyncio.sleep(0.05)


async def test_a_ready_worker_answers_health_and_reports_its_capacity(
        worker: Worker, nc: Client) -> None:
    await ready(worker, nc)
    assert (await get(worker.url + "/health/liveliness")).status_code == 200
    found = await worker.scrape()
    assert value(found, "aigw_worker_capacity", gen_ai_provider_name=PROVIDER) == CONCURRENCY
    assert value(found, "aigw_worker_inflight", gen_ai_provider_name=PROVIDER) == 0
    assert value(found, "aigw_batch_items_running", gen_ai_provider_name=PROVIDER) == 0
    assert value(found, "aigw_nats_connected") == 1


async def test_metrics_need_the_bearer_key_when_one_is_set(worker: Worker, nc: Client) -> None:
    await ready(worker, nc)
    assert (await get(worker.url + "/metrics")).status_code == 401
    assert (await get(worker.url + "/metrics", {"authorization": "Bearer nope"})
            ).status_code == 401


async def test_upstream_calls_are_counted_by_status(worker: Worker, nc: Client) -> None:
    await ready(worker, nc)
    before = await worker.scrape()
    for i, stream in enumerate((False, True, False)):
        frame = await send_attempt(nc, PROVIDER, request_for(
            worker.config, "ok", stream=stream, request_id=f"ok-{i}"))
        assert isinstance(frame, DoneFrame)
    frame = await send_attempt(nc, PROVIDER, request_for(
        worker.config, "ok", endpoint=Endpoint.EMBEDDINGS, request_id="emb"))
    assert isinstance(frame, DoneFrame)
    for i in range(2):
        frame = await send_attempt(nc, PROVIDER, request_for(
            worker.config, "unavailable", request_id=f"down-{i}"))
        assert isinstance(frame, ErrorFrame) and frame.error.upstream_status == 503
    after = await worker.scrape()

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    ok = {"gen_ai_provider_name": PROVIDER, "status": "200"}
    down = {"gen_ai_provider_name": PROVIDER, "status": "503"}
    assert grew("aigw_upstream_duration_seconds_count", **ok) == 4
    assert grew("aigw_upstream_duration_seconds_bucket", **ok, le="+Inf") == 4
    assert grew("aigw_upstream_duration_seconds_count", **down) == 2
    assert grew("aigw_upstream_errors_total", **down) == 2
    assert grew("aigw_upstream_errors_total", **ok) == 0


async def test_a_call_in_flight_shows_until_it_ends(worker: Worker, nc: Client) -> None:
    await ready(worker, nc)
    call = asyncio.create_task(send_attempt(nc, PROVIDER, request_for(
        worker.config, "slow", request_id="slow-1")))
    deadline = time.monotonic() + 5
    while value(await worker.scrape(), "aigw_worker_inflight",
                gen_ai_provider_name=PROVIDER) != 1:
        assert time.monotonic() < deadline, "the slow call never showed as in flight"
        await asyncio.sleep(0.05)
    assert isinstance(await call, DoneFrame)
    assert value(await worker.scrape(), "aigw_worker_inflight",
                 gen_ai_provider_name=PROVIDER) == 0


async def test_a_finished_batch_item_is_counted_by_outcome(worker: Worker, nc: Client) -> None:
    await ready(worker, nc)
    labels = {"gen_ai_provider_name": PROVIDER, "outcome": "completed"}
    before = value(await worker.scrape(), "aigw_batch_items_done_total", **labels)
    request = request_for(worker.config, "ok", request_id="batch_m-c1", batch_id="batch_m")
    await run_batch_item(nc, PROVIDER, BatchItem(batch_id="batch_m", line=1, custom_id="c1",
                                                 request=request))
    deadline = time.monotonic() + 15
    while value(await worker.scrape(), "aigw_batch_items_done_total", **labels) != before + 1:
        assert time.monotonic() < deadline, worker.gateway.all_logs()
        await asyncio.sleep(0.1)
    found = await worker.scrape()
    assert value(found, "aigw_batch_items_done_total", gen_ai_provider_name=PROVIDER,
                 outcome="failed") == 0
    # A batch item's call is an upstream call, but not interactive load.
    assert value(found, "aigw_worker_inflight", gen_ai_provider_name=PROVIDER) == 0
