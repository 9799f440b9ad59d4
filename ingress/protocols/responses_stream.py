"""A stream of chat completion chunks as the Responses API's event stream.

The events come in the real API's order: ``response.created`` and
``response.in_progress``; for each output item ``response.output_item.added``, its content
part's ``added``, the deltas, their ``done``, the part's ``done`` and
``response.output_item.done``; then ``response.completed`` (or ``response.incomplete``)
with the whole response. Every event carries a ``sequence_number``. Text and reasoning are
one item at a time (a new item closes the one before); function calls stay open until the
answer ends, since chat may interleave the argument pieces of parallel calls.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ingress.protocols.responses import (
    finished,
    function_call_item,
    message_item,
    new_id,
    output_text,
    reasoning_item,
    reasoning_text,
    usage,
)

Event = dict[str, Any]


@dataclass(slots=True)
class _Item:
    """An output item being streamed: its kind, id, place in the output, and text."""

    kind: str  # "message", "reasoning" or "function_call"
    id: str
    index: int
    parts: list[str] = field(default_factory=list)
    call_id: str = ""
    name: str = ""

    @property
    def text(self) -> str:
        return "".join(self.parts)


class ResponseStream:
    """Turns chat chunks into Responses events; ``base`` is the request's response shell."""

    def __init__(self, base: dict[str, Any]) -> None:
        self.response = {**base, "status": "in_progress", "output": []}
        self._seq = 0
        self._output: dict[int, dict[str, Any]] = {}
        self._current: _Item | None = None
        self._calls: dict[int, _Item] = {}
        self._next_index = 0
        self._finish_reason: str | None = None
        self._model: str | None = None

    def _event(self, kind: str, **fields: Any) -> Event:
        event = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return event

    def start(self) -> list[Event]:
        return [self._event("response.created", response=self.response),
                self._event("response.in_progress", response=self.response)]

    def chunk(self, chunk: dict[str, Any]) -> list[Event]:
        """The events for one chat chunk (most often one delta)."""
        if isinstance(chunk.get("model"), str):
            self._model = chunk["model"]
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return []
        choice = choices[0]
        if choice.get("finish_reason"):
            self._finish_reason = str(choice["finish_reason"])
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            return []
        events: list[Event] = []
        if thought := reasoning_text(delta):
            events += self._text("reasoning", thought)
        content = delta.get("content")
        if isinstance(content, str) and content:
            events += self._text("message", content)
        for call in delta.get("tool_calls") or ():
            if isinstance(call, dict):
                events += self._call(call)
        return events

    def _open(self, kind: str) -> tuple[_Item, list[Event]]:
        item = _Item(kind, new_id("rs" if kind == "reasoning" else "msg"), self._next_index)
        self._next_index += 1
        if kind == "reasoning":
            added = {"type": "reasoning", "id": item.id, "summary": [], "content": []}
            part = {"type": "reasoning_text", "text": ""}
        else:
            added = message_item(item.id, [], "in_progress")
            part = output_text("")
        return item, [
            self._event("response.output_item.added", output_index=item.index, item=added),
            self._event("response.content_part.added", item_id=item.id,
                        output_index=item.index, content_index=0, part=part),
        ]

    def _text(self, kind: str, delta: str) -> list[Event]:
        events: list[Event] = []
        if self._current is None or self._current.kind != kind:
            events += self._close_current()
            self._current, opened = self._open(kind)
            events += opened
        item = self._current
        item.parts.append(delta)
        name = "response.reasoning_text.delta" if kind == "reasoning" else (
            "response.output_text.delta")
        extra: dict[str, Any] = {} if kind == "reasoning" else {"logprobs": []}
        events.append(self._event(name, item_id=item.id, output_index=item.index,
                                  content_index=0, delta=delta, **extra))
        return events

    def _close_current(self) -> list[Event]:
        item, self._current = self._current, None
        if item is None:
            return []
        text = item.text
        if item.kind == "reasoning":
            part: dict[str, Any] = {"type": "reasoning_text", "text": text}
            done = reasoning_item(item.id, text)
            text_done = self._event("response.reasoning_text.done", item_id=item.id,
                                    output_index=item.index, content_index=0, text=text)
        else:
            part = output_text(text)
            done = message_item(item.id, [part], "completed")
            text_done = self._event("response.output_text.done", item_id=item.id,
                                    output_index=item.index, content_index=0, text=text,
                                    logprobs=[])
        self._output[item.index] = done
        return [
            text_done,
            self._event("response.content_part.done", item_id=item.id,
                        output_index=item.index, content_index=0, part=part),
            self._event("response.output_item.done", output_index=item.index, item=done),
        ]

    def _call(self, call: dict[str, Any]) -> list[Event]:
        events: list[Event] = []
        position = call.get("index", 0)
        position = position if isinstance(position, int) else 0
        found = call.get("function")
        function: dict[str, Any] = found if isinstance(found, dict) else {}
        item = self._calls.get(position)
        if item is None:
            events += self._close_current()
            item = _Item("function_call", new_id("fc"), self._next_index,
                         call_id=str(call.get("id") or new_id("call")),
                         name=str(function.get("name") or ""))
            self._next_index += 1
            self._calls[position] = item
            events.append(self._event(
                "response.output_item.added", output_index=item.index,
                item=function_call_item(item.id, item.call_id, item.name, "", "in_progress")))
        elif function.get("name") and not item.name:
            item.name = str(function["name"])
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            item.parts.append(arguments)
            events.append(self._event("response.function_call_arguments.delta",
                                      item_id=item.id, output_index=item.index,
                                      delta=arguments))
        return events

    def _close_all(self) -> list[Event]:
        events = self._close_current()
        for position in sorted(self._calls):
            item = self._calls[position]
            done = function_call_item(item.id, item.call_id, item.name, item.text, "completed")
            self._output[item.index] = done
            events += [
                self._event("response.function_call_arguments.done", item_id=item.id,
                            output_index=item.index, name=item.name, arguments=item.text),
                self._event("response.output_item.done", output_index=item.index, item=done),
            ]
        self._calls.clear()
        return events

    def _final_output(self) -> list[dict[str, Any]]:
        return [self._output[i] for i in sorted(self._output)]

    def finish(self, chat_usage: dict[str, Any] | None) -> list[Event]:
        """The events that end an answer that came whole: every open item closed, then
        ``response.completed`` (``response.incomplete`` when it was cut at its length)."""
        events = self._close_all()
        response = {**self.response, "output": self._final_output(),
                    "usage": usage(chat_usage)}
        if self._model is not None:
            response["model"] = self._model
        self.response = finished(response, self._finish_reason)
        kind = ("response.completed" if self.response["status"] == "completed"
                else "response.incomplete")
        events.append(self._event(kind, response=self.response))
        return events

    def fail(self, error: dict[str, Any]) -> list[Event]:
        """The events that end an answer broken off by ``error`` (OpenAI's error object):
        an ``error`` event, then ``response.failed`` with what was completed."""
        self._current = None  # items still open were never completed: left out
        self._calls.clear()
        code = error.get("code") or error.get("type") or "server_error"
        message = str(error.get("message") or "the answer was cut short")
        self.response = {**self.response, "status": "failed",
                         "output": self._final_output(),
                         "error": {"code": str(code), "message": message}}
        return [
            self._event("error", code=str(code), message=message, param=error.get("param")),
            self._event("response.failed", response=self.response),
        ]


def encode(event: Event) -> bytes:
    """One event as SSE, named as the real API names it."""
    data = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
    return f"event: {event['type']}\ndata: {data}\n\n".encode()
