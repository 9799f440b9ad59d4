"""The JetStream stream of audit events (``schemas.audit``), declared identically by the
ingress that publishes them and the accounting service that stores them, so whichever
starts first creates it.

Apart from the usage stream: audit events are few and kept longer, and the usage consumer
never has to tell them apart from usage events.
"""

from __future__ import annotations

import logging

from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

from core import replicas
from schemas import subjects

log = logging.getLogger("aigw.core.audit_stream")

# As for usage: JetStream drops a re-publish with the same Nats-Msg-Id inside this window.
DUPLICATE_WINDOW_S = 120.0
# The stream is the replay buffer while ClickHouse is down; ClickHouse keeps the log itself.
MAX_AGE_S = 30 * 24 * 3600.0


def audit_stream_config() -> StreamConfig:
    return StreamConfig(
        name=subjects.AUDIT_STREAM,
        subjects=[subjects.AUDIT_SUBJECTS],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        duplicate_window=DUPLICATE_WINDOW_S,
        max_age=MAX_AGE_S,
        num_replicas=replicas.wanted(),
    )


async def ensure_audit_stream(js: JetStreamContext) -> None:
    """Create the audit stream, or bring an existing one to this config. Idempotent."""
    wanted = audit_stream_config()
    try:
        info = await js.stream_info(subjects.AUDIT_STREAM)
    except NotFoundError:
        await js.add_stream(wanted)
        log.info("created stream %s", subjects.AUDIT_STREAM)
        return
    have = info.config
    replicas.compare(subjects.AUDIT_STREAM, have.num_replicas or 1)
    if (have.subjects != wanted.subjects or have.duplicate_window != wanted.duplicate_window
            or have.max_age != wanted.max_age):
        await js.update_stream(wanted)
        log.info("updated stream %s", subjects.AUDIT_STREAM)
