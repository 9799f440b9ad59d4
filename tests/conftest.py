"""Session-wide real services: a nats-server from the wheel and fake provider servers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.applications import Starlette

from cli.nats_server import NatsServer
from tests.fakes import anthropic_server, gemini_server, openai_server
from tests.fakes.server import free_port, serve
from tests.redis_server import RedisServer, redis_binary


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path_factory.mktemp("nats"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def fake_openai() -> Iterator[tuple[str, openai_server.FakeOpenAIState]]:
    state = openai_server.FakeOpenAIState()
    with serve(openai_server.create_app(state)) as url:
        yield url, state


@pytest.fixture
def tmp_dir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture(scope="session")
def fake_anthropic() -> Iterator[tuple[str, Starlette]]:
    app = anthropic_server.create_app(api_key="sk-ant-e2e")
    with serve(app) as url:
        yield url, app


@pytest.fixture(scope="session")
def fake_gemini() -> Iterator[tuple[str, Starlette]]:
    app = gemini_server.create_app(api_key="gemini-e2e")
    with serve(app) as url:
        yield url, app


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(redis_binary(), tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def private_redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A server of the test's own, for tests that kill it."""
    server = RedisServer(redis_binary(), tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_nats(tmp_path: Path) -> Iterator[NatsServer]:
    """A test's own nats-server, on a port fixed for its life, so that a test restarting
    it gets it back where its clients reconnect."""
    server = NatsServer(tmp_path / "nats", port=free_port())
    server.start()
    yield server
    server.stop()
