"""The Anthropic adapter's failures over real HTTP against the fake Messages API: bad keys
(never echoed), missing models, rate limits, overloads, broken streams, no upstream, and
requests refused before they are sent."""

from __future__ import annotations

from typing import Any

import pytest

from schemas.errors import ErrorKind
from schemas.usage import TokenUsage
from tests.fakes.server import free_port
from tests.workers.providers.anthropic_fixtures import (
    anthropic_provider,  # noqa: F401 - the ``provider`` fixture
    call_for,
    collect,
    drain,
    serve_fake_anthropic,  # noqa: F401 - the module's ``fake_anthropic`` fixture
    upstream_error,
    user,
)
from workers.providers.anthropic.adapter import AnthropicProvider
from workers.providers.base import UpstreamError


async def test_a_wrong_api_key_is_an_authentication_error(
    provider: AnthropicProvider, fake_anthropic: tuple[str, Any]
) -> None:
    url, _ = fake_anthropic
    error = await upstream_error(provider, call_for(url, {}, key="sk-ant-wrong"))
    assert (error.info.kind, error.info.status) == (ErrorKind.AUTHENTICATION, 401)
    assert not error.info.retryable


async def test_the_api_key_never_appears_in_an_error_message(
    provider: AnthropicProvider, fake_anthropic: tuple[str, Any]
) -> None:
    url, _ = fake_anthropic
    secret = "sk-ant-api03-leaky-secret"
    call = call_for(url, {}, key=secret)
    error = await upstream_error(provider, call)
    with pytest.raises(UpstreamError) as streamed:
        await collect(provider, call)
    for raised in (error, streamed.value):
        assert "invalid x-api-key" in raised.info.message
        assert secret not in raised.info.model_dump_json()
        assert secret not in str(raised)


async def test_an_unknown_model_is_not_found_with_model_not_found_code(
    provider: AnthropicProvider, fake_anthropic: tuple[str, Any]
) -> None:
    url, _ = fake_anthropic
    error = await upstream_error(provider, call_for(url, {}, model="fail-404"))
    assert (error.info.kind, error.info.status, error.info.code) == (
        ErrorKind.NOT_FOUND,
        404,
        "model_not_found",
    )


async def test_a_rate_limit_carries_retry_after(
    provider: AnthropicProvider, fake_anthropic: tuple[str, Any]
) -> None:
    url, _ = fake_anthropic
    error = await upstream_error(provider, call_for(url, {}, model="fail-429"))
    assert (error.info.kind, error.info.status) == (ErrorKind.RATE_LIMIT, 429)
    assert error.info.retryable
    assert error.info.retry_after == 7.0


async def test_an_overloaded_529_is_a_retryable_503(
    provider: AnthropicProvider, fake_anthropic: tuple[str, Any]
) -> None:
    url, _ = fake_anthropic
    error = await upstream_error(provider, call_for(url, {}, model="fail-529"))
    assert (error.info.kind, error.info.status, error.info.upstream_status) == (
        ErrorKind.OVERLOADED,
        503,
        529,
    )
    assert error.info.retryable


async def test_a_server_error_is_retryable(
    provider: AnthropicProvider, fake_anthropic: tuple[str, Any]
) -> None:
    url, _ = fake_anthropic
    error = await upstream_error(provider, call_for(url, {}, model="fail-500"))
    assert (error.info.kind, error.info.status, error.info.retryable) == (
        ErrorKind.SERVER,
        500,
        True,
    )


async def test_a_prompt_too_long_is_a_context_length_error_over_http(
    provider: AnthropicProvider, fake_anthropic: tuple[str, Any]
) -> None:
    url, _ = fake_anthropic
    error = await upstream_error(provider, call_for(url, {"messages": [user("[too-long]")]}))
    assert (error.info.kind, error.info.code) == (
        ErrorKind.CONTEXT_LENGTH,
        "context_length_exceeded",
    )
    assert not error.info.retryable


async def test_a_stream_that_fails_before_starting_raises_the_mapped_error(
    provider: AnthropicProvider, fake_anthropic: tuple[str, Any]
) -> None:
    url, _ = fake_anthropic
    with pytest.raises(UpstreamError) as caught:
        await collect(provider, call_for(url, {}, model="fail-529"))
    assert caught.value.info.kind is ErrorKind.OVERLOADED


async def test_an_error_event_mid_stream_raises_a_retryable_overload_after_the_text_so_far(
    provider: AnthropicProvider, fake_anthropic: tuple[str, Any]
) -> None:
    url, _ = fake_anthropic
    received: list[Any] = []
    with pytest.raises(UpstreamError) as caught:
        await drain(provider.stream(call_for(url, {}, model="fail-midstream")), received)
    assert (caught.value.info.kind, caught.value.info.status) == (ErrorKind.OVERLOADED, 503)
    assert caught.value.info.retryable
    text = "".join(c["choices"][0]["delta"].get("content") or ""
                   for c in received if isinstance(c, dict))
    assert text == "Hello! You said: hi "
    # the input was billed before the stream broke: it is reported, to be accounted
    running = [item for item in received if isinstance(item, TokenUsage)]
    assert running
    assert running[-1].prompt_tokens > 0


async def test_a_stream_that_ends_without_message_stop_is_a_server_error(
    provider: AnthropicProvider, fake_anthropic: tuple[str, Any]
) -> None:
    url, _ = fake_anthropic
    with pytest.raises(UpstreamError) as caught:
        await collect(provider, call_for(url, {}, model="fail-truncated"))
    assert caught.value.info.kind is ErrorKind.SERVER
    assert "ended early" in caught.value.info.message


async def test_an_unreachable_upstream_is_a_connection_error(provider: AnthropicProvider) -> None:
    call = call_for(f"http://127.0.0.1:{free_port()}", {})
    error = await upstream_error(provider, call)
    assert error.info.kind is ErrorKind.CONNECTION
    with pytest.raises(UpstreamError) as streamed:
        await collect(provider, call)
    assert streamed.value.info.kind is ErrorKind.CONNECTION


async def test_an_invalid_request_is_refused_before_anything_is_sent(
    provider: AnthropicProvider, fake_anthropic: tuple[str, Any]
) -> None:
    url, app = fake_anthropic
    sent = len(app.state.requests)
    error = await upstream_error(provider, call_for(url, {"n": 3}))
    assert (error.info.kind, error.info.param) == (ErrorKind.INVALID_REQUEST, "n")
    assert len(app.state.requests) == sent


async def test_embeddings_are_refused_as_an_invalid_request(
    provider: AnthropicProvider, fake_anthropic: tuple[str, Any]
) -> None:
    url, _ = fake_anthropic
    with pytest.raises(UpstreamError) as caught:
        await provider.embed(call_for(url, {"input": "hello"}))
    assert caught.value.info.kind is ErrorKind.INVALID_REQUEST
    assert "embeddings" in caught.value.info.message
