"""What a batch item leaves in the results bucket: its output or error line.

An answer gives an output line, a failure an error line, and an answer too large for a NATS
message the error line stored in its place.
"""

from __future__ import annotations

from schemas.batch import BatchItem, ItemResult, output_line
from schemas.frames import DoneFrame, ErrorFrame


def item_result(item: BatchItem, frame: DoneFrame | ErrorFrame) -> ItemResult:
    """An item's result from the last frame of its call."""
    request_id = item.request.request_id
    usage = frame.usage
    tokens = {
        "prompt_tokens": usage.prompt_tokens if usage else 0,
        "completion_tokens": usage.completion_tokens if usage else 0,
        "cached_tokens": usage.cached_tokens if usage else 0,
        "reasoning_tokens": usage.reasoning_tokens if usage else 0,
    }
    if isinstance(frame, DoneFrame):
        body = dict(frame.response or {})
        answer = body.get("usage")
        if frame.cost is not None and isinstance(answer, dict):
            body["usage"] = {**answer, "cost": float(frame.cost)}
        line = output_line(item.batch_id, item.custom_id, request_id, 200, body)
        return ItemResult(line=item.line, custom_id=item.custom_id, ok=True, output=line,
                          **tokens)
    error = frame.error
    body = {"error": {"message": error.message, "type": error.openai_type,
                      "param": error.param, "code": error.code}}
    line = output_line(item.batch_id, item.custom_id, request_id, error.status, body)
    return ItemResult(line=item.line, custom_id=item.custom_id, ok=False, output=line, **tokens)


def too_large(item: BatchItem, result: ItemResult, size: int, limit: int) -> ItemResult:
    """What is stored instead of a ``result`` larger than a NATS message: an error line
    that keeps the paid call's tokens."""
    body = {"error": {
        "message": f"The answer ({size:,} bytes) is larger than the {limit:,} bytes a message "
                   "may carry on this gateway's NATS (its max_payload setting); ask for less "
                   "at a time (fewer inputs, fewer choices).",
        "type": "invalid_request_error", "param": None, "code": "response_too_large"}}
    line = output_line(item.batch_id, item.custom_id, item.request.request_id, 400, body)
    return result.model_copy(update={"ok": False, "output": line})
