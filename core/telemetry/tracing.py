"""OpenTelemetry traces: off until the standard ``OTEL_*`` variables ask for them.

Callers check ``tracing.enabled`` before building spans, so a process without tracing does
no span work on its hot path. Context crosses NATS in message headers (W3C
``traceparent``), through the propagators ``OTEL_PROPAGATORS`` names.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, MutableMapping

from opentelemetry import propagate, trace
from opentelemetry.context import Context

log = logging.getLogger("aigw.tracing")

SERVICE_NAMES = {"ingress": "aigw-ingress", "worker": "aigw-worker",
                 "accounting": "aigw-accounting"}

enabled = False
content = False
_provider: object | None = None


def wanted(env: Mapping[str, str] = os.environ) -> bool:
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none":
        return False
    return bool(exporter or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
                or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def _exporter(env: Mapping[str, str]) -> object:
    kind = env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() or "otlp"
    if kind == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if kind != "otlp":
        raise ValueError(f"OTEL_TRACES_EXPORTER={kind!r}: only otlp, console or none")
    protocol = (env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf").strip()
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcExporter,
        )

        return GrpcExporter()
    if protocol != "http/protobuf":
        raise ValueError(f"OTLP protocol {protocol!r}: only http/protobuf or grpc")
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def setup(role: str, env: Mapping[str, str] = os.environ) -> bool:
    """Install the tracer provider for ``role`` when the environment asks for traces."""
    global enabled, content, _provider
    content = env.get("AIGW_TRACE_CONTENT", "").lower() in ("1", "true", "yes")
    if not wanted(env):
        return False
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

    attributes = {} if env.get("OTEL_SERVICE_NAME") else {
        SERVICE_NAME: SERVICE_NAMES.get(role, f"aigw-{role}")}
    try:
        exporter = _exporter(env)
    except ValueError as exc:
        log.error("tracing stays off: %s", exc)
        return False
    assert isinstance(exporter, SpanExporter)
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _provider = provider
    enabled = True
    log.info("tracing on: spans of %s exported over OTLP", role)
    return True


def shutdown() -> None:
    """Flush the spans still queued (at process exit)."""
    global enabled
    if _provider is not None:
        _provider.shutdown()  # type: ignore[attr-defined]
    enabled = False


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


def inject(carrier: MutableMapping[str, str], ctx: Context | None = None) -> None:
    propagate.inject(carrier, context=ctx)


def extract(carrier: Mapping[str, str] | None) -> Context:
    return propagate.extract(carrier or {})
