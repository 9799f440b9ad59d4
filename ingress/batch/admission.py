"""Admitting batch items for the workers that run them.

A worker asks before each attempt of a batch item (:mod:`schemas.batch_admission`); one
ingress of the queue group answers with the same gatekeeper interactive calls go through:
the item's key (as it is now: revoked, expired or moved to another team counts), its team
and the deployment, with their rate, parallel and budget limits. A rate limit answers
*wait*; a spent budget answers *refused*, and the item ends with a ``budget_exceeded``
line, so a batch overshoots its budget by no more than the items already admitted.

The ticket stays with the replica that admitted it, and the worker settles there. A
settlement that never comes (the worker died) leaves the reservation to expire in the
store, as an interactive call's does when its replica dies; :data:`HOLD` bounds how long
this process remembers such tickets.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from typing import TYPE_CHECKING

import nats.errors
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import ValidationError

from ingress.admission import DuplicateRequest
from ingress.admission.gatekeeper import DeploymentBusy, Ticket
from ingress.auth.keys import Rejection
from ingress.auth.principal import MASTER, Principal
from ingress.errors import ApiError
from schemas import subjects
from schemas.batch_admission import AdmitAnswer, AdmitAsk, SettleNote, Verdict
from schemas.errors import ErrorInfo, ErrorKind

if TYPE_CHECKING:
    from ingress.state import Gateway

log = logging.getLogger("aigw.batch")

HOLD = 3600.0  # longest a batch attempt may run before its ticket is forgotten here
BUSY_WAIT = 1.0  # a deployment at its own limit, or the limit store away: ask again then


def _refused(kind: ErrorKind, message: str, code: str, status: int | None = None) -> AdmitAnswer:
    return AdmitAnswer(verdict=Verdict.REFUSED,
                       error=ErrorInfo.of(kind, message, code=code, status=status))


def _wait(seconds: float) -> AdmitAnswer:
    return AdmitAnswer(verdict=Verdict.WAIT, retry_after=max(0.05, seconds))


def _answer_for(refusal: ApiError) -> AdmitAnswer:
    if refusal.code == "budget_exceeded":
        return _refused(ErrorKind.RATE_LIMIT, refusal.message, "budget_exceeded", 429)
    retry = refusal.headers.get("retry-after")
    if retry is None:  # the item alone is over a limit: waiting cannot help
        return _refused(ErrorKind.RATE_LIMIT, refusal.message, refusal.code or "rate_limit")
    return _wait(float(retry))


class BatchAdmission:
    """Answers admission requests from workers, and takes their settlements."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway
        self._replica = uuid.uuid4().hex[:16]
        self._tickets: dict[str, tuple[float, Ticket]] = {}
        self._subs: list[Subscription] = []

    @property
    def settle_to(self) -> str:
        return subjects.settle(self._replica)

    async def start(self) -> None:
        nc = self._gateway.nc
        self._subs.append(await nc.subscribe(subjects.ADMIT, queue=subjects.ADMIT_QUEUE,
                                             cb=self._on_admit))
        self._subs.append(await nc.subscribe(self.settle_to, cb=self._on_settle))

    async def stop(self) -> None:
        for sub in self._subs:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()
        self._subs.clear()

    async def _on_admit(self, msg: Msg) -> None:
        try:
            ask = AdmitAsk.model_validate_json(msg.data)
        except ValidationError:
            answer = _refused(ErrorKind.SERVER, "the admission request could not be read",
                              "bad_admission_request")
        else:
            answer = await self.decide(ask)
        with contextlib.suppress(nats.errors.Error):
            await msg.respond(answer.model_dump_json().encode())

    def _principal(self, key_id: str | None) -> Principal | Rejection:
        return MASTER if key_id is None else self._gateway.keys.principal_of(key_id)

    async def decide(self, ask: AdmitAsk) -> AdmitAnswer:
        if ask.admission_id in self._tickets:  # asked again: our answer was lost
            return AdmitAnswer(verdict=Verdict.ADMITTED, settle_to=self.settle_to)
        principal = self._principal(ask.key_id)
        if isinstance(principal, Rejection):
            return _refused(ErrorKind.AUTHENTICATION, f"The batch's key: {principal.message}",
                            principal.value)
        deployment = self._gateway.config.deployment(ask.deployment_id)
        if deployment is None:  # a reload removed it: the worker will say so itself
            return AdmitAnswer(verdict=Verdict.ADMITTED)
        gatekeeper = self._gateway.gatekeeper
        try:
            ticket = await gatekeeper.admit(principal, deployment, ask.admission_id,
                                            ask.body, ask.generates)
        except DeploymentBusy:
            return _wait(BUSY_WAIT)
        except DuplicateRequest:  # admitted by another replica whose answer was lost
            return AdmitAnswer(verdict=Verdict.ADMITTED)
        except ApiError as refusal:
            if refusal.code == "admission_unavailable":
                return _wait(BUSY_WAIT)
            return _answer_for(refusal)
        if ticket.reservation is None:
            return AdmitAnswer(verdict=Verdict.ADMITTED)
        self._forget_old()
        self._tickets[ask.admission_id] = (time.monotonic(), ticket)
        return AdmitAnswer(verdict=Verdict.ADMITTED, settle_to=self.settle_to)

    async def _on_settle(self, msg: Msg) -> None:
        try:
            note = SettleNote.model_validate_json(msg.data)
        except ValidationError:
            log.warning("dropping a batch settlement that cannot be read")
            return
        held = self._tickets.pop(note.admission_id, None)
        if held is None:
            return
        ticket = held[1]
        cost = ticket.reserve_cost if note.unknown else note.cost
        self._gateway.gatekeeper.settle(ticket, note.tokens, cost)

    def _forget_old(self) -> None:
        if len(self._tickets) < 1024:
            return
        cutoff = time.monotonic() - HOLD
        for admission_id in [a for a, (at, _) in self._tickets.items() if at < cutoff]:
            del self._tickets[admission_id]
