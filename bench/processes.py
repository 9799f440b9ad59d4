"""The processes a benchmark starts: spawn, wait until ready, count CPU time, stop.

Each service runs in its own session (``start_new_session``), so the CPU time of
everything it spawns (``aigw up`` starts nats-server and workers, LiteLLM may start
uvicorn workers) is found by session id in ``/proc``, and stopping it signals that
session's process group and nothing else.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class ServiceError(RuntimeError):
    """A service exited or did not become ready; carries the tail of its log."""

    def __init__(self, name: str, reason: str, log_tail: str) -> None:
        super().__init__(f"{name}: {reason}\n--- last lines of its log ---\n{log_tail}")
        self.name = name
        self.reason = reason
        self.log_tail = log_tail


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def session_cpu_seconds(session_id: int) -> float:
    """User + system CPU seconds of the live processes in one session (Linux only)."""
    total_ticks = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        # The command name (field 2) may hold spaces; fields after its ')' are plain.
        fields = stat[stat.rfind(")") + 2 :].split()
        if int(fields[3]) == session_id:  # field 6: session
            total_ticks += int(fields[11]) + int(fields[12])  # fields 14, 15: utime, stime
    return total_ticks / _CLOCK_TICKS


@dataclass
class Service:
    """One child process with its log file, started by :meth:`start`."""

    name: str
    command: Sequence[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                list(self.command),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env},
                cwd=self.cwd,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError(f"{self.name} was not started")
        return self.process.pid

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def cpu_seconds(self) -> float:
        return session_cpu_seconds(self.pid)

    def wait_ready(self, url: str, timeout_s: float) -> float:
        """Poll ``GET url`` until it answers 200; returns the seconds it took."""
        started = time.monotonic()
        deadline = started + timeout_s
        last = "no answer yet"
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.process is not None and self.process.poll() is not None:
                    raise ServiceError(
                        self.name, f"exited with {self.process.returncode}", self.log_tail()
                    )
                try:
                    response = client.get(url)
                except httpx.HTTPError as exc:
                    last = f"{type(exc).__name__}: {exc}"
                else:
                    if response.status_code == 200:
                        return time.monotonic() - started
                    last = f"HTTP {response.status_code}: {response.text[:200]}"
                time.sleep(0.2)
        raise ServiceError(
            self.name, f"not ready after {timeout_s:g}s at {url} ({last})", self.log_tail()
        )

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM the service's process group, SIGKILL it after ``grace_s``."""
        if self.process is None or self.process.poll() is not None:
            self._kill_group(signal.SIGKILL)
            return
        self._kill_group(signal.SIGTERM)
        try:
            self.process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self._kill_group(signal.SIGKILL)
            self.process.wait(timeout=5)
        # Children that outlive the leader (a worker still draining) go too.
        self._kill_group(signal.SIGKILL)

    def _kill_group(self, signum: signal.Signals) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signum)
