"""How many copies JetStream keeps of the gateway's streams, KV buckets and object store.

``AIGW_JS_REPLICAS`` (default 1; 3 on a three-node cluster, as the cluster manifests set it)
is the replica count a process gives whatever it creates: the usage and batch streams, the
buckets (keys, teams, config, health, batches, files) and the file object store. One that
exists already keeps the count it was made with, and the gateway goes on using it: raising
the setting does not move data by itself (``nats stream edit --replicas 3`` does), so a
mismatch is logged, once per stream and process, with what to run.
"""

from __future__ import annotations

import logging
import os

import nats.js.errors
from nats.js.client import JetStreamContext

log = logging.getLogger("aigw.jetstream")

ENV = "AIGW_JS_REPLICAS"
MAX = 5  # JetStream's own limit

_warned: set[str] = set()


def wanted() -> int:
    """The replica count for new streams and buckets, from ``AIGW_JS_REPLICAS``."""
    raw = os.environ.get(ENV, "").strip()
    if not raw:
        return 1
    try:
        count = int(raw)
    except ValueError:
        raise ValueError(f"{ENV} must be a whole number from 1 to {MAX}, not {raw!r}") from None
    if not 1 <= count <= MAX:
        raise ValueError(f"{ENV} must be from 1 to {MAX}, not {count}")
    return count


def compare(stream: str, have: int) -> bool:
    """Whether ``stream`` has the wanted count; logs a mismatch (once per stream)."""
    want = wanted()
    if have == want:
        return True
    if stream not in _warned:
        _warned.add(stream)
        log.warning(
            "JetStream stream %s has %d replica(s) but %s asks for %d; it keeps working as "
            "it is. To change it: nats stream edit %s --replicas %d",
            stream, have, ENV, want, stream, want)
    return False


async def check(js: JetStreamContext, stream: str) -> bool:
    """Compare an existing stream (a bucket's ``KV_<name>``, an object store's
    ``OBJ_<name>``) with the setting; a stream that cannot be read is left to its user."""
    try:
        info = await js.stream_info(stream)
    except nats.js.errors.Error:
        return True
    return compare(stream, info.config.num_replicas or 1)
