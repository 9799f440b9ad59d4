"""Requests bigger than NATS's 1 MB default pass; one over the bus's limit is a clear 413."""

from __future__ import annotations

import httpx
import pytest

from cli.nats_server import MAX_PAYLOAD
from tests.e2e.conftest import MASTER_KEY
from tests.harness import Gateway

pytestmark = pytest.mark.e2e
AUTH = {"authorization": f"Bearer {MASTER_KEY}"}


def _chat(gateway: Gateway, content: str) -> httpx.Response:
    return httpx.post(gateway.base_url + "/v1/chat/completions", headers=AUTH, timeout=30,
                      json={"model": "gpt-4o-mini",
                            "messages": [{"role": "user", "content": content}]})


def test_a_request_of_a_few_megabytes_is_served(gateway: Gateway) -> None:
    r = _chat(gateway, "x" * (3 * 1024 * 1024))  # an image or two, base64
    assert r.status_code == 200, r.text


def test_a_request_over_the_bus_limit_is_a_413_in_openai_shape(gateway: Gateway) -> None:
    r = _chat(gateway, "x" * (MAX_PAYLOAD + 1024))
    assert r.status_code == 413, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "request_too_large"
    assert f"{MAX_PAYLOAD:,}" in error["message"]
