"""Anthropic answers and streams back to OpenAI's shapes, without any I/O.

Answers: :func:`from_anthropic_response` and :func:`usage_from_anthropic`. Streams: one
:class:`StreamTranslator` per call, fed each Anthropic event in order. Thinking comes back
as ``reasoning_content`` and, with its signature, as ``thinking_blocks`` (LiteLLM's field).
"""

from __future__ import annotations

import json
import time
from typing import Any

from schemas.usage import TokenUsage

FINISH_REASONS: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "model_context_window_exceeded": "length",
    # The server paused a long-running turn; the client sees a normal end and may continue.
    "pause_turn": "stop",
}


# --- answers --------------------------------------------------------------------------------


def finish_reason(stop_reason: str | None) -> str:
    return FINISH_REASONS.get(stop_reason or "", "stop")


def completion_id(message_id: str | None, request_id: str) -> str:
    return f"chatcmpl-{message_id or request_id}"


def usage_from_anthropic(usage: dict[str, Any]) -> TokenUsage:
    """Anthropic counts cached input apart from ``input_tokens``; OpenAI counts it inside."""
    fresh = int(usage.get("input_tokens") or 0)
    written = int(usage.get("cache_creation_input_tokens") or 0)
    read = int(usage.get("cache_read_input_tokens") or 0)
    return TokenUsage(
        prompt_tokens=fresh + written + read,
        completion_tokens=int(usage.get("output_tokens") or 0),
        cached_tokens=read,
        cache_write_tokens=written,
    )


def thinking_block(block: dict[str, Any]) -> dict[str, Any]:
    """A thinking or redacted_thinking block as the client gets it (and sends it back)."""
    if block.get("type") == "redacted_thinking":
        return {"type": "redacted_thinking", "data": block.get("data")}
    return {
        "type": "thinking",
        "thinking": str(block.get("thinking") or ""),
        "signature": block.get("signature"),
    }


def from_anthropic_response(
    message: dict[str, Any], *, request_id: str, model: str, created: int | None = None
) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` for an Anthropic ``Message``."""
    texts: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    thinking: list[dict[str, Any]] = []
    for block in message.get("content") or []:
        if block.get("type") == "text":
            texts.append(str(block.get("text", "")))
        elif block.get("type") in ("thinking", "redacted_thinking"):
            thinking.append(thinking_block(block))
        elif block.get("type") == "tool_use":
            tool_calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {
                        "name": block.get("name"),
                        "arguments": json.dumps(block.get("input") or {}),
                    },
                }
            )
    # OpenAI sends null content for a pure tool-call turn, a string otherwise.
    content = "".join(texts) if texts or not tool_calls else None
    reply: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    if tool_calls:
        reply["tool_calls"] = tool_calls
    if thinking:
        reply["reasoning_content"] = "".join(
            str(b.get("thinking") or "") for b in thinking if b["type"] == "thinking"
        )
        reply["thinking_blocks"] = thinking
    return {
        "id": completion_id(message.get("id"), request_id),
        "object": "chat.completion",
        "created": created if created is not None else int(time.time()),
        "model": message.get("model") or model,
        "choices": [
            {
                "index": 0,
                "message": reply,
                "logprobs": None,
                "finish_reason": finish_reason(message.get("stop_reason")),
            }
        ],
        "usage": usage_from_anthropic(message.get("usage") or {}).to_openai(),
    }


# --- streams --------------------------------------------------------------------------------


class StreamTranslator:
    """Turns one call's Anthropic stream events into OpenAI ``chat.completion.chunk`` dicts.

    ``error`` events are the caller's to handle (they need the HTTP response); this class
    ignores them, along with ``ping``. Thinking text streams as ``delta.reasoning_content``;
    each thinking block then comes whole, with its signature, as ``delta.thinking_blocks``
    when it ends (a redacted one when it starts). ``done`` turns true at ``message_stop``;
    ``usage`` is then the call's total.
    """

    def __init__(self, *, request_id: str, model: str, created: int | None = None) -> None:
        self._request_id = request_id
        self._id = completion_id(None, request_id)
        self._model = model
        self._created = created if created is not None else int(time.time())
        self._usage: dict[str, Any] = {}
        # Anthropic numbers every content block; OpenAI numbers only the tool calls.
        self._tool_index: dict[int, int] = {}
        # Thinking blocks being streamed, by Anthropic's block index.
        self._thinking: dict[int, dict[str, Any]] = {}
        self._finished = False
        self.done = False

    @property
    def usage(self) -> TokenUsage:
        return usage_from_anthropic(self._usage)

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    def feed(self, event: str | None, data: dict[str, Any]) -> list[dict[str, Any]]:
        kind = data.get("type") or event
        if kind == "message_start":
            message = data.get("message") or {}
            self._id = completion_id(message.get("id"), self._request_id)
            self._model = message.get("model") or self._model
            self._usage.update(message.get("usage") or {})
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            return self._block_start(int(data.get("index", 0)), data.get("content_block") or {})
        if kind == "content_block_delta":
            return self._block_delta(int(data.get("index", 0)), data.get("delta") or {})
        if kind == "content_block_stop":
            block = self._thinking.pop(int(data.get("index", 0)), None)
            return [self._chunk({"thinking_blocks": [block]})] if block is not None else []
        if kind == "message_delta":
            # Counts here are cumulative, so the latest value of each wins.
            usage = data.get("usage") or {}
            self._usage.update({k: v for k, v in usage.items() if v is not None})
            stop_reason = (data.get("delta") or {}).get("stop_reason")
            if stop_reason is None or self._finished:
                return []
            self._finished = True
            return [self._chunk({}, finish_reason(stop_reason))]
        if kind == "message_stop":
            self.done = True
        return []

    def _block_start(self, index: int, block: dict[str, Any]) -> list[dict[str, Any]]:
        if block.get("type") == "text" and block.get("text"):
            return [self._chunk({"content": block["text"]})]
        if block.get("type") == "thinking":
            self._thinking[index] = thinking_block(block)
            text = block.get("thinking")
            return [self._chunk({"reasoning_content": text})] if text else []
        if block.get("type") == "redacted_thinking":
            return [self._chunk({"thinking_blocks": [thinking_block(block)]})]
        if block.get("type") == "tool_use":
            ordinal = self._tool_index[index] = len(self._tool_index)
            call = {
                "index": ordinal,
                "id": block.get("id"),
                "type": "function",
                "function": {"name": block.get("name"), "arguments": ""},
            }
            return [self._chunk({"tool_calls": [call]})]
        return []

    def _block_delta(self, index: int, delta: dict[str, Any]) -> list[dict[str, Any]]:
        if delta.get("type") == "text_delta" and delta.get("text"):
            return [self._chunk({"content": delta["text"]})]
        thinking = self._thinking.get(index)
        if delta.get("type") == "thinking_delta" and thinking is not None:
            text = str(delta.get("thinking") or "")
            if not text:
                return []
            thinking["thinking"] += text
            return [self._chunk({"reasoning_content": text})]
        if delta.get("type") == "signature_delta" and thinking is not None:
            thinking["signature"] = delta.get("signature")
            return []
        if delta.get("type") == "input_json_delta" and index in self._tool_index:
            piece = delta.get("partial_json") or ""
            if not piece:
                return []
            call = {"index": self._tool_index[index], "function": {"arguments": piece}}
            return [self._chunk({"tool_calls": [call]})]
        return []
