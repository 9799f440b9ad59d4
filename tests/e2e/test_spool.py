"""Nothing lost when a process dies while JetStream cannot take usage events: each process
spools them, and replays its spool when it starts again, exactly once.

JetStream is made unable to take events by deleting the usage stream while core NATS goes
on carrying calls (a cluster that lost its stream's quorum looks the same to a publisher).
Calls are made, the worker and the ingress are SIGKILLed, and both are started again on
the same spool directory; they recreate the stream and publish what their spools hold.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from pathlib import Path

import httpx
import nats
import nats.js.errors
import pytest

from cli.nats_server import NatsServer
from schemas import subjects
from tests.harness import Gateway, write_config
from tests.usage_stream import read_stream_events

pytestmark = pytest.mark.e2e

MASTER_KEY = "sk-master-spool"
AUTH = {"authorization": f"Bearer {MASTER_KEY}"}


async def _stream_ids(url: str) -> Counter[str]:
    return Counter(event["request_id"] for event in await read_stream_events(url))


async def _delete_stream(url: str) -> None:
    nc = await nats.connect(url)
    try:
        await nc.jetstream().delete_stream(subjects.USAGE_STREAM)
    finally:
        await nc.close()


def _kill(proc: object) -> None:
    proc.send_signal(signal.SIGKILL)  # type: ignore[attr-defined]
    proc.wait()  # type: ignore[attr-defined]


def test_events_of_killed_processes_arrive_once_after_restart(
    own_nats: NatsServer, tmp_path: Path,
) -> None:
    config = write_config(tmp_path / "config.yaml", {
        "model_list": [{"model_name": "m", "litellm_params": {"model": "mock/m",
                                                              "mock_response": "hi"}}],
        "general_settings": {"master_key": MASTER_KEY}})
    gw = Gateway(nats_url=own_nats.url, config_path=config, log_dir=tmp_path,
                 env={"AIGW_SPOOL_DIR": str(tmp_path / "spool")})
    worker = gw.start_worker("mock")
    gw.start_ingress()
    gw.wait_ready()
    try:
        with httpx.Client(base_url=gw.base_url, timeout=10) as client:
            assert client.post("/v1/chat/completions", headers=AUTH, json={
                "model": "m", "messages": [{"role": "user", "content": "x"}]}).status_code == 200
            key = client.post("/admin/keys", headers=AUTH,
                              json={"limits": {"rpm": 1}}).json()["secret"]
            asyncio.run(_delete_stream(own_nats.url))

            called = []
            for _ in range(8):
                r = client.post("/v1/chat/completions", headers=AUTH, json={
                    "model": "m", "messages": [{"role": "user", "content": "x"}]})
                assert r.status_code == 200, r.text
                called.append(r.headers["x-request-id"])
            refused = []  # the ingress's own events: a key over its rpm
            for _ in range(3):
                r = client.post("/v1/chat/completions",
                                headers={"authorization": f"Bearer {key}"},
                                json={"model": "m", "messages": [{"role": "user",
                                                                  "content": "x"}]})
                (called if r.status_code == 200 else refused).append(r.headers["x-request-id"])
        assert len(refused) >= 2
        spools = list((tmp_path / "spool").glob("*/*.spool"))
        spooling = {p.parent.name.rsplit("-", 1)[0] for p in spools}
        # The ingress's audit events (the key made above) have a spool of their own.
        assert spooling - {"audit-ingress"} == {"ingress", "worker-mock"}
        assert gw.ingress is not None
        _kill(worker)
        _kill(gw.ingress)
        gw.workers.clear()

        gw.start_worker("mock")
        gw.start_ingress()
        gw.wait_ready()
        wanted = set(called) | set(refused)
        deadline = time.monotonic() + 20
        ids: Counter[str] = Counter()
        while time.monotonic() < deadline:
            ids = asyncio.run(_stream_ids(own_nats.url))
            if wanted <= set(ids):
                break
            time.sleep(0.2)
        missing = wanted - set(ids)
        assert not missing, f"{len(missing)} of {len(wanted)} events lost"
        assert all(ids[request_id] == 1 for request_id in wanted), ids
        # Published: the spools are empty again.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(
                p.stat().st_size for p in (tmp_path / "spool").glob("*/*.spool")):
            time.sleep(0.1)
        assert not any(p.stat().st_size for p in (tmp_path / "spool").glob("*/*.spool"))
    finally:
        gw.stop()
