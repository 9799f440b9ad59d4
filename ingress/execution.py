"""Trying the deployments of a plan until one starts answering.

Each attempt is admitted first (rate limits and budget reservation), then published. An
attempt may fail over to the next deployment only before the client has seen any content:
once a chunk is relayed, the answer belongs to that deployment.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from ingress.dispatch import Dispatcher, Frame, NoWorker, Reply, WorkerSilent
from ingress.errors import ApiError
from ingress.gatekeeper import DeploymentBusy, Ticket
from schemas.config import Deployment
from schemas.errors import ErrorInfo, ErrorKind
from schemas.frames import ErrorFrame, FrameKind
from schemas.infer import Endpoint, InferRequest

log = logging.getLogger("aigw.ingress")

Admit = Callable[[Deployment, int], Awaitable[Ticket]]
Settle = Callable[[Ticket, int, Decimal | None], None]


@dataclass(frozen=True, slots=True)
class Started:
    """An attempt whose first meaningful frame has arrived."""

    reply: Reply
    first: Frame
    deployment: Deployment
    ticket: Ticket


@dataclass(frozen=True, slots=True)
class Caller:
    key_id: str | None = None
    team_id: str | None = None
    end_user: str | None = None
    metadata: dict[str, str] | None = None


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
    admit: Admit,
    settle: Settle,
    caller: Caller = Caller(),
) -> Started:
    """Run attempts along ``plan``; return the first that answers or succeeds, or raise the
    last failure as an :class:`ApiError`."""
    last: ErrorInfo | None = None
    busy: str | None = None
    for attempt, deployment in enumerate(plan):
        try:
            ticket = await admit(deployment, attempt)
        except DeploymentBusy as exc:
            busy = str(exc)
            continue
        request = InferRequest(
            request_id=request_id,
            attempt=attempt,
            endpoint=endpoint,
            deployment_id=deployment.id,
            model_alias=model_alias,
            body=body,
            stream=stream,
            heartbeat_interval=heartbeat_interval,
            key_id=caller.key_id,
            team_id=caller.team_id,
            end_user=caller.end_user,
            metadata=caller.metadata or {},
        )
        try:
            reply = await dispatcher.send(request, deployment.provider)
            frame = await reply.next_content(heartbeat_timeout)
        except NoWorker as exc:
            reply.close()
            settle(ticket, 0, Decimal(0))
            last = ErrorInfo.of(ErrorKind.NO_WORKER, str(exc), code="no_worker")
            continue
        except WorkerSilent:
            await reply.cancel()
            # The worker may have called the upstream: hold the reservation as spent.
            settle(ticket, 0, ticket.reserve_cost)
            last = ErrorInfo.of(
                ErrorKind.TIMEOUT,
                f"the worker for {deployment.provider} stopped responding",
                code="worker_timeout",
            )
            continue
        except BaseException:
            settle(ticket, 0, ticket.reserve_cost)
            raise
        if frame.kind is FrameKind.ERROR:
            reply.close()
            failure = ErrorFrame.model_validate_json(frame.body)
            settle(ticket, failure.usage.total_tokens if failure.usage else 0, failure.cost)
            last = failure.error
            if failure.error.retryable and failure.chunks_sent == 0:
                log.info(
                    "attempt %d of %s on %s failed (%s), trying the next deployment",
                    attempt, request_id, deployment.id, failure.error.kind.value,
                )
                continue
            raise ApiError.from_info(failure.error)
        return Started(reply=reply, first=frame, deployment=deployment, ticket=ticket)
    if last is None:
        raise ApiError(429, f"every deployment of {model_alias} is at its rate limit ({busy})",
                       type="requests", code="rate_limit_exceeded",
                       headers={"retry-after": "1"})
    raise ApiError.from_info(last)
