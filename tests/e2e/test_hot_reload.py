"""Hot reload through the real gateway: a worker and two ingress replicas on one config file,
shared through NATS KV, changed while they run.

The provider (``openai_compatible``) is this module's own, so the session gateway's
workers never take its attempts, and the harness gives every gateway its own KV key.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cli.nats_server import NatsServer
from tests.e2e.conftest import MASTER_KEY
from tests.fakes import openai_server
from tests.fakes.server import free_port, serve
from tests.harness import Gateway, write_config

pytestmark = pytest.mark.e2e
PROVIDER = "openai_compatible"
AUTH = {"authorization": f"Bearer {MASTER_KEY}"}


@pytest.fixture(scope="module")
def fake() -> Iterator[str]:
    with serve(openai_server.create_app(openai_server.FakeOpenAIState(slow_seconds=3.0))) as url:
        yield url


def config(url: str, *aliases: str) -> dict[str, object]:
    """Each alias names the fake's behaviour (``slow-stream``) or answers normally."""
    return {
        "model_list": [{"model_name": alias, "litellm_params": {
            "model": f"{PROVIDER}/{alias}", "api_base": f"{url}/v1",
            "api_key": "os.environ/FAKE_OPENAI_KEY"}} for alias in aliases],
        "general_settings": {"master_key": MASTER_KEY},
    }


@pytest.fixture
def replicas(
    nats_server: NatsServer, fake: str, tmp_path: Path
) -> Iterator[tuple[Gateway, list[str]]]:
    """A worker and two ingress replicas reading one file; the base URL of each replica."""
    path = write_config(tmp_path / "config.yaml", config(fake, "first", "slow-stream"))
    gw = Gateway(nats_url=nats_server.url, config_path=path, log_dir=tmp_path,
                 env={"FAKE_OPENAI_KEY": "sk-fake", "AIGW_HEARTBEAT": "0.5",
                      "AIGW_HEARTBEAT_TIMEOUT": "2", "AIGW_CONFIG_WATCH_INTERVAL": "0.2",
                      "AIGW_LOG_LEVEL": "INFO"})
    port = free_port()
    try:
        gw.start_worker(PROVIDER)
        gw.start_ingress()
        gw.start_replica(port)
        gw.wait_ready()
        urls = [gw.base_url, f"http://127.0.0.1:{port}"]
        eventually(lambda: httpx.get(urls[1] + "/health/readiness", timeout=2).status_code
                   == 200, 30, f"the second replica is ready:\n{gw.all_logs()}")
        yield gw, urls
    finally:
        gw.stop()


def eventually(check: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            if check():
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within} s: {what}")
        time.sleep(0.1)


def ask(url: str, model: str) -> httpx.Response:
    return httpx.post(url + "/v1/chat/completions", headers=AUTH, timeout=15, json={
        "model": model, "messages": [{"role": "user", "content": "hi"}]})


def models(url: str) -> list[str]:
    r = httpx.get(url + "/v1/models", headers=AUTH, timeout=5)
    return [m["id"] for m in r.json()["data"]]


def test_an_alias_added_to_the_file_is_served_by_every_replica_without_a_restart(
    replicas: tuple[Gateway, list[str]], fake: str,
) -> None:
    gw, urls = replicas
    pids = [p.pid for p in (gw.ingress, *gw.extra_ingresses, gw.workers[0][1]) if p]
    write_config(gw.config_path, config(fake, "first", "added"))
    for url in urls:
        eventually(lambda url=url: ask(url, "added").status_code == 200, 10,  # type: ignore[misc]
                   f"{url} serves the new alias:\n{gw.all_logs()}")
        assert ask(url, "first").status_code == 200
        assert ask(url, "slow-stream").status_code == 404
        assert models(url) == ["first", "added"]
    assert [p.pid for p in (gw.ingress, *gw.extra_ingresses, gw.workers[0][1]) if p] == pids
    assert all(p.poll() is None for p in (gw.ingress, *gw.extra_ingresses))
    assert "config reloaded: 2 models" in gw.logs("ingress")


@pytest.mark.parametrize("broken", [
    "model_list:\n  - model_name: [unclosed\n",
    "model_list:\n  - model_name: x\n    litellm_params: {model: skynet/x}\n",
], ids=["bad-yaml", "unknown-provider"])
def test_an_invalid_file_is_refused_and_every_replica_keeps_its_models(
    replicas: tuple[Gateway, list[str]], broken: str,
) -> None:
    gw, urls = replicas
    gw.config_path.write_text(broken)
    eventually(lambda: "config reload refused" in gw.logs("ingress"), 10,
               f"the refusal is logged:\n{gw.all_logs()}")
    time.sleep(0.5)  # a few more looks at the same file
    line = next(x for x in gw.logs("ingress").splitlines() if "config reload refused" in x)
    assert f"config reload refused: {gw.config_path}: " in line
    assert line.endswith("; keeping the current config")
    assert gw.logs("ingress").count("config reload refused") == 1
    for url in urls:
        assert ask(url, "first").status_code == 200
        assert models(url) == ["first", "slow-stream"]
    r = httpx.post(urls[1] + "/admin/config/reload", headers=AUTH, timeout=10)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "invalid_config"
    assert error["message"].startswith("config reload refused: ")


def test_the_admin_api_reloads_the_file_now_and_refuses_virtual_keys(
    replicas: tuple[Gateway, list[str]], fake: str,
) -> None:
    gw, urls = replicas
    r = httpx.post(urls[0] + "/admin/config/reload", headers=AUTH, timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["applied"] is True and r.json()["changed"] is False
    write_config(gw.config_path, config(fake, "first", "by-admin"))
    r = httpx.post(urls[1] + "/admin/config/reload", headers=AUTH, timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["applied"] is True and len(r.json()["hash"]) == 64
    assert ask(urls[1], "by-admin").status_code == 200
    eventually(lambda: ask(urls[0], "by-admin").status_code == 200, 10,
               "the other replica follows")
    refused = httpx.post(urls[0] + "/admin/config/reload", timeout=10,
                         headers={"authorization": "Bearer not-a-key"})
    assert refused.status_code == 401


def test_a_stream_in_flight_completes_when_a_reload_removes_its_model(
    replicas: tuple[Gateway, list[str]], fake: str,
) -> None:
    gw, urls = replicas
    events: list[str] = []
    first_chunk = threading.Event()
    outcome: dict[str, Any] = {}

    def stream() -> None:
        try:
            with httpx.stream("POST", urls[1] + "/v1/chat/completions", headers=AUTH,
                              timeout=20, json={"model": "slow-stream", "stream": True,
                                                "messages": [{"role": "user",
                                                              "content": "hi"}]}) as r:
                outcome["status"] = r.status_code
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        events.append(line.removeprefix("data: "))
                        first_chunk.set()
        except httpx.HTTPError as exc:
            outcome["error"] = exc
        finally:
            first_chunk.set()

    reader = threading.Thread(target=stream)
    reader.start()
    assert first_chunk.wait(10), gw.all_logs()
    # The upstream now waits 3 s before the rest of the answer: reload meanwhile.
    write_config(gw.config_path, config(fake, "first", "replacement"))
    for url in urls:
        eventually(lambda url=url: ask(url, "replacement").status_code == 200, 10,  # type: ignore[misc]
                   f"{url} reloaded:\n{gw.all_logs()}")
    assert reader.is_alive(), "the stream should still be waiting on the upstream"
    reader.join(20)
    assert outcome == {"status": 200}, outcome
    assert events[-1] == "[DONE]"
    text = "".join(
        (json.loads(e)["choices"] or [{}])[0].get("delta", {}).get("content") or ""
        for e in events[:-1])
    assert text == openai_server.ANSWER
    assert ask(urls[0], "slow-stream").status_code == 404


@pytest.mark.parametrize("sent", [signal.SIGHUP, signal.SIGUSR1])
def test_a_signal_reloads_when_polling_is_off(
    nats_server: NatsServer, fake: str, tmp_path: Path, sent: signal.Signals,
) -> None:
    path = write_config(tmp_path / "config.yaml", config(fake, "first"))
    gw = Gateway(nats_url=nats_server.url, config_path=path, log_dir=tmp_path,
                 env={"FAKE_OPENAI_KEY": "sk-fake", "AIGW_CONFIG_WATCH_INTERVAL": "0"})
    try:
        gw.start_worker(PROVIDER)
        gw.start_ingress()
        gw.wait_ready()
        write_config(path, config(fake, "first", "after-hup"))
        time.sleep(1.0)
        assert ask(gw.base_url, "after-hup").status_code == 404  # nobody is looking
        assert gw.ingress is not None
        gw.ingress.send_signal(sent)
        eventually(lambda: ask(gw.base_url, "after-hup").status_code == 200, 10,
                   f"{sent.name} reloads:\n{gw.all_logs()}")
        assert gw.ingress.poll() is None
    finally:
        gw.stop()
