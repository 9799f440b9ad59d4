"""``/v1/messages`` when things go wrong, and its limits: every failure in Anthropic's error
JSON with the right status (bad keys, bad bodies, unknown models, overloads, errors inside
a stream, bodies over the cap), token counting, rate limits and budgets, the routes served
unversioned and under the root path, and failover from a failed Anthropic attempt to an
OpenAI-compatible deployment, each attempt accounted.
"""

from __future__ import annotations

import http.client
import json
import time
from decimal import Decimal
from typing import Any

import anthropic
import httpx
import pytest

from schemas import estimate
from schemas.anthropic import input_tokens
from tests.e2e.conftest import MASTER_KEY, make_key
from tests.e2e.messages_gateway import (
    MASTER,
    WEATHER,
    _client,
    _sse,
    messages_gateway,  # noqa: F401 - the module's gateway
)
from tests.e2e.usage_logs import usage_logs
from tests.fakes.openai_server import ANSWER
from tests.harness import Gateway
from workers.protocols.messages.request import to_chat

pytestmark = pytest.mark.e2e


def test_a_failed_native_attempt_falls_back_to_a_translated_one(gateway: Gateway) -> None:
    key_id, secret = make_key(gateway, alias="messages-fallback")
    message = _client(gateway, secret).messages.create(
        model="claude-down", max_tokens=50, messages=[{"role": "user", "content": "Hi"}])
    assert message.content[0].text == ANSWER  # type: ignore[union-attr]
    rows = usage_logs(gateway, key_id, expected=2)
    assert sorted((r["provider"], r["status"]) for r in rows) == [
        ("anthropic", "error"), ("openai", "ok")]


# --- count_tokens and errors -----------------------------------------------------------------


def test_count_tokens_is_the_gateways_estimate(gateway: Gateway) -> None:
    client = _client(gateway)
    body: dict[str, Any] = {"system": "You are terse.", "tools": [WEATHER],
                            "messages": [{"role": "user", "content": "How many tokens?"}]}
    counted = client.messages.count_tokens(model="claude", **body)
    assert counted.input_tokens == input_tokens(body) > 0
    assert client.messages.count_tokens(model="gpt", **body).input_tokens == counted.input_tokens
    with pytest.raises(anthropic.NotFoundError):
        client.messages.count_tokens(model="nope", **body)


def test_a_bad_key_is_an_anthropic_authentication_error(gateway: Gateway) -> None:
    with pytest.raises(anthropic.AuthenticationError) as caught:
        _client(gateway, "sk-wrong").messages.create(
            model="claude", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == 401
    assert caught.value.body == {"type": "error", "error": {
        "type": "authentication_error", "message": "Incorrect API key provided: ****."}}
    # Bearer works as well as x-api-key.
    r = httpx.post(gateway.base_url + "/v1/messages", headers=MASTER,
                   json={"model": "claude", "max_tokens": 5,
                         "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 200 and r.json()["type"] == "message"


@pytest.mark.parametrize(("content", "message", "counting_too"), [
    (b'{"model": "claude", "messages": [{"role": "user", "content": "x"}]}',
     "max_tokens: Field required", False),
    (b'{"model": "claude", "max_tokens": 5, "messages": []}', "messages: List should have",
     True),
    (b'{"model": "claude", "max_tokens": 5, "temperature": 3, '
     b'"messages": [{"role": "user", "content": "x"}]}', "temperature", False),
    (b'{"model": "claude", "max_tokens": 5, "messages": [{"role": "system", '
     b'"content": "x"}]}', "messages.0.role", True),
    (b'{"model": "claude", "max_tokens": ', "", True),
    (b"[1, 2]", "JSON object", True),
])
def test_a_bad_body_is_an_anthropic_invalid_request_error(
    gateway: Gateway, content: bytes, message: str, counting_too: bool
) -> None:
    paths = ["/v1/messages"] + (["/v1/messages/count_tokens"] if counting_too else [])
    for path in paths:
        r = httpx.post(gateway.base_url + path, content=content,
                       headers={"x-api-key": MASTER_KEY, "content-type": "application/json"})
        assert r.status_code == 400, r.text
        body = r.json()
        assert body["type"] == "error"
        assert body["error"]["type"] == "invalid_request_error"
        assert message in body["error"]["message"]


def test_errors_are_anthropic_shaped_with_the_right_status(gateway: Gateway) -> None:
    client = _client(gateway)
    user = [{"role": "user", "content": "x"}]
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.messages.create(model="no-such-model", max_tokens=5, messages=user)  # type: ignore[arg-type]
    assert missing.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    with pytest.raises(anthropic.InternalServerError) as overloaded:
        client.messages.create(model="claude-overloaded", max_tokens=5, messages=user)  # type: ignore[arg-type]
    assert overloaded.value.status_code == 503
    assert overloaded.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    with pytest.raises(anthropic.InternalServerError) as broken:
        client.messages.create(model="gpt-broken", max_tokens=5, messages=user)  # type: ignore[arg-type]
    assert broken.value.body["error"]["type"] == "api_error"  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError) as untranslatable:
        client.messages.create(model="gpt", max_tokens=5, messages=user,  # type: ignore[arg-type]
                               tools=[{"type": "web_search_20250305", "name": "web_search"}])
    assert "only by Anthropic" in untranslatable.value.body["error"]["message"]  # type: ignore[index]
    r = httpx.get(gateway.base_url + "/v1/messages", headers=MASTER)
    assert r.status_code == 405 and r.json()["type"] == "error"


def test_an_error_inside_a_native_stream_is_an_anthropic_error_event(gateway: Gateway) -> None:
    with httpx.stream("POST", gateway.base_url + "/v1/messages",
                      headers={"x-api-key": MASTER_KEY},
                      json={"model": "claude-midstream", "max_tokens": 100, "stream": True,
                            "messages": [{"role": "user", "content":
                                          "one two three four five six seven"}]}) as r:
        events = _sse(r.iter_lines())
    assert events[0][0] == "message_start"
    name, data = events[-1]
    assert name == "error"
    assert data == {"type": "error", "error": {"type": "overloaded_error",
                                               "message": "Overloaded"}}


def test_rate_limits_hold_and_answer_in_anthropic_shape(gateway: Gateway) -> None:
    _, secret = make_key(gateway, limits={"rpm": 1})
    client = _client(gateway, secret)
    client.messages.create(model="gpt", max_tokens=5, messages=[{"role": "user",
                                                                  "content": "x"}])
    with pytest.raises(anthropic.RateLimitError) as caught:
        client.messages.create(model="gpt", max_tokens=5, messages=[{"role": "user",
                                                                      "content": "x"}])
    assert caught.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]


@pytest.mark.parametrize("path", ["/messages", "/ai-api/v1/messages", "/ai-api/messages"])
def test_served_unversioned_and_under_the_root_path_too(gateway: Gateway, path: str) -> None:
    r = httpx.post(gateway.base_url + path, headers={"x-api-key": MASTER_KEY},
                   json={"model": "gpt", "max_tokens": 5,
                         "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 200 and r.json()["type"] == "message"
    r = httpx.post(gateway.base_url + path, headers={"x-api-key": "bad"}, json={})
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    r = httpx.post(gateway.base_url + path + "/count_tokens", headers={"x-api-key": MASTER_KEY},
                   json={"model": "gpt", "messages": [{"role": "user", "content": "four"}]})
    assert r.status_code == 200 and r.json() == {"input_tokens": 5}
    client = anthropic.Anthropic(base_url=gateway.base_url + "/ai-api", api_key=MASTER_KEY,
                                 max_retries=0)
    with pytest.raises(anthropic.NotFoundError):
        client.messages.create(model="nope", max_tokens=5,
                               messages=[{"role": "user", "content": "x"}])


def test_a_body_over_the_cap_is_an_anthropic_request_too_large(gateway: Gateway) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    try:
        conn.putrequest("POST", "/v1/messages")
        conn.putheader("x-api-key", MASTER_KEY)
        conn.putheader("content-type", "application/json")
        conn.putheader("content-length", str(64 * 1024 * 1024))  # refused before it is sent
        conn.endheaders()
        response = conn.getresponse()
        assert response.status == 413
        body = json.loads(response.read())
    finally:
        conn.close()
    assert body["type"] == "error"
    assert body["error"]["type"] == "request_too_large"


def test_budgets_reserve_then_settle_with_the_real_cost(gateway: Gateway) -> None:
    key_id, secret = make_key(gateway, limits={"daily_budget_usd": "0.002"})
    client = _client(gateway, secret)
    user: Any = [{"role": "user", "content": "spend a little"}]
    # Reserved: the prompt's estimate and 100 output tokens at $0.000015, under the budget.
    made = client.messages.create(model="claude", max_tokens=100, messages=user)
    # 1000 output tokens could cost $0.015: refused before any upstream call.
    with pytest.raises(anthropic.RateLimitError) as caught:
        client.messages.create(model="claude", max_tokens=1000, messages=user)
    assert caught.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    cost = (made.usage.input_tokens * Decimal("0.000003")
            + made.usage.output_tokens * Decimal("0.000015"))
    deadline = time.monotonic() + 20
    while True:
        status = httpx.get(gateway.base_url + "/v1/usage/budget", timeout=10,
                           headers={"authorization": f"Bearer {secret}"}).json()
        daily = status["scopes"][0]["daily"]
        if Decimal(daily["reserved"]) == 0 and Decimal(daily["spent"]) == cost:
            break
        assert time.monotonic() < deadline, daily
        time.sleep(0.2)
    rows = usage_logs(gateway, key_id, expected=2)
    assert sorted(r["status"] for r in rows) == ["ok", "rejected"]


def test_a_translated_stream_cut_short_is_accounted_with_an_estimate(gateway: Gateway) -> None:
    key_id, secret = make_key(gateway, alias="messages-cut-stream")
    body = {"model": "gpt-midstream", "max_tokens": 100, "stream": True,
            "messages": [{"role": "user", "content": "please count this prompt of mine"}]}
    with httpx.stream("POST", gateway.base_url + "/v1/messages", json=body,
                      headers={"x-api-key": secret}) as r:
        events = _sse(r.iter_lines())
    texts = [d["delta"]["text"] for _, d in events if d.get("type") == "content_block_delta"]
    assert "".join(texts) == "Hello from the"  # the fake breaks off after three words
    name, data = events[-1]
    assert name == "error" and data["type"] == "error"
    assert data["error"]["type"] == "api_error"

    [row] = usage_logs(gateway, key_id, expected=1)
    assert row["status"] == "error" and row["usage_estimated"] is True
    assert row["prompt_tokens"] == estimate.prompt_tokens(to_chat(body))
    assert row["completion_tokens"] == max(3, -(-len("Hello from the") // 4))


def test_a_native_stream_that_fails_before_content_falls_back_cleanly(
    gateway: Gateway,
) -> None:
    """Anthropic's overloaded error right after message_start: nothing of the failed
    attempt reached the client, so the fallback's stream is the only one it sees."""
    key_id, secret = make_key(gateway, alias="messages-early-overload")
    with httpx.stream("POST", gateway.base_url + "/v1/messages",
                      headers={"x-api-key": secret},
                      json={"model": "claude-early-overload", "max_tokens": 50,
                            "stream": True,
                            "messages": [{"role": "user", "content": "Hi"}]}) as r:
        events = _sse(r.iter_lines())
    names = [name for name, _ in events]
    assert names.count("message_start") == 1 and "error" not in names
    assert "ping" not in names  # the translated stream has none: all of it is the fallback's
    texts = [d["delta"]["text"] for _, d in events if d.get("type") == "content_block_delta"]
    assert "".join(texts) == ANSWER
    rows = usage_logs(gateway, key_id, expected=2)
    assert sorted((r["provider"], r["status"]) for r in rows) == [
        ("anthropic", "error"), ("openai", "ok")]
