"""An answer too large for one NATS message ends the attempt with a clear, non-failover
error that still carries the call's usage (the upstream was paid)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from schemas.config import parse_config
from schemas.frames import KIND_HEADER, SEQ_HEADER, ErrorFrame, FrameKind
from schemas.infer import Endpoint, InferRequest
from schemas.usage import TokenUsage
from workers.attempt import FrameTooLarge
from workers.providers.base import Completion, StreamItem, UpstreamCall
from workers.service import WorkerService

LIMIT = 1000


class BigAnswers:
    """A provider stand-in whose every answer is larger than the bus allows."""

    async def complete(self, call: UpstreamCall) -> Completion:
        return Completion(response={"data": "x" * 5000},
                          usage=TokenUsage(prompt_tokens=7, completion_tokens=3))

    async def embed(self, call: UpstreamCall) -> Completion:
        return await self.complete(call)

    async def stream(self, call: UpstreamCall) -> AsyncIterator[StreamItem]:
        yield TokenUsage()


async def test_a_done_frame_over_the_limit_becomes_a_response_too_large_error() -> None:
    config = parse_config(
        {"model_list": [{"model_name": "e", "litellm_params": {"model": "openai/emb"}}]}, {})
    sent: list[tuple[dict[str, str], bytes]] = []

    async def publish(subject: str, body: bytes, headers: dict[str, str]) -> None:
        if len(body) > LIMIT:
            raise FrameTooLarge(len(body), LIMIT)
        sent.append((headers, body))

    service = WorkerService("openai", BigAnswers(), config, publish)
    request = InferRequest(request_id="r", endpoint=Endpoint.EMBEDDINGS,
                           deployment_id=config.deployments[0].id, model_alias="e",
                           body={"input": ["a"] * 3})
    await service.handle(request.model_dump_json().encode(), "reply")
    [(beat, _), (headers, body)] = sent
    assert (beat[KIND_HEADER], beat[SEQ_HEADER]) == (FrameKind.HEARTBEAT.value, "1")
    assert headers[KIND_HEADER] == FrameKind.ERROR.value
    assert headers[SEQ_HEADER] == "2"  # the refused frame used no number: no gap
    frame = ErrorFrame.model_validate_json(body)
    assert frame.error.code == "response_too_large"
    assert frame.error.status == 400
    assert not frame.error.retryable
    assert frame.usage == TokenUsage(prompt_tokens=7, completion_tokens=3)
