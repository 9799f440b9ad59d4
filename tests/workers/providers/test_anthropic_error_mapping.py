"""Anthropic error bodies and in-stream error events mapped to our error kinds, client
statuses, codes and retry hints."""

from __future__ import annotations

import json

import httpx
import pytest

from schemas.errors import ErrorKind
from workers.providers.anthropic.adapter import error_from_anthropic


def error_body(error_type: str, message: str = "boom") -> bytes:
    return json.dumps({"type": "error", "error": {"type": error_type, "message": message}}).encode()


@pytest.mark.parametrize(
    ("status", "error_type", "kind", "client_status", "retryable"),
    [
        (400, "invalid_request_error", ErrorKind.INVALID_REQUEST, 400, False),
        (401, "authentication_error", ErrorKind.AUTHENTICATION, 401, False),
        (403, "permission_error", ErrorKind.PERMISSION, 403, False),
        (404, "not_found_error", ErrorKind.NOT_FOUND, 404, False),
        (413, "request_too_large", ErrorKind.INVALID_REQUEST, 400, False),
        (429, "rate_limit_error", ErrorKind.RATE_LIMIT, 429, True),
        (500, "api_error", ErrorKind.SERVER, 500, True),
        (504, "timeout_error", ErrorKind.TIMEOUT, 504, True),
        (529, "overloaded_error", ErrorKind.OVERLOADED, 503, True),
    ],
)
def test_error_types_map_to_kinds_and_client_statuses(
    status: int, error_type: str, kind: ErrorKind, client_status: int, retryable: bool
) -> None:
    info = error_from_anthropic(status, error_body(error_type), httpx.Headers())
    assert (info.kind, info.status, info.retryable) == (kind, client_status, retryable)
    assert info.message == "boom"
    assert info.upstream_status == status
    assert info.provider == "anthropic"


def test_not_found_carries_the_model_not_found_code() -> None:
    assert error_from_anthropic(404, error_body("not_found_error")).code == "model_not_found"


def test_a_prompt_too_long_is_a_context_length_error() -> None:
    body = error_body("invalid_request_error", "prompt is too long: 250000 tokens > 200000 maximum")
    info = error_from_anthropic(400, body)
    assert (info.kind, info.code, info.status) == (
        ErrorKind.CONTEXT_LENGTH,
        "context_length_exceeded",
        400,
    )


def test_rate_limit_carries_retry_after_from_headers() -> None:
    info = error_from_anthropic(429, error_body("rate_limit_error"), {"retry-after": "12"})
    assert info.retry_after == 12.0


def test_an_unreadable_529_body_is_still_a_retryable_overload() -> None:
    info = error_from_anthropic(529, b"<html>overloaded</html>")
    assert (info.kind, info.status, info.retryable) == (ErrorKind.OVERLOADED, 503, True)


def test_an_in_stream_error_event_is_judged_by_its_type_not_the_200() -> None:
    event = {"type": "error", "error": {"type": "api_error", "message": "oops"}}
    info = error_from_anthropic(200, event)
    assert (info.kind, info.status, info.upstream_status) == (ErrorKind.SERVER, 500, 500)
