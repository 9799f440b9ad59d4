"""How the cache tests call the gateway and what they read back: a ``Caller`` with a fresh
virtual key (entries are scoped per key when it has no team, so tests never see each
other's entries, and its usage logs hold only its own events), a question never asked
before, the upstream calls the fake saw for it, the key's usage rows, and the cache
entries stored in Redis."""

from __future__ import annotations

import time
from typing import Any
from uuid import uuid4

import httpx
import openai
import redis

from tests.e2e.conftest import MASTER_KEY, make_key
from tests.fakes.openai_server import FakeOpenAIState
from tests.harness import Gateway

MASTER = {"authorization": f"Bearer {MASTER_KEY}"}
CACHE = {"ttl": 60}


def messages() -> list[dict[str, str]]:
    return [{"role": "user", "content": f"cache me {uuid4().hex}"}]


def upstream_calls(state: FakeOpenAIState, msgs: list[dict[str, str]]) -> int:
    return sum(1 for body in state.requests if body.get("messages") == msgs)


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
