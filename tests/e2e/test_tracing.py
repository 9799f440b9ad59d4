"""One trace per request, across the ingress and worker processes, exported over OTLP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cli.nats_server import NatsServer
from tests.fakes.openai_server import FakeOpenAIState
from tests.harness import Gateway, write_config
from tests.otlp_receiver import OtlpReceiver

pytestmark = pytest.mark.e2e
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
# The ingress's request and attempt, the worker's handling and its upstream call.
WANTED = [("aigw-ingress", "SERVER"), ("aigw-ingress", "CLIENT"),
          ("aigw-worker", "SERVER"), ("aigw-worker", "CLIENT")]


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


def _gateway(nats: NatsServer, upstream: str, work: Path, env: dict[str, str]) -> Gateway:
    config = write_config(work / "config.yaml", {"model_list": [
        {"model_name": "traced", "litellm_params": {
            "model": "openai/gpt-4o-mini", "api_base": f"{upstream}/v1",
            "api_key": "sk-fake"}},
        {"model_name": "traced-group", "litellm_params": {
            "model": "openai/fail-500", "api_base": f"{upstream}/v1", "api_key": "sk-fake"}},
        {"model_name": "traced-group", "litellm_params": {
            "model": "openai/gpt-4o-mini", "api_base": f"{upstream}/v1", "api_key": "sk-fake"}},
    ]})
    gateway = Gateway(nats_url=nats.url, config_path=config, log_dir=work, env=env)
    gateway.start_worker("openai")
    gateway.start_ingress()
    gateway.wait_ready()
    return gateway


def test_a_request_is_one_trace_from_the_client_through_ingress_and_worker(
    own_nats: NatsServer, fake_openai: tuple[str, FakeOpenAIState], tmp_path: Path,
    receiver: OtlpReceiver,
) -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}
    gateway = _gateway(own_nats, fake_openai[0], tmp_path, env)
    try:
        r = httpx.post(gateway.base_url + "/v1/chat/completions", timeout=30, json={
            "model": "traced", "messages": [{"role": "user", "content": "secret prompt"}]},
            headers={"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"})
        assert r.status_code == 200, r.text
        rid = r.headers["x-request-id"]
        for service, kind in WANTED:
            receiver.wait_for(lambda s, service=service, kind=kind: s.trace_id == CLIENT_TRACE
                              and s.service_name == service and s.kind == kind, timeout=15)
    finally:
        gateway.stop()
    ours = [s for s in receiver.spans if s.trace_id == CLIENT_TRACE]
    assert sorted((s.service_name, s.kind) for s in ours) == sorted(WANTED), ours
    server = next(s for s in ours if s.service_name == "aigw-ingress" and s.kind == "SERVER")
    assert server.parent_span_id == CLIENT_SPAN
    assert server.name == "POST /v1/chat/completions"
    assert server.attributes["aigw.request_id"] == rid
    attempt = next(s for s in ours if s.service_name == "aigw-ingress" and s.kind == "CLIENT")
    assert attempt.parent_span_id == server.span_id
    assert attempt.attributes["gen_ai.request.model"] == "traced"
    worker = next(s for s in ours if s.service_name == "aigw-worker" and s.kind == "SERVER")
    assert worker.parent_span_id == attempt.span_id
    assert worker.attributes["gen_ai.usage.input_tokens"] == r.json()["usage"]["prompt_tokens"]
    assert worker.attributes["gen_ai.provider.name"] == "openai"
    # No prompt or completion text, nor the upstream key, unless AIGW_TRACE_CONTENT says so.
    every_value = repr([s.attributes for s in receiver.spans])
    assert "secret prompt" not in every_value
    assert "sk-fake" not in every_value


def test_each_failover_attempt_is_its_own_span(
    own_nats: NatsServer, fake_openai: tuple[str, FakeOpenAIState], tmp_path: Path,
    receiver: OtlpReceiver,
) -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}
    gateway = _gateway(own_nats, fake_openai[0], tmp_path, env)
    try:
        for _ in range(2):  # round-robin: one of the two starts on the failing deployment
            r = httpx.post(gateway.base_url + "/v1/chat/completions", timeout=30, json={
                "model": "traced-group", "messages": [{"role": "user", "content": "hi"}]})
            assert r.status_code == 200, r.text
        failed = receiver.wait_for(lambda s: s.kind == "CLIENT" and s.status == "ERROR"
                                   and s.service_name == "aigw-ingress", timeout=15)
    finally:
        gateway.stop()
    trace = failed[0].trace_id
    attempts = [s for s in receiver.spans
                if s.trace_id == trace and s.kind == "CLIENT" and s.service_name == "aigw-ingress"]
    assert sorted(s.attributes["aigw.attempt"] for s in attempts) == [0, 1]
