"""Metrics of a running ``aigw up``: every process scraped, the figures equal the usage API's."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.test_embedded import Up
from tests.prometheus_server import PrometheusServer, prometheus_tool

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
METRICS_KEY = "metrics-secret"


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    work = tmp_path_factory.mktemp("observed")
    gateway = Up([], {"AIGW_ACCOUNTING_BATCH_AGE": "0.2", "AIGW_LOG_LEVEL": "WARNING",
                      "AIGW_METRICS_KEY": METRICS_KEY}, work)
    gateway.wait_ready()
    _wait_for_every_target(gateway)
    yield gateway
    gateway.stop()


def _wait_for_every_target(up: Up) -> None:
    """Accounting opens its port after ClickHouse's migrations: wait for every process."""
    auth = {"authorization": f"Bearer {METRICS_KEY}"}
    targets = httpx.get(_base(up) + "/health/targets", headers=auth, timeout=5).json()
    deadline = time.monotonic() + 30
    for target in targets:
        health = target["url"].removesuffix("/metrics") + "/health/readiness"
        while True:
            try:
                if httpx.get(health, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"{target} not ready"
            time.sleep(0.2)


def _base(up: Up) -> str:
    return f"http://127.0.0.1:{up.port}"


def _samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, s.labels, s.value)
            for family in text_string_to_metric_families(text) for s in family.samples]


def _scrape_all(up: Up) -> list[tuple[str, dict[str, str], float]]:
    auth = {"authorization": f"Bearer {METRICS_KEY}"}
    targets = httpx.get(_base(up) + "/health/targets", headers=auth, timeout=5).json()
    samples = []
    for target in targets:
        r = httpx.get(target["url"], headers=auth, timeout=5)
        assert r.status_code == 200, (target, r.text)
        samples += _samples(r.text)
    return samples


def _total(samples: list[tuple[str, dict[str, str], float]], name: str,
           **labels: str) -> float:
    return sum(v for n, lab, v in samples
               if n == name and all(lab.get(k) == w for k, w in labels.items()))


def _traffic(up: Up) -> dict[str, int]:
    """Chat, streamed chat and embeddings calls; the tokens their answers reported."""
    sent = {"input": 0, "output": 0, "calls": 0}
    with httpx.Client(base_url=_base(up) + "/v1", timeout=30) as client:
        for i in range(4):
            r = client.post("/chat/completions", json={
                "model": "mock-gpt", "messages": [{"role": "user", "content": f"hi {i}"}]})
            assert r.status_code == 200, r.text
            sent["input"] += r.json()["usage"]["prompt_tokens"]
            sent["output"] += r.json()["usage"]["completion_tokens"]
            sent["calls"] += 1
        for i in range(3):
            with client.stream("POST", "/chat/completions", json={
                "model": "mock-gpt", "stream": True, "stream_options": {"include_usage": True},
                "messages": [{"role": "user", "content": f"stream {i}"}]}) as r:
                usage = [line for line in r.iter_lines() if '"usage":{' in line][-1]
            tokens = json.loads(usage.removeprefix("data: "))["usage"]
            sent["input"] += tokens["prompt_tokens"]
            sent["output"] += tokens["completion_tokens"]
            sent["calls"] += 1
        r = client.post("/embeddings", json={"model": "mock-embedding", "input": ["a b", "c"]})
        assert r.status_code == 200, r.text
        sent["input"] += r.json()["usage"]["prompt_tokens"]
        sent["calls"] += 1
    return sent


def _summary(up: Up, calls: int) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        body: dict[str, Any] = httpx.get(_base(up) + "/v1/usage/summary", timeout=10).json()
        if body.get("requests", 0) >= calls or time.monotonic() > deadline:
            return body
        time.sleep(0.2)


def test_metrics_need_the_key_when_one_is_set(up: Up) -> None:
    assert httpx.get(_base(up) + "/metrics", timeout=5).status_code == 401
    r = httpx.get(_base(up) + "/metrics", timeout=5,
                  headers={"authorization": f"Bearer {METRICS_KEY}"})
    assert r.status_code == 200
    assert "aigw_requests_total" in r.text


def test_targets_list_every_process_of_aigw_up(up: Up) -> None:
    auth = {"authorization": f"Bearer {METRICS_KEY}"}
    targets = httpx.get(_base(up) + "/health/targets", headers=auth, timeout=5).json()
    assert sorted((t["role"], t["provider"]) for t in targets) == [
        ("accounting", None), ("ingress", None), ("worker", "mock")]
    for target in targets:
        health = target["url"].removesuffix("/metrics") + "/health/liveliness"
        assert httpx.get(health, timeout=5).status_code == 200


def test_token_and_cost_counters_equal_the_usage_api(up: Up) -> None:
    before = _scrape_all(up)
    sent = _traffic(up)
    summary = _summary(up, sent["calls"])
    deadline = time.monotonic() + 20
    while True:
        after = _scrape_all(up)
        tokens = {kind: _total(after, "gen_ai_client_token_usage_sum", gen_ai_token_type=kind)
                  - _total(before, "gen_ai_client_token_usage_sum", gen_ai_token_type=kind)
                  for kind in ("input", "output")}
        if tokens["input"] >= sent["input"] or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert tokens == {"input": sent["input"], "output": sent["output"]}
    assert (summary["prompt_tokens"], summary["completion_tokens"]) == (
        sent["input"], sent["output"])
    cost = _total(after, "aigw_cost_usd_total") - _total(before, "aigw_cost_usd_total")
    assert abs(Decimal(str(cost)) - Decimal(str(summary["cost"]))) < Decimal("1e-9")
    calls = (_total(after, "gen_ai_client_operation_duration_seconds_count")
             - _total(before, "gen_ai_client_operation_duration_seconds_count"))
    assert calls == sent["calls"]
    streams = (_total(after, "gen_ai_server_time_to_first_token_seconds_count")
               - _total(before, "gen_ai_server_time_to_first_token_seconds_count"))
    assert streams == 3


def test_a_real_prometheus_scrapes_every_target_and_sees_the_tokens(
    up: Up, tmp_path: Path
) -> None:
    binary = prometheus_tool("prometheus")
    config = yaml.safe_load((REPO / "deploy/prometheus/aigw-up.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config.pop("rule_files", None)
    job = config["scrape_configs"][0]
    job["http_sd_configs"][0]["url"] = f"{_base(up)}/health/targets?format=prometheus"
    job["http_sd_configs"][0]["refresh_interval"] = "1s"
    job["http_sd_configs"][0]["authorization"] = {"type": "Bearer", "credentials": METRICS_KEY}
    job["authorization"] = {"credentials": METRICS_KEY}
    sent = _traffic(up)
    _summary(up, sent["calls"])
    with PrometheusServer(binary, tmp_path, config) as prom:
        def all_up() -> bool:
            found = prom.query("up")
            return len(found) == 3 and all(s["value"][1] == "1" for s in found)

        prom.wait_for(all_up, 30, "every target up")
        jobs = {s["metric"]["job"] for s in prom.query("up")}
        assert jobs == {"aigw-ingress", "aigw-worker", "aigw-accounting"}
        scraped = _scrape_all(up)
        expected = _total(scraped, "gen_ai_client_token_usage_sum")

        def tokens_seen() -> bool:
            found = prom.query("sum(gen_ai_client_token_usage_sum)")
            return bool(found) and float(found[0]["value"][1]) == expected

        prom.wait_for(tokens_seen, 20, f"{expected} tokens in Prometheus")
        assert expected >= sent["input"] + sent["output"]
