"""A team admin key, granted by the master key, manages its own team's keys through the
admin API, the CLI and the console alike, sees its team's usage, logs and audit entries,
and nothing of another team's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.e2e.console_gateway import MASTER_KEY, console_gateway, csrf_of, sign_in
from tests.fakes.openai_server import FakeOpenAIState
from tests.harness import Gateway

pytestmark = pytest.mark.e2e


@dataclass(frozen=True)
class Tenants:
    gateway: Gateway
    team_a: str
    team_b: str
    admin_id: str
    admin: str  # team A's admin key
    a_user_id: str
    a_user: str
    b_user_id: str
    b_user: str


def _admin(gateway: Gateway, key: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, gateway.base_url + "/admin" + path, timeout=10,
                         headers={"authorization": f"Bearer {key}"}, **kwargs)


def _chat(gateway: Gateway, key: str, text: str) -> int:
    return httpx.post(gateway.base_url + "/v1/chat/completions", timeout=15,
                      headers={"authorization": f"Bearer {key}"},
                      json={"model": "gpt-4o-mini",
                            "messages": [{"role": "user", "content": text}]}).status_code


@pytest.fixture(scope="module")
def tenants(tmp_path_factory: pytest.TempPathFactory,
            fake_openai: tuple[str, FakeOpenAIState]) -> Iterator[Tenants]:
    with console_gateway(tmp_path_factory.mktemp("team-admin"), fake_openai[0]) as gateway:
        def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
            r = _admin(gateway, MASTER_KEY, "POST", path, json=body)
            assert r.status_code == 200, r.text
            result: dict[str, Any] = r.json()
            return result

        team_a = post("/teams", {"alias": "team-a"})["id"]
        team_b = post("/teams", {"alias": "team-b"})["id"]
        admin = post("/keys", {"alias": "a-admin", "team_id": team_a, "role": "team_admin"})
        a_user = post("/keys", {"alias": "a-user", "team_id": team_a})
        b_user = post("/keys", {"alias": "b-user", "team_id": team_b})
        yield Tenants(gateway, team_a, team_b, admin["id"], admin["secret"], a_user["id"],
                      a_user["secret"], b_user["id"], b_user["secret"])


def test_only_the_master_key_grants_the_role_and_it_needs_a_team(tenants: Tenants) -> None:
    gw = tenants.gateway
    r = _admin(gw, MASTER_KEY, "POST", "/keys", json={"role": "team_admin"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "team_id"
    r = _admin(gw, tenants.a_user, "POST", "/keys", json={"alias": "x"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "admin_only"
    r = _admin(gw, tenants.admin, "POST", "/keys", json={"role": "team_admin"})
    assert r.status_code == 403
    view = _admin(gw, MASTER_KEY, "GET", f"/keys/{tenants.admin_id}").json()
    assert view["role"] == "team_admin" and "secret" not in view


def test_a_team_admin_manages_its_teams_keys_and_nothing_else(tenants: Tenants) -> None:
    gw, admin = tenants.gateway, tenants.admin
    made = _admin(gw, admin, "POST", "/keys", json={"alias": "made-by-admin"})
    assert made.status_code == 200 and made.json()["team_id"] == tenants.team_a
    assert _admin(gw, admin, "POST", "/keys",
                  json={"team_id": tenants.team_b}).status_code == 403
    listed = {k["id"] for k in _admin(gw, admin, "GET", "/keys").json()["data"]}
    assert tenants.a_user_id in listed and made.json()["id"] in listed
    assert tenants.b_user_id not in listed
    also = _admin(gw, admin, "GET", "/keys", params={"team_id": tenants.team_b}).json()["data"]
    assert tenants.b_user_id not in {k["id"] for k in also}
    for method, path, body in (("GET", f"/keys/{tenants.b_user_id}", None),
                               ("PATCH", f"/keys/{tenants.b_user_id}", {"alias": "mine"}),
                               ("POST", f"/keys/{tenants.b_user_id}/rotate", {}),
                               ("DELETE", f"/keys/{tenants.b_user_id}", None)):
        r = _admin(gw, admin, method, path, json=body)
        assert r.status_code == 404, (method, path, r.text)
    assert _chat(gw, tenants.b_user, "b still works") == 200
    # Its own team's user key: limits set, rotated and revoked.
    key_id = made.json()["id"]
    patched = _admin(gw, admin, "PATCH", f"/keys/{key_id}",
                     json={"limits": {"rpm": 7, "daily_budget_usd": "2"}})
    assert patched.status_code == 200 and patched.json()["limits"]["rpm"] == 7
    assert _admin(gw, admin, "PATCH", f"/keys/{key_id}",
                  json={"team_id": tenants.team_b}).status_code == 403
    assert _admin(gw, admin, "PATCH", f"/keys/{key_id}",
                  json={"role": "team_admin"}).status_code == 403
    rotated = _admin(gw, admin, "POST", f"/keys/{key_id}/rotate", json={})
    assert rotated.status_code == 200 and rotated.json()["secret"].startswith("sk-aigw-")
    assert _admin(gw, admin, "DELETE", f"/keys/{key_id}").status_code == 200
    assert _chat(gw, rotated.json()["secret"], "revoked") == 401
    # Not itself, not teams, not the config.
    assert _admin(gw, admin, "PATCH", f"/keys/{tenants.admin_id}",
                  json={"limits": {"rpm": None}}).status_code == 403
    assert [t["id"] for t in _admin(gw, admin, "GET", "/teams").json()["data"]] == [
        tenants.team_a]
    assert _admin(gw, admin, "GET", f"/teams/{tenants.team_b}").status_code == 404
    assert _admin(gw, admin, "POST", "/teams", json={"alias": "new"}).status_code == 403
    assert _admin(gw, admin, "PATCH", f"/teams/{tenants.team_a}",
                  json={"limits": {"daily_budget_usd": "1000"}}).status_code == 403
    assert _admin(gw, admin, "POST", "/config/reload").status_code == 403


def _wait_rows(url: str, key: str, params: dict[str, Any], at_least: int) -> list[Any]:
    deadline = time.monotonic() + 20
    while True:
        rows: list[Any] = httpx.get(url, timeout=10, params=params,
                                    headers={"authorization": f"Bearer {key}"}).json()["data"]
        if len(rows) >= at_least or time.monotonic() > deadline:
            return rows
        time.sleep(0.3)


def test_a_team_admin_sees_its_teams_usage_and_audit_only(tenants: Tenants) -> None:
    gw = tenants.gateway
    assert _chat(gw, tenants.a_user, "team a call") == 200
    assert _chat(gw, tenants.b_user, "team b call") == 200
    made = _admin(gw, tenants.admin, "POST", "/keys", json={"alias": "audited-by-a"}).json()
    _wait_rows(gw.base_url + "/v1/usage/logs", MASTER_KEY, {"limit": 100}, 2)
    rows = _wait_rows(gw.base_url + "/v1/usage/logs", tenants.admin, {"limit": 100}, 1)
    assert rows and {r["team_id"] for r in rows} == {tenants.team_a}
    spied = httpx.get(gw.base_url + "/v1/usage/logs", timeout=10,
                      params={"team_id": tenants.team_b},
                      headers={"authorization": f"Bearer {tenants.admin}"}).json()["data"]
    assert all(r["team_id"] == tenants.team_a for r in spied)
    events = _wait_rows(gw.base_url + "/admin/audit", tenants.admin,
                        {"target_id": made["id"]}, 1)
    assert [e["action"] for e in events] == ["key.create"]
    assert events[0]["actor"] == tenants.admin_id
    everything = _wait_rows(gw.base_url + "/admin/audit", tenants.admin, {"limit": 1000}, 1)
    assert {e["actor_team_id"] for e in everything} == {tenants.team_a}
    master_view = _wait_rows(gw.base_url + "/admin/audit", MASTER_KEY, {"limit": 1000}, 1)
    assert any(e["actor"] == "master" for e in master_view)


def test_the_cli_works_with_a_team_admin_key(tenants: Tenants) -> None:
    env = {**os.environ, "AIGW_URL": tenants.gateway.base_url, "AIGW_ADMIN_KEY": tenants.admin}
    env.pop("AIGW_MASTER_KEY", None)
    listed = subprocess.run([sys.executable, "-m", "cli.main", "keys", "list"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert tenants.a_user_id in listed.stdout and tenants.b_user_id not in listed.stdout
    refused = subprocess.run([sys.executable, "-m", "cli.main", "teams", "create", "--alias",
                              "nope"], env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "master key" in (refused.stdout + refused.stderr)
    made = subprocess.run([sys.executable, "-m", "cli.main", "keys", "create", "--alias",
                           "from-cli"], env=env, capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["team_id"] == tenants.team_a


def test_in_the_console_a_team_admin_sees_and_touches_its_team_only(tenants: Tenants) -> None:
    gw = tenants.gateway
    with httpx.Client(base_url=gw.base_url, timeout=15) as client:
        page = sign_in(client, tenants.admin)
        assert "a-admin (team admin)" in page.text
        csrf = csrf_of(page.text)
        keys = client.get("/ui/keys")
        assert keys.status_code == 200
        assert tenants.a_user_id in keys.text and tenants.b_user_id not in keys.text
        assert client.get(f"/ui/keys/{tenants.b_user_id}").status_code == 403
        assert client.post(f"/ui/keys/{tenants.b_user_id}/revoke",
                           data={"csrf": csrf}).status_code == 403
        for path in ("/ui/teams", "/ui/models"):
            assert client.get(path).status_code == 403, path
        made = client.post("/ui/keys", data={"csrf": csrf, "alias": "console-made",
                                             "team_id": tenants.team_b})
        assert made.status_code == 403
        made = client.post("/ui/keys", data={"csrf": csrf, "alias": "console-made",
                                             "team_id": tenants.team_a, "role": "team_admin"})
        assert made.status_code == 403
        made = client.post("/ui/keys", data={"csrf": csrf, "alias": "console-made",
                                             "team_id": tenants.team_a})
        assert made.status_code == 200 and 'id="secret"' in made.text
        assert tenants.b_user_id not in client.get("/ui/logs").text
        assert client.get("/ui/audit").status_code == 200
    assert _chat(gw, tenants.b_user, "b untouched") == 200
