"""An OpenAI chat completion as an Anthropic ``Message``, without any I/O."""

from __future__ import annotations

import json
from typing import Any

from schemas.usage import TokenUsage

STOP_REASONS: dict[str, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def stop_reason(finish_reason: str | None) -> str:
    return STOP_REASONS.get(finish_reason or "", "end_turn")


def message_id(completion_id: str | None, request_id: str) -> str:
    return f"msg_{completion_id or request_id}"


def usage(tokens: TokenUsage) -> dict[str, int]:
    """Anthropic's ``usage``: ``input_tokens`` counts only what was neither read from nor
    written to the cache (OpenAI's ``prompt_tokens`` counts them all)."""
    fresh = tokens.prompt_tokens - tokens.cached_tokens - tokens.cache_write_tokens
    return {
        "input_tokens": max(0, fresh),
        "output_tokens": tokens.completion_tokens,
        "cache_creation_input_tokens": tokens.cache_write_tokens,
        "cache_read_input_tokens": tokens.cached_tokens,
    }


def tool_input(arguments: Any) -> dict[str, Any]:
    """A tool call's arguments (a JSON string in chat) as the object Anthropic requires;
    arguments that are no JSON object are kept under ``arguments`` rather than lost."""
    if isinstance(arguments, dict):
        return arguments
    try:
        parsed = json.loads(arguments) if arguments else {}
    except (TypeError, ValueError):
        return {"arguments": arguments}
    return parsed if isinstance(parsed, dict) else {"arguments": parsed}


def to_message(
    completion: dict[str, Any], tokens: TokenUsage, *, request_id: str, model: str
) -> dict[str, Any]:
    """The ``Message`` for a chat completion's first choice, with ``tokens`` as its usage."""
    choices = completion.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    reply = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    reasoning = reply.get("reasoning_content")
    if isinstance(reasoning, str) and reasoning:
        # Another provider's thinking has no signature: it cannot be sent back to Anthropic.
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    text = reply.get("content")
    if isinstance(text, list):  # content parts, as some compatible servers answer
        text = "".join(str(p.get("text") or "") for p in text if isinstance(p, dict))
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    for call in reply.get("tool_calls") or ():
        function = call.get("function") or {}
        content.append({
            "type": "tool_use",
            "id": str(call.get("id") or ""),
            "name": str(function.get("name") or ""),
            "input": tool_input(function.get("arguments")),
        })
    return {
        "id": message_id(completion.get("id"), request_id),
        "type": "message",
        "role": "assistant",
        "model": completion.get("model") or model,
        "content": content,
        "stop_reason": stop_reason(choice.get("finish_reason")),
        "stop_sequence": None,
        "usage": usage(tokens),
    }
