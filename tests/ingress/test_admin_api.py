"""The admin router and the ``aigw keys|teams`` commands, over a KeyStore on a real
nats-server: the router in a small app of its own, since mounting it is the gateway's job."""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from types import SimpleNamespace
from typing import Any
from uuid import uuid4

import httpx
import nats
import pytest
import uvicorn
from fastapi import FastAPI, Request

from cli.admin import register
from cli.nats_server import NatsServer
from ingress import errors
from ingress.auth.authenticate import presented_key
from ingress.auth.keys import KeyStore, Rejection
from ingress.auth.principal import ANONYMOUS, MASTER, Principal
from ingress.errors import ApiError
from ingress.routes import admin
from schemas.keys import hash_secret
from tests.fakes.server import free_port

MASTER_KEY = "sk-master-admin-test"
AS_MASTER = {"authorization": f"Bearer {MASTER_KEY}"}


class KeyAuthenticator:
    """What the gateway's authenticator does once it knows virtual keys: the master key,
    a virtual key, or a 401 with the reason."""

    def __init__(self, master_key: str | None, store: KeyStore) -> None:
        self._master = master_key.encode() if master_key else None
        self._store = store

    def check(self, request: Request) -> Principal:
        if self._master is None:
            return ANONYMOUS
        key = presented_key(request)
        if key is None:
            raise ApiError(401, "You didn't provide an API key.", code="missing_api_key")
        if hmac.compare_digest(key.encode(), self._master):
            return MASTER
        found = self._store.check(key)
        if isinstance(found, Rejection):
            raise ApiError(401, found.message, code=found.value)
        return found


def admin_app(store: KeyStore, master_key: str | None = MASTER_KEY) -> FastAPI:
    app = FastAPI()
    errors.install(app)
    app.include_router(admin.router, prefix="/admin")
    app.state.gateway = SimpleNamespace(auth=KeyAuthenticator(master_key, store), keys=store)
    return app


@pytest.fixture
async def store(nats_server: NatsServer) -> AsyncIterator[KeyStore]:
    nc = await nats.connect(nats_server.url)
    suffix = uuid4().hex[:12]
    key_store = KeyStore(nc, keys_bucket=f"keys_{suffix}", teams_bucket=f"teams_{suffix}")
    await key_store.start()
    yield key_store
    await key_store.stop()
    await nc.close()


ClientFactory = Callable[..., httpx.AsyncClient]


@pytest.fixture
async def clients(store: KeyStore) -> AsyncIterator[ClientFactory]:
    opened: list[httpx.AsyncClient] = []

    def _client(master_key: str | None = MASTER_KEY) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=admin_app(store, master_key))
        client = httpx.AsyncClient(transport=transport, base_url="http://gateway")
        opened.append(client)
        return client

    yield _client
    for client in opened:
        await client.aclose()


@pytest.fixture
def api(clients: ClientFactory) -> httpx.AsyncClient:
    return clients()


def _error(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    error: dict[str, Any] = body["error"]
    return error


async def _create_key(api: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await api.post("/admin/keys", json=body, headers=AS_MASTER)
    assert response.status_code == 200, response.text
    created: dict[str, Any] = response.json()
    return created


# ---- who may call -----------------------------------------------------------------------


async def test_the_master_key_creates_a_key_and_sees_its_secret_once(
    api: httpx.AsyncClient, store: KeyStore
) -> None:
    created = await _create_key(api, alias="ci", allowed_models=["gpt-4o-mini"],
                                limits={"rpm": 60, "daily_budget_usd": "2.50"},
                                metadata={"owner": "search"})

    assert created["object"] == "key" and created["id"].startswith("key_")
    assert created["secret"].startswith("sk-aigw-")
    assert created["limits"]["daily_budget_usd"] == "2.50"
    assert store.authenticate(created["secret"]) is not None
    shown = await api.get(f"/admin/keys/{created['id']}", headers=AS_MASTER)
    listed = await api.get("/admin/keys", headers=AS_MASTER)
    for text in (shown.text, listed.text):
        assert created["secret"] not in text
        assert hash_secret(created["secret"]) not in text
        assert "secret_hashes" not in text and '"secret"' not in text
    skip = {"secret", "last_used_at"}
    assert {k: v for k, v in shown.json().items() if k not in skip} == {
        k: v for k, v in created.items() if k not in skip}
    assert shown.json()["last_used_at"] is not None  # the authenticate above, not yet flushed
    assert [k["id"] for k in listed.json()["data"]] == [created["id"]]


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/admin/keys"), ("POST", "/admin/keys"), ("GET", "/admin/keys/key_x"),
    ("PATCH", "/admin/keys/key_x"), ("DELETE", "/admin/keys/key_x"),
    ("POST", "/admin/keys/key_x/rotate"), ("GET", "/admin/teams"), ("POST", "/admin/teams"),
    ("GET", "/admin/teams/team_x"), ("PATCH", "/admin/teams/team_x"),
    ("DELETE", "/admin/teams/team_x"),
])
async def test_a_virtual_key_cannot_manage_keys_or_teams(
    api: httpx.AsyncClient, method: str, path: str
) -> None:
    created = await _create_key(api)

    response = await api.request(method, path, json={},
                                 headers={"authorization": f"Bearer {created['secret']}"})

    assert response.status_code == 403
    assert _error(response)["code"] == "admin_only"


async def test_a_missing_or_wrong_key_is_a_401(api: httpx.AsyncClient) -> None:
    assert (await api.get("/admin/keys")).status_code == 401
    wrong = await api.get("/admin/keys", headers={"authorization": "Bearer sk-aigw-nope"})
    assert wrong.status_code == 401
    assert _error(wrong)["code"] == "invalid_api_key"


async def test_a_revoked_key_is_told_so(api: httpx.AsyncClient) -> None:
    created = await _create_key(api)
    revoked = await api.delete(f"/admin/keys/{created['id']}", headers=AS_MASTER)
    assert revoked.status_code == 200 and revoked.json()["revoked"] is True

    response = await api.get("/admin/keys",
                             headers={"authorization": f"Bearer {created['secret']}"})

    assert response.status_code == 401
    assert _error(response)["message"] == "key revoked"


async def test_without_a_master_key_the_admin_api_is_closed(clients: ClientFactory) -> None:
    response = await clients(master_key=None).get("/admin/keys")
    assert response.status_code == 403
    assert _error(response)["code"] == "admin_disabled"


# ---- validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "param"), [
    ({"limits": {"rpm": -1}}, "limits.rpm"),
    ({"limits": {"requests_per_minute": 5}}, "limits.requests_per_minute"),
    ({"alias": "x", "colour": "blue"}, "colour"),
    ({"expires_at": "2030-01-01T00:00:00"}, "expires_at"),
    ({"allowed_models": "gpt-4o"}, "allowed_models"),
    ({"limits": {"daily_budget_usd": "lots"}}, "limits.daily_budget_usd"),
])
async def test_an_invalid_key_body_is_a_400_naming_the_field(
    api: httpx.AsyncClient, body: dict[str, Any], param: str
) -> None:
    response = await api.post("/admin/keys", json=body, headers=AS_MASTER)
    assert response.status_code == 400, response.text
    assert _error(response)["param"] == param


async def test_a_key_for_an_unknown_team_is_a_400_on_team_id(api: httpx.AsyncClient) -> None:
    response = await api.post("/admin/keys", json={"team_id": "team_nope"}, headers=AS_MASTER)
    assert response.status_code == 400
    assert _error(response)["param"] == "team_id"


async def test_an_unknown_id_is_a_404(api: httpx.AsyncClient) -> None:
    for method, path in (("GET", "/admin/keys/key_nope"), ("PATCH", "/admin/keys/key_nope"),
                         ("DELETE", "/admin/keys/key_nope"), ("GET", "/admin/teams/team_nope"),
                         ("DELETE", "/admin/teams/team_nope")):
        response = await api.request(method, path, json={}, headers=AS_MASTER)
        assert response.status_code == 404, (method, path)
        assert _error(response)["param"] == "id"


# ---- keys -------------------------------------------------------------------------------


async def test_patch_changes_only_the_fields_sent(api: httpx.AsyncClient) -> None:
    created = await _create_key(api, alias="a", limits={"rpm": 10, "tpm": 100},
                                allowed_models=["m"])

    response = await api.patch(f"/admin/keys/{created['id']}", headers=AS_MASTER,
                               json={"limits": {"tpm": None}, "metadata": {"env": "prod"}})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["limits"]["rpm"] == 10 and body["limits"]["tpm"] is None
    assert body["alias"] == "a" and body["allowed_models"] == ["m"]
    assert body["metadata"] == {"env": "prod"}


async def test_rotate_returns_a_new_secret_and_keeps_the_old_one_for_the_grace_period(
    api: httpx.AsyncClient, store: KeyStore
) -> None:
    created = await _create_key(api)

    response = await api.post(f"/admin/keys/{created['id']}/rotate",
                              json={"grace_seconds": 300}, headers=AS_MASTER)

    assert response.status_code == 200, response.text
    rotated = response.json()
    assert rotated["id"] == created["id"] and rotated["secret"] != created["secret"]
    assert store.authenticate(created["secret"]) is not None
    assert store.authenticate(rotated["secret"]) is not None
    bad = await api.post(f"/admin/keys/{created['id']}/rotate",
                         json={"grace_seconds": -5}, headers=AS_MASTER)
    assert bad.status_code == 400 and _error(bad)["param"] == "grace_seconds"


async def test_rotate_without_a_body_retires_the_old_secret(
    api: httpx.AsyncClient, store: KeyStore
) -> None:
    created = await _create_key(api)
    response = await api.post(f"/admin/keys/{created['id']}/rotate", headers=AS_MASTER)
    assert response.status_code == 200
    assert store.authenticate(created["secret"]) is None


async def test_a_revoked_key_cannot_be_rotated(api: httpx.AsyncClient) -> None:
    created = await _create_key(api)
    await api.delete(f"/admin/keys/{created['id']}", headers=AS_MASTER)
    response = await api.post(f"/admin/keys/{created['id']}/rotate", headers=AS_MASTER)
    assert response.status_code == 409


async def test_the_key_list_hides_revoked_keys_unless_asked(api: httpx.AsyncClient) -> None:
    kept = await _create_key(api)
    gone = await _create_key(api)
    await api.delete(f"/admin/keys/{gone['id']}", headers=AS_MASTER)

    default = (await api.get("/admin/keys", headers=AS_MASTER)).json()["data"]
    everything = (await api.get("/admin/keys", params={"include_revoked": "true"},
                                headers=AS_MASTER)).json()["data"]

    assert [k["id"] for k in default] == [kept["id"]]
    assert {k["id"] for k in everything} == {kept["id"], gone["id"]}


# ---- teams ------------------------------------------------------------------------------


async def test_team_lifecycle(api: httpx.AsyncClient) -> None:
    response = await api.post("/admin/teams", headers=AS_MASTER, json={
        "alias": "search", "limits": {"monthly_budget_usd": "100"}, "allowed_models": ["a"]})
    assert response.status_code == 200, response.text
    team = response.json()
    assert team["object"] == "team" and team["id"].startswith("team_")

    key = await _create_key(api, team_id=team["id"])
    other = await _create_key(api)
    in_team = (await api.get("/admin/keys", params={"team_id": team["id"]},
                             headers=AS_MASTER)).json()["data"]
    assert [k["id"] for k in in_team] == [key["id"]] != [other["id"]]

    patched = await api.patch(f"/admin/teams/{team['id']}", headers=AS_MASTER,
                              json={"alias": "search-eu", "limits": {"rpm": 5}})
    assert patched.json()["alias"] == "search-eu"
    assert patched.json()["limits"]["monthly_budget_usd"] == "100"
    assert patched.json()["limits"]["rpm"] == 5
    listed = (await api.get("/admin/teams", headers=AS_MASTER)).json()
    assert listed["object"] == "list" and [t["id"] for t in listed["data"]] == [team["id"]]

    busy = await api.delete(f"/admin/teams/{team['id']}", headers=AS_MASTER)
    assert busy.status_code == 409 and "active key" in _error(busy)["message"]
    await api.delete(f"/admin/keys/{key['id']}", headers=AS_MASTER)
    deleted = await api.delete(f"/admin/teams/{team['id']}", headers=AS_MASTER)
    assert deleted.json() == {"id": team["id"], "object": "team", "deleted": True}
    assert (await api.get(f"/admin/teams/{team['id']}", headers=AS_MASTER)).status_code == 404


# ---- aigw keys / aigw teams over real HTTP --------------------------------------------------


@pytest.fixture
async def served(store: KeyStore) -> AsyncIterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(admin_app(store), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task


CliRunner = Callable[..., Awaitable[tuple[int, Any]]]


@pytest.fixture
def aigw(served: str, capsys: pytest.CaptureFixture[str],
         monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("AIGW_MASTER_KEY", MASTER_KEY)

    async def run(*argv: str) -> tuple[int, Any]:
        parser = argparse.ArgumentParser(prog="aigw")
        register(parser.add_subparsers(dest="command", required=True))
        args = parser.parse_args([*argv, "--url", served])
        # The CLI is synchronous; the server runs on this test's event loop.
        code: int = await asyncio.to_thread(args.func, args)
        out, err = capsys.readouterr()
        return code, json.loads(out if code == 0 else err)

    return run


async def test_the_cli_manages_teams_and_keys(aigw: CliRunner, store: KeyStore) -> None:
    code, team = await aigw("teams", "create", "--alias", "search", "--rpm", "100",
                            "--monthly-budget", "50.25", "--model", "a", "--model", "b")
    assert code == 0 and team["limits"]["monthly_budget_usd"] == "50.25"

    code, key = await aigw("keys", "create", "--alias", "ci", "--team", team["id"],
                           "--rpm", "10", "--expires-in", "30d", "--meta", "owner=me")
    assert code == 0 and key["secret"].startswith("sk-aigw-")
    assert key["metadata"] == {"owner": "me"} and key["expires_at"] is not None
    assert store.authenticate(key["secret"]) is not None

    code, updated = await aigw("keys", "update", key["id"], "--rpm", "none", "--no-expiry")
    assert code == 0
    assert updated["limits"]["rpm"] is None and updated["expires_at"] is None
    assert updated["team_id"] == team["id"] and updated["alias"] == "ci"

    code, rotated = await aigw("keys", "rotate", key["id"], "--grace-seconds", "60")
    assert code == 0 and rotated["secret"] != key["secret"]

    code, listed = await aigw("keys", "list", "--team", team["id"])
    assert code == 0 and [k["id"] for k in listed["data"]] == [key["id"]]

    code, revoked = await aigw("keys", "revoke", key["id"])
    assert code == 0 and revoked["revoked"] is True

    code, changed = await aigw("teams", "update", team["id"], "--all-models")
    assert code == 0 and changed["allowed_models"] == []
    code, teams = await aigw("teams", "list")
    assert [t["id"] for t in teams["data"]] == [team["id"]]
    code, deleted = await aigw("teams", "delete", team["id"])
    assert code == 0 and deleted["deleted"] is True


async def test_the_cli_prints_the_gateway_error_and_fails(
    aigw: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, error = await aigw("keys", "get", "key_nope")
    assert code == 1 and error["error"]["code"] == "key_not_found"

    monkeypatch.setenv("AIGW_MASTER_KEY", "sk-wrong")
    code, error = await aigw("keys", "list")
    assert code == 1 and error["error"]["code"] == "invalid_api_key"
