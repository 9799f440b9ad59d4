"""Where a batch item's next attempt goes, decided when it runs, as for an interactive call.

The deployment an item got at submit time only decides which provider's queue it waits
on. Before each attempt the worker asks an ingress (:mod:`ingress.batch.admission`), which
asks :func:`choose`:

* first attempt of a delivery: the group's plan (routing strategy, deployments cooling
  down left out, tiers by the item's complexity for a group routed so) minus the
  deployments the item already failed on. An item that was
  handed over to another provider keeps the deployment it was handed to while that one
  is usable, so items do not travel back and forth as a rotation turns;
* after a failure a sibling might not have (:data:`FAILOVER`): the next deployment of the
  plan the item has not failed on, then the fallback models of the failure's class;
* after a failure of the request itself (a bad request, too long a context, a refused
  prompt): only the fallback chain for that class, if any;
* when everything is spent after a transient failure: a retry round on the group's plan
  (the worker's attempt budget and backoff bound it); else nowhere, and the item ends with
  its failure.

Deployments of other providers are candidates only while the item may still move
(:data:`MAX_MOVES`); past that the item stays with its provider.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ingress.routing.router import USABLE, Router
from schemas.batch_admission import AdmitAsk
from schemas.config import Deployment
from schemas.errors import FAILOVER, RETRYABLE, ErrorInfo

MAX_MOVES = 4


@dataclass(frozen=True, slots=True)
class Choice:
    """The deployment for the attempt (None: nowhere left) and why, as a short word."""

    deployment: Deployment | None
    reason: str


def choose(router: Router, ask: AdmitAsk,
           may_use: Callable[[str], bool] | None = None) -> Choice:
    alias = ask.model_alias or ""
    failed = set(ask.failed)
    may_move = ask.moves < MAX_MOVES

    def fits(d: Deployment) -> bool:
        return may_move or ask.provider is None or d.provider == ask.provider

    def untried(model: str) -> list[Deployment]:
        return [d for d in router.plan(model, ask.body) if d.id not in failed and fits(d)]

    last: ErrorInfo | None = ask.last_error
    if last is None:
        if ask.moves and ask.deployment_id not in failed:
            current = _usable(router, ask.deployment_id)
            if current is not None:
                return Choice(current, "kept")
        picks = untried(alias)
        if picks:
            return Choice(picks[0], "strategy")
        # Every deployment of the group failed this item in earlier deliveries: its
        # fallbacks, then a retry round, as after a transient failure.
        chain = router.settings.fallbacks.get(alias, ())
    else:
        if last.kind in FAILOVER:
            picks = untried(alias)
            if picks:
                return Choice(picks[0], "failover")
        chain = router.fallbacks(alias, last.kind)
    for model in chain:
        if model == alias or (may_use is not None and not may_use(model)):
            continue
        picks = untried(model)
        if picks:
            return Choice(picks[0], f"fallback:{model}")
    if last is None or last.kind in RETRYABLE:
        return _retry_round(router, alias, ask, fits)
    return Choice(None, "exhausted")


def _usable(router: Router, deployment_id: str) -> Deployment | None:
    if router.health.availability(deployment_id) not in USABLE:
        return None
    return next((d for d in router.deployments if d.id == deployment_id), None)


def _retry_round(router: Router, alias: str, ask: AdmitAsk,
                 fits: Callable[[Deployment], bool]) -> Choice:
    picks = [d for d in router.plan(alias, ask.body) if fits(d)]
    return Choice(picks[0], "retry") if picks else Choice(None, "exhausted")
