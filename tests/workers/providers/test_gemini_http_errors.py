"""The Gemini adapter's failures over HTTP against the fake Gemini: bad keys (never echoed),
missing models, rate limits, outages, context overflows, broken streams, no upstream."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette

from schemas.usage import TokenUsage
from tests.fakes.server import free_port
from tests.workers.providers.gemini_fixtures import (
    KEY,
    failure,
    gemini_provider,  # noqa: F401 - the ``provider`` fixture
    make_call,
    serve_fake_gemini,  # noqa: F401 - the module's ``fake`` fixture
    user,
)
from workers.providers.base import StreamItem, UpstreamError
from workers.providers.gemini.adapter import (
    GeminiProvider,
)


async def test_a_bad_key_is_a_401_whose_message_does_not_show_the_key(
    fake: tuple[Starlette, str], provider: GeminiProvider
) -> None:
    _, url = fake
    wrong = "AIzaSyWRONG-wrong-wrong-wrong-wrong-1234"
    info = await failure(provider, make_call(url, {"messages": [user("hi")]}, key=wrong))
    assert (info.kind, info.status, info.upstream_status) == ("authentication", 401, 400)
    assert wrong not in info.message
    assert not info.retryable


async def test_a_missing_model_is_a_404_model_not_found(
    fake: tuple[Starlette, str], provider: GeminiProvider
) -> None:
    _, url = fake
    info = await failure(provider, make_call(url, {"messages": [user("hi")]}, "missing-model"))
    assert (info.kind, info.status, info.code) == ("not_found", 404, "model_not_found")


async def test_a_rate_limit_is_a_retryable_429_with_the_retry_delay(
    fake: tuple[Starlette, str], provider: GeminiProvider
) -> None:
    _, url = fake
    call = make_call(url, {"messages": [user("hi")]}, "fail-429")
    for info in (await failure(provider, call), await failure(provider, call, stream=True)):
        assert (info.kind, info.status, info.retry_after) == ("rate_limit", 429, 12.0)
        assert info.retryable


@pytest.mark.parametrize(
    ("model", "kind", "status"),
    [
        ("fail-503", "overloaded", 503),
        ("fail-500", "server", 500),
        ("fail-504", "timeout", 504),
    ],
)
async def test_upstream_outages_are_retryable(
    fake: tuple[Starlette, str], provider: GeminiProvider, model: str, kind: str, status: int
) -> None:
    _, url = fake
    info = await failure(provider, make_call(url, {"messages": [user("hi")]}, model))
    assert (info.kind, info.status, info.retryable) == (kind, status, True)


async def test_a_context_overflow_is_a_context_length_error(
    fake: tuple[Starlette, str], provider: GeminiProvider
) -> None:
    _, url = fake
    info = await failure(provider, make_call(url, {"messages": [user("hi")]}, "fail-context"))
    assert (info.kind, info.status, info.code) == (
        "context_length",
        400,
        "context_length_exceeded",
    )


async def test_the_key_never_appears_even_when_gemini_echoes_it(
    fake: tuple[Starlette, str], provider: GeminiProvider
) -> None:
    _, url = fake
    info = await failure(provider, make_call(url, {"messages": [user("hi")]}, "fail-echo-key"))
    assert info.kind == "invalid_request"
    assert KEY not in info.message
    assert "***" in info.message


@pytest.mark.parametrize(
    ("model", "kind"),
    [
        ("fail-midstream", "connection"),
        ("fail-midstream-error", "server"),
        ("truncated-stream", "server"),
    ],
)
async def test_a_stream_that_breaks_after_some_text_raises(
    fake: tuple[Starlette, str], provider: GeminiProvider, model: str, kind: str
) -> None:
    _, url = fake
    received: list[StreamItem] = []

    async def drain() -> None:
        async for item in provider.stream(make_call(url, {"messages": [user("hi")]}, model)):
            received.append(item)

    with pytest.raises(UpstreamError) as caught:
        await drain()
    assert caught.value.info.kind == kind
    assert caught.value.info.retryable
    assert any(isinstance(i, dict) and i["choices"][0]["delta"].get("content") for i in received)
    assert not any(isinstance(i, TokenUsage) for i in received)


async def test_an_unreachable_gemini_is_a_connection_error(provider: GeminiProvider) -> None:
    call = make_call(f"http://127.0.0.1:{free_port()}", {"messages": [user("hi")]})
    info = await failure(provider, call)
    assert info.kind == "connection"
    assert KEY not in info.message
