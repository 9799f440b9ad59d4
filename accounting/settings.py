"""Settings of the accounting process, read once from the environment in ``__main__``."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from accounting.migrations import DEFAULT_TTL_DAYS
from core.bus_auth import BusAuth


class AccountingSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore")

    nats_url: str = Field(default="nats://127.0.0.1:4222", validation_alias="NATS_URL")
    # NATS credentials and TLS (AIGW_NATS_USER, AIGW_NATS_PASSWORD, AIGW_NATS_TLS_*).
    bus: BusAuth = Field(default_factory=BusAuth)
    # /metrics, /health/liveliness and /health/readiness on this port (0: off).
    metrics_port: int = Field(default=0, ge=0, le=65535, validation_alias="AIGW_METRICS_PORT")
    metrics_host: str = Field(default="0.0.0.0", validation_alias="AIGW_METRICS_HOST")
    metrics_key: str | None = Field(default=None, validation_alias="AIGW_METRICS_KEY")
    data_dir: Path = Field(default=Path("data"), validation_alias="AIGW_DATA_DIR")
    # http(s)://user:pass@host:8123/db for a server; empty means chDB under data_dir.
    clickhouse_url: str | None = Field(default=None, validation_alias="CLICKHOUSE_URL")
    # Per insert: 10,000 events cost ClickHouse a third less CPU each than 5,000 do.
    batch_size: int = Field(default=10_000, ge=1, le=100_000,
                            validation_alias="AIGW_ACCOUNTING_BATCH_SIZE")
    # The longest an event waits in the consumer before its batch is written.
    batch_age: float = Field(default=1.0, gt=0, validation_alias="AIGW_ACCOUNTING_BATCH_AGE")
    # How long a failed batch waits in JetStream before it is redelivered.
    retry_delay: float = Field(default=5.0, gt=0, validation_alias="AIGW_ACCOUNTING_RETRY_DELAY")
    # How long delivered events wait for their ack before JetStream delivers them again
    # (after a crash, the delay before they land).
    ack_wait: float = Field(default=30.0, gt=0, validation_alias="AIGW_ACCOUNTING_ACK_WAIT")
    # Seconds between two reads of the consumer's lag (pending events, age of the oldest).
    lag_interval: float = Field(default=5.0, gt=0, validation_alias="AIGW_ACCOUNTING_LAG_INTERVAL")
    ttl_days: int = Field(default=DEFAULT_TTL_DAYS, ge=1, validation_alias="AIGW_USAGE_TTL_DAYS")
    stream_max_age_days: float = Field(default=7.0, gt=0,
                                       validation_alias="AIGW_USAGE_STREAM_MAX_AGE_DAYS")

    @property
    def clickhouse(self) -> str:
        if self.clickhouse_url:
            return self.clickhouse_url
        return f"chdb://{(self.data_dir / 'clickhouse').resolve()}"
