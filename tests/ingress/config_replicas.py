"""Config reload tests' common ground: config files to write, and ingress config reloaders
started as replicas sharing one config through a real nats-server's KV."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from uuid import uuid4

import nats
import pytest
import yaml
from nats.aio.client import Client

from cli.nats_server import NatsServer
from core.config_feed import ConfigFeed
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

ENV = {"OPENAI_KEY": "sk-test"}


def config_text(*aliases: str, master: str | None = "sk-master") -> str:
    body: dict[str, object] = {"model_list": [
        {"model_name": a, "litellm_params": {"model": f"openai/{a}",
                                             "api_key": "os.environ/OPENAI_KEY"}}
        for a in aliases]}
    if master is not None:
        body["general_settings"] = {"master_key": master}
    return yaml.safe_dump(body)


@pytest.fixture(name="nc")
async def nats_client(nats_server: NatsServer) -> AsyncIterator[Client]:
    client = await nats.connect(nats_server.url)
    yield client
    await client.close()


Replica = Callable[..., Awaitable[ConfigReloader]]


@pytest.fixture(name="replica")
async def replica_starter(nc: Client, tmp_path: Path) -> AsyncIterator[Replica]:
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
