"""Long calls, client disconnects, and workers that come and go."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from cli.nats_server import NatsServer
from tests.e2e.conftest import MASTER_KEY, e2e_config
from tests.fakes.openai_server import FakeOpenAIState
from tests.harness import Gateway, socket_owner, write_config

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


def _tcp_rows() -> list[list[str]]:
    rows: list[list[str]] = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        rows += [line.split() for line in Path(table).read_text().splitlines()[1:]]
    return rows


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1], 16)


def _nats_client_ports(pid: int, nats_port: int) -> set[int]:
    """The local ports of process ``pid``'s connections to the nats-server (Linux /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            link = fd.readlink().as_posix()
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    return {_port(row[1]) for row in _tcp_rows()
            if row[9] in inodes and _port(row[2]) == nats_port}


def _kill_worker(gateway: Gateway, proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL a worker, then wait until the nats-server has closed its side of the dead
    worker's connections (none left ESTABLISHED or CLOSE_WAIT): it has dropped the worker's
    subscriptions, so NATS no longer hands it attempts."""
    nats_port = int(gateway.nats_url.rsplit(":", 1)[1])
    ports = _nats_client_ports(proc.pid, nats_port)

    def held_by_nats() -> bool:  # the server's side of those connections, still open
        return any(_port(row[1]) == nats_port and _port(row[2]) in ports
                   and row[3] in ("01", "08") for row in _tcp_rows())

    assert ports and held_by_nats(), "the worker holds no connection to NATS"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while held_by_nats():
        assert time.monotonic() < deadline, "NATS still holds the killed worker's connection"
        time.sleep(0.02)


def _chat(client: openai.OpenAI, model: str = "m") -> str:
    """One call with a content of its own; the content, to find the call upstream."""
    content = uuid.uuid4().hex
    completion = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": content}])
    assert completion.choices[0].message.content
    return content


def _caller(state: FakeOpenAIState, content: str, pids: list[int]) -> int | None:
    """The worker, among ``pids``, whose connection carried the upstream call of
    ``content`` (the fake server keeps each call's client port)."""
    port = state.client_ports[json.dumps([{"role": "user", "content": content}])]
    return socket_owner(port, pids)


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


def test_two_workers_share_the_load_and_one_survives_the_other(
    own_gateway: Gateway, fake_openai: tuple[str, FakeOpenAIState]
) -> None:
    _, state = fake_openai
    client = openai.OpenAI(base_url=own_gateway.base_url + "/v1", api_key=MASTER_KEY,
                           max_retries=0)
    (_, first), (_, second) = own_gateway.workers
    pids = [first.pid, second.pid]
    # Who made each call, read while its upstream connection is still open (kept alive).
    # Both take calls: one worker taking all 20 of a queue group's calls is a 2**-19 chance.
    callers = [_caller(state, _chat(client), pids) for _ in range(20)]
    assert None not in callers, callers
    assert set(callers) == set(pids), callers

    _kill_worker(own_gateway, first)
    callers = [_caller(state, _chat(client), [second.pid]) for _ in range(10)]
    assert callers == [second.pid] * 10, callers


def test_a_worker_killed_during_a_call_gives_a_clean_error_not_a_hang(
    own_gateway: Gateway, fake_openai: tuple[str, FakeOpenAIState]
) -> None:
    _, state = fake_openai
    state.slow_seconds = 30.0
    _, second = own_gateway.workers[1]
    _kill_worker(own_gateway, own_gateway.workers[0][1])  # only the second one is left
    messages = [{"role": "user", "content": uuid.uuid4().hex}]
    answers: list[httpx.Response] = []

    def call() -> None:
        answers.append(httpx.post(own_gateway.base_url + "/v1/chat/completions",
                                  headers=AUTH, timeout=15,
                                  json={"model": "slow", "messages": messages}))

    caller = threading.Thread(target=call, daemon=True)
    started = time.monotonic()
    caller.start()
    deadline = started + 10
    while json.dumps(messages) not in state.client_ports:  # the call is upstream now
        assert time.monotonic() < deadline, own_gateway.all_logs()
        time.sleep(0.02)
    second.send_signal(signal.SIGKILL)
    caller.join(15)
    [r] = answers
    assert r.status_code in (503, 504), r.text
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    assert time.monotonic() - started < 8
