"""The gateway's processes, each with its own NATS user, on a server that allows each only its
own subjects: keys (and their audit log), calls, usage, analytics, batches and files all
work, and the server refuses nothing they do (no permission violation in its log)."""

from __future__ import annotations

import io
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from cli.bus_config import EmbeddedCredentials
from cli.nats_server import NatsServer
from tests.harness import Gateway, write_config

pytestmark = pytest.mark.e2e
MASTER_KEY = "sk-master-bus-auth"
MASTER = {"authorization": f"Bearer {MASTER_KEY}"}


class RoleGateway(Gateway):
    """The harness's processes, each started with its own role's credentials."""

    credentials: EmbeddedCredentials

    def _spawn(self, name: str, args: list[str],
               env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        return super()._spawn(name, args, {**self.credentials.env(args[0]), **(env or {})})


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RoleGateway, Path]]:
    work = tmp_path_factory.mktemp("bus-auth")
    credentials = EmbeddedCredentials.load_or_create(work)
    server = NatsServer(work / "nats", extra_config=credentials.authorization())
    server.start()
    config = write_config(work / "config.yaml", {
        "model_list": [{"model_name": "mock-gpt", "litellm_params": {"model": "mock/mock-gpt"}}],
        "general_settings": {"master_key": MASTER_KEY},
    })
    gw = RoleGateway(nats_url=server.url, config_path=config, log_dir=work,
                     env={"AIGW_ACCOUNTING_BATCH_AGE": "0.2", "AIGW_SPEND_SEED_INTERVAL": "1"})
    gw.credentials = credentials
    try:
        gw.start_accounting(work / "data")
        gw.start_worker("mock")
        gw.start_ingress()
        gw.wait_ready(60)
        yield gw, work / "nats" / "nats-server.log"
    finally:
        gw.stop()
        server.stop()


def _until(check, within: float = 30.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + within
    while not (found := check()):
        assert time.monotonic() < deadline, "not within the deadline"
        time.sleep(0.2)
    return found


def test_every_role_does_its_job_and_the_server_refuses_nothing(
        secured: tuple[RoleGateway, Path]) -> None:
    gw, server_log = secured
    made = httpx.post(gw.base_url + "/admin/keys", json={"alias": "bus"}, headers=MASTER,
                      timeout=10)
    assert made.status_code in (200, 201), made.text
    key_id, secret = made.json()["id"], made.json()["secret"]
    client = openai.OpenAI(base_url=gw.base_url + "/v1", api_key=secret, max_retries=0)
    answer = client.chat.completions.create(
        model="mock-gpt", messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content
    streamed = list(client.chat.completions.create(
        model="mock-gpt", messages=[{"role": "user", "content": "hi"}], stream=True))
    assert streamed

    def accounted() -> list[object]:
        r = httpx.get(gw.base_url + "/v1/usage/logs", headers=MASTER, timeout=10,
                      params={"key_id": key_id, "days": 1})
        rows = r.json()["data"] if r.status_code == 200 else []
        return rows if len(rows) >= 2 else []

    _until(accounted)

    def audited() -> list[object]:  # the ingress publishes, accounting stores and answers
        r = httpx.get(gw.base_url + "/admin/audit", headers=MASTER, timeout=10,
                      params={"target_id": key_id})
        return r.json()["data"] if r.status_code == 200 else []

    assert [e["action"] for e in _until(audited)] == ["key.create"]

    line = {"custom_id": "one", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]}}
    upload = client.files.create(file=("in.jsonl", io.BytesIO(json.dumps(line).encode())),
                                 purpose="batch")
    batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                                  completion_window="24h")
    done = _until(lambda: (b := client.batches.retrieve(batch.id)).status == "completed" and b)
    output = client.files.content(done.output_file_id).text.splitlines()
    assert [json.loads(x)["custom_id"] for x in output] == ["one"]

    violations = [x for x in server_log.read_text().splitlines() if "Violation" in x]
    assert violations == [], gw.all_logs()
