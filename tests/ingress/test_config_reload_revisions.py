"""Which KV revisions a reloader applies: not older ones, yes a store made anew numbering
from 1 again, and an edit applied while NATS was down is published when it returns."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats

from cli.nats_server import NatsServer
from core.config_feed import NATS_ERRORS, ConfigFeed, Revision
from core.pricing import PriceTable
from core.publisher import UsagePublisher
from ingress.admission import LocalAdmission
from ingress.admission.alerts import BudgetAlerts
from ingress.admission.gatekeeper import Gatekeeper
from ingress.auth.authenticate import Authenticator
from ingress.auth.keys import KeyStore
from ingress.config.reload import ConfigReloader
from ingress.dispatch.dispatcher import Dispatcher
from ingress.routing.router import Router
from ingress.settings import IngressSettings
from ingress.state import Gateway
from schemas.config import load_config
from schemas.config_doc import ConfigDocument, content_hash
from tests.ingress.config_replicas import (
    ENV,
    Replica,
    config_text,
    nats_client,  # noqa: F401 - the ``nc`` fixture
    replica_starter,  # noqa: F401 - the ``replica`` fixture
    until,
    write,
)


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
