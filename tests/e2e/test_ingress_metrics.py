"""The ingress's /metrics on a running gateway: refusals by scope, cache results, budgets,
and nothing that names a key or a request."""

from __future__ import annotations

import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import MASTER_KEY, make_key
from tests.harness import Gateway

pytestmark = pytest.mark.e2e
ADMIN = {"authorization": f"Bearer {MASTER_KEY}"}


def _metrics(gateway: Gateway) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = httpx.get(gateway.base_url + "/metrics", timeout=5).text
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
           **labels: str) -> float:
    return sum(v for (n, lab), v in found.items()
               if n == name and set(labels.items()) <= set(lab))


def _chat(gateway: Gateway, secret: str, **extra: object) -> httpx.Response:
    return httpx.post(gateway.base_url + "/v1/chat/completions", timeout=30,
                      headers={"authorization": f"Bearer {secret}"},
                      json={"model": "gpt-4o-mini",
                            "messages": [{"role": "user", "content": "count me"}], **extra})


def test_a_refused_request_counts_under_its_scope_and_reason(gateway: Gateway) -> None:
    _, secret = make_key(gateway, limits={"rpm": 1})
    before = _metrics(gateway)
    assert _chat(gateway, secret).status_code == 200
    assert _chat(gateway, secret).status_code == 429
    after = _metrics(gateway)
    refused = ("aigw_limit_refusals_total", {"scope": "key", "reason": "rate_limit"})
    assert _value(after, refused[0], **refused[1]) - _value(before, refused[0], **refused[1]) == 1
    assert (_value(after, "aigw_requests_total", route="/v1/chat/completions",
                   status_class="4xx")
            - _value(before, "aigw_requests_total", route="/v1/chat/completions",
                     status_class="4xx")) == 1
    errors = ("gen_ai_client_operation_duration_seconds_count",
              {"error_type": "rate_limit_exceeded", "gen_ai_request_model": "gpt-4o-mini"})
    assert _value(after, errors[0], **errors[1]) - _value(before, errors[0], **errors[1]) == 1


def test_cache_hits_and_misses_are_counted(gateway: Gateway) -> None:
    before = _metrics(gateway)
    body = {"cache": {"ttl": 60}, "messages": [
        {"role": "user", "content": f"cache me {time.monotonic_ns()}"}]}
    for _ in range(2):
        r = _chat(gateway, MASTER_KEY, **body)
        assert r.status_code == 200, r.text
    after = _metrics(gateway)
    for result in ("miss", "hit"):
        delta = (_value(after, "aigw_cache_requests_total", result=result)
                 - _value(before, "aigw_cache_requests_total", result=result))
        assert delta == 1, result


def test_a_team_budget_shows_its_use_and_no_key_id_appears(gateway: Gateway) -> None:
    r = httpx.post(gateway.base_url + "/admin/teams", headers=ADMIN, timeout=10,
                   json={"alias": "observed", "limits": {"daily_budget_usd": "100"}})
    assert r.status_code in (200, 201), r.text
    team = r.json()["id"]
    key_id, secret = make_key(gateway, team_id=team)
    reply = _chat(gateway, secret, model="pricey")
    assert reply.status_code == 200, reply.text
    rid = reply.headers["x-request-id"]
    deadline = time.monotonic() + 40
    ratio = 0.0
    while ratio == 0.0 and time.monotonic() < deadline:
        ratio = _value(_metrics(gateway), "aigw_budget_utilization_ratio", team=team,
                       period="daily")
        time.sleep(0.5)
    assert ratio > 0
    text = httpx.get(gateway.base_url + "/metrics", timeout=5).text
    assert key_id not in text
    assert secret not in text
    assert rid not in text
