"""Every upstream call is one usage event in ClickHouse, with its exact cost."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal

import httpx
import openai
import pytest

from tests.e2e.conftest import MASTER_KEY, make_key
from tests.e2e.usage_logs import usage_logs
from tests.fakes.openai_server import ANSWER, FakeOpenAIState
from tests.harness import Gateway

pytestmark = pytest.mark.e2e
MASTER = {"authorization": f"Bearer {MASTER_KEY}"}


def test_every_kind_of_call_is_accounted_once_with_exact_cost(
    gateway: Gateway, fake_openai: tuple[str, FakeOpenAIState]
) -> None:
    key_id, secret = make_key(gateway, alias="accounting-e2e")
    client = openai.OpenAI(base_url=gateway.base_url + "/v1", api_key=secret, max_retries=0)
    msgs = [{"role": "user", "content": "count this call"}]
    costs: list[Decimal] = []

    for _ in range(3):
        raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=msgs)
        costs.append(Decimal(raw.headers["x-aigw-cost-usd"]))
        assert raw.parse().usage.cost == float(costs[-1])  # type: ignore[union-attr]
    for _ in range(2):
        chunks = list(client.chat.completions.create(
            model="gpt-4o-mini", messages=msgs, stream=True,  # type: ignore[arg-type]
            stream_options={"include_usage": True}))
        costs.append(Decimal(str(chunks[-1].usage.cost)))  # type: ignore[union-attr]
    list(client.chat.completions.create(model="gpt-4o-mini", messages=msgs, stream=True))  # type: ignore[arg-type]
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    client.chat.completions.create(model="gpt-4o-mini", messages=msgs, tools=tools)  # type: ignore[arg-type]
    client.embeddings.create(model="text-embedding-3-small", input="a b c")
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="broken", messages=msgs)  # type: ignore[arg-type]
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="limited", messages=msgs)  # type: ignore[arg-type]
    for _ in range(2):  # one attempt fails over to the other deployment, or none does
        client.chat.completions.create(model="flaky-group", messages=msgs)  # type: ignore[arg-type]
    _, state = fake_openai
    state.slow_seconds = 30.0
    with httpx.stream("POST", gateway.base_url + "/v1/chat/completions", timeout=10,
                      headers={"authorization": f"Bearer {secret}"},
                      json={"model": "slow-stream", "stream": True, "messages": msgs}) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                break

    # 3 plain + 3 streamed + tools + embeddings + broken + limited + 2 flaky-group
    # requests (3 attempts: the round robin starts on the failing one once) + cancelled
    rows = usage_logs(gateway, key_id, expected=14)
    assert len(rows) == 14
    assert len({r["event_id"] for r in rows}) == 14
    by_status: dict[str, int] = {}
    for row in rows:
        by_status[row["status"]] = by_status.get(row["status"], 0) + 1
    assert by_status == {"ok": 10, "error": 3, "cancelled": 1}
    assert len({r["request_id"] for r in rows}) == 13
    streamed_ok = [r for r in rows if r["streamed"] and r["status"] == "ok"]
    assert len(streamed_ok) == 3
    assert all(r["completion_tokens"] == 6 for r in streamed_ok)
    assert all(r["key_id"] == key_id for r in rows)

    summary = httpx.get(gateway.base_url + "/v1/usage/summary", headers=MASTER,
                        params={"key_id": key_id, "days": 1}).json()
    total = Decimal(summary["cost"])
    assert total == sum((Decimal(r["cost"]) for r in rows if r["cost"] is not None), Decimal(0))
    reported = Counter(Decimal(r["cost"]) for r in rows
                       if r["status"] == "ok" and r["model_alias"] == "gpt-4o-mini")
    # what each client was told it cost is exactly what was booked
    assert not Counter(costs) - reported
    assert all(c > 0 for c in costs)
    assert summary["requests"] == 13


def test_a_key_sees_only_its_own_usage(gateway: Gateway) -> None:
    a_id, a_secret = make_key(gateway, alias="iso-a")
    b_id, b_secret = make_key(gateway, alias="iso-b")
    for secret in (a_secret, b_secret):
        openai.OpenAI(base_url=gateway.base_url + "/v1", api_key=secret).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    usage_logs(gateway, b_id, expected=1)
    r = httpx.get(gateway.base_url + "/v1/usage/logs", params={"key_id": b_id, "days": 1},
                  headers={"authorization": f"Bearer {a_secret}"})
    assert r.status_code == 200
    assert {row["key_id"] for row in r.json()["data"]} == {a_id}


def test_a_stream_cut_before_its_usage_is_accounted_with_an_estimate(gateway: Gateway) -> None:
    key_id, secret = make_key(gateway, alias="cut-stream")
    content = "please count the tokens of this prompt, which is forty-eight chars"
    with httpx.stream("POST", gateway.base_url + "/v1/chat/completions", timeout=10,
                      headers={"authorization": f"Bearer {secret}"},
                      json={"model": "midstream", "stream": True,
                            "messages": [{"role": "user", "content": content}]}) as r:
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert any('"error"' in line for line in lines)  # the upstream broke off after 3 words

    [row] = usage_logs(gateway, key_id, expected=1)
    assert row["status"] == "error"
    assert row["usage_estimated"] is True
    received = len(" ".join(ANSWER.split(" ")[:3]))  # the three words before the break
    assert row["completion_tokens"] == max(3, -(-received // 4))  # >= one per text chunk
    assert row["prompt_tokens"] == -(-len(content) // 4) + 4  # text, plus the role markers
