"""How the accounting API writes the times it stores.

``usage_events.ts`` and ``audit_log.ts`` are ``DateTime64(3, 'UTC')``. Their text form
always carries the three millisecond digits, so that a time falling on a whole second reads
``...:42.000Z`` and not ``...:42Z``: every stamp has the same width, and clients (the
console among them) that order stamps as strings order them as times.
"""

from __future__ import annotations

from datetime import UTC, datetime


def utc_text(value: datetime) -> str:
    """``2026-12-04T21:38:42.040Z``; a naive value is taken to be UTC already."""
    aware = value if value.tzinfo else value.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
