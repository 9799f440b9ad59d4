"""Asking an ingress to admit a batch item's attempt, and settling it after.

Interactive attempts are admitted by the ingress before they are sent; batch items start
in the worker, so it asks (:mod:`schemas.batch_admission`). While a limit says *wait*, the
item waits here, holding one of the batch runner's slots and none of the interactive
ones. With no ingress to answer (all restarting), it waits too: items are never run
unchecked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

import nats.errors
from nats.aio.client import Client
from pydantic import ValidationError

from schemas import subjects
from schemas.batch_admission import AdmitAnswer, AdmitAsk, SettleNote, Verdict
from schemas.errors import ErrorInfo
from schemas.frames import DoneFrame, ErrorFrame
from schemas.infer import Endpoint, InferRequest

log = logging.getLogger("aigw.worker")

ASK_TIMEOUT = 2.0
NOBODY_WAIT = 1.0  # no ingress answered: ask again after this


def admission_id(request: InferRequest) -> str:
    return f"{request.request_id}:{request.attempt}"


@dataclass(frozen=True, slots=True)
class Route:
    """What the ingress needs to route an item's attempt: the asking worker's provider,
    where the item failed so far and how it failed last, and how often it moved."""

    provider: str
    failed: tuple[str, ...] = ()
    last_error: ErrorInfo | None = None
    moves: int = 0


class AdmissionClient:
    def __init__(self, nc: Client) -> None:
        self._nc = nc
        self._unanswered = False

    async def _ask(self, data: bytes) -> AdmitAnswer:
        try:
            msg = await self._nc.request(subjects.ADMIT, data, timeout=ASK_TIMEOUT)
            answer = AdmitAnswer.model_validate_json(msg.data)
        except (nats.errors.Error, TimeoutError, ValidationError) as exc:
            if not self._unanswered:
                log.warning("no ingress admits batch items (%s): items wait", exc)
            self._unanswered = True
            return AdmitAnswer(verdict=Verdict.WAIT, retry_after=NOBODY_WAIT)
        self._unanswered = False
        return answer

    async def admit(self, request: InferRequest,
                    stopping: Callable[[], bool] = lambda: False,
                    route: Route | None = None) -> AdmitAnswer | None:
        """The ingress's final word on ``request`` (admitted, refused, or with ``route``
        moved or exhausted), after as many waits as its limits ask for; None if the worker
        began stopping meanwhile."""
        routing: dict[str, object] = {}
        if route is not None:
            routing = {"model_alias": request.model_alias, "batch_id": request.batch_id,
                       "provider": route.provider, "failed": route.failed,
                       "last_error": route.last_error, "moves": route.moves}
        data = AdmitAsk(
            admission_id=admission_id(request), key_id=request.key_id,
            deployment_id=request.deployment_id, body=request.body,
            generates=request.endpoint not in (Endpoint.EMBEDDINGS, Endpoint.MODERATIONS),
            **routing,
        ).model_dump_json().encode()
        while not stopping():
            answer = await self._ask(data)
            if answer.verdict is not Verdict.WAIT:
                return answer
            await asyncio.sleep(answer.retry_after)
        return None

    async def settle(self, answer: AdmitAnswer, request: InferRequest,
                     frame: DoneFrame | ErrorFrame | None) -> None:
        """Tell the admitting ingress what the attempt used (``frame`` None: not known)."""
        if answer.settle_to is None:
            return
        if isinstance(frame, DoneFrame):
            note = SettleNote(admission_id=admission_id(request),
                              tokens=frame.usage.total_tokens, cost=frame.cost)
        elif isinstance(frame, ErrorFrame):
            note = SettleNote(admission_id=admission_id(request),
                              tokens=frame.usage.total_tokens if frame.usage else 0,
                              cost=frame.cost, error=frame.error)
        else:
            note = SettleNote(admission_id=admission_id(request), unknown=True)
        with contextlib.suppress(nats.errors.Error):
            await self._nc.publish(answer.settle_to, note.model_dump_json().encode())
