"""A worker process's traces, as a real OTLP/HTTP receiver gets them.

The attempt's span continues the ingress's trace from the message's ``traceparent``, the
upstream HTTP call is its CLIENT child, a batch item starts a trace linked to its batch,
and with tracing off nothing is sent.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import nats
import pytest
from nats.aio.client import Client

from cli.nats_server import NatsServer
from schemas.batch import BatchItem
from schemas.config import GatewayConfig
from schemas.frames import DoneFrame, ErrorFrame
from tests.fakes.openai_server import FakeOpenAIState
from tests.harness import Gateway
from tests.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.workers.worker_process import (
    request_for,
    run_batch_item,
    send_attempt,
    until_serving,
    worker_process,
)
from workers.spans import full_url, message

PROVIDER = "openai"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"}
TRACED = {"OTEL_BSP_SCHEDULE_DELAY": "100"}


def config(openai_url: str) -> dict[str, object]:
    def entry(alias: str, upstream: str) -> dict[str, object]:
        return {"model_name": alias, "litellm_params": {
            "model": f"openai/{upstream}", "api_base": f"{openai_url}/v1", "api_key": "sk-fake"}}

    return {"model_list": [entry("fast", "gpt-4o-mini"), entry("broken", "fail-500")]}


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


@pytest.fixture
async def nc(own_nats: NatsServer) -> AsyncIterator[Client]:
    client = await nats.connect(own_nats.url)
    yield client
    await client.close()


class Workers:
    """Starts workers on the test's NATS, each with its own environment; stops them all."""

    def __init__(self, nats_url: str, openai_url: str, work: Path, nc: Client) -> None:
        self._nats_url = nats_url
        self._openai_url = openai_url
        self._work = work
        self._nc = nc
        self._stack = ExitStack()

    async def start(self, env: dict[str, str]) -> tuple[Gateway, GatewayConfig]:
        gateway, parsed = self._stack.enter_context(worker_process(
            self._nats_url, config(self._openai_url), self._work, PROVIDER, env))
        await until_serving(self._nc, gateway, PROVIDER)
        return gateway, parsed

    def close(self) -> None:
        self._stack.close()


@pytest.fixture
def workers(own_nats: NatsServer, fake_openai: tuple[str, FakeOpenAIState], tmp_path: Path,
            nc: Client) -> Iterator[Workers]:
    started = Workers(own_nats.url, fake_openai[0], tmp_path, nc)
    yield started
    started.close()


def traced(receiver: OtlpReceiver, **extra: str) -> dict[str, str]:
    return {**TRACED, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, **extra}


def child_of(parent: ReceivedSpan, kind: str) -> Callable[[ReceivedSpan], bool]:
    return lambda s: s.parent_span_id == parent.span_id and s.kind == kind


async def test_an_attempt_continues_the_ingress_trace_with_its_upstream_call_inside(
        workers: Workers, receiver: OtlpReceiver, nc: Client,
        fake_openai: tuple[str, FakeOpenAIState]) -> None:
    _, parsed = await workers.start(traced(receiver))
    frame = await send_attempt(nc, PROVIDER, request_for(parsed, "fast", attempt=2),
                               headers=TRACEPARENT)
    assert isinstance(frame, DoneFrame)
    [server] = await asyncio.to_thread(
        receiver.wait_for, lambda s: s.kind == "SERVER" and s.trace_id == TRACE_ID)
    assert (server.parent_span_id, server.service_name) == (PARENT_ID, "aigw-worker")
    assert server.name == "chat gpt-4o-mini"
    assert server.status == "UNSET"
    attributes = server.attributes
    assert {k: attributes[k] for k in (
        "gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model",
        "gen_ai.response.model", "aigw.request_id", "aigw.attempt")} == {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": PROVIDER,
        "gen_ai.request.model": "fast", "gen_ai.response.model": "gpt-4o-mini",
        "aigw.request_id": "req-1", "aigw.attempt": 2}
    assert (attributes["gen_ai.usage.input_tokens"], attributes["gen_ai.usage.output_tokens"]
            ) == (frame.usage.prompt_tokens, frame.usage.completion_tokens)
    assert attributes["gen_ai.usage.output_tokens"] > 0
    assert float(attributes["aigw.cost_usd"]) == float(frame.cost or 0)
    assert "gen_ai.input.messages" not in attributes  # content only when asked for
    [client] = await asyncio.to_thread(receiver.wait_for, child_of(server, "CLIENT"))
    assert client.trace_id == TRACE_ID and client.name == "POST"
    assert client.attributes == {
        "http.request.method": "POST", "server.address": "127.0.0.1",
        "server.port": int(fake_openai[0].rsplit(":", 1)[1]),
        "url.full": f"{fake_openai[0]}/v1/chat/completions",
        "http.response.status_code": 200}


async def test_a_failed_upstream_call_marks_both_spans_failed(
        workers: Workers, receiver: OtlpReceiver, nc: Client) -> None:
    _, parsed = await workers.start(traced(receiver))
    frame = await send_attempt(nc, PROVIDER, request_for(parsed, "broken", stream=True),
                               headers=TRACEPARENT)
    assert isinstance(frame, ErrorFrame)
    [server] = await asyncio.to_thread(receiver.wait_for, lambda s: s.kind == "SERVER")
    assert server.name == "chat fail-500" and server.status == "ERROR"
    assert server.attributes["error.type"] == "500"
    [client] = await asyncio.to_thread(receiver.wait_for, child_of(server, "CLIENT"))
    assert client.status == "ERROR"
    assert client.attributes["http.response.status_code"] == 500


async def test_content_tracing_records_the_prompt_and_the_streamed_answer(
        workers: Workers, receiver: OtlpReceiver, nc: Client) -> None:
    _, parsed = await workers.start(traced(receiver, AIGW_TRACE_CONTENT="true"))
    request = request_for(parsed, "fast", stream=True)
    frame = await send_attempt(nc, PROVIDER, request)
    assert isinstance(frame, DoneFrame)
    [server] = await asyncio.to_thread(receiver.wait_for, lambda s: s.kind == "SERVER")
    assert server.parent_span_id is None  # no traceparent: a trace of its own
    assert json.loads(server.attributes["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": "Say hello to the tests"}]}]
    assert json.loads(server.attributes["gen_ai.output.messages"]) == [
        {"role": "assistant", "parts": [
            {"type": "text", "content": "Hello from the fake OpenAI server."}]}]
    # The stream's CLIENT span ends when its body is closed, within the attempt's span.
    [client] = await asyncio.to_thread(receiver.wait_for, child_of(server, "CLIENT"))
    assert server.start_ns <= client.start_ns < client.end_ns <= server.end_ns


async def test_a_batch_item_starts_a_trace_linked_to_its_batch(
        workers: Workers, receiver: OtlpReceiver, nc: Client) -> None:
    _, parsed = await workers.start(traced(receiver))
    request = request_for(parsed, "fast", request_id="batch_t-c1", batch_id="batch_t")
    await run_batch_item(nc, PROVIDER, BatchItem(batch_id="batch_t", line=1, custom_id="c1",
                                                 request=request))
    [item] = await asyncio.to_thread(
        receiver.wait_for, lambda s: s.name == "batch_item fast", 15.0)
    digest = hashlib.sha256(b"batch_t").hexdigest()
    assert item.parent_span_id is None and item.kind == "CONSUMER"
    assert item.links == ((digest[:32], digest[32:48]),)
    assert item.attributes["aigw.batch_id"] == "batch_t"
    [server] = await asyncio.to_thread(receiver.wait_for, child_of(item, "SERVER"))
    assert server.trace_id == item.trace_id
    assert server.attributes["aigw.batch_id"] == "batch_t"
    await asyncio.to_thread(receiver.wait_for, child_of(server, "CLIENT"))


@pytest.mark.parametrize("off", [
    pytest.param({}, id="no-otel-environment"),
    pytest.param({"OTEL_TRACES_EXPORTER": "none"}, id="exporter-none"),
    pytest.param({"OTEL_SDK_DISABLED": "true"}, id="sdk-disabled"),
])
async def test_without_tracing_asked_for_no_span_is_sent(
        workers: Workers, receiver: OtlpReceiver, nc: Client, off: dict[str, str]) -> None:
    # The endpoint is set except in the first case, so a span made would reach the receiver.
    env = {**TRACED, "AIGW_LOG_LEVEL": "INFO", **off}
    if off:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.endpoint
    gateway, parsed = await workers.start(env)
    frame = await send_attempt(nc, PROVIDER, request_for(parsed, "fast"), headers=TRACEPARENT)
    assert isinstance(frame, DoneFrame)
    await asyncio.sleep(0.5)  # five export rounds, had there been a span
    assert receiver.exports == 0 and receiver.spans == []
    assert "tracing on" not in gateway.all_logs()


def test_an_upstream_url_is_traced_without_its_query_or_user_info() -> None:
    url = httpx.URL("https://user:pw@generativelanguage.googleapis.com/v1beta/models/"
                    "gemini-2.0-flash:streamGenerateContent?alt=sse&key=SECRET")
    assert full_url(url) == ("https://generativelanguage.googleapis.com/v1beta/models/"
                             "gemini-2.0-flash:streamGenerateContent")


def test_messages_are_traced_as_typed_parts_without_image_bytes() -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    assert message({"role": "user", "content": [{"type": "text", "text": "what is it"},
                                                image]}) == {
        "role": "user", "parts": [{"type": "text", "content": "what is it"},
                                  {"type": "image_url"}]}
    call = {"id": "c1", "type": "function",
            "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}
    assert message({"role": "assistant", "content": None, "tool_calls": [call]}) == {
        "role": "assistant", "parts": [{"type": "tool_call", "id": "c1", "name": "weather",
                                        "arguments": '{"city": "Paris"}'}]}
    assert message({"role": "tool", "tool_call_id": "c1", "content": "sunny"}) == {
        "role": "tool", "parts": [{"type": "tool_call_response", "id": "c1",
                                   "response": "sunny"}]}
