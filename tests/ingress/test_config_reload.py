"""Hot reload in the ingress: the publish rule, the document, and replicas sharing one
config through a real nats-server's KV."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from uuid import uuid4

import nats
import pytest
import yaml
from nats.aio.client import Client
from starlette.requests import Request

from cli.nats_server import NatsServer
from core.config_feed import NATS_ERRORS, ConfigFeed, Revision
from core.pricing import PriceTable
from core.publisher import UsagePublisher
from ingress.admission import LocalAdmission
from ingress.admission.alerts import BudgetAlerts
from ingress.admission.gatekeeper import Gatekeeper
from ingress.auth.authenticate import Authenticator
from ingress.auth.keys import KeyStore
from ingress.auth.principal import Principal
from ingress.config.apply import refusal
from ingress.config.file import ConfigFile
from ingress.config.publish import publish_at_start
from ingress.config.reload import ConfigReloader
from ingress.dispatch.dispatcher import Dispatcher
from ingress.errors import ApiError
from ingress.routing.router import Router
from ingress.settings import IngressSettings
from ingress.state import Gateway
from schemas.config import load_config, parse_config
from schemas.config_doc import ConfigDocument, content_hash

ENV = {"OPENAI_KEY": "sk-test"}


def config_text(*aliases: str, master: str | None = "sk-master") -> str:
    body: dict[str, object] = {"model_list": [
        {"model_name": a, "litellm_params": {"model": f"openai/{a}",
                                             "api_key": "os.environ/OPENAI_KEY"}}
        for a in aliases]}
    if master is not None:
        body["general_settings"] = {"master_key": master}
    return yaml.safe_dump(body)


def file_of(text: str, mtime: float) -> ConfigFile:
    return ConfigFile(text, content_hash(text), mtime, len(text))


# ---- the pure parts ----------------------------------------------------------------------


def test_a_replica_publishes_at_start_when_the_kv_holds_no_config() -> None:
    assert publish_at_start(file_of("a", 100.0), None)


def test_a_replica_with_the_same_file_publishes_nothing_at_start() -> None:
    current = ConfigDocument.of("a", "h:/c.yaml", 50.0)
    assert not publish_at_start(file_of("a", 200.0), current)


def test_a_newer_file_wins_at_start_and_an_older_one_follows_the_kv() -> None:
    current = ConfigDocument.of("b", "h:/c.yaml", 100.0)
    assert publish_at_start(file_of("a", 101.0), current)
    assert not publish_at_start(file_of("a", 99.0), current)


def test_removing_the_master_key_cannot_happen_live() -> None:
    closed = parse_config(yaml.safe_load(config_text("m")), ENV)
    opened = parse_config(yaml.safe_load(config_text("m", master=None)), ENV)
    assert refusal(closed, opened) is not None
    assert refusal(opened, closed) is None
    assert refusal(closed, closed) is None


def test_a_document_keeps_the_text_unresolved_and_round_trips() -> None:
    doc = ConfigDocument.of(config_text("m"), "h:/c.yaml", 1.0)
    assert "os.environ/OPENAI_KEY" in doc.text and "sk-test" not in doc.encode().decode()
    again = ConfigDocument.decode(doc.encode())
    assert again == doc
    assert again.parse(ENV).group("m")[0].api_key.get_secret_value() == "sk-test"


def test_a_document_whose_text_does_not_match_its_hash_is_unreadable() -> None:
    doc = ConfigDocument.of("a: 1", "h:/c.yaml", 1.0)
    tampered = doc.model_copy(update={"text": "a: 2"})
    assert ConfigDocument.decode(tampered.encode()) is None
    assert ConfigDocument.decode(b"not json") is None


# ---- replicas over a real nats-server ------------------------------------------------------


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[Client]:
    client = await nats.connect(nats_server.url)
    yield client
    await client.close()


Replica = Callable[..., Awaitable[ConfigReloader]]


@pytest.fixture
async def replica(nc: Client, tmp_path: Path) -> AsyncIterator[Replica]:
    """Start an ingress's config reloader on ``path`` (no HTTP server: the reloader only
    needs the gateway's config, router and NATS connection)."""
    key = f"test-{uuid4().hex[:12]}"
    started: list[ConfigReloader] = []

    async def start(path: Path, env: dict[str, str] | None = None) -> ConfigReloader:
        environ = env if env is not None else ENV
        config = load_config(str(path), environ)
        settings = IngressSettings(AIGW_CONFIG=path)
        gateway = Gateway(
            settings=settings, config=config, nc=nc, dispatcher=Dispatcher(nc),
            router=Router(config), auth=Authenticator("sk-master"), keys=KeyStore(nc),
            gatekeeper=Gatekeeper(LocalAdmission(), PriceTable.default(), BudgetAlerts(None)),
            usage=UsagePublisher(nc.jetstream()),
        )
        reloader = ConfigReloader(gateway, ConfigFeed(nc, key), path, interval=0.05,
                                  env=environ)
        await reloader.start()
        started.append(reloader)
        return reloader

    yield start
    for reloader in started:
        await reloader.stop()


def write(path: Path, text: str, mtime: float | None = None) -> Path:
    path.write_text(text)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


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


# ---- malformed files, secrets, and NATS coming back ----------------------------------------


MALFORMED = {
    "model_info": "model_list:\n  - model_name: a\n    model_info: 3\n"
                  "    litellm_params: {model: openai/a}\n",
    "model_name": "model_list:\n  - model_name: [a, b]\n    litellm_params: {model: openai/a}\n",
    "model": "model_list:\n  - model_name: a\n    litellm_params: {model: {openai: a}}\n",
}


@pytest.mark.parametrize("broken", list(MALFORMED.values()), ids=list(MALFORMED))
async def test_a_malformed_entry_is_refused_and_the_file_is_still_watched(
    replica: Replica, tmp_path: Path, caplog: pytest.LogCaptureFixture, broken: str
) -> None:
    path = write(tmp_path / "c.yaml", config_text("a"))
    reloader = await replica(path)
    with caplog.at_level(logging.ERROR, logger="aigw.config"):
        write(path, broken)
        await until(lambda: any("refused" in r.getMessage() for r in caplog.records))
    (refused,) = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert refused.startswith(f"config reload refused: {path}: model_list[0]")
    result = await reloader.reload()  # SIGHUP and POST /admin/config/reload: a 400, not a 500
    assert not result.applied and result.error is not None
    assert result.error.startswith("model_list[0]")
    write(path, config_text("a", "b"))
    await until(lambda: "b" in reloader.gateway.router)


async def test_a_yaml_error_is_refused_without_quoting_the_secret_on_its_line(
    replica: Replica, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path / "c.yaml", config_text("a"))
    reloader = await replica(path)
    write(path, config_text("a").replace("os.environ/OPENAI_KEY", '"sk-live-SECRET123'))
    with caplog.at_level(logging.DEBUG, logger="aigw"):
        result = await reloader.reload()
    assert result.error is not None and "not valid YAML at line" in result.error
    assert "SECRET123" not in result.error
    assert not [r for r in caplog.records if "SECRET123" in r.getMessage()]


def test_a_document_names_the_secrets_written_literally_never_their_values() -> None:
    text = yaml.safe_dump({
        "model_list": [
            {"model_name": "env", "litellm_params": {"model": "openai/a",
                                                     "api_key": "os.environ/OPENAI_KEY"}},
            {"model_name": "lit", "litellm_params": {"model": "openai/b", "api_key": "sk-lit"}},
            {"model_name": "none", "litellm_params": {"model": "mock/c"}},
        ],
        "general_settings": {"master_key": "sk-master"},
    })
    found = ConfigDocument.of(text, "h:/c.yaml", 1.0).literal_secrets()
    assert found == ["model_list[1] (lit) litellm_params.api_key", "general_settings.master_key"]
    assert ConfigDocument.of(config_text("a", master="os.environ/MK"), "h:/c.yaml",
                             1.0).literal_secrets() == []


async def test_publishing_literal_secrets_warns_once_naming_the_entries(
    replica: Replica, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path / "c.yaml", config_text("a"))
    reloader = await replica(path)  # publishes a literal master_key: warned about
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="aigw.config"):
        write(path, config_text("a", "b").replace("os.environ/OPENAI_KEY", "sk-in-the-file"))
        assert (await reloader.reload()).applied
    (warning,) = [r.getMessage() for r in caplog.records if "literally" in r.getMessage()]
    assert "model_list[0] (a) litellm_params.api_key" in warning
    assert "model_list[1] (b) litellm_params.api_key" in warning
    assert "general_settings.master_key" in warning and "os.environ/NAME" in warning
    assert "sk-in-the-file" not in warning and "sk-master" not in warning


async def test_a_revision_older_than_the_one_served_is_not_applied(
    replica: Replica, tmp_path: Path
) -> None:
    path = write(tmp_path / "c.yaml", config_text("a"))
    reloader = await replica(path)
    old = await reloader.feed.latest()
    write(path, config_text("a", "b"))
    assert (await reloader.reload()).applied
    number, doc = old
    assert doc is not None
    # A watch a step behind the direct apply: it delivers the old revision only now.
    reloader._watched = number - 1
    reloader._on_revision(Revision(number, doc))
    assert reloader.gateway.config.model_names == ["a", "b"]


async def test_a_watch_that_starts_again_at_a_lower_revision_is_followed(
    replica: Replica, tmp_path: Path
) -> None:
    """The KV made anew (a NATS store lost) numbers its revisions from 1 again; another
    replica's edit published there must not be ignored as old."""
    path = write(tmp_path / "c.yaml", config_text("a"))
    reloader = await replica(path)
    assert reloader._watched >= 1
    reloader._watched = reloader._revision = 50  # many reloads before the store was lost
    fresh = ConfigDocument.of(config_text("a", "z"), "other:/c.yaml", 2_000_000_000.0)
    reloader._on_revision(Revision(1, fresh))
    assert reloader.gateway.config.model_names == ["a", "z"]


async def test_an_edit_applied_while_nats_was_down_is_published_when_it_returns(
    tmp_path: Path,
) -> None:
    server = NatsServer(tmp_path / "nats")
    server.start()
    # No buffering while disconnected: a KV call fails at once instead of after 5 s.
    nc = await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2,
                            pending_size=0)
    path = write(tmp_path / "c.yaml", config_text("a"), mtime=1_000_000_000)
    config = load_config(str(path), ENV)
    gateway = Gateway(
        settings=IngressSettings(AIGW_CONFIG=path), config=config, nc=nc,
        dispatcher=Dispatcher(nc), router=Router(config), auth=Authenticator("sk-master"),
        keys=KeyStore(nc), usage=UsagePublisher(nc.jetstream()),
        gatekeeper=Gatekeeper(LocalAdmission(), PriceTable.default(), BudgetAlerts(None)),
    )
    # Polling off: nothing but the reconnect can publish the edit.
    reloader = ConfigReloader(gateway, ConfigFeed(nc, "gateway"), path, interval=0, env=ENV)
    try:
        await reloader.start()
        server.kill()
        await until(lambda: not nc.is_connected)
        edited = write(path, config_text("a", "b"), mtime=2_000_000_000).read_text()
        result = await reloader.reload()
        assert result.applied and result.changed and "b" in gateway.router
        server.start()

        async def shared() -> bool:
            try:
                _, doc = await reloader.feed.latest()
            except NATS_ERRORS:
                return False
            return doc is not None and doc.hash == content_hash(edited)

        deadline = asyncio.get_running_loop().time() + 15
        while not await shared():
            assert asyncio.get_running_loop().time() < deadline, "the edit was not published"
            assert gateway.config.model_names == ["a", "b"], "rolled back to the old revision"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # the watch delivers the new revision too
        assert gateway.config.model_names == ["a", "b"]
    finally:
        await reloader.stop()
        await nc.close()
        server.stop()
