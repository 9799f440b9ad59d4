"""Rebuilding live spend counters from ClickHouse, the source of truth for spend.

Redis (or the in-process store) keeps spend per key and team for the current UTC day and
month, from the settles of the requests the ingress admits. Two kinds of spend never pass
through there: everything before Redis started cold (a restart), and calls no ingress
admitted (batch items, run by workers off the work queue). So the ingress asks the
accounting service for this day's and this month's spend per key and team and raises every
counter that is below ClickHouse's figure. It never lowers one: a counter can be ahead of
ClickHouse by the settles not ingested yet. It does so once before serving and then every
minute, so batch spend reaches the budgets within about a minute of being accounted.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime
from decimal import Decimal

import nats.aio.client
import nats.errors

from ingress.admission import Admission, AdmissionUnavailable
from ingress.admission.budget import period_keys
from schemas import subjects

log = logging.getLogger("aigw.ingress.spend")

_KINDS = {"key": "key", "team": "team"}


async def seed_once(
    nc: nats.aio.client.Client, admission: Admission, now: datetime | None = None,
    timeout: float = 5.0,
) -> int:
    """Raise every counter that is below ClickHouse's figure; the number raised. Raises
    if accounting does not answer."""
    now = now or datetime.now(UTC)
    day_key, month_key = period_keys(now)
    day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    month_start = day_start.replace(day=1)
    seeded = 0
    for by, kind in _KINDS.items():
        for period_key, start in ((day_key, day_start), (month_key, month_start)):
            query = {"by": by, "start": start.isoformat(), "end": now.isoformat()}
            reply = await nc.request(subjects.analytics("breakdown"),
                                     json.dumps(query).encode(), timeout=timeout)
            answer = json.loads(reply.data)
            if "error" in answer:
                raise RuntimeError(f"accounting refused the spend query: {answer['error']}")
            for row in answer.get("data", []):
                scope_id, cost = row.get(by), row.get("cost")
                if not scope_id or cost is None or Decimal(cost) == 0:
                    continue
                if await admission.seed_spend(kind, scope_id, period_key, Decimal(cost)):  # type: ignore[arg-type]
                    seeded += 1
    return seeded


async def keep_seeded(
    nc: nats.aio.client.Client, admission: Admission, every: float = 60.0
) -> None:
    """The background loop: retry soon while accounting is not up, then every ``every``."""
    delay = 1.0
    while True:
        try:
            seeded = await seed_once(nc, admission)
            if seeded:
                log.info("raised %d spend counters to ClickHouse's figures", seeded)
            delay = every
        except (nats.errors.Error, AdmissionUnavailable, RuntimeError, ValueError) as exc:
            log.debug("spend seeding postponed: %s", exc)
            delay = min(max(delay * 2, 1.0), 30.0)
        await asyncio.sleep(delay)
