"""How a batch item's deliveries and attempts are numbered, and how a lost call is accounted.

Each upstream call, as accounting sees it: an item cut off with its worker (a drain that
ran out, a crash) is redelivered after :data:`~workers.batch.runner.ACK_WAIT` (kept short;
running items are marked in progress) and runs again. Each delivery numbers its attempts
from :func:`first_attempt`, and each further attempt (routed by the ingress: failover,
fallback, retry) takes the next number, so every call has a usage event id of its own: the
earlier delivery's event (a cancelled call, a 429) never shadows the call that answered.

A worker killed outright publishes no event for the call it was in. So before each call a
delivery records the attempt it is about to make (KV ``aigw_batch_runs``, one key per
delivery: :func:`run_key`), and a later delivery of an item with no result accounts every
earlier delivery's recorded attempt as :mod:`ingress.dispatch.lost` accounts an interactive
one: the event id that worker would have used, status ``error`` (``connection``, 502), the
prompt estimated (:func:`lost_usage`) and priced. First event wins: if that worker did
publish (a drain that cancelled its call), the copy is dropped as a duplicate by JetStream or
the accounting store. The records expire with the batch's results (purged with them once the
files are written, or aged out).
"""

from __future__ import annotations

from schemas import estimate
from schemas.batch import BatchItem
from schemas.errors import ErrorInfo, ErrorKind
from schemas.infer import Endpoint, InferRequest
from schemas.usage import TokenUsage

# Deliveries after which an item that keeps killing its worker goes to the error file.
MAX_DELIVERIES = 5
# Attempts per delivery: routed by an ingress (failover, fallbacks, retry rounds), or,
# with no ingress to ask, retries of transient failures on the item's own deployment.
ATTEMPTS = 6
UNROUTED_TRIES = 3
# How a call is accounted whose worker died in it (a later delivery finds its record).
LOST = ErrorInfo.of(ErrorKind.CONNECTION, "the worker running this call was lost")


def run_key(item: BatchItem, delivery: int) -> str:
    """KV key (bucket ``aigw_batch_runs``) of the attempt a delivery of an item began last
    (a delivery of the item as handed over to another provider has keys of its own)."""
    base = f"{item.batch_id}.{item.line}.{delivery}"
    return base if not item.moves else f"{base}.m{item.moves}"


def first_attempt(item: BatchItem, delivery: int) -> int:
    """The attempt number a delivery starts from: no two deliveries, nor two copies of an
    item handed over between providers, share one, so every call has an event id of its
    own."""
    return (item.moves * MAX_DELIVERIES + delivery - 1) * ATTEMPTS


def lost_usage(request: InferRequest) -> TokenUsage:
    """What a call whose worker died is accounted at: its prompt, estimated by the rules
    the ingress uses for a lost interactive attempt; nothing of the answer was seen."""
    if request.endpoint in (Endpoint.EMBEDDINGS, Endpoint.MODERATIONS):
        tokens = estimate.embedding_tokens(request.body)
    else:
        tokens = estimate.prompt_tokens(request.body)
    return TokenUsage(prompt_tokens=tokens, estimated=True)


def backoff(attempt: int, error: ErrorInfo) -> float:
    """Seconds before retry ``attempt`` (1, 2, ...): the provider's hint, else doubling."""
    if error.retry_after is not None:
        return min(float(error.retry_after), 30.0)
    return min(0.5 * 2.0 ** (attempt - 1), 8.0)
