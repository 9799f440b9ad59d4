from __future__ import annotations

import httpx

from schemas.errors import ErrorKind
from workers.providers.openai.adapter import error_from_openai, split_usage, stream_body


def _err(status: int, body: bytes, headers: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return error_from_openai(status, body, httpx.Headers(headers or {}), "openai")


def test_429_is_a_retryable_rate_limit_with_retry_after() -> None:
    body = b'{"error":{"message":"slow down","type":"requests","code":"rate_limit_exceeded"}}'
    info = _err(429, body, {"retry-after": "3"})
    assert info.kind is ErrorKind.RATE_LIMIT and info.retryable and info.retry_after == 3.0
    assert info.status == 429


def test_context_length_is_recognised_by_code() -> None:
    info = _err(400, b'{"error":{"message":"too long","code":"context_length_exceeded"}}')
    assert info.kind is ErrorKind.CONTEXT_LENGTH and info.status == 400 and not info.retryable


def test_404_without_code_is_model_not_found() -> None:
    assert _err(404, b"{}").code == "model_not_found"


def test_non_json_5xx_is_a_retryable_server_error() -> None:
    info = _err(502, b"<html>bad gateway</html>")
    assert info.kind is ErrorKind.SERVER and info.retryable and info.status == 502


def test_stream_body_always_asks_for_usage() -> None:
    body = stream_body({"model": "m", "stream_options": {"include_usage": False, "x": 1}})
    assert body["stream_options"] == {"include_usage": True, "x": 1} and body["stream"] is True


def test_usage_only_chunk_is_taken_out_of_the_stream() -> None:
    content, usage = split_usage({"choices": [], "usage": {"prompt_tokens": 3,
                                                           "completion_tokens": 4}})
    assert content is None and usage is not None and usage.total_tokens == 7
    content, usage = split_usage({"choices": [{"delta": {}}], "usage": None})
    assert content == {"choices": [{"delta": {}}]} and usage is None
