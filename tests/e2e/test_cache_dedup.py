"""In-flight dedup through the real gateway: concurrent identical requests, plain or
streamed, that ask for the cache share one upstream call; when that call fails, the others
make their own, and the error is never stored."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.e2e.cache_caller import CACHE, Caller, messages, upstream_calls
from tests.e2e.usage_logs import usage_logs
from tests.fakes.openai_server import ANSWER, FakeOpenAIState
from tests.harness import Gateway

pytestmark = pytest.mark.e2e


@pytest.fixture
def slow(fake_openai: tuple[str, FakeOpenAIState]) -> Iterator[FakeOpenAIState]:
    _, state = fake_openai
    before = state.slow_seconds
    state.slow_seconds = 1.0
    yield state
    state.slow_seconds = before


def test_concurrent_identical_requests_share_one_upstream_call(
    gateway: Gateway, slow: FakeOpenAIState
) -> None:
    caller, msgs = Caller(gateway, "cache-dedup"), messages()
    body = {"model": "slow", "messages": msgs, "cache": CACHE}
    with ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(lambda _: caller.post(body), range(6)))
    assert [r.status_code for r in responses] == [200] * 6
    assert sorted(r.headers["x-aigw-cache"] for r in responses) == ["hit"] * 5 + ["miss"]
    assert {r.json()["choices"][0]["message"]["content"] for r in responses} == {ANSWER}
    assert upstream_calls(slow, msgs) == 1
    rows = usage_logs(gateway, caller.key_id, expected=6)
    assert sorted(r["status"] for r in rows) == ["cache_hit"] * 5 + ["ok"]


def test_concurrent_identical_streams_share_one_upstream_call(
    gateway: Gateway, slow: FakeOpenAIState
) -> None:
    caller, msgs = Caller(gateway, "cache-dedup-stream"), messages()
    body = {"model": "slow", "messages": msgs, "cache": CACHE}
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: caller.stream(body), range(4)))
    assert sorted(h["x-aigw-cache"] for h, _ in results) == ["hit"] * 3 + ["miss"]
    assert all(events == results[0][1] for _, events in results)
    assert results[0][1][-1] == "[DONE]"
    assert upstream_calls(slow, msgs) == 1


def test_followers_of_a_failed_leader_make_their_own_calls(
    gateway: Gateway, fake_openai: tuple[str, FakeOpenAIState]
) -> None:
    caller, msgs = Caller(gateway, "cache-dedup-fail"), messages()
    body = {"model": "broken", "messages": msgs, "cache": CACHE}
    with ThreadPoolExecutor(3) as pool:
        responses = list(pool.map(lambda _: caller.post(body), range(3)))
    assert [r.status_code for r in responses] == [500] * 3
    # an error is never stored: a later request calls upstream again
    calls = upstream_calls(fake_openai[1], msgs)
    assert caller.post(body).status_code == 500
    assert upstream_calls(fake_openai[1], msgs) > calls
