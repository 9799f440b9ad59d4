"""A key's usage rows as ``GET /v1/usage/logs`` returns them, once they have all landed."""

from __future__ import annotations

import time
from typing import Any

import httpx

from tests.e2e.conftest import MASTER_KEY
from tests.harness import Gateway

MASTER = {"authorization": f"Bearer {MASTER_KEY}"}


def usage_logs(gateway: Gateway, key_id: str, expected: int, within: float = 20.0
               ) -> list[dict[str, Any]]:
    """The key's rows once there are at least ``expected``, read again a second later so
    that an event counted twice shows up as an extra row; the gateway's logs on failure."""
    params: dict[str, Any] = {"key_id": key_id, "limit": 1000, "days": 1}
    deadline = time.monotonic() + within
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        r = httpx.get(gateway.base_url + "/v1/usage/logs", headers=MASTER, timeout=10,
                      params=params)
        if r.status_code == 200:
            rows = r.json()["data"]
            if len(rows) >= expected:
                # Not synchronisation: the check that no event is counted twice. An event
                # that should not exist cannot be polled for; one on its way lands by now.
                time.sleep(1.0)
                r = httpx.get(gateway.base_url + "/v1/usage/logs", headers=MASTER,
                              timeout=10, params=params)
                return list(r.json()["data"])
        time.sleep(0.2)
    raise AssertionError(f"{len(rows)} events after {within}s, expected {expected}: {rows}\n"
                         + gateway.all_logs())
