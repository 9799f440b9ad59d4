"""An answer without an upstream call of our own: the cache's, or an identical request's
in flight on this replica or another; and a cache hit's accounting."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from functools import partial

from ingress.auth.principal import Principal
from ingress.cache.dedup import Lead
from ingress.cache.dedup_shared import SharedLeads
from ingress.cache.key import CachePolicy
from ingress.cache.store import CachedAnswer
from ingress.dispatch.execution import Caller
from ingress.metrics import CACHE
from ingress.state import Gateway
from schemas.infer import Endpoint
from schemas.usage import UsageEvent, UsageStatus, event_id


def publish_hit(
    gateway: Gateway, principal: Principal, rid: str, model: str, endpoint: Endpoint,
    stream: bool, caller: Caller, answer: CachedAnswer, latency_ms: float,
    similarity: float | None = None,
) -> None:
    """A request served from the cache: no tokens used, nothing spent, the original
    call's cost saved. A semantic hit says so in the metadata, with its similarity."""
    metadata = {k: v for k, v in (caller.metadata or {}).items() if isinstance(v, str)}
    if similarity is not None:
        metadata.update(aigw_cache="semantic", aigw_similarity=f"{similarity:.4f}")
    gateway.usage.submit(UsageEvent(
        event_id=event_id(rid, 0, "ingress"),
        request_id=rid,
        key_id=principal.key_id,
        team_id=principal.team_id,
        end_user=caller.end_user,
        model_alias=model,
        provider=answer.provider,
        deployment_id=answer.deployment_id,
        upstream_model=answer.upstream_model,
        endpoint=endpoint.value,
        streamed=stream,
        status=UsageStatus.CACHE_HIT,
        cost=Decimal(0),
        saved_cost=answer.cost,
        latency_ms=latency_ms,
        metadata=metadata,
    ))


async def cached(gateway: Gateway, key: str, wanted: CachePolicy) -> CachedAnswer | None:
    """An answer without an upstream call of our own: an identical request's in flight
    (no round trip), else the store's (one round trip), else one that started while we
    looked. None: make the call."""
    inflight = gateway.inflight if gateway.settings.cache_dedup else None
    if inflight is not None and (leader := inflight.leader(key)) is not None:
        return _counted(await inflight.follow(leader), "dedup_join")
    answer = await gateway.cache.lookup(key, wanted.max_age)
    if answer is None and inflight is not None and (leader := inflight.leader(key)) is not None:
        return _counted(await inflight.follow(leader), "dedup_join")
    return _counted(answer, "hit")


def _counted(answer: CachedAnswer | None, result: str) -> CachedAnswer | None:
    if answer is not None:
        CACHE.labels(result).inc()
    return answer


async def lead_across_replicas(
    gateway: Gateway, lead: Lead, wanted: CachePolicy
) -> CachedAnswer | None:
    """Claim ``lead``'s key for this replica; when another replica's identical call is
    already running, wait for its answer instead (None: make our own call)."""
    shared = gateway.shared_leads
    if shared is None or not gateway.cache.shared:
        return None
    key = lead.key
    if await shared.claim(key):
        lead.on_end = partial(_announce_end, shared, key)
        return None
    if not wanted.lookup:
        return None
    try:
        answer = await shared.follow(key, partial(gateway.cache.lookup, key, wanted.max_age))
    except BaseException:  # our client left: our own followers make their own calls
        lead.release()
        raise
    if answer is not None:
        CACHE.labels("dedup_join").inc()  # this replica's own followers get it too
        lead.resolve(answer)
        lead.release()
    return answer


_announcing: set[asyncio.Task[None]] = set()


def _announce_end(shared: SharedLeads, key: str, stored: bool) -> None:
    task = asyncio.create_task(shared.ended(key, stored))
    _announcing.add(task)
    task.add_done_callback(_announcing.discard)
