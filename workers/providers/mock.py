"""A deterministic provider with no upstream, for first runs, demos, tests and benchmarks.

Deployment parameters (``litellm_params``):

- ``mock_response``: the text to answer (default: a fixed sentence naming the model)
- ``mock_ttft_ms``: delay before the first token
- ``mock_tokens_per_second``: pace of streamed tokens (0 = as fast as possible)
- ``mock_error_status`` and ``mock_error_rate``: answer that HTTP status instead, for that
  fraction of calls (1.0 = always)

Token counts are words, so a test can predict them exactly.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx

from schemas.errors import ErrorInfo
from schemas.usage import TokenUsage
from workers.offload import off_loop
from workers.providers.base import (
    Completion,
    StreamItem,
    UpstreamCall,
    UpstreamError,
    kind_for_status,
    status_for_kind,
)


def prompt_words(body: dict[str, Any]) -> int:
    words = 0
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            words += len(content.split())
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    words += len(part["text"].split())
    return max(words, 1)


def answer_text(call: UpstreamCall) -> str:
    configured = call.deployment.extra.get("mock_response")
    if isinstance(configured, str):
        return configured
    return f"This is a mock response from {call.deployment.upstream_model}."


def tool_call_for(body: dict[str, Any]) -> dict[str, Any] | None:
    """A call to the first tool, when the request makes the model call one."""
    tools = body.get("tools") or []
    choice = body.get("tool_choice")
    if not tools or choice in (None, "none", "auto"):
        return None
    name = tools[0].get("function", {}).get("name", "tool")
    if isinstance(choice, dict):
        name = choice.get("function", {}).get("name", name)
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:24]
    return {
        "id": f"call_{digest}",
        "type": "function",
        "function": {"name": name, "arguments": json.dumps({"mock": True})},
    }


class MockProvider:
    def __init__(self, client: httpx.AsyncClient | None = None, name: str = "mock") -> None:
        self._name = name

    def _maybe_fail(self, call: UpstreamCall) -> None:
        status = call.deployment.extra.get("mock_error_status")
        if status is None:
            return
        rate = float(call.deployment.extra.get("mock_error_rate", 1.0))
        if random.random() < rate:
            kind = kind_for_status(int(status))
            raise UpstreamError(
                ErrorInfo.of(
                    kind,
                    f"mock error {status}",
                    status=status_for_kind(kind, int(status)),
                    retry_after=1.0 if int(status) == 429 else None,
                    provider=self._name,
                    upstream_status=int(status),
                )
            )

    async def _first_token_delay(self, call: UpstreamCall) -> None:
        ttft = float(call.deployment.extra.get("mock_ttft_ms", 0))
        if ttft > 0:
            await asyncio.sleep(ttft / 1000)

    def _usage(self, call: UpstreamCall, completion_words: int) -> TokenUsage:
        n = int(call.body.get("n") or 1)
        return TokenUsage(
            prompt_tokens=prompt_words(call.body), completion_tokens=completion_words * n
        )

    async def complete(self, call: UpstreamCall) -> Completion:
        await self._first_token_delay(call)
        self._maybe_fail(call)
        text = answer_text(call)
        tool_call = tool_call_for(call.body)
        message: dict[str, Any] = {"role": "assistant", "content": None if tool_call else text,
                                   "refusal": None}
        if tool_call:
            message["tool_calls"] = [tool_call]
        n = int(call.body.get("n") or 1)
        words = 0 if tool_call else len(text.split())
        usage = self._usage(call, words)
        response = {
            "id": f"chatcmpl-{call.request_id}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": call.deployment.upstream_model,
            "choices": [
                {"index": i, "message": message, "logprobs": None,
                 "finish_reason": "tool_calls" if tool_call else "stop"}
                for i in range(n)
            ],
            "usage": usage.to_openai(),
        }
        return Completion(response=response, usage=usage)

    async def stream(self, call: UpstreamCall) -> AsyncIterator[StreamItem]:
        await self._first_token_delay(call)
        self._maybe_fail(call)
        tps = float(call.deployment.extra.get("mock_tokens_per_second", 0))
        base = {
            "id": f"chatcmpl-{call.request_id}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": call.deployment.upstream_model,
        }

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {**base, "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

        yield chunk({"role": "assistant", "content": ""})
        tool_call = tool_call_for(call.body)
        if tool_call:
            yield chunk({"tool_calls": [{"index": 0, **tool_call}]})
            yield chunk({}, "tool_calls")
            yield self._usage(call, 0)
            return
        words = answer_text(call).split(" ")
        for i, word in enumerate(words):
            if tps > 0:
                await asyncio.sleep(1 / tps)
            yield chunk({"content": word if i == 0 else " " + word})
        yield chunk({}, "stop")
        yield self._usage(call, len(words))

    async def embed(self, call: UpstreamCall) -> Completion:
        self._maybe_fail(call)
        raw = call.body.get("input")
        inputs = raw if isinstance(raw, list) else [raw]
        dims = int(call.body.get("dimensions") or 8)
        if len(inputs) * dims > OFF_LOOP_FLOATS:  # a large batch: not on the event loop
            data, tokens = await off_loop(_vectors, inputs, dims)
        else:
            data, tokens = _vectors(inputs, dims)
        usage = TokenUsage(prompt_tokens=tokens)
        return Completion(
            response={
                "object": "list",
                "data": data,
                "model": call.deployment.upstream_model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
            usage=usage,
        )


# Vectors built past this many floats are built in a thread (a worker's event loop must
# never stall: heartbeats and every other call on it wait behind it).
OFF_LOOP_FLOATS = 100_000


def _vectors(inputs: list[Any], dims: int) -> tuple[list[dict[str, Any]], int]:
    data = []
    tokens = 0
    for i, item in enumerate(inputs):
        text = item if isinstance(item, str) else json.dumps(item)
        tokens += max(len(text.split()), 1)
        digest = hashlib.sha256(text.encode()).digest()
        vector = [round((digest[j % len(digest)] - 128) / 128, 6) for j in range(dims)]
        data.append({"object": "embedding", "index": i, "embedding": vector})
    return data, tokens
