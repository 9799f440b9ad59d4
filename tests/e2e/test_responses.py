"""The OpenAI Responses API through a running gateway, with the official openai SDK
unchanged: answered through chat by the upstream, whole and streamed, stored and continued
with previous_response_id, scoped to its key, accounted with exact cost."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest
from pydantic import BaseModel

from tests.e2e.conftest import MASTER_KEY, make_key
from tests.e2e.usage_logs import usage_logs
from tests.fakes.openai_server import ANSWER, REASONING, REASONING_TOKENS, FakeOpenAIState
from tests.harness import Gateway

pytestmark = pytest.mark.e2e

TOOLS: list[Any] = [{"type": "function", "name": "get_weather", "description": "Weather now",
                     "parameters": {"type": "object",
                                    "properties": {"city": {"type": "string"}}}}]
WEATHER = {"city": "Paris", "unit": "celsius"}


@pytest.fixture
def master(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url + "/v1", api_key=MASTER_KEY, max_retries=0)


def _client(gateway: Gateway, alias: str) -> tuple[str, openai.OpenAI]:
    key_id, secret = make_key(gateway, alias=alias)
    return key_id, openai.OpenAI(base_url=gateway.base_url + "/v1", api_key=secret,
                                 max_retries=0)


def _sent(state: FakeOpenAIState) -> dict[str, Any]:
    """The chat request the upstream received last."""
    return state.requests[-1]


def test_a_string_input_with_instructions_answers_a_response(
    master: openai.OpenAI, fake_openai: tuple[str, FakeOpenAIState]
) -> None:
    raw = master.responses.with_raw_response.create(
        model="pricey", input="Say hello", instructions="Be brief", max_output_tokens=64,
        temperature=0.5, store=False)
    response = raw.parse()
    assert response.object == "response" and response.id.startswith("resp_")
    assert response.status == "completed"
    assert response.output_text == ANSWER
    assert response.instructions == "Be brief" and response.max_output_tokens == 64
    assert response.usage is not None and response.usage.output_tokens == 6
    assert response.usage.input_tokens == _prompt_words(_sent(fake_openai[1]))
    assert Decimal(raw.headers["x-aigw-cost-usd"]) == (
        Decimal("0.001") * response.usage.input_tokens + Decimal("0.002") * 6)
    sent = _sent(fake_openai[1])
    assert sent["messages"] == [{"role": "system", "content": "Be brief"},
                                {"role": "user", "content": "Say hello"}]
    assert sent["max_completion_tokens"] == 64 and sent["temperature"] == 0.5


def _prompt_words(body: dict[str, Any]) -> int:
    return sum(len(json.dumps(m).split()) for m in body["messages"])


def test_input_items_with_an_image_become_chat_messages(
    master: openai.OpenAI, fake_openai: tuple[str, FakeOpenAIState]
) -> None:
    image = "data:image/png;base64,iVBORw0KGgo="
    response = master.responses.create(model="gpt-4o-mini", store=False, input=[
        {"role": "developer", "content": "Answer in French."},
        {"role": "user", "content": [{"type": "input_text", "text": "What is this?"},
                                     {"type": "input_image", "image_url": image,
                                      "detail": "low"}]}])
    assert response.output_text == ANSWER
    assert _sent(fake_openai[1])["messages"] == [
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                     {"type": "image_url", "image_url": {"url": image,
                                                                         "detail": "low"}}]}]


def test_a_function_call_round_trips_with_its_output(
    master: openai.OpenAI, fake_openai: tuple[str, FakeOpenAIState]
) -> None:
    first = master.responses.create(model="gpt-4o-mini", input="Weather in Paris?",
                                    tools=TOOLS, store=False)
    [call] = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather" and json.loads(call.arguments) == WEATHER
    assert call.call_id == "call_fake1" and call.id.startswith("fc_")
    sent = _sent(fake_openai[1])
    assert sent["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather now",
        "parameters": TOOLS[0]["parameters"]}}]

    second = master.responses.create(
        model="gpt-4o-mini", tools=TOOLS, tool_choice="none", store=False,
        input=[{"role": "user", "content": "Weather in Paris?"}, *[
            item.model_dump(exclude_none=True) for item in first.output],
            {"type": "function_call_output", "call_id": call.call_id, "output": "18 C"}])
    assert second.output_text == ANSWER
    messages = _sent(fake_openai[1])["messages"]
    assert messages[1] == {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_fake1", "type": "function",
         "function": {"name": "get_weather", "arguments": call.arguments}}]}
    assert messages[2] == {"role": "tool", "tool_call_id": "call_fake1", "content": "18 C"}
    assert _sent(fake_openai[1])["tool_choice"] == "none"


class Answer(BaseModel):
    answer: str


def test_structured_output_with_a_json_schema_parses(
    master: openai.OpenAI, fake_openai: tuple[str, FakeOpenAIState]
) -> None:
    parsed = master.responses.parse(model="gpt-4o-mini", input="Answer in JSON",
                                    text_format=Answer, store=False)
    assert parsed.output_parsed == Answer(answer=ANSWER)
    fmt = _sent(fake_openai[1])["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "Answer"
    assert fmt["json_schema"]["schema"]["properties"] == {"answer": {"title": "Answer",
                                                                     "type": "string"}}


def test_reasoning_effort_goes_up_and_the_thinking_comes_back_as_a_reasoning_item(
    master: openai.OpenAI, fake_openai: tuple[str, FakeOpenAIState]
) -> None:
    response = master.responses.create(model="reasoner", input="hi", store=False,
                                       reasoning={"effort": "high"})
    assert _sent(fake_openai[1])["reasoning_effort"] == "high"
    assert response.reasoning is not None and response.reasoning.effort == "high"
    reasoning = response.output[0]
    assert reasoning.type == "reasoning"
    assert reasoning.content is not None and reasoning.content[0].text == REASONING
    assert response.output_text == ANSWER
    assert response.usage is not None
    assert response.usage.output_tokens_details.reasoning_tokens == REASONING_TOKENS
    assert response.usage.output_tokens == 6 + REASONING_TOKENS


def test_a_streamed_text_answer_is_the_real_apis_event_sequence(master: openai.OpenAI) -> None:
    with master.responses.stream(model="gpt-4o-mini", input="Say hello") as stream:
        events = list(stream)
        final = stream.get_final_response()
    types = [e.type for e in events]
    assert types[:4] == ["response.created", "response.in_progress",
                         "response.output_item.added", "response.content_part.added"]
    assert types[-4:] == ["response.output_text.done", "response.content_part.done",
                          "response.output_item.done", "response.completed"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) == 6 and "".join(deltas) == ANSWER
    assert final.output_text == ANSWER and final.status == "completed"
    assert final.usage is not None and final.usage.output_tokens == 6


def test_a_streamed_function_call_and_reasoning_reassemble(master: openai.OpenAI) -> None:
    with master.responses.stream(model="gpt-4o-mini", input="Weather?", tools=TOOLS,
                                 store=False) as stream:
        events = list(stream)
        final = stream.get_final_response()
    pieces = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    assert len(pieces) > 1 and json.loads("".join(pieces)) == WEATHER
    [done] = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert json.loads(done.arguments) == WEATHER
    [call] = final.output
    assert call.type == "function_call" and call.name == "get_weather"

    with master.responses.stream(model="reasoner", input="hi", store=False) as stream:
        events = list(stream)
        final = stream.get_final_response()
    thinking = "".join(e.delta for e in events if e.type == "response.reasoning_text.delta")
    assert thinking == REASONING
    assert [o.type for o in final.output] == ["reasoning", "message"]
    assert final.usage is not None
    assert final.usage.output_tokens_details.reasoning_tokens == REASONING_TOKENS


def test_a_stream_broken_off_ends_with_response_failed(master: openai.OpenAI) -> None:
    with master.responses.stream(model="midstream", input="Say hello", store=False) as stream:
        events = list(stream)
    assert [e.type for e in events[-2:]] == ["error", "response.failed"]
    assert events[-1].response.status == "failed"  # type: ignore[union-attr]


def test_previous_response_id_continues_the_conversation(
    gateway: Gateway, fake_openai: tuple[str, FakeOpenAIState]
) -> None:
    _, client = _client(gateway, "responses-continue")
    first = client.responses.create(model="gpt-4o-mini", input="My name is Ada.",
                                    instructions="Be kind")
    assert first.store is True
    second = client.responses.create(model="gpt-4o-mini", input="What is my name?",
                                     previous_response_id=first.id)
    assert second.previous_response_id == first.id
    # earlier turns, not their instructions (as at OpenAI)
    assert _sent(fake_openai[1])["messages"] == [
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": ANSWER},
        {"role": "user", "content": "What is my name?"}]

    # a streamed turn is stored too, and a function call continues with its output
    with client.responses.stream(model="gpt-4o-mini", input="Weather?", tools=TOOLS,
                                 previous_response_id=second.id) as stream:
        third = stream.get_final_response()
    [call] = third.output
    client.responses.create(model="gpt-4o-mini", previous_response_id=third.id,
                            input=[{"type": "function_call_output", "call_id": call.call_id,
                                    "output": "18 C"}])
    messages = _sent(fake_openai[1])["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant", "user",
                                             "assistant", "tool"]
    assert messages[5]["tool_calls"][0]["id"] == call.call_id
    assert messages[6] == {"role": "tool", "tool_call_id": call.call_id, "content": "18 C"}


def test_a_stored_response_is_read_listed_and_deleted_by_its_key_only(
    gateway: Gateway, master: openai.OpenAI
) -> None:
    _, owner = _client(gateway, "responses-owner")
    _, other = _client(gateway, "responses-other")
    made = owner.responses.create(model="gpt-4o-mini", input="Remember me.")

    assert owner.responses.retrieve(made.id).output_text == ANSWER
    assert master.responses.retrieve(made.id).id == made.id  # the master key sees all
    items = owner.responses.input_items.list(made.id)
    assert [i.type for i in items.data] == ["message"]
    assert items.data[0].content[0].text == "Remember me."  # type: ignore[union-attr]

    for call in (lambda: other.responses.retrieve(made.id),
                 lambda: other.responses.delete(made.id),
                 lambda: other.responses.input_items.list(made.id),
                 lambda: other.responses.create(model="gpt-4o-mini", input="and?",
                                                previous_response_id=made.id)):
        with pytest.raises(openai.NotFoundError) as err:
            call()
        assert err.value.code == "response_not_found"

    owner.responses.delete(made.id)
    with pytest.raises(openai.NotFoundError):
        owner.responses.retrieve(made.id)
    unstored = owner.responses.create(model="gpt-4o-mini", input="Forget me.", store=False)
    with pytest.raises(openai.NotFoundError):
        owner.responses.retrieve(unstored.id)
    r = httpx.get(gateway.base_url + "/responses/resp_*", timeout=10,
                  headers={"authorization": f"Bearer {MASTER_KEY}"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "response_not_found"


def test_each_call_is_one_usage_event_under_responses_with_exact_cost(
    gateway: Gateway, fake_openai: tuple[str, FakeOpenAIState]
) -> None:
    key_id, client = _client(gateway, "responses-usage")
    costs: list[Decimal] = []
    raw = client.responses.with_raw_response.create(model="reasoner", input="one",
                                                    metadata={"run": "r1"})
    assert "metadata" not in _sent(fake_openai[1])  # it describes the stored response
    assert raw.parse().metadata == {"run": "r1"}
    costs.append(Decimal(raw.headers["x-aigw-cost-usd"]))
    with client.responses.stream(model="reasoner", input="two", store=False) as stream:
        final = stream.get_final_response()
    assert final.usage is not None
    costs.append(Decimal(str(final.usage.cost)))  # type: ignore[attr-defined]

    rows = usage_logs(gateway, key_id, expected=2)
    assert len(rows) == 2
    assert {r["endpoint"] for r in rows} == {"responses"}
    assert sorted(r["streamed"] for r in rows) == [False, True]
    for row in rows:
        assert row["status"] == "ok"
        assert row["completion_tokens"] == 6 + REASONING_TOKENS
        assert row["reasoning_tokens"] == REASONING_TOKENS
        assert Decimal(row["cost"]) == (Decimal("0.001") * row["prompt_tokens"]
                                        + Decimal("0.002") * row["completion_tokens"])
    assert sorted(costs) == sorted(Decimal(r["cost"]) for r in rows)
    assert [r["metadata"] for r in rows if not r["streamed"]] == [{"run": "r1"}]


def test_errors_are_openai_shaped_with_the_right_status(
    gateway: Gateway, master: openai.OpenAI
) -> None:
    url = gateway.base_url + "/v1/responses"
    headers = {"authorization": f"Bearer {MASTER_KEY}"}
    for body, param in (
        ({"input": "x"}, "model"),
        ({"model": "gpt-4o-mini"}, "input"),
        ({"model": "gpt-4o-mini", "input": "x", "tools": [{"type": "web_search"}]},
         "tools[0].type"),
        ({"model": "gpt-4o-mini", "input": 7}, "input"),
        ({"model": "gpt-4o-mini", "input": "x", "max_output_tokens": 0}, "max_output_tokens"),
        ({"model": "gpt-4o-mini", "input": [{"type": "web_search_call"}]}, "input[0].type"),
    ):
        r = httpx.post(url, json=body, headers=headers, timeout=10)
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert (error["param"] or "").startswith(param), error
    r = httpx.post(url, content=b"{not json", headers=headers, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    with pytest.raises(openai.NotFoundError):
        master.responses.create(model="no-such-model", input="x")
    with pytest.raises(openai.RateLimitError):
        master.responses.create(model="limited", input="x")
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=gateway.base_url + "/v1", api_key="sk-wrong",
                      max_retries=0).responses.create(model="gpt-4o-mini", input="x")
    with pytest.raises(openai.NotFoundError) as err:
        master.responses.create(model="gpt-4o-mini", input="x",
                                previous_response_id="resp_nonexistent")
    assert err.value.param == "previous_response_id"  # type: ignore[attr-defined]
    # the unversioned alias answers too
    r = httpx.post(gateway.base_url + "/responses", headers=headers, timeout=10,
                   json={"model": "gpt-4o-mini", "input": "x", "store": False})
    assert r.status_code == 200 and r.json()["output"][0]["content"][0]["text"] == ANSWER


@pytest.mark.parametrize("model", ["anthropic-claude-sonnet-4-20250514",
                                   "gemini-gemini-2.0-flash"])
def test_a_native_provider_answers_responses_whole_and_streamed(
    master: openai.OpenAI, model: str
) -> None:
    response = master.responses.create(model=model, input="ping", instructions="be brief",
                                       store=False)
    assert "ping" in response.output_text and response.status == "completed"
    assert response.usage is not None and response.usage.input_tokens > 0
    with master.responses.stream(model=model, input="ping", store=False) as stream:
        events = list(stream)
        final = stream.get_final_response()
    assert "ping" in "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert final.usage is not None and final.usage.output_tokens > 0


def test_anthropic_thinking_comes_back_as_a_reasoning_item(master: openai.OpenAI) -> None:
    response = master.responses.create(model="anthropic-claude-sonnet-4-20250514",
                                       input="think about ping", max_output_tokens=4096,
                                       reasoning={"effort": "low"}, store=False)
    kinds = [item.type for item in response.output]
    assert kinds[0] == "reasoning" and "message" in kinds
    assert response.output[0].content  # type: ignore[union-attr]
    assert response.usage is not None and response.usage.output_tokens > 0
    with master.responses.stream(model="anthropic-claude-sonnet-4-20250514",
                                 input="think about ping", max_output_tokens=4096,
                                 reasoning={"effort": "low"}, store=False) as stream:
        events = list(stream)
    assert any(e.type == "response.reasoning_text.delta" for e in events)


def test_a_client_leaving_a_stream_stops_the_upstream_and_the_call_is_accounted(
    gateway: Gateway, fake_openai: tuple[str, FakeOpenAIState]
) -> None:
    key_id, secret = make_key(gateway, alias="responses-hangup")
    state = fake_openai[1]
    state.slow_seconds = 30.0
    cancelled = state.cancelled
    with httpx.stream("POST", gateway.base_url + "/v1/responses", timeout=10,
                      headers={"authorization": f"Bearer {secret}"},
                      json={"model": "slow-stream", "input": "hang on", "stream": True}) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("event: response.in_progress"):
                break  # the upstream has begun answering (then stalls): leave
    [row] = usage_logs(gateway, key_id, expected=1)
    assert row["status"] == "cancelled" and row["endpoint"] == "responses"
    deadline = time.monotonic() + 10
    while state.cancelled == cancelled and time.monotonic() < deadline:
        time.sleep(0.1)
    assert state.cancelled == cancelled + 1  # the upstream call was stopped
