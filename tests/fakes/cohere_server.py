"""A fake Cohere v2 API on a real socket: ``/v2/chat`` (JSON and SSE), ``/v2/embed`` and
``/v2/rerank``, with Cohere's ``{"message": ...}`` errors.

The answer echoes the last user message. With ``tools`` and a ``tool_choice`` other than
``NONE`` it calls the first tool with ``{"query": <last user text>}``. Usage is reported as
Cohere does: ``billed_units`` (what is charged) and ``tokens`` (raw counts, here always
:data:`TEMPLATE_TOKENS` more input, so a test can tell which one was read).

Behaviour by model name: ``fail-429`` (rate limit, trial key), ``fail-500``, ``fail-422``
(an invalid request), ``too-long`` (a 400 about too many tokens), ``fail-midstream``
(a stream that ends with ``finish_reason: ERROR`` after one delta).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.fakes.server import serve

API_KEY = "co-fake-key-123456"
TEMPLATE_TOKENS = 10


@dataclass
class FakeCohereState:
    api_key: str = API_KEY
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"id": "err-1", "message": message}, status_code=status)


def _words(value: Any) -> int:
    return len(json.dumps(value).split())


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            return " ".join(p.get("text", "") for p in content if p.get("type") == "text")
    return ""


def _usage(prompt: int, completion: int) -> dict[str, Any]:
    return {"billed_units": {"input_tokens": prompt, "output_tokens": completion},
            "tokens": {"input_tokens": prompt + TEMPLATE_TOKENS, "output_tokens": completion}}


def _wants_tool(body: dict[str, Any]) -> bool:
    return bool(body.get("tools")) and body.get("tool_choice") != "NONE"


def _scripted(model: str) -> Response | None:
    if model == "fail-429":
        return _error(429, "You are using a Trial key, which is limited to 10 API calls / "
                      "minute.")
    if model == "fail-500":
        return _error(500, "internal server error, this has been reported to our developers")
    if model == "fail-422":
        return _error(422, "invalid request: temperature must be at most 5")
    if model == "too-long":
        return _error(400, "too many tokens: total number of tokens in the prompt cannot "
                      "exceed 128000")
    return None


def create_app(state: FakeCohereState | None = None) -> Starlette:
    state = state or FakeCohereState()

    async def read(request: Request, route: str) -> dict[str, Any] | Response:
        if request.headers.get("authorization") != f"Bearer {state.api_key}":
            return _error(401, "invalid api token")
        body = await request.json()
        state.requests.append((route, body))
        model = body.get("model")
        if not isinstance(model, str):
            return _error(400, "invalid request: model must be a string")
        return _scripted(model) or body

    async def chat(request: Request) -> Response:
        body = await read(request, "chat")
        if isinstance(body, Response):
            return body
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return _error(400, "invalid request: messages must not be empty")
        if body.get("stream"):
            return StreamingResponse(_stream(body), media_type="text/event-stream")
        text = _last_user_text(messages)
        prompt = _words(messages)
        message: dict[str, Any] = {"role": "assistant"}
        if _wants_tool(body):
            name = body["tools"][0]["function"]["name"]
            message["tool_plan"] = "I will look it up."
            message["tool_calls"] = [{"id": "lookup_fake1", "type": "function", "function": {
                "name": name, "arguments": json.dumps({"query": text})}}]
            finish, completion = "TOOL_CALL", 7
        else:
            answer = f"Cohere says: {text}"
            message["content"] = [{"type": "text", "text": answer}]
            finish, completion = "COMPLETE", len(answer.split())
        return JSONResponse({"id": "co-chat-1", "finish_reason": finish, "message": message,
                             "usage": _usage(prompt, completion)})

    async def embed(request: Request) -> Response:
        body = await read(request, "embed")
        if isinstance(body, Response):
            return body
        if body.get("embedding_types") != ["float"] or not body.get("input_type"):
            return _error(400, "invalid request: embedding_types and input_type are required")
        texts = body.get("texts") or []
        vectors = [[0.25 * (i + 1)] * 4 for i in range(len(texts))]
        tokens = sum(len(t.split()) for t in texts)
        return JSONResponse({
            "id": "co-embed-1", "texts": texts, "response_type": "embeddings_by_type",
            "embeddings": {"float": vectors},
            "meta": {"api_version": {"version": "2"}, "billed_units": {"input_tokens": tokens}},
        })

    async def rerank(request: Request) -> Response:
        body = await read(request, "rerank")
        if isinstance(body, Response):
            return body
        documents = body.get("documents")
        if not isinstance(documents, list) or not all(isinstance(d, str) for d in documents):
            return _error(400, "invalid request: documents must be a list of strings")
        query = set(str(body.get("query")).lower().split())
        scored = [(len(query & set(d.lower().split())) / (len(query) or 1), i)
                  for i, d in enumerate(documents)]
        scored.sort(key=lambda pair: (-pair[0], pair[1]))
        top = scored[: body.get("top_n") or len(scored)]
        return JSONResponse({
            "id": "co-rerank-1",
            "results": [{"index": i, "relevance_score": round(score, 4)} for score, i in top],
            "meta": {"api_version": {"version": "2"}, "billed_units": {"search_units": 1}},
        })

    app = Starlette(routes=[
        Route("/v2/chat", chat, methods=["POST"]),
        Route("/v2/embed", embed, methods=["POST"]),
        Route("/v2/rerank", rerank, methods=["POST"]),
    ])
    app.state.fake = state
    return app


def _event(data: dict[str, Any]) -> bytes:
    return f"event: {data['type']}\ndata: {json.dumps(data)}\n\n".encode()


async def _stream(body: dict[str, Any]) -> AsyncIterator[bytes]:
    messages = body["messages"]
    text = _last_user_text(messages)
    yield _event({"type": "message-start", "id": "co-stream-1", "delta": {"message": {
        "role": "assistant", "content": [], "tool_plan": "", "tool_calls": [],
        "citations": []}}})
    if _wants_tool(body):
        name = body["tools"][0]["function"]["name"]
        yield _event({"type": "tool-plan-delta", "delta": {"message": {
            "tool_plan": "I will look it up."}}})
        yield _event({"type": "tool-call-start", "index": 0, "delta": {"message": {
            "tool_calls": {"id": "lookup_fake1", "type": "function",
                           "function": {"name": name, "arguments": ""}}}}})
        arguments = json.dumps({"query": text})
        for i in range(0, len(arguments), 5):
            yield _event({"type": "tool-call-delta", "index": 0, "delta": {"message": {
                "tool_calls": {"function": {"arguments": arguments[i:i + 5]}}}}})
        yield _event({"type": "tool-call-end", "index": 0})
        finish, completion = "TOOL_CALL", 7
    else:
        words = f"Cohere says: {text}".split(" ")
        yield _event({"type": "content-start", "index": 0, "delta": {"message": {
            "content": {"type": "text", "text": ""}}}})
        for i, word in enumerate(words):
            yield _event({"type": "content-delta", "index": 0, "delta": {"message": {
                "content": {"text": word if i == 0 else " " + word}}}})
            if body["model"] == "fail-midstream":
                yield _event({"type": "message-end", "delta": {
                    "finish_reason": "ERROR", "error": "the model crashed"}})
                return
        yield _event({"type": "content-end", "index": 0})
        finish, completion = "COMPLETE", len(words)
    yield _event({"type": "message-end", "delta": {
        "finish_reason": finish, "usage": _usage(_words(messages), completion)}})


@dataclass
class Served:
    url: str
    state: FakeCohereState


@contextmanager
def running(state: FakeCohereState | None = None) -> Iterator[Served]:
    state = state or FakeCohereState()
    with serve(create_app(state)) as url:
        yield Served(url, state)
