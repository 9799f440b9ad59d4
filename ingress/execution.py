"""Trying the deployments of a plan until one starts answering.

An attempt may fail over to the next deployment only before the client has seen any
content: once a chunk is relayed, the answer belongs to that deployment.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from ingress.dispatch import Dispatcher, Frame, NoWorker, Reply, WorkerSilent
from ingress.errors import ApiError
from schemas.config import Deployment
from schemas.errors import ErrorInfo, ErrorKind
from schemas.frames import ErrorFrame, FrameKind
from schemas.infer import Endpoint, InferRequest

log = logging.getLogger("aigw.ingress")


@dataclass(frozen=True, slots=True)
class Started:
    """An attempt whose first meaningful frame has arrived."""

    reply: Reply
    first: Frame
    deployment: Deployment


async def start(
    dispatcher: Dispatcher,
    plan: list[Deployment],
    *,
    request_id: str,
    endpoint: Endpoint,
    model_alias: str,
    body: dict[str, Any],
    stream: bool,
    heartbeat_interval: float,
    heartbeat_timeout: float,
) -> Started:
    """Run attempts along ``plan``; return the first that answers or succeeds, or raise the
    last failure as an :class:`ApiError`."""
    last: ErrorInfo | None = None
    for attempt, deployment in enumerate(plan):
        request = InferRequest(
            request_id=request_id,
            attempt=attempt,
            endpoint=endpoint,
            deployment_id=deployment.id,
            model_alias=model_alias,
            body=body,
            stream=stream,
            heartbeat_interval=heartbeat_interval,
        )
        reply = await dispatcher.send(request, deployment.provider)
        try:
            frame = await reply.next_content(heartbeat_timeout)
        except NoWorker as exc:
            reply.close()
            last = ErrorInfo.of(ErrorKind.NO_WORKER, str(exc), code="no_worker")
            continue
        except WorkerSilent:
            await reply.cancel()
            last = ErrorInfo.of(
                ErrorKind.TIMEOUT,
                f"the worker for {deployment.provider} stopped responding",
                code="worker_timeout",
            )
            continue
        if frame.kind is FrameKind.ERROR:
            reply.close()
            failure = ErrorFrame.model_validate_json(frame.body)
            last = failure.error
            if failure.error.retryable and failure.chunks_sent == 0:
                log.info(
                    "attempt %d of %s on %s failed (%s), trying the next deployment",
                    attempt, request_id, deployment.id, failure.error.kind.value,
                )
                continue
            raise ApiError.from_info(failure.error)
        return Started(reply=reply, first=frame, deployment=deployment)
    assert last is not None, "a plan is never empty"
    raise ApiError.from_info(last)
