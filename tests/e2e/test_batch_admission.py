"""Batch items are admitted like interactive calls: the key's budget and limits hold for
them, through an ingress the workers ask before each attempt."""

from __future__ import annotations

import io
import json
import time
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest
from openai.types import Batch

from tests.e2e.conftest import MASTER_KEY, make_key
from tests.fakes.openai_server import FakeOpenAIState
from tests.harness import Gateway

pytestmark = pytest.mark.e2e

MASTER = {"authorization": f"Bearer {MASTER_KEY}"}
DONE = ("completed", "failed", "cancelled", "expired")


def _client(gateway: Gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url + "/v1", api_key=key, max_retries=0)


def _line(custom_id: str, model: str, **body: Any) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": "x"}], **body}}


def _submit(client: openai.OpenAI, lines: list[dict[str, Any]]) -> Batch:
    raw = "".join(json.dumps(line) + "\n" for line in lines).encode()
    file_id = client.files.create(file=("in.jsonl", io.BytesIO(raw)), purpose="batch").id
    return client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                                 completion_window="24h")


def _wait(client: openai.OpenAI, batch_id: str, within: float = 60.0) -> Batch:
    deadline = time.monotonic() + within
    batch = client.batches.retrieve(batch_id)
    while batch.status not in DONE:
        assert time.monotonic() < deadline, f"batch still {batch.status}: {batch}"
        time.sleep(0.1)
        batch = client.batches.retrieve(batch_id)
    return batch


def _lines(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [json.loads(x) for x in client.files.content(file_id).text.splitlines()]


def _usage(gateway: Gateway, key_id: str, batch_id: str, expected: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 20
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        r = httpx.get(gateway.base_url + "/v1/usage/logs", headers=MASTER, timeout=10,
                      params={"key_id": key_id, "limit": 1000, "days": 1})
        rows = [x for x in r.json()["data"] if x.get("batch_id") == batch_id]
        if len(rows) >= expected:
            return rows
        time.sleep(0.2)
    raise AssertionError(f"{len(rows)} usage events, expected {expected}")


def test_a_batch_stops_at_the_keys_budget_without_overshooting_it(gateway: Gateway) -> None:
    budget = Decimal("0.05")
    key_id, secret = make_key(gateway, limits={"daily_budget_usd": str(budget)})
    client = _client(gateway, secret)
    # ``pricey``: $0.001 in and $0.002 out per token; each item may cost up to ~$0.02.
    done = _wait(client, _submit(client, [_line(f"p{i}", "pricey", max_tokens=5)
                                          for i in range(12)]).id)
    assert done.status == "completed", done
    counts = done.request_counts
    assert counts is not None and counts.completed + counts.failed == 12
    assert counts.completed >= 1, "no item ran at all"
    assert counts.failed >= 6, f"the budget did not stop the batch: {counts}"
    errors = _lines(client, done.error_file_id)
    assert len(errors) == counts.failed
    for line in errors:
        assert line["response"]["status_code"] == 429, line
        assert line["response"]["body"]["error"]["code"] == "budget_exceeded", line
    # Only the admitted items were called and accounted, and together they fit the budget.
    rows = _usage(gateway, key_id, done.id, expected=counts.completed)
    time.sleep(1.0)  # anything extra (an item that ran unadmitted) would be here by now
    rows = _usage(gateway, key_id, done.id, expected=counts.completed)
    assert len(rows) == counts.completed
    spent = sum(Decimal(r["cost"]) for r in rows)
    assert Decimal(0) < spent <= budget


def test_a_parallel_limit_paces_a_batch(
    gateway: Gateway, fake_openai: tuple[str, FakeOpenAIState]
) -> None:
    _, state = fake_openai
    state.slow_seconds = 0.5
    _, secret = make_key(gateway, limits={"max_parallel": 1})
    client = _client(gateway, secret)
    began = time.monotonic()
    done = _wait(client, _submit(client, [_line(f"s{i}", "slow") for i in range(4)]).id)
    took = time.monotonic() - began
    assert done.status == "completed", done
    assert done.request_counts is not None and done.request_counts.completed == 4
    # One at a time: four turns of the slow upstream (in parallel it would be about one).
    assert took >= 4 * 0.5, f"{took:.2f} s: items ran side by side"
