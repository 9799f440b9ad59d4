"""Gemini's google.rpc error bodies mapped to our error kinds, client statuses, codes and
retry delays, with API keys kept out of every message."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.workers.providers.gemini_fixtures import KEY
from workers.providers.gemini.adapter import (
    error_from_gemini,
)


def rpc_body(status: str, message: str, details: list[dict[str, Any]] | None = None) -> bytes:
    error: dict[str, Any] = {"code": 400, "message": message, "status": status}
    if details is not None:
        error["details"] = details
    return json.dumps({"error": error}).encode()


BAD_KEY_DETAILS = [
    {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}
]


@pytest.mark.parametrize(
    ("status", "body", "kind", "client_status", "code"),
    [
        (400, rpc_body("INVALID_ARGUMENT", "bad", BAD_KEY_DETAILS), "authentication", 401,
         "invalid_api_key"),
        (400, rpc_body("INVALID_ARGUMENT", "API key not valid. Please pass a valid API key."),
         "authentication", 401, "invalid_api_key"),
        (400, rpc_body("INVALID_ARGUMENT", "The input token count (2000000) exceeds the maximum "
                       "number of tokens allowed (1048576)."),
         "context_length", 400, "context_length_exceeded"),
        (400, rpc_body("INVALID_ARGUMENT", "Request contains an invalid argument."),
         "invalid_request", 400, None),
        (400, rpc_body("FAILED_PRECONDITION", "User location is not supported."),
         "invalid_request", 400, None),
        (403, rpc_body("PERMISSION_DENIED", "denied"), "permission", 403, None),
        (404, rpc_body("NOT_FOUND", "models/x is not found"), "not_found", 404, "model_not_found"),
        (429, rpc_body("RESOURCE_EXHAUSTED", "quota"), "rate_limit", 429, None),
        (500, rpc_body("INTERNAL", "oops"), "server", 500, None),
        (503, rpc_body("UNAVAILABLE", "overloaded"), "overloaded", 503, None),
        (504, rpc_body("DEADLINE_EXCEEDED", "late"), "timeout", 504, None),
        (502, b"<html>Bad Gateway</html>", "server", 502, None),
    ],
)  # fmt: skip
def test_gemini_errors_map_to_our_kinds_and_client_statuses(
    status: int, body: bytes, kind: str, client_status: int, code: str | None
) -> None:
    info = error_from_gemini(status, body, httpx.Headers())
    assert (info.kind, info.status, info.code) == (kind, client_status, code)
    assert info.upstream_status == status
    assert info.provider == "gemini"


def test_rate_limits_wait_for_the_retry_info_delay_unless_headers_say() -> None:
    details = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "12.5s"}]
    body = rpc_body("RESOURCE_EXHAUSTED", "quota", details)
    from_details = error_from_gemini(429, body, httpx.Headers())
    from_header = error_from_gemini(429, body, httpx.Headers({"retry-after": "3"}))
    assert (from_details.retry_after, from_header.retry_after) == (12.5, 3.0)
    assert from_details.retryable


def test_error_messages_never_carry_an_api_key() -> None:
    body = rpc_body("INVALID_ARGUMENT", f"key={KEY} and AIza{'x' * 35} are bad")
    info = error_from_gemini(400, body, httpx.Headers(), secret="my-secret")
    assert KEY not in info.message
    assert "AIza" + "x" * 35 not in info.message
    info = error_from_gemini(400, rpc_body("INVALID_ARGUMENT", "my-secret"), httpx.Headers(),
                             secret="my-secret")  # fmt: skip
    assert "my-secret" not in info.message
