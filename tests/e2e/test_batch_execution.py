"""Batches on a gateway of their own with a slow upstream: a worker stopped or killed
mid-batch (every upstream call accounted once), a cancel that skips the items not yet
started, two replicas sharing the batches, and a NATS restart mid-batch."""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types import Batch

from cli.nats_server import NatsServer
from tests.e2e.batch_client import (
    DONE,
    _chat_line,
    _client,
    _lines,
    _submit,
    _usage,
    _wait,
)
from tests.e2e.conftest import MASTER_KEY
from tests.fakes import openai_server
from tests.fakes.server import free_port, serve
from tests.harness import Gateway, write_config
from workers.batch.runner import CONCURRENCY

pytestmark = pytest.mark.e2e


@pytest.fixture
def slow_upstream() -> Iterator[tuple[str, openai_server.FakeOpenAIState]]:
    state = openai_server.FakeOpenAIState(slow_seconds=1.0)
    with serve(openai_server.create_app(state)) as url:
        yield url, state


@pytest.fixture
def slow_fake(
    slow_upstream: tuple[str, openai_server.FakeOpenAIState]
) -> openai_server.FakeOpenAIState:
    return slow_upstream[1]


@pytest.fixture
def own_gateway(
    slow_upstream: tuple[str, openai_server.FakeOpenAIState], own_nats: NatsServer,
    tmp_path: Path,
) -> Iterator[Gateway]:
    server = own_nats
    url = slow_upstream[0]
    dep = {"api_base": f"{url}/v1", "api_key": "sk-fake"}
    config = write_config(tmp_path / "config.yaml", {
        "model_list": [
            {"model_name": "slow", "litellm_params": {"model": "openai/slow", **dep}},
            {"model_name": "gpt-4o-mini", "litellm_params": {"model": "openai/gpt-4o-mini",
                                                             **dep}}],
        "general_settings": {"master_key": MASTER_KEY},
    })
    gw = Gateway(nats_url=server.url, config_path=config, log_dir=tmp_path,
                 env={"AIGW_ACCOUNTING_BATCH_AGE": "0.2", "AIGW_DRAIN_SECONDS": "0.5"})
    gw.start_accounting(tmp_path / "data")
    gw.start_worker("openai")
    gw.start_ingress()
    gw.wait_ready()
    yield gw
    gw.stop()


def _slow_calls(state: openai_server.FakeOpenAIState) -> Counter[str]:
    return Counter(r["messages"][0]["content"] for r in state.requests
                   if r.get("model") == "slow")


def _replace_worker_mid_batch(
    gateway: Gateway, fake: openai_server.FakeOpenAIState, how: signal.Signals
) -> tuple[Batch, Counter[str]]:
    """A batch of 20 slow items whose worker gets ``how`` while items run upstream, and a
    new worker: the finished batch and the upstream calls per request id."""
    client = _client(gateway)
    total = 20
    batch = _submit(client, [_chat_line(f"k{i}", model="slow", text=f"kill-{i}")
                             for i in range(total)])
    # The worker takes up to CONCURRENCY items at once: wait until as many calls are
    # running upstream (the slow upstream holds each for a second).
    fetched = min(CONCURRENCY, total)
    deadline = time.monotonic() + 10
    while _slow_calls(fake).total() < fetched:
        assert time.monotonic() < deadline, gateway.all_logs()
        time.sleep(0.02)
    _, worker = gateway.workers[0]
    worker.send_signal(how)
    worker.wait(10)
    gateway.start_worker("openai")

    done = _wait(client, batch.id, within=25)
    assert done.status == "completed", gateway.all_logs()
    output = _lines(client, done.output_file_id)
    assert Counter(o["custom_id"] for o in output) == Counter(f"k{i}" for i in range(total))
    calls = Counter(f"{batch.id}-k{text.removeprefix('kill-')}"
                    for text in _slow_calls(fake).elements())
    assert calls.total() > total  # the items cut off ran again
    return done, calls


def _settled_usage(gateway: Gateway, batch_id: str, expected: int) -> list[dict[str, Any]]:
    _usage(gateway, None, batch_id, expected=expected)
    # Not synchronisation: the check that no event comes late or twice. Such an event
    # cannot be polled for; one on its way lands within this time.
    time.sleep(1.5)
    return _usage(gateway, None, batch_id, expected=expected)


def test_every_upstream_call_of_a_batch_is_accounted_once_across_a_worker_restart(
    own_gateway: Gateway, slow_fake: openai_server.FakeOpenAIState
) -> None:
    """SIGTERM with a drain shorter than the calls: the calls cut off are accounted as
    cancelled, and their items' second calls, under attempt numbers of their own, too."""
    batch, calls = _replace_worker_mid_batch(own_gateway, slow_fake, signal.SIGTERM)
    rows = _settled_usage(own_gateway, batch.id, expected=calls.total())
    assert Counter(r["request_id"] for r in rows) == calls, rows
    assert len({r["event_id"] for r in rows}) == len(rows)
    ok = {r["request_id"] for r in rows if r["status"] == "ok"}
    assert ok == {f"{batch.id}-k{i}" for i in range(20)}
    assert any(r["status"] == "cancelled" for r in rows)


def test_a_batch_survives_its_worker_being_killed(
    own_gateway: Gateway, slow_fake: openai_server.FakeOpenAIState
) -> None:
    """A worker killed outright publishes nothing for its calls in flight; the items'
    next deliveries account those calls (estimated), so every call the upstream saw is
    accounted, and nothing is accounted twice."""
    batch, calls = _replace_worker_mid_batch(own_gateway, slow_fake, signal.SIGKILL)
    rows = _settled_usage(own_gateway, batch.id, expected=calls.total())
    accounted = Counter(r["request_id"] for r in rows)
    assert not calls - accounted, (calls, accounted)  # every call has its row
    assert any(r["usage_estimated"] for r in rows)
    assert len({r["event_id"] for r in rows}) == len(rows)
    ok = Counter(r["request_id"] for r in rows if r["status"] == "ok")
    assert set(ok) == {f"{batch.id}-k{i}" for i in range(20)}


def test_cancel_skips_items_not_yet_started(
    own_gateway: Gateway, slow_fake: openai_server.FakeOpenAIState
) -> None:
    client = _client(own_gateway)
    total = 60
    batch = _submit(client, [_chat_line(f"c{i}", model="slow", text=f"cancel-{i}")
                             for i in range(total)])
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status in ("cancelling", "cancelled")
    done = _wait(client, batch.id)
    assert done.status == "cancelled" and done.cancelled_at is not None
    assert done.request_counts is not None
    # each request not run is an error line, as OpenAI writes them
    assert done.request_counts.completed + done.request_counts.failed == total
    assert done.request_counts.completed < total
    assert {e["error"]["code"] for e in _lines(client, done.error_file_id)} == {
        "batch_cancelled"}
    # what was running when the cancel came finished and is in the output; nothing else ran
    ran = {f"c{text.removeprefix('cancel-')}" for text in _slow_calls(slow_fake)}
    assert {o["custom_id"] for o in _lines(client, done.output_file_id)} == ran
    assert done.request_counts.completed == len(ran)
    # Not synchronisation: the check that nothing starts after the cancel. A call that
    # should not happen cannot be polled for; a queued item would start within this time.
    time.sleep(2.5)
    assert len(_slow_calls(slow_fake)) == len(ran)
    with pytest.raises(openai.ConflictError):
        client.batches.cancel(_wait(client, _submit(client, [_chat_line("x")]).id).id)


def test_replicas_share_batches_and_finish_each_once(own_gateway: Gateway) -> None:
    other = free_port()
    own_gateway.start_replica(other)
    deadline = time.monotonic() + 20
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{other}/health/readiness").status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, own_gateway.all_logs()
        time.sleep(0.1)
    a = _client(own_gateway)
    b = openai.OpenAI(base_url=f"http://127.0.0.1:{other}/v1", api_key=MASTER_KEY,
                      max_retries=0)
    batches = [_submit(a, [_chat_line(f"r{n}-{i}") for i in range(3)]) for n in range(3)]
    for batch in batches:
        done = _wait(b, batch.id)
        assert done.status == "completed", own_gateway.all_logs()
        assert len(_lines(b, done.output_file_id)) == 3
        assert a.batches.retrieve(batch.id).output_file_id == done.output_file_id


def test_a_batch_survives_a_nats_restart(
    own_gateway: Gateway, own_nats: NatsServer, slow_fake: openai_server.FakeOpenAIState
) -> None:
    client = _client(own_gateway)
    total = 24
    batch = _submit(client, [_chat_line(f"n{i}", model="slow", text=f"nats-{i}")
                             for i in range(total)])
    deadline = time.monotonic() + 10
    while not _slow_calls(slow_fake):
        assert time.monotonic() < deadline, own_gateway.all_logs()
        time.sleep(0.02)
    own_nats.kill()
    # The calls running now end while NATS is away: every call the upstream took has
    # answered before NATS is back (the workers start none without NATS).
    deadline = time.monotonic() + 10
    while slow_fake.completed < _slow_calls(slow_fake).total():
        assert time.monotonic() < deadline, own_gateway.all_logs()
        time.sleep(0.02)
    own_nats.start()

    deadline = time.monotonic() + 25
    while True:
        try:
            done = client.batches.retrieve(batch.id)
            if done.status in DONE:
                break
        except (openai.APIStatusError, openai.APIConnectionError):
            pass
        assert time.monotonic() < deadline, own_gateway.all_logs()
        time.sleep(0.2)
    assert done.status == "completed", done
    output = _lines(client, done.output_file_id)
    assert Counter(o["custom_id"] for o in output) == Counter(f"n{i}" for i in range(total))
