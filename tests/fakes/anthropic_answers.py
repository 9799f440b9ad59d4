"""What the fake Anthropic Messages API (:mod:`tests.fakes.anthropic_server`) answers with:
the ``Message`` it plans for a valid body (reply text, tool calls, signed thinking, stop
reasons, usage with words as tokens) and the event sequence the real API streams for it,
with the scripted stream failures (midstream, truncated, overloaded before any content)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import AsyncIterator
from typing import Any


def _blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return list(content) if isinstance(content, list) else []


def signature_of(thinking: str) -> str:
    """The signature the fake gives a thinking text (the real one is opaque)."""
    return "sig-" + hashlib.sha256(thinking.encode()).hexdigest()[:24]


REDACTED_DATA = "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8cr3qpP"


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
