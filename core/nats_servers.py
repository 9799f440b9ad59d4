"""``NATS_URL`` as a list of servers: a cluster is several URLs, comma-separated."""

from __future__ import annotations


def servers(url: str) -> list[str]:
    """Every server of ``url`` (``nats://a:4222,nats://b:4222``); a client reconnects to
    whichever of them survives."""
    found = [part.strip() for part in url.split(",") if part.strip()]
    if not found:
        raise ValueError("NATS_URL names no server")
    return found
