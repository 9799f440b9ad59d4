"""Faults that take a process away mid-request: a worker killed while its stream is being
relayed or before it answers, and the NATS server itself killed and restarted.

Every test here runs its own nats-server (on a fixed port, so it can come back where the
gateway expects it), its own fake OpenAI server and its own gateway processes: killing
any of them must not disturb other modules.
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from cli.nats_server import NatsServer
from tests.fakes import openai_server
from tests.fakes.openai_server import Served, running
from tests.fakes.server import free_port
from tests.harness import Gateway, socket_owner, write_config
from tests.usage_stream import read_stream_events

pytestmark = pytest.mark.e2e

MASTER_KEY = "sk-master-faults"
AUTH = {"authorization": f"Bearer {MASTER_KEY}"}
HEARTBEAT_TIMEOUT = 2.0
# What a loaded two-core machine may add to the heartbeat deadline before a stream ends.
SLACK = 4.0
# The prices of the ``hang`` group, per token.
HANG_IN, HANG_OUT = Decimal("0.001"), Decimal("0.002")


def faults_config(url: str) -> dict[str, object]:
    def dep(alias: str, upstream: str, **extra: str) -> dict[str, object]:
        return {"model_name": alias, "litellm_params": {
            "model": f"openai/{upstream}", "api_base": f"{url}/v1", "api_key": "sk-fake",
            **extra}}

    priced = {"input_cost_per_token": str(HANG_IN), "output_cost_per_token": str(HANG_OUT)}
    return {
        "model_list": [dep("gpt-4o-mini", "gpt-4o-mini"), dep("stall", "stall-midstream"),
                       dep("slow", "slow"),
                       # hangs the first time it sees a conversation: the next try answers
                       dep("hang", "hang-once", **priced), dep("hang", "hang-once", **priced)],
        "general_settings": {"master_key": MASTER_KEY},
    }


@pytest.fixture
def fake() -> Iterator[Served]:
    with running(openai_server.FakeOpenAIState(slow_seconds=30.0)) as served:
        yield served


@pytest.fixture
def gw(
    own_nats: NatsServer, fake: Served, tmp_path: Path,
) -> Iterator[Gateway]:
    config = write_config(tmp_path / "config.yaml", faults_config(fake.url))
    gateway = Gateway(nats_url=own_nats.url, config_path=config,
                      log_dir=tmp_path,
                      env={"AIGW_HEARTBEAT": "0.5",
                           "AIGW_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT)})
    gateway.start_worker("openai")
    gateway.start_worker("openai")
    gateway.start_ingress()
    gateway.wait_ready()
    yield gateway
    gateway.stop()


# ---- helpers -------------------------------------------------------------------------------


@dataclass
class SseCall:
    """A streamed chat request read in a thread, each ``data:`` payload as it arrives."""

    base_url: str
    model: str
    content: str = field(default_factory=lambda: uuid.uuid4().hex)
    status: int | None = None
    request_id: str | None = None
    data: list[str] = field(default_factory=list)
    ended_at: float | None = None
    failure: BaseException | None = None
    _thread: threading.Thread | None = None

    @property
    def messages(self) -> list[dict[str, str]]:
        return [{"role": "user", "content": self.content}]

    def start(self) -> SseCall:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        body = {"model": self.model, "messages": self.messages, "stream": True}
        try:
            with httpx.stream("POST", self.base_url + "/v1/chat/completions", json=body,
                              headers=AUTH, timeout=60) as r:
                self.status = r.status_code
                self.request_id = r.headers.get("x-request-id")
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        self.data.append(line[len("data: "):])
        except BaseException as exc:  # reported by the test, not lost in the thread
            self.failure = exc
        finally:
            self.ended_at = time.monotonic()

    def join(self, timeout: float) -> None:
        assert self._thread is not None
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"the stream did not end within {timeout} s"
        assert self.failure is None, repr(self.failure)

    def chunks(self) -> list[dict[str, Any]]:
        return [json.loads(d) for d in self.data if d != "[DONE]"]

    def text(self) -> str:
        return "".join(c["choices"][0]["delta"].get("content") or ""
                       for c in self.chunks() if c.get("choices"))


def _eventually(
    check: Callable[[], bool], timeout: float, what: str, gw: Gateway | None = None
) -> float:
    """Poll ``check`` until it holds; the seconds it took. On failure the message carries
    the gateway's logs, when given."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started >= timeout:
            logs = f"\n{gw.all_logs()}" if gw is not None else ""
            raise AssertionError(f"{what}: not within {timeout} s{logs}")
        time.sleep(0.05)
    return time.monotonic() - started


def _chat(base_url: str, model: str = "gpt-4o-mini", timeout: float = 10) -> httpx.Response:
    return httpx.post(base_url + "/v1/chat/completions", headers=AUTH, timeout=timeout,
                      json={"model": model,
                            "messages": [{"role": "user", "content": uuid.uuid4().hex}]})


def _answers(base_url: str) -> bool:
    try:
        return _chat(base_url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def _assert_openai_error(error: object) -> dict[str, Any]:
    assert isinstance(error, dict), error
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"]
    return error


def _ends_with_error_event(call: SseCall) -> dict[str, Any]:
    """The stream's last two events: an OpenAI error object, then ``[DONE]``."""
    assert call.status == 200, call.status
    assert call.data[-1] == "[DONE]", call.data[-3:]
    return _assert_openai_error(json.loads(call.data[-2]).get("error"))


def usage_events(nats_url: str, request_id: str) -> list[dict[str, Any]]:
    """The usage events of one request in the ``AIGW_USAGE`` stream, read back directly."""
    events = asyncio.run(read_stream_events(nats_url))
    return [e for e in events if e["request_id"] == request_id]


def _upstream_calls(state: openai_server.FakeOpenAIState, content: str) -> int:
    return sum(r["messages"][0]["content"] == content for r in state.requests)


# ---- a worker killed mid-stream ------------------------------------------------------------


def test_a_worker_killed_mid_stream_ends_the_stream_with_an_error_event_and_no_retry(
    gw: Gateway, fake: Served
) -> None:
    call = SseCall(gw.base_url, "stall").start()
    # the role chunk and three words: the client has content, so no failover is allowed
    _eventually(lambda: len(call.data) >= 4 or call.ended_at is not None, 20,
                "the first chunks")
    assert call.text() == "Hello from the", call.data
    key = json.dumps(call.messages)
    workers = [p for _, p in gw.workers]
    owner = socket_owner(fake.state.client_ports[key], [p.pid for p in workers])
    assert owner is not None, "no worker holds the upstream connection"
    victim = next(p for p in workers if p.pid == owner)
    victim.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    victim.wait(5)

    call.join(HEARTBEAT_TIMEOUT + SLACK + 5)
    assert call.ended_at is not None
    assert call.ended_at - killed_at < HEARTBEAT_TIMEOUT + SLACK
    error = _ends_with_error_event(call)
    assert (error["type"], error["code"]) == ("timeout_error", "worker_timeout")
    assert call.text() == "Hello from the"  # nothing after the error, nothing repeated
    assert _upstream_calls(fake.state, call.content) == 1  # not retried on the other worker
    # the surviving worker still serves
    assert _chat(gw.base_url).status_code == 200

    # The killed worker never accounts its call: the ingress does, once, with an estimate
    # of the prompt and of the three words it relayed (14 characters: 4 tokens).
    assert call.request_id is not None
    _eventually(lambda: bool(usage_events(gw.nats_url, call.request_id or "")), 10,
                "the usage event of the lost attempt", gw)
    [event] = usage_events(gw.nats_url, call.request_id)
    assert event["event_id"] == f"{call.request_id}:0:worker"
    assert (event["status"], event["error_type"], event["http_status"]) == (
        "error", "timeout", 504)
    assert event["usage_estimated"] is True
    assert event["streamed"] is True
    # the prompt at four characters a token: a 32-character hex content is 8 tokens, and
    # 4 more for the message
    assert event["prompt_tokens"] == 12
    assert event["completion_tokens"] == 4
    assert event["latency_ms"] >= HEARTBEAT_TIMEOUT * 1000


def test_a_worker_killed_before_it_answers_is_accounted_once_and_the_next_one_answers(
    gw: Gateway, fake: Served
) -> None:
    content = uuid.uuid4().hex
    messages = [{"role": "user", "content": content}]
    result: dict[str, Any] = {}

    def call() -> None:
        result["response"] = httpx.post(
            gw.base_url + "/v1/chat/completions", headers=AUTH, timeout=30,
            json={"model": "hang", "messages": messages})

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    key = json.dumps(messages)
    _eventually(lambda: key in fake.state.client_ports, 10, "the call reaches the upstream")
    workers = [p for _, p in gw.workers]
    owner = socket_owner(fake.state.client_ports[key], [p.pid for p in workers])
    assert owner is not None, "no worker holds the upstream connection"
    victim = next(p for p in workers if p.pid == owner)
    victim.send_signal(signal.SIGKILL)
    victim.wait(5)

    thread.join(HEARTBEAT_TIMEOUT + SLACK + 10)
    assert not thread.is_alive(), "the call did not end"
    response: httpx.Response = result["response"]
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == openai_server.ANSWER
    assert _upstream_calls(fake.state, content) == 2
    request_id = response.headers["x-request-id"]

    # two events: the lost attempt at its estimated prompt, the answer at its real usage
    _eventually(lambda: len(usage_events(gw.nats_url, request_id)) >= 2, 10,
                "the usage events of both attempts", gw)
    lost, ok = sorted(usage_events(gw.nats_url, request_id), key=lambda e: e["attempt"])
    prompt = 12  # the 32-character hex content at four characters a token, 4 for the message
    assert (lost["attempt"], lost["event_id"]) == (0, f"{request_id}:0:worker")
    assert (lost["status"], lost["error_type"], lost["http_status"]) == (
        "error", "timeout", 504)
    assert (lost["usage_estimated"], lost["streamed"]) == (True, False)
    assert (lost["prompt_tokens"], lost["completion_tokens"]) == (prompt, 0)
    assert Decimal(lost["cost"]) == prompt * HANG_IN
    assert lost["price_version"] is not None
    assert lost["deployment_id"] != ok["deployment_id"]  # failed over within the group

    usage = response.json()["usage"]
    assert (ok["attempt"], ok["status"], ok["usage_estimated"]) == (1, "ok", False)
    assert (ok["prompt_tokens"], ok["completion_tokens"]) == (
        usage["prompt_tokens"], usage["completion_tokens"])
    assert Decimal(ok["cost"]) == (usage["prompt_tokens"] * HANG_IN
                                   + usage["completion_tokens"] * HANG_OUT)
    assert Decimal(response.headers["x-aigw-cost-usd"]) == Decimal(ok["cost"])

    # the request's totals: each attempt once, nothing else
    events = usage_events(gw.nats_url, request_id)
    assert len(events) == 2
    assert sum(e["prompt_tokens"] for e in events) == prompt + usage["prompt_tokens"]
    assert sum(e["completion_tokens"] for e in events) == usage["completion_tokens"]
    assert sum(Decimal(e["cost"]) for e in events) == (
        (prompt + usage["prompt_tokens"]) * HANG_IN + usage["completion_tokens"] * HANG_OUT)


# ---- NATS killed and restarted -------------------------------------------------------------


def _chat_as(base_url: str, secret: str) -> int:
    r = httpx.post(base_url + "/v1/chat/completions", timeout=10,
                   headers={"authorization": f"Bearer {secret}"},
                   json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "k"}]})
    return r.status_code


def test_a_nats_restart_fails_requests_in_flight_cleanly_and_the_same_processes_serve_again(
    gw: Gateway, own_nats: NatsServer, fake: Served
) -> None:
    port = free_port()
    replica = f"http://127.0.0.1:{port}"
    gw.start_replica(port)
    _eventually(lambda: _answers(replica), 30, "the replica answers")
    assert _chat(gw.base_url).status_code == 200

    # in flight when NATS dies: a stream that has sent content, a call still waiting
    fake.state.slow_seconds = 5.0  # both upstream calls finish while NATS is away
    completed = fake.state.completed
    stream = SseCall(gw.base_url, "stall").start()
    _eventually(lambda: len(stream.data) >= 4 or stream.ended_at is not None, 20,
                "the first chunks")
    waiting: dict[str, Any] = {}
    waiter = threading.Thread(target=lambda: waiting.update(
        response=_chat(gw.base_url, "slow", timeout=30), ended_at=time.monotonic()))
    waiter.start()
    _eventually(lambda: any(r["model"] == "slow" for r in fake.state.requests), 10,
                "the waiting call reaches the upstream")
    own_nats.kill()
    killed_at = time.monotonic()

    # (a) both end within the heartbeat deadline, as OpenAI errors; nothing hangs
    stream.join(HEARTBEAT_TIMEOUT + SLACK + 5)
    assert stream.ended_at is not None
    assert stream.ended_at - killed_at < HEARTBEAT_TIMEOUT + SLACK
    error = _ends_with_error_event(stream)
    assert (error["type"], error["code"]) == ("timeout_error", "worker_timeout")
    assert "connection to NATS" in error["message"]
    waiter.join(HEARTBEAT_TIMEOUT + SLACK + 5)
    assert waiting["ended_at"] - killed_at < HEARTBEAT_TIMEOUT + SLACK
    assert waiting["response"].status_code == 504, waiting["response"].text
    _assert_openai_error(waiting["response"].json()["error"])
    # a request while NATS is away is refused at once, not left to time out
    began = time.monotonic()
    refused = _chat(gw.base_url)
    assert time.monotonic() - began < 3
    assert refused.status_code == 503, refused.text
    assert _assert_openai_error(refused.json()["error"])["code"] == "nats_unavailable"

    # the worker finished both calls meanwhile: their usage events wait in its buffer
    _eventually(lambda: fake.state.completed == completed + 2, 15, "the upstream calls end")

    # (b) back on the same port and store: the same processes serve again, soon
    own_nats.start()
    restarted_at = time.monotonic()
    _eventually(lambda: _answers(gw.base_url), 10, "the ingress answers again", gw)
    _eventually(lambda: _answers(replica), 10, "the replica answers again", gw)
    assert time.monotonic() - restarted_at < 10
    assert all(p.poll() is None for p in [*(p for _, p in gw.workers), gw.ingress,
                                          *gw.extra_ingresses])
    again = SseCall(gw.base_url, "gpt-4o-mini").start()
    again.join(10)
    assert again.text() == openai_server.ANSWER and again.data[-1] == "[DONE]"

    # every worker took its queue subscription back: each answers some of the calls
    contents = [uuid.uuid4().hex for _ in range(16)]
    for content in contents:
        r = httpx.post(gw.base_url + "/v1/chat/completions", headers=AUTH, timeout=10,
                       json={"model": "gpt-4o-mini",
                             "messages": [{"role": "user", "content": content}]})
        assert r.status_code == 200, r.text
    pids = [p.pid for _, p in gw.workers]
    owners = {socket_owner(fake.state.client_ports[json.dumps(
        [{"role": "user", "content": c}])], pids) for c in contents}
    assert owners == set(pids)

    # the replicas' key mirrors follow KV again: a key made on one works on the other
    made = httpx.post(gw.base_url + "/admin/keys", json={}, headers=AUTH, timeout=10)
    assert made.status_code in (200, 201), made.text
    secret = made.json()["secret"]
    # (nats-py alone resumes a watch only after two missed 5 s heartbeats)
    _eventually(lambda: _chat_as(replica, secret) == 200, 5, "the new key on the replica",
                gw)
    revoked = httpx.delete(f"{gw.base_url}/admin/keys/{made.json()['id']}", headers=AUTH,
                           timeout=10)
    assert revoked.status_code == 200, revoked.text
    _eventually(lambda: _chat_as(replica, secret) == 401, 5, "the revoke on the replica",
                gw)

    # the worker's usage events of the calls that ended during the outage were kept, and
    # landed once each
    ids = [stream.request_id, waiting["response"].headers.get("x-request-id")]
    for request_id in ids:
        assert request_id is not None
        _eventually(lambda rid=request_id: len(usage_events(gw.nats_url, rid)) == 1, 15,
                    "the usage event of a call made during the outage")
        [event] = usage_events(gw.nats_url, request_id)
        assert event["status"] == "ok", event
