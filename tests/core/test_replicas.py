"""``AIGW_JS_REPLICAS``: what new streams and buckets get, what an existing one keeps, and
a clear refusal of a value JetStream would not take."""

from __future__ import annotations

import logging
import subprocess
import sys
import uuid

import nats
import pytest

from cli.nats_server import NatsServer
from core import replicas
from core.config_feed import ConfigFeed


@pytest.mark.parametrize(("raw", "count"), [("", 1), ("1", 1), (" 3 ", 3), ("5", 5)])
def test_the_setting_is_read_from_the_environment(
        monkeypatch: pytest.MonkeyPatch, raw: str, count: int) -> None:
    monkeypatch.setenv(replicas.ENV, raw)
    assert replicas.wanted() == count


@pytest.mark.parametrize("raw", ["0", "6", "three", "-1", "1.5"])
def test_a_count_jetstream_would_refuse_is_refused(
        monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv(replicas.ENV, raw)
    with pytest.raises(ValueError, match=replicas.ENV):
        replicas.wanted()


def test_the_command_stops_with_one_line_on_a_bad_count() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", "worker", "--provider", "openai"],
        env={"AIGW_JS_REPLICAS": "7", "PATH": "/usr/bin:/bin"}, capture_output=True,
        text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "aigw: AIGW_JS_REPLICAS must be from 1 to 5, not 7"]


async def test_an_existing_bucket_keeps_its_count_and_the_mismatch_is_logged_once(
        nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    bucket = f"replicas_{uuid.uuid4().hex[:8]}"
    nc = await nats.connect(nats_server.url)
    try:
        monkeypatch.setenv(replicas.ENV, "1")
        await ConfigFeed(nc, key="k", bucket=bucket).open()
        info = await nc.jetstream().stream_info(f"KV_{bucket}")
        assert info.config.num_replicas == 1
        # A single server cannot hold three copies: the bucket goes on as it is.
        monkeypatch.setenv(replicas.ENV, "3")
        with caplog.at_level(logging.WARNING, logger="aigw.jetstream"):
            feed = ConfigFeed(nc, key="k", bucket=bucket)
            await feed.open()
            await ConfigFeed(nc, key="k", bucket=bucket).open()
        await feed.kv.put("k", b"still works")
        assert (await feed.kv.get("k")).value == b"still works"
        warnings = [r.getMessage() for r in caplog.records if f"KV_{bucket}" in r.getMessage()]
        assert warnings == [
            f"JetStream stream KV_{bucket} has 1 replica(s) but AIGW_JS_REPLICAS asks for 3; "
            f"it keeps working as it is. To change it: nats stream edit KV_{bucket} "
            "--replicas 3"]
    finally:
        await nc.close()
