"""Batch items are routed when they run, as interactive calls are: the group's strategy
minus deployments cooling down, failover to a sibling, fallback models (to another
provider's workers too), and the context-window chain. Real processes: an ingress that
routes, openai and anthropic workers, accounting."""

from __future__ import annotations

import io
import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types import Batch
from starlette.applications import Starlette

from cli.nats_server import NatsServer
from tests.fakes.openai_server import FakeOpenAIState
from tests.harness import Gateway, write_config

pytestmark = pytest.mark.e2e

MASTER_KEY = "sk-master-batch-routing"
MASTER = {"authorization": f"Bearer {MASTER_KEY}"}
DONE = ("completed", "failed", "cancelled", "expired")


@pytest.fixture(scope="module")
def routed(
    tmp_path_factory: pytest.TempPathFactory,
    fake_openai: tuple[str, FakeOpenAIState],
    fake_anthropic: tuple[str, Starlette],
) -> Iterator[tuple[NatsServer, Path, Path]]:
    work = tmp_path_factory.mktemp("batch-routing")
    openai_url = fake_openai[0] + "/v1"

    def openai_entry(alias: str, upstream: str) -> dict[str, object]:
        return {"model_name": alias, "litellm_params": {
            "model": f"openai/{upstream}", "api_base": openai_url,
            "api_key": "os.environ/FAKE_OPENAI_KEY"}}

    config = write_config(work / "config.yaml", {
        "model_list": [
            openai_entry("grp", "fail-500"),  # a group: one deployment always fails
            openai_entry("grp", "gpt-4o-mini"),
            {"model_name": "claude-flaky", "litellm_params": {
                "model": "anthropic/fail-529", "api_base": fake_anthropic[0],
                "api_key": "sk-ant-e2e"}},
            openai_entry("gpt-4o-mini", "gpt-4o-mini"),
            openai_entry("ctx-small", "context-small"),
        ],
        "router_settings": {
            "allowed_fails": 1, "cooldown_time": 120,
            "fallbacks": [{"claude-flaky": ["gpt-4o-mini"]}],
            "context_window_fallbacks": [{"ctx-small": ["gpt-4o-mini"]}],
        },
        "general_settings": {"master_key": MASTER_KEY},
    })
    nats = NatsServer(work / "nats")
    nats.start()
    yield nats, config, work
    nats.stop()


def _start(nats: NatsServer, config: Path, work: Path) -> Gateway:
    gateway = Gateway(nats_url=nats.url, config_path=config, log_dir=work,
                      env={"FAKE_OPENAI_KEY": "sk-fake", "AIGW_ACCOUNTING_BATCH_AGE": "0.2"})
    gateway.start_accounting(work / "data")
    gateway.start_worker("openai")
    gateway.start_worker("anthropic")
    gateway.start_ingress()
    try:
        gateway.wait_ready(60)
    except RuntimeError:
        gateway.stop()
        raise
    return gateway


@pytest.fixture(scope="module")
def gateway(routed: tuple[NatsServer, Path, Path]) -> Iterator[Gateway]:
    gateway = _start(*routed)
    yield gateway
    gateway.stop()


def _client(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url + "/v1", api_key=MASTER_KEY, max_retries=0)


def _run(gateway: Gateway, model: str, count: int, nonce: str) -> tuple[Batch, list[Any]]:
    client = _client(gateway)
    raw = "".join(json.dumps({
        "custom_id": f"{model}-{i}", "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": model, "max_tokens": 5,
                 "messages": [{"role": "user", "content": f"{nonce} item {i}"}]}}) + "\n"
        for i in range(count))
    file = client.files.create(file=("in.jsonl", io.BytesIO(raw.encode())), purpose="batch")
    batch = client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions",
                                  completion_window="24h")
    deadline = time.monotonic() + 90
    while batch.status not in DONE:
        assert time.monotonic() < deadline, f"batch still {batch.status}: {gateway.all_logs()}"
        time.sleep(0.2)
        batch = client.batches.retrieve(batch.id)
    lines: list[Any] = []
    for file_id in (batch.output_file_id, batch.error_file_id):
        if file_id:
            lines += [json.loads(x) for x in client.files.content(file_id).text.splitlines()]
    return batch, lines


def _calls(requests: list[dict[str, Any]], nonce: str) -> Counter[str]:
    """Upstream calls carrying ``nonce``, per upstream model."""
    return Counter(str(r.get("model")) for r in requests
                   if nonce in json.dumps(r.get("messages"), ensure_ascii=False))


def _events(gateway: Gateway, batch_id: str, expected: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 30
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        r = httpx.get(gateway.base_url + "/v1/usage/logs", headers=MASTER, timeout=10,
                      params={"limit": 1000, "days": 1})
        rows = [x for x in r.json()["data"] if x.get("batch_id") == batch_id]
        if len(rows) >= expected:
            time.sleep(1.0)  # nothing more may come: an extra event would be a double count
            r = httpx.get(gateway.base_url + "/v1/usage/logs", headers=MASTER, timeout=10,
                          params={"limit": 1000, "days": 1})
            return [x for x in r.json()["data"] if x.get("batch_id") == batch_id]
        time.sleep(0.3)
    raise AssertionError(f"{len(rows)} usage events, expected {expected}")


def _ok_ids(lines: list[Any]) -> list[str]:
    return sorted(x["custom_id"] for x in lines if x.get("error") is None
                  and x["response"]["status_code"] == 200)


def test_a_failing_deployment_of_the_group_is_left_for_its_sibling_and_cooled_down(
        gateway: Gateway, fake_openai: tuple[str, FakeOpenAIState]) -> None:
    nonce = uuid.uuid4().hex
    batch, lines = _run(gateway, "grp", 40, nonce)
    # At submit time half the items were put on the failing deployment; each moved on to
    # its sibling when it failed, so every item answered, once.
    assert batch.status == "completed" and batch.request_counts is not None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (40, 0), lines
    assert _ok_ids(lines) == sorted(f"grp-{i}" for i in range(40))
    calls = _calls(fake_openai[1].requests, nonce)
    assert calls["gpt-4o-mini"] == 40
    # The breaker took the failing deployment out after its first failures
    # (``allowed_fails: 1``): later items were not sent there at all. Without run-time
    # routing 20 items would have gone there, three times each.
    assert 1 <= calls["fail-500"] <= 20, calls
    events = _events(gateway, batch.id, 40 + calls["fail-500"])
    assert len(events) == 40 + calls["fail-500"]  # each upstream call, once
    assert Counter(e["status"] for e in events) == {"ok": 40, "error": calls["fail-500"]}


def test_an_item_falls_back_to_another_providers_model_and_is_handed_to_its_workers(
        gateway: Gateway, fake_openai: tuple[str, FakeOpenAIState],
        fake_anthropic: tuple[str, Starlette]) -> None:
    nonce = uuid.uuid4().hex
    batch, lines = _run(gateway, "claude-flaky", 6, nonce)
    assert batch.status == "completed" and batch.request_counts is not None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (6, 0), lines
    assert _ok_ids(lines) == sorted(f"claude-flaky-{i}" for i in range(6))
    # Anthropic overloaded once per item (no sibling in the group), then the fallback
    # model's OpenAI deployment answered through an openai worker.
    anthropic_calls = _calls(fake_anthropic[1].state.requests, nonce)
    assert anthropic_calls == {"fail-529": 6}
    assert _calls(fake_openai[1].requests, nonce) == {"gpt-4o-mini": 6}
    events = _events(gateway, batch.id, 12)
    assert len(events) == 12
    assert Counter((e["status"], e["provider"]) for e in events) == {
        ("error", "anthropic"): 6, ("ok", "openai"): 6}
    assert len({e["event_id"] for e in events}) == 12


def test_a_context_too_long_for_the_model_goes_down_its_context_window_chain(
        gateway: Gateway, fake_openai: tuple[str, FakeOpenAIState]) -> None:
    nonce = uuid.uuid4().hex
    batch, lines = _run(gateway, "ctx-small", 3, nonce)
    assert batch.request_counts is not None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (3, 0), lines
    assert _calls(fake_openai[1].requests, nonce) == {"context-small": 3, "gpt-4o-mini": 3}
