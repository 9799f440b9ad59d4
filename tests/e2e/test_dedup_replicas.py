"""In-flight dedup across two ingress replicas sharing Redis: identical cacheable requests
on different replicas make one upstream call between them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from uuid import uuid4

import httpx
import pytest

from tests.e2e.conftest import make_key
from tests.fakes.openai_server import ANSWER, FakeOpenAIState
from tests.fakes.server import free_port
from tests.harness import Gateway

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def replica(gateway: Gateway) -> str:
    port = free_port()
    gateway.start_replica(port)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(url + "/health/liveliness", timeout=1).status_code == 200:
                return url
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the replica did not start"
        time.sleep(0.1)


@pytest.fixture
def slow(fake_openai: tuple[str, FakeOpenAIState]) -> Iterator[FakeOpenAIState]:
    _, state = fake_openai
    before = state.slow_seconds
    state.slow_seconds = 1.5
    yield state
    state.slow_seconds = before


def _post(base: str, secret: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(base + "/v1/chat/completions", json=body, timeout=30,
                      headers={"authorization": f"Bearer {secret}"})


def _wait_known(base: str, secret: str, within: float = 10.0) -> None:
    """Until ``base`` accepts a key just made on another replica: it arrives through the
    KV watch."""
    deadline = time.monotonic() + within
    while httpx.get(base + "/v1/models", timeout=2,
                    headers={"authorization": f"Bearer {secret}"}).status_code != 200:
        assert time.monotonic() < deadline, f"{base} never learnt the new key"
        time.sleep(0.05)


def _calls(state: FakeOpenAIState, msgs: list[dict[str, str]]) -> int:
    return sum(1 for body in state.requests if body.get("messages") == msgs)


def test_identical_requests_on_two_replicas_share_one_upstream_call(
    gateway: Gateway, replica: str, slow: FakeOpenAIState
) -> None:
    _, secret = make_key(gateway, alias="dedup-replicas")
    _wait_known(replica, secret)
    msgs = [{"role": "user", "content": f"share me {uuid4().hex}"}]
    body = {"model": "slow", "messages": msgs, "cache": {"ttl": 60}}
    bases = [gateway.base_url, replica] * 3
    with ThreadPoolExecutor(len(bases)) as pool:
        responses = list(pool.map(lambda base: _post(base, secret, body), bases))
    assert [r.status_code for r in responses] == [200] * len(bases), responses[0].text
    assert sorted(r.headers["x-aigw-cache"] for r in responses) == ["hit"] * 5 + ["miss"]
    assert {r.json()["choices"][0]["message"]["content"] for r in responses} == {ANSWER}
    assert _calls(slow, msgs) == 1


def test_a_failed_leader_on_one_replica_sends_the_other_to_make_its_own_call(
    gateway: Gateway, replica: str, fake_openai: tuple[str, FakeOpenAIState]
) -> None:
    _, secret = make_key(gateway, alias="dedup-replicas-fail")
    _wait_known(replica, secret)
    msgs = [{"role": "user", "content": f"fail me {uuid4().hex}"}]
    body = {"model": "broken", "messages": msgs, "cache": {"ttl": 60}}
    began = time.monotonic()
    with ThreadPoolExecutor(2) as pool:
        responses = list(pool.map(lambda base: _post(base, secret, body),
                                  [gateway.base_url, replica]))
    assert [r.status_code for r in responses] == [500, 500]
    assert time.monotonic() - began < 10  # the follower did not wait out its deadline
    assert _calls(fake_openai[1], msgs) >= 2  # an error is never handed on
