"""What the master key does with the admin API (``/admin/keys``, ``/admin/teams``) and the
``aigw keys|teams`` commands, against a real ``aigw ingress`` and its key store: a key's
secret shown once, bodies validated field by field, keys patched, rotated and revoked,
teams through their lifecycle, and the CLI's output and errors."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from cli.admin import register
from schemas.keys import hash_secret
from tests.e2e.admin_gateway import (
    AS_MASTER,
    MASTER_KEY,
    _bearer,
    _create_key,
    _create_team,
    _error,
    _models_status,
    admin_api,  # noqa: F401 - the module's ``api`` fixture
    admin_nats,  # noqa: F401 - the module's ``nats`` fixture
    start_admin_gateway,  # noqa: F401 - the module's ``admin_gateway`` fixture
)
from tests.harness import Gateway

pytestmark = pytest.mark.e2e


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
