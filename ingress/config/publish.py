"""Putting the config file's document into NATS KV: the start-up rule, and a compare-and-set
write that follows whichever replica wrote first."""

from __future__ import annotations

import logging
from pathlib import Path

from core.config_feed import ConfigFeed
from ingress.config.file import ConfigFile
from schemas.config_doc import ConfigDocument

log = logging.getLogger("aigw.config")


def publish_at_start(file: ConfigFile, current: ConfigDocument | None) -> bool:
    """Whether an ingress starting with ``file`` publishes it over the KV's ``current``."""
    if current is None:
        return True
    return current.hash != file.hash and file.mtime > current.mtime


async def publish(feed: ConfigFeed, file: ConfigFile, source: str, path: Path, *,
                  newest_wins: bool) -> int | None:
    """Put the file's document into KV when the rule says so (``newest_wins``: the
    start-up rule, else whenever it differs); the revision that holds it afterwards,
    or None."""
    doc = ConfigDocument.of(file.text, source, file.mtime)
    for _ in range(3):
        last, current = await feed.latest()
        if current is not None and current.hash == doc.hash:
            return last
        if newest_wins and current is not None and not publish_at_start(file, current):
            log.info("serving the config in NATS KV (hash %s, from %s): it comes from a "
                     "newer file than %s", current.short_hash, current.source, path)
            return None
        revision = await feed.publish(doc, last)
        if revision is not None:
            log.info("config from %s published to NATS KV (revision %d, hash %s)",
                     path, revision, doc.short_hash)
            if secrets := doc.literal_secrets():
                log.warning("config from %s holds secrets written literally (%s): NATS KV "
                            "carries them in clear to every client of the bus; write "
                            "os.environ/NAME instead to keep them off it",
                            path, ", ".join(secrets))
            return revision
    log.warning("config from %s not published: the KV entry kept changing", path)
    return None
