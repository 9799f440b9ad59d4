"""How events travel in one JetStream message: one event, or several, one JSON document per
line.

A publisher under load groups the events it has waiting into one message per subject
(``core.publisher``), so that the stream, the consumer and nats-server handle one message
where they handled dozens. A message of one event is that event's JSON, as it always was;
so a consumer reads both, and a stream written before grouping reads the same.

The JSON of an event never holds a raw newline (JSON escapes one inside a string), so a
newline is an unambiguous separator.

``Nats-Msg-Id`` is the event's id for a message of one event, and ``group_id`` of the ids
for a group, so a retried publish of the same message is dropped by JetStream. An event
that reaches the stream twice in two different groups (a spool replayed after a crash, say)
is dropped by the consumer's store, as any event past JetStream's window always was.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

SEPARATOR = b"\n"


def split_events(data: bytes) -> list[bytes]:
    """The events of one message, each its own JSON document (empty lines skipped)."""
    if SEPARATOR not in data:
        return [data]
    return [line for line in data.split(SEPARATOR) if line]


def join_events(events: Sequence[bytes]) -> bytes:
    """One message's body for these events' JSON documents, none holding a newline."""
    return SEPARATOR.join(events)


def group_id(event_ids: Sequence[str]) -> str:
    """``Nats-Msg-Id`` of a message: the event's own id for one event; for several, a
    digest of their ids in order (the same group, the same id)."""
    if len(event_ids) == 1:
        return event_ids[0]
    digest = hashlib.blake2b("\n".join(event_ids).encode(), digest_size=16).hexdigest()
    return f"group-{len(event_ids)}-{digest}"
