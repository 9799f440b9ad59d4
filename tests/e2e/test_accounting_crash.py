"""The accounting process killed mid-stream of events: restarted, totals are exact."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from decimal import Decimal

import httpx
import pytest

from cli.nats_server import NatsServer
from tests.fakes.openai_server import FakeOpenAIState
from tests.harness import Gateway, write_config

pytestmark = pytest.mark.e2e
MASTER = {"authorization": "Bearer sk-crash"}


@pytest.fixture
def crash_gateway(
    nats_server: NatsServer, fake_openai: tuple[str, FakeOpenAIState],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    # Its own NATS server: the usage stream and the durable consumer are this test's alone.
    url, _ = fake_openai
    work = tmp_path_factory.mktemp("crash")
    server = NatsServer(work / "nats")
    server.start()
    config = {
        "model_list": [{"model_name": "priced", "litellm_params": {
            "model": "openai/gpt-4o-mini", "api_base": f"{url}/v1", "api_key": "sk-fake",
            "input_cost_per_token": "0.000001", "output_cost_per_token": "0.000003"}}],
        "general_settings": {"master_key": "sk-crash"},
    }
    gw = Gateway(nats_url=server.url, config_path=write_config(work / "c.yaml", config),
                 log_dir=work, env={"AIGW_ACCOUNTING_BATCH_AGE": "0.3",
                                    "AIGW_ACCOUNTING_BATCH_SIZE": "50",
                                    "AIGW_ACCOUNTING_ACK_WAIT": "3"})
    gw.start_worker("openai")
    gw.start_accounting(work / "data")
    gw.start_ingress()
    gw.wait_ready()
    yield gw
    gw.stop()
    server.stop()


def test_killing_accounting_mid_batch_loses_and_doubles_nothing(crash_gateway: Gateway) -> None:
    gw = crash_gateway
    costs: list[Decimal] = []

    def send(n: int) -> None:
        with httpx.Client(base_url=gw.base_url, headers=MASTER, timeout=10) as http:
            for _ in range(n):
                r = http.post("/v1/chat/completions", json={
                    "model": "priced", "messages": [{"role": "user", "content": "tally"}]})
                assert r.status_code == 200
                costs.append(Decimal(r.headers["x-aigw-cost-usd"]))

    load = threading.Thread(target=send, args=(300,))
    load.start()
    time.sleep(1.0)
    assert gw.accounting is not None
    gw.accounting.send_signal(signal.SIGKILL)  # mid-batch: no clean stop, no last ack
    gw.accounting.wait()
    time.sleep(0.5)
    gw.start_accounting(gw.log_dir / "data")
    load.join()

    deadline = time.monotonic() + 30
    summary: dict[str, object] = {}
    while time.monotonic() < deadline:
        try:
            r = httpx.get(gw.base_url + "/v1/usage/summary", headers=MASTER,
                          params={"days": 1}, timeout=5)
            if r.status_code == 200:
                summary = r.json()
                if summary["events"] == 300:
                    time.sleep(1.0)
                    summary = httpx.get(gw.base_url + "/v1/usage/summary", headers=MASTER,
                                        params={"days": 1}).json()
                    break
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    assert summary.get("events") == 300, summary
    assert summary["requests"] == 300
    assert Decimal(str(summary["cost"])) == sum(costs, Decimal(0))
