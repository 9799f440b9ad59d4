"""The Cohere adapter: pure v2 translation, then real HTTP against the fake Cohere API."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from schemas import reasoning
from schemas.config import Deployment
from schemas.errors import ErrorKind
from schemas.usage import TokenUsage
from tests.fakes import cohere_server
from workers.providers.base import UpstreamCall, UpstreamError
from workers.providers.cohere.adapter import CohereProvider
from workers.providers.cohere.retrieval import (
    from_cohere_embed,
    from_cohere_rerank,
    to_cohere_embed,
    to_cohere_rerank,
)
from workers.providers.cohere.translate import (
    StreamTranslator,
    from_cohere_chat,
    to_cohere_chat,
    usage_from_cohere,
)

TOOL = {"type": "function", "function": {
    "name": "lookup", "description": "look a thing up",
    "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}}
OTHER_TOOL = {"type": "function", "function": {"name": "other"}}


def chat(**body: Any) -> dict[str, Any]:
    body.setdefault("messages", [{"role": "user", "content": "hi"}])
    return to_cohere_chat(body, "command-a-03-2025")


def invalid(call: Any, *args: Any) -> UpstreamError:
    with pytest.raises(UpstreamError) as caught:
        call(*args)
    assert caught.value.info.kind is ErrorKind.INVALID_REQUEST
    assert caught.value.info.status == 400
    return caught.value


# --- chat requests --------------------------------------------------------------------------


def test_messages_keep_their_roles_and_developer_becomes_system() -> None:
    request = chat(messages=[
        {"role": "developer", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "a "},
                                     {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "again"},
    ])
    assert request["model"] == "command-a-03-2025"
    assert request["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "a "},
                                     {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "again"},
    ]


def test_sampling_parameters_take_cohere_names() -> None:
    request = chat(max_completion_tokens=50, temperature=0.3, top_p=0.9, seed=7,
                   frequency_penalty=0.1, presence_penalty=0.2, stop="END")
    assert request["max_tokens"] == 50
    assert request["p"] == 0.9 and request["temperature"] == 0.3 and request["seed"] == 7
    assert request["frequency_penalty"] == 0.1 and request["presence_penalty"] == 0.2
    assert request["stop_sequences"] == ["END"]
    assert "top_p" not in request and "stop" not in request
    assert chat(max_tokens=9)["max_tokens"] == 9
    assert "max_tokens" not in chat()


def test_cohere_native_parameters_pass_through_and_unknown_ones_do_not() -> None:
    documents = [{"id": "d1", "data": {"text": "NATS is a messaging system."}}]
    request = chat(documents=documents, safety_mode="STRICT", k=5, stream_options={},
                   service_tier="flex")
    assert request["documents"] == documents
    assert request["safety_mode"] == "STRICT" and request["k"] == 5
    assert "service_tier" not in request and "stream_options" not in request


def test_tools_and_a_tool_turn_translate() -> None:
    request = chat(tools=[TOOL], messages=[
        {"role": "user", "content": "find x"},
        {"role": "assistant", "content": "Let me look.", "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "lookup", "arguments": '{"query":"x"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "x is 42"},
    ])
    assert request["tools"] == [{"type": "function", "function": {
        "name": "lookup", "description": "look a thing up",
        "parameters": TOOL["function"]["parameters"]}}]  # type: ignore[index]
    assistant, tool = request["messages"][1], request["messages"][2]
    assert assistant == {"role": "assistant", "tool_plan": "Let me look.", "tool_calls": [
        {"id": "c1", "type": "function",
         "function": {"name": "lookup", "arguments": '{"query":"x"}'}}]}
    assert tool == {"role": "tool", "tool_call_id": "c1", "content": "x is 42"}


def test_tool_choice_maps_to_required_none_or_one_named_tool() -> None:
    assert chat(tools=[TOOL], tool_choice="required")["tool_choice"] == "REQUIRED"
    assert chat(tools=[TOOL], tool_choice="none")["tool_choice"] == "NONE"
    assert "tool_choice" not in chat(tools=[TOOL], tool_choice="auto")
    named = chat(tools=[TOOL, OTHER_TOOL],
                 tool_choice={"type": "function", "function": {"name": "other"}})
    assert named["tool_choice"] == "REQUIRED"
    assert [t["function"]["name"] for t in named["tools"]] == ["other"]
    error = invalid(lambda: chat(tools=[TOOL], tool_choice={
        "type": "function", "function": {"name": "absent"}}))
    assert error.info.param == "tool_choice"


def test_response_format_becomes_json_object_with_its_schema() -> None:
    assert chat(response_format={"type": "json_object"})["response_format"] == {
        "type": "json_object"}
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    found = chat(response_format={"type": "json_schema",
                                  "json_schema": {"name": "x", "schema": schema}})
    assert found["response_format"] == {"type": "json_object", "json_schema": schema}
    assert "response_format" not in chat(response_format={"type": "text"})


def test_reasoning_effort_becomes_a_thinking_budget_and_native_thinking_wins() -> None:
    assert chat(reasoning_effort="low")["thinking"] == {"type": "enabled", "token_budget": 2048}
    assert chat(reasoning_effort="none")["thinking"] == {"type": "disabled"}
    assert chat(reasoning_effort="high", thinking={"type": "enabled", "token_budget": 99})[
        "thinking"] == {"type": "enabled", "token_budget": 99}
    assert "thinking" not in chat()
    assert invalid(lambda: chat(reasoning_effort="huge")).info.param == "reasoning_effort"


def test_the_ingress_reserves_cohere_thinking_like_anthropic_thinking() -> None:
    assert reasoning.thinking_budget("cohere", {"reasoning_effort": "medium"}) == 8192
    assert reasoning.thinking_budget("cohere_chat", {"thinking": {
        "type": "enabled", "token_budget": 500}}) == 500
    assert reasoning.thinking_budget("cohere", {"reasoning_effort": "none"}) == 0


def test_images_pass_as_image_url_parts() -> None:
    request = chat(messages=[{"role": "user", "content": [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}])
    assert request["messages"][0]["content"][1] == {
        "type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}


def test_requests_cohere_cannot_express_are_400s_before_any_call() -> None:
    assert invalid(lambda: chat(n=2)).info.param == "n"
    invalid(lambda: chat(messages=[]))
    invalid(lambda: chat(messages=[{"role": "tool", "content": "x"}]))
    invalid(lambda: chat(messages=[{"role": "user", "content": [{"type": "input_audio"}]}]))
    invalid(lambda: chat(messages=[{"role": "narrator", "content": "x"}]))


# --- chat answers ---------------------------------------------------------------------------


def test_billed_units_are_the_usage_and_raw_tokens_only_stand_in() -> None:
    both = {"billed_units": {"input_tokens": 5, "output_tokens": 3},
            "tokens": {"input_tokens": 15, "output_tokens": 3}}
    assert usage_from_cohere(both) == TokenUsage(prompt_tokens=5, completion_tokens=3)
    assert usage_from_cohere({"tokens": {"input_tokens": 15, "output_tokens": 3}}) == \
        TokenUsage(prompt_tokens=15, completion_tokens=3)
    assert usage_from_cohere(None) == TokenUsage()


def test_an_answer_becomes_a_chat_completion() -> None:
    answer = {"id": "abc", "finish_reason": "MAX_TOKENS", "message": {
        "role": "assistant", "content": [{"type": "thinking", "thinking": "hmm"},
                                         {"type": "text", "text": "Hel"},
                                         {"type": "text", "text": "lo"}]},
              "usage": {"billed_units": {"input_tokens": 4, "output_tokens": 2}}}
    completion = from_cohere_chat(answer, request_id="r1", model="command-a", created=1)
    assert completion["id"] == "chatcmpl-abc"
    choice = completion["choices"][0]
    assert choice["message"]["content"] == "Hello"
    assert choice["message"]["reasoning_content"] == "hmm"
    assert choice["finish_reason"] == "length"
    assert completion["usage"]["prompt_tokens"] == 4
    assert completion["usage"]["total_tokens"] == 6


def test_a_tool_call_answer_has_null_content_and_tool_calls() -> None:
    answer = {"id": "abc", "finish_reason": "TOOL_CALL", "message": {
        "role": "assistant", "tool_plan": "I will look", "tool_calls": [
            {"id": "t1", "type": "function",
             "function": {"name": "lookup", "arguments": '{"query":"x"}'}}]}}
    choice = from_cohere_chat(answer, request_id="r1", model="m")["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    assert choice["message"]["tool_calls"] == [{"id": "t1", "type": "function", "function": {
        "name": "lookup", "arguments": '{"query":"x"}'}}]


def test_stream_events_become_chunks_in_order_with_usage_last() -> None:
    translator = StreamTranslator(request_id="r1", model="command-a", created=1)
    events: list[dict[str, Any]] = [
        {"type": "message-start", "id": "s1", "delta": {"message": {"role": "assistant"}}},
        {"type": "content-start", "index": 0,
         "delta": {"message": {"content": {"type": "text", "text": ""}}}},
        {"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": "Hi"}}}},
        {"type": "content-end", "index": 0},
        {"type": "tool-plan-delta", "delta": {"message": {"tool_plan": "plan"}}},
        {"type": "tool-call-start", "index": 0, "delta": {"message": {"tool_calls": {
            "id": "t1", "type": "function", "function": {"name": "lookup", "arguments": ""}}}}},
        {"type": "tool-call-delta", "index": 0,
         "delta": {"message": {"tool_calls": {"function": {"arguments": '{"q":'}}}}},
        {"type": "tool-call-delta", "index": 0,
         "delta": {"message": {"tool_calls": {"function": {"arguments": '"x"}'}}}}},
        {"type": "tool-call-end", "index": 0},
        {"type": "message-end", "delta": {"finish_reason": "TOOL_CALL", "usage": {
            "billed_units": {"input_tokens": 7, "output_tokens": 4},
            "tokens": {"input_tokens": 17, "output_tokens": 4}}}},
    ]
    chunks = [chunk for event in events for chunk in translator.feed(event)]
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert all(c["id"] == "chatcmpl-s1" for c in chunks)
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert deltas[1] == {"content": "Hi"}
    assert deltas[2]["tool_calls"][0] == {"index": 0, "id": "t1", "type": "function",
                                          "function": {"name": "lookup", "arguments": ""}}
    args = "".join(d["tool_calls"][0]["function"]["arguments"] for d in deltas[2:5])
    assert json.loads(args) == {"q": "x"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert translator.done
    assert translator.usage == TokenUsage(prompt_tokens=7, completion_tokens=4)


# --- embeddings and rerank ------------------------------------------------------------------


def test_embed_body_asks_for_floats_with_an_input_type() -> None:
    assert to_cohere_embed({"input": "a b", "dimensions": 256}, "embed-v4.0") == {
        "model": "embed-v4.0", "texts": ["a b"], "input_type": "search_document",
        "embedding_types": ["float"], "output_dimension": 256}
    assert to_cohere_embed({"input": ["q"], "input_type": "search_query"},
                           "embed-v4.0")["input_type"] == "search_query"
    invalid(to_cohere_embed, {"input": [1, 2, 3]}, "m")
    invalid(to_cohere_embed, {"input": "x", "encoding_format": "int8"}, "m")
    invalid(to_cohere_embed, {"input": "x", "input_type": "poetry"}, "m")


def test_embed_answer_becomes_an_embeddings_list_with_billed_tokens() -> None:
    response, usage = from_cohere_embed({"embeddings": {"float": [[0.1, 0.2], [0.3, 0.4]]},
                                         "meta": {"billed_units": {"input_tokens": 6}}}, "e")
    assert [d["embedding"] for d in response["data"]] == [[0.1, 0.2], [0.3, 0.4]]
    assert [d["index"] for d in response["data"]] == [0, 1]
    assert response["usage"] == {"prompt_tokens": 6, "total_tokens": 6}
    assert usage == TokenUsage(prompt_tokens=6)


def test_base64_embeddings_are_packed_float32() -> None:
    response, _ = from_cohere_embed({"embeddings": {"float": [[0.5, -1.0]]}}, "e", "base64")
    packed = base64.b64decode(response["data"][0]["embedding"])
    assert struct.unpack("<2f", packed) == (0.5, -1.0)


def test_rerank_takes_text_documents_and_answers_in_litellm_shape() -> None:
    body = {"model": "r", "query": "q", "documents": ["a", {"text": "b"}], "top_n": 1,
            "return_documents": True}
    assert to_cohere_rerank(body, "rerank-v3.5") == {
        "model": "rerank-v3.5", "query": "q", "documents": ["a", "b"], "top_n": 1}
    response, usage = from_cohere_rerank(
        {"id": "x", "results": [{"index": 1, "relevance_score": 0.9}],
         "meta": {"api_version": {"version": "2"}, "billed_units": {"search_units": 1}}},
        body, "r1")
    assert response == {"id": "x", "results": [
        {"index": 1, "relevance_score": 0.9, "document": {"text": "b"}}],
        "meta": {"api_version": {"version": "2"}, "billed_units": {"search_units": 1}}}
    assert usage.queries == 1
    plain, _ = from_cohere_rerank({"results": [{"index": 0, "relevance_score": 0.5}]},
                                  {**body, "return_documents": False}, "r1")
    assert plain["id"] == "r1" and "document" not in plain["results"][0]
    assert plain["meta"]["billed_units"] == {"search_units": 1}


# --- the adapter over HTTP ------------------------------------------------------------------


@pytest.fixture(scope="module")
def served() -> Iterator[cohere_server.Served]:
    with cohere_server.running() as served:
        yield served


def call(served: cohere_server.Served, model: str, body: dict[str, Any],
         key: str = cohere_server.API_KEY) -> UpstreamCall:
    deployment = Deployment(id=f"co-{model}", model_name="co", provider="cohere",
                            upstream_model=model, api_key=SecretStr(key), api_base=served.url)
    return UpstreamCall(deployment=deployment, body={**body, "model": model}, request_id="req-1")


async def test_complete_calls_v2_chat_with_bearer_auth(served: cohere_server.Served) -> None:
    async with httpx.AsyncClient() as client:
        result = await CohereProvider(client).complete(call(
            served, "command-a-03-2025", {"messages": [{"role": "user", "content": "ping"}]}))
    assert result.response["choices"][0]["message"]["content"] == "Cohere says: ping"
    assert result.usage.prompt_tokens > 0 and result.usage.completion_tokens == 3
    route, sent = served.state.requests[-1]
    assert route == "chat" and "stream" not in sent


async def test_stream_yields_chunks_then_billed_usage(served: cohere_server.Served) -> None:
    async with httpx.AsyncClient() as client:
        items = [item async for item in CohereProvider(client).stream(call(
            served, "command-a-03-2025",
            {"messages": [{"role": "user", "content": "ping"}], "tools": [TOOL]}))]
    usage = items[-1]
    assert isinstance(usage, TokenUsage) and usage.completion_tokens == 7
    chunks = [i for i in items if isinstance(i, dict)]
    args = "".join(tc["function"].get("arguments") or "" for c in chunks
                   for tc in c["choices"][0]["delta"].get("tool_calls") or [])
    assert json.loads(args) == {"query": "ping"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_embed_and_rerank_over_http(served: cohere_server.Served) -> None:
    async with httpx.AsyncClient() as client:
        provider = CohereProvider(client)
        embedded = await provider.embed(call(served, "embed-v4.0", {"input": ["a b", "c"]}))
        ranked = await provider.rerank(call(served, "rerank-v3.5", {
            "query": "red apple", "documents": ["green pear", "red apple pie"], "top_n": 1}))
    assert len(embedded.response["data"]) == 2 and embedded.usage.prompt_tokens == 3
    assert ranked.response["results"] == [{"index": 1, "relevance_score": 1.0}]
    assert ranked.usage.queries == 1


@pytest.mark.parametrize(("model", "kind", "status", "retryable"), [
    ("fail-429", ErrorKind.RATE_LIMIT, 429, True),
    ("fail-500", ErrorKind.SERVER, 500, True),
    ("fail-422", ErrorKind.INVALID_REQUEST, 400, False),
    ("too-long", ErrorKind.CONTEXT_LENGTH, 400, False),
])
async def test_errors_map_to_kinds_statuses_and_retryability(
    served: cohere_server.Served, model: str, kind: ErrorKind, status: int, retryable: bool
) -> None:
    async with httpx.AsyncClient() as client:
        with pytest.raises(UpstreamError) as caught:
            await CohereProvider(client).complete(
                call(served, model, {"messages": [{"role": "user", "content": "x"}]}))
    info = caught.value.info
    assert (info.kind, info.status, info.retryable) == (kind, status, retryable)
    assert info.provider == "cohere" and info.message


async def test_a_wrong_key_is_an_authentication_error(served: cohere_server.Served) -> None:
    async with httpx.AsyncClient() as client:
        with pytest.raises(UpstreamError) as caught:
            await CohereProvider(client).embed(call(served, "embed-v4.0", {"input": "x"},
                                                    key="co-wrong-key-98765"))
    assert caught.value.info.kind is ErrorKind.AUTHENTICATION
    assert "co-wrong-key-98765" not in caught.value.info.message


async def test_a_stream_that_ends_in_error_raises_after_its_content(
    served: cohere_server.Served
) -> None:
    seen: list[Any] = []
    async with httpx.AsyncClient() as client:
        with pytest.raises(UpstreamError) as caught:
            async for item in CohereProvider(client).stream(call(
                    served, "fail-midstream", {"messages": [{"role": "user", "content": "x"}]})):
                seen.append(item)
    assert caught.value.info.kind is ErrorKind.SERVER
    assert "crashed" in caught.value.info.message
    assert any(isinstance(i, dict) and i["choices"][0]["delta"].get("content") for i in seen)
