"""An upstream that quotes the request's credentials in its error message: the client
sees the error, never the key, whether the call was plain, streamed or a batch item."""

from __future__ import annotations

import io
import json
import time

import httpx
import openai
import pytest

from tests.e2e.conftest import MASTER_KEY
from tests.fakes.openai_server import ECHOED_KEYS
from tests.harness import Gateway

pytestmark = pytest.mark.e2e

AUTH = {"authorization": f"Bearer {MASTER_KEY}"}
SECRETS = ("sk-fake", *ECHOED_KEYS)  # sk-fake: the deployment's own key (FAKE_OPENAI_KEY)


def _clean(text: str) -> None:
    assert "[redacted]" in text, text
    for secret in SECRETS:
        assert secret not in text, text


@pytest.mark.parametrize("stream", [False, True])
def test_an_echoed_key_never_reaches_the_client(gateway: Gateway, stream: bool) -> None:
    r = httpx.post(gateway.base_url + "/v1/chat/completions", headers=AUTH, timeout=30,
                   json={"model": "echo-secrets", "stream": stream,
                         "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["message"].startswith("Bad request from you")
    _clean(r.text)


def test_an_echoed_key_never_reaches_a_batch_error_file(gateway: Gateway) -> None:
    client = openai.OpenAI(base_url=gateway.base_url + "/v1", api_key=MASTER_KEY,
                           max_retries=0)
    line = {"custom_id": "echo", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "echo-secrets", "messages": [{"role": "user", "content": "hi"}]}}
    file = client.files.create(file=("in.jsonl", io.BytesIO(json.dumps(line).encode())),
                               purpose="batch")
    batch = client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions",
                                  completion_window="24h")
    deadline = time.monotonic() + 30
    while batch.status not in ("completed", "failed", "cancelled", "expired"):
        assert time.monotonic() < deadline, batch
        time.sleep(0.2)
        batch = client.batches.retrieve(batch.id)
    assert batch.error_file_id is not None, batch
    text = client.files.content(batch.error_file_id).text
    _clean(text)
