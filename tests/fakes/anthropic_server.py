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
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

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


def _blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return list(content) if isinstance(content, list) else []


def signature_of(thinking: str) -> str:
    """The signature the fake gives a thinking text (the real one is opaque)."""
    return "sig-" + hashlib.sha256(thinking.encode()).hexdigest()[:24]


REDACTED_DATA = "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8cr3qpP"


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


def _texts(blocks: list[dict[str, Any]]) -> list[str]:
    texts: list[str] = []
    for block in blocks:
        if block.get("type") == "text":
            texts.append(str(block.get("text", "")))
        elif block.get("type") == "tool_result":
            texts += _texts(_blocks(block.get("content") or []))
    return texts


def _words(text: str) -> int:
    return len(text.split())


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


def plan_message(body: dict[str, Any], message_id: str) -> dict[str, Any]:
    """The full ``Message`` the fake answers ``body`` with."""
    last = _blocks(body["messages"][-1].get("content"))
    last_text = " ".join(_texts([b for b in last if b.get("type") == "text"]))
    results = [b for b in last if b.get("type") == "tool_result"]
    if results:
        reply = "The tool returned: " + "; ".join(" ".join(_texts([r])) for r in results)
    else:
        reply = f"Hello! You said: {last_text}"
    content: list[dict[str, Any]] = []
    stop_reason, stop_sequence = "end_turn", None
    calls = _tool_calls(body, last_text, message_id)
    if calls:
        content = [{"type": "text", "text": "Let me check."}, *calls]
        stop_reason = "tool_use"
    else:
        words = reply.split(" ")
        if len(words) > body["max_tokens"]:
            reply, stop_reason = " ".join(words[: body["max_tokens"]]), "max_tokens"
        found = [(reply.find(s), s) for s in body.get("stop_sequences") or [] if s in reply]
        if found:
            at, stop_sequence = min(found)
            reply, stop_reason = reply[:at], "stop_sequence"
        if "[refuse]" in last_text:
            reply, stop_reason = "I can't help with that.", "refusal"
        content = [{"type": "text", "text": reply}] if reply else []
    thinking = body.get("thinking") or {}
    if thinking.get("type") == "enabled":
        thought = f"Thinking about: {last_text}"
        content.insert(0, {"type": "thinking", "thinking": thought,
                           "signature": signature_of(thought)})
        if "[redacted]" in last_text:
            content.insert(0, {"type": "redacted_thinking", "data": REDACTED_DATA})
    system = body.get("system")
    prompt = _texts(system) if isinstance(system, list) else [str(system or "")]
    for message in body["messages"]:
        prompt += _texts(_blocks(message.get("content")))
    usage: dict[str, Any] = {
        "input_tokens": max(1, sum(_words(t) for t in prompt)),
        "output_tokens": sum(_output_words(b) for b in content),
        "cache_creation_input_tokens": 256 if "[cache]" in last_text else 0,
        "cache_read_input_tokens": 1024 if "[cache]" in last_text else 0,
    }
    if "[long-context]" in last_text:
        usage.update(cache_creation_input_tokens=60_000, cache_read_input_tokens=150_000)
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": body["model"],
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": usage,
    }


def _output_words(block: dict[str, Any]) -> int:
    if block["type"] == "text":
        return _words(block["text"])
    if block["type"] == "thinking":
        return _words(block["thinking"])
    return 10


def _tool_calls(body: dict[str, Any], last_text: str, message_id: str) -> list[dict[str, Any]]:
    tools = body.get("tools") or []
    choice = body.get("tool_choice") or {"type": "auto"}
    if not tools or choice.get("type") == "none":
        return []
    forced = choice.get("type") in ("any", "tool")
    if not (forced or "[tool]" in last_text or "[tools]" in last_text):
        return []
    if choice.get("type") == "tool":
        chosen = [t for t in tools if t.get("name") == choice.get("name")]
    elif "[tools]" in last_text and not choice.get("disable_parallel_tool_use"):
        chosen = list(tools)
    else:
        chosen = tools[:1]
    return [
        {
            "type": "tool_use",
            "id": f"toolu_{message_id.removeprefix('msg_')}_{i}",
            "name": tool["name"],
            "input": {"query": last_text},
        }
        for i, tool in enumerate(chosen)
    ]


def _sse(data: dict[str, Any]) -> bytes:
    return f"event: {data['type']}\ndata: {json.dumps(data)}\n\n".encode()


async def stream_events(
    message: dict[str, Any], *, fail_midstream: bool = False, truncate: bool = False,
    fail_early: bool = False,
) -> AsyncIterator[bytes]:
    """The event sequence the real API streams for ``message``."""
    usage = message["usage"]
    start = {
        **message,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {**usage, "output_tokens": 1},
    }
    yield _sse({"type": "message_start", "message": start})
    yield _sse({"type": "ping"})
    if fail_early:
        yield _sse({"type": "error", "error": {"type": "overloaded_error",
                                               "message": "Overloaded"}})
        return
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            yield _sse(
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": "text", "text": ""},
                }
            )
            pieces = re.findall(r"\S+\s*", block["text"])
            for n in range(0, len(pieces), 2):
                delta = {"type": "text_delta", "text": "".join(pieces[n : n + 2])}
                yield _sse({"type": "content_block_delta", "index": index, "delta": delta})
                if fail_midstream and n >= 2:
                    error = {"type": "overloaded_error", "message": "Overloaded"}
                    yield _sse({"type": "error", "error": error})
                    return
        elif block["type"] == "thinking":
            start_block = {"type": "thinking", "thinking": "", "signature": ""}
            yield _sse({"type": "content_block_start", "index": index,
                        "content_block": start_block})
            for piece in re.findall(r"\S+\s*", block["thinking"]):
                delta = {"type": "thinking_delta", "thinking": piece}
                yield _sse({"type": "content_block_delta", "index": index, "delta": delta})
            delta = {"type": "signature_delta", "signature": block["signature"]}
            yield _sse({"type": "content_block_delta", "index": index, "delta": delta})
        elif block["type"] == "redacted_thinking":
            yield _sse({"type": "content_block_start", "index": index, "content_block": block})
        else:
            yield _sse(
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {**block, "input": {}},
                }
            )
            arguments = json.dumps(block["input"])
            # The real API opens with an empty fragment, then cuts anywhere, even mid-string.
            pieces = ["", *(arguments[k : k + 7] for k in range(0, len(arguments), 7))]
            for piece in pieces:
                delta = {"type": "input_json_delta", "partial_json": piece}
                yield _sse({"type": "content_block_delta", "index": index, "delta": delta})
        yield _sse({"type": "content_block_stop", "index": index})
        if truncate:
            return
    yield _sse(
        {
            "type": "message_delta",
            "delta": {
                "stop_reason": message["stop_reason"],
                "stop_sequence": message["stop_sequence"],
            },
            "usage": {"output_tokens": usage["output_tokens"]},
        }
    )
    yield _sse({"type": "message_stop"})


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
