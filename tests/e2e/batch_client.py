"""The Batch API as the e2e batch tests drive it, through the official openai SDK: a client
for a key, JSONL lines uploaded and submitted, a batch waited for until it is done, its
output and error files read back, and the usage events of its items."""

from __future__ import annotations

import io
import json
import time
from typing import Any

import httpx
import openai
from openai.types import Batch

from tests.e2e.conftest import MASTER_KEY
from tests.harness import Gateway

MASTER = {"authorization": f"Bearer {MASTER_KEY}"}
DONE = ("completed", "failed", "cancelled", "expired")


def _client(gateway: Gateway, key: str = MASTER_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url + "/v1", api_key=key, max_retries=0)


def _chat_line(
    custom_id: str, model: str = "gpt-4o-mini", text: str = "Say hello"
) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": text}]}}


def _upload(client: openai.OpenAI, lines: list[Any]) -> str:
    raw = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n"
                  for line in lines)
    return client.files.create(file=("input.jsonl", io.BytesIO(raw.encode())),
                               purpose="batch").id


def _submit(client: openai.OpenAI, lines: list[Any],
            endpoint: str = "/v1/chat/completions") -> Batch:
    return client.batches.create(input_file_id=_upload(client, lines),
                                 endpoint=endpoint,  # type: ignore[arg-type]
                                 completion_window="24h")


def _wait(client: openai.OpenAI, batch_id: str, within: float = 20.0) -> Batch:
    deadline = time.monotonic() + within
    batch = client.batches.retrieve(batch_id)
    while batch.status not in DONE:
        if time.monotonic() > deadline:
            raise AssertionError(f"batch still {batch.status} after {within}s: {batch}")
        time.sleep(0.1)
        batch = client.batches.retrieve(batch_id)
    return batch


def _lines(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [json.loads(x) for x in client.files.content(file_id).text.splitlines()]


def _usage(gateway: Gateway, key_id: str | None, batch_id: str,
           expected: int, within: float = 20.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + within
    rows: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 1000, "days": 1}
    if key_id is not None:
        params["key_id"] = key_id
    while time.monotonic() < deadline:
        r = httpx.get(gateway.base_url + "/v1/usage/logs", headers=MASTER, timeout=10,
                      params=params)
        if r.status_code == 200:
            rows = [x for x in r.json()["data"] if x.get("batch_id") == batch_id]
            if len(rows) >= expected:
                return rows
        time.sleep(0.2)
    raise AssertionError(f"{len(rows)} usage events for {batch_id}, expected {expected}")
