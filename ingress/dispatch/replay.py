"""Serving a cached answer, in the shape the request asks for.

A streamed and a non-streamed request share one cache entry, so an entry stored as a
response may be replayed as SSE chunks, and one stored as chunks assembled into a
response, the way the OpenAI SDK assembles a stream. A hit is free: ``usage.cost`` is 0
and the headers say ``x-aigw-cache: hit`` with the entry's ``age``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from decimal import Decimal
from typing import Any

from fastapi.responses import Response, StreamingResponse

from ingress.cache.store import CachedAnswer
from ingress.dispatch.relay import COST_HEADER, DONE, SSE_HEADERS, usage_chunk
from schemas.usage import TokenUsage

CACHE_HEADER = "x-aigw-cache"
_FREE = Decimal(0)
# Fields a chunk carries over from the response it was split from.
_META = ("id", "created", "model", "system_fingerprint", "service_tier")


def _merge_tool_calls(calls: list[dict[str, Any]], pieces: list[dict[str, Any]]) -> None:
    for piece in pieces:
        index = int(piece.get("index") or 0)
        while len(calls) <= index:
            calls.append({"id": None, "type": "function",
                          "function": {"name": "", "arguments": ""}})
        call = calls[index]
        if piece.get("id"):
            call["id"] = piece["id"]
        if piece.get("type"):
            call["type"] = piece["type"]
        function = piece.get("function") or {}
        call["function"]["name"] += function.get("name") or ""
        call["function"]["arguments"] += function.get("arguments") or ""


def assemble(chunks: Sequence[str], usage: TokenUsage) -> dict[str, Any]:
    """The ``chat.completion`` a stream of chunks adds up to."""
    first: dict[str, Any] = {}
    choices: dict[int, dict[str, Any]] = {}
    for text in chunks:
        chunk = json.loads(text)
        first = first or chunk
        for choice in chunk.get("choices") or []:
            index = int(choice.get("index") or 0)
            slot = choices.setdefault(index, {
                "index": index, "message": {"role": "assistant", "content": None},
                "logprobs": None, "finish_reason": None})
            message = slot["message"]
            for field, value in (choice.get("delta") or {}).items():
                if value is None:
                    continue
                if field == "tool_calls":
                    _merge_tool_calls(message.setdefault("tool_calls", []), value)
                elif field != "role" and isinstance(value, str):
                    message[field] = (message.get(field) or "") + value
                else:
                    message[field] = value
            logprobs = choice.get("logprobs")
            if isinstance(logprobs, dict):
                kept = slot["logprobs"] or {"content": []}
                kept["content"] = (kept.get("content") or []) + (logprobs.get("content") or [])
                slot["logprobs"] = kept
            if choice.get("finish_reason"):
                slot["finish_reason"] = choice["finish_reason"]
    response: dict[str, Any] = {k: first[k] for k in _META if first.get(k) is not None}
    response.update(object="chat.completion", choices=[choices[i] for i in sorted(choices)],
                    usage=usage.to_openai())
    return response


def split(response: dict[str, Any]) -> list[str]:
    """Chunks for a whole response: per choice, its message as one delta, then its
    finish reason."""
    meta = {k: response[k] for k in _META if response.get(k) is not None}
    meta["object"] = "chat.completion.chunk"
    chunks: list[str] = []
    for position, choice in enumerate(response.get("choices") or []):
        index = choice.get("index", position)
        delta = {k: v for k, v in (choice.get("message") or {}).items()
                 if v is not None and v != []}
        if "tool_calls" in delta:
            delta["tool_calls"] = [{"index": i, **call}
                                   for i, call in enumerate(delta["tool_calls"])]
        for part in (
            {"index": index, "delta": delta, "logprobs": choice.get("logprobs"),
             "finish_reason": None},
            {"index": index, "delta": {}, "logprobs": None,
             "finish_reason": choice.get("finish_reason")},
        ):
            chunks.append(json.dumps({**meta, "choices": [part]}, separators=(",", ":")))
    return chunks


def _headers(answer: CachedAnswer) -> dict[str, str]:
    return {CACHE_HEADER: "hit", "age": str(int(answer.age()))}


def json_hit(answer: CachedAnswer) -> Response:
    if answer.response is not None:
        body = dict(answer.response)
    else:
        body = assemble(answer.chunks or [], answer.usage)
    usage = body.get("usage")
    if isinstance(usage, dict):
        body["usage"] = {**usage, "cost": 0.0}
    return Response(
        json.dumps(body, separators=(",", ":")).encode(),
        media_type="application/json",
        headers={**_headers(answer), COST_HEADER: "0"},
    )


async def _replay(answer: CachedAnswer, include_usage: bool) -> AsyncIterator[bytes]:
    chunks = answer.chunks if answer.chunks is not None else split(answer.response or {})
    for chunk in chunks:
        yield b"data: " + chunk.encode() + b"\n\n"
    if include_usage:
        first = chunks[0].encode() if chunks else None
        yield usage_chunk(first, answer.usage, _FREE)
    yield DONE


def stream_hit(answer: CachedAnswer, include_usage: bool) -> StreamingResponse:
    return StreamingResponse(_replay(answer, include_usage), media_type="text/event-stream",
                             headers={**SSE_HEADERS, **_headers(answer)})
