"""Responses lines in a batch: translated to chat at submit, answers turned back into
Response objects for the output file (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from ingress.batch.responses_lines import LineRefused, as_responses, to_chat_line
from schemas.batch import ItemResult


def test_a_line_becomes_the_chat_request_a_worker_runs() -> None:
    chat = to_chat_line({"model": "gpt-4o-mini", "instructions": "Be brief.",
                         "input": "Hi there", "max_output_tokens": 20,
                         "reasoning": {"effort": "low"}})
    assert chat == {"model": "gpt-4o-mini", "max_completion_tokens": 20,
                    "reasoning_effort": "low",
                    "messages": [{"role": "system", "content": "Be brief."},
                                 {"role": "user", "content": "Hi there"}]}


@pytest.mark.parametrize(("body", "param"), [
    ({"model": "m", "input": "x", "previous_response_id": "resp_1"}, "previous_response_id"),
    ({"model": "m", "input": "x", "stream": True}, "stream"),
    ({"model": "m"}, "input"),
    ({"model": "m", "input": "x", "tools": [{"type": "web_search"}]}, "tools"),
])
def test_a_line_chat_cannot_express_is_refused_naming_its_field(
        body: dict[str, object], param: str) -> None:
    with pytest.raises(LineRefused) as refused:
        to_chat_line(body)
    assert refused.value.param is not None and refused.value.param.startswith(param)


def _result(line: int, body: dict[str, Any], ok: bool = True) -> ItemResult:
    return ItemResult(line=line, custom_id=f"c{line}", ok=ok, output={
        "id": f"batch_req_{line}", "custom_id": f"c{line}",
        "response": {"status_code": 200 if ok else 400, "request_id": "r", "body": body},
        "error": None})


def test_answers_become_responses_and_errors_stay_as_they_are() -> None:
    completion: dict[str, Any] = {
        "id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o-mini",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "Hello!"}}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}
    failed = _result(2, {"error": {"message": "bad", "type": "invalid_request_error"}}, False)
    out = as_responses([_result(1, completion), failed],
                       {1: {"model": "gpt-4o-mini", "input": "Hi", "instructions": "Be brief."}})
    response = out[0].output["response"]["body"]
    assert response["object"] == "response" and response["status"] == "completed"
    assert response["id"].startswith("resp_") and response["instructions"] == "Be brief."
    part = response["output"][-1]["content"][0]
    assert (part["type"], part["text"]) == ("output_text", "Hello!")
    assert response["usage"]["input_tokens"] == 5 and response["usage"]["output_tokens"] == 2
    assert out[0].output["custom_id"] == "c1" and out[1] == failed
