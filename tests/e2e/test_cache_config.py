"""Cache settings from the config file (LiteLLM's ``litellm_settings.cache``): with
``cache: true`` an identical request without cache fields is a hit, the request's own
word still wins, entries live under the configured namespace, and call types left out
of the configuration are never cached."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import pytest
import redis
import yaml

from cli.nats_server import NatsServer
from tests.e2e.cache_caller import Caller, messages, upstream_calls
from tests.e2e.conftest import MASTER_KEY
from tests.fakes.openai_server import FakeOpenAIState
from tests.harness import Gateway, write_config
from tests.redis_server import RedisServer

pytestmark = pytest.mark.e2e


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
