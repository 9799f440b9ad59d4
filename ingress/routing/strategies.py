"""Routing strategies: the order in which a group's deployments are tried. Pure.

Every strategy starts from a smooth weighted rotation of the group, then stably sorts it
by its own measure, so deployments that measure the same still take turns by weight
instead of one of them taking all the traffic.

==========================  =====================================================
``simple-shuffle``          weighted rotation (nginx's smooth weighted round robin:
                            the share LiteLLM's weighted random pick gives, with no
                            streaks)
``least-busy``              fewest attempts in flight, over every replica
``latency-based-routing``   lowest moving average of total latency (deployments
                            within 10 % of the best count as equal; unmeasured ones
                            go first, so they get measured)
``cost-based-routing``      lowest price per token (unpriced deployments last)
``usage-based-routing``     lowest share of its own rpm/tpm used this minute;
                            deployments at their limit go last
==========================  =====================================================

Usage-based routing orders by our own estimate (every replica's attempts and tokens this
minute, shared through Redis) rather than asking the admission store, which would cost a
round trip per plan. A deployment the estimate gets wrong is still refused by admission,
and the attempt moves on to the next deployment in the plan.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Protocol

from core.pricing import PriceTable
from ingress.routing.load import Load
from schemas.config import Deployment

LoadOf = Callable[[str], Load]

# Latencies within this factor of the best are one tier, so near-equal deployments share.
LATENCY_TOLERANCE = 1.10


class SmoothWeighted:
    """Smooth weighted round robin over one group: over any ``sum(weights)`` picks, each
    deployment is first exactly ``weight`` times, spread out evenly."""

    def __init__(self, group: Sequence[Deployment]) -> None:
        self._group = tuple(group)
        self._weights = [max(d.weight, 0.0) or 1e-9 for d in self._group]
        self._current = [0.0] * len(self._group)
        self._total = sum(self._weights)

    def order(self) -> list[Deployment]:
        """The whole group, starting with this turn's pick and going on in group order."""
        n = len(self._group)
        if n == 1:
            return list(self._group)
        best = 0
        for i in range(n):
            self._current[i] += self._weights[i]
            if self._current[i] > self._current[best]:
                best = i
        self._current[best] -= self._total
        return [*self._group[best:], *self._group[:best]]


class Strategy(Protocol):
    def order(self, rotated: list[Deployment], load: LoadOf) -> list[Deployment]: ...


class Rotation:
    def order(self, rotated: list[Deployment], load: LoadOf) -> list[Deployment]:
        return rotated


class LeastBusy:
    def order(self, rotated: list[Deployment], load: LoadOf) -> list[Deployment]:
        return sorted(rotated, key=lambda d: load(d.id).in_flight)


class LowestLatency:
    def order(self, rotated: list[Deployment], load: LoadOf) -> list[Deployment]:
        measured = {d.id: load(d.id).latency_ms for d in rotated}
        known = [v for v in measured.values() if v is not None]
        if not known:
            return rotated
        tier = min(known) * LATENCY_TOLERANCE

        def key(d: Deployment) -> float:
            value = measured[d.id]
            return 0.0 if value is None or value <= tier else value

        return sorted(rotated, key=key)


class LowestCost:
    def __init__(self, prices: PriceTable) -> None:
        self._prices = prices
        self._cache: dict[str, Decimal | None] = {}

    def price(self, d: Deployment) -> Decimal | None:
        """Input plus output price per token: a fair summary when the request's own
        shape is unknown at planning time."""
        if d.id not in self._cache:
            known = self._prices.lookup(d.provider, d.upstream_model)
            inp = d.input_cost_per_token if d.input_cost_per_token is not None else (
                known.input if known else None)
            out = d.output_cost_per_token if d.output_cost_per_token is not None else (
                known.output if known else None)
            free = d.provider == "mock"
            self._cache[d.id] = Decimal(0) if free else (
                inp + out if inp is not None and out is not None else None)
        return self._cache[d.id]

    def order(self, rotated: list[Deployment], load: LoadOf) -> list[Deployment]:
        def key(d: Deployment) -> tuple[bool, Decimal]:
            price = self.price(d)
            return (price is None, price if price is not None else Decimal(0))

        return sorted(rotated, key=key)


def utilisation(d: Deployment, load: Load) -> float:
    """The larger share of its rpm or tpm a deployment has used this minute (0 unlimited)."""
    shares = [0.0]
    if d.rpm:
        shares.append(load.requests_this_minute / d.rpm)
    if d.tpm:
        shares.append(load.tokens_this_minute / d.tpm)
    return max(shares)


class LowestUsage:
    def order(self, rotated: list[Deployment], load: LoadOf) -> list[Deployment]:
        def key(d: Deployment) -> tuple[bool, float, int]:
            used = load(d.id)
            share = utilisation(d, used)
            return (share >= 1.0, share, used.tokens_this_minute)

        return sorted(rotated, key=key)


def strategy_for(name: str, prices: PriceTable) -> Strategy:
    if name == "least-busy":
        return LeastBusy()
    if name == "latency-based-routing":
        return LowestLatency()
    if name == "cost-based-routing":
        return LowestCost(prices)
    if name in ("usage-based-routing", "usage-based-routing-v2"):
        return LowestUsage()
    return Rotation()
