"""chDB stores in temporary directories and a clean usage stream on the session nats-server.

chDB hosts one engine path per process at a time: a client on another path fails while
any handle is open. Each fixture closes its handles, so every test gets a fresh store.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import uuid4

import nats
import pytest
from nats.aio.client import Client
from nats.js.errors import NotFoundError

from accounting import migrations
from accounting.store import UsageStore, connect
from cli.nats_server import NatsServer
from core.usage_stream import ensure_usage_stream
from schemas import subjects
from schemas.usage import UsageEvent, UsageStatus, event_id
from tests.clickhouse_server import fresh_database, server_url


@pytest.fixture(scope="session")
def clickhouse_server() -> Iterator[str]:
    with server_url() as url:
        yield url


@pytest.fixture(params=["chdb", "server"])
def clickhouse_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty store: a chDB directory, or a database of its own on a ClickHouse
    server (skipped, saying why, when there is none: see ``tests/clickhouse_server.py``)."""
    if request.param == "chdb":
        yield f"chdb://{tmp_path / 'clickhouse'}"
        return
    name = f"aigw_test_{uuid4().hex[:12]}"
    url, admin = fresh_database(request.getfixturevalue("clickhouse_server"), name)
    try:
        yield url
    finally:
        admin.command(f"DROP DATABASE IF EXISTS {name}")
        admin.close()


@pytest.fixture
def clickhouse(clickhouse_url: str) -> Iterator[Any]:
    client = connect(clickhouse_url)
    migrations.apply(client)
    yield client
    client.close()


@pytest.fixture
def store(clickhouse: Any) -> UsageStore:
    return UsageStore(clickhouse)


@pytest.fixture(scope="package")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """A nats-server of this package's own: these tests delete and recreate the usage
    stream, which must not pull it from under the e2e gateway's accounting process."""
    server = NatsServer(tmp_path_factory.mktemp("accounting-nats"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[Client]:
    """A connection to the session nats-server with an empty usage stream and no
    accounting consumer left over from another test."""
    client = await nats.connect(nats_server.url)
    js = client.jetstream()
    with contextlib.suppress(NotFoundError):
        await js.delete_stream(subjects.USAGE_STREAM)
    await ensure_usage_stream(js)
    yield client
    await client.close()


def make_event(
    n: int,
    *,
    attempt: int = 0,
    status: UsageStatus = UsageStatus.OK,
    ts: datetime | None = None,
    cost: str | None = "0.000001234",
    **fields: Any,
) -> UsageEvent:
    request_id = fields.pop("request_id", f"req-{n}")
    return UsageEvent(
        event_id=event_id(request_id, attempt),
        request_id=request_id,
        attempt=attempt,
        ts=ts or datetime.now(UTC),
        model_alias=fields.pop("model_alias", "gpt-4o-mini"),
        provider=fields.pop("provider", "openai"),
        status=status,
        prompt_tokens=fields.pop("prompt_tokens", 10),
        completion_tokens=fields.pop("completion_tokens", 5),
        cost=Decimal(cost) if cost is not None else None,
        **fields,
    )


@pytest.fixture
def event_factory() -> Callable[..., UsageEvent]:
    return make_event
