"""JSON log lines: one object a line, with the role and the request id, never a traceback
split over lines."""

from __future__ import annotations

import io
import json
import logging

import pytest

from core.telemetry import logs


@pytest.fixture
def json_lines():  # type: ignore[no-untyped-def]
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    out = io.StringIO()
    logs.configure("worker", {"AIGW_LOG_FORMAT": "json", "AIGW_LOG_LEVEL": "INFO"}, out)

    def read() -> list[dict[str, object]]:
        return [json.loads(line) for line in out.getvalue().splitlines()]

    yield read
    root.handlers[:], root.level = saved


def test_a_json_line_carries_role_level_message_and_request_id(json_lines) -> None:  # type: ignore[no-untyped-def]
    token = logs.request_id.set("req_abc")
    try:
        logging.getLogger("aigw.test").info("upstream answered %d", 200)
    finally:
        logs.request_id.reset(token)
    [line] = json_lines()
    assert line["role"] == "worker"
    assert line["level"] == "info"
    assert line["message"] == "upstream answered 200"
    assert line["request_id"] == "req_abc"
    assert line["time"].endswith("+00:00")  # type: ignore[union-attr]


def test_an_exception_stays_on_one_line(json_lines) -> None:  # type: ignore[no-untyped-def]
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("aigw.test").exception("failed")
    [line] = json_lines()
    assert "RuntimeError: boom" in line["error"]  # type: ignore[operator]


def test_access_fields_are_kept(json_lines) -> None:  # type: ignore[no-untyped-def]
    logging.getLogger("aigw.access").info("POST /v1/chat/completions 200", extra={
        "method": "POST", "route": "/v1/chat/completions", "status": 200,
        "duration_ms": 1.5, "model": "gpt-4o-mini", "key_id": "key_1"})
    [line] = json_lines()
    assert {k: line[k] for k in ("method", "route", "status", "model", "key_id")} == {
        "method": "POST", "route": "/v1/chat/completions", "status": 200,
        "model": "gpt-4o-mini", "key_id": "key_1"}
