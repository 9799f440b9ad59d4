"""Gemini's ``generateContent`` answers and streams back to OpenAI's chat shapes, without
any I/O.

Gemini never gives a tool call an id. Ids are made here, deterministically from the
response id when Gemini sends one, so a retried translation of the same response names its
calls the same. Thought parts come back as ``reasoning_content``, streamed as
``delta.reasoning_content``.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from typing import Any

from schemas.errors import ErrorInfo, ErrorKind
from schemas.usage import TokenUsage
from workers.providers.base import UpstreamError
from workers.providers.gemini.translate import PROVIDER

_FILTERED = {
    "SAFETY",
    "RECITATION",
    "LANGUAGE",
    "OTHER",
    "BLOCKLIST",
    "PROHIBITED_CONTENT",
    "SPII",
}


def finish_reason(reason: str | None, has_tool_calls: bool) -> str:
    """OpenAI's finish_reason; Gemini ends a function call with a plain STOP."""
    if reason == "MAX_TOKENS":
        mapped = "length"
    elif reason in _FILTERED or (reason or "").startswith("IMAGE_"):
        mapped = "content_filter"
    else:
        mapped = "stop"
    return "tool_calls" if has_tool_calls and mapped == "stop" else mapped


def usage_from_gemini(usage_metadata: dict[str, Any] | None) -> TokenUsage:
    """Thinking tokens count once: inside completion_tokens and again as their breakdown."""
    meta = usage_metadata or {}
    thoughts = int(meta.get("thoughtsTokenCount") or 0)
    return TokenUsage(
        prompt_tokens=int(meta.get("promptTokenCount") or 0)
        + int(meta.get("toolUsePromptTokenCount") or 0),
        completion_tokens=int(meta.get("candidatesTokenCount") or 0) + thoughts,
        cached_tokens=int(meta.get("cachedContentTokenCount") or 0),
        reasoning_tokens=thoughts,
    )


def _completion_id(response_id: str | None) -> str:
    return f"chatcmpl-{response_id or uuid.uuid4().hex}"


def _call_id(response_id: str | None, candidate: int, position: int) -> str:
    seed = f"{response_id}:{candidate}:{position}" if response_id else uuid.uuid4().hex
    return "call_" + hashlib.sha256(seed.encode()).hexdigest()[:24]


def _candidate_content(
    candidate: dict[str, Any], response_id: str | None, index: int, calls_before: int = 0
) -> tuple[str, list[dict[str, Any]], str]:
    """The candidate's visible text, its function calls as OpenAI tool calls, and the text
    of its thought parts."""
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[dict[str, Any]] = []
    for part in (candidate.get("content") or {}).get("parts") or []:
        if part.get("thought"):
            if isinstance(part.get("text"), str):
                thoughts.append(part["text"])
            continue
        if "text" in part:
            texts.append(str(part["text"]))
        elif "functionCall" in part:
            function_call = part["functionCall"] or {}
            call_id = function_call.get("id") or _call_id(
                response_id, index, calls_before + len(calls)
            )
            call: dict[str, Any] = {
                "id": call_id,
                "type": "function",
                "function": {
                    "name": function_call.get("name"),
                    "arguments": json.dumps(function_call.get("args") or {}),
                },
            }
            if part.get("thoughtSignature"):
                call["extra_content"] = {"google": {"thought_signature": part["thoughtSignature"]}}
            calls.append(call)
    return "".join(texts), calls, "".join(thoughts)


def _prompt_blocked(resp: dict[str, Any]) -> bool:
    return not resp.get("candidates") and bool(
        (resp.get("promptFeedback") or {}).get("blockReason")
    )


def from_gemini_response(
    resp: dict[str, Any], model: str, *, created: int | None = None
) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` for a whole ``GenerateContentResponse``."""
    response_id = resp.get("responseId")
    choices: list[dict[str, Any]] = []
    for position, candidate in enumerate(resp.get("candidates") or []):
        # proto3 JSON leaves out a zero index, so the first candidate often has none.
        index = int(candidate.get("index", position))
        text, calls, thoughts = _candidate_content(candidate, response_id, index)
        message: dict[str, Any] = {
            "role": "assistant",
            "content": text if text or not calls else None,
        }
        if calls:
            message["tool_calls"] = calls
        if thoughts:
            message["reasoning_content"] = thoughts
        choices.append(
            {
                "index": index,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason(candidate.get("finishReason"), bool(calls)),
            }
        )
    if _prompt_blocked(resp):
        choices.append(
            {
                "index": 0,
                "message": {"role": "assistant", "content": ""},
                "logprobs": None,
                "finish_reason": "content_filter",
            }
        )
    return {
        "id": _completion_id(response_id),
        "object": "chat.completion",
        "created": created if created is not None else int(time.time()),
        "model": model,
        "choices": choices,
        "usage": usage_from_gemini(resp.get("usageMetadata")).to_openai(),
    }


class StreamTranslator:
    """Turns Gemini stream chunks into OpenAI ``chat.completion.chunk`` dicts, in order.

    Each Gemini chunk is a whole response holding only the new parts, so the state kept
    here is what OpenAI's format implies across chunks: one id for the stream, the role
    sent once per choice, tool call indexes counted per choice, and which choices ended.
    """

    def __init__(self, model: str, *, created: int | None = None) -> None:
        self._model = model
        self._created = created if created is not None else int(time.time())
        self._id: str | None = None
        self._response_id: str | None = None
        self._opened: set[int] = set()
        self._ended: set[int] = set()
        self._calls: dict[int, int] = {}
        self._usage = TokenUsage()

    def feed(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        if self._id is None:
            self._response_id = chunk.get("responseId")
            self._id = _completion_id(self._response_id)
        if chunk.get("usageMetadata"):
            self._usage = usage_from_gemini(chunk["usageMetadata"])
        out: list[dict[str, Any]] = []
        if _prompt_blocked(chunk):
            out += self._open(0)
            out.append(self._chunk(0, {}, "content_filter"))
            self._ended.add(0)
        for position, candidate in enumerate(chunk.get("candidates") or []):
            index = int(candidate.get("index", position))
            out += self._open(index)
            before = self._calls.get(index, 0)
            text, calls, thoughts = _candidate_content(
                candidate, self._response_id, index, before
            )
            delta: dict[str, Any] = {}
            if thoughts:
                delta["reasoning_content"] = thoughts
            if text:
                delta["content"] = text
            if calls:
                delta["tool_calls"] = [{"index": before + i, **c} for i, c in enumerate(calls)]
                self._calls[index] = before + len(calls)
            reason = candidate.get("finishReason")
            finish = finish_reason(reason, index in self._calls) if reason else None
            if finish:
                self._ended.add(index)
            if delta or finish:
                out.append(self._chunk(index, delta, finish))
        return out

    def close(self) -> TokenUsage:
        """The stream's usage, once every choice has ended; otherwise the stream broke."""
        if not self._ended or self._opened - self._ended:
            raise UpstreamError(
                ErrorInfo.of(ErrorKind.SERVER, "gemini stream ended early", provider=PROVIDER)
            )
        return self._usage

    def _open(self, index: int) -> list[dict[str, Any]]:
        if index in self._opened:
            return []
        self._opened.add(index)
        return [self._chunk(index, {"role": "assistant", "content": ""}, None)]

    def _chunk(self, index: int, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        return {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": [
                {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
            ],
        }
