"""Cohere and Azure OpenAI behind the OpenAI API (the official openai SDK as the client),
and ``/v1/rerank`` and ``/v1/moderations`` over HTTP: each call accounted once, with its
tokens and exact cost."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest

from cli.nats_server import NatsServer
from tests.e2e.cohere_azure_gateway import (
    AZ_IN,
    AZ_OUT,
    VLLM_PER_QUERY,
    VLLM_PER_TOKEN,
    _config,
    _events,
    _post,
)
from tests.e2e.conftest import make_key
from tests.fakes import azure_server, cohere_server, openai_server
from tests.fakes.server import serve
from tests.harness import Gateway, write_config
from tests.redis_server import RedisServer

pytestmark = pytest.mark.e2e

TOOLS: list[Any] = [{"type": "function", "function": {
    "name": "lookup", "description": "look a thing up",
    "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}}]


@pytest.fixture(scope="module")
def fakes() -> Iterator[tuple[cohere_server.Served, azure_server.Served, str]]:
    with cohere_server.running() as cohere, azure_server.running() as azure, \
            serve(openai_server.create_app(openai_server.FakeOpenAIState())) as openai_url:
        yield cohere, azure, openai_url


@pytest.fixture(scope="module")
def gateway(
    redis_server: RedisServer,
    fakes: tuple[cohere_server.Served, azure_server.Served, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    cohere, azure, openai_url = fakes
    work = tmp_path_factory.mktemp("cohere-azure")
    config = write_config(work / "config.yaml", _config(cohere.url, azure.url, openai_url))
    # A nats-server of its own: on the session's, the session gateway's openai workers
    # would take this gateway's calls and its accounting this gateway's usage events.
    nats_server = NatsServer(work / "nats")
    nats_server.start()
    gw = Gateway(nats_url=nats_server.url, config_path=config, log_dir=work, env={
        "COHERE_API_KEY": cohere_server.API_KEY, "AZURE_API_KEY": azure_server.API_KEY,
        "REDIS_URL": redis_server.url, "AIGW_ACCOUNTING_BATCH_AGE": "0.2"})
    gw.start_accounting(work / "data")
    for provider in ("cohere", "cohere_chat", "azure", "hosted_vllm", "openai"):
        gw.start_worker(provider)
    gw.start_ingress()
    try:
        gw.wait_ready(60)
    except RuntimeError:
        gw.stop()
        nats_server.stop()
        raise
    yield gw
    gw.stop()
    nats_server.stop()


@pytest.fixture(scope="module")
def key(gateway: Gateway) -> tuple[str, str]:
    return make_key(gateway, alias="cohere-azure-e2e")


@pytest.fixture
def client(gateway: Gateway, key: tuple[str, str]) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url + "/v1", api_key=key[1], max_retries=0)


# --- Cohere ---------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["command-a", "command-r"])
def test_cohere_chat_through_the_openai_sdk(client: openai.OpenAI, model: str) -> None:
    completion = client.chat.completions.create(
        model=model, messages=[{"role": "system", "content": "be brief"},
                               {"role": "user", "content": "ping"}])
    assert completion.choices[0].message.content == "Cohere says: ping"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens == 3


def test_cohere_streamed_chat_ends_with_usage(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(
        model="command-a", messages=[{"role": "user", "content": "ping pong"}], stream=True,
        stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Cohere says: ping pong"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 4


def test_cohere_tool_calls_streamed_and_not(client: openai.OpenAI) -> None:
    messages: list[Any] = [{"role": "user", "content": "weather"}]
    completion = client.chat.completions.create(model="command-a", messages=messages,
                                                tools=TOOLS)
    call = completion.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert completion.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "lookup"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"query": "weather"}  # type: ignore[union-attr]
    chunks = list(client.chat.completions.create(model="command-a", messages=messages,
                                                 tools=TOOLS, stream=True))
    args = "".join(tc.function.arguments or "" for c in chunks if c.choices
                   for tc in (c.choices[0].delta.tool_calls or []) if tc.function)
    assert json.loads(args) == {"query": "weather"}
    assert [c for c in chunks if c.choices][-1].choices[0].finish_reason == "tool_calls"
    # the tool's answer goes back as a tool turn
    followed = client.chat.completions.create(model="command-a", messages=[
        *messages, {"role": "assistant", "content": None, "tool_calls": [
            {"id": call.id, "type": "function",
             "function": {"name": "lookup", "arguments": call.function.arguments}}]},  # type: ignore[union-attr]
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
        {"role": "user", "content": "so?"}])
    assert followed.choices[0].message.content == "Cohere says: so?"


def test_cohere_embeddings(client: openai.OpenAI) -> None:
    result = client.embeddings.create(model="cohere-embed", input=["a b", "c"])
    assert [d.index for d in result.data] == [0, 1]
    assert result.data[1].embedding == [0.5] * 4
    assert result.usage.prompt_tokens == 3


def test_cohere_rate_limit_is_a_429(client: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="cohere-limited",
                                       messages=[{"role": "user", "content": "x"}])
    assert "Trial key" in str(caught.value)


# --- Azure ----------------------------------------------------------------------------------


def test_azure_chat_streamed_and_not_and_embeddings(
    client: openai.OpenAI, fakes: tuple[cohere_server.Served, azure_server.Served, str]
) -> None:
    _, azure, _ = fakes
    completion = client.chat.completions.create(
        model="azure-gpt", messages=[{"role": "user", "content": "hello"}])
    assert completion.choices[0].message.content == openai_server.ANSWER
    chunks = list(client.chat.completions.create(
        model="azure-gpt", messages=[{"role": "user", "content": "hello"}], stream=True,
        stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
        openai_server.ANSWER
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    tool = client.chat.completions.create(
        model="azure-gpt", messages=[{"role": "user", "content": "hello"}], tools=TOOLS)
    assert tool.choices[0].finish_reason == "tool_calls"
    embedded = client.embeddings.create(model="azure-embed", input="one two three")
    assert embedded.usage.prompt_tokens == 3
    assert {(d, op) for d, op, _ in azure.state.calls} >= {
        ("my-gpt4o", "chat/completions"), ("my-embedder", "embeddings")}
    assert {v for _, _, v in azure.state.calls} == {"2024-10-21"}


def test_azure_with_a_version_it_does_not_know_fails_cleanly(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="azure-old",
                                       messages=[{"role": "user", "content": "x"}])
    assert azure_server.API_KEY not in str(caught.value)


# --- /v1/rerank and /v1/moderations ---------------------------------------------------------


RERANK = {"query": "red apple", "documents": ["green pear", "red apple pie", "apple"],
          "top_n": 2, "return_documents": True}


@pytest.mark.parametrize("model", ["cohere-rerank", "vllm-rerank"])
def test_rerank_answers_in_one_shape_whoever_serves_it(
    gateway: Gateway, key: tuple[str, str], model: str
) -> None:
    r = _post(gateway, key, "rerank", {"model": model, **RERANK})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [x["index"] for x in body["results"]] == [1, 2]
    assert body["results"][0]["document"] == {"text": "red apple pie"}
    assert body["results"][0]["relevance_score"] == 1.0
    assert body["meta"]["billed_units"]["search_units"] == 1
    assert isinstance(body["id"], str)


def test_rerank_and_moderations_bad_input_and_unsupported_providers_are_400s(
    gateway: Gateway, key: tuple[str, str]
) -> None:
    cases: list[tuple[str, dict[str, Any]]] = [
        ("rerank", {"model": "cohere-rerank", "query": "q", "documents": []}),
        ("rerank", {"model": "cohere-rerank", "documents": ["d"]}),
        ("rerank", {"model": "cohere-rerank", "query": "q", "documents": [{"no": "text"}]}),
        ("moderations", {"model": "omni-moderation-latest", "input": []}),
        ("rerank", {"model": "gpt-4o-mini", "query": "q", "documents": ["d"]}),
        ("rerank", {"model": "azure-gpt", "query": "q", "documents": ["d"]}),
        ("moderations", {"model": "command-a", "input": "x"}),
        ("moderations", {"model": "azure-gpt", "input": "x"}),
        ("images/generations", {"model": "azure-gpt", "prompt": "a lighthouse"}),
        ("images/generations", {"model": "command-a", "prompt": "a lighthouse"}),
        ("completions", {"model": "command-a", "prompt": "once"}),
    ]
    for route, body in cases:
        r = _post(gateway, key, route, body)
        assert r.status_code == 400, (route, body, r.text)
        assert r.json()["error"]["type"] == "invalid_request_error", r.text
    unknown = _post(gateway, key, "rerank", {"model": "nope", "query": "q", "documents": ["d"]})
    assert unknown.status_code == 404


def test_moderations_pass_through(gateway: Gateway, key: tuple[str, str]) -> None:
    r = _post(gateway, key, "moderations", {"model": "omni-moderation-latest",
                                            "input": ["kill the process", "hello"]})
    assert r.status_code == 200, r.text
    assert [x["flagged"] for x in r.json()["results"]] == [True, False]
    assert r.json()["results"][0]["categories"]["violence"] is True


# --- accounting -----------------------------------------------------------------------------


def test_each_call_is_accounted_with_its_tokens_and_exact_cost(
    gateway: Gateway, client: openai.OpenAI, key: tuple[str, str]
) -> None:
    ids: dict[str, str] = {}
    raw = client.chat.completions.with_raw_response.create(
        model="command-a", messages=[{"role": "user", "content": "count me"}])
    ids["cohere-chat"] = raw.headers["x-request-id"]
    cohere_usage = raw.parse().usage
    raw = client.chat.completions.with_raw_response.create(
        model="azure-gpt", messages=[{"role": "user", "content": "count me"}])
    ids["azure-chat"] = raw.headers["x-request-id"]
    azure_usage = raw.parse().usage
    raw_embed = client.embeddings.with_raw_response.create(model="cohere-embed",
                                                           input="four words right here")
    ids["cohere-embed"] = raw_embed.headers["x-request-id"]
    for name, model in (("cohere-rerank", "cohere-rerank"), ("vllm-rerank", "vllm-rerank"),
                        ("vllm-per-query", "vllm-rerank-per-query")):
        r = _post(gateway, key, "rerank", {"model": model, **RERANK})
        assert r.status_code == 200, r.text
        ids[name] = r.headers["x-request-id"]
    r = _post(gateway, key, "moderations", {"model": "omni-moderation-latest",
                                            "input": "hello there"})
    ids["moderation"] = r.headers["x-request-id"]

    rows = _events(gateway, key[0], set(ids.values()))
    row = {name: rows[rid] for name, rid in ids.items()}
    assert all(r["status"] == "ok" for r in row.values()), row
    assert {name: r["endpoint"] for name, r in row.items()} == {
        "cohere-chat": "chat", "azure-chat": "chat", "cohere-embed": "embeddings",
        "cohere-rerank": "rerank", "vllm-rerank": "rerank", "vllm-per-query": "rerank",
        "moderation": "moderations"}
    assert {name: r["provider"] for name, r in row.items()}["azure-chat"] == "azure"

    # command-a-03-2025 at the shipped table's $2.5 / $10 per million tokens
    assert cohere_usage is not None and azure_usage is not None
    co = row["cohere-chat"]
    assert (co["prompt_tokens"], co["completion_tokens"]) == (
        cohere_usage.prompt_tokens, cohere_usage.completion_tokens)
    assert Decimal(str(co["cost"])) == (co["prompt_tokens"] * Decimal("0.0000025")
                                        + co["completion_tokens"] * Decimal("0.00001"))
    az = row["azure-chat"]
    assert az["prompt_tokens"] == azure_usage.prompt_tokens > 0
    assert Decimal(str(az["cost"])) == (az["prompt_tokens"] * AZ_IN
                                        + az["completion_tokens"] * AZ_OUT)
    em = row["cohere-embed"]
    assert em["prompt_tokens"] == 4
    assert Decimal(str(em["cost"])) == 4 * Decimal("0.00000012")
    # rerank-v3.5: $2 per 1,000 searches; the vLLM reranker by its tokens, or per query
    assert Decimal(str(row["cohere-rerank"]["cost"])) == Decimal("0.002")
    vllm = row["vllm-rerank"]
    assert vllm["prompt_tokens"] == 12  # 6 document words + the 2-word query per document
    assert Decimal(str(vllm["cost"])) == 12 * VLLM_PER_TOKEN
    assert Decimal(str(row["vllm-per-query"]["cost"])) == VLLM_PER_QUERY
    # moderations are free unless priced, and their input is counted
    assert Decimal(str(row["moderation"]["cost"])) == 0
    assert row["moderation"]["prompt_tokens"] > 0


def test_a_moderations_batch_completes_through_the_batch_api(
    gateway: Gateway, client: openai.OpenAI
) -> None:
    lines = [{"custom_id": f"m{i}", "method": "POST", "url": "/v1/moderations",
              "body": {"model": "omni-moderation-latest", "input": text}}
             for i, text in enumerate(["kill it", "hello", "fine"])]
    raw = "".join(json.dumps(line) + "\n" for line in lines)
    upload = client.files.create(file=("mod.jsonl", io.BytesIO(raw.encode())), purpose="batch")
    batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/moderations",
                                  completion_window="24h")
    deadline = time.monotonic() + 30
    while batch.status not in ("completed", "failed", "expired", "cancelled"):
        assert time.monotonic() < deadline, batch
        time.sleep(0.2)
        batch = client.batches.retrieve(batch.id)
    assert batch.status == "completed", batch
    assert batch.output_file_id is not None
    output = [json.loads(x) for x in client.files.content(batch.output_file_id).text
              .splitlines() if x]
    flagged = {o["custom_id"]: o["response"]["body"]["results"][0]["flagged"] for o in output}
    assert flagged == {"m0": True, "m1": False, "m2": False}


# --- other client protocols, through the chat translation -----------------------------------


def test_the_responses_api_reaches_cohere_and_azure(client: openai.OpenAI) -> None:
    for model, answer in (("command-a", "Cohere says: ping"),
                          ("azure-gpt", openai_server.ANSWER)):
        response = client.responses.create(model=model, input="ping")
        assert response.output_text == answer, model
        assert response.usage is not None and response.usage.output_tokens > 0


def test_the_anthropic_sdk_reaches_cohere_streamed_and_not(
    gateway: Gateway, key: tuple[str, str]
) -> None:
    anthropic = pytest.importorskip("anthropic")
    claude = anthropic.Anthropic(base_url=gateway.base_url, api_key=key[1], max_retries=0)
    message = claude.messages.create(model="command-a", max_tokens=64,
                                     messages=[{"role": "user", "content": "ping"}])
    assert message.content[0].text == "Cohere says: ping"
    with claude.messages.stream(model="command-a", max_tokens=64,
                                messages=[{"role": "user", "content": "pong"}]) as stream:
        text = "".join(stream.text_stream)
    assert text == "Cohere says: pong"


def test_a_rerank_that_asks_to_be_cached_is_answered_from_the_cache_the_second_time(
    gateway: Gateway, key: tuple[str, str],
    fakes: tuple[cohere_server.Served, azure_server.Served, str],
) -> None:
    cohere, _, _ = fakes
    body = {"model": "cohere-rerank", "query": "cache me", "documents": ["cache", "me"]}
    headers = {"authorization": f"Bearer {key[1]}", "cache-control": "max-age=60"}
    calls = []
    for _ in range(2):
        r = httpx.post(f"{gateway.base_url}/v1/rerank", json=body, headers=headers, timeout=30)
        assert r.status_code == 200, r.text
        calls.append((r.headers.get("x-aigw-cache"), r.json()["results"]))
    assert [c[0] for c in calls] == ["miss", "hit"]
    assert calls[0][1] == calls[1][1]
    assert sum(1 for route, sent in cohere.state.requests
               if route == "rerank" and sent["query"] == "cache me") == 1
