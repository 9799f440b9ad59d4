"""Schemathesis over the whole served OpenAPI schema, as a fuzzer would use it: every
operation, with the master key and with a plain virtual key, a bounded number of
generated requests each. No response is a 5xx, and every error is OpenAI's shape.

The gateway is its own (an ingress, a mock worker, accounting) so that the fuzzer's keys,
teams and files touch no other test.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck

from cli.nats_server import NatsServer
from tests.harness import Gateway, write_config

pytestmark = pytest.mark.e2e

MASTER_KEY = "sk-master-fuzz"
EXAMPLES = 6
# Routes whose effect is the process's own state, not a request's: fuzzing them would
# only reload the config file that is already loaded.
SKIPPED = {("POST", "/admin/config/reload")}


@pytest.fixture(scope="module")
def fuzzed(nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[Gateway, dict[str, Any], str]]:
    work = tmp_path_factory.mktemp("fuzz")
    config = write_config(work / "config.yaml", {
        "model_list": [
            {"model_name": "gpt-4o-mini", "litellm_params": {"model": "mock/gpt",
                                                              "mock_response": "hi"}},
            {"model_name": "text-embedding-3-small",
             "litellm_params": {"model": "mock/embed"}},
        ],
        "general_settings": {"master_key": MASTER_KEY}})
    gateway = Gateway(nats_url=nats_server.url, config_path=config, log_dir=work)
    gateway.start_accounting(work / "data")
    gateway.start_worker("mock")
    gateway.start_ingress()
    try:
        gateway.wait_ready(60)
        master = {"authorization": f"Bearer {MASTER_KEY}"}
        key = httpx.post(gateway.base_url + "/admin/keys", json={"alias": "fuzz"},
                         headers=master, timeout=30)
        assert key.status_code in (200, 201), key.text
        doc = httpx.get(gateway.base_url + "/openapi.json", headers=master, timeout=30).json()
        yield gateway, doc, key.json()["secret"]
    finally:
        gateway.stop()


def _shaped(response: schemathesis.Response, path: str = "") -> str | None:
    """None when an error response is OpenAI's error object (Anthropic's on the Messages
    routes, whose clients speak Anthropic's protocol), else what is wrong."""
    try:
        body = json.loads(response.text)
        error = body.get("error")
    except (ValueError, AttributeError):
        return f"not JSON: {response.text[:200]!r}"
    if path.startswith("/v1/messages"):
        if body.get("type") != "error" or not isinstance(error, dict) or set(error) != {
                "type", "message"}:
            return f"not an Anthropic error: {response.text[:200]}"
        return None
    if not isinstance(error, dict) or set(error) != {"message", "type", "param", "code"}:
        return f"not an error object: {response.text[:200]}"
    return None


def test_the_schema_describes_every_body_the_gateway_reads(
        fuzzed: tuple[Gateway, dict[str, Any], str]) -> None:
    _, doc, _ = fuzzed
    for path in ("/v1/chat/completions", "/v1/embeddings", "/v1/batches", "/v1/files"):
        body = doc["paths"][path]["post"].get("requestBody")
        assert body is not None, path
    chat = doc["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]
    assert chat["application/json"]["example"]["model"]
    assert "ChatCompletionRequest" in doc["components"]["schemas"]
    upload = doc["paths"]["/v1/files"]["post"]["requestBody"]["content"]
    example = upload["multipart/form-data"]["example"]
    assert example["purpose"] == "batch"
    assert json.loads(example["file"])["body"]["model"] == "gpt-4o-mini"
    # The chain a stateful client follows (the next test checks the links in full).
    assert "links" in doc["paths"]["/v1/files"]["post"]["responses"]["200"]
    assert "links" in doc["paths"]["/v1/batches"]["post"]["responses"]["200"]


@pytest.mark.parametrize("who", ["master", "virtual key"])
def test_no_generated_request_gets_a_5xx_or_an_unshaped_error(
        fuzzed: tuple[Gateway, dict[str, Any], str], who: str) -> None:
    gateway, doc, secret = fuzzed
    token = MASTER_KEY if who == "master" else secret
    doc = {**doc, "servers": [{"url": gateway.base_url}]}
    # One copy of each route: the unversioned aliases serve the same handlers.
    doc["paths"] = {p: ops for p, ops in doc["paths"].items()
                    if p.startswith(("/v1/", "/admin/", "/health"))}
    schema = schemathesis.openapi.from_dict(json.loads(json.dumps(doc)))
    problems: list[str] = []
    statuses: dict[str, int] = {}
    calls = 0
    for found in schema.get_all_operations():
        operation = found.ok()
        if (operation.method.upper(), operation.path) in SKIPPED:
            continue

        @hypothesis.settings(max_examples=EXAMPLES, deadline=None, database=None,
                             derandomize=True,
                             suppress_health_check=list(HealthCheck))
        @hypothesis.given(case=operation.as_strategy())
        def run(case: schemathesis.Case) -> None:
            nonlocal calls
            response = case.call(base_url=gateway.base_url, timeout=30,
                                 headers={"authorization": f"Bearer {token}"})
            calls += 1
            key = f"{case.method} {case.operation.path} {response.status_code}"
            statuses[key] = statuses.get(key, 0) + 1
            label = f"{case.method} {case.formatted_path}"
            if response.status_code >= 500:
                problems.append(f"{label}: {response.status_code} {response.text[:200]}")
            elif response.status_code >= 400 and (
                    issue := _shaped(response, case.operation.path)):
                problems.append(f"{label}: {response.status_code} {issue}")

        run()
    print(json.dumps(statuses, indent=0))  # noqa: T201
    assert calls > 50
    assert problems == [], problems[:10]
    assert "Traceback" not in gateway.logs("ingress"), gateway.logs("ingress")


def test_the_schema_links_files_to_batches(
        fuzzed: tuple[Gateway, dict[str, Any], str]) -> None:
    _, doc, _ = fuzzed
    upload = doc["paths"]["/v1/files"]["post"]["responses"]["200"]["links"]
    assert set(upload) == {"RetrieveFile", "FileContent", "DeleteFile", "CreateBatch"}
    assert upload["CreateBatch"]["requestBody"]["input_file_id"] == "$response.body#/id"
    ids = {op["operationId"] for ops in doc["paths"].values() for op in ops.values()}
    assert {link["operationId"] for link in upload.values()} <= ids
    created = doc["paths"]["/v1/batches"]["post"]["responses"]["200"]["links"]
    assert set(created) == {"RetrieveBatch", "CancelBatch"}


@pytest.mark.parametrize("who", ["master", "virtual key"])
def test_stateful_runs_from_files_to_batches_get_no_5xx(
        fuzzed: tuple[Gateway, dict[str, Any], str], who: str) -> None:
    """Schemathesis's state machine follows the links: upload a file, then retrieve, read,
    delete it or make a batch of it, then retrieve or cancel that batch."""
    gateway, doc, secret = fuzzed
    token = MASTER_KEY if who == "master" else secret
    doc = {**doc, "servers": [{"url": gateway.base_url}]}
    doc["paths"] = {p: ops for p, ops in doc["paths"].items()
                    if p.startswith(("/v1/files", "/v1/batches"))}
    schema = schemathesis.openapi.from_dict(json.loads(json.dumps(doc)))
    problems: list[str] = []
    uploaded: set[str] = set()
    chained: list[int] = []  # statuses of batch creations from an uploaded file

    class Machine(schema.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
            return {"base_url": gateway.base_url, "timeout": 30,
                    "headers": {"authorization": f"Bearer {token}"}}

        def after_call(self, response: schemathesis.Response,
                       case: schemathesis.Case) -> None:
            path = case.operation.path
            if case.method.upper() == "POST" and path == "/v1/files" and (
                    response.status_code == 200):
                uploaded.add(json.loads(response.text)["id"])
            if case.method.upper() == "POST" and path == "/v1/batches" and isinstance(
                    case.body, dict) and case.body.get("input_file_id") in uploaded:
                chained.append(response.status_code)

        def validate_response(self, response: schemathesis.Response,
                              case: schemathesis.Case, *args: Any, **kwargs: Any) -> None:
            label = f"{case.method} {case.formatted_path}"
            if response.status_code >= 500:
                problems.append(f"{label}: {response.status_code} {response.text[:200]}")
            elif response.status_code >= 400 and (
                    issue := _shaped(response, case.operation.path)):
                problems.append(f"{label}: {response.status_code} {issue}")

    Machine.run(settings=hypothesis.settings(
        max_examples=40, stateful_step_count=10, deadline=None, database=None,
        derandomize=True, suppress_health_check=list(HealthCheck)))
    assert problems == [], problems[:10]
    assert uploaded, "no upload succeeded: the links were never followed"
    assert any(200 <= status < 300 for status in chained), (
        f"no batch was made from an uploaded file through the link: {chained}")
    print(who, len(uploaded), "uploads; batch creations through the link:", chained)  # noqa: T201
    assert "Traceback" not in gateway.logs("ingress"), gateway.logs("ingress")
