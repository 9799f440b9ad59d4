"""Google Gemini through its native ``generateContent`` API (AI Studio).

The native API rather than Gemini's OpenAI-compatible endpoint: its usage breaks out
thinking and tool-use tokens, and the compatibility layer is reported brittle in tool loops
(thought signatures). Chat translation lives in :mod:`workers.providers.gemini.translate`
(requests) and :mod:`workers.providers.gemini.answers` (answers, streams); this module does
the HTTP, the small embeddings translation, and reads Gemini's errors.
"""

from __future__ import annotations

import base64
import json
import re
import struct
from collections.abc import AsyncIterator
from typing import Any

import httpx

from schemas.errors import ErrorInfo, ErrorKind
from schemas.usage import TokenUsage
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
from workers.providers.gemini.answers import (
    StreamTranslator,
    from_gemini_response,
    usage_from_gemini,
)
from workers.providers.gemini.translate import PROVIDER, invalid_request, to_gemini_request
from workers.providers.sse import read_events

__all__ = [
    "GeminiProvider",
    "StreamTranslator",
    "error_from_gemini",
    "from_gemini_embeddings",
    "from_gemini_response",
    "to_gemini_embed_request",
    "to_gemini_request",
    "usage_from_gemini",
]

# google.rpc status -> our kind, where the status alone decides it.
_RPC_KINDS: dict[str, ErrorKind] = {
    "INVALID_ARGUMENT": ErrorKind.INVALID_REQUEST,
    "FAILED_PRECONDITION": ErrorKind.INVALID_REQUEST,
    "OUT_OF_RANGE": ErrorKind.INVALID_REQUEST,
    "UNAUTHENTICATED": ErrorKind.AUTHENTICATION,
    "PERMISSION_DENIED": ErrorKind.PERMISSION,
    "NOT_FOUND": ErrorKind.NOT_FOUND,
    "RESOURCE_EXHAUSTED": ErrorKind.RATE_LIMIT,
    "INTERNAL": ErrorKind.SERVER,
    "UNAVAILABLE": ErrorKind.OVERLOADED,
    "DEADLINE_EXCEEDED": ErrorKind.TIMEOUT,
}

_CONTEXT_MESSAGE = re.compile(r"input token count.*exceeds the maximum", re.IGNORECASE | re.DOTALL)

# Google API keys have a fixed shape; scrubbing it catches a key echoed back in a URL or
# message even when it is not the one this deployment sent.
_GOOGLE_KEY = re.compile(r"AIza[0-9A-Za-z_\-]{35}")


def error_from_gemini(
    status: int, body: bytes, headers: httpx.Headers, *, secret: str | None = None
) -> ErrorInfo:
    """Map a Gemini error response (google.rpc Status JSON) onto our error kinds."""
    error = _error_object(body)
    message = str(error.get("message") or f"{PROVIDER} returned HTTP {status}")
    rpc_status = str(error.get("status") or "")
    details = [d for d in error.get("details") or [] if isinstance(d, dict)]
    reasons = {d.get("reason") for d in details}

    kind = _RPC_KINDS.get(rpc_status) or kind_for_status(status)
    code: str | None = None
    wait = retry_after(headers)
    # Gemini answers a bad key with 400 INVALID_ARGUMENT; clients expect 401.
    if rpc_status == "INVALID_ARGUMENT" and (
        "API_KEY_INVALID" in reasons or "API key not valid" in message
    ):
        kind, code = ErrorKind.AUTHENTICATION, "invalid_api_key"
    elif kind is ErrorKind.INVALID_REQUEST and _CONTEXT_MESSAGE.search(message):
        kind, code = ErrorKind.CONTEXT_LENGTH, "context_length_exceeded"
    elif kind is ErrorKind.NOT_FOUND:
        code = "model_not_found"
    elif kind is ErrorKind.RATE_LIMIT and wait is None:
        wait = _retry_delay(details)

    return ErrorInfo.of(
        kind,
        _redact(message, secret),
        status=status_for_kind(kind, status),
        code=code,
        retry_after=wait,
        provider=PROVIDER,
        upstream_status=status,
    )


def _error_object(body: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(body)
    except ValueError:
        return {}
    # The non-SSE stream endpoint wraps everything, errors included, in a JSON array.
    if isinstance(parsed, list) and parsed:
        parsed = parsed[0]
    error = parsed.get("error") if isinstance(parsed, dict) else None
    return error if isinstance(error, dict) else {}


def _retry_delay(details: list[dict[str, Any]]) -> float | None:
    for detail in details:
        if str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
            delay = str(detail.get("retryDelay") or "")
            try:
                return float(delay.removesuffix("s"))
            except ValueError:
                return None
    return None


def _redact(message: str, secret: str | None) -> str:
    if secret:
        message = message.replace(secret, "***")
    return _GOOGLE_KEY.sub("AIza***", message)


def to_gemini_embed_request(body: dict[str, Any], model: str) -> dict[str, Any]:
    """The ``batchEmbedContents`` body for an OpenAI embeddings request body."""
    raw = body.get("input")
    texts = [raw] if isinstance(raw, str) else raw
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise invalid_request("gemini embeddings take a string or a list of strings", "input")
    requests: list[dict[str, Any]] = []
    for text in texts:
        request: dict[str, Any] = {
            "model": f"models/{model}",
            "content": {"parts": [{"text": text}]},
        }
        if body.get("dimensions") is not None:
            request["outputDimensionality"] = body["dimensions"]
        requests.append(request)
    return {"requests": requests}


def from_gemini_embeddings(
    resp: dict[str, Any], model: str, encoding_format: str | None = None
) -> tuple[dict[str, Any], TokenUsage]:
    """An OpenAI embeddings list, and its usage (zero when Gemini reports none)."""
    data: list[dict[str, Any]] = []
    for index, embedding in enumerate(resp.get("embeddings") or []):
        values = [float(v) for v in embedding.get("values") or []]
        vector: list[float] | str = values
        if encoding_format == "base64":
            # OpenAI's base64 form is the raw little-endian float32 array; its SDK asks
            # for it by default.
            vector = base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
        data.append({"object": "embedding", "index": index, "embedding": vector})
    prompt = int((resp.get("usageMetadata") or {}).get("promptTokenCount") or 0)
    usage = TokenUsage(prompt_tokens=prompt)
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
    }, usage


def _model_path(model: str) -> str:
    return model.removeprefix("models/")


def _api_root(base_url: str) -> str:
    # A configured api_base may already name the version; the default one does not.
    return base_url if re.search(r"/v1(alpha|beta)?\d*$", base_url) else base_url + "/v1beta"


class GeminiProvider:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    def _url(self, call: UpstreamCall, method: str) -> str:
        model = _model_path(call.deployment.upstream_model)
        return f"{_api_root(call.deployment.base_url)}/models/{model}:{method}"

    @staticmethod
    def _secret(call: UpstreamCall) -> str | None:
        key = call.deployment.api_key
        return key.get_secret_value() if key is not None else None

    def _headers(self, call: UpstreamCall) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        secret = self._secret(call)
        if secret:
            headers["x-goog-api-key"] = secret
        return headers

    @staticmethod
    def _model(call: UpstreamCall) -> str:
        return str(call.body.get("model") or call.deployment.upstream_model)

    def _failure(self, call: UpstreamCall, response: httpx.Response, body: bytes) -> UpstreamError:
        return UpstreamError(
            error_from_gemini(
                response.status_code, body, response.headers, secret=self._secret(call)
            )
        )

    async def _post(self, call: UpstreamCall, method: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            response = await self._client.post(
                self._url(call, method),
                json=body,
                headers=self._headers(call),
                timeout=call.deployment.timeout,
            )
        except httpx.HTTPError as exc:
            raise transport_error(exc, PROVIDER) from None
        if response.status_code >= 400:
            raise self._failure(call, response, response.content)
        data = await json_body(response)
        if not isinstance(data, dict):
            raise UpstreamError(
                ErrorInfo.of(ErrorKind.SERVER, "gemini sent a malformed body", provider=PROVIDER)
            )
        return data

    async def complete(self, call: UpstreamCall) -> Completion:
        data = await self._post(call, "generateContent", to_gemini_request(call.body))
        return Completion(
            response=from_gemini_response(data, self._model(call)),
            usage=usage_from_gemini(data.get("usageMetadata")),
        )

    async def embed(self, call: UpstreamCall) -> Completion:
        model = _model_path(call.deployment.upstream_model)
        body = to_gemini_embed_request(call.body, model)
        data = await self._post(call, "batchEmbedContents", body)
        response, usage = from_gemini_embeddings(
            data, self._model(call), call.body.get("encoding_format")
        )
        return Completion(response=response, usage=usage)

    async def stream(self, call: UpstreamCall) -> AsyncIterator[StreamItem]:
        request = self._client.build_request(
            "POST",
            self._url(call, "streamGenerateContent"),
            params={"alt": "sse"},
            json=to_gemini_request(call.body),
            headers=self._headers(call),
            timeout=call.deployment.timeout,
        )
        try:
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise transport_error(exc, PROVIDER) from None
        try:
            if response.status_code >= 400:
                raise self._failure(call, response, await response.aread())
            translator = StreamTranslator(self._model(call))
            async for event in read_events(response):
                try:
                    chunk = json.loads(event.data)
                except ValueError:
                    raise UpstreamError(
                        ErrorInfo.of(
                            ErrorKind.SERVER, "gemini sent a malformed event", provider=PROVIDER
                        )
                    ) from None
                if not isinstance(chunk, dict):
                    continue
                if "error" in chunk:
                    raise self._failure_from_event(call, chunk["error"], event.data)
                for item in translator.feed(chunk):
                    yield item
            yield translator.close()
        except httpx.HTTPError as exc:
            raise transport_error(exc, PROVIDER) from None
        finally:
            await response.aclose()

    def _failure_from_event(self, call: UpstreamCall, error: Any, data: str) -> UpstreamError:
        # A failure after the 200 went out: the code inside the event is the real status.
        code = error.get("code") if isinstance(error, dict) else None
        status = code if isinstance(code, int) and code >= 400 else 500
        return UpstreamError(
            error_from_gemini(status, data.encode(), httpx.Headers(), secret=self._secret(call))
        )
