"""Cohere's v2 API (chat, embed, rerank) behind the OpenAI-shaped Provider protocol.

Body translation lives in :mod:`workers.providers.cohere.translate`; this module does the
HTTP and turns Cohere's errors (``{"message": ...}`` with the HTTP status saying what kind)
into :class:`ErrorInfo`, with the deployment's key scrubbed from every message.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from schemas.errors import ErrorInfo, ErrorKind
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
from workers.providers.cohere.retrieval import (
    from_cohere_embed,
    from_cohere_rerank,
    to_cohere_embed,
    to_cohere_rerank,
)
from workers.providers.cohere.translate import (
    PROVIDER,
    StreamTranslator,
    from_cohere_chat,
    to_cohere_chat,
    usage_from_cohere,
)
from workers.providers.decode import json_body
from workers.providers.sse import drain, read_events
from workers.redact import redact

# Statuses Cohere gives a meaning of its own.
_STATUS_KINDS: dict[int, tuple[ErrorKind, str | None]] = {
    402: (ErrorKind.PERMISSION, "insufficient_quota"),  # out of credit: another key may do
    422: (ErrorKind.INVALID_REQUEST, None),
    498: (ErrorKind.AUTHENTICATION, "invalid_api_key"),  # a malformed or unknown token
    # "Cancelled by the user": not by ours, who is still waiting.
    499: (ErrorKind.SERVER, None),
}
_CONTEXT_MARKERS = ("too many tokens", "context length", "context window")


def error_from_cohere(status: int, body: bytes, headers: httpx.Headers, secret: str) -> ErrorInfo:
    """Our error for a Cohere error response."""
    message = ""
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        message = str(parsed.get("message") or parsed.get("detail") or "")
    kind, code = _STATUS_KINDS.get(status, (kind_for_status(status), None))
    if status == 404:
        code = "model_not_found"
    if kind is ErrorKind.INVALID_REQUEST and any(m in message.lower() for m in _CONTEXT_MARKERS):
        kind, code = ErrorKind.CONTEXT_LENGTH, "context_length_exceeded"
    return ErrorInfo.of(
        kind,
        redact(message, [secret]) or f"{PROVIDER} returned HTTP {status}",
        status=status_for_kind(kind, status),
        code=code,
        retry_after=retry_after(headers),
        provider=PROVIDER,
        upstream_status=status,
    )


def _malformed(what: str) -> UpstreamError:
    return UpstreamError(
        ErrorInfo.of(ErrorKind.SERVER, f"{PROVIDER} sent a malformed {what}", provider=PROVIDER)
    )


class CohereProvider:
    def __init__(self, client: httpx.AsyncClient, name: str = PROVIDER) -> None:
        self._client = client
        self._name = name

    @staticmethod
    def _secret(call: UpstreamCall) -> str:
        key = call.deployment.api_key
        return key.get_secret_value() if key is not None else ""

    def _request(self, call: UpstreamCall, path: str, body: dict[str, Any]) -> httpx.Request:
        headers = {"content-type": "application/json", "accept": "application/json"}
        if secret := self._secret(call):
            headers["authorization"] = f"Bearer {secret}"
        if body.get("stream"):
            headers["accept"] = "text/event-stream"
        return self._client.build_request(
            "POST", f"{call.deployment.base_url}{path}",
            content=json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode(),
            headers=headers, timeout=call.deployment.timeout,
        )

    async def _post(self, call: UpstreamCall, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            response = await self._client.send(self._request(call, path, body))
        except httpx.HTTPError as exc:
            raise transport_error(exc, PROVIDER) from None
        if response.status_code >= 400:
            raise UpstreamError(error_from_cohere(
                response.status_code, response.content, response.headers, self._secret(call)))
        data = await json_body(response)
        if not isinstance(data, dict):
            raise _malformed("body")
        return data

    async def complete(self, call: UpstreamCall) -> Completion:
        model = call.deployment.upstream_model
        answer = await self._post(call, "/v2/chat", to_cohere_chat(call.body, model))
        return Completion(
            response=from_cohere_chat(answer, request_id=call.request_id, model=model),
            usage=usage_from_cohere(answer.get("usage")),
        )

    async def embed(self, call: UpstreamCall) -> Completion:
        model = call.deployment.upstream_model
        answer = await self._post(call, "/v2/embed", to_cohere_embed(call.body, model))
        response, usage = from_cohere_embed(answer, model, call.body.get("encoding_format"))
        return Completion(response=response, usage=usage)

    async def rerank(self, call: UpstreamCall) -> Completion:
        model = call.deployment.upstream_model
        answer = await self._post(call, "/v2/rerank", to_cohere_rerank(call.body, model))
        response, usage = from_cohere_rerank(answer, call.body, call.request_id)
        return Completion(response=response, usage=usage)

    async def stream(self, call: UpstreamCall) -> AsyncIterator[StreamItem]:
        model = call.deployment.upstream_model
        body = {**to_cohere_chat(call.body, model), "stream": True}
        try:
            response = await self._client.send(self._request(call, "/v2/chat", body),
                                               stream=True)
        except httpx.HTTPError as exc:
            raise transport_error(exc, PROVIDER) from None
        translator = StreamTranslator(request_id=call.request_id, model=model)
        try:
            if response.status_code >= 400:
                raise UpstreamError(error_from_cohere(
                    response.status_code, await response.aread(), response.headers,
                    self._secret(call)))
            events = read_events(response)
            async for event in events:
                try:
                    data = json.loads(event.data)
                except ValueError:
                    raise _malformed("event") from None
                if not isinstance(data, dict):
                    raise _malformed("event")
                end = data.get("delta") if data.get("type") == "message-end" else None
                if isinstance(end, dict) and end.get("finish_reason") == "ERROR":
                    yield usage_from_cohere(end.get("usage"))
                    raise UpstreamError(ErrorInfo.of(
                        ErrorKind.SERVER,
                        redact(str(end.get("error") or f"{PROVIDER} failed mid-stream"),
                               [self._secret(call)]),
                        provider=PROVIDER))
                for chunk in translator.feed(data):
                    yield chunk
                if translator.done:
                    await drain(events)
                    yield translator.usage
                    return
        except httpx.HTTPError as exc:
            raise transport_error(exc, PROVIDER) from None
        finally:
            await response.aclose()
        raise UpstreamError(
            ErrorInfo.of(ErrorKind.SERVER, f"{PROVIDER} stream ended early", provider=PROVIDER)
        )
