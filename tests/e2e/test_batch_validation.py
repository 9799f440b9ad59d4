"""Batch input the gateway refuses line by line, never with a 500: lines that are not JSON
(a lone surrogate escape among them), unknown or forbidden models, the wrong endpoint, a
repeated ``custom_id``, a request too large for NATS; and input it must read correctly
(line separators inside strings, a BOM), in full, without stalling other requests."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
import pytest

from tests.e2e.batch_client import _chat_line, _client, _lines, _submit, _upload, _wait
from tests.e2e.conftest import make_key
from tests.harness import Gateway

pytestmark = pytest.mark.e2e


def test_bad_lines_fail_the_batch_with_their_line_numbers(gateway: Gateway) -> None:
    client = _client(gateway)
    batch = _submit(client, [
        _chat_line("ok"),
        "{not json",
        _chat_line("unknown", model="no-such-model"),
        {**_chat_line("wrong-url"), "url": "/v1/embeddings"},
        _chat_line("ok"),  # duplicate custom_id
    ])
    assert batch.status == "failed"
    assert batch.errors is not None and batch.errors.data is not None
    by_line = {e.line: e.code for e in batch.errors.data}
    assert by_line == {2: "invalid_json_line", 3: "model_not_found",
                       4: "mismatched_endpoint", 5: "duplicate_custom_id"}
    assert client.batches.retrieve(batch.id).status == "failed"


def test_a_model_the_key_may_not_use_fails_the_batch(gateway: Gateway) -> None:
    _, secret = make_key(gateway, allowed_models=["gpt-4o-mini"])
    client = _client(gateway, secret)
    batch = _submit(client, [_chat_line("a"), _chat_line("b", model="pricey")])
    assert batch.status == "failed"
    assert batch.errors is not None and batch.errors.data is not None
    assert [(e.line, e.code) for e in batch.errors.data] == [(2, "model_not_allowed")]


def test_a_lone_surrogate_escape_fails_the_batch_at_its_line(gateway: Gateway) -> None:
    client = _client(gateway)
    bad = json.dumps(_chat_line("bad")).replace("Say hello", "\\ud800")
    batch = _submit(client, [_chat_line("ok"), bad])
    assert batch.status == "failed"
    assert batch.errors is not None and batch.errors.data is not None
    # Refused where the line is read, as the inference routes refuse such a body.
    assert [(e.line, e.code) for e in batch.errors.data] == [(2, "invalid_json_line")]
    assert "lone surrogate" in (batch.errors.data[0].message or "")
    assert client.batches.retrieve(batch.id).status == "failed"


def test_a_request_nats_cannot_carry_fails_the_batch_at_its_line(gateway: Gateway) -> None:
    client = _client(gateway)
    huge = _chat_line("huge", text="x" * (9 * 1024 * 1024))  # over the 8 MB max_payload
    batch = _submit(client, [_chat_line("ok"), huge])
    assert batch.status == "failed"
    assert batch.errors is not None and batch.errors.data is not None
    assert [(e.line, e.code) for e in batch.errors.data] == [(2, "request_too_large")]


def test_a_line_separator_inside_a_string_is_not_a_line_break(gateway: Gateway) -> None:
    client = _client(gateway)
    text = "one\u2028two\u0085three"
    line = json.dumps(_chat_line("sep", text=text), ensure_ascii=False)
    assert "\u2028" in line
    done = _wait(client, _submit(client, ["\ufeff" + json.dumps(_chat_line("bom")), line]).id)
    assert done.status == "completed", done
    assert sorted(o["custom_id"] for o in _lines(client, done.output_file_id)) == ["bom", "sep"]


def test_validating_a_big_file_does_not_stall_other_requests(gateway: Gateway) -> None:
    client = _client(gateway)
    # Every line is read in full; the last one fails the batch, so nothing runs.
    lines: list[Any] = [_chat_line(f"m{i}") for i in range(49_999)]
    file_id = _upload(client, [*lines, "{not json"])
    stalls: list[float] = []
    stop = threading.Event()

    def probe() -> None:
        with httpx.Client(base_url=gateway.base_url, timeout=30) as http:
            while not stop.is_set():
                start = time.monotonic()
                http.get("/health/liveness")
                stalls.append(time.monotonic() - start)
                time.sleep(0.01)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        started = time.monotonic()
        batch = client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                                      completion_window="24h")
        took = time.monotonic() - started
    finally:
        stop.set()
        prober.join()
    assert batch.status == "failed"
    assert stalls and max(stalls) < max(0.5, took / 3), (max(stalls), took)
