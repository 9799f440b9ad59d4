"""The NATS config docker-compose runs is one nats-server accepts, with room for big messages,
and it lets in only the gateway's roles, each with its own permissions."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import nats
import nats.errors
import pytest

from cli.bus_config import authorization, password_variable
from cli.nats_server import MAX_PAYLOAD, find_binary, free_port
from core.bus_auth import BusAuth
from schemas.bus_roles import ROLES, WORKER
from schemas.keys import KEYS_BUCKET

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
CONF = DEPLOY / "nats" / "nats.conf"
PASSWORDS = {password_variable(role): f"{role}Pass42" for role in ROLES}


def test_the_compose_nats_config_is_valid_and_allows_the_embedded_payload_size() -> None:
    checked = subprocess.run([find_binary(), "-t", "-c", str(CONF)], capture_output=True,
                             text=True, timeout=30, env={**os.environ, **PASSWORDS})
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"max_payload: {MAX_PAYLOAD // (1024 * 1024)}MB" in CONF.read_text()


def test_without_the_role_passwords_nats_server_does_not_start() -> None:
    env = {k: v for k, v in os.environ.items() if k not in PASSWORDS}
    checked = subprocess.run([find_binary(), "-t", "-c", str(CONF)], capture_output=True,
                             text=True, timeout=30, env=env)
    assert checked.returncode != 0
    assert "AIGW_NATS_INGRESS_PASSWORD" in checked.stdout + checked.stderr


@pytest.mark.parametrize("copy", ["nats/authorization.conf", "k8s/deps/authorization.conf"])
def test_the_deployed_permissions_are_the_ones_the_code_defines(copy: str) -> None:
    assert (DEPLOY / copy).read_text() == authorization(), (
        f"deploy/{copy} is out of date: python -m cli.bus_config > deploy/{copy}")
    assert "include ./authorization.conf" in (DEPLOY / copy).with_name("nats.conf").read_text()


@pytest.fixture
def deployed(tmp_path: Path) -> Iterator[str]:
    """The compose config itself, run on a free port with a store of the test's own."""
    port = free_port()
    log = tmp_path / "nats.log"
    text = CONF.read_text().replace("store_dir: /data", f'store_dir: "{tmp_path}"')
    (tmp_path / "nats.conf").write_text("\n".join(
        line for line in text.splitlines() if not line.startswith("http_port")))
    (tmp_path / "authorization.conf").write_text(CONF.with_name("authorization.conf").read_text())
    process = subprocess.Popen(
        [find_binary(), "-c", str(tmp_path / "nats.conf"), "-a", "127.0.0.1", "-p", str(port),
         "-l", str(log)],
        env={**os.environ, **PASSWORDS}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while True:
        assert process.poll() is None, log.read_text() if log.exists() else "exited"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "nats-server did not listen"
            time.sleep(0.05)
    yield f"nats://127.0.0.1:{port}"
    process.terminate()
    process.wait(10)


async def test_the_deployed_server_refuses_strangers_and_keeps_workers_off_the_keys(
        deployed: str) -> None:
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await nats.connect(deployed, allow_reconnect=False)
    errors: list[str] = []

    async def record(error: Exception) -> None:
        errors.append(str(error))

    auth = BusAuth(user=WORKER, password=PASSWORDS[password_variable(WORKER)])
    worker = await nats.connect(deployed, allow_reconnect=False, error_cb=record,
                                **auth.connect_options(WORKER))
    try:
        with pytest.raises(nats.errors.TimeoutError):
            await worker.jetstream(timeout=1.0).publish(f"$KV.{KEYS_BUCKET}.forged", b"{}")
        deadline = asyncio.get_running_loop().time() + 10
        while not any("permissions violation" in e for e in errors):
            assert asyncio.get_running_loop().time() < deadline, errors
            await asyncio.sleep(0.05)
    finally:
        await worker.close()
