"""The admin API (``/admin/keys``, ``/admin/teams``, ``/admin/config/reload``) and the
``aigw keys|teams`` commands against a real ``aigw ingress`` process: the gateway's own
authenticator and key store, over a nats-server of this module's own (so that key and team
listings hold only what these tests made)."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from cli.admin import register
from cli.nats_server import NatsServer
from ingress.routes import admin
from schemas.keys import hash_secret
from tests.fakes.server import free_port
from tests.harness import Gateway, write_config

pytestmark = pytest.mark.e2e

MASTER_KEY = "sk-master-admin-test"
AS_MASTER = {"authorization": f"Bearer {MASTER_KEY}"}


def _config(master_key: str | None) -> dict[str, object]:
    config: dict[str, object] = {
        "model_list": [{"model_name": "m", "litellm_params": {"model": "mock/m"}}]}
    if master_key is not None:
        config["general_settings"] = {"master_key": master_key}
    return config


def _start(nats: NatsServer, work: Path, master_key: str | None) -> Gateway:
    """An ingress alone (no worker: the admin API needs none), once it answers HTTP, which
    uvicorn does only after the app's start-up, key store included, is done."""
    work.mkdir(parents=True, exist_ok=True)
    gw = Gateway(nats_url=nats.url, log_dir=work,
                 config_path=write_config(work / "config.yaml", _config(master_key)))
    gw.start_ingress()
    assert gw.ingress is not None
    deadline = time.monotonic() + 30
    while True:
        if gw.ingress.poll() is not None:
            raise RuntimeError(f"ingress exited: {gw.logs('ingress')}")
        try:
            if httpx.get(gw.base_url + "/health/liveness", timeout=1).status_code == 200:
                return gw
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            gw.stop()
            raise RuntimeError(f"ingress not listening: {gw.logs('ingress')}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path_factory.mktemp("admin-nats"), port=free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def admin_gateway(nats: NatsServer, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[Gateway]:
    gw = _start(nats, tmp_path_factory.mktemp("admin-gateway"), MASTER_KEY)
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def api(admin_gateway: Gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=admin_gateway.base_url, timeout=10) as client:
        yield client


def _error(response: httpx.Response) -> dict[str, Any]:
    """The OpenAI error body, checked for its shape."""
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str) and error["type"]
    return error


def _create_key(api: httpx.Client, **body: Any) -> dict[str, Any]:
    response = api.post("/admin/keys", json=body, headers=AS_MASTER)
    assert response.status_code == 200, response.text
    created: dict[str, Any] = response.json()
    return created


def _create_team(api: httpx.Client, **body: Any) -> dict[str, Any]:
    response = api.post("/admin/teams", json=body, headers=AS_MASTER)
    assert response.status_code == 200, response.text
    team: dict[str, Any] = response.json()
    return team


def _bearer(secret: str) -> dict[str, str]:
    return {"authorization": f"Bearer {secret}"}


def _models_status(api: httpx.Client, secret: str) -> int:
    """What the gateway's authenticator makes of ``secret`` on an ordinary route."""
    return api.get("/v1/models", headers=_bearer(secret)).status_code


# ---- who may call: every admin route, through the gateway's own authenticator ----------

# Each route with a body it accepts and the ``object`` of its answer; ``{key}`` and
# ``{team}`` stand for a key and a team made for the test.
ROUTES: list[tuple[str, str, dict[str, Any] | None, str | None]] = [
    ("POST", "/admin/keys", {"alias": "made"}, "key"),
    ("GET", "/admin/keys", None, "list"),
    ("GET", "/admin/keys/{key}", None, "key"),
    ("PATCH", "/admin/keys/{key}", {"alias": "renamed"}, "key"),
    ("DELETE", "/admin/keys/{key}", None, "key"),
    ("POST", "/admin/keys/{key}/rotate", {"grace_seconds": 0}, "key"),
    ("POST", "/admin/teams", {"alias": "made"}, "team"),
    ("GET", "/admin/teams", None, "list"),
    ("GET", "/admin/teams/{team}", None, "team"),
    ("PATCH", "/admin/teams/{team}", {"alias": "renamed"}, "team"),
    ("DELETE", "/admin/teams/{team}", None, "team"),
    ("POST", "/admin/config/reload", None, None),
    ("GET", "/admin/audit", None, "list"),
]
ROUTE_IDS = [f"{method} {path}" for method, path, _, _ in ROUTES]


def test_the_route_table_covers_every_admin_route() -> None:
    mounted = {(method, "/admin" + route.path) for route in admin.router.routes
               if isinstance(route, APIRoute) for method in route.methods or ()}
    listed = {(method, path.replace("{key}", "{key_id}").replace("{team}", "{team_id}"))
              for method, path, _, _ in ROUTES}
    assert listed == mounted


def _everything(api: httpx.Client) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every key (revoked ones too) and every team, as the master key sees them, but for
    ``last_used_at``, which a refused virtual key still moves."""
    keys = api.get("/admin/keys", params={"include_revoked": "true"}, headers=AS_MASTER)
    teams = api.get("/admin/teams", headers=AS_MASTER)
    assert keys.status_code == teams.status_code == 200
    return ([{k: v for k, v in key.items() if k != "last_used_at"}
             for key in keys.json()["data"]], teams.json()["data"])


@pytest.fixture
def targets(api: httpx.Client) -> dict[str, str]:
    """A key (in no team) and a team with no key, for the routes that name one."""
    return {"key": _create_key(api, alias="target")["id"],
            "team": _create_team(api, alias="target")["id"]}


@pytest.fixture(scope="module")
def callers(api: httpx.Client) -> dict[str, tuple[dict[str, str], int, str]]:
    """Who is refused, as what: headers, status and error code."""
    live = _create_key(api, alias="tenant")
    revoked = _create_key(api, alias="tenant-revoked")
    assert api.delete(f"/admin/keys/{revoked['id']}", headers=AS_MASTER).status_code == 200
    return {
        "no key": ({}, 401, "missing_api_key"),
        "a wrong key": (_bearer("sk-aigw-nope"), 401, "invalid_api_key"),
        "the master key, misspelt": (_bearer(MASTER_KEY + "x"), 401, "invalid_api_key"),
        "a revoked virtual key": (_bearer(revoked["secret"]), 401, "key_revoked"),
        "a virtual key": (_bearer(live["secret"]), 403, "admin_only"),
        "a virtual key as x-api-key": ({"x-api-key": live["secret"]}, 403, "admin_only"),
    }


CALLERS = ["no key", "a wrong key", "the master key, misspelt", "a revoked virtual key",
           "a virtual key", "a virtual key as x-api-key"]


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize(("method", "path", "body", "kind"), ROUTES, ids=ROUTE_IDS)
def test_an_admin_route_refuses_anyone_but_the_master_key(
    api: httpx.Client, targets: dict[str, str],
    callers: dict[str, tuple[dict[str, str], int, str]],
    caller: str, method: str, path: str, body: dict[str, Any] | None, kind: str | None,
) -> None:
    headers, status, code = callers[caller]
    before = _everything(api)

    response = api.request(method, path.format(**targets), json=body, headers=headers)

    assert response.status_code == status, response.text
    error = _error(response)
    assert error["code"] == code
    assert error["type"] == ("permission_error" if status == 403 else "invalid_request_error")
    assert _everything(api) == before  # refused before anything was done


@pytest.mark.parametrize(("method", "path", "body", "kind"), ROUTES, ids=ROUTE_IDS)
def test_an_admin_route_serves_the_master_key(
    api: httpx.Client, targets: dict[str, str],
    method: str, path: str, body: dict[str, Any] | None, kind: str | None,
) -> None:
    response = api.request(method, path.format(**targets), json=body, headers=AS_MASTER)

    if path == "/admin/audit" and response.status_code == 503:
        # This module runs no accounting service, which answers the audit log; the log
        # itself is tested in test_audit_log.py.
        assert _error(response)["code"] == "accounting_unavailable"
        return
    assert response.status_code == 200, response.text
    answer = response.json()
    if kind is None:  # the config reload: the file is served, and unchanged
        assert (answer["applied"], answer["changed"]) == (True, False)
    else:
        assert answer["object"] == kind
    if "{key}" in path or "{team}" in path:
        assert answer["id"] == targets["key" if "{key}" in path else "team"]


@pytest.fixture(scope="module")
def open_gateway(nats: NatsServer, tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[Gateway]:
    """A gateway started without a master key."""
    gw = _start(nats, tmp_path_factory.mktemp("admin-open"), None)
    yield gw
    gw.stop()


@pytest.mark.parametrize(("method", "path", "body", "kind"), ROUTES, ids=ROUTE_IDS)
def test_without_a_master_key_the_admin_api_is_closed(
    open_gateway: Gateway, method: str, path: str, body: dict[str, Any] | None,
    kind: str | None,
) -> None:
    url = open_gateway.base_url + path.format(key="key_x", team="team_x")
    for headers in ({}, AS_MASTER):
        response = httpx.request(method, url, json=body, headers=headers, timeout=10)
        assert response.status_code == 403, response.text
        assert _error(response)["code"] == "admin_disabled"


# ---- what the master key sees ------------------------------------------------------------


def test_the_master_key_creates_a_key_and_sees_its_secret_once(api: httpx.Client) -> None:
    created = _create_key(api, alias="ci", allowed_models=["m"],
                          limits={"rpm": 60, "daily_budget_usd": "2.50"},
                          metadata={"owner": "search"})

    assert created["object"] == "key" and created["id"].startswith("key_")
    assert created["secret"].startswith("sk-aigw-")
    assert created["limits"]["daily_budget_usd"] == "2.50"
    assert created["last_used_at"] is None
    assert _models_status(api, created["secret"]) == 200
    shown = api.get(f"/admin/keys/{created['id']}", headers=AS_MASTER)
    listed = api.get("/admin/keys", headers=AS_MASTER)
    for text in (shown.text, listed.text):
        assert created["secret"] not in text
        assert hash_secret(created["secret"]) not in text
        assert "secret_hashes" not in text and '"secret"' not in text
    skip = {"secret", "last_used_at"}
    assert {k: v for k, v in shown.json().items() if k not in skip} == {
        k: v for k, v in created.items() if k not in skip}
    assert shown.json()["last_used_at"] is not None  # the /v1/models call, not yet flushed
    assert created["id"] in [k["id"] for k in listed.json()["data"]]


# ---- validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "param"), [
    ({"limits": {"rpm": -1}}, "limits.rpm"),
    ({"limits": {"requests_per_minute": 5}}, "limits.requests_per_minute"),
    ({"alias": "x", "colour": "blue"}, "colour"),
    ({"expires_at": "2030-01-01T00:00:00"}, "expires_at"),
    ({"allowed_models": "gpt-4o"}, "allowed_models"),
    ({"limits": {"daily_budget_usd": "lots"}}, "limits.daily_budget_usd"),
])
def test_an_invalid_key_body_is_a_400_naming_the_field(
    api: httpx.Client, body: dict[str, Any], param: str
) -> None:
    response = api.post("/admin/keys", json=body, headers=AS_MASTER)
    assert response.status_code == 400, response.text
    assert _error(response)["param"] == param


def test_a_key_for_an_unknown_team_is_a_400_on_team_id(api: httpx.Client) -> None:
    response = api.post("/admin/keys", json={"team_id": "team_nope"}, headers=AS_MASTER)
    assert response.status_code == 400
    assert _error(response)["param"] == "team_id"


def test_an_unknown_id_is_a_404(api: httpx.Client) -> None:
    for method, path in (("GET", "/admin/keys/key_nope"), ("PATCH", "/admin/keys/key_nope"),
                         ("DELETE", "/admin/keys/key_nope"),
                         ("POST", "/admin/keys/key_nope/rotate"),
                         ("GET", "/admin/teams/team_nope"), ("PATCH", "/admin/teams/team_nope"),
                         ("DELETE", "/admin/teams/team_nope")):
        response = api.request(method, path, json={}, headers=AS_MASTER)
        assert response.status_code == 404, (method, path, response.text)
        assert _error(response)["param"] == "id"


# ---- keys -------------------------------------------------------------------------------


def test_patch_changes_only_the_fields_sent(api: httpx.Client) -> None:
    created = _create_key(api, alias="a", limits={"rpm": 10, "tpm": 100}, allowed_models=["m"])

    response = api.patch(f"/admin/keys/{created['id']}", headers=AS_MASTER,
                         json={"limits": {"tpm": None}, "metadata": {"env": "prod"}})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["limits"]["rpm"] == 10 and body["limits"]["tpm"] is None
    assert body["alias"] == "a" and body["allowed_models"] == ["m"]
    assert body["metadata"] == {"env": "prod"}


def test_rotate_returns_a_new_secret_and_keeps_the_old_one_for_the_grace_period(
    api: httpx.Client
) -> None:
    created = _create_key(api)

    response = api.post(f"/admin/keys/{created['id']}/rotate",
                        json={"grace_seconds": 300}, headers=AS_MASTER)

    assert response.status_code == 200, response.text
    rotated = response.json()
    assert rotated["id"] == created["id"] and rotated["secret"] != created["secret"]
    assert _models_status(api, created["secret"]) == 200
    assert _models_status(api, rotated["secret"]) == 200
    bad = api.post(f"/admin/keys/{created['id']}/rotate",
                   json={"grace_seconds": -5}, headers=AS_MASTER)
    assert bad.status_code == 400 and _error(bad)["param"] == "grace_seconds"


def test_rotate_without_a_body_retires_the_old_secret(api: httpx.Client) -> None:
    created = _create_key(api)
    response = api.post(f"/admin/keys/{created['id']}/rotate", headers=AS_MASTER)
    assert response.status_code == 200
    # The replica applies its own write to its mirror at once: no waiting for the watch.
    # With no grace period the old secret is gone, as unknown as one never issued.
    old = api.get("/v1/models", headers=_bearer(created["secret"]))
    assert old.status_code == 401 and _error(old)["code"] == "invalid_api_key"
    assert _models_status(api, response.json()["secret"]) == 200


def test_a_revoked_key_cannot_be_rotated(api: httpx.Client) -> None:
    created = _create_key(api)
    api.delete(f"/admin/keys/{created['id']}", headers=AS_MASTER)
    response = api.post(f"/admin/keys/{created['id']}/rotate", headers=AS_MASTER)
    assert response.status_code == 409
    assert _error(response)["code"] == "conflict"


def test_the_key_list_hides_revoked_keys_unless_asked(api: httpx.Client) -> None:
    team = _create_team(api, alias="listing")  # the listing holds only this test's keys
    kept = _create_key(api, team_id=team["id"])
    gone = _create_key(api, team_id=team["id"])
    api.delete(f"/admin/keys/{gone['id']}", headers=AS_MASTER)

    in_team = {"team_id": team["id"]}
    default = api.get("/admin/keys", params=in_team, headers=AS_MASTER).json()["data"]
    everything = api.get("/admin/keys", params={**in_team, "include_revoked": "true"},
                         headers=AS_MASTER).json()["data"]

    assert [k["id"] for k in default] == [kept["id"]]
    assert {k["id"] for k in everything} == {kept["id"], gone["id"]}


# ---- teams ------------------------------------------------------------------------------


def test_team_lifecycle(api: httpx.Client) -> None:
    response = api.post("/admin/teams", headers=AS_MASTER, json={
        "alias": "search", "limits": {"monthly_budget_usd": "100"}, "allowed_models": ["m"]})
    assert response.status_code == 200, response.text
    team = response.json()
    assert team["object"] == "team" and team["id"].startswith("team_")

    key = _create_key(api, team_id=team["id"])
    other = _create_key(api)
    in_team = api.get("/admin/keys", params={"team_id": team["id"]},
                      headers=AS_MASTER).json()["data"]
    assert [k["id"] for k in in_team] == [key["id"]] != [other["id"]]

    patched = api.patch(f"/admin/teams/{team['id']}", headers=AS_MASTER,
                        json={"alias": "search-eu", "limits": {"rpm": 5}})
    assert patched.json()["alias"] == "search-eu"
    assert patched.json()["limits"]["monthly_budget_usd"] == "100"
    assert patched.json()["limits"]["rpm"] == 5
    listed = api.get("/admin/teams", headers=AS_MASTER).json()
    assert listed["object"] == "list" and team["id"] in [t["id"] for t in listed["data"]]

    busy = api.delete(f"/admin/teams/{team['id']}", headers=AS_MASTER)
    assert busy.status_code == 409 and "active key" in _error(busy)["message"]
    api.delete(f"/admin/keys/{key['id']}", headers=AS_MASTER)
    deleted = api.delete(f"/admin/teams/{team['id']}", headers=AS_MASTER)
    assert deleted.json() == {"id": team["id"], "object": "team", "deleted": True}
    assert api.get(f"/admin/teams/{team['id']}", headers=AS_MASTER).status_code == 404


# ---- aigw keys / aigw teams against the running gateway ----------------------------------


CliRunner = Callable[..., tuple[int, Any]]


@pytest.fixture
def aigw(admin_gateway: Gateway, capsys: pytest.CaptureFixture[str],
         monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("AIGW_MASTER_KEY", MASTER_KEY)

    def run(*argv: str) -> tuple[int, Any]:
        parser = argparse.ArgumentParser(prog="aigw")
        register(parser.add_subparsers(dest="command", required=True))
        args = parser.parse_args([*argv, "--url", admin_gateway.base_url])
        code: int = args.func(args)
        out, err = capsys.readouterr()
        return code, json.loads(out if code == 0 else err)

    return run


def test_the_cli_manages_teams_and_keys(aigw: CliRunner, api: httpx.Client) -> None:
    code, team = aigw("teams", "create", "--alias", "search", "--rpm", "100",
                      "--monthly-budget", "50.25", "--model", "a", "--model", "b")
    assert code == 0 and team["limits"]["monthly_budget_usd"] == "50.25"

    code, key = aigw("keys", "create", "--alias", "ci", "--team", team["id"],
                     "--rpm", "10", "--expires-in", "30d", "--meta", "owner=me")
    assert code == 0 and key["secret"].startswith("sk-aigw-")
    assert key["metadata"] == {"owner": "me"} and key["expires_at"] is not None
    assert _models_status(api, key["secret"]) == 200

    code, updated = aigw("keys", "update", key["id"], "--rpm", "none", "--no-expiry")
    assert code == 0
    assert updated["limits"]["rpm"] is None and updated["expires_at"] is None
    assert updated["team_id"] == team["id"] and updated["alias"] == "ci"

    code, rotated = aigw("keys", "rotate", key["id"], "--grace-seconds", "60")
    assert code == 0 and rotated["secret"] != key["secret"]
    assert _models_status(api, rotated["secret"]) == 200

    code, listed = aigw("keys", "list", "--team", team["id"])
    assert code == 0 and [k["id"] for k in listed["data"]] == [key["id"]]

    code, revoked = aigw("keys", "revoke", key["id"])
    assert code == 0 and revoked["revoked"] is True
    assert _models_status(api, rotated["secret"]) == 401

    code, changed = aigw("teams", "update", team["id"], "--all-models")
    assert code == 0 and changed["allowed_models"] == []
    code, teams = aigw("teams", "list")
    assert code == 0 and team["id"] in [t["id"] for t in teams["data"]]
    code, deleted = aigw("teams", "delete", team["id"])
    assert code == 0 and deleted["deleted"] is True


def test_the_cli_prints_the_gateway_error_and_fails(
    aigw: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, error = aigw("keys", "get", "key_nope")
    assert code == 1 and error["error"]["code"] == "key_not_found"

    monkeypatch.setenv("AIGW_MASTER_KEY", "sk-wrong")
    code, error = aigw("keys", "list")
    assert code == 1 and error["error"]["code"] == "invalid_api_key"
