"""Who may call the admin API (``/admin/keys``, ``/admin/teams``, ``/admin/config/reload``,
``/admin/audit``), through a real ``aigw ingress``'s own authenticator and key store:
every admin route refuses anyone but the master key, changing nothing, and serves the
master key; started without a master key, the admin API is closed to everyone."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from cli.nats_server import NatsServer
from ingress.routes import admin
from tests.e2e.admin_gateway import (
    AS_MASTER,
    MASTER_KEY,
    _bearer,
    _create_key,
    _create_team,
    _error,
    _start,
    admin_api,  # noqa: F401 - the module's ``api`` fixture
    admin_nats,  # noqa: F401 - the module's ``nats`` fixture
    start_admin_gateway,  # noqa: F401 - the module's ``admin_gateway`` fixture
)
from tests.harness import Gateway

pytestmark = pytest.mark.e2e


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
