"""A provider whose workers are all busy: calls wait a bounded time, visibly, then get a
clear 503 ``no_capacity``; and batch items leave the room to interactive calls.

The worker runs at concurrency 2 and the mock model takes its time, so a third call finds
every slot taken: the worker answers it ``busy`` and the ingress waits and sends again.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cli.nats_server import NatsServer
from tests.harness import Gateway, write_config

pytestmark = pytest.mark.e2e

SLOW_MS = 1500


def _config() -> dict[str, object]:
    return {"model_list": [
        {"model_name": "slow", "litellm_params": {
            "model": "mock/slow", "mock_response": "done", "mock_ttft_ms": SLOW_MS}},
    ]}


def _gateway(nats_url: str, tmp_path: Path, wait: float) -> Gateway:
    config = write_config(tmp_path / "config.yaml", _config())
    gateway = Gateway(nats_url=nats_url, config_path=config, log_dir=tmp_path,
                      env={"AIGW_WORKER_CONCURRENCY": "2", "AIGW_CAPACITY_WAIT": str(wait),
                           "AIGW_CONFIG_KEY": f"capacity-{wait:g}".replace(".", "-")})
    gateway.start_worker("mock")
    gateway.start_ingress()
    gateway.wait_ready()
    return gateway


@pytest.fixture
def patient(own_nats: NatsServer, tmp_path: Path) -> Iterator[Gateway]:
    gateway = _gateway(own_nats.url, tmp_path, wait=30.0)
    yield gateway
    gateway.stop()


@pytest.fixture
def impatient(own_nats: NatsServer, tmp_path: Path) -> Iterator[Gateway]:
    gateway = _gateway(own_nats.url, tmp_path, wait=0.4)
    yield gateway
    gateway.stop()


def _chat(client: httpx.AsyncClient) -> object:
    return client.post("/v1/chat/completions", json={
        "model": "slow", "messages": [{"role": "user", "content": "hi"}]})


def _waiting(text: str) -> float:
    found = re.search(r'^aigw_dispatch_waiting\{gen_ai_provider_name="mock"\} (\S+)$', text,
                      re.MULTILINE)
    assert found, "aigw_dispatch_waiting{provider=mock} is not exported"
    return float(found.group(1))


async def test_calls_beyond_capacity_wait_and_are_counted(patient: Gateway) -> None:
    async with httpx.AsyncClient(base_url=patient.base_url, timeout=60) as client:
        assert _waiting((await client.get("/metrics")).text) == 0
        began = time.monotonic()
        calls = [asyncio.create_task(_chat(client)) for _ in range(4)]  # type: ignore[arg-type]
        seen = 0.0
        deadline = time.monotonic() + SLOW_MS / 1000
        while time.monotonic() < deadline and seen < 2:
            seen = max(seen, _waiting((await client.get("/metrics")).text))
            await asyncio.sleep(0.05)
        answers = await asyncio.gather(*calls)
        took = time.monotonic() - began
    assert [a.status_code for a in answers] == [200] * 4, [a.text for a in answers]
    # Two ran at once and two waited for them: about two turns of the slow model.
    assert took >= 2 * SLOW_MS / 1000
    assert seen == 2, "the two calls beyond capacity were not counted as waiting"
    async with httpx.AsyncClient(base_url=patient.base_url, timeout=10) as client:
        assert _waiting((await client.get("/metrics")).text) == 0


async def test_beyond_the_bound_a_clean_503_no_capacity(impatient: Gateway) -> None:
    async with httpx.AsyncClient(base_url=impatient.base_url, timeout=60) as client:
        answers = await asyncio.gather(*(_chat(client) for _ in range(4)))  # type: ignore[arg-type]
        statuses = sorted(a.status_code for a in answers)
        assert statuses == [200, 200, 503, 503], [a.text for a in answers]
        for refused in (a for a in answers if a.status_code == 503):
            error = refused.json()["error"]
            assert error["code"] == "no_capacity"
            assert error["type"] == "server_error"
            assert "busy" in error["message"]
            assert int(refused.headers["retry-after"]) >= 1
        assert _waiting((await client.get("/metrics")).text) == 0
        # Once the slots are free, calls go through again.
        again = await _chat(client)  # type: ignore[misc]
        assert again.status_code == 200, again.text
