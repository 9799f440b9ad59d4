"""The usage events in the ``AIGW_USAGE`` stream, read back directly, for tests to see what
publishers wrote: every message, one event or a group (``schemas.event_message``)."""

from __future__ import annotations

import json
from typing import Any

import nats
from nats.js import JetStreamContext

from schemas import subjects
from schemas.event_message import split_events


async def stream_events(js: JetStreamContext) -> list[dict[str, Any]]:
    """Every event in the stream, in order; none when there is no stream."""
    try:
        info = await js.stream_info(subjects.USAGE_STREAM)
    except nats.js.errors.NotFoundError:
        return []
    events: list[dict[str, Any]] = []
    if not info.state.messages:  # a new stream reports first and last seq 0; there is no 0
        return events
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        try:
            msg = await js.get_msg(subjects.USAGE_STREAM, seq)
        except nats.js.errors.NotFoundError:  # a gap (a deleted message)
            continue
        events.extend(json.loads(line) for line in split_events(msg.data or b""))
    return events


async def read_stream_events(nats_url: str) -> list[dict[str, Any]]:
    """``stream_events`` over a connection of its own."""
    nc = await nats.connect(nats_url)
    try:
        return await stream_events(nc.jetstream())
    finally:
        await nc.close()
