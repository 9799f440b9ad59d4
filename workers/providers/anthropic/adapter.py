"""Anthropic's Messages API behind the OpenAI-shaped Provider protocol.

Body translation lives in :mod:`workers.providers.anthropic.translate` (requests) and
:mod:`workers.providers.anthropic.answers` (answers, streams); this module does
the HTTP and turns Anthropic's errors, whether an error response or an ``error`` event
inside a 200 stream, into :class:`ErrorInfo`. The deployment's API key is scrubbed from
every error message before it leaves the adapter.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any

import httpx

from schemas.config import Deployment
from schemas.errors import ErrorInfo, ErrorKind
from schemas.usage import TokenUsage
from workers.providers.anthropic.answers import (
    StreamTranslator,
    from_anthropic_response,
    usage_from_anthropic,
)
from workers.providers.anthropic.translate import PROVIDER, to_anthropic_request
from workers.providers.base import (
    Completion,
    StreamItem,
    UpstreamCall,
    UpstreamError,
    kind_for_status,
    retry_after,
    status_for_kind,
    transport_error,
)
from workers.providers.decode import json_body
from workers.providers.sse import drain, read_events

ANTHROPIC_VERSION = "2023-06-01"
# The client's headers a passed-through Messages call keeps: betas turn on body fields.
NATIVE_HEADERS = ("anthropic-version", "anthropic-beta")

# Anthropic's error type -> our kind, and the HTTP status Anthropic pairs with it. The status
# matters for errors that arrive as events inside a 200 stream.
_ERROR_TYPES: dict[str, tuple[ErrorKind, int]] = {
    "invalid_request_error": (ErrorKind.INVALID_REQUEST, 400),
    "authentication_error": (ErrorKind.AUTHENTICATION, 401),
    # Out of credit: retrying the same key cannot help, another deployment might.
    "billing_error": (ErrorKind.PERMISSION, 402),
    "permission_error": (ErrorKind.PERMISSION, 403),
    "not_found_error": (ErrorKind.NOT_FOUND, 404),
    "request_too_large": (ErrorKind.INVALID_REQUEST, 413),
    "rate_limit_error": (ErrorKind.RATE_LIMIT, 429),
    "api_error": (ErrorKind.SERVER, 500),
    "timeout_error": (ErrorKind.TIMEOUT, 504),
    "overloaded_error": (ErrorKind.OVERLOADED, 529),
}

_CODES: dict[str, str] = {
    "not_found_error": "model_not_found",
    "billing_error": "insufficient_quota",
}

# Anthropic reports an over-long prompt as a plain invalid_request_error; only the message
# tells it apart, e.g. "prompt is too long: 208310 tokens > 200000 maximum" or
# "input length and `max_tokens` exceed context limit: ...".
_CONTEXT_MARKERS = ("prompt is too long", "context limit", "context window", "context length")


def error_from_anthropic(
    status: int, body: bytes | dict[str, Any], headers: Mapping[str, str] | None = None
) -> ErrorInfo:
    """Our error for an Anthropic error body; ``status`` is below 400 for in-stream errors."""
    error_type, message = _read_error(body)
    known = _ERROR_TYPES.get(error_type or "")
    if known is not None:
        kind, native_status = known
    elif status >= 400:
        kind, native_status = kind_for_status(status), status
    else:
        kind, native_status = ErrorKind.SERVER, 500
    upstream_status = status if status >= 400 else native_status
    code = _CODES.get(error_type or "")
    if kind is ErrorKind.INVALID_REQUEST and any(m in message.lower() for m in _CONTEXT_MARKERS):
        kind, code = ErrorKind.CONTEXT_LENGTH, "context_length_exceeded"
    return ErrorInfo.of(
        kind,
        message or f"{PROVIDER} returned HTTP {upstream_status}",
        status=status_for_kind(kind, upstream_status),
        code=code,
        retry_after=retry_after(httpx.Headers(headers)) if headers is not None else None,
        provider=PROVIDER,
        upstream_status=upstream_status,
    )


def _read_error(body: bytes | dict[str, Any]) -> tuple[str | None, str]:
    """The error type and message of ``{"type":"error","error":{"type","message"}}``."""
    parsed: Any = body
    if isinstance(body, bytes | bytearray):
        try:
            parsed = json.loads(body)
        except ValueError:
            # Proxies in front of Anthropic answer with HTML; its text helps nobody.
            return None, ""
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if not isinstance(error, dict):
        return None, ""
    error_type = error.get("type")
    return (error_type if isinstance(error_type, str) else None), str(error.get("message") or "")


def _scrubbed(info: ErrorInfo, deployment: Deployment) -> UpstreamError:
    key = deployment.api_key.get_secret_value() if deployment.api_key else ""
    if key and key in info.message:
        info = info.model_copy(update={"message": info.message.replace(key, "[redacted]")})
    return UpstreamError(info)


def _malformed(what: str) -> UpstreamError:
    return UpstreamError(
        ErrorInfo.of(ErrorKind.SERVER, f"{PROVIDER} sent a malformed {what}", provider=PROVIDER)
    )


class AnthropicProvider:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    def _request(self, call: UpstreamCall, *, stream: bool) -> httpx.Request:
        deployment = call.deployment
        body = to_anthropic_request(call.body, deployment.upstream_model)
        if stream:
            body["stream"] = True
        headers = {"anthropic-version": ANTHROPIC_VERSION, "content-type": "application/json"}
        if deployment.api_key is not None:
            headers["x-api-key"] = deployment.api_key.get_secret_value()
        return self._client.build_request(
            "POST",
            f"{deployment.base_url}/v1/messages",
            json=body,
            headers=headers,
            timeout=deployment.timeout,
        )

    async def complete(self, call: UpstreamCall) -> Completion:
        request = self._request(call, stream=False)
        try:
            response = await self._client.send(request)
        except httpx.HTTPError as exc:
            raise transport_error(exc, PROVIDER) from None
        if not response.is_success:
            raise _scrubbed(
                error_from_anthropic(response.status_code, response.content, response.headers),
                call.deployment,
            )
        message = await json_body(response)
        if not isinstance(message, dict):
            raise _malformed("body")
        return Completion(
            response=from_anthropic_response(
                message, request_id=call.request_id, model=call.deployment.upstream_model
            ),
            usage=usage_from_anthropic(message.get("usage") or {}),
        )

    async def _events(self, request: httpx.Request,
                      call: UpstreamCall) -> AsyncGenerator[tuple[str, str, dict[str, Any], str]]:
        """Send ``request`` streamed; each event as (type, SSE name, parsed data, the data as
        sent). A
        status over 399 or an ``error`` event is raised as Anthropic's error, a transport
        failure as one of ours; the response is closed when this generator is."""
        try:
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise transport_error(exc, PROVIDER) from None
        try:
            if not response.is_success:
                body = await response.aread()
                raise _scrubbed(
                    error_from_anthropic(response.status_code, body, response.headers),
                    call.deployment,
                )
            async for event in read_events(response):
                try:
                    data = json.loads(event.data)
                except ValueError:
                    raise _malformed("event") from None
                if not isinstance(data, dict):
                    raise _malformed("event")
                kind = str(data.get("type") or event.event or "")
                if kind == "error":
                    raise _scrubbed(
                        error_from_anthropic(response.status_code, data), call.deployment)
                yield kind, event.event or kind, data, event.data
        except httpx.HTTPError as exc:
            raise transport_error(exc, PROVIDER) from None
        finally:
            await response.aclose()

    async def stream(self, call: UpstreamCall) -> AsyncIterator[StreamItem]:
        translator = StreamTranslator(
            request_id=call.request_id, model=call.deployment.upstream_model
        )
        async with contextlib.aclosing(
                self._events(self._request(call, stream=True), call)) as events:
            async for _, name, data, _raw in events:
                for chunk in translator.feed(name, data):
                    yield chunk
                if data.get("type") == "message_start":
                    # The input is billed from here on: a stream cut off later is
                    # accounted with it.
                    yield translator.usage
                if translator.done:
                    await drain(events)
                    yield translator.usage
                    return
        raise UpstreamError(
            ErrorInfo.of(ErrorKind.SERVER, f"{PROVIDER} stream ended early", provider=PROVIDER)
        )

    # --- Anthropic's own Messages API, passed through (workers/protocols/messages) ---------

    def _native_request(self, call: UpstreamCall, *, stream: bool) -> httpx.Request:
        """The client's Messages body as it is, but for the upstream model and our key;
        the client's ``anthropic-beta`` and ``anthropic-version`` go along."""
        deployment = call.deployment
        body = {**call.body, "model": deployment.upstream_model}
        if stream:
            body["stream"] = True
        else:
            body.pop("stream", None)
        headers = {"anthropic-version": ANTHROPIC_VERSION, "content-type": "application/json"}
        for name in NATIVE_HEADERS:
            if call.headers.get(name):
                headers[name] = call.headers[name]
        if deployment.api_key is not None:
            headers["x-api-key"] = deployment.api_key.get_secret_value()
        return self._client.build_request(
            "POST", f"{deployment.base_url}/v1/messages", json=body, headers=headers,
            timeout=deployment.timeout)

    async def messages(self, call: UpstreamCall) -> Completion:
        """A non-streamed Messages call; the response is Anthropic's ``Message`` as sent."""
        try:
            response = await self._client.send(self._native_request(call, stream=False))
        except httpx.HTTPError as exc:
            raise transport_error(exc, PROVIDER) from None
        if not response.is_success:
            raise _scrubbed(
                error_from_anthropic(response.status_code, response.content, response.headers),
                call.deployment,
            )
        message = await json_body(response)
        if not isinstance(message, dict):
            raise _malformed("body")
        return Completion(response=message, usage=usage_from_anthropic(message.get("usage") or {}))

    async def messages_stream(self, call: UpstreamCall) -> AsyncIterator[bytes | TokenUsage]:
        """A streamed Messages call: each event framed as Anthropic sent it, and the usage
        so far (at ``message_start``, then at the end). ``message_start`` and pings wait for
        the first content, so that an error before any content can still fail over."""
        counts: dict[str, Any] = {}
        held: list[bytes] | None = []
        async with contextlib.aclosing(
                self._events(self._native_request(call, stream=True), call)) as events:
            async for kind, name, data, raw in events:
                framed = f"event: {name}\ndata: {raw}\n\n".encode()
                if kind == "message_start":
                    counts.update((data.get("message") or {}).get("usage") or {})
                    yield usage_from_anthropic(counts)
                elif kind == "message_delta":
                    usage = data.get("usage") or {}
                    counts.update({k: v for k, v in usage.items() if v is not None})
                if held is not None and kind in ("message_start", "ping"):
                    held.append(framed)
                    continue
                if held is not None:
                    for early in held:
                        yield early
                    held = None
                yield framed
                if kind == "message_stop":
                    await drain(events)
                    yield usage_from_anthropic(counts)
                    return
        raise UpstreamError(
            ErrorInfo.of(ErrorKind.SERVER, f"{PROVIDER} stream ended early", provider=PROVIDER)
        )

    async def embed(self, call: UpstreamCall) -> Completion:
        raise UpstreamError(
            ErrorInfo.of(
                ErrorKind.INVALID_REQUEST,
                f"{PROVIDER} does not offer embeddings",
                provider=PROVIDER,
            )
        )
