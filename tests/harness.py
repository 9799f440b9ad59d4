"""Real gateway processes for end-to-end tests: ``aigw ingress`` and ``aigw worker``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

from tests.fakes.server import free_port


def write_config(path: Path, config: dict[str, object]) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def socket_owner(port: int, pids: list[int]) -> int | None:
    """The process, among ``pids``, holding the local TCP port ``port`` (Linux /proc): which
    worker made an upstream call, seen from the fake server's side of the connection."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                link = fd.readlink().as_posix()
            except OSError:
                continue
            if link.startswith("socket:[") and link[8:-1] in inodes:
                return pid
    return None


@dataclass
class Gateway:
    """An ingress and its workers, each its own process, over one real NATS server."""

    nats_url: str
    config_path: Path
    log_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    ingress: subprocess.Popen[bytes] | None = None
    workers: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    accounting: subprocess.Popen[bytes] | None = None
    extra_ingresses: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "NATS_URL": self.nats_url,
            "AIGW_CONFIG": str(self.config_path),
            # Gateways sharing the session's NATS must not share a hot-reloaded config.
            "AIGW_CONFIG_KEY": f"test-{abs(hash(self.config_path.resolve())):x}",
            "AIGW_LOG_LEVEL": "WARNING",
            **self.env,
        }

    def _spawn(
        self, name: str, args: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        return subprocess.Popen(
            [sys.executable, "-m", "cli.main", *args],
            env={**self._env(), **(env or {})}, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,  # as a service runs: no terminal, SIGHUP reloads
        )

    def start_worker(self, provider: str) -> subprocess.Popen[bytes]:
        proc = self._spawn(f"worker-{provider}-{len(self.workers)}",
                           ["worker", "--provider", provider])
        self.workers.append((provider, proc))
        return proc

    def start_ingress(self) -> None:
        self.ingress = self._spawn("ingress", ["ingress", "--host", "127.0.0.1",
                                               "--port", str(self.port)])

    def start_replica(
        self, port: int, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Another ingress replica on the same NATS (and Redis, unless ``env`` says)."""
        proc = self._spawn(f"ingress-{port}", ["ingress", "--host", "127.0.0.1",
                                               "--port", str(port)], env)
        self.extra_ingresses.append(proc)
        return proc

    def start_accounting(self, data_dir: Path) -> None:
        self.accounting = self._spawn(
            "accounting", ["accounting", "--data-dir", str(data_dir)])

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.ingress is not None and self.ingress.poll() is not None:
                raise RuntimeError(f"ingress exited: {self.logs('ingress')}")
            try:
                r = httpx.get(self.base_url + "/health/readiness", timeout=2)
                if r.status_code == 200:
                    return
                last = r.text
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.1)
        raise RuntimeError(f"gateway not ready: {last}")

    def logs(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def all_logs(self) -> str:
        """The tail of every process's log, for an assertion message."""
        return "\n".join(f"--- {p.stem}\n{self.logs(p.stem)}"
                         for p in sorted(self.log_dir.glob("*.log")))

    def stop(self) -> None:
        procs = [p for _, p in self.workers] + ([self.ingress] if self.ingress else [])
        procs += self.extra_ingresses + ([self.accounting] if self.accounting else [])
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
