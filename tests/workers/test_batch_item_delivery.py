"""Which batch item deliveries call the upstream, over a real nats-server: items with a
stored result, of batches not (or no longer) in progress, with results too large for
NATS, and a runner resubscribing after its consumer is lost."""

from __future__ import annotations

import asyncio

import nats
import nats.js.errors
import pytest

from schemas import subjects
from schemas.batch import (
    BatchStatus,
    ItemResult,
    result_key,
)
from tests.workers.batch_bus import (
    BATCH,
    MAX_PAYLOAD,
    Bus,
    Upstream,
    _item,
    _until,
    _worker,
    batch_bus,  # noqa: F401 - the ``bus`` fixture
    nats_url_for_batches,  # noqa: F401 - the ``nats_url`` fixture
)
from workers.batch.ledger import STATUS_TTL
from workers.batch.runner import VALIDATING_DELAY


async def test_a_redelivered_item_with_a_result_is_acked_without_a_call(
    nats_url: str, bus: Bus
) -> None:
    await bus.set_status(BatchStatus.IN_PROGRESS)
    item = _item()
    stored = ItemResult(line=1, custom_id="c1", ok=True, output={"custom_id": "c1"})
    await bus.buckets.results.create(result_key(BATCH, True, 1), stored.model_dump_json()
                                     .encode())
    upstream = Upstream()
    worker = await _worker(nats_url, upstream)
    await bus.enqueue(item)

    async def acked() -> bool:
        return await bus.queued() == 0

    await _until(acked)
    await worker.stop()
    assert upstream.calls == 0 and worker.events == []


async def test_items_of_a_batch_still_validating_wait_until_it_is_in_progress(
    nats_url: str, bus: Bus
) -> None:
    await bus.set_status(BatchStatus.VALIDATING)
    upstream = Upstream()
    worker = await _worker(nats_url, upstream)
    await bus.enqueue(_item())
    await asyncio.sleep(1.5)
    assert upstream.calls == 0 and await bus.queued() == 1
    await bus.set_status(BatchStatus.IN_PROGRESS)

    async def answered() -> bool:
        return await bus.result(True) is not None

    await _until(answered, within=VALIDATING_DELAY + STATUS_TTL + 5)
    await worker.stop()
    assert upstream.calls == 1
    # It waited within its first delivery: none of MAX_DELIVERIES was spent on waiting.
    assert [e.attempt for e in worker.events] == [0]


@pytest.mark.parametrize("status", [BatchStatus.FINALIZING, BatchStatus.COMPLETED,
                                    BatchStatus.CANCELLED, BatchStatus.EXPIRED])
async def test_an_item_of_a_batch_past_in_progress_is_dropped_without_a_call(
    nats_url: str, bus: Bus, status: BatchStatus
) -> None:
    await bus.set_status(status)
    upstream = Upstream()
    worker = await _worker(nats_url, upstream)
    await bus.enqueue(_item())

    async def acked() -> bool:
        return await bus.queued() == 0

    await _until(acked)
    await worker.stop()
    assert upstream.calls == 0 and await bus.result(True) is None


async def test_a_result_too_large_for_nats_ends_the_item_as_an_error_after_one_call(
    nats_url: str, bus: Bus
) -> None:
    await bus.set_status(BatchStatus.IN_PROGRESS)
    upstream = Upstream(answer_bytes=2 * MAX_PAYLOAD)
    worker = await _worker(nats_url, upstream)
    await bus.enqueue(_item())

    async def stored() -> bool:
        return await bus.result(False) is not None

    await _until(stored)
    result = await bus.result(False)
    assert result is not None
    response = result.output["response"]
    assert response["status_code"] == 400
    assert response["body"]["error"]["code"] == "response_too_large"
    assert (result.prompt_tokens, result.completion_tokens) == (7, 3)  # the call was paid
    assert await bus.queued() == 0  # acknowledged: never run again
    await worker.stop()
    assert upstream.calls == 1 and await bus.result(True) is None


async def test_the_runner_leaves_no_subscription_behind_when_fetching_fails(
    nats_url: str, bus: Bus
) -> None:
    worker = await _worker(nats_url, Upstream())

    async def subscribed() -> bool:
        return worker.runner._sub is not None

    async def consumer() -> bool:
        try:
            await bus.js.consumer_info(subjects.BATCH_STREAM, subjects.batch_consumer("openai"))
        except nats.js.errors.NotFoundError:
            return False
        return True

    await _until(subscribed)
    before = len(worker.nc._subs)
    for _ in range(3):  # each fetch against the deleted consumer fails; the runner resubscribes
        await _until(consumer)
        await bus.js.delete_consumer(subjects.BATCH_STREAM, subjects.batch_consumer("openai"))
        await asyncio.sleep(0.2)
    await _until(consumer)
    assert len(worker.nc._subs) <= before
    await worker.stop()
