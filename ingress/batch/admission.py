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
from functools import partial
from typing import TYPE_CHECKING

import nats.errors
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import ValidationError

from core.batch_store import BatchStore
from ingress.admission import DuplicateRequest
from ingress.admission.gatekeeper import DeploymentBusy, Ticket
from ingress.auth.key_mirror import Rejection
from ingress.auth.principal import MASTER, Principal, allowed
from ingress.batch.routing import choose
from ingress.errors import ApiError
from schemas import subjects
from schemas.batch import BatchRecord
from schemas.batch_admission import AdmitAnswer, AdmitAsk, SettleNote, Verdict
from schemas.config import Deployment
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

    def __init__(self, gateway: Gateway, store: BatchStore | None = None) -> None:
        self._gateway = gateway
        self._store = store
        self._replica = uuid.uuid4().hex[:16]
        # admission id -> (when, the reservation if any, the routed deployment if any)
        self._tickets: dict[str, tuple[float, Ticket | None, Deployment | None]] = {}
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
        held = self._tickets.get(ask.admission_id)
        if held is not None:  # asked again: our answer was lost
            return self._admitted(held[2], settle=True)
        principal = self._principal(ask.key_id)
        if isinstance(principal, Rejection):
            return _refused(ErrorKind.AUTHENTICATION, f"The batch's key: {principal.message}",
                            principal.value)
        config = self._gateway.config
        routed = ask.model_alias is not None
        if routed:
            may_use = None if principal.is_unrestricted else partial(allowed, principal)
            choice = choose(self._gateway.router, ask, may_use)
            if choice.deployment is None:
                return AdmitAnswer(verdict=Verdict.EXHAUSTED, route=choice.reason)
            deployment: Deployment | None = choice.deployment
            route = choice.reason
            if ask.provider is not None and choice.deployment.provider != ask.provider:
                return await self._move(ask, choice.deployment, route)
        else:
            deployment, route = config.deployment(ask.deployment_id), None
        if deployment is None:  # a reload removed it: the worker will say so itself
            return AdmitAnswer(verdict=Verdict.ADMITTED)
        gatekeeper = self._gateway.gatekeeper
        try:
            ticket = await gatekeeper.admit(principal, deployment, ask.admission_id,
                                            ask.body, ask.generates)
        except DeploymentBusy:
            return _wait(BUSY_WAIT)
        except DuplicateRequest:  # admitted by another replica whose answer was lost
            return self._admitted(deployment, settle=False, route=route)
        except ApiError as refusal:
            if refusal.code == "admission_unavailable":
                return _wait(BUSY_WAIT)
            return _answer_for(refusal)
        if ticket.reservation is None and not routed:
            return AdmitAnswer(verdict=Verdict.ADMITTED)
        self._forget_old()
        kept = ticket if ticket.reservation is not None else None
        self._tickets[ask.admission_id] = (time.monotonic(), kept,
                                           deployment if routed else None)
        return self._admitted(deployment if routed else None, settle=True, route=route)

    def _admitted(self, deployment: Deployment | None, *, settle: bool,
                  route: str | None = None) -> AdmitAnswer:
        return AdmitAnswer(
            verdict=Verdict.ADMITTED, settle_to=self.settle_to if settle else None,
            deployment_id=deployment.id if deployment is not None else None,
            provider=deployment.provider if deployment is not None else None, route=route)

    async def _move(self, ask: AdmitAsk, deployment: Deployment, route: str) -> AdmitAnswer:
        """Hand the item to ``deployment``'s provider. The batch lists its providers (for
        cancel, the finished check and the no-worker bound): the new one is added first."""
        provider = deployment.provider
        store = self._store
        if ask.batch_id is not None and store is not None:

            def add(record: BatchRecord) -> BatchRecord | None:
                if provider in record.providers:
                    return None
                return record.model_copy(update={"providers": [*record.providers, provider]})

            try:
                await store.update(ask.batch_id, add)
            except (RuntimeError, nats.errors.Error, OSError, TimeoutError) as exc:
                log.warning("batch %s: could not add provider %s (%s); item waits",
                            ask.batch_id, provider, exc)
                return _wait(BUSY_WAIT)
        log.info("batch item %s moves from %s to %s (%s)", ask.admission_id,
                 ask.deployment_id, deployment.id, route)
        return AdmitAnswer(verdict=Verdict.MOVE, deployment_id=deployment.id,
                           provider=provider, route=route)

    async def _on_settle(self, msg: Msg) -> None:
        try:
            note = SettleNote.model_validate_json(msg.data)
        except ValidationError:
            log.warning("dropping a batch settlement that cannot be read")
            return
        held = self._tickets.pop(note.admission_id, None)
        if held is None:
            return
        _, ticket, deployment = held
        if ticket is not None:
            cost = ticket.reserve_cost if note.unknown else note.cost
            self._gateway.gatekeeper.settle(ticket, note.tokens, cost)
        if deployment is not None and not note.unknown:  # routed: the breaker learns
            health = self._gateway.router.health
            if note.error is not None:
                health.failed(deployment.id, note.error)
            else:
                health.succeeded(deployment.id)

    def _forget_old(self) -> None:
        if len(self._tickets) < 1024:
            return
        cutoff = time.monotonic() - HOLD
        for admission_id in [a for a, (at, *_) in self._tickets.items() if at < cutoff]:
            del self._tickets[admission_id]
