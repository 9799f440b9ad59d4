"""OpenAI, and every server that speaks its API (vLLM, Ollama, Mistral, DeepSeek, Groq, ...).

The request body passes through untouched apart from the model name, so parameters we do
not know reach the upstream. Streams always ask for usage: a call we cannot price is a call
we cannot account for. The usage chunk is taken out of the stream here; the ingress adds it
back for clients that asked for it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx

from core.json_codec import dumps, loads
from schemas import estimate
from schemas.errors import ErrorInfo, ErrorKind
from schemas.usage import TokenUsage
from workers.providers import rerank
from workers.providers.base import (
    Completion,
    StreamItem,
    UpstreamCall,
    UpstreamError,
    kind_for_status,
    retry_after,
    status_for_kind,
    transport_error,
    unsupported,
)
from workers.providers.decode import json_body
from workers.providers.openai.media import OpenAIMedia
from workers.providers.sse import drain, read_events

# Providers of this adapter known to have no ``/rerank``.
NO_RERANK = frozenset({"openai", "azure"})

_CONTEXT_CODES = {"context_length_exceeded", "string_above_max_length"}


def error_from_openai(
    status: int, body: bytes, headers: httpx.Headers, provider: str
) -> ErrorInfo:
    """Map an upstream OpenAI-style error response onto our error kinds."""
    message = f"{provider} returned HTTP {status}"
    code: str | None = None
    param: str | None = None
    etype: str | None = None
    try:
        parsed = loads(body)
    except ValueError:
        parsed = None
    err = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(err, dict):
        message = str(err.get("message") or message)
        code = err.get("code") if isinstance(err.get("code"), str) else None
        param = err.get("param") if isinstance(err.get("param"), str) else None
        etype = err.get("type") if isinstance(err.get("type"), str) else None
    elif isinstance(err, str):
        message = err
    kind = kind_for_status(status)
    if code in _CONTEXT_CODES or "maximum context length" in message:
        kind = ErrorKind.CONTEXT_LENGTH
        code = code or "context_length_exceeded"
    elif code == "content_filter" or etype == "content_filter":
        kind = ErrorKind.CONTENT_POLICY
    elif status == 404 and code is None:
        code = "model_not_found"
    return ErrorInfo.of(
        kind,
        message,
        status=status_for_kind(kind, status),
        code=code,
        param=param,
        retry_after=retry_after(headers),
        provider=provider,
        upstream_status=status,
    )


def stream_body(body: dict[str, Any]) -> dict[str, Any]:
    """The upstream body of a streamed call: usage always requested."""
    options = dict(body.get("stream_options") or {})
    options["include_usage"] = True
    return {**body, "stream": True, "stream_options": options}


def split_usage(chunk: dict[str, Any]) -> tuple[dict[str, Any] | None, TokenUsage | None]:
    """Separate a chunk's content from its usage; the usage-only chunk has no content."""
    usage = chunk.pop("usage", None)
    found = TokenUsage.from_openai(usage) if usage else None
    if not chunk.get("choices") and found is not None:
        return None, found
    return chunk, found


class OpenAIProvider(OpenAIMedia):
    def __init__(self, client: httpx.AsyncClient, name: str = "openai") -> None:
        self._client = client
        self._name = name
        self._header_cache: dict[str, dict[str, str]] = {}
        self._url_cache: dict[tuple[str, str], httpx.URL] = {}

    def _headers(self, call: UpstreamCall) -> dict[str, str]:
        # Built once per deployment: this runs on every call.
        headers = self._header_cache.get(call.deployment.id)
        if headers is None:
            headers = {"content-type": "application/json"}
            key = call.deployment.api_key
            if key is not None:
                headers["authorization"] = f"Bearer {key.get_secret_value()}"
            self._header_cache[call.deployment.id] = headers
        return headers

    def _url(self, call: UpstreamCall, path: str) -> httpx.URL:
        cache_key = (call.deployment.id, path)
        url = self._url_cache.get(cache_key)
        if url is None:
            url = self._url_cache[cache_key] = httpx.URL(call.deployment.base_url + path)
        return url

    async def _post(
        self, call: UpstreamCall, path: str, body: dict[str, Any], route: str | None = None
    ) -> httpx.Response:
        """POST ``body``; for an endpoint not every server has, ``route`` names it to the
        client when the server answers that it has no such path."""
        try:
            response = await self._client.post(
                self._url(call, path),
                content=dumps(body),
                headers=self._headers(call),
                timeout=call.deployment.timeout,
            )
        except httpx.HTTPError as exc:
            raise transport_error(exc, self._name) from None
        if route is not None and _no_such_path(response):
            raise unsupported(self._name, route)
        if response.status_code >= 400:
            raise UpstreamError(
                error_from_openai(
                    response.status_code, response.content, response.headers, self._name
                )
            )
        return response

    async def complete(self, call: UpstreamCall) -> Completion:
        body = {**call.body, "stream": False}
        body.pop("stream_options", None)
        response = await self._post(call, "/chat/completions", body)
        data = await _json(response, self._name)
        return Completion(response=data, usage=TokenUsage.from_openai(data.get("usage")))

    async def embed(self, call: UpstreamCall) -> Completion:
        response = await self._post(call, "/embeddings", call.body)
        data = await _json(response, self._name)
        return Completion(response=data, usage=TokenUsage.from_openai(data.get("usage")))

    async def rerank(self, call: UpstreamCall) -> Completion:
        """``/rerank`` of a server that has one (vLLM, Jina, Infinity); OpenAI has none."""
        if self._name in NO_RERANK:
            raise unsupported(self._name, "/v1/rerank")
        response = await self._post(call, "/rerank", call.body, route="/v1/rerank")
        data = await _json(response, self._name)
        answer, tokens = rerank.from_compatible(data, call.body, call.request_id, self._name)
        return Completion(response=answer, usage=TokenUsage(prompt_tokens=tokens, queries=1))

    async def moderate(self, call: UpstreamCall) -> Completion:
        """``/moderations``, passed through. OpenAI reports no usage for it (it is free); the
        input is counted as an embedding's would be, for a deployment that prices it."""
        response = await self._post(call, "/moderations", call.body, route="/v1/moderations")
        data = await _json(response, self._name)
        reported = data.get("usage") if isinstance(data.get("usage"), dict) else None
        usage = (TokenUsage.from_openai(reported) if reported else
                 TokenUsage(prompt_tokens=estimate.embedding_tokens(call.body), estimated=True))
        return Completion(response=data, usage=usage)

    async def complete_text(self, call: UpstreamCall) -> Completion:
        body = {**call.body, "stream": False}
        body.pop("stream_options", None)
        response = await self._post(call, "/completions", body)
        data = await _json(response, self._name)
        return Completion(response=data, usage=TokenUsage.from_openai(data.get("usage")))

    def stream(self, call: UpstreamCall) -> AsyncIterator[StreamItem]:
        return self._stream(call, "/chat/completions")

    def stream_text(self, call: UpstreamCall) -> AsyncIterator[StreamItem]:
        return self._stream(call, "/completions")

    async def _stream(self, call: UpstreamCall, path: str) -> AsyncIterator[StreamItem]:
        request = self._client.build_request(
            "POST",
            self._url(call, path),
            content=dumps(stream_body(call.body)),
            headers=self._headers(call),
            timeout=call.deployment.timeout,
        )
        try:
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise transport_error(exc, self._name) from None
        try:
            if response.status_code >= 400:
                body = await response.aread()
                raise UpstreamError(
                    error_from_openai(response.status_code, body, response.headers, self._name)
                )
            usage: TokenUsage | None = None
            finished = False
            events = read_events(response)
            async for event in events:
                if event.data.startswith("[DONE]"):
                    finished = True
                    break
                try:
                    chunk = loads(event.data)
                except ValueError:
                    raise UpstreamError(
                        ErrorInfo.of(
                            ErrorKind.SERVER, f"{self._name} sent a malformed event",
                            provider=self._name,
                        )
                    ) from None
                if "error" in chunk:
                    err = chunk["error"] if isinstance(chunk["error"], dict) else {}
                    raise UpstreamError(
                        ErrorInfo.of(
                            ErrorKind.SERVER,
                            str(err.get("message") or f"{self._name} failed mid-stream"),
                            provider=self._name,
                        )
                    )
                content, found = split_usage(chunk)
                if found is not None:
                    usage = found
                if content is not None:
                    yield content
            if not finished:
                raise UpstreamError(
                    ErrorInfo.of(
                        ErrorKind.SERVER, f"{self._name} stream ended early", provider=self._name
                    )
                )
            await drain(events)
            yield usage or TokenUsage()
        except httpx.HTTPError as exc:
            raise transport_error(exc, self._name) from None
        finally:
            await response.aclose()


def _no_such_path(response: httpx.Response) -> bool:
    """A 404 or 405 from the web framework rather than the API: no OpenAI-style ``error``
    (an unknown model's 404 has one)."""
    if response.status_code not in (404, 405):
        return False
    try:
        parsed = loads(response.content)
    except ValueError:
        return True
    return not (isinstance(parsed, dict) and "error" in parsed)


async def _json(response: httpx.Response, provider: str) -> dict[str, Any]:
    data = await json_body(response)
    if not isinstance(data, dict):
        raise UpstreamError(
            ErrorInfo.of(ErrorKind.SERVER, f"{provider} sent a malformed body", provider=provider)
        )
    return data
