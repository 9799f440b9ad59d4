"""What the fake Gemini API (:mod:`tests.fakes.gemini_server`) answers with: the whole
``GenerateContentResponse`` for a valid request (steered by words in the last user turn),
the same cut into stream chunks and sent as events (with the scripted stream failures),
and deterministic embedding vectors."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any

THOUGHT_SIGNATURE = "ZmFrZS10aG91Z2h0LXNpZ25hdHVyZQ=="
TOOL_ARGS = {"city": "Paris", "unit": "celsius"}
THOUGHT_TOKENS = 5


def _words(text: str) -> int:
    return len(text.split())


def _prompt_tokens(body: dict[str, Any]) -> int:
    parts = [p for c in body["contents"] for p in c["parts"]]
    parts += (body.get("systemInstruction") or {}).get("parts") or []
    return sum(_words(json.dumps(p)) if "text" not in p else _words(p["text"]) for p in parts)


def _answer(body: dict[str, Any], model: str, response_id: str) -> dict[str, Any]:
    """The whole GenerateContentResponse for a valid request."""
    last = body["contents"][-1]
    prompt = " ".join(p["text"] for p in last["parts"] if "text" in p)
    results = [p["functionResponse"] for p in last["parts"] if "functionResponse" in p]
    config = body.get("generationConfig") or {}
    usage: dict[str, Any] = {"promptTokenCount": _prompt_tokens(body)}
    response: dict[str, Any] = {"modelVersion": model, "responseId": response_id}
    if "BLOCK_PROMPT" in prompt:
        response["promptFeedback"] = {"blockReason": "SAFETY"}
        response["usageMetadata"] = {**usage, "totalTokenCount": usage["promptTokenCount"]}
        return response

    declarations = [d for t in body.get("tools") or [] for d in t.get("functionDeclarations", [])]
    thinking = config.get("thinkingConfig") or {}
    thinks = thinking.get("thinkingBudget") != 0 and (
        "THINK" in prompt or thinking.get("includeThoughts") is True)
    candidates: list[dict[str, Any]] = []
    visible = 0
    for index in range(int(config.get("candidateCount") or 1)):
        parts: list[dict[str, Any]] = []
        finish = "STOP"
        if thinks:
            parts.append({"text": "Thinking it over carefully.", "thought": True})
        if "USE_TOOL" in prompt and declarations:
            call = {"name": declarations[0]["name"], "args": TOOL_ARGS}
            parts.append({"functionCall": call, "thoughtSignature": THOUGHT_SIGNATURE})
        elif "UNSAFE" in prompt:
            finish = "SAFETY"
        else:
            if results:
                text = "The tool said: " + json.dumps(results[0]["response"], sort_keys=True)
            else:
                text = f"Hello from {model}! You said: {prompt}"
            if index:
                text += f" (candidate {index})"
            if config.get("responseMimeType") == "application/json":
                text = json.dumps({"answer": text})
            limit = config.get("maxOutputTokens")
            if limit is not None and _words(text) > limit:
                text, finish = " ".join(text.split()[:limit]), "MAX_TOKENS"
            visible += _words(text)
            parts.append({"text": text})
        candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}}
        candidate.update(finishReason=finish, index=index)
        candidates.append(candidate)
    usage["candidatesTokenCount"] = visible
    if thinks:
        usage["thoughtsTokenCount"] = THOUGHT_TOKENS
    usage["totalTokenCount"] = sum(usage.values())
    if "CACHED" in prompt:
        # Already inside promptTokenCount, so it stays out of the total.
        usage["cachedContentTokenCount"] = usage["promptTokenCount"] // 2
    response.update(candidates=candidates, usageMetadata=usage)
    return response


def _stream_chunks(answer: dict[str, Any], model: str) -> list[dict[str, Any]]:
    """The answer cut into stream chunks; only the last carries finishReason and full usage."""
    base = {"modelVersion": answer["modelVersion"], "responseId": answer["responseId"]}
    usage = answer["usageMetadata"]
    partial = {"promptTokenCount": usage["promptTokenCount"]}
    if not answer.get("candidates"):
        return [{**base, "promptFeedback": answer["promptFeedback"], "usageMetadata": usage}]
    chunks: list[dict[str, Any]] = []
    for candidate in answer["candidates"]:
        pieces: list[dict[str, Any]] = []
        for part in candidate["content"]["parts"]:
            if "text" in part and not part.get("thought"):
                words = part["text"].split(" ")
                step = max(1, len(words) // 3)
                for i in range(0, len(words), step):
                    tail = " " if i + step < len(words) else ""
                    pieces.append({"text": " ".join(words[i : i + step]) + tail})
            else:
                pieces.append(part)
        pieces = pieces or [{"text": ""}]
        for n, piece in enumerate(pieces):
            streamed: dict[str, Any] = {"content": {"role": "model", "parts": [piece]}}
            # proto3 JSON leaves out a zero index, as Gemini's stream does.
            if candidate["index"]:
                streamed["index"] = candidate["index"]
            chunk = {**base, "candidates": [streamed], "usageMetadata": partial}
            if n == len(pieces) - 1:
                streamed["finishReason"] = candidate["finishReason"]
            chunks.append(chunk)
    chunks[-1]["usageMetadata"] = usage
    return chunks


def _sse(chunk: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(chunk)}\r\n\r\n".encode()


async def _stream(chunks: list[dict[str, Any]], model: str) -> AsyncIterator[bytes]:
    if model == "truncated-stream":
        for chunk in chunks:
            for candidate in chunk.get("candidates", []):
                candidate.pop("finishReason", None)
            yield _sse(chunk)
        return
    if model.startswith("fail-midstream"):
        yield _sse(chunks[0])
        if model == "fail-midstream":
            raise ConnectionAbortedError("fake Gemini drops the connection mid-stream")
        error = {"code": 500, "message": "An internal error has occurred.", "status": "INTERNAL"}
        yield _sse({"error": error})
        return
    for chunk in chunks:
        yield _sse(chunk)


def _vector(text: str, size: int) -> list[float]:
    values: list[float] = []
    block = 0
    while len(values) < size:
        digest = hashlib.sha256(f"{block}:{text}".encode()).digest()
        values += [round(b / 127.5 - 1, 4) for b in digest]
        block += 1
    return values[:size]
