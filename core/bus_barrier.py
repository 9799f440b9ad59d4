"""Waiting until nats-server has read everything a connection was asked to send.

``Client.flush()`` alone does not promise that: nats-py puts its PING at the head of the
queue its writer task empties, ahead of a SUB or PUB still waiting there, so the PONG can
come back before the server has read a subscription made just before. A message published
right after on another connection can then overtake the subscription and reach nobody.
Emptying the queue first, then the round trip, keeps the PING behind everything sent
before it (one TCP stream, read in order).
"""

from __future__ import annotations

import asyncio

from nats.aio.client import Client


async def barrier(nc: Client, timeout: float = 5.0) -> None:
    """Return once the server has read what ``nc`` was asked to send before this call;
    TimeoutError past ``timeout``, or nats-py's own error if the round trip fails."""
    async with asyncio.timeout(timeout):
        while nc.pending_data_size:
            await asyncio.sleep(0)
        await nc.flush()
