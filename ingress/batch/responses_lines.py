"""Batches of ``/v1/responses`` lines, which run as chat requests.

At submit time :func:`to_chat_line` turns each line's Responses body into the chat body a
worker runs (``previous_response_id`` is refused: a batch line cannot continue a stored
conversation). When the output file is written, :func:`as_responses` turns each answered
line's chat completion back into a Response object, echoing what its line asked for (the
input file is read again for that), as OpenAI's output lines for this endpoint hold. Pure.
"""

from __future__ import annotations

from typing import Any

from ingress.protocols.responses import Unsupported, from_chat, input_items, new_id, shell
from ingress.protocols.responses import to_chat as chat_body
from schemas.batch import ItemResult


class LineRefused(ValueError):
    def __init__(self, message: str, param: str | None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def to_chat_line(body: dict[str, Any]) -> dict[str, Any]:
    """The chat body for one Responses line, or :class:`LineRefused`."""
    if body.get("previous_response_id"):
        raise LineRefused("previous_response_id is not supported in batches: a line "
                          "carries its whole input", "previous_response_id")
    if body.get("stream"):
        raise LineRefused("Batch requests cannot be streamed.", "stream")
    model = body.get("model")
    try:
        return chat_body(body, str(model), input_items(body.get("input")))
    except Unsupported as exc:
        raise LineRefused(exc.message, exc.param) from None


def as_responses(results: list[ItemResult], bodies: dict[int, dict[str, Any]]) -> list[ItemResult]:
    """``results`` with each answered line's chat completion turned into a Response."""
    out: list[ItemResult] = []
    for result in results:
        response = result.output.get("response") if result.ok else None
        completion = response.get("body") if isinstance(response, dict) else None
        if not isinstance(response, dict) or not isinstance(completion, dict) or (
                completion.get("object") != "chat.completion"):
            out.append(result)
            continue
        body = bodies.get(result.line, {})
        base = shell(new_id("resp"), body, str(body.get("model") or completion.get("model")))
        answer = from_chat(base, completion)
        out.append(result.model_copy(update={"output": {
            **result.output, "response": {**response, "body": answer}}}))
    return out
