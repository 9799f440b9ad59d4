"""Client JSON that used to become a 500: a lone surrogate, non-finite numbers, bytes that
are not UTF-8, deep nesting. Each is a 400 in OpenAI's shape, one log line, no traceback,
and the connection stays usable."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.e2e.conftest import MASTER_KEY
from tests.harness import Gateway

pytestmark = pytest.mark.e2e

HEADERS = {"authorization": f"Bearer {MASTER_KEY}", "content-type": "application/json"}


def _chat(content: str) -> str:
    return ('{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": '
            + content + "}]}")


HOSTILE = {
    "lone surrogate": _chat('"hi \\ud800 there"').encode(),
    "lone low surrogate in a key": (
        b'{"model": "gpt-4o-mini", "metadata": {"\\uDC00": 1}, '
        b'"messages": [{"role": "user", "content": "hi"}]}'),
    "encoded surrogate": _chat('"hi "').encode()[:-4] + b'\xed\xa0\x80"}]}',
    "NaN": b'{"model": "gpt-4o-mini", "temperature": NaN, '
           b'"messages": [{"role": "user", "content": "hi"}]}',
    "Infinity": b'{"model": "gpt-4o-mini", "top_p": -Infinity, '
                b'"messages": [{"role": "user", "content": "hi"}]}',
    "1e999": b'{"model": "gpt-4o-mini", "temperature": 1e999, '
             b'"messages": [{"role": "user", "content": "hi"}]}',
    "deep nesting": (b'{"model": "gpt-4o-mini", "metadata": {"x": ' + b"[" * 100_000
                     + b"]" * 100_000 + b'}, "messages": [{"role": "user", "content": "hi"}]}'),
    "nesting past the cap": (b'{"model": "gpt-4o-mini", "metadata": {"x": ' + b"[" * 70
                             + b"]" * 70 + b'}, "messages": [{"role": "user", "content": "hi"}]}'),
    "latin-1": _chat('"caf\xe9"').encode("latin-1"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/embeddings"])
def test_hostile_json_is_a_400_and_the_connection_carries_on(
        gateway: Gateway, name: str, path: str) -> None:
    with httpx.Client(base_url=gateway.base_url, headers=HEADERS, timeout=30) as client:
        r = client.post(path, content=HOSTILE[name])
        assert r.status_code == 400, r.text[:300]
        error = r.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert (error["type"], error["code"]) == ("invalid_request_error", "invalid_json")
        # The same keep-alive connection serves the next request.
        ok = client.post("/v1/chat/completions", json={
            "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
        assert ok.status_code == 200, ok.text[:300]
    assert "Traceback" not in gateway.logs("ingress")


def test_escaped_text_that_is_valid_unicode_is_still_served(gateway: Gateway) -> None:
    # A surrogate pair is one character (an emoji), not a lone surrogate.
    r = httpx.post(gateway.base_url + "/v1/chat/completions", headers=HEADERS, timeout=30,
                   content=_chat('"smile \\ud83d\\ude00, caf\\u00e9"').encode())
    assert r.status_code == 200, r.text[:300]
    assert json.loads(r.text)["choices"]


def test_a_truncated_upload_is_a_400_and_stores_nothing(gateway: Gateway) -> None:
    boundary = "cutshort"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            'filename="cut.jsonl"\r\nContent-Type: application/octet-stream\r\n\r\nhello'
            ).encode()
    auth = {"authorization": HEADERS["authorization"]}
    r = httpx.post(gateway.base_url + "/v1/files", content=body, timeout=30, headers={
        **auth, "content-type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 400, r.text
    assert "truncated" in r.json()["error"]["message"]
    after = httpx.get(gateway.base_url + "/v1/files", headers=auth, timeout=30).json()["data"]
    assert [f for f in after if f["filename"] == "cut.jsonl"] == []


@pytest.mark.parametrize("model", ["gpt.>", "*", "a b", "openai.*.x", "\u0000", "x" * 5000])
def test_model_names_with_bus_wildcards_or_junk_are_a_404(gateway: Gateway, model: str) -> None:
    r = httpx.post(gateway.base_url + "/v1/chat/completions", headers=HEADERS, timeout=30,
                   json={"model": model, "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 404, r.text[:300]
    assert r.json()["error"]["code"] == "model_not_found"
