"""Which deployments serve a model alias, in which order, and where to go when they fail.

A :class:`Plan` is the order for one request: the group's deployments as the strategy
ranks them, minus those cooling down (unless all are; then all of them, soonest to
recover first, because trying beats failing). Building one reads memory only: the health
mirror and the load counters are kept up to date in the background.

A group routed by complexity (:mod:`ingress.routing.complexity`) is planned per request:
the plan holds only the tiers that cover the request's score, and says why in ``route``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from core.pricing import PriceTable
from ingress.routing import complexity
from ingress.routing.breaker import Availability, Breaker
from ingress.routing.health_board import HealthBoard
from ingress.routing.load import LoadTracker
from ingress.routing.retry import RetryPolicy
from ingress.routing.strategies import LowestCost, SmoothWeighted, strategy_for
from schemas.config import Deployment, GatewayConfig, RouterSettings
from schemas.errors import ErrorKind

USABLE = (Availability.HEALTHY, Availability.PROBE_READY)


class Plan(list[Deployment]):
    """The deployments to try for ``model``, in order, and the router that made them (for
    retries, fallbacks and health reports). A list, so callers that only iterate work."""

    def __init__(
        self, model: str, deployments: list[Deployment], router: Router, *,
        forced: bool = False, route: complexity.Decision | None = None,
    ) -> None:
        super().__init__(deployments)
        self.model = model
        self.router = router
        # The complexity router's decision, when the group is routed that way.
        self.route = route
        # Every deployment is cooling down or probed by another request (or there is only
        # one): try them anyway rather than fail without trying.
        self.forced = forced


class Router:
    def __init__(
        self,
        config: GatewayConfig,
        *,
        health: HealthBoard | None = None,
        load: LoadTracker | None = None,
        prices: PriceTable | None = None,
    ) -> None:
        self.health = health or HealthBoard(None, config.router)
        self.load = load or LoadTracker()
        self._prices = prices or PriceTable.default()
        self.settings: RouterSettings = config.router
        self.strategy = strategy_for(self.settings.routing_strategy, self._prices)
        self._cost = LowestCost(self._prices)
        self.retry = RetryPolicy.from_settings(self.settings)
        self._groups: dict[str, tuple[Deployment, ...]] = {}
        self._tiered: set[str] = set()
        self._rotations: dict[str, SmoothWeighted] = {}
        self.apply(config)

    def apply(self, config: GatewayConfig) -> None:
        """Route by ``config`` from the next plan on (a reload). Synchronous, so no request
        sees half of it; plans already made keep their deployments. Health and load are
        keyed by deployment id, so a deployment whose id stays keeps both."""
        groups = {name: tuple(config.group(name)) for name in config.model_names}
        # A group that did not change keeps its rotation, so its spread goes on evenly.
        rotations = {
            name: self._rotations[name] if self._groups.get(name) == group
            else SmoothWeighted(group)
            for name, group in groups.items()
        }
        settings = config.router
        if settings != self.settings:
            self.settings = settings
            self.retry = RetryPolicy.from_settings(settings)
            self.health.breaker = Breaker(settings)
        # Anew each time: the cost strategy caches prices per deployment id.
        self.strategy = strategy_for(settings.routing_strategy, self._prices)
        self._cost = LowestCost(self._prices)
        self._groups, self._rotations = groups, rotations
        # Only a group whose deployments declare tiers has tiers to choose from.
        self._tiered = {name for name, group in groups.items()
                        if any(d.tier is not None for d in group)}

    def price(self, deployment: Deployment) -> Decimal | None:
        """Its input plus output price per token (what the complexity router ranks by)."""
        return self._cost.price(deployment)

    def __contains__(self, model: str) -> bool:
        return model in self._groups

    @property
    def models(self) -> list[str]:
        return list(self._groups)

    @property
    def deployments(self) -> list[Deployment]:
        return [d for group in self._groups.values() for d in group]

    def classifier_for(self, model: str) -> str | None:
        """The classifier model to ask for ``model``'s tier, if its group has one."""
        judge = self.settings.complexity.classifier_model
        if judge is None or judge == model or model not in self._tiered:
            return None
        return judge if self.settings.by_complexity(model) else None

    def plan(
        self, model: str, body: dict[str, Any] | None = None, tier: str | None = None,
    ) -> Plan:
        """The order for one request to ``model``; ``body`` (the request) for a group
        routed by complexity, which without it is planned like any other; ``tier`` when
        the classifier model answered one."""
        group = self._groups.get(model)
        if not group:
            return Plan(model, [], self)
        ordered = self.strategy.order(self._rotations[model].order(), self.load.load)
        route = None
        if body is not None and model in self._tiered and self.settings.by_complexity(model):
            tiers = self.settings.complexity
            route = complexity.decide(body, tiers)
            if tier is not None and tier in tiers.tiers and tiers.classifier_model:
                route = complexity.classified(route, tier, tiers.classifier_model)
            ordered = complexity.order(ordered, route, tiers, self.price)
        if len(ordered) == 1:
            return Plan(model, ordered, self, forced=True, route=route)
        usable = [d for d in ordered if self.health.availability(d.id) in USABLE]
        if usable:
            return Plan(model, usable, self, route=route)

        def recovers(d: Deployment) -> float:
            entry = self.health.entry(d.id)
            return (entry.until or 0.0) if entry is not None else 0.0

        return Plan(model, sorted(ordered, key=recovers), self, forced=True, route=route)

    def fallbacks(self, model: str, kind: ErrorKind) -> tuple[str, ...]:
        """The models to fall back to after ``model`` failed with ``kind``: the context
        window or content policy chains for those errors (the general chain when they have
        none), nothing for a request the client got wrong, the general chain otherwise."""
        s = self.settings
        if kind is ErrorKind.CONTEXT_LENGTH:
            return s.context_window_fallbacks.get(model) or s.fallbacks.get(model, ())
        if kind is ErrorKind.CONTENT_POLICY:
            return s.content_policy_fallbacks.get(model) or s.fallbacks.get(model, ())
        if kind in (ErrorKind.INVALID_REQUEST, ErrorKind.CANCELLED):
            return ()
        return s.fallbacks.get(model, ())
