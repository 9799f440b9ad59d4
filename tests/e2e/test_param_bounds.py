"""Every number a client sends has a bound: OpenAI's documented limits, a model's own from
the config's ``model_info``, and a ceiling otherwise. Past it: a 400 naming the parameter,
before anything reaches a worker."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.e2e.conftest import MASTER_KEY
from tests.harness import Gateway

pytestmark = pytest.mark.e2e

AUTH = {"authorization": f"Bearer {MASTER_KEY}"}
HI = [{"role": "user", "content": "hi"}]


def _post(gateway: Gateway, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(gateway.base_url + path, json=body, headers=AUTH, timeout=30)


@pytest.mark.parametrize(("body", "param"), [
    ({"model": "mock-embedding", "input": "x",
      "dimensions": 143791304396289405748248576}, "dimensions"),
    ({"model": "text-embedding-3-small", "input": "x", "dimensions": 20_000_000}, "dimensions"),
    ({"model": "capped-embed", "input": "x", "dimensions": 1537}, "dimensions"),
    ({"model": "text-embedding-3-small", "input": ["x"] * 2049}, "input"),
    ({"model": "text-embedding-3-small", "input": [[1, 2]] * 2049}, "input"),
    ({"model": "text-embedding-3-small", "input": list(range(8193))}, "input"),
    ({"model": "text-embedding-3-small", "input": [[1, -5]]}, "input"),
    ({"model": "text-embedding-3-small", "input": []}, "input"),
])
def test_embedding_bounds(gateway: Gateway, body: dict[str, Any], param: str) -> None:
    r = _post(gateway, "/v1/embeddings", body)
    assert r.status_code == 400, r.text[:300]
    error = r.json()["error"]
    assert error["param"] == param, error
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize(("extra", "param", "model"), [
    ({"max_tokens": 10**12}, "max_tokens", "gpt-4o-mini"),
    ({"max_completion_tokens": 300_000}, "max_completion_tokens", "gpt-4o-mini"),
    ({"max_tokens": 101}, "max_tokens", "capped-chat"),
    ({"max_completion_tokens": 500}, "max_completion_tokens", "capped-chat"),
    ({"n": 129}, "n", "gpt-4o-mini"),
    ({"top_logprobs": 21, "logprobs": True}, "top_logprobs", "gpt-4o-mini"),
    ({"presence_penalty": 2.5}, "presence_penalty", "gpt-4o-mini"),
    ({"frequency_penalty": -3}, "frequency_penalty", "gpt-4o-mini"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "gpt-4o-mini"),
    ({"logit_bias": {str(i): 1 for i in range(301)}}, "logit_bias", "gpt-4o-mini"),
    ({"logit_bias": {"50256": -101}}, "logit_bias.50256", "gpt-4o-mini"),
    ({"seed": 2**70}, "seed", "gpt-4o-mini"),
    ({"tools": [{"type": "function", "function": {"name": f"f{i}"}} for i in range(129)]},
     "tools", "gpt-4o-mini"),
])
def test_chat_bounds(gateway: Gateway, extra: dict[str, Any], param: str, model: str) -> None:
    r = _post(gateway, "/v1/chat/completions", {"model": model, "messages": HI, **extra})
    assert r.status_code == 400, r.text[:300]
    error = r.json()["error"]
    assert error["param"] is not None and error["param"].startswith(param), error


def test_too_many_images_are_refused(gateway: Gateway) -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    r = _post(gateway, "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": [
        {"role": "user", "content": [image] * 501}]})
    assert r.status_code == 400, r.text[:300]
    assert "500 images" in r.json()["error"]["message"]


def test_values_within_the_bounds_are_served(gateway: Gateway) -> None:
    r = _post(gateway, "/v1/chat/completions", {"model": "capped-chat", "messages": HI,
                                                 "max_tokens": 100, "n": 1, "top_logprobs": 20,
                                                 "logprobs": True, "seed": 2**62})
    assert r.status_code == 200, r.text[:300]
    r = _post(gateway, "/v1/embeddings", {"model": "capped-embed", "input": ["a", "b"],
                                           "dimensions": 1536})
    assert r.status_code == 200, r.text[:300]
