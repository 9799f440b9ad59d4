"""The wire between a worker running batch items and the ingress that admits them.

A batch item is admitted like an interactive attempt: the caller's key, its team and the
deployment, with their rate, parallel and budget limits, reserved before the call and
settled with the real tokens and cost after it. Only an ingress holds those counters, so a
worker asks one (:data:`schemas.subjects.ADMIT`) before each attempt of an item.

The ingress also routes the attempt, as it routes an interactive one: the item's model
group by the routing strategy, minus deployments cooling down and those the item already
failed on, then the fallback chain. An answer names the deployment to call; one of
another provider's makes the worker hand the item over to that provider's queue.
"""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict

from schemas.errors import ErrorInfo


class Verdict(StrEnum):
    ADMITTED = "admitted"
    # A rate limit (or the limit store) says not now: ask again after ``retry_after``.
    WAIT = "wait"
    # Waiting cannot help (a budget is spent, the key is gone): the item fails with
    # ``error``.
    REFUSED = "refused"
    # The attempt goes to ``deployment_id`` of another provider: the worker puts the item
    # on that provider's queue. Nothing was reserved; that provider's worker asks again.
    MOVE = "move"
    # Nowhere left to go after the item's last failure: it ends with that failure.
    EXHAUSTED = "exhausted"


class AdmitAsk(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    admission_id: str  # <request id>:<attempt>, as for interactive attempts
    key_id: str | None = None
    deployment_id: str
    body: dict[str, Any]
    generates: bool = True
    # Set to have the attempt routed (None: an older worker, the deployment stays).
    model_alias: str | None = None
    batch_id: str | None = None
    provider: str | None = None  # the asking worker's
    # Deployments the item failed on so far (all its deliveries and moves), and how.
    failed: tuple[str, ...] = ()
    last_error: ErrorInfo | None = None
    moves: int = 0


class AdmitAnswer(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    verdict: Verdict
    retry_after: float = 0.0
    error: ErrorInfo | None = None
    # Where to send the settlement (the admitting replica); None when nothing was reserved.
    settle_to: str | None = None
    # The deployment to call (routed asks), and why it was chosen.
    deployment_id: str | None = None
    provider: str | None = None
    route: str | None = None


class SettleNote(BaseModel):
    """What the admitted attempt used. ``cost`` None with ``unknown`` set: the attempt ended
    without a word on its usage (the worker stopped): hold the reservation as spent."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    admission_id: str
    tokens: int = 0
    cost: Decimal | None = None
    unknown: bool = False
    # How a routed attempt ended (None: it answered), for the deployment's breaker.
    error: ErrorInfo | None = None
