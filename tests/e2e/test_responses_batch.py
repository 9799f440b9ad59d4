"""Batches of /v1/responses lines through the official openai SDK: each line runs as a chat
request on a real worker and its output line holds a Response object; a line that cannot
run in a batch fails the batch with its line and field named."""

from __future__ import annotations

import io
import json
import time
from typing import Any

import httpx
import openai
import pytest
from openai.types import Batch

from tests.e2e.conftest import MASTER_KEY
from tests.harness import Gateway

pytestmark = pytest.mark.e2e

DONE = ("completed", "failed", "cancelled", "expired")


def _submit(client: openai.OpenAI, bodies: list[dict[str, Any]]) -> Batch:
    raw = "".join(json.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/responses",
                              "body": body}) + "\n" for i, body in enumerate(bodies))
    file_id = client.files.create(file=("in.jsonl", io.BytesIO(raw.encode())),
                                  purpose="batch").id
    return client.batches.create(input_file_id=file_id, endpoint="/v1/responses",
                                 completion_window="24h")


def _wait(client: openai.OpenAI, batch_id: str, within: float = 60.0) -> Batch:
    deadline = time.monotonic() + within
    batch = client.batches.retrieve(batch_id)
    while batch.status not in DONE:
        assert time.monotonic() < deadline, f"batch still {batch.status}: {batch}"
        time.sleep(0.1)
        batch = client.batches.retrieve(batch_id)
    return batch


def test_a_responses_batch_answers_each_line_with_a_response(gateway: Gateway) -> None:
    client = openai.OpenAI(base_url=gateway.base_url + "/v1", api_key=MASTER_KEY,
                           max_retries=0)
    batch = _wait(client, _submit(client, [
        {"model": "gpt-4o-mini", "input": "Say hello"},
        {"model": "gpt-4o-mini", "instructions": "Answer in French.", "max_output_tokens": 50,
         "input": [{"role": "user", "content": [{"type": "input_text", "text": "Hi"}]}]},
    ]).id)
    assert batch.status == "completed" and batch.request_counts is not None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (2, 0)
    assert batch.output_file_id is not None
    lines = [json.loads(x) for x in client.files.content(batch.output_file_id).text.splitlines()]
    assert sorted(line["custom_id"] for line in lines) == ["r0", "r1"]
    for line in lines:
        assert line["error"] is None and line["response"]["status_code"] == 200
        response = line["response"]["body"]
        assert response["object"] == "response" and response["status"] == "completed"
        assert response["id"].startswith("resp_")
        message = next(item for item in response["output"] if item["type"] == "message")
        assert message["content"][0]["type"] == "output_text"
        assert message["content"][0]["text"]
        assert response["usage"]["input_tokens"] > 0 and response["usage"]["output_tokens"] > 0
    second = next(line for line in lines if line["custom_id"] == "r1")["response"]["body"]
    assert second["instructions"] == "Answer in French." and second["max_output_tokens"] == 50
    # One usage event per line, as for any batch item.
    deadline = time.monotonic() + 20
    while True:
        rows = [r for r in httpx.get(
            gateway.base_url + "/v1/usage/logs", timeout=10, params={"limit": 1000},
            headers={"authorization": f"Bearer {MASTER_KEY}"}).json()["data"]
            if r.get("batch_id") == batch.id]
        if len(rows) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert len(rows) == 2 and all(r["status"] == "ok" for r in rows)


def test_a_line_continuing_a_stored_response_fails_the_batch_naming_it(
        gateway: Gateway) -> None:
    client = openai.OpenAI(base_url=gateway.base_url + "/v1", api_key=MASTER_KEY,
                           max_retries=0)
    batch = _wait(client, _submit(client, [
        {"model": "gpt-4o-mini", "input": "fine"},
        {"model": "gpt-4o-mini", "input": "more", "previous_response_id": "resp_abc"},
    ]).id)
    assert batch.status == "failed" and batch.errors is not None
    error = batch.errors.data[0]  # type: ignore[index]
    assert (error.line, error.param) == (2, "body.previous_response_id")
