"""The response cache through the real gateway (Redis, NATS, workers): only a request that
asks is cached; a hit is free and accounted with the cost it saved; streamed and plain
answers replayed to either kind of request; ``no-store`` and ``no-cache`` (in the body or
in Cache-Control) honoured; entries scoped per key; embeddings cached too.

Every test uses a fresh virtual key (``cache_caller.Caller``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from uuid import uuid4

import httpx
import pytest
import redis
from openai.types.chat import ChatCompletionChunk

from tests.e2e.cache_caller import CACHE, MASTER, Caller, Entries, messages, upstream_calls
from tests.e2e.usage_logs import usage_logs
from tests.fakes.openai_server import ANSWER, FakeOpenAIState
from tests.harness import Gateway
from tests.redis_server import RedisServer

pytestmark = pytest.mark.e2e


@pytest.fixture
def entries(redis_server: RedisServer) -> Iterator[Entries]:
    client = redis.Redis.from_url(redis_server.url)
    try:
        yield Entries(client)
    finally:
        client.close()


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

    rows = usage_logs(gateway, caller.key_id, expected=3)
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
