"""Each team's budget use for ``aigw_budget_utilization_ratio``, read every few seconds."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from decimal import Decimal

from core.periodic import Periodic
from ingress.admission.gatekeeper import team_scope
from ingress.admission.outcome import PERIODS
from ingress.admission.types import Admission
from schemas.keys import Team


def ratios(status: dict[str, object]) -> dict[tuple[str, str], float]:
    """(team id, period) -> spent / budget, from an admission status answer."""
    found: dict[tuple[str, str], float] = {}
    for entry in status.get("scopes", ()):  # type: ignore[attr-defined]
        for period in PERIODS:
            use = entry.get(period)
            if use and Decimal(use["budget"]) > 0:
                found[(entry["id"], period)] = float(
                    Decimal(use["spent"]) / Decimal(use["budget"]))
    return found


class BudgetWatch(Periodic):
    """One admission status call per tick for every team with a budget; a scrape reads
    the last figures from memory."""

    def __init__(self, admission: Admission, teams: Callable[[], Iterable[Team]],
                 publish: Callable[[dict[tuple[str, str], float]], None],
                 every: float = 15.0) -> None:
        super().__init__(self.check, every, "reading budget use")
        self._admission = admission
        self._teams = teams
        self._publish = publish

    async def check(self) -> None:
        scopes = [s for t in self._teams() if (s := team_scope(t)) is not None
                  and (s.daily_budget is not None or s.monthly_budget is not None)]
        self._publish(ratios(await self._admission.status(scopes)) if scopes else {})
