"""``NATS_URL`` with several servers, as a cluster is configured."""

from __future__ import annotations

import pytest

from core.nats_servers import servers


def test_a_comma_separated_url_names_every_server() -> None:
    assert servers("nats://a:4222, nats://b:4222,nats://c:4222") == [
        "nats://a:4222", "nats://b:4222", "nats://c:4222"]


def test_one_url_is_one_server() -> None:
    assert servers("nats://127.0.0.1:4222") == ["nats://127.0.0.1:4222"]


def test_an_empty_url_is_refused() -> None:
    with pytest.raises(ValueError, match="no server"):
        servers(" , ")
