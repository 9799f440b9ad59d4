"""The finalizer's files, the multipart reader and the upload size limit, without NATS."""

from __future__ import annotations

import json

import httpx
import pytest
from starlette.requests import Request
from starlette.types import Message, Scope

from ingress.batch.finalizer import render
from ingress.errors import ApiError
from ingress.routes import form
from ingress.routes.files import form_body
from schemas.batch import ItemResult, error_line, output_line


def _ok(line: int, custom_id: str, tokens: int = 1) -> ItemResult:
    return ItemResult(line=line, custom_id=custom_id, ok=True, prompt_tokens=tokens,
                      completion_tokens=2 * tokens,
                      output=output_line("b", custom_id, f"b-{custom_id}", 200, {"n": line}))


def _failed(line: int, custom_id: str) -> ItemResult:
    return ItemResult(line=line, custom_id=custom_id, ok=False,
                      output=error_line("b", custom_id, "x", "failed"))


def test_output_follows_input_order_and_counts_each_line_once() -> None:
    output, errors, counts, usage = render(
        [_ok(3, "c"), _failed(2, "b"), _ok(1, "a"), _failed(3, "c"), _ok(1, "a")])
    assert [json.loads(x)["custom_id"] for x in output.splitlines()] == ["a", "c"]
    assert [json.loads(x)["custom_id"] for x in errors.splitlines()] == ["b"]
    assert (counts.completed, counts.failed) == (2, 1)
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (2, 4, 6)


def test_no_results_make_empty_files() -> None:
    output, errors, counts, _ = render([])
    assert (output, errors, counts.completed, counts.failed) == (b"", b"", 0, 0)


def test_a_multipart_upload_is_read_byte_for_byte() -> None:
    data = b'{"a": 1}\n\xff\x00\r\n--not-a-boundary\r\n'
    request = httpx.Request("POST", "http://x", data={"purpose": "batch"},
                            files={"file": ("in.jsonl", data)})
    parts = form.parse(request.headers["content-type"], request.read())
    assert parts["purpose"].data == b"batch"
    assert (parts["file"].filename, parts["file"].data) == ("in.jsonl", data)


def test_a_body_that_is_not_multipart_is_refused() -> None:
    with pytest.raises(form.FormError):
        form.parse("application/json", b"{}")


def _streamed(chunks: list[bytes], headers: dict[str, str] | None = None) -> Request:
    """A request whose body arrives in ``chunks``, as uvicorn hands a chunked upload over."""
    messages: list[Message] = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)]
    read: list[int] = []

    async def receive() -> Message:
        read.append(1)
        return messages.pop(0)

    scope: Scope = {"type": "http", "method": "POST", "path": "/v1/files",
                    "headers": [(k.encode(), v.encode()) for k, v in (headers or {}).items()]}
    request = Request(scope, receive)
    request.state.chunks_read = read
    return request


async def test_a_chunked_upload_is_refused_once_past_the_limit_without_reading_it_all() -> None:
    request = _streamed([b"x" * 400] * 10)
    with pytest.raises(ApiError) as caught:
        await form_body(request, limit=1000)
    assert (caught.value.status, caught.value.code) == (413, "file_too_large")
    assert len(request.state.chunks_read) == 3


async def test_a_declared_length_past_the_limit_is_refused_before_reading() -> None:
    request = _streamed([b"x" * 10], {"content-length": "2000"})
    with pytest.raises(ApiError):
        await form_body(request, limit=1000)
    assert request.state.chunks_read == []


async def test_a_body_within_the_limit_is_read_whole() -> None:
    assert await form_body(_streamed([b"ab", b"cd", b""]), limit=4) == b"abcd"
