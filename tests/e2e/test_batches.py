"""The Batch API through the official openai SDK: files in, batches run by real workers over
a real nats-server, output and error files out, each upstream call accounted once."""

from __future__ import annotations

import io
import json
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types import Batch

from cli.nats_server import NatsServer
from tests.e2e.conftest import MASTER_KEY, make_key
from tests.fakes import openai_server
from tests.fakes.server import free_port, serve
from tests.harness import Gateway, write_config
from workers.batch.runner import CONCURRENCY

pytestmark = pytest.mark.e2e

MASTER = {"authorization": f"Bearer {MASTER_KEY}"}
DONE = ("completed", "failed", "cancelled", "expired")


def _client(gateway: Gateway, key: str = MASTER_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url + "/v1", api_key=key, max_retries=0)


def _chat_line(
    custom_id: str, model: str = "gpt-4o-mini", text: str = "Say hello"
) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": text}]}}


def _upload(client: openai.OpenAI, lines: list[Any]) -> str:
    raw = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n"
                  for line in lines)
    return client.files.create(file=("input.jsonl", io.BytesIO(raw.encode())),
                               purpose="batch").id


def _submit(client: openai.OpenAI, lines: list[Any],
            endpoint: str = "/v1/chat/completions") -> Batch:
    return client.batches.create(input_file_id=_upload(client, lines),
                                 endpoint=endpoint,  # type: ignore[arg-type]
                                 completion_window="24h")


def _wait(client: openai.OpenAI, batch_id: str, within: float = 20.0) -> Batch:
    deadline = time.monotonic() + within
    batch = client.batches.retrieve(batch_id)
    while batch.status not in DONE:
        if time.monotonic() > deadline:
            raise AssertionError(f"batch still {batch.status} after {within}s: {batch}")
        time.sleep(0.1)
        batch = client.batches.retrieve(batch_id)
    return batch


def _lines(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [json.loads(x) for x in client.files.content(file_id).text.splitlines()]


# ---- against the session's gateway ---------------------------------------------------------


def test_chat_batch_completes_with_one_output_line_per_request(gateway: Gateway) -> None:
    _, secret = make_key(gateway, alias="batch-chat")
    client = _client(gateway, secret)
    batch = _submit(client, [_chat_line(f"req-{i}") for i in range(5)])
    assert batch.status == "in_progress"
    assert batch.request_counts is not None and batch.request_counts.total == 5

    done = _wait(client, batch.id)
    assert done.status == "completed", done
    assert done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (5, 0)
    assert done.error_file_id is None and done.completed_at is not None
    output = _lines(client, done.output_file_id)
    assert sorted(o["custom_id"] for o in output) == [f"req-{i}" for i in range(5)]
    for line in output:
        assert line["error"] is None
        assert line["response"]["status_code"] == 200
        body = line["response"]["body"]
        assert body["choices"][0]["message"]["content"] == "Hello from the fake OpenAI server."
        assert line["response"]["request_id"] == f"{batch.id}-{line['custom_id']}"
    output_file = client.files.retrieve(done.output_file_id)  # type: ignore[arg-type]
    assert output_file.purpose == "batch_output"


def test_embeddings_batch_completes(gateway: Gateway) -> None:
    client = _client(gateway)
    lines = [{"custom_id": f"e{i}", "method": "POST", "url": "/v1/embeddings",
              "body": {"model": "text-embedding-3-small", "input": f"text {i}"}}
             for i in range(3)]
    done = _wait(client, _submit(client, lines, "/v1/embeddings").id)
    assert done.status == "completed", done
    output = _lines(client, done.output_file_id)
    assert len(output) == 3
    assert all(o["response"]["body"]["data"][0]["object"] == "embedding" for o in output)


def test_bad_lines_fail_the_batch_with_their_line_numbers(gateway: Gateway) -> None:
    client = _client(gateway)
    batch = _submit(client, [
        _chat_line("ok"),
        "{not json",
        _chat_line("unknown", model="no-such-model"),
        {**_chat_line("wrong-url"), "url": "/v1/embeddings"},
        _chat_line("ok"),  # duplicate custom_id
    ])
    assert batch.status == "failed"
    assert batch.errors is not None and batch.errors.data is not None
    by_line = {e.line: e.code for e in batch.errors.data}
    assert by_line == {2: "invalid_json_line", 3: "model_not_found",
                       4: "mismatched_endpoint", 5: "duplicate_custom_id"}
    assert client.batches.retrieve(batch.id).status == "failed"


def test_a_model_the_key_may_not_use_fails_the_batch(gateway: Gateway) -> None:
    _, secret = make_key(gateway, allowed_models=["gpt-4o-mini"])
    client = _client(gateway, secret)
    batch = _submit(client, [_chat_line("a"), _chat_line("b", model="pricey")])
    assert batch.status == "failed"
    assert batch.errors is not None and batch.errors.data is not None
    assert [(e.line, e.code) for e in batch.errors.data] == [(2, "model_not_allowed")]


def test_items_the_upstream_refuses_go_to_the_error_file(gateway: Gateway) -> None:
    client = _client(gateway)
    done = _wait(client, _submit(client, [
        _chat_line("fine"), _chat_line("gone", model="missing-upstream"),
        _chat_line("long", model="tiny-context")]).id)
    assert done.status == "completed", done
    assert done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (1, 2)
    errors = {e["custom_id"]: e["response"] for e in _lines(client, done.error_file_id)}
    assert errors["gone"]["status_code"] == 404
    assert errors["long"]["status_code"] == 400
    assert errors["long"]["body"]["error"]["code"] == "context_length_exceeded"
    assert [o["custom_id"] for o in _lines(client, done.output_file_id)] == ["fine"]


def test_a_key_sees_only_its_own_files_and_batches(gateway: Gateway) -> None:
    _, secret_a = make_key(gateway, alias="batch-owner-a")
    _, secret_b = make_key(gateway, alias="batch-owner-b")
    a, b = _client(gateway, secret_a), _client(gateway, secret_b)
    batch = _submit(a, [_chat_line("mine")])
    with pytest.raises(openai.NotFoundError):
        b.batches.retrieve(batch.id)
    with pytest.raises(openai.NotFoundError):
        b.files.content(batch.input_file_id)
    with pytest.raises(openai.NotFoundError):
        b.batches.create(input_file_id=batch.input_file_id, endpoint="/v1/chat/completions",
                         completion_window="24h")
    assert batch.id not in [x.id for x in b.batches.list()]
    assert batch.id in [x.id for x in a.batches.list()]
    assert _client(gateway).batches.retrieve(batch.id).id == batch.id  # the master sees all
    done = _wait(a, batch.id)
    with pytest.raises(openai.NotFoundError):
        b.files.content(done.output_file_id)  # type: ignore[arg-type]


def test_a_key_whose_budget_is_spent_cannot_start_a_batch(gateway: Gateway) -> None:
    _, secret = make_key(gateway, limits={"daily_budget_usd": "0"})
    client = _client(gateway, secret)
    file_id = _upload(client, [_chat_line("x")])
    with pytest.raises(openai.RateLimitError) as caught:
        client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                              completion_window="24h")
    assert caught.value.code == "budget_exceeded"


def test_what_a_batch_spends_reaches_the_keys_budget(gateway: Gateway) -> None:
    """Batch items are admitted against the key's budget as they run, together with what
    its interactive calls spent: the batch stops where the budget ends."""
    budget = Decimal("0.05")
    key_id, secret = make_key(gateway, limits={"daily_budget_usd": str(budget)})
    client = _client(gateway, secret)
    raw = client.chat.completions.with_raw_response.create(
        model="pricey", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    first = Decimal(raw.headers["x-aigw-cost-usd"])  # a few cents: within the budget
    lines = [{**_chat_line(f"p{i}", model="pricey", text="x")} for i in range(4)]
    for line in lines:
        line["body"]["max_tokens"] = 5
    batch = _wait(client, _submit(client, lines).id)
    assert batch.status == "completed" and batch.request_counts is not None
    counts = batch.request_counts
    assert counts.completed >= 1 and counts.failed >= 1, counts  # it stopped at the budget
    items = _usage(gateway, key_id, batch.id, expected=counts.completed)
    assert first + sum(Decimal(r["cost"]) for r in items) <= budget


def test_bad_requests_get_openai_errors(gateway: Gateway) -> None:
    client = _client(gateway)
    file_id = _upload(client, [_chat_line("x")])
    with pytest.raises(openai.BadRequestError):  # an endpoint batches do not take
        client.batches.create(input_file_id=file_id,
                              endpoint="/v1/images/generations",  # type: ignore[arg-type]
                              completion_window="24h")
    with pytest.raises(openai.NotFoundError):
        client.batches.create(input_file_id="file-nope", endpoint="/v1/chat/completions",
                              completion_window="24h")
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_nope")
    r = httpx.post(gateway.base_url + "/v1/files", headers=MASTER, json={"purpose": "batch"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.post(gateway.base_url + "/v1/files", headers=MASTER, data={"purpose": "batch"},
                   files={"other": ("x", b"1")})
    assert r.status_code == 400 and r.json()["error"]["param"] == "file"


def test_files_can_be_listed_retrieved_and_deleted(gateway: Gateway) -> None:
    _, secret = make_key(gateway, alias="batch-files")
    client = _client(gateway, secret)
    file_id = _upload(client, [_chat_line("x")])
    assert client.files.retrieve(file_id).purpose == "batch"
    assert [f.id for f in client.files.list()] == [file_id]
    assert json.loads(client.files.content(file_id).text)["custom_id"] == "x"
    assert client.files.delete(file_id).deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(file_id)


def test_every_item_is_one_usage_event_with_the_batch_id(
    gateway: Gateway, fake_openai: tuple[str, openai_server.FakeOpenAIState]
) -> None:
    key_id, secret = make_key(gateway, alias="batch-usage")
    client = _client(gateway, secret)
    marker = f"batch-usage-{key_id}"
    done = _wait(client, _submit(client, [_chat_line(f"u{i}", text=f"{marker} u{i}")
                                          for i in range(3)]).id)
    assert done.status == "completed"
    rows = _usage(gateway, key_id, done.id, expected=3)
    # Not synchronisation: the check that nothing is counted twice. An event that should
    # not exist cannot be polled for; one on its way lands within this second.
    time.sleep(1.0)
    rows = _usage(gateway, key_id, done.id, expected=3)
    calls = [body for body in list(fake_openai[1].requests)
             if marker in json.dumps(body.get("messages", ""))]
    # Each item answered once, each upstream call accounted once: a redelivered item
    # (its worker stalled past the ack deadline) makes two calls and two events, never
    # an event without a call.
    seen = [(r["request_id"], r["status"], r.get("error_type")) for r in rows]
    ok = sorted(r["request_id"] for r in rows if r["status"] == "ok")
    assert ok == sorted(f"{done.id}-u{i}" for i in range(3)), seen
    assert len(rows) == len(calls), (seen, len(calls))
    assert len({r["event_id"] for r in rows}) == len(rows), seen


def _usage(gateway: Gateway, key_id: str | None, batch_id: str,
           expected: int, within: float = 20.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + within
    rows: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 1000, "days": 1}
    if key_id is not None:
        params["key_id"] = key_id
    while time.monotonic() < deadline:
        r = httpx.get(gateway.base_url + "/v1/usage/logs", headers=MASTER, timeout=10,
                      params=params)
        if r.status_code == 200:
            rows = [x for x in r.json()["data"] if x.get("batch_id") == batch_id]
            if len(rows) >= expected:
                return rows
        time.sleep(0.2)
    raise AssertionError(f"{len(rows)} usage events for {batch_id}, expected {expected}")


# ---- a gateway of its own: slow upstream, workers killed ------------------------------------


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


# ---- input the gateway must refuse line by line, never with a 500 ---------------------------


def test_a_lone_surrogate_escape_fails_the_batch_at_its_line(gateway: Gateway) -> None:
    client = _client(gateway)
    bad = json.dumps(_chat_line("bad")).replace("Say hello", "\\ud800")
    batch = _submit(client, [_chat_line("ok"), bad])
    assert batch.status == "failed"
    assert batch.errors is not None and batch.errors.data is not None
    # Refused where the line is read, as the inference routes refuse such a body.
    assert [(e.line, e.code) for e in batch.errors.data] == [(2, "invalid_json_line")]
    assert "lone surrogate" in (batch.errors.data[0].message or "")
    assert client.batches.retrieve(batch.id).status == "failed"


def test_a_request_nats_cannot_carry_fails_the_batch_at_its_line(gateway: Gateway) -> None:
    client = _client(gateway)
    huge = _chat_line("huge", text="x" * (9 * 1024 * 1024))  # over the 8 MB max_payload
    batch = _submit(client, [_chat_line("ok"), huge])
    assert batch.status == "failed"
    assert batch.errors is not None and batch.errors.data is not None
    assert [(e.line, e.code) for e in batch.errors.data] == [(2, "request_too_large")]


def test_a_line_separator_inside_a_string_is_not_a_line_break(gateway: Gateway) -> None:
    client = _client(gateway)
    text = "one\u2028two\u0085three"
    line = json.dumps(_chat_line("sep", text=text), ensure_ascii=False)
    assert "\u2028" in line
    done = _wait(client, _submit(client, ["\ufeff" + json.dumps(_chat_line("bom")), line]).id)
    assert done.status == "completed", done
    assert sorted(o["custom_id"] for o in _lines(client, done.output_file_id)) == ["bom", "sep"]


def test_validating_a_big_file_does_not_stall_other_requests(gateway: Gateway) -> None:
    client = _client(gateway)
    # Every line is read in full; the last one fails the batch, so nothing runs.
    lines: list[Any] = [_chat_line(f"m{i}") for i in range(49_999)]
    file_id = _upload(client, [*lines, "{not json"])
    stalls: list[float] = []
    stop = threading.Event()

    def probe() -> None:
        with httpx.Client(base_url=gateway.base_url, timeout=30) as http:
            while not stop.is_set():
                start = time.monotonic()
                http.get("/health/liveness")
                stalls.append(time.monotonic() - start)
                time.sleep(0.01)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        started = time.monotonic()
        batch = client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                                      completion_window="24h")
        took = time.monotonic() - started
    finally:
        stop.set()
        prober.join()
    assert batch.status == "failed"
    assert stalls and max(stalls) < max(0.5, took / 3), (max(stalls), took)
