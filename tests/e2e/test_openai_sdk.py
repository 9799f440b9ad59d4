"""The official openai SDK against a real ingress, real workers and a real nats-server."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from tests.e2e.conftest import MASTER_KEY
from tests.harness import Gateway

pytestmark = pytest.mark.e2e


@pytest.fixture
def client(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url + "/v1", api_key=MASTER_KEY, max_retries=0)


def test_plain_chat_completion_comes_back_in_openai_shape(client: openai.OpenAI) -> None:
    response = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Say hello"}]
    )
    completion = response.parse()
    assert completion.choices[0].message.content == "Hello from the fake OpenAI server."
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens == 6
    assert response.headers["x-request-id"].startswith("req_")


def test_streamed_chat_ends_with_usage_chunk_when_include_usage(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Say hello"}],
        stream=True, stream_options={"include_usage": True},
    ))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from the fake OpenAI server."
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 6
    assert all(c.usage is None for c in chunks[:-1])


def test_streamed_chat_has_no_usage_chunk_when_not_asked(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Say hello"}], stream=True,
    ))
    assert all(c.choices for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_upstream_is_always_asked_for_stream_usage(
    client: openai.OpenAI, fake_openai: tuple[str, object]
) -> None:
    _, state = fake_openai
    list(client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "count me"}], stream=True,
    ))
    sent = [r for r in state.requests if r.get("messages", [{}])[0].get("content") == "count me"]  # type: ignore[attr-defined]
    assert sent[-1]["stream_options"] == {"include_usage": True}


def test_streamed_tool_call_arguments_reassemble_to_json(client: openai.OpenAI) -> None:
    tools = [{"type": "function", "function": {
        "name": "get_weather", "parameters": {"type": "object", "properties": {}}}}]
    chunks = list(client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "weather?"}],
        tools=tools, stream=True,  # type: ignore[arg-type]
    ))
    args = "".join(
        tc.function.arguments or ""
        for c in chunks if c.choices
        for tc in (c.choices[0].delta.tool_calls or []) if tc.function
    )
    assert json.loads(args) == {"city": "Paris", "unit": "celsius"}
    names = [tc.function.name for c in chunks if c.choices
             for tc in (c.choices[0].delta.tool_calls or []) if tc.function and tc.function.name]
    assert names == ["get_weather"]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_tool_call_non_streamed(client: openai.OpenAI) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    completion = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "weather?"}],
        tools=tools, tool_choice="auto", parallel_tool_calls=False,  # type: ignore[arg-type]
    )
    call = completion.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert completion.choices[0].finish_reason == "tool_calls"


def test_json_mode_returns_a_json_object(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "json please"}],
        response_format={"type": "json_object"},
    )
    assert json.loads(completion.choices[0].message.content or "") == {
        "answer": "Hello from the fake OpenAI server."}


def test_unknown_fields_pass_through_to_openai_compatible_upstreams(
    client: openai.OpenAI, fake_openai: tuple[str, object]
) -> None:
    _, state = fake_openai
    client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "passthrough"}],
        extra_body={"top_k": 3, "repetition_penalty": 1.1}, user="u-1", metadata={"team": "a"},
    )
    sent = [r for r in state.requests
            if r.get("messages", [{}])[0].get("content") == "passthrough"]  # type: ignore[attr-defined]
    assert sent[-1]["top_k"] == 3 and sent[-1]["repetition_penalty"] == 1.1
    assert sent[-1]["model"] == "gpt-4o-mini" and sent[-1]["user"] == "u-1"


def test_embeddings(client: openai.OpenAI) -> None:
    result = client.embeddings.create(model="text-embedding-3-small", input=["a b", "c"])
    assert [d.index for d in result.data] == [0, 1]
    assert result.usage.prompt_tokens == 3


def test_model_list_has_the_aliases(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert "gpt-4o-mini" in ids and "flaky-group" in ids
    assert ids.count("flaky-group") == 1


def test_wrong_key_is_an_authentication_error(gateway: Gateway) -> None:
    bad = openai.OpenAI(base_url=gateway.base_url + "/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        bad.models.list()
    assert "sk-wrong" not in str(info.value)


def test_unknown_model_is_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-7", messages=[{"role": "user", "content": "x"}])
    assert info.value.code == "model_not_found"


def test_upstream_404_model_is_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(
            model="missing-upstream", messages=[{"role": "user", "content": "x"}])


def test_upstream_429_is_a_rate_limit_error_with_retry_after(client: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="limited", messages=[{"role": "user", "content": "x"}])
    assert info.value.response.headers["retry-after"] == "7"


def test_context_length_error_is_a_bad_request(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="tiny-context", messages=[{"role": "user", "content": "x"}])
    assert info.value.code == "context_length_exceeded"


def test_upstream_500_is_a_server_error(client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="broken", messages=[{"role": "user", "content": "x"}])


def test_failing_deployment_in_a_group_falls_over_to_the_next(client: openai.OpenAI) -> None:
    for _ in range(4):
        completion = client.chat.completions.create(
            model="flaky-group", messages=[{"role": "user", "content": "x"}])
        assert completion.choices[0].message.content == "Hello from the fake OpenAI server."


def test_no_worker_for_provider_is_503_at_once(client: openai.OpenAI) -> None:
    started = time.monotonic()
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(
            model="nobody-serves", messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 503
    assert time.monotonic() - started < 1.0


def test_failure_mid_stream_ends_the_stream_with_an_error_event(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="midstream", messages=[{"role": "user", "content": "x"}], stream=True)
    received = []
    with pytest.raises(openai.APIError):
        for chunk in stream:
            received.append(chunk)
    assert received, "content before the failure reaches the client"


def test_bad_json_is_a_400_in_openai_shape(gateway: Gateway) -> None:
    r = httpx.post(gateway.base_url + "/v1/chat/completions", content=b"{nope",
                   headers={"authorization": f"Bearer {MASTER_KEY}"})
    assert r.status_code == 400
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_invalid_field_names_the_param(gateway: Gateway) -> None:
    r = httpx.post(gateway.base_url + "/v1/chat/completions",
                   json={"model": "gpt-4o-mini", "messages": [{"role": "robot", "content": "x"}]},
                   headers={"authorization": f"Bearer {MASTER_KEY}"})
    assert r.status_code == 400
    assert r.json()["error"]["param"].startswith("messages.0.role")


def test_routes_answer_without_the_v1_segment(gateway: Gateway) -> None:
    r = httpx.post(gateway.base_url + "/chat/completions",
                   json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]},
                   headers={"authorization": f"Bearer {MASTER_KEY}"})
    assert r.status_code == 200


def test_unknown_route_is_a_404_in_openai_shape(gateway: Gateway) -> None:
    r = httpx.get(gateway.base_url + "/v1/nothing-here")
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_url"
    assert r.headers["x-request-id"].startswith("req_")
