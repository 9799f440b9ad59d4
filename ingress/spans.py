"""Trace spans at the ingress: the HTTP server span and one span per attempt."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from core.telemetry import tracing

if TYPE_CHECKING:
    from starlette.types import Scope

    from ingress.metrics import GenAI

_TRACE_HEADERS = (b"traceparent", b"tracestate", b"baggage")


class ServerSpan:
    """The request's span, current for everything the request does (a client's W3C
    ``traceparent`` is its parent)."""

    def __init__(self, scope: Scope) -> None:
        carrier = {k.decode("latin-1"): v.decode("latin-1")
                   for k, v in scope.get("headers", ()) if k in _TRACE_HEADERS}
        parent = tracing.extract(carrier)
        method = self.method = scope["method"]
        self.span = tracing.tracer("aigw.ingress").start_span(
            method, context=parent, kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": scope["path"]})
        self._token = otel_context.attach(trace.set_span_in_context(self.span, parent))

    def end(self, route: str, status: int, error: str, genai: GenAI | None,
            request_id: str | None) -> None:
        span = self.span
        span.update_name(f"{self.method} {route}")
        span.set_attribute("http.route", route)
        span.set_attribute("http.response.status_code", status)
        if request_id:
            span.set_attribute("aigw.request_id", request_id)
        if genai is not None:
            span.set_attribute("gen_ai.operation.name", genai.operation)
            span.set_attribute("gen_ai.request.model", genai.model)
            if genai.provider:
                span.set_attribute("gen_ai.provider.name", genai.provider)
        if error:
            span.set_attribute("error.type", error)
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR))
        span.end()
        otel_context.detach(self._token)


def server_span(scope: Scope) -> ServerSpan:
    return ServerSpan(scope)


def attempt_span(operation: str, model: str, provider: str, upstream_model: str,
                 request_id: str, attempt: int) -> Any:
    """A context manager: the span of one attempt, current while it is dispatched, so the
    NATS publish carries it to the worker."""
    return tracing.tracer("aigw.ingress").start_as_current_span(
        f"{operation} {model}", kind=SpanKind.CLIENT,
        attributes={"gen_ai.operation.name": operation, "gen_ai.request.model": model,
                    "gen_ai.provider.name": provider, "aigw.upstream_model": upstream_model,
                    "aigw.request_id": request_id, "aigw.attempt": attempt})
