"""OpenAI chat bodies to Cohere v2 chat bodies and back, without any I/O.

Requests: :func:`to_cohere_chat`. Answers: :func:`from_cohere_chat` and
:func:`usage_from_cohere`. Streams: one :class:`StreamTranslator` per call, fed each v2 event
in order. A request Cohere cannot express raises :class:`UpstreamError` with kind
``INVALID_REQUEST`` before anything is sent. Embeddings and rerank: :mod:`.retrieval`.
"""

from __future__ import annotations

import time
from typing import Any

from schemas import reasoning
from schemas.errors import ErrorInfo, ErrorKind
from schemas.usage import TokenUsage
from workers.providers.base import UpstreamError

PROVIDER = "cohere"

FINISH_REASONS: dict[str, str] = {
    "COMPLETE": "stop",
    "STOP_SEQUENCE": "stop",
    "MAX_TOKENS": "length",
    "TOOL_CALL": "tool_calls",
    "ERROR_TOXIC": "content_filter",
}

# OpenAI sampling parameters and their Cohere v2 names; the values mean the same.
_RENAMED: dict[str, str] = {
    "temperature": "temperature",
    "top_p": "p",
    "seed": "seed",
    "frequency_penalty": "frequency_penalty",
    "presence_penalty": "presence_penalty",
    "logprobs": "logprobs",
}
# Cohere's own chat parameters, passed through when a client sends them (as LiteLLM does).
_NATIVE = ("documents", "citation_options", "safety_mode", "strict_tools", "k", "priority")


def _invalid(message: str, param: str | None = None) -> UpstreamError:
    return UpstreamError(
        ErrorInfo.of(ErrorKind.INVALID_REQUEST, message, param=param, provider=PROVIDER)
    )


# --- chat requests --------------------------------------------------------------------------


def to_cohere_chat(body: dict[str, Any], upstream_model: str) -> dict[str, Any]:
    """The v2 ``/chat`` body for an OpenAI chat completion body (``stream`` is left out)."""
    n = body.get("n")
    if n is not None and n != 1:
        raise _invalid("cohere returns one choice per request; n must be 1", "n")
    request: dict[str, Any] = {
        "model": upstream_model,
        "messages": [_message(m, i) for i, m in enumerate(_messages(body.get("messages")))],
    }
    most = body.get("max_completion_tokens") or body.get("max_tokens")
    if most is not None:
        request["max_tokens"] = most
    for ours, theirs in _RENAMED.items():
        if body.get(ours) is not None:
            request[theirs] = body[ours]
    for name in _NATIVE:
        if body.get(name) is not None:
            request[name] = body[name]
    stop = body.get("stop")
    if isinstance(stop, str):
        request["stop_sequences"] = [stop]
    elif isinstance(stop, list) and stop:
        request["stop_sequences"] = stop
    response_format = _response_format(body.get("response_format"))
    if response_format is not None:
        request["response_format"] = response_format
    tools = body.get("tools")
    if tools:
        if not isinstance(tools, list):
            raise _invalid("tools must be a list", "tools")
        request["tools"] = [_tool(t, i) for i, t in enumerate(tools)]
    _apply_tool_choice(request, body.get("tool_choice"))
    thinking = _thinking(body)
    if thinking is not None:
        request["thinking"] = thinking
    return request


def _thinking(body: dict[str, Any]) -> dict[str, Any] | None:
    try:
        return reasoning.cohere_thinking(body)
    except ValueError as exc:
        raise _invalid(str(exc), "reasoning_effort") from None


def _messages(messages: Any) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not messages:
        raise _invalid("messages must be a non-empty list", "messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _invalid(f"messages[{i}] must be an object", f"messages[{i}]")
    return messages


def _message(message: dict[str, Any], i: int) -> dict[str, Any]:
    role = message.get("role")
    content = message.get("content")
    if role in ("system", "developer"):
        return {"role": "system", "content": _text(content, i)}
    if role == "user":
        return {"role": "user", "content": _user_content(content, i)}
    if role == "assistant":
        reply: dict[str, Any] = {"role": "assistant"}
        text = _text(content, i) if content is not None else ""
        calls = message.get("tool_calls")
        if calls:
            reply["tool_calls"] = [_tool_call(c, i) for c in calls]
            if text:
                reply["tool_plan"] = text
        else:
            reply["content"] = text
        return reply
    if role == "tool":
        call_id = message.get("tool_call_id")
        if not isinstance(call_id, str):
            raise _invalid(f"messages[{i}].tool_call_id is required", f"messages[{i}]")
        return {"role": "tool", "tool_call_id": call_id, "content": _text(content, i)}
    raise _invalid(f"messages[{i}].role {role!r} is not supported by cohere",
                   f"messages[{i}].role")


def _text(content: Any, i: int) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts: list[str] = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text":
                parts.append(str(part.get("text") or ""))
            else:
                raise _invalid(f"messages[{i}]: only text parts are allowed in this role",
                               f"messages[{i}].content")
        return "".join(parts)
    if content is None:
        return ""
    raise _invalid(f"messages[{i}].content must be a string or a list of parts",
                   f"messages[{i}].content")


def _user_content(content: Any, i: int) -> str | list[dict[str, Any]]:
    if not isinstance(content, list):
        return _text(content, i)
    parts: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            parts.append({"type": "text", "text": str(part.get("text") or "")})
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if not isinstance(url, str):
                raise _invalid(f"messages[{i}]: image_url needs a url", f"messages[{i}]")
            parts.append({"type": "image_url", "image_url": {"url": url}})
        else:
            raise _invalid(f"messages[{i}]: content part {kind!r} is not supported by cohere",
                           f"messages[{i}].content")
    return parts


def _tool_call(call: Any, i: int) -> dict[str, Any]:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict):
        raise _invalid(f"messages[{i}].tool_calls: each needs a function", f"messages[{i}]")
    return {
        "id": call.get("id"),
        "type": "function",
        "function": {"name": function.get("name"), "arguments": function.get("arguments") or "{}"},
    }


def _tool(tool: Any, i: int) -> dict[str, Any]:
    function = tool.get("function") if isinstance(tool, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise _invalid(f"tools[{i}] must be a function with a name", f"tools[{i}]")
    spec: dict[str, Any] = {"name": function["name"]}
    if function.get("description"):
        spec["description"] = function["description"]
    spec["parameters"] = function.get("parameters") or {"type": "object", "properties": {}}
    return {"type": "function", "function": spec}


def _apply_tool_choice(request: dict[str, Any], choice: Any) -> None:
    """Cohere knows REQUIRED and NONE; a named function is REQUIRED with only that tool."""
    if choice is None or choice == "auto":
        return
    if choice == "none":
        request["tool_choice"] = "NONE"
        return
    if choice == "required":
        request["tool_choice"] = "REQUIRED"
        return
    function = choice.get("function") if isinstance(choice, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    tools = request.get("tools") or []
    chosen = [t for t in tools if t["function"]["name"] == name]
    if not chosen:
        raise _invalid(f"tool_choice names {name!r}, which is not among the tools",
                       "tool_choice")
    request["tools"] = chosen
    request["tool_choice"] = "REQUIRED"


def _response_format(value: Any) -> dict[str, Any] | None:
    kind = value.get("type") if isinstance(value, dict) else None
    if kind is None or kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        spec = value.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        found: dict[str, Any] = {"type": "json_object"}
        if isinstance(schema, dict):
            found["json_schema"] = schema
        return found
    raise _invalid(f"response_format type {kind!r} is not supported by cohere",
                   "response_format")


# --- chat answers ---------------------------------------------------------------------------


def finish_reason(reason: str | None) -> str:
    return FINISH_REASONS.get(reason or "", "stop")


def completion_id(cohere_id: str | None, request_id: str) -> str:
    return f"chatcmpl-{cohere_id or request_id}"


def usage_from_cohere(usage: Any) -> TokenUsage:
    """Billed units are what Cohere charges for; the raw token counts (which include the
    prompt template) only stand in when no billed units came."""
    if not isinstance(usage, dict):
        return TokenUsage()
    for name in ("billed_units", "tokens"):
        counts = usage.get(name)
        if isinstance(counts, dict) and counts:
            return TokenUsage(
                prompt_tokens=int(counts.get("input_tokens") or 0),
                completion_tokens=int(counts.get("output_tokens") or 0),
            )
    return TokenUsage()


def _openai_tool_call(call: dict[str, Any]) -> dict[str, Any]:
    function = call.get("function") or {}
    return {
        "id": call.get("id"),
        "type": "function",
        "function": {"name": function.get("name"), "arguments": function.get("arguments") or ""},
    }


def from_cohere_chat(
    answer: dict[str, Any], *, request_id: str, model: str, created: int | None = None
) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` for a v2 chat answer."""
    message = answer.get("message") or {}
    texts: list[str] = []
    thinking: list[str] = []
    for block in message.get("content") or []:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            texts.append(str(block.get("text") or ""))
        elif block.get("type") == "thinking":
            thinking.append(str(block.get("thinking") or ""))
    calls = [_openai_tool_call(c) for c in message.get("tool_calls") or [] if isinstance(c, dict)]
    content = "".join(texts) if texts or not calls else None
    reply: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    if thinking:
        reply["reasoning_content"] = "".join(thinking)
    if calls:
        reply["tool_calls"] = calls
    return {
        "id": completion_id(answer.get("id"), request_id),
        "object": "chat.completion",
        "created": created if created is not None else int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": reply, "logprobs": None,
                     "finish_reason": finish_reason(answer.get("finish_reason"))}],
        "usage": usage_from_cohere(answer.get("usage")).to_openai(),
    }


# --- chat streams ---------------------------------------------------------------------------


class StreamTranslator:
    """Turns one call's v2 stream events into OpenAI ``chat.completion.chunk`` dicts.

    ``done`` turns true at ``message-end``; ``usage`` is then the call's total. Citation
    and tool-plan events have no OpenAI delta and are skipped.
    """

    def __init__(self, *, request_id: str, model: str, created: int | None = None) -> None:
        self._request_id = request_id
        self._id = completion_id(None, request_id)
        self._model = model
        self._created = created if created is not None else int(time.time())
        self._usage = TokenUsage()
        # Cohere numbers tool calls itself; OpenAI's index counts the calls of the answer.
        self._tool_index: dict[int, int] = {}
        self.done = False

    @property
    def usage(self) -> TokenUsage:
        return self._usage

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    def feed(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        kind = data.get("type")
        message = ((data.get("delta") or {}).get("message") or {}) if isinstance(
            data.get("delta"), dict) else {}
        if kind == "message-start":
            self._id = completion_id(data.get("id"), self._request_id)
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind in ("content-start", "content-delta"):
            content = message.get("content") or {}
            if not isinstance(content, dict):
                return []
            if content.get("text"):
                return [self._chunk({"content": content["text"]})]
            if content.get("thinking"):
                return [self._chunk({"reasoning_content": content["thinking"]})]
            return []
        if kind in ("tool-call-start", "tool-call-delta"):
            return self._tool_delta(int(data.get("index") or 0), message.get("tool_calls"),
                                    start=kind == "tool-call-start")
        if kind == "message-end":
            end = data.get("delta") or {}
            self._usage = usage_from_cohere(end.get("usage"))
            self.done = True
            return [self._chunk({}, finish_reason(end.get("finish_reason")))]
        return []

    def _tool_delta(self, index: int, call: Any, *, start: bool) -> list[dict[str, Any]]:
        if not isinstance(call, dict):
            return []
        function = call.get("function") or {}
        if start:
            ordinal = self._tool_index[index] = len(self._tool_index)
            opened = {"index": ordinal, "id": call.get("id"), "type": "function",
                      "function": {"name": function.get("name"),
                                   "arguments": function.get("arguments") or ""}}
            return [self._chunk({"tool_calls": [opened]})]
        piece = function.get("arguments") or ""
        if index not in self._tool_index or not piece:
            return []
        return [self._chunk({"tool_calls": [
            {"index": self._tool_index[index], "function": {"arguments": piece}}]})]
