"""What :func:`workers.redact.redact` takes out of an upstream's error message."""

from __future__ import annotations

import pytest

from workers.redact import REDACTED, redact


@pytest.mark.parametrize(("text", "gone"), [
    ("authorization: Bearer sk-fake", "sk-fake"),
    ("Incorrect API key provided: sk-proj-AbCdEfGhIjKlMnOp1234.", "sk-proj-AbCdEfGhIjKlMnOp1234"),
    ("key sk-ant-api03-abcdefghij_KLMNOP-qr", "sk-ant-api03-abcdefghij_KLMNOP-qr"),
    ("https://generativelanguage.googleapis.com/v1beta/models/x?key=" + "AIza" + "x" * 35,
     "AIza" + "x" * 35),
    ('{"x-api-key": "plainsecretvalue"}', "plainsecretvalue"),
    ("x-goog-api-key: another-secret-1", "another-secret-1"),
    ("api_key=zzz-top-secret&x=1", "zzz-top-secret"),
    ("GET /v1/models?alt=sse&key=url-secret-123", "url-secret-123"),
])
def test_credential_shapes_are_taken_out(text: str, gone: str) -> None:
    out = redact(text)
    assert gone not in out
    assert REDACTED in out


def test_the_deployments_own_key_goes_whatever_its_shape() -> None:
    assert redact("you sent my-odd-key-42 twice: my-odd-key-42", ["my-odd-key-42"]) == (
        f"you sent {REDACTED} twice: {REDACTED}")


def test_ordinary_messages_are_left_as_they_are() -> None:
    text = ("This model's maximum context length is 128000 tokens. However, your messages "
            "resulted in 130000 tokens. Please reduce the length of the messages.")
    assert redact(text, ["sk-fake"]) == text
    assert redact("The model `gpt-x` does not exist (task-key: none)") == (
        "The model `gpt-x` does not exist (task-key: none)")
