"""The processes a benchmark starts: spawn, wait until ready, count CPU time, stop.

A service's CPU time includes everything it spawned (``aigw up`` starts nats-server
and a worker per provider; LiteLLM may start uvicorn workers), found by parentage in
``/proc``. Stopping sends SIGTERM to the service alone, as an operator would, and then
kills only the processes it had spawned that outlived it.
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


@dataclass(frozen=True)
class _Proc:
    pid: int
    ppid: int
    state: str
    start_ticks: int
    cpu_ticks: int


def _processes() -> dict[int, _Proc]:
    """Every live process from /proc (Linux only)."""
    found: dict[int, _Proc] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        # The command name (field 2) may hold spaces; the fields after its ')' do not.
        fields = stat[stat.rfind(")") + 2 :].split()
        # Fields 3 state, 4 ppid, 14 utime, 15 stime, 22 starttime; fields[0] is field 3.
        pid = int(entry.name)
        cpu = int(fields[11]) + int(fields[12])
        found[pid] = _Proc(pid, int(fields[1]), fields[0], int(fields[19]), cpu)
    return found


def _descendants(root: int, table: dict[int, _Proc]) -> list[_Proc]:
    children: dict[int, list[_Proc]] = {}
    for proc in table.values():
        children.setdefault(proc.ppid, []).append(proc)
    tree = [table[root]] if root in table else []
    for proc in tree:  # grows while iterating: a breadth-first walk
        tree.extend(children.get(proc.pid, []))
    return tree


def tree_cpu_seconds(root: int) -> dict[str, float]:
    """User + system CPU seconds of a process and its live descendants, by program.

    By parentage, not session or group: ``aigw up`` puts nats-server and its workers
    in sessions of their own.
    """
    by_program: dict[str, float] = {}
    for proc in _descendants(root, _processes()):
        label = _program(proc.pid)
        by_program[label] = by_program.get(label, 0.0) + proc.cpu_ticks / _CLOCK_TICKS
    return by_program


def thread_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process's main thread, to the nanosecond (/proc ticks are 10 ms):
    for a single-threaded process whose cost per call is a tenth of a ms."""
    with open(f"/proc/{pid}/schedstat") as stat:
        return int(stat.read().split()[0]) / 1e9


def _program(pid: int) -> str:
    """A short name: ``aigw up``, ``workers``, ``nats-server``, not ``python3``."""
    args = _command(pid).split()
    while args and (Path(args[0]).name.startswith("python") or args[0] == "-m"):
        args = args[1:]
    if not args:
        return "?"
    name = Path(args[0]).name
    if len(args) > 1 and not args[1].startswith("-"):
        name += f" {args[1]}"
    return name


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent on anything but idle and iowait since boot."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal [guest guest_nice, already in user]
    return (sum(values[:8]) - values[3] - values[4]) / _CLOCK_TICKS


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

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds so far of the service and what it spawned, by program."""
        return tree_cpu_seconds(self.pid)

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

    def stop(self, grace_s: float = 10.0) -> list[str]:
        """SIGTERM the service, SIGKILL it after ``grace_s``; then SIGKILL whatever it
        started that is still alive. Returns a description of each process killed so."""
        if self.process is None:
            return []
        spawned = _descendants(self.process.pid, _processes())
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        leftovers: list[str] = []
        deadline = time.monotonic() + 3.0
        while True:
            alive = _processes()
            # Same pid and same start time: the very process it spawned, not a reused pid.
            survivors = [
                proc
                for proc in spawned[1:]
                if (now := alive.get(proc.pid)) is not None
                and now.start_ticks == proc.start_ticks
                and now.state != "Z"
            ]
            if not survivors or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        for proc in survivors:
            leftovers.append(f"pid {proc.pid} ({_command(proc.pid)})")
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
        return leftovers


def _command(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()[:120]
