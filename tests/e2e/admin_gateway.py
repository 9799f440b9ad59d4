"""An admin-API gateway for the admin tests: a real ``aigw ingress`` (no worker: the admin
API needs none) over a nats-server of the test module's own, so that key and team listings
hold only what that module made; and the calls the tests make to it.

The fixtures are module-scoped: ``nats``, ``admin_gateway`` (with a master key) and
``api`` (an HTTP client for it). A test module imports ``admin_nats``,
``start_admin_gateway`` and ``admin_api`` and gets a nats-server and a gateway of its own.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cli.nats_server import NatsServer
from tests.fakes.server import free_port
from tests.harness import Gateway, write_config

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


@pytest.fixture(scope="module", name="nats")
def admin_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path_factory.mktemp("admin-nats"), port=free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module", name="admin_gateway")
def start_admin_gateway(nats: NatsServer, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[Gateway]:
    gw = _start(nats, tmp_path_factory.mktemp("admin-gateway"), MASTER_KEY)
    yield gw
    gw.stop()


@pytest.fixture(scope="module", name="api")
def admin_api(admin_gateway: Gateway) -> Iterator[httpx.Client]:
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
