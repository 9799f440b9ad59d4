"""A client that hangs up on a non-streamed call stops the upstream call, and the call is
accounted once, as cancelled."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import MASTER_KEY, make_key
from tests.fakes.openai_server import FakeOpenAIState
from tests.harness import Gateway

pytestmark = pytest.mark.e2e
MASTER = {"authorization": f"Bearer {MASTER_KEY}"}


def _rows(gateway: Gateway, key_id: str) -> list[dict[str, Any]]:
    r = httpx.get(gateway.base_url + "/v1/usage/logs", headers=MASTER, timeout=10,
                  params={"key_id": key_id, "limit": 100, "days": 1})
    assert r.status_code == 200, r.text
    return list(r.json()["data"])


def test_hanging_up_on_a_non_streamed_call_cancels_the_upstream_call(
    gateway: Gateway, fake_openai: tuple[str, FakeOpenAIState]
) -> None:
    _, state = fake_openai
    state.slow_seconds = 30.0
    key_id, secret = make_key(gateway, alias="hangup-e2e")
    before = state.cancelled
    with pytest.raises(httpx.ReadTimeout):
        # Heartbeats keep the call alive at the gateway: the client gives up after 1.5 s.
        httpx.post(gateway.base_url + "/v1/chat/completions", timeout=1.5,
                   headers={"authorization": f"Bearer {secret}"},
                   json={"model": "slow-watch", "messages": [{"role": "user", "content": "x"}]})
    left = time.monotonic()
    while state.cancelled == before and time.monotonic() - left < 10:
        time.sleep(0.05)
    assert state.cancelled == before + 1, "the upstream call was not stopped"
    took = time.monotonic() - left
    assert took < 4.0, f"the upstream call ran {took:.1f} s after the client left"

    deadline = time.monotonic() + 20
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not rows:
        rows = _rows(gateway, key_id)
        time.sleep(0.2)
    assert [row["status"] for row in rows] == ["cancelled"], rows
    assert rows[0]["model_alias"] == "slow-watch"

    # The gateway logged no traceback for it and goes on serving.
    assert "Traceback" not in gateway.logs("ingress")
    r = httpx.post(gateway.base_url + "/v1/chat/completions", timeout=10,
                   headers={"authorization": f"Bearer {secret}"},
                   json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 200, r.text
