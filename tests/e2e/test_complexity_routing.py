"""The complexity router through a running gateway: an easy prompt to the cheap tier, a
hard one to the strong tier, both saying so in headers and usage events, and a failing
cheap tier falling back up; ``aigw route explain`` as a real command."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cli.nats_server import NatsServer
from tests.fakes.openai_server import FakeOpenAIState
from tests.harness import Gateway, write_config

pytestmark = pytest.mark.e2e

MASTER = "sk-complexity"
AUTH = {"authorization": f"Bearer {MASTER}"}
TOOLS = [{"type": "function", "function": {"name": "run_tests", "parameters": {
    "type": "object", "properties": {"path": {"type": "string"}}}}}]
HARD_TEXT = ("Why does this deadlock under load, and how do I fix it?\n```python\n"
             "async def worker(lock, queue):\n    async with lock:\n"
             "        item = await queue.get()\n```")


def _config(url: str) -> dict[str, Any]:
    def tiered(alias: str, upstream: str, tier: str) -> dict[str, Any]:
        return {"model_name": alias, "model_info": {"tier": tier}, "litellm_params": {
            "model": f"openai/{upstream}", "api_base": f"{url}/v1", "api_key": "sk-fake"}}

    return {
        "model_list": [
            # Listed strong first: the order of the file must not decide.
            tiered("auto", "gpt-4o", "large"),
            tiered("auto", "gpt-4o-mini", "small"),
            tiered("auto-flaky", "gpt-4o", "large"),
            tiered("auto-flaky", "fail-500", "small"),
        ],
        "router_settings": {"routing_strategy": "complexity"},
        "general_settings": {"master_key": MASTER},
    }


@pytest.fixture(scope="module")
def routed(
    fake_openai: tuple[str, FakeOpenAIState], tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    # Its own NATS: its usage stream and accounting consumer are this module's alone.
    work = tmp_path_factory.mktemp("complexity")
    server = NatsServer(work / "nats")
    server.start()
    gw = Gateway(nats_url=server.url, config_path=write_config(work / "c.yaml",
                                                               _config(fake_openai[0])),
                 log_dir=work, env={"AIGW_ACCOUNTING_BATCH_AGE": "0.2"})
    try:
        gw.start_accounting(work / "data")
        gw.start_worker("openai")
        gw.start_ingress()
        gw.wait_ready()
        yield gw
    finally:
        gw.stop()
        server.stop()


def _chat(gw: Gateway, model: str, text: str, **extra: Any) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": text}], **extra}
    r = httpx.post(gw.base_url + "/v1/chat/completions", json=body, headers=AUTH, timeout=30)
    assert r.status_code == 200, r.text
    return r


def _events(gw: Gateway, request_id: str, expected: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 20
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        r = httpx.get(gw.base_url + "/v1/usage/logs", headers=AUTH, timeout=10,
                      params={"limit": 1000, "days": 1})
        if r.status_code == 200:
            rows = [e for e in r.json()["data"] if e["request_id"] == request_id]
            if len(rows) >= expected:
                return sorted(rows, key=lambda e: e["attempt"])
        time.sleep(0.2)
    raise AssertionError(f"{len(rows)} events for {request_id}, expected {expected}")


def test_an_easy_prompt_goes_to_the_cheap_tier_and_says_why(
    routed: Gateway, fake_openai: tuple[str, FakeOpenAIState],
) -> None:
    r = _chat(routed, "auto", "What is the capital of France?")
    assert fake_openai[1].requests[-1]["model"] == "gpt-4o-mini"
    assert r.headers["x-aigw-route-tier"] == "small"
    assert r.headers["x-aigw-route-reason"].startswith("score 0.0")
    assert "no sign of a hard task" in r.headers["x-aigw-route-reason"]
    [event] = _events(routed, r.headers["x-request-id"], 1)
    assert event["upstream_model"] == "gpt-4o-mini"
    assert event["route_tier"] == "small"
    assert event["route_score"] == float(r.headers["x-aigw-route-score"])
    assert event["route_reason"] == r.headers["x-aigw-route-reason"]


def test_code_tools_and_high_reasoning_effort_go_to_the_strong_tier(
    routed: Gateway, fake_openai: tuple[str, FakeOpenAIState],
) -> None:
    r = _chat(routed, "auto", HARD_TEXT, tools=TOOLS, reasoning_effort="high")
    assert fake_openai[1].requests[-1]["model"] == "gpt-4o"
    assert r.headers["x-aigw-route-tier"] == "large"
    reason = r.headers["x-aigw-route-reason"]
    for part in ("-> large", "reasoning_effort high", "1 code block", "1 tool",
                 "keywords deadlock"):
        assert part in reason
    [event] = _events(routed, r.headers["x-request-id"], 1)
    assert (event["upstream_model"], event["route_tier"]) == ("gpt-4o", "large")
    assert event["route_score"] >= 0.55


def test_a_streamed_answer_carries_the_route_headers(
    routed: Gateway, fake_openai: tuple[str, FakeOpenAIState],
) -> None:
    body = {"model": "auto", "stream": True,
            "messages": [{"role": "user", "content": "Say hello."}]}
    with httpx.stream("POST", routed.base_url + "/v1/chat/completions", json=body,
                      headers=AUTH, timeout=30) as r:
        assert r.status_code == 200
        assert r.headers["x-aigw-route-tier"] == "small"
        assert "data: [DONE]" in r.read().decode()


def test_a_failing_cheap_tier_falls_back_up_and_every_attempt_is_accounted(
    routed: Gateway, fake_openai: tuple[str, FakeOpenAIState],
) -> None:
    r = _chat(routed, "auto-flaky", "Good morning!")
    assert r.headers["x-aigw-route-tier"] == "large"
    assert r.headers["x-aigw-route-reason"].endswith(
        "; up to large: no small deployment available")
    failed, served = _events(routed, r.headers["x-request-id"], 2)
    assert (failed["status"], failed["upstream_model"], failed["route_tier"]) == (
        "error", "fail-500", "small")
    assert (served["status"], served["upstream_model"], served["route_tier"]) == (
        "ok", "gpt-4o", "large")


def test_route_explain_prints_the_decision_without_calling_anything(
    routed: Gateway, fake_openai: tuple[str, FakeOpenAIState], tmp_path: Path,
) -> None:
    calls = len(fake_openai[1].requests)
    request = tmp_path / "hard.json"
    request.write_text(json.dumps({
        "model": "auto", "messages": [{"role": "user", "content": HARD_TEXT}],
        "tools": TOOLS, "reasoning_effort": "high"}))
    args = [sys.executable, "-m", "cli.main", "route", "explain", str(request),
            "--config", str(routed.config_path)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "-> tier large" in out
    assert "reasoning_effort=high" in out
    assert "openai/gpt-4o  tier large" in out
    assert "gpt-4o-mini" not in out  # a weaker tier is not in the plan
    assert "reason:    score" in out

    as_json = subprocess.run([*args, "--json"], capture_output=True, text=True, timeout=60,
                             check=False)
    found = json.loads(as_json.stdout)
    assert found["tier"] == found["chosen_tier"] == "large"
    assert found["features"]["tools"] == 1
    assert [p["model"] for p in found["plan"]] == ["openai/gpt-4o"]
    assert len(fake_openai[1].requests) == calls

    request.write_text(json.dumps({"model": "nope", "messages": []}))
    refused = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    assert refused.returncode == 2
    assert "'nope' is not a model_name" in refused.stderr
    request.write_text("{not json")
    refused = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    assert refused.returncode == 2
    assert "is not JSON" in refused.stderr


# ---- a classifier model instead of the feature score -------------------------------------


@pytest.fixture(scope="module")
def judged(
    fake_openai: tuple[str, FakeOpenAIState], tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    url = fake_openai[0]
    work = tmp_path_factory.mktemp("judged")
    server = NatsServer(work / "nats")
    server.start()
    config = _config(url)
    config["model_list"] = [*config["model_list"][:2], {"model_name": "judge", "litellm_params": {
        "model": "openai/route-judge", "api_base": f"{url}/v1", "api_key": "sk-fake"}}]
    config["router_settings"] = {"routing_strategy": "complexity",
                                 "complexity_router": {"classifier_model": "judge"}}
    gw = Gateway(nats_url=server.url, config_path=write_config(work / "c.yaml", config),
                 log_dir=work, env={"AIGW_ACCOUNTING_BATCH_AGE": "0.2"})
    try:
        gw.start_accounting(work / "data")
        gw.start_worker("openai")
        gw.start_ingress()
        gw.wait_ready()
        yield gw
    finally:
        gw.stop()
        server.stop()


def test_the_classifier_models_tier_wins_over_the_score_and_its_call_is_accounted(
    judged: Gateway, fake_openai: tuple[str, FakeOpenAIState],
) -> None:
    state = fake_openai[1]
    r = _chat(judged, "auto", "A tricky one: what is 2 + 2?")
    asked, served = state.requests[-2:]
    assert asked["model"] == "route-judge"
    assert "tricky" in asked["messages"][1]["content"]
    assert served["model"] == "gpt-4o"
    assert r.headers["x-aigw-route-tier"] == "large"
    assert r.headers["x-aigw-route-reason"] == "classifier judge -> large (features scored 0.00)"

    # Features that score large, a classifier that says small: the classifier decides.
    r = _chat(judged, "auto", HARD_TEXT, tools=TOOLS, reasoning_effort="high")
    assert state.requests[-1]["model"] == "gpt-4o-mini"
    assert r.headers["x-aigw-route-tier"] == "small"

    rid = r.headers["x-request-id"]
    [judging] = _events(judged, f"{rid}-route", 1)
    assert (judging["model_alias"], judging["status"]) == ("judge", "ok")
    assert judging["route_tier"] is None  # the judge's own group is not tiered
    [answered] = _events(judged, rid, 1)
    assert answered["route_reason"].startswith("classifier judge -> small")


def test_a_classifier_that_names_no_tier_leaves_the_decision_to_the_score(
    judged: Gateway, fake_openai: tuple[str, FakeOpenAIState],
) -> None:
    r = _chat(judged, "auto", "unsure about this one", reasoning_effort="high")
    assert fake_openai[1].requests[-1]["model"] == "gpt-4o"
    assert r.headers["x-aigw-route-tier"] == "large"
    assert r.headers["x-aigw-route-reason"].startswith("score 0.5")


def test_a_failing_classifier_is_accounted_and_the_score_decides(
    judged: Gateway, fake_openai: tuple[str, FakeOpenAIState],
) -> None:
    r = _chat(judged, "auto", "explode, then answer", reasoning_effort="high")
    assert fake_openai[1].requests[-1]["model"] == "gpt-4o"
    assert r.headers["x-aigw-route-tier"] == "large"
    assert r.headers["x-aigw-route-reason"].startswith("score 0.5")
    [failed] = _events(judged, r.headers["x-request-id"] + "-route", 1)
    assert (failed["model_alias"], failed["status"], failed["http_status"]) == (
        "judge", "error", 500)


def test_the_responses_api_is_routed_by_complexity_too(
    routed: Gateway, fake_openai: tuple[str, FakeOpenAIState],
) -> None:
    def respond(**body: Any) -> httpx.Response:
        r = httpx.post(routed.base_url + "/v1/responses", json={"model": "auto", **body},
                       headers=AUTH, timeout=30)
        assert r.status_code == 200, r.text
        return r

    easy = respond(input="Say hello.", store=False)
    assert fake_openai[1].requests[-1]["model"] == "gpt-4o-mini"
    assert easy.headers["x-aigw-route-tier"] == "small"
    hard = respond(input=HARD_TEXT, reasoning={"effort": "high"}, store=False)
    assert fake_openai[1].requests[-1]["model"] == "gpt-4o"
    assert hard.headers["x-aigw-route-tier"] == "large"
    assert "reasoning_effort high" in hard.headers["x-aigw-route-reason"]
