"""Batches and the key that made them: a key sees only its own files and batches, a spent
budget refuses a batch and a batch's items spend the key's budget, and every item is one
usage event carrying the batch id, each upstream call accounted once."""

from __future__ import annotations

import json
import time
from decimal import Decimal

import openai
import pytest

from tests.e2e.batch_client import (
    _chat_line,
    _client,
    _submit,
    _upload,
    _usage,
    _wait,
)
from tests.e2e.conftest import make_key
from tests.fakes import openai_server
from tests.harness import Gateway

pytestmark = pytest.mark.e2e


def test_a_key_sees_only_its_own_files_and_batches(gateway: Gateway) -> None:
    _, secret_a = make_key(gateway, alias="batch-owner-a")
    _, secret_b = make_key(gateway, alias="batch-owner-b")
    a, b = _client(gateway, secret_a), _client(gateway, secret_b)
    batch = _submit(a, [_chat_line("mine")])
    with pytest.raises(openai.NotFoundError):
        b.batches.retrieve(batch.id)
    with pytest.raises(openai.NotFoundError):
        b.files.content(batch.input_file_id)
    with pytest.raises(openai.NotFoundError):
        b.batches.create(input_file_id=batch.input_file_id, endpoint="/v1/chat/completions",
                         completion_window="24h")
    assert batch.id not in [x.id for x in b.batches.list()]
    assert batch.id in [x.id for x in a.batches.list()]
    assert _client(gateway).batches.retrieve(batch.id).id == batch.id  # the master sees all
    done = _wait(a, batch.id)
    with pytest.raises(openai.NotFoundError):
        b.files.content(done.output_file_id)  # type: ignore[arg-type]


def test_a_key_whose_budget_is_spent_cannot_start_a_batch(gateway: Gateway) -> None:
    _, secret = make_key(gateway, limits={"daily_budget_usd": "0"})
    client = _client(gateway, secret)
    file_id = _upload(client, [_chat_line("x")])
    with pytest.raises(openai.RateLimitError) as caught:
        client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                              completion_window="24h")
    assert caught.value.code == "budget_exceeded"


def test_what_a_batch_spends_reaches_the_keys_budget(gateway: Gateway) -> None:
    """Batch items are admitted against the key's budget as they run, together with what
    its interactive calls spent: the batch stops where the budget ends."""
    budget = Decimal("0.05")
    key_id, secret = make_key(gateway, limits={"daily_budget_usd": str(budget)})
    client = _client(gateway, secret)
    raw = client.chat.completions.with_raw_response.create(
        model="pricey", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    first = Decimal(raw.headers["x-aigw-cost-usd"])  # a few cents: within the budget
    lines = [{**_chat_line(f"p{i}", model="pricey", text="x")} for i in range(4)]
    for line in lines:
        line["body"]["max_tokens"] = 5
    batch = _wait(client, _submit(client, lines).id)
    assert batch.status == "completed" and batch.request_counts is not None
    counts = batch.request_counts
    assert counts.completed >= 1 and counts.failed >= 1, counts  # it stopped at the budget
    items = _usage(gateway, key_id, batch.id, expected=counts.completed)
    assert first + sum(Decimal(r["cost"]) for r in items) <= budget


def test_every_item_is_one_usage_event_with_the_batch_id(
    gateway: Gateway, fake_openai: tuple[str, openai_server.FakeOpenAIState]
) -> None:
    key_id, secret = make_key(gateway, alias="batch-usage")
    client = _client(gateway, secret)
    marker = f"batch-usage-{key_id}"
    done = _wait(client, _submit(client, [_chat_line(f"u{i}", text=f"{marker} u{i}")
                                          for i in range(3)]).id)
    assert done.status == "completed"
    rows = _usage(gateway, key_id, done.id, expected=3)
    # Not synchronisation: the check that nothing is counted twice. An event that should
    # not exist cannot be polled for; one on its way lands within this second.
    time.sleep(1.0)
    rows = _usage(gateway, key_id, done.id, expected=3)
    calls = [body for body in list(fake_openai[1].requests)
             if marker in json.dumps(body.get("messages", ""))]
    # Each item answered once, each upstream call accounted once: a redelivered item
    # (its worker stalled past the ack deadline) makes two calls and two events, never
    # an event without a call.
    seen = [(r["request_id"], r["status"], r.get("error_type")) for r in rows]
    ok = sorted(r["request_id"] for r in rows if r["status"] == "ok")
    assert ok == sorted(f"{done.id}-u{i}" for i in range(3)), seen
    assert len(rows) == len(calls), (seen, len(calls))
    assert len({r["event_id"] for r in rows}) == len(rows), seen
