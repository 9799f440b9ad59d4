"""Batch items redelivered after a worker stopped or was killed mid-call, over a real
nats-server: every upstream call is accounted once, under the attempt it began."""

from __future__ import annotations

from decimal import Decimal

from schemas.batch import (
    BatchStatus,
)
from schemas.errors import ErrorKind
from schemas.usage import UsageStatus
from tests.workers.batch_bus import (
    BATCH,
    Bus,
    Upstream,
    _item,
    _until,
    _worker,
    batch_bus,  # noqa: F401 - the ``bus`` fixture
    nats_url_for_batches,  # noqa: F401 - the ``nats_url`` fixture
)
from workers.batch.attempts import ATTEMPTS, run_key
from workers.batch.runner import ACK_WAIT


async def test_a_rerun_item_accounts_each_call_under_its_own_event_id(
    nats_url: str, bus: Bus
) -> None:
    """The first delivery's cancelled call must not shadow the redelivery's paid answer;
    the redelivery's account of the first call, in case its worker died, is a copy under the
    same id, which accounting drops."""
    await bus.set_status(BatchStatus.IN_PROGRESS)
    slow = Upstream(pause=30.0)
    first = await _worker(nats_url, slow)
    await bus.enqueue(_item())

    async def running() -> bool:
        return slow.calls == 1

    await _until(running)
    await first.stop()  # a drain that ran out: the call is cut off, the item not acked
    upstream = Upstream()
    second = await _worker(nats_url, upstream)

    async def answered() -> bool:
        return await bus.result(True) is not None

    await _until(answered, within=ACK_WAIT + 5)
    await second.stop()
    events = first.events + second.events
    assert [(e.status, e.attempt) for e in events] == [
        (UsageStatus.CANCELLED, 0), (UsageStatus.ERROR, 0), (UsageStatus.OK, ATTEMPTS)]
    cancelled, copy, _ = events
    assert copy.event_id == cancelled.event_id and copy.usage_estimated
    assert len({e.event_id for e in events}) == 2  # both calls reach accounting, once each
    assert upstream.calls == 1 and await bus.queued() == 0


async def test_a_call_whose_worker_was_killed_is_accounted_by_the_next_delivery(
    nats_url: str, bus: Bus
) -> None:
    await bus.set_status(BatchStatus.IN_PROGRESS)
    slow = Upstream(pause=30.0)
    first = await _worker(nats_url, slow)
    item = _item()
    await bus.enqueue(item)

    async def running() -> bool:
        return slow.calls == 1

    await _until(running)
    await first.kill()
    upstream = Upstream()
    second = await _worker(nats_url, upstream)

    async def answered() -> bool:
        return await bus.result(True) is not None

    await _until(answered, within=ACK_WAIT + 5)
    await second.stop()
    assert first.events == [] and upstream.calls == 1
    lost, ok = second.events
    assert (lost.status, lost.attempt, lost.error_type, lost.http_status) == (
        UsageStatus.ERROR, 0, ErrorKind.CONNECTION.value, 502)
    # The prompt estimated at four characters a token plus four for the message:
    # "say something " x 10 is 140 characters, 35 tokens, and 4 more.
    expected = 39
    assert (lost.prompt_tokens, lost.completion_tokens, lost.usage_estimated) == (
        expected, 0, True)
    assert lost.cost == Decimal("0.001") * expected and lost.batch_id == BATCH
    assert lost.event_id == f"{item.request.request_id}:0:worker"
    assert (ok.status, ok.attempt, ok.usage_estimated) == (UsageStatus.OK, ATTEMPTS, False)
    # Each delivery recorded the attempt it began, beside the results, not among them.
    for delivery, attempt in ((1, 0), (2, ATTEMPTS)):
        entry = await bus.buckets.runs.get(run_key(item, delivery))
        assert entry.value == str(attempt).encode()


async def test_a_worker_killed_in_a_retry_has_that_retry_accounted(
    nats_url: str, bus: Bus
) -> None:
    await bus.set_status(BatchStatus.IN_PROGRESS)
    slow = Upstream(pause=30.0, limited=1)
    first = await _worker(nats_url, slow)
    await bus.enqueue(_item())

    async def retrying() -> bool:
        return slow.calls == 2

    await _until(retrying)
    await first.kill()
    second = await _worker(nats_url, Upstream())

    async def answered() -> bool:
        return await bus.result(True) is not None

    await _until(answered, within=ACK_WAIT + 5)
    await second.stop()
    # The 429 was published before the kill; the retry it died in is accounted after it.
    assert [(e.status, e.attempt) for e in first.events] == [(UsageStatus.ERROR, 0)]
    assert [(e.status, e.attempt, e.usage_estimated) for e in second.events] == [
        (UsageStatus.ERROR, 1, True), (UsageStatus.OK, ATTEMPTS, False)]
