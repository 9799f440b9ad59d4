"""The semantic cache through real gateways: two ingress replicas on one NATS, a worker,
Redis, and the session's accounting (usage events land on the shared stream).

The fake upstream's ``concepts`` embeddings make paraphrases close and other questions
far (tests/fakes/concept_embeddings.py). Every test uses a team (and keys) of its own, so
its entries and its usage log are its own.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import nats
import pytest
from nats.js.errors import BucketNotFoundError

from cli.nats_server import NatsServer
from tests.e2e.conftest import MASTER_KEY
from tests.fakes.openai_server import ANSWER, FakeOpenAIState
from tests.fakes.server import free_port
from tests.harness import Gateway, write_config
from tests.redis_server import RedisServer

pytestmark = pytest.mark.e2e
MASTER = {"authorization": f"Bearer {MASTER_KEY}"}
FRANCE = "What is the capital of France?"
FRANCE_AGAIN = "Tell me France's capital city"
SPAIN = "What is the capital of Spain?"
BUCKET = "aigw_semantic_cache"


def config(openai_url: str) -> dict[str, Any]:
    # deepseek: a provider of this module's own, so no other gateway's workers take its calls.
    def entry(alias: str, upstream: str, price: str) -> dict[str, Any]:
        return {"model_name": alias, "litellm_params": {
            "model": f"deepseek/{upstream}", "api_base": f"{openai_url}/v1",
            "api_key": "sk-fake", "input_cost_per_token": price,
            "output_cost_per_token": price}}

    return {
        "model_list": [entry("chat", "gpt-4o-mini", "0.001"),
                       entry("chat-b", "gpt-4o", "0.001"),
                       entry("embed", "concepts-embed", "0.0001")],
        "general_settings": {"master_key": MASTER_KEY},
        "litellm_settings": {"cache": True, "cache_params": {
            "type": "redis-semantic", "similarity_threshold": 0.9,
            "redis_semantic_cache_embedding_model": "embed", "ttl": 600,
            "supported_call_types": ["acompletion"]}},
    }


@pytest.fixture(scope="module")
def semantic(
    nats_server: NatsServer, fake_openai: tuple[str, FakeOpenAIState],
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Gateway, str]]:
    """A gateway with the semantic cache on, and the URL of its second replica."""
    work = tmp_path_factory.mktemp("semantic")
    gw = Gateway(nats_url=nats_server.url, log_dir=work,
                 config_path=write_config(work / "config.yaml", config(fake_openai[0])),
                 env={"REDIS_URL": redis_server.url})
    port = free_port()
    try:
        gw.start_worker("deepseek")
        gw.start_ingress()
        gw.start_replica(port)
        gw.wait_ready()
        replica = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(replica + "/health/readiness", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, gw.all_logs()
            time.sleep(0.1)
        yield gw, replica
    finally:
        gw.stop()


def team_key(gw: Gateway, team: str | None = None) -> tuple[str, str, str]:
    """(team id, key id, secret): a new team unless ``team`` is given."""
    if team is None:
        r = httpx.post(gw.base_url + "/admin/teams", json={"alias": "semantic"},
                       headers=MASTER, timeout=10)
        assert r.status_code == 200, r.text
        team = str(r.json()["id"])
    r = httpx.post(gw.base_url + "/admin/keys", json={"team_id": team}, headers=MASTER,
                   timeout=10)
    assert r.status_code in (200, 201), r.text
    return team, r.json()["id"], r.json()["secret"]


def ask(url: str, secret: str, question: str, **fields: Any) -> httpx.Response:
    body = {"model": "chat", "messages": [{"role": "user", "content": question}], **fields}
    return httpx.post(url + "/v1/chat/completions", json=body, timeout=30,
                      headers={"authorization": f"Bearer {secret}"})


async def _count(nats_url: str) -> int:
    nc = await nats.connect(nats_url)
    try:
        kv = await nc.jetstream().key_value(BUCKET)
        try:
            return len(await kv.keys())
        except Exception:  # nats-py: "no keys found" when the bucket is empty
            return 0
    except BucketNotFoundError:
        return 0
    finally:
        await nc.close()


class Stored:
    """The shared bucket's entry count: an entry is written after its answer went out, so
    a test waits for it before asking again."""

    def __init__(self, nats_url: str) -> None:
        self.url = nats_url
        self.count = asyncio.run(_count(nats_url))

    def wait(self, more: int = 1, within: float = 10.0) -> None:
        deadline = time.monotonic() + within
        while (now := asyncio.run(_count(self.url))) < self.count + more:
            assert time.monotonic() < deadline, f"{now - self.count} of {more} entries stored"
            time.sleep(0.05)
        self.count = now


def usage(gw: Gateway, key_id: str, expected: int, within: float = 20.0
          ) -> list[dict[str, Any]]:
    """The key's usage events, as the session gateway's accounting has them (every
    gateway on the session's NATS publishes to one usage stream)."""
    deadline = time.monotonic() + within
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        r = httpx.get(gw.base_url + "/v1/usage/logs", headers=MASTER, timeout=10,
                      params={"key_id": key_id, "limit": 1000, "days": 1})
        if r.status_code == 200 and len(rows := r.json()["data"]) >= expected:
            time.sleep(1.0)  # none more is on its way: an extra one would land by now
            r = httpx.get(gw.base_url + "/v1/usage/logs", headers=MASTER, timeout=10,
                          params={"key_id": key_id, "limit": 1000, "days": 1})
            return list(r.json()["data"])
        time.sleep(0.2)
    raise AssertionError(f"{len(rows)} events after {within}s, expected {expected}: {rows}")


def calls(state: FakeOpenAIState, question: str) -> int:
    return sum(1 for b in state.requests
               if (b.get("messages") or [{}])[-1].get("content") == question
               and b.get("model") != "concepts-embed")


def test_a_paraphrase_is_a_free_semantic_hit_and_every_call_is_accounted(
    semantic: tuple[Gateway, str], fake_openai: tuple[str, FakeOpenAIState],
    nats_server: NatsServer, gateway: Gateway,
) -> None:
    gw, _ = semantic
    stored = Stored(nats_server.url)
    _, key_id, secret = team_key(gw)
    first = ask(gw.base_url, secret, FRANCE)
    assert first.status_code == 200, first.text
    assert first.headers["x-aigw-cache"] == "miss"
    cost = Decimal(first.headers["x-aigw-cost-usd"])
    assert cost > 0
    stored.wait()

    second = ask(gw.base_url, secret, FRANCE_AGAIN)
    assert second.status_code == 200, second.text
    assert second.headers["x-aigw-cache"] == "semantic-hit"
    assert 0.9 <= float(second.headers["x-aigw-cache-similarity"]) < 1.0
    assert second.headers["x-aigw-cost-usd"] == "0"
    assert second.json()["usage"]["cost"] == 0
    assert second.json()["choices"] == first.json()["choices"]
    assert calls(fake_openai[1], FRANCE_AGAIN) == 0

    # Two chat events (the call, the hit) and two embedding calls, each its own event.
    rows = usage(gateway, key_id, expected=4)
    chats = sorted((r for r in rows if r["endpoint"] == "chat"), key=lambda r: r["status"])
    embeds = [r for r in rows if r["endpoint"] == "embeddings"]
    assert [r["status"] for r in chats] == ["cache_hit", "ok"]
    hit, ok = chats
    assert Decimal(ok["cost"]) == cost
    assert Decimal(hit["cost"]) == 0 and Decimal(hit["saved_cost"]) == cost
    assert hit["model_alias"] == "chat" and hit["prompt_tokens"] == 0
    assert hit["metadata"]["aigw_cache"] == "semantic"
    assert float(hit["metadata"]["aigw_similarity"]) == pytest.approx(
        float(second.headers["x-aigw-cache-similarity"]))
    assert len(embeds) == 2
    for row in embeds:
        assert row["status"] == "ok" and row["model_alias"] == "embed"
        assert Decimal(row["cost"]) > 0 and row["prompt_tokens"] > 0
        assert row["request_id"].endswith("-semantic")


def test_a_streamed_paraphrase_is_replayed_as_sse(
    semantic: tuple[Gateway, str], nats_server: NatsServer,
) -> None:
    gw, _ = semantic
    stored = Stored(nats_server.url)
    _, _, secret = team_key(gw)
    assert ask(gw.base_url, secret, FRANCE).status_code == 200
    stored.wait()
    body = {"model": "chat", "stream": True, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": FRANCE_AGAIN}]}
    with httpx.stream("POST", gw.base_url + "/v1/chat/completions", json=body, timeout=30,
                      headers={"authorization": f"Bearer {secret}"}) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-aigw-cache"] == "semantic-hit"
        events = [line.removeprefix("data: ") for line in r.iter_lines()
                  if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or ""
                   for c in chunks if c["choices"])
    assert text == ANSWER
    assert chunks[-1]["usage"]["cost"] == 0


def test_a_different_question_with_shared_words_misses(
    semantic: tuple[Gateway, str], fake_openai: tuple[str, FakeOpenAIState],
    nats_server: NatsServer,
) -> None:
    gw, _ = semantic
    stored = Stored(nats_server.url)
    _, _, secret = team_key(gw)
    assert ask(gw.base_url, secret, FRANCE).status_code == 200
    stored.wait()
    before = calls(fake_openai[1], SPAIN)
    spain = ask(gw.base_url, secret, SPAIN)
    assert spain.headers["x-aigw-cache"] == "miss"
    # How close it came: France's entry, at about 0.5.
    assert 0.3 < float(spain.headers["x-aigw-cache-similarity"]) < 0.9
    assert calls(fake_openai[1], SPAIN) == before + 1


def test_another_teams_identical_prompt_misses_and_a_teammates_paraphrase_hits(
    semantic: tuple[Gateway, str], nats_server: NatsServer,
) -> None:
    gw, _ = semantic
    stored = Stored(nats_server.url)
    team, _, secret = team_key(gw)
    question = "How do I sort a list in Python?"
    assert ask(gw.base_url, secret, question).status_code == 200
    stored.wait()
    _, _, stranger = team_key(gw)
    assert ask(gw.base_url, stranger, question).headers["x-aigw-cache"] == "miss"
    _, _, teammate = team_key(gw, team)
    hit = ask(gw.base_url, teammate, "Sorting a Python list: how?")
    assert hit.headers["x-aigw-cache"] == "semantic-hit"


def test_another_system_prompt_temperature_or_model_misses(
    semantic: tuple[Gateway, str], nats_server: NatsServer,
) -> None:
    gw, _ = semantic
    stored = Stored(nats_server.url)
    _, _, secret = team_key(gw)
    assert ask(gw.base_url, secret, FRANCE, temperature=0.2).status_code == 200
    stored.wait()
    assert ask(gw.base_url, secret, FRANCE_AGAIN, temperature=0.2).headers[
        "x-aigw-cache"] == "semantic-hit"
    assert ask(gw.base_url, secret, FRANCE_AGAIN, temperature=0.7).headers[
        "x-aigw-cache"] == "miss"
    assert ask(gw.base_url, secret, FRANCE_AGAIN, temperature=0.2, model="chat-b").headers[
        "x-aigw-cache"] == "miss"
    system = {"model": "chat", "temperature": 0.2, "messages": [
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": FRANCE_AGAIN}]}
    r = httpx.post(gw.base_url + "/v1/chat/completions", json=system, timeout=30,
                   headers={"authorization": f"Bearer {secret}"})
    assert r.headers["x-aigw-cache"] == "miss"
    # The request's own word: a stricter threshold than the paraphrase reaches.
    strict = ask(gw.base_url, secret, FRANCE_AGAIN, temperature=0.2,
                 cache={"similarity_threshold": 0.99})
    assert strict.headers["x-aigw-cache"] == "miss"
    bad = ask(gw.base_url, secret, FRANCE_AGAIN, cache={"similarity_threshold": 2})
    assert bad.status_code == 400
    assert bad.json()["error"]["param"] == "cache.similarity_threshold"


def test_an_entry_expires_with_its_ttl(
    semantic: tuple[Gateway, str], nats_server: NatsServer,
) -> None:
    gw, _ = semantic
    stored = Stored(nats_server.url)
    _, _, secret = team_key(gw)
    question = "What is the weather today?"
    # Long enough for the hit below on a loaded machine, short enough to wait out.
    assert ask(gw.base_url, secret, question, cache={"ttl": 5}).status_code == 200
    stored.wait()
    assert ask(gw.base_url, secret, "Weather forecast for today?", cache={"no-store": True}
               ).headers["x-aigw-cache"] == "semantic-hit"
    time.sleep(5.5)
    assert ask(gw.base_url, secret, "Today's weather?", cache={"no-store": True}
               ).headers["x-aigw-cache"] == "miss"


def test_a_second_replica_serves_what_the_first_stored(
    semantic: tuple[Gateway, str], nats_server: NatsServer,
) -> None:
    gw, replica = semantic
    stored = Stored(nats_server.url)
    _, _, secret = team_key(gw)
    assert ask(gw.base_url, secret, "How do I reset my password?").status_code == 200
    stored.wait()
    deadline = time.monotonic() + 5
    while True:  # the replica's watch brings the entry within milliseconds
        r = ask(replica, secret, "I forgot my password, how to recover it?",
                cache={"no-store": True})
        if r.headers["x-aigw-cache"] == "semantic-hit" or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert r.headers["x-aigw-cache"] == "semantic-hit"


def test_without_cache_controls_an_embedding_is_never_made(
    semantic: tuple[Gateway, str], fake_openai: tuple[str, FakeOpenAIState],
) -> None:
    gw, _ = semantic
    _, _, secret = team_key(gw)
    state = fake_openai[1]
    embeds = sum(1 for b in state.requests if b.get("model") == "concepts-embed")
    r = ask(gw.base_url, secret, "Hello, how do I say hello in French?",
            cache={"no-cache": True, "no-store": True})
    assert r.status_code == 200, r.text
    assert "x-aigw-cache" not in r.headers
    assert sum(1 for b in state.requests if b.get("model") == "concepts-embed") == embeds
