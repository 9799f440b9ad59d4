"""A fake OpenAI API on a real socket, speaking its wire format.

Behaviour is chosen by the upstream model name, so a gateway config can point different
aliases at different behaviours of one server:

- ``fail-429``: 429 ``rate_limit_exceeded`` with ``retry-after: 7``
- ``fail-500``: 500 ``server_error``; ``fail-401``: 401 ``invalid_api_key``
- ``missing``: 404 ``model_not_found``
- ``context-small``: 400 ``context_length_exceeded``
- ``fail-midstream``: a streamed answer that breaks off after three chunks
- ``slow``: waits ``slow_seconds`` before answering (heartbeat tests)
- ``slow-watch``: like ``slow``, but counts in ``cancelled`` a caller that hangs up
- ``slow-stream``: streams one chunk, then waits ``slow_seconds`` (cancellation tests)
- ``stall-midstream``: streams three content chunks, then waits ``slow_seconds`` before
  the rest (a worker killed, or NATS lost, while the client already has content)
- ``fail-529``: 529 ``overloaded``
- ``reset``: closes the connection without answering
- ``fail-once``: 500 the first time a conversation is seen, an answer after that
- ``hang-once``: waits ``slow_seconds`` the first time a conversation is seen, answers at
  once after that (a worker killed mid-call, retried elsewhere)
- ``switch``: answers ``switch_status`` as an error while it is set, normally otherwise
- ``route-judge``: answers "Large." when the conversation says "tricky", "I cannot tell."
  when it says "unsure", a 500 when it says "explode", else "small"
- ``reasoner``: thinks first: ``reasoning_content`` (streamed too) and
  ``REASONING_TOKENS`` reasoning tokens counted in the completion tokens

Images and audio endpoints: :mod:`tests.fakes.openai_media`. The answers, usage counts
and streams the routes send: :mod:`tests.fakes.openai_answers` (re-exported here).

A ``stop`` sequence found in the answer ends it there (finish_reason ``stop``).

Embeddings by a model named ``concepts…`` are vectors over a small concept vocabulary
(:mod:`tests.fakes.concept_embeddings`): paraphrases close, other questions far. Anything
else answers normally. With ``tools`` and ``tool_choice`` not ``none`` the answer
calls the first tool, streaming its arguments in pieces; ``response_format`` json_object
or json_schema answers a JSON object.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.fakes import concept_embeddings, openai_media
from tests.fakes.openai_answers import (
    ANSWER,
    REASONING,
    REASONING_TOKENS,
    TEXT_ANSWER,
    TOOL_ARGS,
    _add_reasoning,
    _broken,
    _content,
    _prompt_tokens,
    _stream,
    _text_stream,
    _usage,
    _wants_tool,
)
from tests.fakes.server import serve

__all__ = ["ANSWER", "ECHOED_KEYS", "REASONING", "REASONING_TOKENS", "TEXT_ANSWER", "TOOL_ARGS",
           "FakeOpenAIState", "Served", "create_app", "running"]


# Secrets the ``echo-secrets`` model quotes back in its error message, besides the
# caller's Authorization header.
ECHOED_KEYS = ("anthropic-key-12345678", "sk-proj-Abcdefghijklmnop123456",
               "AIza" + "B" * 35, "gemini-url-key-98765")


@dataclass
class FakeOpenAIState:
    api_key: str = "sk-fake"
    slow_seconds: float = 30.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    cancelled: int = 0
    completed: int = 0
    # For ``switch``: an HTTP status to fail with, or None to answer.
    switch_status: int | None = None
    seen: set[str] = field(default_factory=set)
    # The client port of each chat request, so a test can tell which worker sent it.
    client_ports: dict[str, int] = field(default_factory=dict)


def _error(status: int, message: str, type_: str, code: str | None,
           headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def create_app(state: FakeOpenAIState | None = None) -> Starlette:
    state = state or FakeOpenAIState()

    def check_key(request: Request) -> Response | None:
        if request.headers.get("authorization") != f"Bearer {state.api_key}":
            return _error(401, "Incorrect API key provided.", "invalid_request_error",
                          "invalid_api_key")
        return None

    def first_time(body: dict[str, Any]) -> bool:
        conversation = json.dumps(body.get("messages"), sort_keys=True)
        if conversation in state.seen:
            return False
        state.seen.add(conversation)
        return True

    def scripted_failure(model: str) -> Response | None:
        if model == "switch" and state.switch_status is not None:
            return _error(state.switch_status, "switched off", "server_error", None)
        if model == "fail-529":
            return _error(529, "Overloaded", "overloaded_error", "overloaded")
        if model == "fail-429":
            return _error(429, "Rate limit reached for requests", "requests",
                          "rate_limit_exceeded", {"retry-after": "7"})
        if model == "fail-500":
            return _error(500, "The server had an error while processing your request.",
                          "server_error", None)
        if model == "fail-401":
            return _error(401, "Incorrect API key provided.", "invalid_request_error",
                          "invalid_api_key")
        if model == "missing":
            return _error(404, f"The model `{model}` does not exist or you do not have "
                          "access to it.", "invalid_request_error", "model_not_found")
        if model == "context-small":
            return _error(400, "This model's maximum context length is 10 tokens.",
                          "invalid_request_error", "context_length_exceeded")
        return None

    async def chat(request: Request) -> Response:
        if (denied := check_key(request)) is not None:
            return denied
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "invalid JSON", "invalid_request_error", None)
        state.requests.append(body)
        model = body.get("model")
        if not isinstance(model, str) or not body.get("messages"):
            return _error(400, "model and messages are required", "invalid_request_error",
                          None)
        if model == "echo-secrets":  # an upstream that quotes what it was sent
            return _error(400, "Bad request from you: authorization: "
                          f"{request.headers.get('authorization')}; also seen "
                          f"x-api-key: {ECHOED_KEYS[0]}, {ECHOED_KEYS[1]}, {ECHOED_KEYS[2]}, "
                          f"https://example.test/v1?key={ECHOED_KEYS[3]}&alt=sse",
                          "invalid_request_error", None)
        if (failure := scripted_failure(model)) is not None:
            return failure
        if request.client is not None:
            state.client_ports[json.dumps(body.get("messages"))] = request.client.port
        if model == "route-judge" and "explode" in json.dumps(body["messages"]):
            return _error(500, "judge failed", "server_error", None)
        if model == "reset":
            transport = getattr(getattr(request.receive, "__self__", None), "transport", None)
            if transport is not None:
                transport.abort()
                return Response(status_code=500)
            return StreamingResponse(_broken(), media_type="application/json")
        if model == "fail-once" and first_time(body):
            return _error(500, "transient failure", "server_error", None)
        if model == "slow" or (model == "hang-once" and first_time(body)):
            await asyncio.sleep(state.slow_seconds)
        if model == "slow-watch":  # notices its client leaving, as a real upstream does
            deadline = time.monotonic() + state.slow_seconds
            while time.monotonic() < deadline:
                if await request.is_disconnected():
                    state.cancelled += 1
                    return Response(status_code=499)
                await asyncio.sleep(0.05)
        if body.get("stream"):
            return StreamingResponse(_stream(body, state), media_type="text/event-stream")
        state.completed += 1
        message: dict[str, Any] = {"role": "assistant", "content": _content(body),
                                   "refusal": None, "annotations": []}
        finish = "stop"
        completion = len(message["content"].split())
        if _wants_tool(body):
            name = body["tools"][0]["function"]["name"]
            message["content"] = None
            message["tool_calls"] = [{"id": "call_fake1", "type": "function",
                                      "function": {"name": name, "arguments": TOOL_ARGS}}]
            finish = "tool_calls"
            completion = 9
        usage = _usage(_prompt_tokens(body), completion)
        if model == "reasoner":
            message["reasoning_content"] = REASONING
            _add_reasoning(usage)
        return JSONResponse({
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": i, "message": message, "logprobs": None,
                         "finish_reason": finish} for i in range(int(body.get("n") or 1))],
            "usage": usage,
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
        })

    async def embeddings(request: Request) -> Response:
        if (denied := check_key(request)) is not None:
            return denied
        body = await request.json()
        state.requests.append(body)
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        if str(body["model"]).startswith("concepts"):
            vectors = [concept_embeddings.embed(str(x)) for x in inputs]
        else:
            vectors = [[0.1 * (i + 1)] * 4 for i in range(len(inputs))]
        data = [{"object": "embedding", "index": i, "embedding": vector}
                for i, vector in enumerate(vectors)]
        tokens = sum(len(str(x).split()) for x in inputs)
        return JSONResponse({"object": "list", "data": data, "model": body["model"],
                             "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    async def completions(request: Request) -> Response:
        """Legacy text completions: the prompt's words count as its tokens."""
        if (denied := check_key(request)) is not None:
            return denied
        body = await request.json()
        state.requests.append(body)
        model, prompt = body.get("model"), body.get("prompt")
        if not isinstance(model, str) or prompt is None:
            return _error(400, "model and prompt are required", "invalid_request_error", None)
        if (failure := scripted_failure(model)) is not None:
            return failure
        prompt_tokens = len(str(prompt).split())
        if body.get("stream"):
            return StreamingResponse(_text_stream(body, prompt_tokens),
                                     media_type="text/event-stream")
        return JSONResponse({
            "id": "cmpl-fake", "object": "text_completion", "created": int(time.time()),
            "model": model, "system_fingerprint": "fp_fake",
            "choices": [{"index": 0, "text": TEXT_ANSWER, "logprobs": None,
                         "finish_reason": "stop"}],
            "usage": _usage(prompt_tokens, len(TEXT_ANSWER.split())),
        })

    async def moderations(request: Request) -> Response:
        """Flags any input with the word ``kill`` as violence; reports no usage, as OpenAI."""
        if (denied := check_key(request)) is not None:
            return denied
        body = await request.json()
        state.requests.append(body)
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        results = []
        for item in inputs:
            flagged = "kill" in json.dumps(item).lower()
            results.append({"flagged": flagged,
                            "categories": {"violence": flagged, "harassment": False},
                            "category_scores": {"violence": 0.97 if flagged else 0.01,
                                                "harassment": 0.01}})
        return JSONResponse({"id": "modr-fake", "model": body.get("model"), "results": results})

    async def rerank(request: Request) -> Response:
        """vLLM's and Jina's rerank: scored by words shared with the query, best first."""
        if (denied := check_key(request)) is not None:
            return denied
        body = await request.json()
        state.requests.append(body)
        query = set(str(body["query"]).lower().split())
        texts = [d if isinstance(d, str) else d["text"] for d in body["documents"]]
        scored = sorted(((len(query & set(t.lower().split())) / (len(query) or 1), i)
                         for i, t in enumerate(texts)), key=lambda p: (-p[0], p[1]))
        top = scored[: body.get("top_n") or len(scored)]
        tokens = sum(len(t.split()) for t in texts) + len(query) * len(texts)
        return JSONResponse({"id": "rerank-fake", "model": body["model"],
                             "usage": {"total_tokens": tokens},
                             "results": [{"index": i, "document": {"text": texts[i]},
                                          "relevance_score": score} for score, i in top]})

    app = Starlette(routes=[
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/embeddings", embeddings, methods=["POST"]),
        Route("/v1/moderations", moderations, methods=["POST"]),
        Route("/v1/rerank", rerank, methods=["POST"]),
        *openai_media.routes(state, check_key),
    ])
    app.state.fake = state
    return app


@dataclass
class Served:
    """A fake OpenAI server running on a loopback port, and the state its tests drive."""

    url: str
    state: FakeOpenAIState


@contextmanager
def running(state: FakeOpenAIState) -> Iterator[Served]:
    with serve(create_app(state)) as url:
        yield Served(url, state)
