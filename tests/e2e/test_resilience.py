"""Fault tests: real ingress and worker processes, a fake OpenAI server that fails on cue.

The module runs its own gateway (own config with ``router_settings``, own fake server),
so its retries, fallbacks and cooldowns never change what other e2e modules see. Its
provider name (``hosted_vllm``, served by the OpenAI adapter) is its alone: workers of one
provider share a queue group on the session's NATS, and the session gateway's ``openai``
workers would take attempts for deployments they do not know.
"""

from __future__ import annotations

import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest

from cli.nats_server import NatsServer
from tests.e2e.conftest import MASTER_KEY
from tests.fakes import openai_server
from tests.fakes.server import free_port, serve
from tests.harness import Gateway, socket_owner, write_config
from tests.redis_server import RedisServer

PROVIDER = "hosted_vllm"
AUTH = {"authorization": f"Bearer {MASTER_KEY}"}
COOLDOWN = 2.0
DEADLINE = 5.0


def resilience_config(url: str) -> dict[str, object]:
    def dep(alias: str, upstream: str, **params: object) -> dict[str, object]:
        return {"model_name": alias, "litellm_params": {
            "model": f"{PROVIDER}/{upstream}", "api_base": f"{url}/v1", "api_key": "sk-fake",
            **params}}

    primaries = ["p-429", "p-500", "p-529", "p-timeout", "p-reset"]
    return {
        "model_list": [
            dep("p-429", "fail-429"),
            dep("p-500", "fail-500"),
            dep("p-529", "fail-529"),
            dep("p-timeout", "slow", timeout=1),
            dep("p-reset", "reset"),
            dep("backup", "gpt-4o-mini"),
            dep("alone-429", "fail-429"),
            dep("once", "fail-once"),
            dep("tiny", "context-small"),
            dep("hang-once", "hang-once"),
            dep("slow", "slow"),
            # a group whose first deployment fails while the switch is set
            dep("cool-group", "switch"),
            dep("cool-group", "gpt-4o-mini"),
        ],
        "router_settings": {
            "num_retries": 1,
            "timeout": DEADLINE,
            "allowed_fails": 1,
            "cooldown_time": COOLDOWN,
            "fallbacks": [{p: ["backup"]} for p in primaries],
            "context_window_fallbacks": [{"tiny": ["backup"]}],
        },
        "general_settings": {"master_key": MASTER_KEY},
    }


@pytest.fixture(scope="module")
def fake() -> Iterator[tuple[str, openai_server.FakeOpenAIState]]:
    state = openai_server.FakeOpenAIState(slow_seconds=3.0)
    with serve(openai_server.create_app(state)) as url:
        yield url, state


@pytest.fixture(scope="module")
def gw(
    nats_server: NatsServer,
    redis_server: RedisServer,
    fake: tuple[str, openai_server.FakeOpenAIState],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    work = tmp_path_factory.mktemp("resilience")
    config = write_config(work / "config.yaml", resilience_config(fake[0]))
    gateway = Gateway(nats_url=nats_server.url, config_path=config, log_dir=work,
                      env={"AIGW_HEARTBEAT": "0.5", "AIGW_HEARTBEAT_TIMEOUT": "2",
                           "REDIS_URL": redis_server.url})
    gateway.start_worker(PROVIDER)
    gateway.start_worker(PROVIDER)
    gateway.start_ingress()
    gateway.wait_ready()
    yield gateway
    gateway.stop()


def _client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url + "/v1", api_key=MASTER_KEY, max_retries=0,
                         timeout=30)


def _ask(base_url: str, model: str, content: str | None = None, stream: bool = False) -> str:
    messages: Any = [{"role": "user", "content": content or uuid.uuid4().hex}]
    client = _client(base_url)
    if stream:
        parts = client.chat.completions.create(model=model, messages=messages, stream=True)
        return "".join(c.choices[0].delta.content or "" for c in parts if c.choices)
    completion = client.chat.completions.create(model=model, messages=messages)
    return completion.choices[0].message.content or ""


def _deployments(base_url: str, model: str) -> dict[str, dict[str, Any]]:
    r = httpx.get(base_url + "/health", headers=AUTH, timeout=5)
    assert r.status_code == 200, r.text
    return {d["model"]: d for d in r.json()["deployments"] if d["model_name"] == model}


def _eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


@pytest.mark.parametrize("model", ["p-429", "p-500", "p-529", "p-timeout", "p-reset"])
@pytest.mark.parametrize("stream", [False, True])
def test_a_failing_upstream_is_answered_by_the_fallback(
    gw: Gateway, model: str, stream: bool
) -> None:
    started = time.monotonic()
    assert _ask(gw.base_url, model, stream=stream) == openai_server.ANSWER
    # 429 says retry-after 7: past the 5 s deadline, so no retry waits for it.
    assert time.monotonic() - started < DEADLINE


def test_a_429_without_fallback_fails_fast_when_retry_after_is_past_the_deadline(
    gw: Gateway,
) -> None:
    started = time.monotonic()
    with pytest.raises(openai.RateLimitError) as info:
        _ask(gw.base_url, "alone-429")
    assert info.value.response.headers["retry-after"] == "7"
    assert time.monotonic() - started < 2.0


def test_a_transient_failure_is_retried_after_a_backoff(
    gw: Gateway, fake: tuple[str, openai_server.FakeOpenAIState]
) -> None:
    content = uuid.uuid4().hex
    assert _ask(gw.base_url, "once", content) == openai_server.ANSWER
    calls = [r for r in fake[1].requests if r["messages"][0]["content"] == content]
    assert len(calls) == 2


def test_a_context_length_error_falls_back_to_the_context_window_fallback(gw: Gateway) -> None:
    assert _ask(gw.base_url, "tiny") == openai_server.ANSWER


def test_cooldown_opens_after_allowed_fails_and_a_probe_closes_it(
    gw: Gateway, fake: tuple[str, openai_server.FakeOpenAIState]
) -> None:
    state = fake[1]
    state.switch_status = 500
    try:
        for _ in range(4):  # the rotation starts on the failing deployment every other time
            assert _ask(gw.base_url, "cool-group") == openai_server.ANSWER
        _eventually(lambda: _deployments(gw.base_url, "cool-group")["switch"]["state"]
                    == "cooling_down")
        before = len(state.requests)
        for _ in range(4):  # cooling: every request goes straight to the healthy one
            assert _ask(gw.base_url, "cool-group") == openai_server.ANSWER
        assert all(r["model"] == "gpt-4o-mini" for r in state.requests[before:])
    finally:
        state.switch_status = None
    time.sleep(COOLDOWN)
    assert _deployments(gw.base_url, "cool-group")["switch"]["state"] == "probe_ready"
    for _ in range(2):
        assert _ask(gw.base_url, "cool-group") == openai_server.ANSWER
    _eventually(lambda: _deployments(gw.base_url, "cool-group")["switch"]["state"]
                == "healthy")


def test_two_replicas_agree_on_cooldowns_and_load(
    gw: Gateway, fake: tuple[str, openai_server.FakeOpenAIState]
) -> None:
    port = free_port()
    replica = gw.start_replica(port)
    other = f"http://127.0.0.1:{port}"
    try:
        _eventually(lambda: _ready(other), timeout=30)
        state = fake[1]
        state.switch_status = 503
        try:
            for _ in range(4):
                _ask(gw.base_url, "cool-group")
            # the replica never saw a failure, yet it skips the deployment too
            _eventually(lambda: _deployments(other, "cool-group")["switch"]["state"]
                        == "cooling_down")
        finally:
            state.switch_status = None
        time.sleep(COOLDOWN)
        for _ in range(2):  # the replica probes and closes it; the first ingress sees it
            _ask(other, "cool-group")
        _eventually(lambda: _deployments(gw.base_url, "cool-group")["switch"]["state"]
                    == "healthy")

        # in-flight attempts on one replica show on the other (least-busy reads this)
        threads = [threading.Thread(target=_ask, args=(gw.base_url, "slow")) for _ in range(3)]
        for t in threads:
            t.start()
        _eventually(lambda: _deployments(other, "slow")["slow"]["in_flight"] == 3)
        for t in threads:
            t.join()
        _eventually(lambda: _deployments(other, "slow")["slow"]["in_flight"] == 0)
    finally:
        replica.send_signal(signal.SIGTERM)
        replica.wait(10)


def _ready(base_url: str) -> bool:
    try:
        return httpx.get(base_url + "/health/readiness", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_worker_killed_before_the_first_chunk_is_retried_on_another_worker(
    gw: Gateway, fake: tuple[str, openai_server.FakeOpenAIState]
) -> None:
    state = fake[1]
    state.slow_seconds = 30.0
    content = uuid.uuid4().hex
    key = f'[{{"role": "user", "content": "{content}"}}]'
    result: dict[str, object] = {}

    def call() -> None:
        try:
            result["answer"] = _ask(gw.base_url, "hang-once", content, stream=True)
        except Exception as exc:
            result["error"] = exc

    thread = threading.Thread(target=call)
    started = time.monotonic()
    thread.start()
    try:
        _eventually(lambda: key in state.client_ports)
        workers = [p for _, p in gw.workers if p.poll() is None]
        owner = socket_owner(state.client_ports[key], [p.pid for p in workers])
        assert owner is not None, "no worker holds the upstream connection"
        victim = next(p for p in workers if p.pid == owner)
        victim.send_signal(signal.SIGKILL)
        victim.wait(5)
        thread.join(20)
        assert result.get("answer") == openai_server.ANSWER, result
        assert time.monotonic() - started < DEADLINE + 1
    finally:
        state.slow_seconds = 3.0
        gw.start_worker(PROVIDER)  # the module's gateway keeps two workers
