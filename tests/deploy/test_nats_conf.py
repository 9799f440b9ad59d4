"""The NATS config docker-compose runs is one nats-server accepts, with room for big messages."""

from __future__ import annotations

import subprocess
from pathlib import Path

from cli.nats_server import MAX_PAYLOAD, find_binary

CONF = Path(__file__).resolve().parents[2] / "deploy" / "nats" / "nats.conf"


def test_the_compose_nats_config_is_valid_and_allows_the_embedded_payload_size() -> None:
    checked = subprocess.run([find_binary(), "-t", "-c", str(CONF)], capture_output=True,
                             text=True, timeout=30)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"max_payload: {MAX_PAYLOAD // (1024 * 1024)}MB" in CONF.read_text()
