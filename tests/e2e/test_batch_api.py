"""The Batch API on the session's gateway: chat and embeddings batches completed with one
output line per request, items the upstream refuses in the error file, bad requests
answered with OpenAI's errors, and batch files listed, retrieved and deleted."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.e2e.batch_client import MASTER, _chat_line, _client, _lines, _submit, _upload, _wait
from tests.e2e.conftest import make_key
from tests.harness import Gateway

pytestmark = pytest.mark.e2e


def test_chat_batch_completes_with_one_output_line_per_request(gateway: Gateway) -> None:
    _, secret = make_key(gateway, alias="batch-chat")
    client = _client(gateway, secret)
    batch = _submit(client, [_chat_line(f"req-{i}") for i in range(5)])
    assert batch.status == "in_progress"
    assert batch.request_counts is not None and batch.request_counts.total == 5

    done = _wait(client, batch.id)
    assert done.status == "completed", done
    assert done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (5, 0)
    assert done.error_file_id is None and done.completed_at is not None
    output = _lines(client, done.output_file_id)
    assert sorted(o["custom_id"] for o in output) == [f"req-{i}" for i in range(5)]
    for line in output:
        assert line["error"] is None
        assert line["response"]["status_code"] == 200
        body = line["response"]["body"]
        assert body["choices"][0]["message"]["content"] == "Hello from the fake OpenAI server."
        assert line["response"]["request_id"] == f"{batch.id}-{line['custom_id']}"
    output_file = client.files.retrieve(done.output_file_id)  # type: ignore[arg-type]
    assert output_file.purpose == "batch_output"


def test_embeddings_batch_completes(gateway: Gateway) -> None:
    client = _client(gateway)
    lines = [{"custom_id": f"e{i}", "method": "POST", "url": "/v1/embeddings",
              "body": {"model": "text-embedding-3-small", "input": f"text {i}"}}
             for i in range(3)]
    done = _wait(client, _submit(client, lines, "/v1/embeddings").id)
    assert done.status == "completed", done
    output = _lines(client, done.output_file_id)
    assert len(output) == 3
    assert all(o["response"]["body"]["data"][0]["object"] == "embedding" for o in output)


def test_items_the_upstream_refuses_go_to_the_error_file(gateway: Gateway) -> None:
    client = _client(gateway)
    done = _wait(client, _submit(client, [
        _chat_line("fine"), _chat_line("gone", model="missing-upstream"),
        _chat_line("long", model="tiny-context")]).id)
    assert done.status == "completed", done
    assert done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (1, 2)
    errors = {e["custom_id"]: e["response"] for e in _lines(client, done.error_file_id)}
    assert errors["gone"]["status_code"] == 404
    assert errors["long"]["status_code"] == 400
    assert errors["long"]["body"]["error"]["code"] == "context_length_exceeded"
    assert [o["custom_id"] for o in _lines(client, done.output_file_id)] == ["fine"]


def test_bad_requests_get_openai_errors(gateway: Gateway) -> None:
    client = _client(gateway)
    file_id = _upload(client, [_chat_line("x")])
    with pytest.raises(openai.BadRequestError):  # an endpoint batches do not take
        client.batches.create(input_file_id=file_id,
                              endpoint="/v1/images/generations",  # type: ignore[arg-type]
                              completion_window="24h")
    with pytest.raises(openai.NotFoundError):
        client.batches.create(input_file_id="file-nope", endpoint="/v1/chat/completions",
                              completion_window="24h")
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_nope")
    r = httpx.post(gateway.base_url + "/v1/files", headers=MASTER, json={"purpose": "batch"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.post(gateway.base_url + "/v1/files", headers=MASTER, data={"purpose": "batch"},
                   files={"other": ("x", b"1")})
    assert r.status_code == 400 and r.json()["error"]["param"] == "file"


def test_files_can_be_listed_retrieved_and_deleted(gateway: Gateway) -> None:
    _, secret = make_key(gateway, alias="batch-files")
    client = _client(gateway, secret)
    file_id = _upload(client, [_chat_line("x")])
    assert client.files.retrieve(file_id).purpose == "batch"
    assert [f.id for f in client.files.list()] == [file_id]
    assert json.loads(client.files.content(file_id).text)["custom_id"] == "x"
    assert client.files.delete(file_id).deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(file_id)
