"""Numbered, idempotent ClickHouse migrations, applied at start-up.

Files live in ``accounting/migrations/NNNN_name.sql``; each statement is idempotent
(``IF NOT EXISTS``), and each applied file is recorded in ``schema_migrations``, so running
them twice, or two processes racing, changes nothing. A shipped file is never edited: a
change is a new file. The same files run on a ClickHouse server and on chDB.
"""

from __future__ import annotations

import logging
import re
from importlib import resources
from typing import Any

log = logging.getLogger("aigw.accounting.migrations")

DEFAULT_TTL_DAYS = 400

_CREATE_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations
(
    name        String,
    applied_at  DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
ORDER BY name
"""

_TTL_DAYS = re.compile(r"TTL toDateTime\(ts\) \+ toIntervalDay\((\d+)\)")


def migration_files() -> list[tuple[str, str]]:
    """(name, sql) of every shipped migration, in order."""
    folder = resources.files("accounting").joinpath("migrations")
    files = sorted(
        (entry.name, entry.read_text("utf-8"))
        for entry in folder.iterdir()
        if entry.name.endswith(".sql")
    )
    return [(name.removesuffix(".sql"), sql) for name, sql in files]


def statements(sql: str) -> list[str]:
    """Split a migration file on ``;`` at line ends, after dropping ``--`` comment lines
    (comments may contain semicolons; SQL string literals in migrations do not)."""
    lines = [line for line in sql.splitlines() if not line.lstrip().startswith("--")]
    parts = re.split(r";\s*$", "\n".join(lines), flags=re.MULTILINE)
    return [part.strip() for part in parts if part.strip()]


def applied(client: Any) -> set[str]:
    client.command(_CREATE_LEDGER)
    return {row[0] for row in client.query("SELECT name FROM schema_migrations").result_rows}


def apply(client: Any, ttl_days: int = DEFAULT_TTL_DAYS) -> list[str]:
    """Apply every migration not yet recorded; return the names applied now."""
    done = applied(client)
    names: list[str] = []
    for name, sql in migration_files():
        if name in done:
            continue
        for statement in statements(sql):
            client.command(statement)
        client.insert("schema_migrations", [[name]], column_names=["name"])
        log.info("applied migration %s", name)
        names.append(name)
    set_ttl(client, ttl_days)
    return names


def current_ttl_days(client: Any) -> int | None:
    engine = client.command(
        "SELECT engine_full FROM system.tables "
        "WHERE database = currentDatabase() AND name = 'usage_events'"
    )
    match = _TTL_DAYS.search(str(engine))
    return int(match.group(1)) if match else None


def set_ttl(client: Any, days: int) -> None:
    """Bring the raw events' retention to ``days``; rollups keep everything.

    Only when it differs: MODIFY TTL rewrites the TTL info of every part, which is not
    something to do on each start-up.
    """
    if days <= 0:
        raise ValueError(f"TTL must be a positive number of days, got {days}")
    if current_ttl_days(client) == days:
        return
    client.command(
        f"ALTER TABLE usage_events MODIFY TTL toDateTime(ts) + INTERVAL {int(days)} DAY"
    )
    log.info("usage_events TTL set to %d days", days)
