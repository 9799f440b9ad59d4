"""The worker's spans, built only while ``tracing.enabled`` (callers check it first).

A SERVER span per attempt (a child of the ingress's, through the ``traceparent`` header of
the attempt's message), a CLIENT span per upstream HTTP request inside it, and a root span
per batch item, linked to a span context derived from its batch id.

Attributes follow the OpenTelemetry GenAI and HTTP semantic conventions. Prompt and answer
text are recorded only with ``AIGW_TRACE_CONTENT``; an upstream URL loses its query, where
Gemini may carry ``key=``.
"""

from __future__ import annotations

import contextvars
import functools
import hashlib
import json
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import httpx
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from core.telemetry import tracing
from schemas.batch import BatchItem
from schemas.config import Deployment
from schemas.errors import ErrorInfo
from schemas.frames import ErrorFrame
from schemas.infer import Endpoint, InferRequest
from schemas.usage import TokenUsage

# The most characters a content attribute holds.
MAX_CONTENT = 64 * 1024


@functools.cache
def _tracer() -> trace.Tracer:
    return tracing.tracer("aigw.worker")


# ---- an attempt ------------------------------------------------------------------------


def begin_attempt(request: InferRequest, headers: Mapping[str, str] | None,
                  provider: str) -> tuple[Span, contextvars.Context]:
    """The attempt's span, and a context with it current to run the attempt in. Its parent
    is the trace context in ``headers`` (a new trace if they carry none), or the current
    span when there are no headers (a batch item's)."""
    parent = tracing.extract(headers) if headers is not None else None
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": request.endpoint.value,
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": request.model_alias,
        "aigw.request_id": request.request_id,
        "aigw.attempt": request.attempt,
    }
    if request.batch_id is not None:
        attributes["aigw.batch_id"] = request.batch_id
    if tracing.content and request.endpoint is Endpoint.CHAT:
        attributes["gen_ai.input.messages"] = _json(
            [message(m) for m in request.body.get("messages") or ()])
    span = _tracer().start_span(f"{request.endpoint.value} {request.model_alias}",
                                context=parent, kind=SpanKind.SERVER, attributes=attributes)
    run_in = contextvars.copy_context()
    run_in.run(otel_context.attach, trace.set_span_in_context(span))
    return span, run_in


def calling(span: Span, request: InferRequest, deployment: Deployment) -> None:
    """The deployment is known: name the span after its upstream model."""
    span.update_name(f"{request.endpoint.value} {deployment.upstream_model}")
    span.set_attribute("gen_ai.response.model", deployment.upstream_model)


def answered(span: Span, response: Mapping[str, Any]) -> None:
    """A whole response or a stream's first chunk: what the provider says it ran."""
    model = response.get("model")
    if isinstance(model, str) and model:
        span.set_attribute("gen_ai.response.model", model)
    rid = response.get("id")
    if isinstance(rid, str) and rid:
        span.set_attribute("gen_ai.response.id", rid)
    if not tracing.content or response.get("object") != "chat.completion":
        return
    choices = response.get("choices")
    if isinstance(choices, list):
        span.set_attribute("gen_ai.output.messages", _json(
            [{**message(c.get("message")), "finish_reason": c.get("finish_reason")}
             for c in choices if isinstance(c, dict)]))


def collect_text(parts: list[str], chunk: Mapping[str, Any]) -> None:
    """A streamed chunk's text, kept for ``gen_ai.output.messages`` (content tracing)."""
    for choice in chunk.get("choices") or ():
        text = (choice.get("delta") or {}).get("content")
        if isinstance(text, str):
            parts.append(text)


def end_attempt(span: Span, usage: TokenUsage | None, cost: Decimal | None,
                error: ErrorInfo | None, cancelled: bool, text: list[str] | None) -> None:
    """Close the attempt's span with what it used and how it ended."""
    if usage is not None:
        span.set_attribute("gen_ai.usage.input_tokens", usage.prompt_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", usage.completion_tokens)
    if cost is not None:
        span.set_attribute("aigw.cost_usd", float(cost))
    if text:
        span.set_attribute("gen_ai.output.messages", _json(
            [message({"role": "assistant", "content": "".join(text)})]))
    if cancelled:
        span.set_attribute("error.type", "cancelled")
        span.set_status(Status(StatusCode.ERROR, "cancelled"))
    elif error is not None:
        span.set_attribute("error.type", str(error.upstream_status) if error.upstream_status
                           else error.code or error.kind.value)
        span.set_status(Status(StatusCode.ERROR, error.kind.value))
    span.end()


def message(openai: Any) -> dict[str, Any]:
    """An OpenAI chat message in the GenAI conventions' shape: a role and typed parts.
    Text is kept; an image or audio part keeps only its type, never its bytes."""
    if not isinstance(openai, Mapping):
        return {"role": None, "parts": []}
    content = openai.get("content")
    if openai.get("role") == "tool":
        return {"role": "tool", "parts": [{"type": "tool_call_response",
                                           "id": openai.get("tool_call_id"),
                                           "response": content}]}
    parts: list[dict[str, Any]] = []
    if isinstance(content, str) and content:
        parts.append({"type": "text", "content": content})
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, Mapping) and part.get("type") == "text":
                parts.append({"type": "text", "content": part.get("text")})
            elif isinstance(part, Mapping):
                parts.append({"type": str(part.get("type"))})
    for call in openai.get("tool_calls") or ():
        if not isinstance(call, Mapping):
            continue
        function = call.get("function") or {}
        parts.append({"type": "tool_call", "id": call.get("id"), "name": function.get("name"),
                      "arguments": function.get("arguments")})
    return {"role": openai.get("role"), "parts": parts}


def _json(value: Any) -> str:
    # Cut here: a prompt of megabytes would make every export of its span as large.
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= MAX_CONTENT else text[:MAX_CONTENT] + "…"


# ---- an upstream HTTP request ----------------------------------------------------------


def full_url(url: httpx.URL) -> str:
    """``url.full`` without what may hold a secret: the query and any user info."""
    return str(url.copy_with(query=None, fragment=None, userinfo=b""))


async def send(transport: httpx.AsyncBaseTransport, request: httpx.Request) -> httpx.Response:
    """Send ``request`` inside a CLIENT span when an attempt's span is current; the span
    ends when the response body is closed, so a stream's span covers the whole stream."""
    if not trace.get_current_span().is_recording():
        return await transport.handle_async_request(request)
    url = request.url
    span = _tracer().start_span(request.method, kind=SpanKind.CLIENT, attributes={
        "http.request.method": request.method,
        "server.address": url.host,
        "server.port": url.port or (443 if url.scheme == "https" else 80),
        "url.full": full_url(url),
    })
    try:
        response = await transport.handle_async_request(request)
    except BaseException as exc:
        span.set_attribute("error.type", type(exc).__qualname__)
        span.set_status(Status(StatusCode.ERROR))
        span.end()
        raise
    span.set_attribute("http.response.status_code", response.status_code)
    if response.status_code >= 400:
        span.set_attribute("error.type", str(response.status_code))
        span.set_status(Status(StatusCode.ERROR))
    assert isinstance(response.stream, httpx.AsyncByteStream)
    response.stream = _EndsSpan(response.stream, span)
    return response


class _EndsSpan(httpx.AsyncByteStream):
    def __init__(self, stream: httpx.AsyncByteStream, span: Span) -> None:
        self._stream = stream
        self._span = span
        self._open = True

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            if self._open:
                self._open = False
                self._span.end()


# ---- a batch item ----------------------------------------------------------------------


def batch_context(batch_id: str) -> SpanContext:
    """The span context a batch's items link to: derived from its id alone, so every
    worker (and anything else that knows the id) finds the same one."""
    digest = hashlib.sha256(batch_id.encode()).hexdigest()
    return SpanContext(trace_id=int(digest[:32], 16), span_id=int(digest[32:48], 16),
                       is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))


@contextmanager
def batch_item(item: BatchItem) -> Iterator[Span]:
    """A new trace for one delivery of a batch item; its attempts are children."""
    attributes: dict[str, Any] = {
        "aigw.batch_id": item.batch_id, "aigw.batch.line": item.line,
        "aigw.request_id": item.request.request_id,
        "gen_ai.request.model": item.request.model_alias}
    with _tracer().start_as_current_span(
            f"batch_item {item.request.model_alias}", context=otel_context.Context(),
            kind=SpanKind.CONSUMER, links=[Link(batch_context(item.batch_id))],
            attributes=attributes) as span:
        yield span


def batch_item_result(span: Span, frame: object) -> None:
    """An item that ends in the error file marks its span failed."""
    if isinstance(frame, ErrorFrame):
        span.set_attribute("error.type", frame.error.code or frame.error.kind.value)
        span.set_status(Status(StatusCode.ERROR, frame.error.kind.value))
