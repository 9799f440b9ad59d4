"""Long calls, client disconnects, and workers that come and go."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from cli.nats_server import NatsServer
from tests.e2e.conftest import MASTER_KEY, e2e_config
from tests.fakes.openai_server import FakeOpenAIState
from tests.harness import Gateway, write_config

pytestmark = pytest.mark.e2e
AUTH = {"authorization": f"Bearer {MASTER_KEY}"}


def test_heartbeats_keep_a_long_call_alive(
    gateway: Gateway, fake_openai: tuple[str, FakeOpenAIState]
) -> None:
    _, state = fake_openai
    state.slow_seconds = 3.0  # longer than the ingress's 2 s silence deadline
    r = httpx.post(gateway.base_url + "/v1/chat/completions", headers=AUTH, timeout=20,
                   json={"model": "slow", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 200, r.text


def test_client_disconnect_mid_stream_cancels_the_upstream_call(
    gateway: Gateway, fake_openai: tuple[str, FakeOpenAIState]
) -> None:
    _, state = fake_openai
    state.slow_seconds = 30.0
    before = state.cancelled
    with httpx.stream("POST", gateway.base_url + "/v1/chat/completions", headers=AUTH,
                      timeout=10, json={"model": "slow-stream", "stream": True,
                                        "messages": [{"role": "user", "content": "x"}]}) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: "):
                break
    deadline = time.monotonic() + 5
    while state.cancelled == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert state.cancelled == before + 1


@pytest.fixture
def own_gateway(
    nats_server: NatsServer, fake_openai: tuple[str, FakeOpenAIState],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    """A gateway of its own, whose workers a test may kill. Its provider name is unique to
    it (``vllm``), so the session gateway's workers never take its attempts."""
    url, _ = fake_openai
    work = tmp_path_factory.mktemp("own")
    config = e2e_config(url)
    config["model_list"] = [{"model_name": "m", "litellm_params": {
        "model": "vllm/gpt-4o-mini", "api_base": f"{url}/v1", "api_key": "sk-fake"}},
        {"model_name": "slow", "litellm_params": {
            "model": "vllm/slow", "api_base": f"{url}/v1", "api_key": "sk-fake"}}]
    gw = Gateway(nats_url=nats_server.url, config_path=write_config(work / "c.yaml", config),
                 log_dir=work, env={"AIGW_HEARTBEAT": "0.5", "AIGW_HEARTBEAT_TIMEOUT": "2"})
    gw.start_worker("vllm")
    gw.start_worker("vllm")
    gw.start_ingress()
    gw.wait_ready()
    yield gw
    gw.stop()


def test_two_workers_share_the_load_and_one_survives_the_other(own_gateway: Gateway) -> None:
    client = openai.OpenAI(base_url=own_gateway.base_url + "/v1", api_key=MASTER_KEY,
                           max_retries=0)
    for _ in range(20):
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    _, first = own_gateway.workers[0]
    first.send_signal(signal.SIGKILL)
    first.wait()
    time.sleep(0.3)
    for _ in range(10):
        completion = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x"}])
        assert completion.choices[0].message.content


def test_a_worker_killed_during_a_call_gives_a_clean_error_not_a_hang(
    own_gateway: Gateway, fake_openai: tuple[str, FakeOpenAIState]
) -> None:
    _, state = fake_openai
    state.slow_seconds = 30.0
    _, second = own_gateway.workers[1]
    own_gateway.workers[0][1].send_signal(signal.SIGKILL)  # only the second one is left
    own_gateway.workers[0][1].wait()
    time.sleep(0.3)
    with httpx.Client(timeout=15) as http:
        started = time.monotonic()
        request = http.build_request(
            "POST", own_gateway.base_url + "/v1/chat/completions", headers=AUTH,
            json={"model": "slow", "messages": [{"role": "user", "content": "x"}]})
        import threading
        killer = threading.Timer(1.0, lambda: second.send_signal(signal.SIGKILL))
        killer.start()
        r = http.send(request)
        killer.join()
    assert r.status_code in (503, 504), r.text
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    assert time.monotonic() - started < 8
