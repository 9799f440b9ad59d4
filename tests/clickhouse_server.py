"""A real ClickHouse server for the accounting tests, beside chDB.

The accounting tests run twice: on chDB (the ClickHouse engine in-process, always) and on
a ClickHouse server, where the same migrations and SQL serve production through
``CLICKHOUSE_URL``. The server is, in this order: the one ``CLICKHOUSE_TEST_URL`` names
(``http://user:password@host:8123``), or one testcontainers starts in Docker. With neither,
the server variant skips and says why. Each test gets a database of its own on it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

SERVER_ENV = "CLICKHOUSE_TEST_URL"
IMAGE = "clickhouse/clickhouse-server:24.8"


def docker_problem() -> str | None:
    """Why Docker cannot run a container here, or None when it can."""
    try:
        import docker

        docker.from_env().ping()
    except Exception as exc:  # no SDK, no socket, no permission: all mean the same here
        return "no Docker engine answers" if "FileNotFoundError" in str(exc) else (
            f"{type(exc).__name__}: {str(exc)[:120]}")
    return None


@contextmanager
def server_url() -> Iterator[str]:
    """The base URL of a ClickHouse server for the session (see the module docstring)."""
    url = os.environ.get(SERVER_ENV)
    if url:
        yield url.rstrip("/")
        return
    problem = docker_problem()
    if problem is not None:
        pytest.skip(f"no ClickHouse server: Docker is not available ({problem}), so "
                    f"testcontainers cannot start {IMAGE}; set {SERVER_ENV} to use a running "
                    "server. The same tests ran on chDB.")
    from testcontainers.community.clickhouse import ClickHouseContainer

    with ClickHouseContainer(IMAGE) as container:
        host = container.get_container_host_ip()
        port = container.get_exposed_port(8123)
        yield f"http://{container.username}:{container.password}@{host}:{port}"


def fresh_database(base_url: str, name: str) -> tuple[str, Any]:
    """Create database ``name`` on the server; its URL, and the admin client that drops it."""
    import clickhouse_connect

    admin = clickhouse_connect.get_client(dsn=base_url)
    admin.command(f"CREATE DATABASE {name}")
    return f"{base_url}/{name}", admin
