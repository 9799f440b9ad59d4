"""What every provider adapter is, and the exceptions they raise.

An adapter turns one OpenAI-shaped request into its provider's native HTTP call and the
answer back into OpenAI's shapes. Translation lives in pure functions inside each adapter
module; the adapter's methods only do the HTTP. All adapters share one pooled
``httpx.AsyncClient`` handed to them at construction.

Errors::

    UpstreamError            the call failed; carries an ErrorInfo (kind, status, retryable)
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import httpx

from schemas.config import Deployment
from schemas.errors import ErrorInfo, ErrorKind
from schemas.usage import TokenUsage


@dataclass(frozen=True, slots=True)
class UpstreamCall:
    """One call to make. ``body`` is the client's OpenAI request body with ``model``
    already replaced by the deployment's upstream model name."""

    deployment: Deployment
    body: dict[str, Any]
    request_id: str
    # The client's protocol headers a native pass-through keeps (``anthropic-beta``).
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Completion:
    """A whole non-streamed answer, already in OpenAI's shape."""

    response: dict[str, Any]
    usage: TokenUsage


# A streamed answer is a sequence of OpenAI ``chat.completion.chunk`` dicts (never with a
# ``usage`` field) and the call's TokenUsage: at least once, last; a provider that knows
# running totals earlier (Anthropic's input tokens at message_start) yields them too, so a
# stream cut off midway is accounted with what it used. The last TokenUsage counts.
StreamItem = dict[str, Any] | TokenUsage


class Provider(Protocol):
    async def complete(self, call: UpstreamCall) -> Completion: ...

    def stream(self, call: UpstreamCall) -> AsyncIterator[StreamItem]: ...

    async def embed(self, call: UpstreamCall) -> Completion: ...


@runtime_checkable
class TextCompleter(Protocol):
    """An adapter whose upstream has legacy text completions (``/v1/completions``): the
    request and its answers (``text_completion`` objects and chunks) pass through."""

    async def complete_text(self, call: UpstreamCall) -> Completion: ...

    def stream_text(self, call: UpstreamCall) -> AsyncIterator[StreamItem]: ...


@runtime_checkable
class Reranker(Protocol):
    """An adapter whose upstream ranks documents against a query (``/v1/rerank``)."""

    async def rerank(self, call: UpstreamCall) -> Completion: ...


@runtime_checkable
class Moderator(Protocol):
    """An adapter whose upstream classifies text as harmful or not (``/v1/moderations``)."""

    async def moderate(self, call: UpstreamCall) -> Completion: ...


def unsupported(provider: str, route: str) -> UpstreamError:
    """A 400 for a route the deployment's provider does not serve; no call is made."""
    return UpstreamError(ErrorInfo.of(
        ErrorKind.INVALID_REQUEST,
        f"{provider} deployments do not serve {route}; use a model served by a provider "
        "that does.",
        code="unsupported_endpoint", status=400, provider=provider))


class UpstreamError(Exception):
    def __init__(self, info: ErrorInfo) -> None:
        super().__init__(info.message)
        self.info = info


def retry_after(headers: httpx.Headers) -> float | None:
    """Seconds to wait, from ``retry-after-ms`` or ``retry-after`` (seconds or HTTP date)."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return float(raw_ms) / 1000
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(raw) if raw else None
        if parsed is None:
            return None
        return max(0.0, parsed.timestamp() - time.time())


def kind_for_status(status: int) -> ErrorKind:
    """The error kind an upstream HTTP status means when the body says nothing better."""
    if status == 401:
        return ErrorKind.AUTHENTICATION
    if status == 403:
        return ErrorKind.PERMISSION
    if status == 404:
        return ErrorKind.NOT_FOUND
    if status == 408:
        return ErrorKind.TIMEOUT
    if status == 429:
        return ErrorKind.RATE_LIMIT
    if status in (503, 529):
        return ErrorKind.OVERLOADED
    if status == 504:
        return ErrorKind.TIMEOUT
    if status >= 500:
        return ErrorKind.SERVER
    return ErrorKind.INVALID_REQUEST


def status_for_kind(kind: ErrorKind, upstream_status: int) -> int:
    """The status the client sees: the upstream's own for client errors, ours otherwise."""
    if kind in (ErrorKind.INVALID_REQUEST, ErrorKind.CONTEXT_LENGTH, ErrorKind.CONTENT_POLICY):
        return 400 if upstream_status in (413, 422) else upstream_status
    if kind is ErrorKind.SERVER:
        return upstream_status if upstream_status >= 500 else 502
    return ErrorInfo.of(kind, "").status


def transport_error(exc: httpx.HTTPError, provider: str) -> UpstreamError:
    """An upstream that could not be reached or did not answer in time."""
    if isinstance(exc, httpx.TimeoutException):
        info = ErrorInfo.of(
            ErrorKind.TIMEOUT, f"{provider} did not answer in time", provider=provider
        )
    else:
        info = ErrorInfo.of(
            ErrorKind.CONNECTION,
            f"could not reach {provider}: {type(exc).__name__}",
            provider=provider,
        )
    return UpstreamError(info)
