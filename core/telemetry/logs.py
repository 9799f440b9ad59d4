"""Process logging: ``AIGW_LOG_FORMAT=text`` (a terminal) or ``json`` (one object a line)."""

from __future__ import annotations

import contextvars
import json
import logging
import os
from datetime import UTC, datetime
from typing import TextIO

# The request a log line belongs to, set by whoever handles it.
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "aigw_request_id", default=None)


def _trace_id() -> str | None:
    from core.telemetry import tracing

    if not tracing.enabled:
        return None
    from opentelemetry import trace

    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


class JsonFormatter(logging.Formatter):
    def __init__(self, role: str) -> None:
        super().__init__()
        self.role = role

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"),
            "level": record.levelname.lower(),
            "role": self.role,
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None) or request_id.get()
        if rid:
            line["request_id"] = rid
        if trace_id := _trace_id():
            line["trace_id"] = trace_id
        for field in ("method", "route", "status", "duration_ms", "model", "key_id"):
            if (value := getattr(record, field, None)) is not None:
                line[field] = value
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def configure(role: str, env: dict[str, str] | None = None,
              stream: TextIO | None = None) -> None:
    env = dict(os.environ) if env is None else env
    fmt = env.get("AIGW_LOG_FORMAT", "text").strip().lower()
    handler = logging.StreamHandler(stream)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(role))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(env.get("AIGW_LOG_LEVEL", "INFO").upper())
    # httpx logs every upstream call at INFO: per-request logging stays off the hot path.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
