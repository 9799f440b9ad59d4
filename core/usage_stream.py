"""The JetStream stream of usage events, declared identically by every publisher and
the consumer, so whichever starts first creates it.

Imports only nats and schemas: workers import this module and must not pull in ClickHouse.
"""

from __future__ import annotations

import logging

from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

from core import replicas
from schemas import subjects

log = logging.getLogger("aigw.core.usage_stream")

# Long enough to re-publish after a worker restart; the window JetStream keeps
# Nats-Msg-Id values for, so a duplicate inside it never reaches the stream.
DUPLICATE_WINDOW_S = 120.0
# Events are deleted by age, not by ack: the stream is also the replay buffer while
# ClickHouse is down, so it keeps a week by default.
DEFAULT_MAX_AGE_S = 7 * 24 * 3600.0


def usage_stream_config(max_age: float = DEFAULT_MAX_AGE_S) -> StreamConfig:
    return StreamConfig(
        name=subjects.USAGE_STREAM,
        subjects=[subjects.USAGE_SUBJECTS],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        duplicate_window=DUPLICATE_WINDOW_S,
        max_age=max_age,
        num_replicas=replicas.wanted(),
    )


async def ensure_usage_stream(js: JetStreamContext, max_age: float = DEFAULT_MAX_AGE_S) -> None:
    """Create the usage stream, or bring an existing one to this config. Idempotent."""
    wanted = usage_stream_config(max_age)
    try:
        info = await js.stream_info(subjects.USAGE_STREAM)
    except NotFoundError:
        await js.add_stream(wanted)
        log.info("created stream %s", subjects.USAGE_STREAM)
        return
    have = info.config
    replicas.compare(subjects.USAGE_STREAM, have.num_replicas or 1)  # left as it is
    if (
        have.subjects != wanted.subjects
        or have.duplicate_window != wanted.duplicate_window
        or have.max_age != wanted.max_age
    ):
        await js.update_stream(wanted)
        log.info("updated stream %s", subjects.USAGE_STREAM)
