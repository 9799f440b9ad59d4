"""Failures on the Messages routes in Anthropic's error shape."""

from __future__ import annotations

from ingress.dispatch.relay import ANTHROPIC, OPENAI
from ingress.errors import ApiError, speaks_anthropic


def test_every_failure_has_anthropics_error_type_for_its_status() -> None:
    def kind(status: int) -> str:
        return str(ApiError(status, "m").anthropic_body()["error"]["type"])

    assert [kind(s) for s in (400, 401, 402, 403, 404, 405, 413, 429, 500, 502, 503, 504)] == [
        "invalid_request_error", "authentication_error", "billing_error", "permission_error",
        "not_found_error", "invalid_request_error", "request_too_large", "rate_limit_error",
        "api_error", "api_error", "overloaded_error", "timeout_error"]


def test_a_broken_stream_ends_with_its_protocols_error_event() -> None:
    error = ApiError(529, "Overloaded")
    assert ANTHROPIC.error(error) == (
        b'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error", '
        b'"message": "Overloaded"}}\n\n')
    assert OPENAI.error(error).endswith(b"data: [DONE]\n\n")
    assert OPENAI.error(error).startswith(b'data: {"error": ')


def test_only_the_messages_routes_speak_anthropic() -> None:
    assert all(speaks_anthropic(p) for p in (
        "/v1/messages", "/messages", "/v1/messages/count_tokens", "/messages/count_tokens"))
    assert not any(speaks_anthropic(p) for p in (
        "/v1/chat/completions", "/v1/messages/x", "/v2/messages"))
