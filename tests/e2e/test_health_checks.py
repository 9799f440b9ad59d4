"""Background health checks (``general_settings.background_health_checks``): real ingress
and worker processes probe a fake OpenAI server that fails on cue, with no client request.

Each test runs its own nats-server, so the health bucket and its probe lease are the
test's alone, and its own fake server, so every upstream call it sees is a probe.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cli.nats_server import NatsServer
from tests.fakes import openai_server
from tests.fakes.openai_server import Served, running
from tests.fakes.server import free_port
from tests.harness import Gateway, write_config
from tests.usage_stream import read_stream_events

pytestmark = pytest.mark.e2e

MASTER_KEY = "sk-master-health"
AUTH = {"authorization": f"Bearer {MASTER_KEY}"}
INTERVAL = 1.0


def health_config(url: str) -> dict[str, object]:
    def dep(alias: str, upstream: str) -> dict[str, object]:
        return {"model_name": alias, "litellm_params": {
            "model": f"openai/{upstream}", "api_base": f"{url}/v1", "api_key": "sk-fake"}}

    return {
        "model_list": [dep("healthy", "gpt-4o-mini"), dep("flaky", "switch"),
                       dep("vectors", "text-embedding-3-small")],
        "general_settings": {"master_key": MASTER_KEY, "background_health_checks": True,
                             "health_check_interval": INTERVAL},
        "router_settings": {"allowed_fails": 1, "cooldown_time": 1},
    }


@pytest.fixture
def fake() -> Iterator[Served]:
    with running(openai_server.FakeOpenAIState(switch_status=500)) as served:
        yield served


@pytest.fixture
def gw(tmp_path: Path, fake: Served, own_nats: NatsServer) -> Iterator[Gateway]:
    server = own_nats
    config = write_config(tmp_path / "config.yaml", health_config(fake.url))
    gateway = Gateway(nats_url=server.url, config_path=config, log_dir=tmp_path,
                      env={"AIGW_HEARTBEAT": "0.5", "AIGW_HEARTBEAT_TIMEOUT": "2"})
    gateway.start_worker("openai")
    gateway.start_ingress()
    try:
        gateway.wait_ready()
        yield gateway
    finally:
        gateway.stop()
        server.stop()


def _eventually(check: Callable[[], bool], timeout: float, what: str, gw: Gateway) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s\n{gw.all_logs()}")
        time.sleep(0.05)


def _rows(base_url: str) -> dict[str, dict[str, Any]]:
    r = httpx.get(base_url + "/health", headers=AUTH, timeout=5)
    assert r.status_code == 200, r.text
    return {row["model_name"]: row for row in r.json()["deployments"]}


def _all_probes(state: openai_server.FakeOpenAIState) -> bool:
    return all(r.get("input") == "ping" or (
        r.get("max_tokens") == 1 and r.get("messages") == [{"role": "user", "content": "ping"}])
        for r in state.requests)


def _probe_events(nats_url: str) -> list[dict[str, Any]]:
    """Every usage event of a probe in the ``AIGW_USAGE`` stream, read back directly."""
    events = asyncio.run(read_stream_events(nats_url))
    return [e for e in events if e["request_id"].startswith("probe-")]


def test_probes_open_a_failing_deployment_and_close_it_once_it_answers_without_any_request(
    gw: Gateway, fake: Served
) -> None:
    def flaky_open() -> bool:
        rows = _rows(gw.base_url)
        flaky, healthy = rows["flaky"], rows["healthy"]
        return (flaky["circuit"] == "open" and flaky["last_check"] is not None
                and not flaky["last_check"]["ok"]
                and healthy["last_check"] is not None and healthy["last_check"]["ok"])

    _eventually(flaky_open, 10, "the failing deployment's breaker opens", gw)
    rows = _rows(gw.base_url)
    assert rows["flaky"]["state"] in ("cooling_down", "probe_ready", "probing")
    assert rows["flaky"]["last_check"]["error"].startswith("server")
    assert rows["healthy"]["state"] == "healthy" and rows["healthy"]["circuit"] == "closed"
    assert rows["healthy"]["last_check"]["error"] is None
    assert rows["healthy"]["last_check"]["latency_ms"] > 0
    _eventually(lambda: (_rows(gw.base_url)["vectors"]["last_check"] or {}).get("ok") is True,
                10, "the embedding deployment answers its check", gw)
    assert any(r.get("input") == "ping" for r in fake.state.requests)

    fake.state.switch_status = None  # the upstream recovers

    def flaky_closed() -> bool:
        flaky = _rows(gw.base_url)["flaky"]
        return flaky["circuit"] == "closed" and bool((flaky["last_check"] or {}).get("ok"))

    _eventually(flaky_closed, 10, "a probe closes the breaker again", gw)
    assert _rows(gw.base_url)["flaky"]["state"] == "healthy"
    assert _all_probes(fake.state), fake.state.requests  # no client request was made

    # every probe is an accounted upstream call, charged to nobody
    _eventually(lambda: len({e["status"] for e in _probe_events(gw.nats_url)}) == 2, 10,
                "usage events of failed and answered probes", gw)
    events = _probe_events(gw.nats_url)
    assert all(e["key_id"] is None and e["team_id"] is None for e in events), events
    assert all(e["metadata"] == {"aigw_probe": "1"} for e in events), events


def test_of_two_replicas_one_probes_and_both_show_the_checks(
    gw: Gateway, fake: Served
) -> None:
    port = free_port()
    replica = f"http://127.0.0.1:{port}"
    gw.start_replica(port)

    def replica_sees_checks() -> bool:
        try:
            rows = _rows(replica)
        except httpx.HTTPError:
            return False
        # (a round run before the worker was up says "no worker": wait for an answer)
        return all((rows[m]["last_check"] or {}).get("ok") is ok
                   for m, ok in (("healthy", True), ("vectors", True), ("flaky", False)))

    _eventually(replica_sees_checks, 30, "the replica shows the checks", gw)

    def healthy_probes() -> int:
        return sum(r.get("model") == "gpt-4o-mini" for r in fake.state.requests)

    # Two replicas probing each would call the healthy upstream twice per interval.
    window = 4 * INTERVAL
    before = healthy_probes()
    time.sleep(window)  # counting what arrives in a window of time: nothing to poll
    assert healthy_probes() - before <= window / INTERVAL + 1, fake.state.requests[-12:]
