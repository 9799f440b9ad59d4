"""``aigw up``: one command, everything in it, nothing left behind."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import nats
import nats.errors
import pytest

from tests.fakes.server import free_port

pytestmark = pytest.mark.e2e
HOMESTACK = Path(__file__).resolve().parents[2].parent / "shared/examples/homestack-config.yml"


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True,
                         text=True, check=False).stdout
    return [int(x) for x in out.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


class Up:
    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.port = free_port()
        self.log = cwd / "up.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "up", "--port", str(self.port),
             "--data-dir", str(cwd / "data"), *args],
            env={**os.environ, **env}, stdout=open(self.log, "wb"),  # noqa: SIM115
            stderr=subprocess.STDOUT, cwd=cwd,
        )

    def wait_ready(self, path: str = "/health/readiness") -> None:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}{path}", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(self.log.read_text())

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)


@pytest.fixture
def up_factory(tmp_path: Path) -> Iterator[object]:
    started: list[Up] = []

    def make(args: list[str], env: dict[str, str] | None = None) -> Up:
        up = Up(args, env or {}, tmp_path)
        started.append(up)
        return up

    yield make
    for up in started:
        if up.proc.poll() is None:
            up.proc.kill()


def test_zero_config_up_serves_mock_models_and_stops_cleanly(up_factory) -> None:  # type: ignore[no-untyped-def]
    up = up_factory([])
    up.wait_ready()
    r = httpx.post(f"http://127.0.0.1:{up.port}/v1/chat/completions",
                   json={"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200
    assert r.json()["choices"][0]["message"]["content"].startswith("This is a mock response")
    children = _children(up.proc.pid)
    assert len(children) >= 2, "a nats-server and a worker run as children"
    assert up.stop() == 0
    time.sleep(0.5)
    assert [c for c in children if _alive(c)] == []
    assert "listening on http://127.0.0.1" in up.log.read_text()


def test_children_die_with_a_killed_parent(up_factory) -> None:  # type: ignore[no-untyped-def]
    up = up_factory([])
    up.wait_ready()
    children = _children(up.proc.pid)
    up.proc.kill()
    up.proc.wait()
    # Each child gets SIGTERM from the kernel and stops on its own (bounded at a few
    # seconds); a loaded CI machine gets some slack.
    deadline = time.monotonic() + 30
    while [c for c in children if _alive(c)] and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [Path(f"/proc/{c}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            for c in children if _alive(c)]
    assert left == []


def test_homestack_config_runs_under_its_root_path(up_factory) -> None:  # type: ignore[no-untyped-def]
    if not HOMESTACK.exists():
        pytest.skip("shared/examples is not beside this checkout")
    env = {"OPENAI_API_KEY": "sk-o", "ANTHROPIC_API_KEY": "sk-a", "GEMINI_API_KEY": "g",
           "AI_API_MK": "sk-homestack", "SERVER_ROOT_PATH": "/ai-api"}
    up = up_factory(["--config", str(HOMESTACK)], env)
    up.wait_ready("/ai-api/health/readiness")
    base = f"http://127.0.0.1:{up.port}/ai-api"
    auth = {"authorization": "Bearer sk-homestack"}
    for path in ("/v1/models", "/models"):
        r = httpx.get(base + path, headers=auth)
        assert r.status_code == 200
        assert [m["id"] for m in r.json()["data"]][:2] == ["gpt-4o-mini", "gpt-3.5"]
    assert httpx.get(base + "/v1/models").status_code == 401
    log = up.log.read_text()
    assert "disable_spend_logs" in log and "log_raw_request_response" in log
    assert up.stop() == 0


def test_a_wrong_config_stops_start_up_with_one_clear_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("model_list:\n  - model_name: x\n    litellm_params:\n"
                   "      model: openai/gpt-4o\n      api_key: os.environ/NOT_SET_ANYWHERE\n")
    result = subprocess.run([sys.executable, "-m", "cli.main", "up", "--config", str(bad)],
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "aigw: model_list[0] (x) litellm_params.api_key: environment variable "
        "NOT_SET_ANYWHERE is not set"]


def _refused_without_credentials(url: str) -> None:
    async def attempt() -> None:
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await nats.connect(url, allow_reconnect=False)

    asyncio.run(attempt())


def _chat_is_accounted(port: int, requests: int) -> None:
    base = f"http://127.0.0.1:{port}"
    r = httpx.post(f"{base}/v1/chat/completions", timeout=30,
                   json={"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200, r.text
    deadline = time.monotonic() + 30
    while httpx.get(f"{base}/v1/usage/summary", timeout=10).json().get("requests") != requests:
        assert time.monotonic() < deadline, "the call never reached accounting"
        time.sleep(0.2)


def test_up_gives_each_process_its_own_nats_login_and_keeps_it_across_restarts(
        up_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    up = up_factory([])
    up.wait_ready()
    credentials = tmp_path / "data" / "nats-credentials.json"
    server_conf = tmp_path / "data" / "nats" / "nats-server.conf"
    assert credentials.stat().st_mode & 0o777 == 0o600
    assert server_conf.stat().st_mode & 0o777 == 0o600
    assert "authorization {" in server_conf.read_text()
    kept = credentials.read_text()
    found = re.search(r"NATS: (nats://\S+)", up.log.read_text())
    assert found, up.log.read_text()
    _refused_without_credentials(found[1])
    _chat_is_accounted(up.port, requests=1)
    assert up.stop() == 0

    again = up_factory([])
    again.wait_ready()
    assert credentials.read_text() == kept
    _chat_is_accounted(again.port, requests=2)
    assert again.stop() == 0
    server_log = (tmp_path / "data" / "nats" / "nats-server.log").read_text()
    assert [line for line in server_log.splitlines() if "Violation" in line] == []



def test_up_in_a_terminal_stops_on_sighup_and_ignores_sigusr1(tmp_path: Path) -> None:
    """Closing the terminal sends SIGHUP: ``aigw up`` stops as on Ctrl-C, its children
    with it. SIGUSR1 (reload) with no config file to reload changes nothing."""
    terminal, its_end = os.openpty()
    port = free_port()
    log = tmp_path / "up.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "up", "--port", str(port),
             "--data-dir", str(tmp_path / "data")],
            stdin=its_end, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
    os.close(its_end)
    try:
        deadline = time.monotonic() + 40
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health/readiness",
                             timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        children = _children(proc.pid)
        proc.send_signal(signal.SIGUSR1)
        time.sleep(0.5)
        assert proc.poll() is None
        assert httpx.get(f"http://127.0.0.1:{port}/health/liveliness").status_code == 200
        proc.send_signal(signal.SIGHUP)
        assert proc.wait(30) == 0, log.read_text()
        deadline = time.monotonic() + 15
        while [c for c in children if _alive(c)] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [c for c in children if _alive(c)] == []
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(terminal)
