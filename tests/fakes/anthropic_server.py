"""A fake Anthropic Messages API (``POST /v1/messages``) speaking the real wire format.

It checks what the real API checks (``x-api-key`` or a bearer token, ``anthropic-version``,
required fields, alternating roles starting with ``user``, tool_use/tool_result pairing,
temperature range) and answers with a deterministic ``Message`` or the real stream event
sequence. Every received body is kept in ``app.state.requests``; the latest one is also
``app.state.last_request``, with its headers in ``app.state.last_headers``.

Answers. The reply text is ``"Hello! You said: <last user text>"``, or, when the last user
turn carries tool results, ``"The tool returned: <their texts joined by '; '>"``. Token counts
are whitespace word counts (input: system plus every text; output: reply words, 10 per tool
call). ``max_tokens`` below the reply's word count cuts the reply (stop_reason
``max_tokens``); a ``stop_sequences`` entry found in the reply cuts it there
(``stop_sequence``).

Triggers in the last user text:

* ``[tool]`` with ``tools`` in the request: a text block "Let me check." then one ``tool_use``
  of the first tool (or the tool ``tool_choice`` names) with input ``{"query": <user text>}``.
  ``tool_choice`` ``any``/``tool`` forces this without the trigger; ``none`` suppresses it.
* ``[tools]``: the same, but one ``tool_use`` per tool (only the first when
  ``disable_parallel_tool_use``).
* ``[cache]``: usage reports ``cache_creation_input_tokens=256`` and
  ``cache_read_input_tokens=1024``.
* ``[refuse]``: stop_reason ``refusal``.
* ``[too-long]`` anywhere in a user text: 400 "prompt is too long: 250000 tokens > 200000
  maximum".
* ``[long-context]``: usage reports ``cache_read_input_tokens=150000`` and
  ``cache_creation_input_tokens=60000``, so the prompt passes 200k tokens without a
  200k-word body.
* ``[redacted]`` with thinking enabled: a ``redacted_thinking`` block before the thinking.

Thinking. With ``thinking: {"type": "enabled", "budget_tokens": N}`` (N at least 1024 and
below ``max_tokens``, as the real API insists) the answer opens with a ``thinking`` block,
"Thinking about: <last user text>", signed with :func:`signature_of`; streamed, it arrives as
``thinking_delta`` events, then one ``signature_delta``. Thinking words count as output.
Thinking blocks sent back in assistant turns must carry the signature the fake issued.

Prompt caching. ``cache_control`` is accepted on system, tool and content blocks (``type``
``ephemeral``, optional ``ttl`` ``5m``/``1h``, at most 4 breakpoints, as the real API allows);
anything else is a 400. Every received ``cache_control`` is listed in
``app.state.cache_controls`` as ``(where, value)``.

Models:

* ``fail-403`` / ``fail-404`` / ``fail-429`` / ``fail-500`` / ``fail-504`` / ``fail-529``:
  that status with the matching error type; 429 and 529 carry ``retry-after: 7``.
* ``fail-midstream``: a stream sends two text deltas, then ``event: error``
  (overloaded_error). Non-streamed calls answer normally.
* ``fail-truncated``: a stream stops after the first content block, without
  ``message_delta``/``message_stop``.
* ``fail-overloaded-early``: a stream sends ``message_start`` and a ping, then
  ``event: error`` (overloaded_error) before any content, as the real API does when it is
  overloaded. Non-streamed calls answer normally.

A wrong ``x-api-key`` is answered with 401 whose message repeats the key. The real API does
not do that; the fake does so tests can prove the adapter keeps keys out of its errors.

The answers it plans and the events it streams: :mod:`tests.fakes.anthropic_answers`
(re-exported here).
"""

from __future__ import annotations

import json
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.fakes.anthropic_answers import (
    REDACTED_DATA,
    _blocks,
    _texts,
    plan_message,
    signature_of,
    stream_events,
)

__all__ = ["DEFAULT_KEY", "REDACTED_DATA", "Rejected", "cache_breakpoints", "create_app",
           "error_response", "plan_message", "signature_of", "stream_events", "validate"]


DEFAULT_KEY = "sk-ant-test-key"

_FAILURES: dict[str, tuple[int, str, str]] = {
    "fail-403": (403, "permission_error", "Your API key does not have permission to use it."),
    "fail-404": (404, "not_found_error", "model: fail-404"),
    "fail-429": (429, "rate_limit_error", "Number of request tokens has exceeded your limit."),
    "fail-500": (500, "api_error", "Internal server error"),
    "fail-504": (504, "timeout_error", "Request timed out"),
    "fail-529": (529, "overloaded_error", "Overloaded"),
}
_RETRY_AFTER = "7"
_IMAGE_TYPES = {"image/jpeg", "image/png", "image/gif", "image/webp"}


class Rejected(Exception):
    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error_type, self.message = status, error_type, message


def error_response(
    status: int, error_type: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {
        "type": "error",
        "error": {"type": error_type, "message": message},
        "request_id": "req_fake",
    }
    return JSONResponse(body, status_code=status, headers=headers)


def _invalid(message: str) -> Rejected:
    return Rejected(400, "invalid_request_error", message)


def cache_breakpoints(body: dict[str, Any]) -> list[tuple[str, Any]]:
    """Every ``cache_control`` in a request, with where it was."""
    found: list[tuple[str, Any]] = []
    system = body.get("system")
    for j, block in enumerate(system if isinstance(system, list) else []):
        if isinstance(block, dict) and "cache_control" in block:
            found.append((f"system.{j}", block["cache_control"]))
    for j, tool in enumerate(body.get("tools") or []):
        if isinstance(tool, dict) and "cache_control" in tool:
            found.append((f"tools.{j}", tool["cache_control"]))
    for i, message in enumerate(body.get("messages") or []):
        for j, block in enumerate(_blocks(message.get("content"))):
            if isinstance(block, dict) and "cache_control" in block:
                found.append((f"messages.{i}.content.{j}", block["cache_control"]))
    return found


def _validate_cache(body: dict[str, Any]) -> None:
    found = cache_breakpoints(body)
    for where, control in found:
        if not isinstance(control, dict) or control.get("type") != "ephemeral" or (
            set(control) - {"type", "ttl"}
        ) or control.get("ttl", "5m") not in ("5m", "1h"):
            raise _invalid(f"{where}.cache_control: Input tag does not match the expected "
                           "tags: 'ephemeral'")
    if len(found) > 4:
        raise _invalid("A maximum of 4 blocks with cache_control may be provided. "
                       f"Found {len(found)}.")


def _validate_thinking(body: dict[str, Any]) -> None:
    thinking = body.get("thinking")
    if thinking is None:
        return
    if not isinstance(thinking, dict) or thinking.get("type") not in ("enabled", "disabled"):
        raise _invalid("thinking.type: Input tag does not match 'enabled' or 'disabled'")
    if thinking["type"] == "disabled":
        return
    budget = thinking.get("budget_tokens")
    if not isinstance(budget, int) or budget < 1024:
        raise _invalid("thinking.enabled.budget_tokens: Input should be greater than or "
                       "equal to 1024")
    if budget >= body["max_tokens"]:
        raise _invalid("`max_tokens` must be greater than `thinking.budget_tokens`. Please "
                       "consult our documentation at https://docs.claude.com/en/docs/build-"
                       "with-claude/extended-thinking#max-tokens-and-context-window-size")


def validate(body: Any) -> None:
    """Raise :class:`Rejected` for what the real API would refuse."""
    if not isinstance(body, dict):
        raise _invalid("request body must be a JSON object")
    for field in ("model", "max_tokens", "messages"):
        if field not in body:
            raise _invalid(f"{field}: Field required")
    if not isinstance(body["max_tokens"], int) or body["max_tokens"] < 0:
        raise _invalid("max_tokens: Input should be a valid non-negative integer")
    temperature = body.get("temperature")
    if temperature is not None and not 0 <= temperature <= 1:
        raise _invalid("temperature: range: 0..1")
    _validate_thinking(body)
    _validate_cache(body)
    system = body.get("system")
    if isinstance(system, list) and not all(
        isinstance(b, dict) and b.get("type") == "text" and b.get("text") for b in system
    ):
        raise _invalid("system: a list of system blocks holds non-empty text blocks")
    messages = body["messages"]
    if not isinstance(messages, list) or not messages:
        raise _invalid("messages: at least one message is required")
    pending_tool_uses: set[str] = set()
    for i, message in enumerate(messages):
        role = message.get("role")
        if role not in ("user", "assistant"):
            raise _invalid(
                f'messages.{i}.role: Unexpected role "{role}". The Messages API accepts a '
                'top-level `system` parameter, not "system" as an input message role.'
            )
        if i == 0 and role != "user":
            raise _invalid('messages: first message must use the "user" role')
        if i > 0 and messages[i - 1].get("role") == role:
            raise _invalid(
                'messages: roles must alternate between "user" and "assistant", '
                f'but found multiple "{role}" roles in a row'
            )
        blocks = _blocks(message.get("content"))
        if not blocks and not (role == "assistant" and i == len(messages) - 1):
            raise _invalid(f"messages.{i}: all messages must have non-empty content")
        results = {b.get("tool_use_id") for b in blocks if b.get("type") == "tool_result"}
        if pending_tool_uses - results:
            raise _invalid(
                "messages: `tool_use` ids were found without `tool_result` blocks immediately "
                f"after: {', '.join(sorted(pending_tool_uses - results))}"
            )
        if results - pending_tool_uses:
            raise _invalid(
                f"messages.{i}.content: unexpected `tool_use_id` found in `tool_result` "
                f"blocks: {', '.join(sorted(str(r) for r in results - pending_tool_uses))}. "
                "Each `tool_result` block must have a corresponding `tool_use` block in the "
                "previous message."
            )
        pending_tool_uses = set()
        for j, block in enumerate(blocks):
            _validate_block(block, role, f"messages.{i}.content.{j}")
            if block.get("type") == "tool_use":
                pending_tool_uses.add(str(block.get("id")))


def _validate_block(block: Any, role: str, where: str) -> None:
    kind = block.get("type") if isinstance(block, dict) else None
    if kind == "text":
        if not block.get("text"):
            raise _invalid(f"{where}: text content blocks must be non-empty")
    elif kind == "image" and role == "user":
        source = block.get("source") or {}
        if source.get("type") == "base64":
            if source.get("media_type") not in _IMAGE_TYPES or not source.get("data"):
                raise _invalid(f"{where}.source: invalid base64 image source")
        elif source.get("type") != "url" or not source.get("url"):
            raise _invalid(f"{where}.source: invalid image source")
    elif kind == "document" and role == "user":
        source = block.get("source") or {}
        if source.get("type") == "base64" and source.get("media_type") != "application/pdf":
            raise _invalid(f"{where}.source: a base64 document must be application/pdf")
        if source.get("type") not in ("base64", "text", "url", "content"):
            raise _invalid(f"{where}.source: invalid document source")
    elif kind == "tool_use" and role == "assistant":
        if not block.get("id") or not block.get("name") or not isinstance(block.get("input"), dict):
            raise _invalid(f"{where}: tool_use needs id, name and an object input")
    elif kind == "thinking" and role == "assistant":
        if set(block) - {"type", "thinking", "signature"}:
            raise _invalid(f"{where}: unexpected fields in a thinking block")
        if block.get("signature") != signature_of(str(block.get("thinking"))):
            raise _invalid(f"{where}: Invalid `signature` in `thinking` block")
    elif kind == "redacted_thinking" and role == "assistant":
        if block.get("data") != REDACTED_DATA:
            raise _invalid(f"{where}: Invalid `data` in `redacted_thinking` block")
    elif kind != "tool_result" or role != "user":
        raise _invalid(f"{where}: unexpected {kind!r} block in a {role} message")


def create_app(api_key: str = DEFAULT_KEY) -> Starlette:
    async def messages(request: Request) -> Response:
        state = request.app.state
        state.last_headers = dict(request.headers)
        # Newer official SDKs send the key as a bearer token, which the real API accepts too.
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
        given = request.headers.get("x-api-key") or bearer or None
        if given != api_key:
            return error_response(401, "authentication_error", f"invalid x-api-key: {given}")
        if not request.headers.get("anthropic-version"):
            return error_response(
                400, "invalid_request_error", "anthropic-version: header is required"
            )
        try:
            body = json.loads(await request.body())
        except ValueError:
            return error_response(400, "invalid_request_error", "request body is not JSON")
        state.last_request = body
        state.requests.append(body)
        try:
            validate(body)
        except Rejected as exc:
            return error_response(exc.status, exc.error_type, exc.message)
        state.cache_controls += cache_breakpoints(body)
        failure = _FAILURES.get(body["model"])
        if failure is not None:
            status, error_type, text = failure
            headers = {"retry-after": _RETRY_AFTER} if status in (429, 529) else None
            return error_response(status, error_type, text, headers)
        user_turns = [m for m in body["messages"] if m["role"] == "user"]
        if any("[too-long]" in t for m in user_turns for t in _texts(_blocks(m["content"]))):
            return error_response(
                400, "invalid_request_error", "prompt is too long: 250000 tokens > 200000 maximum"
            )
        state.count += 1
        message = plan_message(body, f"msg_fake{state.count:04d}")
        headers = {"request-id": f"req_fake{state.count:04d}"}
        if not body.get("stream"):
            return JSONResponse(message, headers=headers)
        events = stream_events(
            message,
            fail_midstream=body["model"] == "fail-midstream",
            truncate=body["model"] == "fail-truncated",
            fail_early=body["model"] == "fail-overloaded-early",
        )
        return StreamingResponse(events, media_type="text/event-stream", headers=headers)

    app = Starlette(routes=[Route("/v1/messages", messages, methods=["POST"])])
    app.state.requests = []
    app.state.last_request = None
    app.state.last_headers = None
    app.state.count = 0
    app.state.cache_controls = []
    return app
