"""The batch runner's pure parts: the room interactive load leaves for batch items, an
answer or an error as an output line, and the backoff between attempts."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, cast

from schemas.batch import (
    BatchItem,
)
from schemas.errors import ErrorInfo, ErrorKind
from schemas.frames import DoneFrame, ErrorFrame
from schemas.infer import Endpoint, InferRequest
from schemas.usage import TokenUsage
from workers.batch.attempts import backoff
from workers.batch.results import item_result as _result
from workers.batch.runner import CONCURRENCY, BatchRunner
from workers.service import WorkerService


class _Service:
    in_flight = 0


def _runner(concurrency: int) -> tuple[BatchRunner, _Service]:
    service = _Service()
    return BatchRunner("openai", cast(WorkerService, service), concurrency), service


def test_batch_items_wait_while_interactive_load_is_high() -> None:
    runner, service = _runner(100)
    assert runner._room() == CONCURRENCY
    service.in_flight = 49
    assert runner._room() == CONCURRENCY
    service.in_flight = 50  # half the worker's concurrency is interactive: batch waits
    assert runner._room() == 0


def test_batch_never_takes_more_than_the_worker_concurrency() -> None:
    runner, service = _runner(4)
    assert runner._room() == 4
    service.in_flight = 1
    assert runner._room() == 3


ITEM = BatchItem(batch_id="batch_1", line=3, custom_id="c", request=InferRequest(
    request_id="batch_1-c", endpoint=Endpoint.CHAT, deployment_id="d", model_alias="m",
    body={}, batch_id="batch_1"))


def test_an_answer_becomes_an_output_line_with_its_cost() -> None:
    response: dict[str, Any] = {"id": "x", "usage": {"prompt_tokens": 3}}
    result = _result(ITEM, DoneFrame(usage=TokenUsage(prompt_tokens=3, completion_tokens=4),
                                     response=response, cost=Decimal("0.5")))
    assert result.ok and (result.line, result.prompt_tokens, result.completion_tokens) == (3, 3, 4)
    assert result.output["response"]["status_code"] == 200
    assert result.output["response"]["body"]["usage"] == {"prompt_tokens": 3, "cost": 0.5}
    assert response["usage"] == {"prompt_tokens": 3}


def test_an_error_becomes_an_error_line_with_openai_error_body() -> None:
    info = ErrorInfo.of(ErrorKind.INVALID_REQUEST, "too long", code="context_length_exceeded")
    result = _result(ITEM, ErrorFrame(error=info))
    assert not result.ok
    response = result.output["response"]
    assert response["status_code"] == 400
    assert response["body"]["error"] == {"message": "too long", "type": "invalid_request_error",
                                         "param": None, "code": "context_length_exceeded"}


def test_backoff_follows_the_provider_hint_else_doubles() -> None:
    hinted = ErrorInfo.of(ErrorKind.RATE_LIMIT, "slow down", retry_after=7)
    plain = ErrorInfo.of(ErrorKind.SERVER, "oops")
    assert backoff(1, hinted) == 7
    assert [backoff(n, plain) for n in (1, 2, 3, 6)] == [0.5, 1.0, 2.0, 8.0]
