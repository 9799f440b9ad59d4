"""Ingress replicas sharing one config through a real nats-server's KV: written once, edits
followed, invalid files and unresolvable revisions refused, master keys kept or rotated."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
import yaml
from starlette.requests import Request

from ingress.auth.principal import Principal
from ingress.errors import ApiError
from schemas.config_doc import content_hash
from tests.ingress.config_replicas import (
    ENV,
    Replica,
    config_text,
    nats_client,  # noqa: F401 - the ``nc`` fixture
    replica_starter,  # noqa: F401 - the ``replica`` fixture
    until,
    write,
)


async def test_replicas_started_with_the_same_file_write_it_once(
    replica: Replica, tmp_path: Path
) -> None:
    path = write(tmp_path / "c.yaml", config_text("a"))
    first = await replica(path)
    await replica(path)
    number, doc = await first.feed.latest()
    assert number > 0 and doc is not None and doc.hash == content_hash(path.read_text())
    history = await first.feed.kv.history(first.feed.key)
    assert len(history) == 1


async def test_an_edited_file_reaches_a_replica_that_reads_another_copy(
    replica: Replica, tmp_path: Path
) -> None:
    mine = write(tmp_path / "mine.yaml", config_text("a"))
    theirs = write(tmp_path / "theirs.yaml", config_text("a"))
    editor = await replica(mine)
    other = await replica(theirs)
    write(mine, config_text("a", "b"))
    await until(lambda: "b" in other.gateway.router and "b" in editor.gateway.router)
    assert other.gateway.config.model_names == ["a", "b"]
    assert theirs.read_text() == config_text("a")  # nobody writes files


async def test_an_invalid_file_is_refused_in_one_line_and_nothing_changes(
    replica: Replica, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path / "c.yaml", config_text("a"))
    reloader = await replica(path)
    before = await reloader.feed.latest()
    with caplog.at_level(logging.ERROR, logger="aigw.config"):
        write(path, "model_list:\n  - model_name: [unclosed\n")
        await until(lambda: any("refused" in r.message for r in caplog.records))
        await asyncio.sleep(0.3)  # several more looks at the same bad file
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 1
    assert refusals[0].startswith(f"config reload refused: {path}: config {path} is not "
                                  "valid YAML at line")
    assert refusals[0].endswith("; keeping the current config")
    assert reloader.gateway.config.model_names == ["a"]
    assert await reloader.feed.latest() == before


async def test_an_unknown_provider_is_refused_and_the_old_models_stay(
    replica: Replica, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path / "c.yaml", config_text("a"))
    reloader = await replica(path)
    with caplog.at_level(logging.ERROR, logger="aigw.config"):
        write(path, config_text("a").replace("openai/a", "skynet/a"))
        result = await reloader.reload()
    assert not result.applied and result.error is not None
    assert "unknown provider 'skynet'" in result.error
    assert "a" in reloader.gateway.router


async def test_a_replica_restarted_with_an_older_file_serves_the_newer_kv_config(
    replica: Replica, tmp_path: Path
) -> None:
    new = write(tmp_path / "new.yaml", config_text("a", "b"), mtime=2_000_000_000)
    old = write(tmp_path / "old.yaml", config_text("a"), mtime=1_000_000_000)
    first = await replica(new)
    restarted = await replica(old)
    assert restarted.gateway.config.model_names == ["a", "b"]
    _, doc = await first.feed.latest()
    assert doc is not None and doc.hash == content_hash(new.read_text())


async def test_a_revision_this_host_cannot_resolve_is_logged_and_the_config_kept(
    replica: Replica, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    mine = write(tmp_path / "mine.yaml", config_text("a"))
    theirs = write(tmp_path / "theirs.yaml", config_text("a"))
    await replica(mine)
    other = await replica(theirs, env={**ENV})
    edited = yaml.safe_dump({"model_list": [
        *yaml.safe_load(config_text("a"))["model_list"],
        {"model_name": "b", "litellm_params": {"model": "openai/b",
                                               "api_key": "os.environ/ONLY_THERE"}}],
        "general_settings": {"master_key": "sk-master"}})
    with caplog.at_level(logging.ERROR, logger="aigw.config"):
        await replica(write(tmp_path / "third.yaml", edited), env={**ENV, "ONLY_THERE": "x"})
        # ``third`` starts with the newest file, so it publishes; ``other`` cannot resolve it.
        await until(lambda: any("ONLY_THERE is not set" in r.getMessage()
                                for r in caplog.records))
    assert other.gateway.config.model_names == ["a"]


async def test_a_reload_that_removes_the_master_key_is_refused(
    replica: Replica, tmp_path: Path
) -> None:
    path = write(tmp_path / "c.yaml", config_text("a"))
    reloader = await replica(path)
    write(path, config_text("a", "b", master=None))
    result = await reloader.reload()
    assert not result.applied and result.error is not None and "master_key" in result.error
    assert reloader.gateway.config.master_key is not None


async def test_a_forced_reload_of_an_unchanged_file_applies_nothing_new(
    replica: Replica, tmp_path: Path
) -> None:
    path = write(tmp_path / "c.yaml", config_text("a"))
    reloader = await replica(path)
    result = await reloader.reload()
    assert result.applied and not result.changed
    assert result.hash == content_hash(path.read_text())
    write(path, config_text("a", "b"))
    result = await reloader.reload()
    assert result.applied and result.changed and "b" in reloader.gateway.router


async def test_a_new_master_key_is_checked_from_the_next_request(
    replica: Replica, tmp_path: Path
) -> None:
    path = write(tmp_path / "c.yaml", config_text("a"))
    reloader = await replica(path)
    before = reloader.gateway.auth
    write(path, config_text("a", master="sk-rotated"))
    assert (await reloader.reload()).applied
    assert reloader.gateway.auth is not before

    def caller(key: str) -> Principal:
        scope = {"type": "http", "headers": [(b"authorization", f"Bearer {key}".encode())]}
        return reloader.gateway.auth.check(Request(scope))

    assert caller("sk-rotated").master
    with pytest.raises(ApiError):
        caller("sk-master")
