"""Expired files go: every minute (``AIGW_FILES_SWEEP_SECONDS``) each ingress replica
deletes the files whose ``expires_at`` has passed (record and contents). Reads already
answer 404 for them, so the sweep only frees the storage; replicas sweeping at once delete
the same files, which is harmless. The input file of a batch still running is kept past its
expiry: the finalizer reads it to write the error lines of the requests a cancelled or
expired batch never ran.
"""

from __future__ import annotations

import logging
import time

from core.batch_store import BatchStore

log = logging.getLogger("aigw.batch")

SWEEP_SECONDS = 60.0


async def sweep_expired(store: BatchStore, now: float | None = None) -> list[str]:
    """Delete the expired files no active batch reads; their ids."""
    now = time.time() if now is None else now
    in_use = {record.batch.input_file_id for record in store.active()}
    gone = [r.file.id for r in await store.files()
            if r.expired(now) and r.file.id not in in_use]
    for file_id in gone:
        await store.delete_file(file_id)
    if gone:
        log.info("deleted %d expired file(s)", len(gone))
    return gone
