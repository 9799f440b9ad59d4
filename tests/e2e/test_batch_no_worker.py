"""A batch whose provider has no worker: visible while it waits (a metric), and its lines
fail with a no_worker error line once no worker has answered for
``AIGW_BATCH_NO_WORKER_SECONDS``, instead of waiting out the 24 h window. Lines for a
provider that is served still run."""

from __future__ import annotations

import io
import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from cli.nats_server import NatsServer
from tests.fakes.openai_server import FakeOpenAIState
from tests.harness import Gateway, write_config

pytestmark = pytest.mark.e2e

MASTER_KEY = "sk-master-no-worker"


def _gateway(nats: NatsServer, fake_openai: str, tmp_path: Path, after: float) -> Gateway:
    config = write_config(tmp_path / "config.yaml", {
        "model_list": [
            {"model_name": "served", "litellm_params": {
                "model": "openai/gpt-4o-mini", "api_base": fake_openai + "/v1",
                "api_key": "os.environ/FAKE_OPENAI_KEY"}},
            {"model_name": "unserved", "litellm_params": {"model": "mock/none"}},
        ],
        "general_settings": {"master_key": MASTER_KEY}})
    gateway = Gateway(nats_url=nats.url, config_path=config, log_dir=tmp_path,
                      env={"FAKE_OPENAI_KEY": "sk-fake",
                           "AIGW_BATCH_NO_WORKER_SECONDS": str(after)})
    gateway.start_worker("openai")  # and none for mock
    gateway.start_ingress()
    deadline = time.monotonic() + 60
    while True:
        try:
            r = httpx.get(gateway.base_url + "/health/readiness", timeout=2)
            if r.json().get("workers", {}).get("openai") == "ok":
                return gateway
        except (httpx.HTTPError, ValueError):
            pass
        assert time.monotonic() < deadline, gateway.all_logs()
        time.sleep(0.2)


def _submit(gateway: Gateway, models: list[str]) -> tuple[openai.OpenAI, str]:
    client = openai.OpenAI(base_url=gateway.base_url + "/v1", api_key=MASTER_KEY,
                           max_retries=0)
    raw = "".join(json.dumps({
        "custom_id": f"{model}-{i}", "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": model, "messages": [{"role": "user", "content": "hi"}]}}) + "\n"
        for i, model in enumerate(models))
    file = client.files.create(file=("in.jsonl", io.BytesIO(raw.encode())), purpose="batch")
    batch = client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions",
                                  completion_window="24h")
    return client, batch.id


def _stranded(gateway: Gateway) -> float | None:
    text = httpx.get(gateway.base_url + "/metrics", timeout=5).text
    found = re.search(r'^aigw_batches_without_worker\{gen_ai_provider_name="mock"\} (\S+)$',
                      text, re.MULTILINE)
    return float(found[1]) if found else None


def test_a_batch_waiting_on_a_provider_without_workers_is_visible(
        own_nats: NatsServer, fake_openai: tuple[str, FakeOpenAIState], tmp_path: Path) -> None:
    gateway = _gateway(own_nats, fake_openai[0], tmp_path, after=0)  # 0: waits its window
    try:
        client, batch_id = _submit(gateway, ["unserved", "unserved"])
        deadline = time.monotonic() + 20
        while _stranded(gateway) != 1.0:
            assert time.monotonic() < deadline, httpx.get(gateway.base_url + "/metrics").text
            time.sleep(0.2)
        time.sleep(2)
        assert client.batches.retrieve(batch_id).status == "in_progress"
    finally:
        gateway.stop()


def test_its_lines_fail_with_no_worker_after_the_bound_and_the_rest_run(
        own_nats: NatsServer, fake_openai: tuple[str, FakeOpenAIState], tmp_path: Path) -> None:
    gateway = _gateway(own_nats, fake_openai[0], tmp_path, after=2)
    try:
        client, batch_id = _submit(gateway, ["served", "unserved", "served", "unserved"])
        deadline = time.monotonic() + 40
        batch = client.batches.retrieve(batch_id)
        while batch.status not in ("completed", "failed", "cancelled", "expired"):
            assert time.monotonic() < deadline, (batch, gateway.all_logs())
            time.sleep(0.2)
            batch = client.batches.retrieve(batch_id)
        assert batch.status == "completed", batch
        assert batch.request_counts is not None
        assert (batch.request_counts.completed, batch.request_counts.failed) == (2, 2)
        output: list[dict[str, Any]] = [
            json.loads(line) for line in client.files.content(
                batch.output_file_id or "").text.splitlines()]
        errors: list[dict[str, Any]] = [
            json.loads(line) for line in client.files.content(
                batch.error_file_id or "").text.splitlines()]
        assert sorted(line["custom_id"] for line in output) == ["served-0", "served-2"]
        assert sorted(line["custom_id"] for line in errors) == ["unserved-1", "unserved-3"]
        assert {line["error"]["code"] for line in errors} == {"no_worker"}
    finally:
        gateway.stop()
