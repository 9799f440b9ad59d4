"""In-flight deduplication: followers share their leader's answer, or make their own call."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import pytest

from ingress.cache.dedup import InFlight
from ingress.cache.store import CachedAnswer, Capture, MemoryCache, ResponseCache
from schemas.config import Deployment
from schemas.frames import DoneFrame
from schemas.usage import TokenUsage

ANSWER = CachedAnswer(stored_at=time.time(), provider="openai", usage=TokenUsage(),
                      cost=Decimal("0.01"), response={"id": "x"})
DEPLOYMENT = Deployment(id="d1", model_name="gpt", provider="openai", upstream_model="gpt-x")


async def test_nobody_leads_an_unknown_key() -> None:
    assert InFlight().leader("k") is None


async def test_every_follower_gets_the_leaders_answer() -> None:
    inflight = InFlight()
    lead = inflight.lead("k")
    leader = inflight.leader("k")
    assert leader is not None
    followers = [asyncio.create_task(inflight.follow(leader)) for _ in range(5)]
    await asyncio.sleep(0)
    assert not any(f.done() for f in followers)
    lead.resolve(ANSWER)
    assert await asyncio.gather(*followers) == [ANSWER] * 5


async def test_followers_of_a_failed_leader_get_nothing_and_call_themselves() -> None:
    inflight = InFlight()
    lead = inflight.lead("k")
    leader = inflight.leader("k")
    assert leader is not None
    follower = asyncio.create_task(inflight.follow(leader))
    lead.release()  # released before resolving: the leader failed
    assert await follower is None
    assert inflight.leader("k") is None


async def test_a_follower_that_leaves_does_not_cancel_the_leader() -> None:
    inflight = InFlight()
    lead = inflight.lead("k")
    leader = inflight.leader("k")
    assert leader is not None
    gone = asyncio.create_task(inflight.follow(leader))
    stays = asyncio.create_task(inflight.follow(leader))
    await asyncio.sleep(0)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    lead.resolve(ANSWER)
    assert await stays == ANSWER


async def test_a_follower_stops_waiting_after_its_limit() -> None:
    inflight = InFlight(wait_seconds=0.05)
    inflight.lead("k")
    leader = inflight.leader("k")
    assert leader is not None
    started = time.monotonic()
    assert await inflight.follow(leader) is None
    assert time.monotonic() - started < 1


async def test_a_resolved_leader_answers_at_once() -> None:
    inflight = InFlight()
    lead = inflight.lead("k")
    lead.resolve(ANSWER)
    leader = inflight.leader("k")
    assert leader is not None
    assert await inflight.follow(leader) == ANSWER


async def test_a_released_key_can_be_led_again() -> None:
    inflight = InFlight()
    first = inflight.lead("k")
    first.resolve(ANSWER)
    first.release()
    second = inflight.lead("k")
    first.release()  # a late release of the old lead leaves the new one alone
    assert inflight.leader("k") is not None
    second.release()
    assert len(inflight) == 0


async def test_the_first_end_of_a_leader_wins() -> None:
    inflight = InFlight()
    lead = inflight.lead("k")
    leader = inflight.leader("k")
    assert leader is not None
    lead.resolve(ANSWER)
    lead.resolve(None)
    assert leader.result() == ANSWER


async def test_n_identical_requests_make_one_call() -> None:
    """The route's protocol in miniature: look for a leader, else lead and call."""
    inflight, cache = InFlight(), ResponseCache(MemoryCache())
    calls = 0

    async def request() -> CachedAnswer | None:
        nonlocal calls
        if (leader := inflight.leader("k")) is not None:
            return await inflight.follow(leader)
        capture = Capture(cache, "k", 60, inflight.lead("k"))
        calls += 1
        await asyncio.sleep(0.05)  # the upstream call
        capture.done(DoneFrame(usage=TokenUsage(), response={"id": "x"}, cost=Decimal(1)),
                     DEPLOYMENT, streamed=False)
        return None

    results = await asyncio.gather(*(request() for _ in range(10)))
    assert calls == 1
    shared = [r for r in results if r is not None]
    assert len(shared) == 9
    assert all(r.response == {"id": "x"} and r.cost == Decimal(1) for r in shared)
    await cache.drain()
    assert len(inflight) == 0
