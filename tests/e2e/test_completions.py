"""Legacy text completions (``/v1/completions``) through a running gateway, with the
official openai SDK: passed through to OpenAI-compatible upstreams, streamed and not, each
call accounted with its exact cost; providers without the endpoint refuse it with a 400."""

from __future__ import annotations

import io
import json
import time
from decimal import Decimal

import httpx
import openai
import pytest

from tests.e2e.conftest import make_key
from tests.e2e.usage_logs import usage_logs
from tests.fakes.openai_server import TEXT_ANSWER, FakeOpenAIState
from tests.harness import Gateway

pytestmark = pytest.mark.e2e

# "pricey" costs 0.001 per input token and 0.002 per output token; the fake counts words.
PROMPT = "Once upon a time"
EXPECTED_COST = Decimal("0.001") * 4 + Decimal("0.002") * len(TEXT_ANSWER.split())


@pytest.fixture
def keyed(gateway: Gateway) -> tuple[str, openai.OpenAI]:
    key_id, secret = make_key(gateway, alias="completions-e2e")
    return key_id, openai.OpenAI(base_url=gateway.base_url + "/v1", api_key=secret,
                                 max_retries=0)


def test_a_text_completion_passes_through_and_is_priced(
    gateway: Gateway, keyed: tuple[str, openai.OpenAI], fake_openai: tuple[str, FakeOpenAIState]
) -> None:
    key_id, client = keyed
    raw = client.completions.with_raw_response.create(model="pricey", prompt=PROMPT,
                                                     max_tokens=20)
    completion = raw.parse()
    assert completion.object == "text_completion"
    assert completion.choices[0].text == TEXT_ANSWER
    assert completion.usage is not None and completion.usage.prompt_tokens == 4
    assert Decimal(raw.headers["x-aigw-cost-usd"]) == EXPECTED_COST
    sent = fake_openai[1].requests[-1]
    assert sent["prompt"] == PROMPT and sent["model"] == "pricey" and not sent["stream"]

    [row] = usage_logs(gateway, key_id, expected=1)
    assert row["endpoint"] == "completions" and row["status"] == "ok"
    assert (row["prompt_tokens"], row["completion_tokens"]) == (4, 8)
    assert Decimal(row["cost"]) == EXPECTED_COST


def test_a_streamed_text_completion_ends_with_usage_when_asked(
    gateway: Gateway, keyed: tuple[str, openai.OpenAI],
) -> None:
    key_id, client = keyed
    chunks = list(client.completions.create(model="pricey", prompt=PROMPT, stream=True,
                                            stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == TEXT_ANSWER
    last = chunks[-1]
    assert last.object == "text_completion" and last.choices == []
    assert last.usage is not None and last.usage.completion_tokens == 8
    assert Decimal(str(last.usage.cost)) == EXPECTED_COST  # type: ignore[attr-defined]
    plain = list(client.completions.create(model="pricey", prompt=PROMPT, stream=True))
    assert all(c.choices for c in plain)

    rows = usage_logs(gateway, key_id, expected=2)
    assert [r["streamed"] for r in rows] == [True, True]
    assert all(Decimal(r["cost"]) == EXPECTED_COST for r in rows)


def test_a_provider_without_text_completions_refuses_with_a_400(
    keyed: tuple[str, openai.OpenAI],
) -> None:
    _, client = keyed
    for model in ("anthropic-claude-sonnet-4-20250514", "gemini-gemini-2.0-flash"):
        with pytest.raises(openai.BadRequestError) as err:
            client.completions.create(model=model, prompt=PROMPT)
        assert err.value.code == "unsupported_endpoint"
        assert "/v1/chat/completions" in err.value.message


def test_bad_completion_bodies_are_openai_shaped_400s(gateway: Gateway) -> None:
    url = gateway.base_url + "/v1/completions"
    headers = {"authorization": "Bearer sk-master-e2e"}
    for body in ({"model": "pricey"}, {"model": "pricey", "prompt": []},
                 {"model": "pricey", "prompt": [{"x": 1}]},
                 {"model": "pricey", "prompt": "x", "max_tokens": -1}):
        r = httpx.post(url, json=body, headers=headers, timeout=10)
        assert r.status_code == 400, r.text
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    r = httpx.post(url, json={"model": "no-such-model", "prompt": "x"}, headers=headers)
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    r = httpx.post(gateway.base_url + "/completions", json={"model": "pricey", "prompt": "x"},
                   headers=headers, timeout=10)
    assert r.status_code == 200 and r.json()["choices"][0]["text"] == TEXT_ANSWER



def test_a_batch_of_text_completions_runs_and_is_accounted(gateway: Gateway) -> None:
    key_id, secret = make_key(gateway, alias="completions-batch")
    client = openai.OpenAI(base_url=gateway.base_url + "/v1", api_key=secret, max_retries=0)
    lines = [{"custom_id": f"c{i}", "method": "POST", "url": "/v1/completions",
              "body": {"model": "pricey", "prompt": PROMPT}} for i in range(3)]
    raw = "".join(json.dumps(line) + "\n" for line in lines).encode()
    uploaded = client.files.create(file=("in.jsonl", io.BytesIO(raw)), purpose="batch")
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/completions",
                                  completion_window="24h")
    deadline = time.monotonic() + 60
    while batch.status not in ("completed", "failed", "cancelled", "expired"):
        assert time.monotonic() < deadline, batch
        time.sleep(0.2)
        batch = client.batches.retrieve(batch.id)
    assert batch.status == "completed", batch
    assert batch.output_file_id is not None
    output = [json.loads(x)
              for x in client.files.content(batch.output_file_id).text.splitlines()]
    assert sorted(o["custom_id"] for o in output) == ["c0", "c1", "c2"]
    assert all(o["response"]["body"]["choices"][0]["text"] == TEXT_ANSWER for o in output)

    rows = usage_logs(gateway, key_id, expected=3)
    assert {r["endpoint"] for r in rows} == {"completions"}
    assert all(Decimal(r["cost"]) == EXPECTED_COST and r["batch_id"] == batch.id
               for r in rows)
