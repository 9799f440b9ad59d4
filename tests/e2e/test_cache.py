"""The response cache and in-flight dedup through the real gateway (Redis, NATS, workers).

Every test uses a fresh virtual key: entries are scoped per key when it has no team, so
tests never see each other's entries, and its usage logs hold only its own events.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import openai
import pytest
import redis
import yaml
from openai.types.chat import ChatCompletionChunk

from cli.nats_server import NatsServer
from tests.e2e.conftest import MASTER_KEY, make_key
from tests.fakes.openai_server import ANSWER, FakeOpenAIState
from tests.harness import Gateway, write_config
from tests.redis_server import RedisServer

pytestmark = pytest.mark.e2e
MASTER = {"authorization": f"Bearer {MASTER_KEY}"}
CACHE = {"ttl": 60}


def messages() -> list[dict[str, str]]:
    return [{"role": "user", "content": f"cache me {uuid4().hex}"}]


def upstream_calls(state: FakeOpenAIState, msgs: list[dict[str, str]]) -> int:
    return sum(1 for body in state.requests if body.get("messages") == msgs)


def logs(gateway: Gateway, key_id: str, expected: int, within: float = 20.0,
         ) -> list[dict[str, Any]]:
    deadline = time.monotonic() + within
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        r = httpx.get(gateway.base_url + "/v1/usage/logs", headers=MASTER, timeout=10,
                      params={"key_id": key_id, "limit": 1000, "days": 1})
        if r.status_code == 200:
            rows = r.json()["data"]
            if len(rows) >= expected:
                # Not synchronisation: the check that no event is counted twice. An event
                # that should not exist cannot be polled for; one on its way lands by now.
                time.sleep(1.0)
                r = httpx.get(gateway.base_url + "/v1/usage/logs", headers=MASTER,
                              timeout=10, params={"key_id": key_id, "limit": 1000, "days": 1})
                return list(r.json()["data"])
        time.sleep(0.2)
    raise AssertionError(f"{len(rows)} events after {within}s, expected {expected}: {rows}")


class Entries:
    """The session gateway's cache entries in Redis. An entry is stored after its answer
    has gone out, so a test waits for it to appear before asking again."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._seen = self._keys()

    def _keys(self) -> set[bytes]:
        return set(self._client.scan_iter(match="aigw:cache:v1:*", count=1000))

    def wait_stored(self, count: int = 1, within: float = 10.0) -> set[bytes]:
        """The ``count`` entries stored since the last call (or since this was made)."""
        deadline = time.monotonic() + within
        while len(new := self._keys() - self._seen) < count:
            assert time.monotonic() < deadline, f"{len(new)} of {count} entries stored"
            time.sleep(0.02)
        self._seen |= new
        return new


@pytest.fixture
def entries(redis_server: RedisServer) -> Iterator[Entries]:
    client = redis.Redis.from_url(redis_server.url)
    try:
        yield Entries(client)
    finally:
        client.close()


class Caller:
    def __init__(self, gateway: Gateway, alias: str) -> None:
        self.key_id, secret = make_key(gateway, alias=alias)
        self.url = gateway.base_url + "/v1/chat/completions"
        self.headers = {"authorization": f"Bearer {secret}"}
        self.sdk = openai.OpenAI(base_url=gateway.base_url + "/v1", api_key=secret,
                                 max_retries=0)

    def post(self, body: dict[str, Any], headers: dict[str, str] | None = None,
             path: str = "/v1/chat/completions") -> httpx.Response:
        url = self.url.replace("/v1/chat/completions", path)
        return httpx.post(url, json=body, headers={**self.headers, **(headers or {})},
                          timeout=30)

    def stream(self, body: dict[str, Any]) -> tuple[httpx.Headers, list[str]]:
        with httpx.stream("POST", self.url, json={**body, "stream": True},
                          headers=self.headers, timeout=30) as r:
            assert r.status_code == 200, r.read()
            events = [line.removeprefix("data: ") for line in r.iter_lines()
                      if line.startswith("data: ")]
            return r.headers, events


@pytest.fixture
def slow(fake_openai: tuple[str, FakeOpenAIState]) -> Iterator[FakeOpenAIState]:
    _, state = fake_openai
    before = state.slow_seconds
    state.slow_seconds = 1.0
    yield state
    state.slow_seconds = before


def test_a_request_without_cache_controls_is_never_cached(
    gateway: Gateway, fake_openai: tuple[str, FakeOpenAIState]
) -> None:
    caller, msgs = Caller(gateway, "cache-off"), messages()
    for _ in range(2):
        r = caller.post({"model": "gpt-4o-mini", "messages": msgs})
        assert r.status_code == 200
        assert "x-aigw-cache" not in r.headers
    assert upstream_calls(fake_openai[1], msgs) == 2


def test_an_identical_request_is_a_free_hit_accounted_with_the_cost_it_saved(
    gateway: Gateway, fake_openai: tuple[str, FakeOpenAIState]
) -> None:
    caller, msgs = Caller(gateway, "cache-hit"), messages()
    body = {"model": "gpt-4o-mini", "messages": msgs, "cache": CACHE}
    first = caller.post(body)
    assert first.status_code == 200, first.text
    assert first.headers["x-aigw-cache"] == "miss"
    cost = Decimal(first.headers["x-aigw-cost-usd"])
    assert cost > 0

    second = caller.post({**body, "user": "someone-else", "metadata": {"run": "2"}})
    assert second.status_code == 200, second.text
    assert second.headers["x-aigw-cache"] == "hit"
    assert second.headers["x-aigw-cost-usd"] == "0"
    hit = second.json()
    assert hit["usage"]["cost"] == 0
    assert hit["usage"]["total_tokens"] == first.json()["usage"]["total_tokens"]
    assert hit["choices"] == first.json()["choices"]

    # the SDK sees a normal completion
    sdk = caller.sdk.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=msgs, extra_body={"cache": CACHE})  # type: ignore[arg-type]
    assert sdk.headers["x-aigw-cache"] == "hit"
    assert sdk.parse().choices[0].message.content == ANSWER

    state = fake_openai[1]
    assert upstream_calls(state, msgs) == 1
    assert all("cache" not in b for b in state.requests if b.get("messages") == msgs)

    rows = logs(gateway, caller.key_id, expected=3)
    statuses = sorted(r["status"] for r in rows)
    assert statuses == ["cache_hit", "cache_hit", "ok"]
    ok = next(r for r in rows if r["status"] == "ok")
    assert Decimal(ok["cost"]) == cost
    for row in rows:
        if row["status"] == "cache_hit":
            assert Decimal(row["cost"]) == 0
            assert Decimal(row["saved_cost"]) == cost
            assert row["model_alias"] == "gpt-4o-mini"
            assert row["provider"] == "openai"
            assert row["prompt_tokens"] == 0
    summary = httpx.get(gateway.base_url + "/v1/usage/summary", headers=MASTER,
                        params={"key_id": caller.key_id, "days": 1}).json()
    assert Decimal(summary["cost"]) == cost
    assert Decimal(summary["saved_cost"]) == 2 * cost


def test_a_streamed_answer_is_replayed_from_the_cache_as_sse(
    gateway: Gateway, fake_openai: tuple[str, FakeOpenAIState], entries: Entries
) -> None:
    caller, msgs = Caller(gateway, "cache-stream"), messages()
    body = {"model": "gpt-4o-mini", "messages": msgs, "cache": CACHE,
            "stream_options": {"include_usage": True}}
    headers, first = caller.stream(body)
    assert headers["x-aigw-cache"] == "miss"
    entries.wait_stored()  # the entry is stored after the stream ends
    headers, again = caller.stream(body)
    assert headers["x-aigw-cache"] == "hit"
    assert headers["content-type"].startswith("text/event-stream")
    assert again[-1] == "[DONE]"
    assert again[:-2] == first[:-2]  # content chunks exactly as streamed the first time
    assert json.loads(first[-2])["usage"]["cost"] > 0
    usage = json.loads(again[-2])["usage"]
    assert usage["cost"] == 0
    assert usage["completion_tokens"] == json.loads(first[-2])["usage"]["completion_tokens"]

    # without include_usage: no usage chunk; through the SDK: the same text
    _, plain = caller.stream({k: v for k, v in body.items() if k != "stream_options"})
    assert plain == [*first[:-2], "[DONE]"]
    sdk_stream = caller.sdk.chat.completions.create(
        model="gpt-4o-mini", messages=msgs, stream=True,  # type: ignore[arg-type]
        extra_body={"cache": CACHE})
    sdk_chunks: list[ChatCompletionChunk] = list(sdk_stream)  # type: ignore[arg-type]
    text = "".join(c.choices[0].delta.content or "" for c in sdk_chunks if c.choices)
    assert text == ANSWER

    # the same question asked without streaming is answered from the streamed entry
    r = caller.post(body)
    assert r.headers["x-aigw-cache"] == "hit"
    assert r.json()["choices"][0]["message"]["content"] == ANSWER
    assert upstream_calls(fake_openai[1], msgs) == 1


def test_a_non_streamed_answer_is_replayed_to_a_streamed_request(
    gateway: Gateway, fake_openai: tuple[str, FakeOpenAIState], entries: Entries
) -> None:
    caller, msgs = Caller(gateway, "cache-cross"), messages()
    body = {"model": "gpt-4o-mini", "messages": msgs, "cache": CACHE}
    assert caller.post(body).headers["x-aigw-cache"] == "miss"
    entries.wait_stored()
    headers, events = caller.stream(body)
    assert headers["x-aigw-cache"] == "hit"
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == ANSWER
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert upstream_calls(fake_openai[1], msgs) == 1


def test_no_store_and_no_cache_are_honoured(
    gateway: Gateway, fake_openai: tuple[str, FakeOpenAIState], entries: Entries
) -> None:
    caller, msgs = Caller(gateway, "cache-controls"), messages()
    base = {"model": "gpt-4o-mini", "messages": msgs}
    # no-store: answered, never stored
    r = caller.post({**base, "cache": {"ttl": 60, "no-store": True}})
    assert r.status_code == 200
    # (an entry wrongly stored would be written before the next request's round trip
    # through NATS, a worker and the upstream is over: that request would be a hit)
    assert caller.post({**base, "cache": CACHE}).headers["x-aigw-cache"] == "miss"
    assert upstream_calls(fake_openai[1], msgs) == 2
    entries.wait_stored()
    # now stored: no-cache still calls upstream, and says miss
    assert caller.post({**base, "cache": CACHE}).headers["x-aigw-cache"] == "hit"
    r = caller.post({**base, "cache": {"ttl": 60, "no-cache": True}})
    assert r.headers["x-aigw-cache"] == "miss"
    assert upstream_calls(fake_openai[1], msgs) == 3
    # the same through Cache-Control
    r = caller.post(base, headers={"cache-control": "max-age=60"})
    assert r.headers["x-aigw-cache"] == "hit"
    r = caller.post(base, headers={"cache-control": "max-age=60, no-cache"})
    assert r.headers["x-aigw-cache"] == "miss"
    assert upstream_calls(fake_openai[1], msgs) == 4


def test_a_malformed_cache_field_is_a_400(gateway: Gateway) -> None:
    caller = Caller(gateway, "cache-bad")
    r = caller.post({"model": "gpt-4o-mini", "messages": messages(), "cache": {"ttl": "x"}})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "cache.ttl"


def test_entries_are_scoped_per_key_without_a_team(
    gateway: Gateway, fake_openai: tuple[str, FakeOpenAIState], entries: Entries
) -> None:
    one, other, msgs = Caller(gateway, "cache-a"), Caller(gateway, "cache-b"), messages()
    body = {"model": "gpt-4o-mini", "messages": msgs, "cache": CACHE}
    assert one.post(body).headers["x-aigw-cache"] == "miss"
    entries.wait_stored()
    assert other.post(body).headers["x-aigw-cache"] == "miss"
    assert one.post(body).headers["x-aigw-cache"] == "hit"
    assert upstream_calls(fake_openai[1], msgs) == 2


def test_embeddings_are_cached(
    gateway: Gateway, fake_openai: tuple[str, FakeOpenAIState], entries: Entries
) -> None:
    caller, text = Caller(gateway, "cache-embed"), f"embed {uuid4().hex}"
    body = {"model": "text-embedding-3-small", "input": text, "cache": CACHE}
    first = caller.post(body, path="/v1/embeddings")
    entries.wait_stored()
    second = caller.post(body, path="/v1/embeddings")
    assert (first.headers["x-aigw-cache"], second.headers["x-aigw-cache"]) == ("miss", "hit")
    assert second.json()["data"] == first.json()["data"]
    assert sum(1 for b in fake_openai[1].requests if b.get("input") == text) == 1


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
    rows = logs(gateway, caller.key_id, expected=6)
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


# ---- cache settings from the config file (LiteLLM's litellm_settings.cache) -------------


@pytest.fixture
def cache_on_gateway(
    nats_server: NatsServer, fake_openai: tuple[str, FakeOpenAIState],
    redis_server: RedisServer, tmp_path: Path,
) -> Iterator[Gateway]:
    """A gateway of its own whose config turns the cache on for chat only. Its provider
    (``lm_studio``) is its own, so no other gateway's workers take its attempts."""
    url, _ = fake_openai
    config = {
        "model_list": [{"model_name": alias, "litellm_params": {
            "model": f"lm_studio/{alias}", "api_base": f"{url}/v1", "api_key": "sk-fake"}}
            for alias in ("gpt-4o-mini", "text-embedding-3-small")],
        "general_settings": {"master_key": MASTER_KEY},
        "litellm_settings": {"cache": True, "cache_params": {
            "type": "redis", "ttl": 600, "namespace": f"ns-{uuid4().hex[:8]}",
            "supported_call_types": ["acompletion", "completion"]}},
    }
    gw = Gateway(nats_url=nats_server.url, log_dir=tmp_path,
                 config_path=write_config(tmp_path / "config.yaml", config),
                 env={"REDIS_URL": redis_server.url})
    try:
        gw.start_worker("lm_studio")
        gw.start_ingress()
        gw.wait_ready()
        yield gw
    finally:
        gw.stop()


def test_with_cache_true_in_the_config_an_identical_request_without_cache_fields_is_a_hit(
    cache_on_gateway: Gateway, fake_openai: tuple[str, FakeOpenAIState],
    redis_server: RedisServer,
) -> None:
    caller, msgs = Caller(cache_on_gateway, "config-cache"), messages()
    body = {"model": "gpt-4o-mini", "messages": msgs}
    first = caller.post(body)
    assert first.status_code == 200, first.text
    assert first.headers["x-aigw-cache"] == "miss"
    second = caller.post(body)
    assert second.headers["x-aigw-cache"] == "hit"
    assert second.json()["choices"] == first.json()["choices"]
    assert upstream_calls(fake_openai[1], msgs) == 1

    # The request's own word still wins.
    assert caller.post(body, {"cache-control": "no-cache"}).headers["x-aigw-cache"] == "miss"
    assert upstream_calls(fake_openai[1], msgs) == 2

    # Entries live in Redis under the config's namespace.
    namespace = yaml.safe_load(cache_on_gateway.config_path.read_text())[
        "litellm_settings"]["cache_params"]["namespace"]
    client = redis.Redis.from_url(redis_server.url)
    try:
        assert client.keys(f"aigw:cache:v1:{namespace}:*")
    finally:
        client.close()

    # Embeddings are not among the configured call types: never cached by default.
    embed = {"model": "text-embedding-3-small", "input": f"x {uuid4().hex}"}
    for _ in range(2):
        r = caller.post(embed, path="/v1/embeddings")
        assert r.status_code == 200, r.text
        assert "x-aigw-cache" not in r.headers
