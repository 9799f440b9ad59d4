"""What the fake OpenAI server (:mod:`tests.fakes.openai_server`) answers with: the canned
texts, the content chosen for a chat body (a ``stop`` sequence cuts it, ``response_format``
makes it JSON, the complexity router's judge gets its verdict), usage counts with words
as tokens, and the streams, chat and legacy text completion, with the scripted failures
that happen inside a stream (``fail-midstream``, ``stall-midstream``, ``slow-stream``)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.fakes.openai_server import FakeOpenAIState

ANSWER = "Hello from the fake OpenAI server."
TOOL_ARGS = '{"city": "Paris", "unit": "celsius"}'
TEXT_ANSWER = "once upon a time in a fake land"
REASONING = "The user wants a greeting."
REASONING_TOKENS = 5


def _prompt_tokens(body: dict[str, Any]) -> int:
    return sum(len(json.dumps(m).split()) for m in body.get("messages", []))


def _usage(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    }


def _add_reasoning(usage: dict[str, Any]) -> None:
    usage["completion_tokens"] += REASONING_TOKENS
    usage["total_tokens"] += REASONING_TOKENS
    usage["completion_tokens_details"]["reasoning_tokens"] = REASONING_TOKENS


def _wants_tool(body: dict[str, Any]) -> bool:
    return bool(body.get("tools")) and body.get("tool_choice") != "none"


def _content(body: dict[str, Any]) -> str:
    if body.get("model") == "route-judge":  # a classifier model of the complexity router
        said = json.dumps(body.get("messages"))
        return "I cannot tell." if "unsure" in said else "Large." if "tricky" in said else "small"
    fmt = (body.get("response_format") or {}).get("type")
    if fmt in ("json_object", "json_schema"):
        return json.dumps({"answer": ANSWER})
    # As OpenAI does: the answer ends before the first ``stop`` sequence in it.
    stop = body.get("stop")
    found = [ANSWER.find(s) for s in ([stop] if isinstance(stop, str) else stop or [])
             if s and s in ANSWER]
    return ANSWER[:min(found)] if found else ANSWER


async def _text_stream(body: dict[str, Any], prompt_tokens: int) -> AsyncIterator[bytes]:
    model = body["model"]
    words = TEXT_ANSWER.split(" ")

    def chunk(text: str, finish: str | None) -> bytes:
        return b"data: " + json.dumps({
            "id": "cmpl-fake", "object": "text_completion", "created": int(time.time()),
            "model": model, "choices": [{"index": 0, "text": text, "logprobs": None,
                                         "finish_reason": finish}]}).encode() + b"\n\n"

    for i, word in enumerate(words):
        yield chunk(word if i == 0 else " " + word, None)
    yield chunk("", "stop")
    if (body.get("stream_options") or {}).get("include_usage"):
        yield b"data: " + json.dumps({
            "id": "cmpl-fake", "object": "text_completion", "created": int(time.time()),
            "model": model, "choices": [],
            "usage": _usage(prompt_tokens, len(words))}).encode() + b"\n\n"
    yield b"data: [DONE]\n\n"


async def _broken() -> AsyncIterator[bytes]:
    yield b'{"id": '
    raise RuntimeError("connection reset")


def _chunk(model: str, delta: dict[str, Any], finish: str | None = None,
           usage: dict[str, Any] | None = None, with_usage_field: bool = False) -> bytes:
    chunk: dict[str, Any] = {
        "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()),
        "model": model, "system_fingerprint": "fp_fake",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    if with_usage_field:
        chunk["usage"] = usage
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


async def _stream(body: dict[str, Any], state: FakeOpenAIState) -> AsyncIterator[bytes]:
    model = body["model"]
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    yield _chunk(model, {"role": "assistant", "content": ""}, with_usage_field=include_usage)
    if model == "slow-stream":
        try:
            await asyncio.sleep(state.slow_seconds)
        except asyncio.CancelledError:
            state.cancelled += 1
            raise
    completion = 0
    if model == "reasoner":
        for i in range(0, len(REASONING), 10):
            yield _chunk(model, {"reasoning_content": REASONING[i:i + 10]},
                         with_usage_field=include_usage)
    if _wants_tool(body):
        name = body["tools"][0]["function"]["name"]
        yield _chunk(model, {"tool_calls": [{"index": 0, "id": "call_fake1", "type": "function",
                                             "function": {"name": name, "arguments": ""}}]},
                     with_usage_field=include_usage)
        for i in range(0, len(TOOL_ARGS), 7):
            yield _chunk(model, {"tool_calls": [{"index": 0, "function": {
                "arguments": TOOL_ARGS[i:i + 7]}}]}, with_usage_field=include_usage)
        finish = "tool_calls"
        completion = 9
    else:
        words = _content(body).split(" ")
        for i, word in enumerate(words):
            if model == "fail-midstream" and i == 3:
                raise RuntimeError("upstream connection dropped")
            if model == "stall-midstream" and i == 3:
                await asyncio.sleep(state.slow_seconds)
            yield _chunk(model, {"content": word if i == 0 else " " + word},
                         with_usage_field=include_usage)
            await asyncio.sleep(0)
        finish = "stop"
        completion = len(words)
    yield _chunk(model, {}, finish, with_usage_field=include_usage)
    if include_usage:
        usage = _usage(_prompt_tokens(body), completion)
        if model == "reasoner":
            _add_reasoning(usage)
        chunk = {"id": "chatcmpl-fake", "object": "chat.completion.chunk",
                 "created": int(time.time()), "model": model, "choices": [], "usage": usage}
        yield b"data: " + json.dumps(chunk).encode() + b"\n\n"
    state.completed += 1
    yield b"data: [DONE]\n\n"
