"""OpenAI chat chunks as Anthropic Messages stream events, without any I/O.

One :class:`EventWriter` per call is fed each chunk in order and then finished with the
call's usage; it returns the events to send, each already framed for SSE
(``event: <type>\\ndata: <json>\\n\\n``), in Anthropic's order: ``message_start``; per
content block ``content_block_start``, its deltas, ``content_block_stop``; then
``message_delta`` (stop reason and usage) and ``message_stop``. Chat interleaves nothing,
so one block is open at a time: reasoning becomes a ``thinking`` block, text a ``text``
block, each tool call a ``tool_use`` block whose arguments stream as ``input_json_delta``.
"""

from __future__ import annotations

import json
from typing import Any

from schemas.usage import TokenUsage
from workers.protocols.messages.response import message_id, stop_reason, usage


def sse(data: dict[str, Any]) -> bytes:
    """One event as Anthropic frames it: its ``type`` is also the event name."""
    return (f"event: {data['type']}\ndata: "
            f"{json.dumps(data, separators=(',', ':'))}\n\n").encode()


class EventWriter:
    def __init__(self, *, request_id: str, model: str) -> None:
        self._request_id = request_id
        self._model = model
        self._started = False
        self._index = -1  # of the open block; -1 before the first
        self._open: str | None = None  # "thinking", "text" or "tool:<chat index>"
        self._tools: dict[int, int] = {}  # chat's tool call index -> block index
        self._finish: str | None = None

    def _start(self, chunk: dict[str, Any] | None) -> list[bytes]:
        if self._started:
            return []
        self._started = True
        chunk = chunk or {}
        self._model = chunk.get("model") or self._model
        message: dict[str, Any] = {
            "id": message_id(chunk.get("id"), self._request_id),
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            # Chat reports usage at the end only: the real figures come in message_delta.
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return [sse({"type": "message_start", "message": message})]

    def _close(self) -> list[bytes]:
        if self._open is None:
            return []
        self._open = None
        return [sse({"type": "content_block_stop", "index": self._index})]

    def _open_block(self, name: str, block: dict[str, Any]) -> list[bytes]:
        events = self._close()
        self._index += 1
        self._open = name
        events.append(sse({"type": "content_block_start", "index": self._index,
                           "content_block": block}))
        return events

    def _delta(self, index: int, delta: dict[str, Any]) -> bytes:
        return sse({"type": "content_block_delta", "index": index, "delta": delta})

    def feed(self, chunk: dict[str, Any]) -> list[bytes]:
        """The events for one ``chat.completion.chunk``."""
        events = self._start(chunk)
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning_content")
            if isinstance(reasoning, str) and reasoning:
                if self._open != "thinking":
                    events += self._open_block(
                        "thinking", {"type": "thinking", "thinking": "", "signature": ""})
                events.append(self._delta(self._index,
                                          {"type": "thinking_delta", "thinking": reasoning}))
            text = delta.get("content")
            if isinstance(text, str) and text:
                if self._open != "text":
                    events += self._open_block("text", {"type": "text", "text": ""})
                events.append(self._delta(self._index, {"type": "text_delta", "text": text}))
            for call in delta.get("tool_calls") or ():
                events += self._tool_call(call)
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
        return events

    def _tool_call(self, call: dict[str, Any]) -> list[bytes]:
        events: list[bytes] = []
        ordinal = int(call.get("index") or 0)
        function = call.get("function") or {}
        if ordinal not in self._tools:
            events += self._open_block(f"tool:{ordinal}", {
                "type": "tool_use", "id": str(call.get("id") or ""),
                "name": str(function.get("name") or ""), "input": {}})
            self._tools[ordinal] = self._index
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            # A call's arguments after another block opened still belong to their own block.
            events.append(self._delta(self._tools[ordinal],
                                      {"type": "input_json_delta", "partial_json": arguments}))
        return events

    def finish(self, tokens: TokenUsage) -> list[bytes]:
        """The closing events, once the call's stream has ended and ``tokens`` is its
        usage. ``message_delta`` carries every count: chat gave none before."""
        events = self._start(None) + self._close()
        events.append(sse({
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason(self._finish), "stop_sequence": None},
            "usage": usage(tokens),
        }))
        events.append(sse({"type": "message_stop"}))
        return events
