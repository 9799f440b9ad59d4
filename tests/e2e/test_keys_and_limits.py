"""Virtual keys, rate limits and budgets through real ingress processes and real Redis."""

from __future__ import annotations

import asyncio
import socket
import time
from decimal import Decimal

import httpx
import openai
import pytest

from tests.e2e.conftest import MASTER_KEY, make_key
from tests.fakes.server import free_port
from tests.harness import Gateway
from tests.redis_server import RedisServer

pytestmark = pytest.mark.e2e
MASTER = {"authorization": f"Bearer {MASTER_KEY}"}
MSG = [{"role": "user", "content": "hello"}]


def _client(gateway: Gateway, secret: str, base: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=(base or gateway.base_url) + "/v1", api_key=secret,
                         max_retries=0)


def test_a_key_uses_only_its_models_and_lists_only_them(gateway: Gateway) -> None:
    _, secret = make_key(gateway, allowed_models=["gpt-4o-mini"])
    client = _client(gateway, secret)
    assert [m.id for m in client.models.list()] == ["gpt-4o-mini"]
    client.chat.completions.create(model="gpt-4o-mini", messages=MSG)  # type: ignore[arg-type]
    with pytest.raises(openai.PermissionDeniedError) as info:
        client.chat.completions.create(model="flaky-group", messages=MSG)  # type: ignore[arg-type]
    assert info.value.code == "model_not_allowed"


def test_a_virtual_key_cannot_manage_keys(gateway: Gateway) -> None:
    _, secret = make_key(gateway)
    r = httpx.get(gateway.base_url + "/admin/keys", headers={"authorization": f"Bearer {secret}"})
    assert r.status_code == 403
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_a_revoked_key_is_refused_within_a_second(gateway: Gateway) -> None:
    key_id, secret = make_key(gateway)
    client = _client(gateway, secret)
    client.models.list()
    revoked = httpx.delete(f"{gateway.base_url}/admin/keys/{key_id}", headers=MASTER)
    assert revoked.status_code == 200
    deadline = time.monotonic() + 1.0
    while True:
        try:
            client.models.list()
        except openai.AuthenticationError as exc:
            assert exc.code == "key_revoked"
            break
        assert time.monotonic() < deadline, "still accepted after 1 s"
        time.sleep(0.05)


def test_rpm_limit_answers_429_with_openai_headers(gateway: Gateway) -> None:
    _, secret = make_key(gateway, limits={"rpm": 3})
    client = _client(gateway, secret)
    for i in range(3):
        raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MSG)  # type: ignore[arg-type]
        assert raw.headers["x-ratelimit-limit-requests"] == "3"
        assert raw.headers["x-ratelimit-remaining-requests"] == str(2 - i)
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="gpt-4o-mini", messages=MSG)  # type: ignore[arg-type]
    assert info.value.code == "rate_limit_exceeded"
    assert float(info.value.response.headers["retry-after"]) > 0


def test_two_ingress_replicas_share_one_limit(gateway: Gateway) -> None:
    port = free_port()
    gateway.start_replica(port)
    other = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(other + "/health/liveliness", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline
        time.sleep(0.1)
    _, secret = make_key(gateway, limits={"rpm": 10})
    # The new key reaches the replica's mirror through the KV watch; listing models costs
    # nothing against the key's rpm.
    deadline = time.monotonic() + 10
    while httpx.get(other + "/v1/models", timeout=2,
                    headers={"authorization": f"Bearer {secret}"}).status_code != 200:
        assert time.monotonic() < deadline, "the replica never learnt the new key"
        time.sleep(0.05)
    ok = 0
    for i in range(16):
        base = gateway.base_url if i % 2 else other
        try:
            _client(gateway, secret, base).chat.completions.create(
                model="gpt-4o-mini", messages=MSG)  # type: ignore[arg-type]
            ok += 1
        except openai.RateLimitError:
            pass
    assert ok == 10


async def test_concurrent_requests_never_overspend_a_budget(gateway: Gateway) -> None:
    budget = Decimal("0.5")
    key_id, secret = make_key(gateway, limits={"daily_budget_usd": str(budget)})
    client = openai.AsyncOpenAI(base_url=gateway.base_url + "/v1", api_key=secret, max_retries=0)

    async def one() -> str:
        try:
            await client.chat.completions.create(model="pricey", messages=MSG, max_tokens=20)  # type: ignore[arg-type]
            return "ok"
        except openai.RateLimitError as exc:
            assert exc.code == "budget_exceeded"
            assert exc.type == "insufficient_quota"
            return "refused"

    results = await asyncio.gather(*(one() for _ in range(100)))
    assert results.count("ok") > 0
    assert results.count("refused") > 0
    # prompt estimate (a few tokens) x $0.001 + 20 output tokens x $0.002
    largest_reservation = Decimal("0.1")
    deadline = time.monotonic() + 20
    http = httpx.AsyncClient(base_url=gateway.base_url, timeout=10)
    while True:
        status = (await http.get("/v1/usage/budget",
                                 headers={"authorization": f"Bearer {secret}"})).json()
        scope = status["scopes"][0]
        if Decimal(scope["daily"]["reserved"]) == 0 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    spent = Decimal(scope["daily"]["spent"])
    assert spent <= budget + largest_reservation
    assert Decimal(scope["daily"]["reserved"]) == 0
    summary = None
    while time.monotonic() < deadline:
        summary = (await http.get("/v1/usage/summary", headers=MASTER,
                                  params={"key_id": key_id, "days": 1})).json()
        if summary["attempts"]["ok"] == results.count("ok"):
            break
        await asyncio.sleep(0.2)
    await http.aclose()
    assert summary is not None
    # the live counter and the ledger agree to the nano-dollar
    assert Decimal(summary["cost"]) == spent
    assert summary["attempts"]["rejected"] == results.count("refused")


def test_spend_counters_are_rebuilt_from_clickhouse_when_redis_is_cold(
    gateway: Gateway, private_redis_server: RedisServer
) -> None:
    key_id, secret = make_key(gateway, limits={"daily_budget_usd": "100"})
    client = _client(gateway, secret)
    for _ in range(3):
        client.chat.completions.create(model="pricey", messages=MSG)  # type: ignore[arg-type]
    deadline = time.monotonic() + 20
    booked = Decimal(0)
    while time.monotonic() < deadline:
        summary = httpx.get(gateway.base_url + "/v1/usage/summary", headers=MASTER,
                            params={"key_id": key_id, "days": 1}).json()
        if summary["attempts"]["ok"] == 3:
            booked = Decimal(summary["cost"])
            break
        time.sleep(0.2)
    assert booked > 0
    port = free_port()
    gateway.start_replica(port, env={"REDIS_URL": private_redis_server.url})
    other = f"http://127.0.0.1:{port}"
    while True:
        try:
            r = httpx.get(other + "/v1/usage/budget", timeout=2,
                          headers={"authorization": f"Bearer {secret}"})
            if r.status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline + 20
        time.sleep(0.1)
    daily = r.json()["scopes"][0]["daily"]
    assert Decimal(daily["spent"]) == booked


def _raw_get(gateway: Gateway, path: str) -> int:
    """The status of a GET sent with ``path`` exactly as written (clients would tidy
    ``..`` away before sending)."""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as conn:
        conn.sendall(f"GET {path} HTTP/1.1\r\nhost: gw\r\nconnection: close\r\n\r\n".encode())
        head = conn.recv(64)
    return int(head.split()[1])


def test_health_probes_count_against_no_limit_and_open_no_other_route(
        gateway: Gateway) -> None:
    _, secret = make_key(gateway, limits={"rpm": 2})
    auth = {"authorization": f"Bearer {secret}"}
    for _ in range(5):
        for path in ("/health/liveliness", "/health/readiness", "/health"):
            assert httpx.get(gateway.base_url + path, headers=auth,
                             timeout=10).status_code in (200, 503), path
    raw = _client(gateway, secret).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MSG)  # type: ignore[arg-type]
    assert raw.headers["x-ratelimit-remaining-requests"] == "1"  # the probes took none
    for path in ("/health/../v1/models", "/health/liveliness/../../v1/models",
                 "/health%2F..%2Fv1%2Fmodels", "/v1/models?/health/liveliness",
                 "/health/liveliness/../../admin/keys"):
        assert _raw_get(gateway, path) in (401, 404), path
