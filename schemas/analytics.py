"""The parameters of an analytics query, as the ingress receives them and the accounting
service runs them. Pure (pydantic only), so the ingress validates with the same model
before a request ever reaches NATS.

Time range: either ``days`` (the last N UTC calendar days, today included, so day
boundaries line up with the daily rollup) or ``start``/``end`` (ISO dates or datetimes;
naive means UTC; ``end`` exclusive, default now). Neither means the last 7 days.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

QUERIES = ("summary", "breakdown", "daily", "logs")
DEFAULT_DAYS = 7
MAX_DAYS = 3660

BreakdownBy = Literal["model", "key", "team", "provider", "user"]
Status = Literal["ok", "error", "cancelled", "cache_hit", "rejected"]


class AnalyticsQuery(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    days: int | None = Field(default=None, ge=1, le=MAX_DAYS)
    start: datetime | date | None = None
    end: datetime | date | None = None
    key_id: str | None = None
    team_id: str | None = None
    model: str | None = None
    # Events of one status (an attempt's own), or of one request (its attempts).
    status: Status | None = None
    request_id: str | None = Field(default=None, max_length=200)
    by: BreakdownBy = "model"
    limit: int = Field(default=100, ge=1, le=1000)
    offset: int = Field(default=0, ge=0, le=1_000_000)

    @model_validator(mode="after")
    def _one_range(self) -> AnalyticsQuery:
        if self.days is not None and (self.start is not None or self.end is not None):
            raise ValueError("give either days or start/end, not both")
        if self.end is not None and self.start is None:
            raise ValueError("end needs start")
        start, end = self.window(datetime.now(UTC))
        if end <= start:
            raise ValueError("end must be after start")
        return self

    def window(self, now: datetime) -> tuple[datetime, datetime]:
        """[start, end) in UTC."""
        if self.start is not None:
            start = _utc(self.start)
            end = _utc(self.end) if self.end is not None else now
            return start, end
        days = self.days or DEFAULT_DAYS
        today = datetime.combine(now.date(), time(), tzinfo=UTC)
        # Up to the end of today, not now: an event stamped a little ahead by another
        # machine's clock still counts today.
        return today - timedelta(days=days - 1), today + timedelta(days=1)


def _utc(value: datetime | date) -> datetime:
    if not isinstance(value, datetime):
        return datetime.combine(value, time(), tzinfo=UTC)
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)
