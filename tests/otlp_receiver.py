"""A real OTLP/HTTP trace receiver for tests: processes export to it as to a collector.

    receiver = OtlpReceiver().start()
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}
    ...
    [span] = receiver.wait_for(lambda s: s.name == "chat gpt-4o-mini")
    receiver.stop()

It answers ``POST /v1/traces`` (``application/x-protobuf``, or ``application/json``;
gzip or not) with an empty ``ExportTraceServiceResponse`` and keeps every span it decoded,
flattened into :class:`ReceivedSpan`.
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

TRACES_PATH = "/v1/traces"


@dataclass(frozen=True)
class ReceivedSpan:
    trace_id: str  # 32 hex digits
    span_id: str  # 16 hex digits
    parent_span_id: str | None
    name: str
    kind: str  # SERVER, CLIENT, INTERNAL, PRODUCER, CONSUMER
    service_name: str | None
    attributes: dict[str, Any]
    status: str  # UNSET, OK, ERROR
    scope: str
    links: tuple[tuple[str, str], ...] = ()  # (trace_id, span_id) of each link
    start_ns: int = 0  # Unix nanoseconds
    end_ns: int = 0
    resource: dict[str, Any] = field(default_factory=dict)


def _value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return getattr(value, which)


def _attributes(pairs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in pairs if isinstance(kv, KeyValue)}


def _kind(kind: int) -> str:
    return str(Span.SpanKind.Name(kind)).removeprefix("SPAN_KIND_")


def _status(code: int) -> str:
    return str(Status.StatusCode.Name(code)).removeprefix("STATUS_CODE_")


def decode(request: ExportTraceServiceRequest) -> list[ReceivedSpan]:
    """Every span of one export, with its resource's attributes."""
    found = []
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                found.append(ReceivedSpan(
                    trace_id=span.trace_id.hex(),
                    span_id=span.span_id.hex(),
                    parent_span_id=span.parent_span_id.hex() or None,
                    name=span.name,
                    kind=_kind(span.kind),
                    service_name=resource.get("service.name"),
                    attributes=_attributes(span.attributes),
                    status=_status(span.status.code),
                    scope=scope_spans.scope.name,
                    links=tuple((link.trace_id.hex(), link.span_id.hex())
                                for link in span.links),
                    start_ns=span.start_time_unix_nano,
                    end_ns=span.end_time_unix_nano,
                    resource=resource,
                ))
    return found


class OtlpReceiver:
    """An OTLP/HTTP collector stand-in on ``127.0.0.1`` and a free port."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spans: list[ReceivedSpan] = []
        self.exports = 0  # POSTs to /v1/traces, decoded or not
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle -----------------------------------------------------------------------

    def start(self) -> OtlpReceiver:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="otlp-receiver")
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        """The base URL, as ``OTEL_EXPORTER_OTLP_ENDPOINT`` takes it (no ``/v1/traces``)."""
        if self._server is None:
            raise RuntimeError("OtlpReceiver.start() was not called")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # ---- what arrived --------------------------------------------------------------------

    @property
    def spans(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self._spans)

    def clear(self) -> None:
        with self._lock:
            self._spans.clear()
            self.exports = 0

    def wait_for(self, predicate: Callable[[ReceivedSpan], bool], timeout: float = 10.0,
                 count: int = 1) -> list[ReceivedSpan]:
        """The spans matching ``predicate``, once at least ``count`` have arrived; an
        AssertionError listing what did arrive after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            matching = [s for s in self.spans if predicate(s)]
            if len(matching) >= count:
                return matching
            if time.monotonic() >= deadline:
                seen = "\n".join(f"  {s.kind} {s.name!r} trace={s.trace_id} "
                                 f"service={s.service_name}" for s in self.spans)
                raise AssertionError(f"{len(matching)} of {count} spans matched within "
                                     f"{timeout} s; received:\n{seen or '  nothing'}")
            time.sleep(0.02)

    def _received(self, spans: list[ReceivedSpan]) -> None:
        with self._lock:
            self.exports += 1
            self._spans.extend(spans)


def _handler(receiver: OtlpReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            if self.path.split("?", 1)[0] != TRACES_PATH:
                self._answer(404, "text/plain", b"not found")
                return
            if self.headers.get("content-encoding", "").lower() == "gzip":
                body = gzip.decompress(body)
            json_body = "json" in self.headers.get("content-type", "")
            request = ExportTraceServiceRequest()
            try:
                if json_body:
                    json_format.Parse(body, request)
                else:
                    request.ParseFromString(body)
            except Exception as exc:  # a test should see it, not a hung exporter
                self._answer(400, "text/plain", str(exc).encode())
                return
            receiver._received(decode(request))
            response = ExportTraceServiceResponse()
            if json_body:
                self._answer(200, "application/json", json_format.MessageToJson(response).encode())
            else:
                self._answer(200, "application/x-protobuf", response.SerializeToString())

        def _answer(self, status: int, ctype: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("content-type", ctype)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the test output stays the test's

    return Handler
