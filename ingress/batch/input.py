"""Reading a batch's input file into items, or into the errors that fail the batch.

Pure: the caller says which deployments serve a model for this caller (``Resolve``), so
this module needs neither the router nor NATS. As OpenAI does, one bad line fails the whole
batch, and every bad line is listed with its (1-based) line number.

Lines are split on ``\n`` alone (a ``\r`` before it is dropped): JSON strings may hold
U+2028, U+0085, form feeds and the like unescaped, which :meth:`str.splitlines` would cut.
Each item is serialized here, as it will go on the work queue, so an item NATS cannot
carry (over ``max_payload``, or text that is no Unicode, as a lone ``\ud800`` escape)
is a line error instead of a publish that fails half-way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticSerializationError

from core.batch_store import Queued
from ingress import json_body
from ingress.batch.responses_lines import LineRefused, to_chat_line
from schemas.batch import (
    ENDPOINTS,
    MAX_LINES,
    RESPONSES_ENDPOINT,
    BatchError,
    BatchItem,
    InputLine,
    item_request_id,
)
from schemas.config import Deployment
from schemas.infer import Endpoint, InferRequest
from schemas.moderation import ModerationRequest
from schemas.openai import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from schemas.responses import ResponsesRequest

# More than this many errors would only make the batch object huge: the first ones say it.
MAX_ERRORS = 100
# Room left in a message for its headers (``Nats-Msg-Id``), which count against
# the server's max_payload too.
HEADER_ROOM = 256


class ModelRefused(Exception):
    """The caller may not use a model, or no deployment serves it."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# Deployments for a model alias, in the order to spread items over; raises ModelRefused.
Resolve = Callable[[str], list[Deployment]]


@dataclass(frozen=True, slots=True)
class Caller:
    key_id: str | None
    team_id: str | None


@dataclass(slots=True)
class Parsed:
    items: list[Queued] = field(default_factory=list)
    errors: list[BatchError] = field(default_factory=list)
    models: set[str] = field(default_factory=set)

    def fail(self, line: int | None, code: str, message: str, param: str | None = None) -> None:
        if len(self.errors) < MAX_ERRORS:
            # A model name may carry a lone surrogate, which the batch record could not store.
            message = message.encode("utf-8", "backslashreplace").decode()
            self.errors.append(BatchError(code=code, message=message, param=param, line=line))


_BODIES: dict[Endpoint, type[BaseModel]] = {
    Endpoint.CHAT: ChatCompletionRequest,
    Endpoint.EMBEDDINGS: EmbeddingRequest,
    Endpoint.MODERATIONS: ModerationRequest,
    Endpoint.COMPLETIONS: CompletionRequest,
}


def _first_error(exc: ValidationError) -> tuple[str, str | None]:
    first = exc.errors()[0]
    param = ".".join(str(p) for p in first["loc"]) or None
    return (f"{param}: {first['msg']}" if param else str(first["msg"])), param


def lines(data: bytes) -> list[str] | int:
    """The lines of an input file (a UTF-8 BOM dropped), or the number of the first line
    that is not UTF-8."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return data.count(b"\n", 0, exc.start) + 1
    split = text.split("\n")
    if split and not split[-1]:
        split.pop()
    return [line.removesuffix("\r") for line in split]


def _field(data: bytes, name: str) -> dict[int, Any]:
    """The value of ``name`` on each line (1-based) of an input file that is an object."""
    found: dict[int, Any] = {}
    split = lines(data)
    if isinstance(split, int):
        return found
    for number, raw in enumerate(split, start=1):
        if not raw.strip():
            continue
        try:
            value: Any = json_body.loads(raw)
        except json_body.BadJson:
            continue
        if isinstance(value, dict) and name in value:
            found[number] = value[name]
    return found


def line_bodies(data: bytes) -> dict[int, dict[str, Any]]:
    """The ``body`` of each line (1-based) of an input file that has one."""
    return {n: v for n, v in _field(data, "body").items() if isinstance(v, dict)}


def custom_ids(data: bytes) -> dict[int, str]:
    """The ``custom_id`` of each line (1-based) of an input file that has one."""
    return {n: v for n, v in _field(data, "custom_id").items() if isinstance(v, str)}


def parse(
    data: bytes, batch_id: str, endpoint: str, caller: Caller, resolve: Resolve,
    heartbeat_interval: float = 2.0, max_payload: int = 1024 * 1024,
) -> Parsed:
    """The items of an input file for ``endpoint``, or the errors that fail the batch.
    ``max_payload`` is the most bytes a NATS message may carry (``nc.max_payload``)."""
    out = Parsed()
    kind = ENDPOINTS[endpoint]
    split = lines(data)
    if isinstance(split, int):
        out.fail(split, "invalid_file", "The input file is not UTF-8 text.")
        return out
    seen: set[str] = set()
    deployments: dict[str, list[Deployment]] = {}
    if sum(1 for raw in split if raw.strip()) > MAX_LINES:
        out.fail(None, "too_many_requests",
                 f"The input file has more than {MAX_LINES} requests.")
        return out
    for number, raw in enumerate(split, start=1):
        if not raw.strip():
            continue
        try:
            value: Any = json_body.loads(raw)
        except json_body.BadJson as exc:
            out.fail(number, "invalid_json_line", f"This line is not valid JSON: {exc}")
            continue
        try:
            entry = InputLine.model_validate(value)
        except ValidationError as exc:
            message, param = _first_error(exc)
            out.fail(number, "invalid_request", message, param)
            continue
        if entry.url != endpoint:
            out.fail(number, "mismatched_endpoint",
                     f"The url {entry.url!r} does not match the batch endpoint {endpoint!r}.",
                     "url")
            continue
        if entry.custom_id in seen:
            out.fail(number, "duplicate_custom_id",
                     f"The custom_id {entry.custom_id!r} appears more than once.", "custom_id")
            continue
        seen.add(entry.custom_id)
        if endpoint == RESPONSES_ENDPOINT:
            try:
                ResponsesRequest.model_validate(entry.body)
                entry = entry.model_copy(update={"body": to_chat_line(entry.body)})
            except ValidationError as exc:
                message, param = _first_error(exc)
                out.fail(number, "invalid_request", message,
                         f"body.{param}" if param else "body")
                continue
            except LineRefused as exc:
                out.fail(number, "invalid_request", exc.message,
                         f"body.{exc.param}" if exc.param else "body")
                continue
        try:
            body = _BODIES[kind].model_validate(entry.body)
        except ValidationError as exc:
            message, param = _first_error(exc)
            out.fail(number, "invalid_request", message, f"body.{param}" if param else "body")
            continue
        if entry.body.get("stream"):
            out.fail(number, "invalid_request", "Batch requests cannot be streamed.",
                     "body.stream")
            continue
        model: str = body.model  # type: ignore[attr-defined]
        if model not in deployments:
            try:
                deployments[model] = resolve(model)
            except ModelRefused as exc:
                deployments[model] = []
                out.fail(number, exc.code, exc.message, "body.model")
                continue
        group = deployments[model]
        if not group:
            out.fail(number, "model_not_found",
                     f"The model `{model}` does not exist or you do not have access to it.",
                     "body.model")
            continue
        out.models.add(model)
        deployment = group[number % len(group)]
        try:
            queued = Queued.of(deployment.provider, _item(
                batch_id, number, entry, kind, deployment, caller, heartbeat_interval))
        except (PydanticSerializationError, UnicodeEncodeError):
            out.fail(number, "invalid_request",
                     "This line has text that is not valid Unicode (a lone surrogate escape "
                     "such as \\ud800).")
            continue
        if len(queued.payload) + HEADER_ROOM > max_payload:
            out.fail(number, "request_too_large",
                     f"This request is too large: over the {max_payload - HEADER_ROOM:,} "
                     "bytes a request may have on this gateway.")
            continue
        if not out.errors:  # else the batch fails: keeping items is wasted memory
            out.items.append(queued)
    if not out.items and not out.errors:
        out.fail(None, "empty_file", "The input file has no requests.")
    if out.errors:
        out.items.clear()
    return out


def _item(
    batch_id: str, line: int, entry: InputLine, kind: Endpoint, deployment: Deployment,
    caller: Caller, heartbeat_interval: float,
) -> BatchItem:
    body = entry.body
    end_user = body.get("safety_identifier") or body.get("user")
    metadata = body.get("metadata")
    return BatchItem(
        batch_id=batch_id,
        line=line,
        custom_id=entry.custom_id,
        request=InferRequest(
            request_id=item_request_id(batch_id, entry.custom_id),
            endpoint=kind,
            deployment_id=deployment.id,
            model_alias=deployment.model_name,
            body=body,
            heartbeat_interval=heartbeat_interval,
            key_id=caller.key_id,
            team_id=caller.team_id,
            end_user=end_user if isinstance(end_user, str) else None,
            metadata={k: v for k, v in metadata.items() if isinstance(v, str)}
            if isinstance(metadata, dict) else {},
            batch_id=batch_id,
        ),
    )
