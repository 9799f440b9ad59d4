"""Budget threshold alerts, POSTed as JSON to a configured webhook.

Admission reports a threshold (50/80/100 % of a daily or monthly budget) the first time
spend reaches it in a period; :meth:`BudgetAlerts.fire` sends each one in a background
task, so the request that crossed it never waits for the webhook. Failures are logged
and dropped: an alert is a notification, not a ledger (ClickHouse is that).

The body::

    {"type": "budget_threshold", "scope": {"kind": "key", "id": "...", "label": "..."},
     "period": "daily", "period_key": "20261122", "threshold_percent": 80,
     "budget": "10.00", "spend": "8.012345678", "resets_at": "2026-11-23T00:00:00Z",
     "sent_at": "2026-11-22T17:03:11Z"}
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import httpx

from ingress.admission.budget import iso_z
from ingress.admission.types import BudgetAlert

log = logging.getLogger("aigw.ingress.alerts")


def alert_payload(alert: BudgetAlert, sent_at: datetime | None = None) -> dict[str, Any]:
    scope = alert.scope
    return {
        "type": "budget_threshold",
        "scope": {"kind": scope.kind, "id": scope.id, "label": scope.label},
        "period": alert.period,
        "period_key": alert.period_key,
        "threshold_percent": alert.threshold,
        # Strings keep money exact through JSON.
        "budget": format(alert.budget, "f"),
        "spend": format(alert.spend, "f"),
        "resets_at": iso_z(alert.resets_at),
        "sent_at": iso_z(sent_at or datetime.now(UTC)),
    }


class BudgetAlerts:
    def __init__(
        self,
        url: str | None,
        client: httpx.AsyncClient | None = None,
        *,
        timeout: float = 5.0,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.url = url
        self._own_client = client is None and url is not None
        self._client = client or (httpx.AsyncClient(timeout=timeout) if url else None)
        self._timeout = timeout
        self._headers = headers or {}
        # The loop keeps only weak references to tasks: hold them until they finish.
        self._tasks: set[asyncio.Task[None]] = set()

    def fire(self, alerts: Iterable[BudgetAlert]) -> None:
        for alert in alerts:
            log.info(
                "budget alert: %s %s reached %d%% of its %s budget (%s of %s)",
                alert.scope.kind, alert.scope.name, alert.threshold, alert.period,
                alert.spend, alert.budget,
            )
            if self._client is None or self.url is None:
                continue
            send = self._send(self._client, self.url, alert_payload(alert))
            task = asyncio.get_running_loop().create_task(send)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, client: httpx.AsyncClient, url: str, payload: dict[str, Any]) -> None:
        try:
            response = await client.post(
                url, json=payload, headers=self._headers, timeout=self._timeout
            )
            response.raise_for_status()
        except httpx.HTTPError as exc:
            log.warning("budget alert webhook %s failed: %r", url, exc)

    async def aclose(self, grace: float = 5.0) -> None:
        """Let alerts in flight finish (for up to ``grace`` seconds), then close."""
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
        if self._own_client and self._client is not None:
            await self._client.aclose()
