"""``aigw up`` restarts what dies: each child SIGKILLed under load comes back, readiness says
so while it is away, and no answered call goes unaccounted."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_embedded import Up

pytestmark = pytest.mark.e2e

CHAT = {"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]}


class Load:
    """Chat calls one after another on two threads, their status codes counted."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/v1/chat/completions"
        self.codes: Counter[int] = Counter()
        self.bodies: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(2)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                try:
                    r = client.post(self.url, json=CHAT)
                except httpx.HTTPError:
                    code, body = 0, ""  # the ingress itself never goes away here
                else:
                    code, body = r.status_code, r.text
                with self._lock:
                    self.codes[code] += 1
                    if code >= 500:
                        self.bodies.append(body)
                time.sleep(0.01)

    def ok(self) -> int:
        with self._lock:
            return self.codes[200]


def _readiness(port: int) -> tuple[int, dict[str, object]]:
    r = httpx.get(f"http://127.0.0.1:{port}/health/readiness", timeout=5)
    return r.status_code, r.json()


def _processes(port: int) -> dict[str, dict[str, object]]:
    processes = _readiness(port)[1]["processes"]
    assert isinstance(processes, dict)
    return processes


def _wait(condition: object, what: str, timeout: float = 40) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    gateway = Up([], {"AIGW_HEARTBEAT": "0.5", "AIGW_HEARTBEAT_TIMEOUT": "2"}, tmp_path)
    gateway.wait_ready()
    yield gateway
    if gateway.proc.poll() is None:
        gateway.proc.kill()
        gateway.proc.wait()


@pytest.mark.parametrize("victim", ["worker:mock", "accounting", "nats"])
def test_a_killed_child_is_restarted_under_load(up: Up, victim: str) -> None:
    before = _processes(up.port)
    assert set(before) == {"nats", "worker:mock", "accounting"}
    assert all(p["state"] == "running" and p["restarts"] == 0 for p in before.values())
    with Load(up.port) as load:
        _wait(lambda: load.ok() >= 20, "calls flow before the kill")
        pid = before[victim]["pid"]
        assert isinstance(pid, int)
        os.kill(pid, signal.SIGKILL)
        # While it is away readiness says so (a dead worker or nats also show as such).
        _wait(lambda: _readiness(up.port)[0] == 503, f"readiness 503 without {victim}")
        _wait(lambda: _readiness(up.port)[0] == 200, f"readiness back after {victim}")
        after = _processes(up.port)[victim]
        assert after["restarts"] == 1 and after["pid"] != pid
        assert after["last_exit"] == -signal.SIGKILL
        served = load.ok()
        _wait(lambda: load.ok() >= served + 20, f"calls flow again after {victim}")
    # Calls caught by the outage are refused as such (no worker, no NATS), never a 500.
    assert load.codes[500] == 0, load.bodies[:3]
    assert set(load.codes) <= {200, 502, 503, 504}, (load.codes, load.bodies[:3])
    log = up.log.read_text()
    assert f"{victim} exited with code -9" in log and f"{victim} restarted" in log
    # Nothing answered is lost from usage, accounting's own death included.
    summary = f"http://127.0.0.1:{up.port}/v1/usage/summary"
    _wait(lambda: httpx.get(summary, timeout=10).json().get("requests", 0) >= load.ok(),
          f"usage counts every answered call ({load.ok()})", timeout=60)
    assert up.stop() == 0


def test_a_child_that_keeps_dying_is_retried_with_a_growing_backoff(up: Up) -> None:
    kills = []
    for _ in range(3):
        current = _processes(up.port)["worker:mock"]
        _wait(lambda: _processes(up.port)["worker:mock"]["state"] == "running", "back up")
        current = _processes(up.port)["worker:mock"]
        os.kill(int(current["pid"]), signal.SIGKILL)  # type: ignore[call-overload]
        kills.append(time.monotonic())
        _wait(lambda c=current: _processes(up.port)["worker:mock"]["pid"] != c["pid"]
              and _processes(up.port)["worker:mock"]["state"] == "running", "restarted")
        kills.append(time.monotonic())
    downtimes = [kills[i + 1] - kills[i] for i in range(0, len(kills), 2)]
    # 0.5 s, 1 s, 2 s: each quick death waits twice as long as the one before.
    assert downtimes[2] > downtimes[0] + 1.0, downtimes
    assert _processes(up.port)["worker:mock"]["restarts"] == 3
    _wait(lambda: _readiness(up.port)[0] == 200, "ready again")
    assert up.stop() == 0
