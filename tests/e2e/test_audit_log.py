"""The audit log end to end: admin actions on a real ``aigw ingress`` become audit events on
JetStream, the real ``aigw accounting`` stores each once in ClickHouse (chDB), and
``GET /admin/audit`` and ``aigw audit`` read them back, with no secret anywhere.

A nats-server of this module's own, so the log holds only what these tests did."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cli.nats_server import NatsServer
from tests.fakes.server import free_port
from tests.harness import Gateway, write_config

pytestmark = pytest.mark.e2e

MASTER_KEY = "sk-master-audit-test"
AS_MASTER = {"authorization": f"Bearer {MASTER_KEY}"}
CONFIG_KEY = "audit-test"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path_factory.mktemp("audit-nats"), port=free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway(nats: NatsServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """An ingress and accounting, no worker: the batch waits, so it can be cancelled."""
    work = tmp_path_factory.mktemp("audit-gateway")
    config = write_config(work / "config.yaml", {
        "model_list": [{"model_name": "m", "litellm_params": {"model": "mock/m"}}],
        "general_settings": {"master_key": MASTER_KEY}})
    gw = Gateway(nats_url=nats.url, config_path=config, log_dir=work,
                 env={"AIGW_SPOOL_DIR": str(work / "spool"), "AIGW_CONFIG_KEY": CONFIG_KEY,
                      "AIGW_ACCOUNTING_BATCH_AGE": "0.2"})
    gw.start_accounting(work / "data")
    gw.start_ingress()
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(gw.base_url + "/health/liveness", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, gw.all_logs()
        time.sleep(0.1)
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def api(gateway: Gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.base_url, timeout=15) as client:
        yield client


def _ok(response: httpx.Response) -> dict[str, Any]:
    assert response.is_success, response.text
    body: dict[str, Any] = response.json()
    return body


def _audit(api: httpx.Client, **params: Any) -> dict[str, Any]:
    return _ok(api.get("/admin/audit", params=params, headers=AS_MASTER))


def _wait_for(api: httpx.Client, count: int, within: float = 30.0,
              **params: Any) -> list[dict[str, Any]]:
    deadline = time.monotonic() + within
    while True:
        response = api.get("/admin/audit", params={**params, "limit": 1000},
                           headers=AS_MASTER)
        if response.status_code == 200:
            data: list[dict[str, Any]] = response.json()["data"]
            if len(data) >= count:
                return data
        assert time.monotonic() < deadline, (response.text, count)
        time.sleep(0.2)


@pytest.fixture(scope="module")
def actions(api: httpx.Client, gateway: Gateway) -> dict[str, Any]:
    """Every kind of admin action, once; what was made, and every secret seen."""
    team = _ok(api.post("/admin/teams", json={"alias": "audit-team", "limits": {"rpm": 10}},
                        headers=AS_MASTER))
    _ok(api.patch(f"/admin/teams/{team['id']}", json={"limits": {"rpm": 20}},
                  headers=AS_MASTER))
    key = _ok(api.post("/admin/keys", json={"alias": "audited", "team_id": team["id"]},
                       headers=AS_MASTER))
    _ok(api.patch(f"/admin/keys/{key['id']}", json={"alias": "renamed"}, headers=AS_MASTER))
    rotated = _ok(api.post(f"/admin/keys/{key['id']}/rotate", json={"grace_seconds": 0},
                           headers=AS_MASTER))
    plain = _ok(api.post("/admin/keys", json={"alias": "plain"}, headers=AS_MASTER))
    _ok(api.delete(f"/admin/keys/{key['id']}", headers=AS_MASTER))
    _ok(api.post("/admin/config/reload", headers=AS_MASTER))
    line = json.dumps({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
                       "body": {"model": "m", "messages": [{"role": "user", "content": "x"}]}})
    upload = _ok(api.post("/v1/files", data={"purpose": "batch"}, headers=AS_MASTER,
                          files={"file": ("in.jsonl", io.BytesIO(line.encode() + b"\n"))}))
    batch = _ok(api.post("/v1/batches", headers=AS_MASTER, json={
        "input_file_id": upload["id"], "endpoint": "/v1/chat/completions",
        "completion_window": "24h"}))
    _ok(api.post(f"/v1/batches/{batch['id']}/cancel", headers=AS_MASTER))
    other = _ok(api.post("/admin/teams", json={"alias": "gone"}, headers=AS_MASTER))
    _ok(api.delete(f"/admin/teams/{other['id']}", headers=AS_MASTER))
    return {"team": team, "key": key, "plain": plain, "batch": batch, "other": other,
            "secrets": [key["secret"], rotated["secret"], plain["secret"], MASTER_KEY]}


def test_each_action_is_in_the_log_once_with_its_changes(
    api: httpx.Client, actions: dict[str, Any]
) -> None:
    _wait_for(api, 11)
    time.sleep(1.0)  # anything stored twice would show up by now
    events = _audit(api, limit=1000)["data"]
    seen = sorted((e["action"], e["target"]["id"]) for e in events)
    key, team, other = actions["key"]["id"], actions["team"]["id"], actions["other"]["id"]
    assert seen == sorted([
        ("team.create", team), ("team.update", team), ("key.create", key),
        ("key.update", key), ("key.rotate", key), ("key.create", actions["plain"]["id"]),
        ("key.revoke", key), ("config.reload", CONFIG_KEY),
        ("batch.cancel", actions["batch"]["id"]), ("team.create", other),
        ("team.delete", other),
    ]), seen
    assert len({e["event_id"] for e in events}) == len(events)
    by = {(e["action"], e["target"]["id"]): e for e in events}
    for event in events:
        assert event["actor"] == "master"
        assert event["actor_kind"] == "master"
        assert event["source_ip"] == "127.0.0.1"
        assert event["request_id"].startswith("req_")
    assert by[("team.update", team)]["changes"] == {
        "limits.rpm": {"before": 10, "after": 20}}
    assert by[("key.update", key)]["changes"] == {
        "alias": {"before": "audited", "after": "renamed"}}
    rotate = by[("key.rotate", key)]["changes"]
    assert rotate["secret"] == {"before": None, "after": "[redacted]"}
    assert set(rotate) == {"secret", "hint"}
    assert by[("key.revoke", key)]["changes"] == {"revoked": {"before": False, "after": True}}
    assert by[("key.create", key)]["changes"]["secret"]["after"] == "[redacted]"
    assert by[("key.create", key)]["changes"]["team_id"] == {"before": None, "after": team}
    assert by[("batch.cancel", actions["batch"]["id"])]["changes"]["status"]["after"] == (
        "cancelling")
    assert by[("config.reload", CONFIG_KEY)]["changes"] == {}  # the file did not change
    assert by[("team.delete", other)]["changes"]["alias"] == {"before": "gone", "after": None}


def test_no_secret_appears_anywhere_in_the_log(
    api: httpx.Client, actions: dict[str, Any]
) -> None:
    _wait_for(api, 11)
    text = api.get("/admin/audit", params={"limit": 1000}, headers=AS_MASTER).text
    for secret in actions["secrets"]:
        assert secret not in text
    assert "secret_hashes" not in text


def test_filters_narrow_the_log(api: httpx.Client, actions: dict[str, Any]) -> None:
    events = _wait_for(api, 11)
    key = actions["key"]["id"]
    by_target = _audit(api, target_kind="key", target_id=key)["data"]
    assert sorted(e["action"] for e in by_target) == [
        "key.create", "key.revoke", "key.rotate", "key.update"]
    assert [e["target"]["id"] for e in _audit(api, action="team.delete")["data"]] == [
        actions["other"]["id"]]
    assert len(_audit(api, actor="master", limit=1000)["data"]) == len(events)
    assert _audit(api, actor="key_nobody")["data"] == []
    oldest = min(e["ts"] for e in events)
    newest = max(e["ts"] for e in events)
    assert _audit(api, until=oldest)["data"] == []
    assert [e["ts"] for e in _audit(api, since=newest)["data"]] == [newest]


def test_pages_cover_the_log_once_newest_first(
    api: httpx.Client, actions: dict[str, Any]
) -> None:
    events = _wait_for(api, 11)
    pages: list[dict[str, Any]] = []
    offset = 0
    while True:
        page = _audit(api, limit=4, offset=offset)
        pages += page["data"]
        if not page["has_more"]:
            break
        offset += 4
    assert [e["event_id"] for e in pages] == [e["event_id"] for e in events]
    assert [e["ts"] for e in pages] == sorted((e["ts"] for e in pages), reverse=True)


def test_bad_filters_are_a_400_naming_the_parameter(api: httpx.Client) -> None:
    for params, param in (({"action": "key.explode"}, "action"), ({"limit": 0}, "limit"),
                          ({"since": "yesterday"}, "since")):
        response = api.get("/admin/audit", params=params, headers=AS_MASTER)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == param


def test_a_plain_key_cannot_read_the_log(api: httpx.Client, actions: dict[str, Any]) -> None:
    response = api.get("/admin/audit", headers={
        "authorization": f"Bearer {actions['secrets'][2]}"})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "admin_only"
    assert api.get("/admin/audit").status_code == 401


def test_a_reload_by_sigusr1_is_recorded_with_the_signal_as_actor(
    api: httpx.Client, gateway: Gateway, actions: dict[str, Any]
) -> None:
    assert gateway.ingress is not None
    gateway.ingress.send_signal(signal.SIGUSR1)
    [event] = _wait_for(api, 1, actor="signal:SIGUSR1")
    assert event["action"] == "config.reload"
    assert event["actor_kind"] == "signal"


def test_aigw_audit_prints_the_log_as_a_table_and_as_json(
    gateway: Gateway, api: httpx.Client, actions: dict[str, Any]
) -> None:
    _wait_for(api, 11)
    env = {**os.environ, "AIGW_URL": gateway.base_url, "AIGW_MASTER_KEY": MASTER_KEY}
    key = actions["key"]["id"]
    run = subprocess.run(
        [sys.executable, "-m", "cli.main", "audit", "--target-id", key],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].split()[:4] == ["TIME", "ACTOR", "ACTION", "TARGET"]
    assert sorted(line.split()[2] for line in lines[1:]) == [
        "key.create", "key.revoke", "key.rotate", "key.update"]
    assert "alias: audited -> renamed" in run.stdout
    as_json = subprocess.run(
        [sys.executable, "-m", "cli.main", "audit", "--json", "--action", "key.rotate"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert as_json.returncode == 0, as_json.stderr
    assert [e["target"]["id"] for e in json.loads(as_json.stdout)["data"]] == [key]
    for secret in actions["secrets"]:
        assert secret not in run.stdout + as_json.stdout
    refused = subprocess.run(
        [sys.executable, "-m", "cli.main", "audit", "--master-key", actions["secrets"][2]],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert refused.returncode == 1
    assert "admin_only" in refused.stderr
