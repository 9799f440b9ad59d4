"""What a tenant's key may see about the gateway: ``GET /health`` only for the models it
may use and without upstream details; the API schema only with a key (or as configured)."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.e2e.conftest import MASTER_KEY, make_key
from tests.fakes.server import free_port
from tests.harness import Gateway

pytestmark = pytest.mark.e2e

MASTER = {"authorization": f"Bearer {MASTER_KEY}"}


def test_a_virtual_key_sees_only_its_models_and_no_upstream_details(gateway: Gateway) -> None:
    _, secret = make_key(gateway, alias="health-view", allowed_models=["gpt-4o-mini"])
    r = httpx.get(gateway.base_url + "/health", timeout=10,
                  headers={"authorization": f"Bearer {secret}"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [d["model_name"] for d in body["deployments"]] == ["gpt-4o-mini"]
    assert set(body["deployments"][0]) == {"model_name", "state"}
    assert set(body) == {"healthy_count", "unhealthy_count", "deployments"}
    # The master key sees every deployment and its details.
    full = httpx.get(gateway.base_url + "/health", headers=MASTER, timeout=10).json()
    names = {d["model_name"] for d in full["deployments"]}
    assert {"gpt-4o-mini", "broken", "limited"} <= names
    assert {"model", "provider", "last_error", "in_flight"} <= set(full["deployments"][0])


def test_a_key_without_a_model_list_sees_every_model_but_no_details(gateway: Gateway) -> None:
    _, secret = make_key(gateway, alias="health-any")
    body = httpx.get(gateway.base_url + "/health", timeout=10,
                     headers={"authorization": f"Bearer {secret}"}).json()
    assert len(body["deployments"]) > 5
    assert all(set(d) == {"model_name", "state"} for d in body["deployments"])


def test_the_api_schema_needs_a_key_by_default_and_docs_are_not_served(
        gateway: Gateway) -> None:
    r = httpx.get(gateway.base_url + "/openapi.json", timeout=10)
    assert r.status_code == 401, r.text
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    _, secret = make_key(gateway, alias="schema-reader")
    r = httpx.get(gateway.base_url + "/openapi.json", timeout=10,
                  headers={"authorization": f"Bearer {secret}"})
    assert r.status_code == 200
    assert "/v1/chat/completions" in r.json()["paths"]
    assert httpx.get(gateway.base_url + "/docs", timeout=10).status_code == 404


def _replica(gateway: Gateway, mode: str) -> str:
    port = free_port()
    proc = gateway.start_replica(port, {"AIGW_API_DOCS": mode})
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None, gateway.logs(f"ingress-{port}")
        try:
            httpx.get(base + "/health/liveliness", timeout=1)
            return base
        except httpx.HTTPError:
            assert time.monotonic() < deadline, gateway.logs(f"ingress-{port}")
            time.sleep(0.1)


def test_the_schema_can_be_public_or_off(gateway: Gateway) -> None:
    public = _replica(gateway, "public")
    assert httpx.get(public + "/openapi.json", timeout=10).status_code == 200
    page = httpx.get(public + "/docs", timeout=10)
    assert page.status_code == 200 and "/openapi.json" in page.text
    off = _replica(gateway, "off")
    for path in ("/openapi.json", "/docs"):
        r = httpx.get(off + path, headers=MASTER, timeout=10)
        assert r.status_code == 404, r.text
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}
