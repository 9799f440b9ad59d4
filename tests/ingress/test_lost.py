"""The usage event the ingress publishes for an attempt whose worker went silent."""

from __future__ import annotations

import json
import time
from decimal import Decimal

import nats
import pytest

from cli.nats_server import NatsServer
from core.pricing import PriceTable
from ingress.admission.gatekeeper import Ticket
from ingress.dispatch.dispatcher import Dispatcher, FramesLost, WorkerSilent
from ingress.dispatch.lost import Output, Silence, account, lost_event, worker_lost
from schemas.config import Deployment
from schemas.infer import Endpoint, InferRequest
from schemas.usage import UsageEvent, UsageStatus, event_id

PRICES = PriceTable.default()
# 40 characters in one message: 10 tokens, and 4 for the message
BODY = {"model": "alias", "messages": [{"role": "user", "content": "x" * 40}]}
PROMPT = 14


def request(stream: bool = True, attempt: int = 1) -> InferRequest:
    return InferRequest(
        request_id="req-1", attempt=attempt, endpoint=Endpoint.CHAT,
        deployment_id="alias#1", model_alias="alias", body=BODY, stream=stream,
        key_id="key-1", team_id="team-1", end_user="user-1", metadata={"job": "nightly"})


def deployment(**prices: Decimal) -> Deployment:
    return Deployment(id="alias#1", model_name="alias", provider="openai",
                      upstream_model="gpt-4o-mini", **prices)


def chunk(content: str) -> bytes:
    return json.dumps({"object": "chat.completion.chunk", "choices": [
        {"index": 0, "delta": {"content": content}, "finish_reason": None}]}).encode()


def sent(*contents: str) -> Output:
    output = Output()
    output.add(json.dumps({"choices": [{"delta": {"role": "assistant", "content": ""}}]})
               .encode())
    for content in contents:
        output.add(chunk(content))
    return output


def test_a_worker_lost_before_the_first_chunk_is_accounted_its_estimated_prompt() -> None:
    event = lost_event(request(stream=False), deployment(), None, 2012.3456, PRICES)
    assert event.event_id == event_id("req-1", 1) == "req-1:1:worker"
    assert (event.request_id, event.attempt) == ("req-1", 1)
    assert (event.key_id, event.team_id, event.end_user) == ("key-1", "team-1", "user-1")
    assert event.metadata == {"job": "nightly"}
    assert (event.model_alias, event.provider, event.deployment_id, event.upstream_model) == (
        "alias", "openai", "alias#1", "gpt-4o-mini")
    assert (event.endpoint, event.streamed) == ("chat", False)
    assert (event.status, event.error_type, event.http_status) == (
        UsageStatus.ERROR, "timeout", 504)
    assert (event.prompt_tokens, event.completion_tokens) == (PROMPT, 0)
    assert event.usage_estimated
    assert event.cost == Decimal("0.00000015") * PROMPT
    assert event.price_version == PRICES.version
    assert event.latency_ms == 2012.346


def test_a_stream_cut_short_adds_what_the_client_was_sent_as_the_worker_counts_it() -> None:
    # 14 characters in 3 text chunks: 4 tokens; the role chunk carries no text
    output = sent("Hello", " from", " the")
    assert (output.chars, output.text_chunks) == (14, 3)
    event = lost_event(request(), deployment(), output, 10.0, PRICES)
    assert (event.prompt_tokens, event.completion_tokens, event.streamed) == (PROMPT, 4, True)
    assert event.cost == Decimal("0.00000015") * PROMPT + Decimal("0.0000006") * 4
    # many one-letter chunks: at least a token each
    event = lost_event(request(), deployment(), sent(*"abcdef"), 10.0, PRICES)
    assert event.completion_tokens == 6


def test_a_lost_embedding_is_accounted_its_estimated_input() -> None:
    lost = InferRequest(
        request_id="req-2", attempt=0, endpoint=Endpoint.EMBEDDINGS,
        deployment_id="vectors#1", model_alias="vectors", stream=False,
        body={"model": "vectors", "input": ["x" * 40, "y" * 40]})
    vectors = Deployment(id="vectors#1", model_name="vectors", provider="openai",
                         upstream_model="text-embedding-3-small")
    event = lost_event(lost, vectors, None, 5.0, PRICES)
    assert (event.endpoint, event.prompt_tokens, event.completion_tokens) == (
        "embeddings", 20, 0)
    assert event.usage_estimated
    assert event.cost == Decimal("0.00000002") * 20
    # tokens sent as ids are counted exactly
    tokens = lost.model_copy(update={"body": {"model": "vectors", "input": [[1, 2, 3], [4]]}})
    assert lost_event(tokens, vectors, None, 5.0, PRICES).prompt_tokens == 4


def test_the_deployments_own_prices_win_and_an_unpriced_model_has_no_cost() -> None:
    priced = deployment(input_cost_per_token=Decimal("0.001"),
                        output_cost_per_token=Decimal("0.002"))
    event = lost_event(request(), priced, sent("abcd"), 1.0, PRICES)
    assert event.cost == Decimal("0.001") * PROMPT + Decimal("0.002")
    unknown = Deployment(id="x#1", model_name="x", provider="openai", upstream_model="stall")
    event = lost_event(request(), unknown, None, 1.0, PRICES)
    assert (event.cost, event.price_version) == (None, None)
    assert event.usage_estimated


def test_only_a_silence_while_nats_is_up_means_a_lost_worker() -> None:
    assert worker_lost(WorkerSilent(), connected=True)
    assert not worker_lost(WorkerSilent("the gateway lost its connection to NATS"),
                           connected=False)
    assert not worker_lost(FramesLost(4, 9), connected=True)


def test_an_attempt_never_heard_from_is_not_a_lost_worker() -> None:
    # Not even the heartbeat a worker sends before calling the upstream came back: the
    # attempt went down with the NATS node that carried it, and nothing was called.
    assert not worker_lost(WorkerSilent(heard=False), connected=True)


async def test_a_reply_with_no_frame_at_all_is_silent_and_unheard(
        nats_server: NatsServer) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        dispatcher = Dispatcher(nc)
        await dispatcher.start()
        # A subscriber that takes the attempt and never answers (a node lost it).
        sub = await nc.subscribe("aigw.v1.infer.silent", queue="workers")
        reply = await dispatcher.send(InferRequest(
            request_id="r", endpoint=Endpoint.CHAT, deployment_id="d", model_alias="m",
            body={"messages": []}), "silent")
        with pytest.raises(WorkerSilent) as caught:
            await reply.next(0.3)
        assert caught.value.heard is False
        await sub.unsubscribe()
    finally:
        await nc.close()


def test_a_lost_worker_is_published_once_and_its_ticket_settled_at_the_estimate() -> None:
    published: list[UsageEvent] = []
    settled: list[tuple[Ticket, int, Decimal | None]] = []

    def settle(ticket: Ticket, tokens: int, cost: Decimal | None) -> None:
        settled.append((ticket, tokens, cost))

    ticket = Ticket(None, Decimal("0.01"), {})
    silence = Silence(request(), deployment(), ticket, WorkerSilent(), time.monotonic(),
                      sent("Hello"))
    assert account(silence, connected=True, prices=PRICES, publish=published.append,
                   settle=settle)
    [event] = published
    assert settled == [(ticket, PROMPT + 2, event.cost)]
    assert event.cost is not None and event.cost < ticket.reserve_cost
    assert 0 <= event.latency_ms < 5000

    # NATS away: the worker keeps its own event; nothing published, nothing settled here
    published.clear()
    settled.clear()
    assert not account(silence, connected=False, prices=PRICES, publish=published.append,
                       settle=settle)
    assert (published, settled) == ([], [])
