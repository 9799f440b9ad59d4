"""What the cluster tests run and read back: a gateway (separate processes, every stream
and bucket at three replicas) on a ``NatsCluster``; a load of streamed and plain calls on
``CONNECTIONS`` connections, each call's outcome checked for a clean OpenAI-shaped error;
a batch of ``BATCH_ITEMS`` items; the usage rows accounting holds, the upstream calls the
fake saw, and the figures written for the note."""

from __future__ import annotations

import dataclasses
import io
import json
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai

from tests.e2e.conftest import e2e_config
from tests.fakes import openai_server
from tests.harness import Gateway, write_config
from tests.nats_cluster import NatsCluster

MASTER_KEY = "sk-master-cluster"
MASTER = {"authorization": f"Bearer {MASTER_KEY}"}
CONNECTIONS = 16
BATCH_ITEMS = 300
ENV = {"FAKE_OPENAI_KEY": "sk-fake", "AIGW_JS_REPLICAS": "3", "AIGW_HEARTBEAT": "0.5",
       "AIGW_HEARTBEAT_TIMEOUT": "2", "AIGW_ACCOUNTING_BATCH_AGE": "0.2",
       "AIGW_LOG_LEVEL": "INFO"}


def _gateway(cluster: NatsCluster, work: Path, fake_openai: str, anthropic: str, gemini: str,
             workers: dict[str, int]) -> Gateway:
    config = e2e_config(fake_openai, anthropic, gemini)
    config["general_settings"] = {"master_key": MASTER_KEY}
    gateway = Gateway(nats_url=cluster.url, config_path=write_config(work / "config.yaml",
                                                                     config),
                      log_dir=work, env={**ENV, "AIGW_SPOOL_DIR": str(work / "spool")})
    gateway.start_accounting(work / "data")
    for provider, count in workers.items():
        for _ in range(count):
            gateway.start_worker(provider)
    gateway.start_ingress()
    deadline = time.monotonic() + 60
    while True:
        try:
            found = httpx.get(gateway.base_url + "/health/readiness", timeout=2).json()
            if all(found.get("workers", {}).get(p) == "ok" for p in workers):
                return gateway
        except (httpx.HTTPError, ValueError):
            pass
        if time.monotonic() > deadline:
            gateway.stop()
            raise AssertionError(f"gateway not ready:\n{gateway.all_logs()}")
        time.sleep(0.2)


# ---- load ------------------------------------------------------------------------------------


@dataclass
class Outcome:
    started: float
    ended: float
    request_id: str | None
    ok: bool
    stream: bool
    problem: str | None = None  # not a clean OpenAI error: what it was instead
    code: str | None = None  # a clean error's status and code
    nonce: str = ""  # in the call's message: tells its upstream calls apart


def _code(status: int, error: object) -> str:
    return f"{status} {error.get('code') if isinstance(error, dict) else None}"


def _clean_error(error: object) -> str | None:
    """None when ``error`` is an OpenAI error object, else what is wrong with it."""
    if not isinstance(error, dict):
        return f"not an error object: {error!r}"[:300]
    if not isinstance(error.get("message"), str) or not error["message"]:
        return f"no message: {error!r}"[:300]
    if not isinstance(error.get("type"), str):
        return f"no type: {error!r}"[:300]
    return None


def _call(client: httpx.Client, marker: str, stream: bool) -> Outcome:
    nonce = uuid.uuid4().hex
    return dataclasses.replace(_call_once(client, marker, stream, nonce), nonce=nonce)


def _call_once(client: httpx.Client, marker: str, stream: bool, nonce: str) -> Outcome:
    body = {"model": "gpt-4o-mini", "stream": stream,
            "messages": [{"role": "user", "content": f"{marker} {nonce}"}]}
    started = time.monotonic()
    request_id = None
    try:
        with client.stream("POST", "/v1/chat/completions", json=body) as r:
            request_id = r.headers.get("x-request-id")
            if r.status_code != 200:
                r.read()
                code = None
                try:
                    error = r.json().get("error")
                    problem, code = _clean_error(error), _code(r.status_code, error)
                except ValueError:
                    problem = f"{r.status_code} not JSON: {r.text[:200]}"
                if r.status_code < 400:
                    problem = f"status {r.status_code}"
                return Outcome(started, time.monotonic(), request_id, False, stream, problem,
                               code)
            if not stream:
                r.read()
                answer = r.json()
                ok = bool(answer.get("choices"))
                return Outcome(started, time.monotonic(), request_id, ok, stream,
                               None if ok else f"200 without choices: {r.text[:200]}")
            events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    except httpx.HTTPError as exc:
        return Outcome(started, time.monotonic(), request_id, False, stream,
                       f"transport: {exc!r}")
    ended = time.monotonic()
    if not events or events[-1] != "[DONE]":
        return Outcome(started, ended, request_id, False, stream,
                       f"stream cut without [DONE]: {events[-2:]}")
    for data in events[:-1]:
        chunk = json.loads(data)
        if "error" in chunk:
            return Outcome(started, ended, request_id, False, stream,
                           _clean_error(chunk["error"]), _code(200, chunk["error"]))
    return Outcome(started, ended, request_id, True, stream)


@dataclass
class Load:
    base_url: str
    secret: str
    marker: str
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def _run(self, index: int) -> None:
        with httpx.Client(base_url=self.base_url, timeout=60,
                          headers={"authorization": f"Bearer {self.secret}"}) as client:
            n = 0
            while not self._stop.is_set():
                self.outcomes.append(_call(client, self.marker, stream=(index + n) % 2 == 0))
                n += 1

    def start(self) -> Load:
        for i in range(CONNECTIONS):
            thread = threading.Thread(target=self._run, args=(i,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(90)
            assert not thread.is_alive(), "a call never ended"

    def recovered_after(self, moment: float) -> float:
        """Seconds from ``moment`` to the end of the last failed call that was running
        then or started after (0: none failed)."""
        failed = [o.ended for o in self.outcomes if not o.ok and o.ended >= moment]
        return max(failed) - moment if failed else 0.0


# ---- what accounting holds ------------------------------------------------------------------


def _make_key(gateway: Gateway, alias: str) -> tuple[str, str]:
    r = httpx.post(gateway.base_url + "/admin/keys", json={"alias": alias}, headers=MASTER,
                   timeout=30)
    assert r.status_code in (200, 201), r.text
    return r.json()["id"], r.json()["secret"]


def _usage_rows(gateway: Gateway, key_id: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    while True:
        r = httpx.get(gateway.base_url + "/v1/usage/logs", headers=MASTER, timeout=30,
                      params={"key_id": key_id, "days": 1, "limit": 1000,
                              "offset": len(rows)})
        assert r.status_code == 200, r.text
        page = r.json()["data"]
        rows += page
        if len(page) < 1000:
            return rows


def _settled_rows(gateway: Gateway, key_id: str, at_least: int,
                  within: float = 60.0) -> list[dict[str, Any]]:
    """The key's usage rows once at least ``at_least`` arrived and no more come."""
    deadline = time.monotonic() + within
    last = -1
    while True:
        rows = _usage_rows(gateway, key_id)
        if len(rows) >= at_least and len(rows) == last:
            return rows
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(rows)} usage rows, expected at least {at_least}:\n"
                                 f"{gateway.all_logs()}")
        last = len(rows)
        time.sleep(1.5)


def _upstream_calls(state: openai_server.FakeOpenAIState, marker: str) -> int:
    return sum(1 for body in list(state.requests)
               if marker in json.dumps(body.get("messages", "")))


def _calls_per_nonce(state: openai_server.FakeOpenAIState, marker: str) -> Counter[str]:
    """Upstream calls per interactive call (its nonce ends its one message)."""
    return Counter(json.dumps(body.get("messages", "")).rsplit(" ", 1)[-1].strip('"}]')
                   for body in list(state.requests)
                   if marker in json.dumps(body.get("messages", "")))


def _submit_batch(gateway: Gateway, secret: str, marker: str) -> str:
    client = openai.OpenAI(base_url=gateway.base_url + "/v1", api_key=secret, max_retries=3)
    lines = [{"custom_id": f"item-{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": "gpt-4o-mini",
                       "messages": [{"role": "user", "content": f"{marker} batch {i}"}]}}
             for i in range(BATCH_ITEMS)]
    raw = "".join(json.dumps(line) + "\n" for line in lines).encode()
    file = client.files.create(file=("items.jsonl", io.BytesIO(raw)), purpose="batch")
    return client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions",
                                 completion_window="24h").id


def _batch_output(gateway: Gateway, secret: str, batch_id: str,
                  within: float = 240.0) -> tuple[Any, list[dict[str, Any]], list[dict[str, Any]]]:
    client = openai.OpenAI(base_url=gateway.base_url + "/v1", api_key=secret, max_retries=3)
    deadline = time.monotonic() + within
    batch = client.batches.retrieve(batch_id)
    while batch.status not in ("completed", "failed", "cancelled", "expired"):
        assert time.monotonic() < deadline, f"batch still {batch.status}: {batch}"
        time.sleep(0.5)
        batch = client.batches.retrieve(batch_id)

    def lines(file_id: str | None) -> list[dict[str, Any]]:
        if file_id is None:
            return []
        return [json.loads(x) for x in client.files.content(file_id).text.splitlines()]

    return batch, lines(batch.output_file_id), lines(batch.error_file_id)


def _figures(work: Path, name: str, figures: dict[str, Any]) -> None:
    path = work.parent / "cluster-figures.json"
    found = json.loads(path.read_text()) if path.exists() else {}
    found[name] = figures
    path.write_text(json.dumps(found, indent=2))
    print(f"\n{name}: {json.dumps(figures)}")  # noqa: T201 - the figures for the note
