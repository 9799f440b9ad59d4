"""A fake Gemini API (``generativelanguage`` v1beta) that speaks the real wire format.

It checks ``x-goog-api-key`` like Google does (a wrong key is a 400 INVALID_ARGUMENT with
reason API_KEY_INVALID, a missing one a 403), rejects request fields Gemini does not know
and contents it would refuse, and answers deterministically. The last request is kept on
``app.state`` (``last_request``, ``last_headers``, ``last_path``, ``last_query``) and every
request body in ``app.state.requests``.

Failures are scripted by model name:

=====================  ==================================================================
``missing-model``      404 NOT_FOUND
``fail-429``           429 RESOURCE_EXHAUSTED with a RetryInfo ``retryDelay`` of "12s"
``fail-500``           500 INTERNAL
``fail-503``           503 UNAVAILABLE
``fail-504``           504 DEADLINE_EXCEEDED
``fail-context``       400 INVALID_ARGUMENT: the input token count exceeds the maximum
``fail-echo-key``      400 INVALID_ARGUMENT whose message quotes the key it was sent
``fail-midstream``     streams one text chunk, then the connection breaks
``fail-midstream-error``  streams one text chunk, then an ``{"error": ...}`` event
``truncated-stream``   streams text and ends cleanly without any finishReason
=====================  ==================================================================

Answers are steered by words in the last user turn:

* ``USE_TOOL`` with tools declared: a ``functionCall`` of the first declared function,
  carrying a ``thoughtSignature``.
* ``THINK``: a thought part before the answer and a ``thoughtsTokenCount``.
* ``CACHED``: ``cachedContentTokenCount`` is half the prompt tokens (rounded down), as if
  that much came from Gemini's context cache.
* ``BLOCK_PROMPT``: no candidates, ``promptFeedback.blockReason`` SAFETY.
* ``UNSAFE``: finishReason SAFETY and no text.
* a function result as the last turn: the answer quotes the result.

``maxOutputTokens`` cuts the answer (finishReason MAX_TOKENS), ``candidateCount`` gives
several candidates, and ``responseMimeType: application/json`` makes the answer JSON.
``thinkingConfig`` is checked (``thinkingBudget`` -1..32768, ``includeThoughts`` a bool);
``includeThoughts: true`` gives the thought part as ``THINK`` does, and a
``thinkingBudget`` of 0 reports no thoughts at all. Tokens are whitespace-separated words.

The answers it builds, streamed or not, and its embeddings: :mod:`tests.fakes.gemini_answers`
(re-exported here).
"""

from __future__ import annotations

import json
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.fakes.gemini_answers import (
    THOUGHT_SIGNATURE,
    THOUGHT_TOKENS,
    TOOL_ARGS,
    _answer,
    _stream,
    _stream_chunks,
    _vector,
)

__all__ = ["THOUGHT_SIGNATURE", "THOUGHT_TOKENS", "TOOL_ARGS", "create_app", "rpc_error"]


_TOP_FIELDS = {
    "contents", "systemInstruction", "tools", "toolConfig", "generationConfig",
    "safetySettings", "cachedContent", "labels",
}  # fmt: skip
_GENERATION_FIELDS = {
    "temperature", "topP", "topK", "maxOutputTokens", "candidateCount", "stopSequences",
    "seed", "presencePenalty", "frequencyPenalty", "responseMimeType", "responseSchema",
    "responseJsonSchema", "thinkingConfig", "responseLogprobs", "logprobs",
    "responseModalities", "mediaResolution",
}  # fmt: skip
_DATA_FIELDS = {
    "text", "inlineData", "fileData", "functionCall", "functionResponse", "executableCode",
    "codeExecutionResult",
}  # fmt: skip
_PART_METADATA = {"thought", "thoughtSignature", "videoMetadata"}

_FAILURES: dict[str, tuple[int, str, str]] = {
    "missing-model": (
        404,
        "NOT_FOUND",
        "models/missing-model is not found for API version v1beta, or is not supported for "
        "generateContent. Call ListModels to see the list of available models and their "
        "supported methods.",
    ),
    "fail-429": (
        429,
        "RESOURCE_EXHAUSTED",
        "You exceeded your current quota, please check your plan and billing details.",
    ),
    "fail-500": (
        500,
        "INTERNAL",
        "An internal error has occurred. Please retry or report in "
        "https://developers.generativeai.google/guide/troubleshooting",
    ),
    "fail-503": (503, "UNAVAILABLE", "The model is overloaded. Please try again later."),
    "fail-504": (504, "DEADLINE_EXCEEDED", "Deadline expired before operation could complete."),
    "fail-context": (
        400,
        "INVALID_ARGUMENT",
        "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).",
    ),
}


def rpc_error(
    http_status: int, status: str, message: str, details: list[dict[str, Any]] | None = None
) -> JSONResponse:
    error: dict[str, Any] = {"code": http_status, "message": message, "status": status}
    if details:
        error["details"] = details
    return JSONResponse({"error": error}, status_code=http_status)


def _bad_key() -> JSONResponse:
    return rpc_error(
        400,
        "INVALID_ARGUMENT",
        "API key not valid. Please pass a valid API key.",
        [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"},
            },
            {
                "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
                "locale": "en-US",
                "message": "API key not valid. Please pass a valid API key.",
            },
        ],
    )


def _scripted_failure(model: str, api_key: str) -> JSONResponse | None:
    if model == "fail-echo-key":
        return rpc_error(400, "INVALID_ARGUMENT", f"Request with key {api_key} was malformed.")
    if model not in _FAILURES:
        return None
    http_status, status, message = _FAILURES[model]
    details: list[dict[str, Any]] = []
    if status == "RESOURCE_EXHAUSTED":
        details = [
            {
                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [
                    {
                        "quotaMetric": "generativelanguage.googleapis.com/generate_content_"
                        "free_tier_requests",
                        "quotaId": "GenerateRequestsPerMinute",
                    }
                ],
            },
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "12s"},
        ]
    return rpc_error(http_status, status, message, details)


def _validate(body: Any) -> str | None:
    """Gemini's complaint about a generateContent body, or None if it would accept it."""
    if not isinstance(body, dict):
        return "Invalid JSON payload received."
    for name in body:
        if name not in _TOP_FIELDS:
            return f'Invalid JSON payload received. Unknown name "{name}": Cannot find field.'
    for name in body.get("generationConfig") or {}:
        if name not in _GENERATION_FIELDS:
            return (
                f'Invalid JSON payload received. Unknown name "{name}" at '
                "'generation_config': Cannot find field."
            )
    thinking = (body.get("generationConfig") or {}).get("thinkingConfig")
    if thinking is not None:
        problem = _validate_thinking(thinking)
        if problem:
            return problem
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        return "* GenerateContentRequest.contents: contents is not specified\n"
    for i, content in enumerate(contents):
        if content.get("role", "user") not in ("user", "model"):
            return f"Please use a valid role: user, model. (contents[{i}])"
        problem = _validate_parts(content.get("parts"), f"contents[{i}]")
        if problem:
            return problem
    system = body.get("systemInstruction")
    if system is not None:
        return _validate_parts(system.get("parts"), "system_instruction")
    return None


def _validate_thinking(config: Any) -> str | None:
    if not isinstance(config, dict):
        return "Invalid value at 'generation_config.thinking_config'"
    for name in config:
        if name not in ("thinkingBudget", "includeThoughts", "thinkingLevel"):
            return (f'Invalid JSON payload received. Unknown name "{name}" at '
                    "'generation_config.thinking_config': Cannot find field.")
    budget = config.get("thinkingBudget")
    if budget is not None and (
        not isinstance(budget, int) or isinstance(budget, bool) or not -1 <= budget <= 32768
    ):
        return "The thinking budget is invalid: it must be -1 or between 0 and 32768."
    if "includeThoughts" in config and not isinstance(config["includeThoughts"], bool):
        return "Invalid value at 'generation_config.thinking_config.include_thoughts' (TYPE_BOOL)"
    return None


def _validate_parts(parts: Any, where: str) -> str | None:
    if not isinstance(parts, list) or not parts:
        return f"* GenerateContentRequest.{where}.parts: contents.parts must not be empty.\n"
    for j, part in enumerate(parts):
        data = [k for k in part if k in _DATA_FIELDS]
        unknown = [k for k in part if k not in _DATA_FIELDS and k not in _PART_METADATA]
        if unknown:
            return f'Invalid JSON payload received. Unknown name "{unknown[0]}" at {where}.'
        if len(data) != 1:
            return f"* GenerateContentRequest.{where}.parts[{j}].data: required oneof field."
        if "inlineData" in part and not {"mimeType", "data"} <= set(part["inlineData"]):
            return f"* GenerateContentRequest.{where}.parts[{j}].inline_data: incomplete."
        call = part.get("functionCall")
        if call is not None and (not call.get("name") or not isinstance(call.get("args"), dict)):
            return f"* GenerateContentRequest.{where}.parts[{j}].function_call: bad call."
        result = part.get("functionResponse")
        if result is not None and (
            not result.get("name") or not isinstance(result.get("response"), dict)
        ):
            return f"* GenerateContentRequest.{where}.parts[{j}].function_response: bad result."
    return None


def _embeddings(body: Any, model: str) -> Response:
    requests = body.get("requests") if isinstance(body, dict) else None
    if not isinstance(requests, list) or not requests:
        return rpc_error(400, "INVALID_ARGUMENT", "* BatchEmbedContentsRequest.requests: empty")
    embeddings: list[dict[str, Any]] = []
    for i, request in enumerate(requests):
        if request.get("model") != f"models/{model}":
            return rpc_error(
                400,
                "INVALID_ARGUMENT",
                f"* BatchEmbedContentsRequest.requests[{i}].model: unexpected model name "
                f"format or model does not match the batch model models/{model}",
            )
        parts = (request.get("content") or {}).get("parts") or []
        if not parts or not all("text" in p for p in parts):
            return rpc_error(400, "INVALID_ARGUMENT", f"requests[{i}].content.parts: required")
        text = " ".join(p["text"] for p in parts)
        size = int(request.get("outputDimensionality") or 8)
        embeddings.append({"values": _vector(text, size)})
    return JSONResponse({"embeddings": embeddings})


def create_app(api_key: str = "test-gemini-key") -> Starlette:
    """The fake Gemini API, accepting only ``api_key``."""

    async def models(request: Request) -> Response:
        target = request.path_params["target"]
        model, _, method = target.rpartition(":")
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        app.state.requests.append(body)
        app.state.last_request = body
        app.state.last_headers = dict(request.headers)
        app.state.last_path = request.url.path
        app.state.last_query = dict(request.query_params)

        sent_key = request.headers.get("x-goog-api-key")
        if sent_key is None:
            return rpc_error(
                403,
                "PERMISSION_DENIED",
                "Method doesn't allow unregistered callers (callers without established "
                "identity). Please use API Key or other form of API consumer identity.",
            )
        if sent_key != api_key:
            return _bad_key()
        if method not in ("generateContent", "streamGenerateContent", "batchEmbedContents"):
            return rpc_error(404, "NOT_FOUND", f"Method {method!r} not found.")
        failure = _scripted_failure(model, sent_key)
        if failure is not None:
            return failure
        if method == "batchEmbedContents":
            return _embeddings(body, model)
        problem = _validate(body)
        if problem or not isinstance(body, dict):
            return rpc_error(400, "INVALID_ARGUMENT", problem or "Invalid JSON payload received.")

        app.state.served += 1
        answer = _answer(body, model, f"fake-{app.state.served}")
        if method == "generateContent":
            return JSONResponse(answer)
        chunks = _stream_chunks(answer, model)
        if request.query_params.get("alt") != "sse":
            # Without alt=sse Gemini streams one JSON array instead of events.
            return JSONResponse(chunks)
        return StreamingResponse(_stream(chunks, model), media_type="text/event-stream")

    app = Starlette(routes=[Route("/v1beta/models/{target}", models, methods=["POST"])])
    app.state.requests = []
    app.state.served = 0
    app.state.last_request = None
    app.state.last_headers = {}
    app.state.last_path = None
    app.state.last_query = {}
    return app
