"""Admission for one attempt: which limits apply, what to reserve, and settling after.

The scopes of an attempt are the caller's key, its team and the deployment, each with its
own limits (a team's limits are shared by all its keys). An attempt with no limits at all
(the master key on an unlimited deployment) costs no round trip.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from core.pricing import ModelPrice, PriceTable
from ingress.admission import (
    Admission,
    AdmissionUnavailable,
    AdmitRequest,
    Reservation,
    Scope,
    refusal_error,
    unavailable_error,
)
from ingress.admission.alerts import BudgetAlerts
from ingress.admission.budget import estimate_prompt_tokens, max_output_tokens, reserve_cost
from ingress.auth.principal import Principal
from schemas.config import Deployment
from schemas.keys import Limits, Team
from schemas.reasoning import thinking_budget

log = logging.getLogger("aigw.ingress")


@dataclass(slots=True)
class Ticket:
    """An admitted attempt, until it is settled."""

    reservation: Reservation | None
    reserve_cost: Decimal
    headers: dict[str, str]
    settled: bool = False


def _scope(kind: str, id: str, limits: Limits, label: str | None) -> Scope | None:
    if (limits.rpm is None and limits.tpm is None and limits.max_parallel is None
            and limits.daily_budget_usd is None and limits.monthly_budget_usd is None):
        return None
    return Scope(kind, id, rpm=limits.rpm, tpm=limits.tpm, max_parallel=limits.max_parallel,  # type: ignore[arg-type]
                 daily_budget=limits.daily_budget_usd, monthly_budget=limits.monthly_budget_usd,
                 label=label)


def team_scope(team: Team) -> Scope | None:
    return _scope("team", team.id, team.limits, team.alias or team.id)


def scopes_for(principal: Principal, deployment: Deployment | None) -> list[Scope]:
    scopes: list[Scope | None] = []
    if principal.key is not None:
        scopes.append(_scope("key", principal.key.id, principal.key.limits,
                             principal.key.alias or principal.key.id))
    if principal.team is not None:
        scopes.append(team_scope(principal.team))
    if deployment is not None and (deployment.rpm is not None or deployment.tpm is not None):
        scopes.append(Scope("deployment", deployment.id, rpm=deployment.rpm,
                            tpm=deployment.tpm, label=deployment.model_name))
    return [s for s in scopes if s is not None]


class DeploymentBusy(Exception):
    """The deployment is at its own rpm/tpm: try the next one in the plan."""


class Gatekeeper:
    def __init__(
        self,
        admission: Admission,
        prices: PriceTable,
        alerts: BudgetAlerts,
        default_max_output: int = 4096,
    ) -> None:
        self.admission = admission
        self._prices = prices
        self.prices = prices
        self._alerts = alerts
        self._default_max_output = default_max_output
        self._settling: set[asyncio.Task[None]] = set()

    def price(self, deployment: Deployment) -> ModelPrice | None:
        if deployment.provider == "mock":
            return None
        return self._prices.price(deployment.provider, deployment.upstream_model,
                                  deployment.prices)

    async def admit(
        self,
        principal: Principal,
        deployment: Deployment,
        admission_id: str,
        body: dict[str, Any],
        generates: bool,
        reserve: Decimal | None = None,
    ) -> Ticket:
        """Admit one attempt, or raise: ApiError(429/503) for the caller's own limits,
        DeploymentBusy for the deployment's. ``reserve``: the most the call can cost, when
        the caller knows better than a token estimate (an image, seconds of audio)."""
        scopes = scopes_for(principal, deployment)
        if not scopes:
            return Ticket(None, Decimal(0), {})
        prompt = estimate_prompt_tokens(body)
        most = max_output_tokens(body, self._default_max_output, generates=generates,
                                 thinking_budget=thinking_budget(deployment.provider, body))
        cost = (reserve if reserve is not None
                else reserve_cost(prompt, most, self.price(deployment)))
        try:
            decision = await self.admission.admit(
                AdmitRequest(admission_id, scopes, prompt + most, cost))
        except AdmissionUnavailable:
            raise unavailable_error() from None
        if decision.alerts:
            self._alerts.fire(decision.alerts)
        if decision.allowed:
            return Ticket(decision.reservation, cost, decision.headers)
        assert decision.refusal is not None
        if decision.refusal.scope.kind == "deployment":
            raise DeploymentBusy(decision.refusal.reason)
        raise refusal_error(decision)

    def settle(self, ticket: Ticket, tokens: int, cost: Decimal | None) -> None:
        """Settle in the background: the client need not wait for it."""
        if ticket.settled or ticket.reservation is None:
            ticket.settled = True
            return
        ticket.settled = True
        task = asyncio.create_task(self._settle(ticket.reservation, tokens, cost))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def _settle(self, reservation: Reservation, tokens: int, cost: Decimal | None) -> None:
        try:
            settlement = await self.admission.settle(reservation, tokens, cost)
        except Exception as exc:
            # The reservation expires on its own; accounting still has the real cost.
            log.warning("could not settle %s: %s", reservation.request_id, exc)
            return
        if settlement.alerts:
            self._alerts.fire(settlement.alerts)

    async def drain(self) -> None:
        if self._settling:
            await asyncio.gather(*self._settling, return_exceptions=True)
